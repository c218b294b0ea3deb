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

    // Kill runs at spread-out moments: while planning (before staging exists), then at growing
    // delays after staging appears: reading, writing staging files, committing. Delays count
    // from the staging folder's appearance, so a slow machine still kills mid-write.
    let staging_exists = || {
        std::fs::read_dir(w.path().join("warehouse"))
            .unwrap()
            .flatten()
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".flights.staging-")
            })
    };
    let mut killed_mid_write = 0;
    for delay_ms in [
        None,
        Some(0u64),
        Some(50),
        Some(200),
        Some(400),
        Some(700),
        Some(1000),
    ] {
        let mut child = w.sluice(&["run", "flights"]).spawn().unwrap();
        match delay_ms {
            None => std::thread::sleep(Duration::from_millis(20)),
            Some(d) => {
                let start = Instant::now();
                while !staging_exists() && start.elapsed() < Duration::from_secs(60) {
                    if child.try_wait().unwrap().is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                std::thread::sleep(Duration::from_millis(d));
            }
        }
        let _ = child.kill(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        let after = snapshot(&target);
        if !status.success() && delay_ms.is_some() {
            killed_mid_write += 1;
        }
        if after != before {
            // Only allowed when the run got through its commit (finished, or was killed after
            // the atomic swap): then the whole new version must be there, nothing less.
            let n = query(&target, "SELECT count(*) FROM t");
            assert_eq!(
                rows(&n),
                vec!["329174".to_string()],
                "killed {delay_ms:?} ms after staging appeared: a partial version is visible"
            );
            let files: Vec<&String> = after.keys().collect();
            assert_eq!(files.len(), 3, "one file per origin partition: {files:?}");
        }
    }
    assert!(
        killed_mid_write >= 3,
        "only {killed_mid_write} kills happened while the run was writing"
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
