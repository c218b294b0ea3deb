//! Logical dates and vars: `${run.date}` and `${var.NAME}` in paths and expressions,
//! `sluice run --date --var`, date backfills that resume where they stopped and never load a
//! date twice, and jobs the daemon runs `after` others for the same logical date.

use crate::common::{query, report, rows, show, Workdir};
use crate::schedule::{reports, sigterm, start_daemon, wait_exit, wait_for};

/// A project whose job `readings` reads `incoming/<date>/readings.csv` for its logical date
/// and overwrites `out/readings/date=<date>`, stamping each row with the date and the var
/// `region` (default `EU`). Files exist for 2026-11-01 (2 rows) and 2026-11-03 (1 row);
/// [`add_day_2`] adds 2026-11-02 (3 rows).
fn dated_project() -> Workdir {
    Workdir::with_files(&[
        ("sluice.toml", "name = \"params\"\n"),
        (
            "mappings/canonical/reading.toml",
            "name = \"reading\"\nversion = \"1.0.0\"\n\n[fields.id]\ntype = \"int64\"\nprimary_key = true\n\n[fields.value]\ntype = \"float64\"\n\n[fields.region]\ntype = \"string\"\n\n[fields.load_date]\ntype = \"date\"\n",
        ),
        (
            "mappings/readings.toml",
            "model = \"reading@1\"\nfrom = \"raw\"\n\n[fields]\nid = \"raw.id\"\nvalue = \"raw.value\"\nregion = \"'${var.region}'\"\nload_date = \"CAST('${run.date}' AS DATE)\"\n",
        ),
        (
            "jobs/readings.toml",
            "mapping = \"readings\"\n\n[vars]\nregion = \"EU\"\n\n[sources.raw]\nformat = \"csv\"\npath = \"incoming/${run.date}/readings.csv\"\n\n[target]\nformat = \"parquet\"\npath = \"out/readings/date=${run.date}\"\nmode = \"overwrite\"\n",
        ),
        ("incoming/2026-11-01/readings.csv", "id,value\n1,1.5\n2,2.5\n"),
        ("incoming/2026-11-03/readings.csv", "id,value\n6,6.5\n"),
    ])
}

fn add_day_2(w: &Workdir) {
    w.write(
        "incoming/2026-11-02/readings.csv",
        "id,value\n3,3.5\n4,4.5\n5,5.5\n",
    );
}

/// `id|region|load_date` of one date's output, by id.
fn day(w: &Workdir, date: &str) -> Vec<String> {
    rows(&query(
        &w.path().join(format!("out/readings/date={date}")),
        "SELECT id, region, CAST(load_date AS VARCHAR) FROM t ORDER BY id",
    ))
}

/// `sluice backfill readings --from FROM --to TO`.
fn backfill_args(from: &'static str, to: &'static str) -> Vec<&'static str> {
    vec!["backfill", "readings", "--from", from, "--to", to]
}

fn commit_of(w: &Workdir, date: &str) -> String {
    w.read(&format!("out/readings/date={date}/_sluice_commit.json"))
}

