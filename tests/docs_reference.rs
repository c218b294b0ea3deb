//! The examples in docs/reference.md form a project that validates and runs.
//!
//! Every ```toml block in the reference that starts with `# file: <path>` is written to that path
//! in a scratch project (with the bundled samples); the project must validate, its mapping
//! tests must pass, and its example job must run.

use crate::common::{repo, show, Workdir};

fn blocks(md: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = md.lines();
    while let Some(l) = lines.next() {
        if l.trim() != "```toml" {
            continue;
        }
        let mut body = Vec::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            body.push(l);
        }
        if let Some(first) = body.first() {
            if let Some(path) = first.strip_prefix("# file: ") {
                out.push((path.trim().to_string(), body[1..].join("\n") + "\n"));
            }
        }
    }
    out
}

#[test]
fn reference_examples_validate_and_run() {
    let md = std::fs::read_to_string(repo().join("docs/reference.md")).unwrap();
    let files = blocks(&md);
    assert!(
        files.len() >= 4,
        "expected a project file, a model, a mapping and a job in the reference"
    );
    let w = Workdir::with_files(&[]);
    let samples = repo().join("samples/nycflights13");
    std::fs::create_dir_all(w.path().join("samples/nycflights13")).unwrap();
    for e in std::fs::read_dir(&samples).unwrap() {
        let e = e.unwrap();
        std::fs::copy(
            e.path(),
            w.path().join("samples/nycflights13").join(e.file_name()),
        )
        .unwrap();
    }
    let mut jobs = Vec::new();
    for (path, text) in &files {
        let mut text = text.clone();
        if path.starts_with("jobs/") {
            jobs.push(
                path.trim_start_matches("jobs/")
                    .trim_end_matches(".toml")
                    .to_string(),
            );
        }
        // Several blocks may add to one file (a model shown field by field).
        if w.path().join(path).exists() {
            text = w.read(path) + "\n" + &text;
        }
        w.write(path, &text);
    }
    let out = w
        .sluice(&["validate"])
        .env("WAREHOUSE_ROOT", w.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    // The mapping tests in the reference pass.
    let out = w.sluice(&["test"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 failed"),
        "{}",
        show(&out)
    );
    assert!(!jobs.is_empty());
    // The database example loads a table of the local PostgreSQL: start from none.
    let dropped = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
        .arg("DROP SCHEMA IF EXISTS reference_example CASCADE")
        .output()
        .expect("psql");
    assert!(dropped.status.success(), "{:?}", dropped);
    for job in jobs {
        let out = w
            .sluice(&["run", &job])
            .env("WAREHOUSE_ROOT", w.path())
            .output()
            .unwrap();
        assert!(
            matches!(out.status.code(), Some(0)),
            "job {job}: {}",
            show(&out)
        );
    }
}
