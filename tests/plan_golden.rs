//! Golden `sluice plan` output: schemas, rules and the DataFusion plans of the shipped jobs.
//!
//! A change to the plan shows up as a diff here. When it is intended, regenerate with
//! `SLUICE_BLESS=1 cargo test plan_golden` and review the diff of `tests/golden/`.

use crate::common::{repo, show, Workdir};

fn check(job: &str) {
    let w = Workdir::project();
    // Physical plans depend on the partition count; pin it so the golden file does not depend
    // on the machine's cores.
    let project = w.read("sluice.toml").replace(
        "batch_size = 8192",
        "batch_size = 8192\ntarget_partitions = 2",
    );
    w.write("sluice.toml", &project);
    let out = w.run(&["plan", job]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let root = std::fs::canonicalize(w.path()).unwrap();
    let text = String::from_utf8_lossy(&out.stdout)
        .replace(root.to_string_lossy().trim_start_matches('/'), "<project>");
    let golden = repo().join(format!("tests/golden/plan_{job}.txt"));
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&golden, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&golden)
        .unwrap_or_else(|_| panic!("{} missing; run with SLUICE_BLESS=1", golden.display()));
    if expected != text {
        let diff: Vec<String> = expected
            .lines()
            .zip(text.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(5)
            .map(|(i, (a, b))| format!("line {}:\n- {a}\n+ {b}", i + 1))
            .collect();
        panic!(
            "`sluice plan {job}` differs from {} ({} vs {} lines):\n{}",
            golden.display(),
            expected.lines().count(),
            text.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn plan_of_flights_matches_golden() {
    check("flights");
}

#[test]
fn plan_of_airports_matches_golden() {
    check("airports");
}
