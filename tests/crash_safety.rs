//! `kill -9` at any moment of a run leaves the previously published target intact.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{query, rows, show, Workdir};

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn kill_9_mid_run_leaves_previous_target_intact() {
    let w = Workdir::project();
    let first = w.run(&["run", "flights"]);
    assert_eq!(first.status.code(), Some(0), "{}", show(&first));
    let target = w.path().join("warehouse/flights");
    let before = snapshot(&target);
    assert!(!before.is_empty());

    // Kill runs at spread-out moments: while planning, reading, writing staging, committing.
    let mut saw_staging = false;
    for delay_ms in [30u64, 150, 400, 700, 1000, 1300, 1600] {
        let mut child = w.sluice(&["run", "flights"]).spawn().unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(delay_ms) {
            if std::fs::read_dir(w.path().join("warehouse"))
                .unwrap()
                .flatten()
                .any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".flights.staging-")
                })
            {
                saw_staging = true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        let after = snapshot(&target);
        if status.success() {
            // The run finished before the kill: a complete new version is published instead.
            let n = query(&target, "SELECT count(*) FROM t");
            assert_eq!(rows(&n), vec!["329174".to_string()], "after {delay_ms} ms");
        } else {
            assert_eq!(
                before.keys().collect::<Vec<_>>(),
                after.keys().collect::<Vec<_>>(),
                "killed after {delay_ms} ms: the published files changed"
            );
            assert!(
                before == after,
                "killed after {delay_ms} ms: file contents changed"
            );
        }
    }
    assert!(
        saw_staging,
        "no kill happened while staging existed; the test did not test the write"
    );

    // The next run cleans up what the killed runs left and publishes normally.
    let last = w.run(&["run", "flights"]);
    assert_eq!(last.status.code(), Some(0), "{}", show(&last));
    let leftovers: Vec<String> = std::fs::read_dir(w.path().join("warehouse"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".flights."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let n = query(&target, "SELECT count(*) FROM t");
    assert_eq!(rows(&n), vec!["329174".to_string()]);
}