#[test]
fn a_run_for_a_date_reads_and_writes_that_dates_paths_with_the_vars_given() {
    let w = dated_project();
    add_day_2(&w);
    let o = w.run(&[
        "run",
        "readings",
        "--date",
        "2026-11-02",
        "--var",
        "region=US",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let r = report(&o);
    assert_eq!(r["logical_date"], "2026-11-02T00:00:00Z");
    assert_eq!(r["vars"]["region"], "US");
    assert_eq!(r["trigger"], "manual");
    let hash = r["config_hash"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 64, "{r}");
    assert_eq!(
        day(&w, "2026-11-02"),
        ["3|US|2026-11-02", "4|US|2026-11-02", "5|US|2026-11-02"]
    );
    assert!(!w.path().join("out/readings/date=2026-11-01").exists());

    // Without --var the default applies; the history shows each run's logical date. The
    // definition did not change, so neither did its hash; an edit to the mapping changes it.
    let o = w.run(&["run", "readings", "--date", "2026-11-01", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(report(&o)["config_hash"], hash.as_str());
    let mapping = w.read("mappings/readings.toml");
    w.write("mappings/readings.toml", &format!("{mapping}# edited\n"));
    let o = w.run(&["run", "readings", "--date", "2026-11-01", "--json"]);
    assert_ne!(report(&o)["config_hash"], hash.as_str());
    assert_eq!(
        day(&w, "2026-11-01"),
        ["1|EU|2026-11-01", "2|EU|2026-11-01"]
    );
    let runs = w.run(&["runs", "readings", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    let dates: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["logical_date"].as_str().unwrap())
        .collect();
    assert_eq!(
        dates,
        [
            "2026-11-01T00:00:00Z",
            "2026-11-01T00:00:00Z",
            "2026-11-02T00:00:00Z"
        ]
    );
}

#[test]
fn unknown_vars_and_references_are_config_errors_that_run_nothing() {
    let w = dated_project();
    let o = w.run(&[
        "run",
        "readings",
        "--date",
        "2026-11-01",
        "--var",
        "regoin=US",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("does not declare it") && err.contains("did you mean `region`"),
        "{err}"
    );
    for bad in ["region=x' OR '1'='1", "region=", "region=.", "region=0 --"] {
        let o = w.run(&["run", "readings", "--date", "2026-11-01", "--var", bad]);
        assert_eq!(o.status.code(), Some(2), "--var {bad}: {}", show(&o));
    }
    let o = w.run(&["run", "readings", "--date", "01/11/2026"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));

    // `validate` checks the project with today's date: the day's file is missing, which is
    // a warning, not an error.
    let o = w.run(&["validate"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has no files for today"),
        "{}",
        show(&o)
    );

    // A misspelt reference is reported by `validate` at its file and line.
    let mapping = w.read("mappings/readings.toml");
    w.write(
        "mappings/readings.toml",
        &mapping.replace("${run.date}", "${run.day}"),
    );
    let o = w.run(&["validate"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("mappings/readings.toml:8"), "{err}");
    assert!(err.contains("unknown reference `${run.day}`"), "{err}");
    assert!(!w.path().join("out").exists(), "nothing ran");
}

#[test]
fn a_date_backfill_stops_at_a_failed_date_and_the_same_command_resumes_there() {
    let w = dated_project();
    let backfill = backfill_args("2026-11-01", "2026-11-04");
    // 2026-11-02 has no file yet: the backfill commits the 1st and stops at the 2nd.
    let o = w.run(&backfill);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("backfill stopped at 2026-11-02"),
        "{}",
        show(&o)
    );
    assert_eq!(day(&w, "2026-11-01").len(), 2);
    assert!(!w.path().join("out/readings/date=2026-11-03").exists());
    let first_commit = commit_of(&w, "2026-11-01");

    // With the file in place the same command runs the 2nd and 3rd only.
    add_day_2(&w);
    let o = w.run(&backfill);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("dates through 2026-11-01 were committed"),
        "{err}"
    );
    assert!(err.contains("date 2026-11-02 (1 of 2)"), "{err}");
    assert_eq!(
        commit_of(&w, "2026-11-01"),
        first_commit,
        "the 1st must not run again"
    );
    assert_eq!(day(&w, "2026-11-02").len(), 3);
    assert_eq!(day(&w, "2026-11-03"), ["6|EU|2026-11-03"]);

    // Finished, the backfill is forgotten: running it again (or with --restart) re-runs
    // every date, each replacing its own output, so no row is there twice.
    let o = w.run(&backfill);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("(3 of 3)"),
        "{}",
        show(&o)
    );
    assert_ne!(commit_of(&w, "2026-11-01"), first_commit);
    assert_eq!(day(&w, "2026-11-01").len(), 2);
    assert_eq!(day(&w, "2026-11-02").len(), 3);
}

#[test]
fn a_backfill_with_other_vars_is_another_backfill() {
    let w = dated_project();
    let eu = backfill_args("2026-11-01", "2026-11-04");
    // Stops at the 2nd (no file), the 1st committed for EU.
    assert_eq!(w.run(&eu).status.code(), Some(1));
    add_day_2(&w);
    // The same range for US starts at the 1st: EU's progress says nothing of US's output.
    let mut us = eu.to_vec();
    us.extend(["--var", "region=US"]);
    let o = w.run(&us);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("date 2026-11-01 (1 of 3)"),
        "{}",
        show(&o)
    );
    assert_eq!(
        day(&w, "2026-11-01"),
        ["1|US|2026-11-01", "2|US|2026-11-01"]
    );
}

#[test]
fn a_date_backfill_killed_after_a_dates_commit_runs_that_date_again_without_doubling_it() {
    let w = dated_project();
    add_day_2(&w);
    let backfill = backfill_args("2026-11-01", "2026-11-03");
    // kill -9 with the 1st's output published but neither its run nor the backfill's
    // progress recorded.
    crate::common::run_killed_at(&w, &backfill, "after_publish");
    assert_eq!(day(&w, "2026-11-01").len(), 2, "the 1st was published");

    let o = w.run(&backfill);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("date 2026-11-01 (1 of 2)"),
        "the 1st was not recorded done, so it runs again: {}",
        show(&o)
    );
    assert_eq!(
        day(&w, "2026-11-01"),
        ["1|EU|2026-11-01", "2|EU|2026-11-01"]
    );
    assert_eq!(day(&w, "2026-11-02").len(), 3);
}

#[test]
fn a_date_backfill_refuses_targets_it_would_double_or_replace() {
    let w = dated_project();
    let job = w.read("jobs/readings.toml");
    let backfill = backfill_args("2026-11-01", "2026-11-02");
    w.write(
        "jobs/readings.toml",
        &job.replace("\"overwrite\"", "\"append\""),
    );
    let o = w.run(&backfill);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("load its rows twice"),
        "{}",
        show(&o)
    );
    w.write(
        "jobs/readings.toml",
        &job.replace("out/readings/date=${run.date}", "out/readings"),
    );
    let o = w.run(&backfill);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("replace the dates before it"),
        "{}",
        show(&o)
    );
    assert!(!w.path().join("out").exists(), "nothing ran");
}

/// The sample project's `carriers` fired every 2 seconds and `carriers_copy` (the same job
/// into another table) run `after` it.
#[test]
fn a_job_after_another_runs_once_for_each_logical_date_the_other_commits() {
    let w = Workdir::project();
    crate::schedule::schedule_carriers(&w, "");
    let job = w.read("jobs/carriers.toml");
    let copy: String = job
        .lines()
        .filter(|l| !l.starts_with("schedule"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("table = \"carriers\"", "table = \"carriers_copy\"");
    assert!(copy.contains("carriers_copy"), "{copy}");
    w.write(
        "jobs/carriers_copy.toml",
        &format!("after = [\"carriers\"]\n{copy}\n"),
    );
    let log = w.path().join("daemon-1.log");
    let mut daemon = start_daemon(&w, 1, &[]);
    wait_for("two runs after carriers", &log, || {
        reports(&w, "carriers_copy").len() >= 2
    });
    sigterm(&daemon);
    assert_eq!(wait_exit(&mut daemon, &log).code(), Some(0));
    let dates = |job: &str| -> Vec<String> {
        reports(&w, job)
            .iter()
            .filter(|r| r["status"] == "succeeded")
            .map(|r| r["logical_date"].as_str().unwrap().to_string())
            .collect()
    };
    let upstream = dates("carriers");
    let downstream = dates("carriers_copy");
    let text = std::fs::read_to_string(&log).unwrap();
    // Every downstream run stands for a date carriers committed, and no date twice.
    for d in &downstream {
        assert!(upstream.contains(d), "{d} not among {upstream:?}\n{text}");
    }
    let mut distinct = downstream.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), downstream.len(), "a date ran twice: {text}");
    assert_eq!(
        rows(&query(
            &w.path().join("warehouse/carriers_copy"),
            "SELECT count(*) FROM t"
        )),
        ["16"]
    );
}

#[test]
fn a_job_after_another_catches_up_at_start_on_the_date_its_upstream_committed_while_it_was_down() {
    let w = Workdir::project();
    let job = w.read("jobs/carriers.toml");
    w.write(
        "jobs/carriers_copy.toml",
        &format!(
            "after = [\"carriers\"]\n{}",
            job.replace("table = \"carriers\"", "table = \"carriers_copy\"")
        ),
    );
    // The upstream runs by hand, with no daemon to see it.
    let o = w.run(&["run", "carriers", "--date", "2026-11-02"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let log = w.path().join("daemon-1.log");
    let mut daemon = start_daemon(&w, 1, &[]);
    wait_for("the downstream run", &log, || {
        !reports(&w, "carriers_copy").is_empty()
    });
    // Give a second catch-up (the end of that run) the chance to run it again: it must not.
    std::thread::sleep(std::time::Duration::from_secs(2));
    sigterm(&daemon);
    assert_eq!(wait_exit(&mut daemon, &log).code(), Some(0));
    let runs = reports(&w, "carriers_copy");
    assert_eq!(runs.len(), 1, "{}", std::fs::read_to_string(&log).unwrap());
    assert_eq!(runs[0]["logical_date"], "2026-11-02T00:00:00Z");
    assert_eq!(runs[0]["trigger"], "after");
    assert_eq!(runs[0]["status"], "succeeded");
}
