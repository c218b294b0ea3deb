//! `kill -9` at any moment of a run leaves the previously published target intact.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{query, rows, run_killed_at, show, Workdir};

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
            // The data files, beside the version's commit record.
            let files: Vec<&String> = after.keys().filter(|f| f.ends_with(".parquet")).collect();
            assert_eq!(files.len(), 3, "one file per origin partition: {files:?}");
            assert!(after.contains_key("_sluice_commit.json"), "{files:?}");
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

/// A project whose job `load` reads table `src` of the SQLite file `data.db` incrementally by
/// `updated_at` and appends to the Parquet table `items`, with a rule that quarantines
/// negative prices (for replay).
fn incremental_project() -> Workdir {
    let w = Workdir::with_files(&[
        (
            "sluice.toml",
            "name = \"crash\"\n\n[connections.lite]\nkind = \"sqlite\"\nurl = \"data.db\"\n",
        ),
        (
            "mappings/canonical/item.toml",
            "name = \"item\"\nversion = \"1.0.0\"\n\n[fields.id]\ntype = \"int64\"\nprimary_key = true\n\n[fields.price]\ntype = \"float64\"\n\n[fields.updated_at]\ntype = \"timestamp\"\n",
        ),
        (
            "mappings/src_to_item.toml",
            "model = \"item@1\"\nfrom = \"src\"\n\n[fields]\nid = \"src.id\"\nprice = \"src.price\"\nupdated_at = \"src.updated_at\"\n\n[[rule]]\nname = \"price_not_negative\"\ncheck = \"price >= 0\"\nreason = \"price {price} is negative\"\n",
        ),
        (
            "jobs/load.toml",
            "mapping = \"src_to_item\"\n\n[sources.src]\nconnection = \"lite\"\ntable = \"src\"\nincremental = { column = \"updated_at\" }\n\n[target]\nformat = \"parquet\"\ntable = \"items\"\nmode = \"append\"\n",
        ),
    ]);
    sqlite(
        &w,
        "CREATE TABLE src (id INTEGER PRIMARY KEY, price REAL, updated_at TIMESTAMPTZ);",
    );
    w
}

fn sqlite(w: &Workdir, sql: &str) {
    let db = rusqlite::Connection::open(w.path().join("data.db")).unwrap();
    db.execute_batch(sql).unwrap();
}

/// Each id in the target with how many times it is there: `id|count` lines by id.
fn id_counts(w: &Workdir) -> Vec<String> {
    rows(&query(
        &w.path().join("warehouse/items"),
        "SELECT id, count(*) FROM t GROUP BY id ORDER BY id",
    ))
}

/// Rows the state store says committed runs loaded, and the watermark it holds.
fn state_of(w: &Workdir) -> (i64, Option<String>) {
    let db = rusqlite::Connection::open(w.path().join(".sluice/state.db")).unwrap();
    let loaded: i64 = db
        .query_row(
            "SELECT coalesce(sum(rows_written), 0) FROM runs WHERE job = 'load' AND status IN ('succeeded', 'succeeded_with_warnings')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mark = db
        .query_row(
            "SELECT value FROM watermarks WHERE job = 'load' AND source = 'src'",
            [],
            |r| r.get(0),
        )
        .ok();
    (loaded, mark)
}

const CRASH_POINTS: [&str; 3] = ["before_publish", "after_publish", "after_state"];

#[test]
fn incremental_append_killed_at_each_commit_point_loads_every_row_once() {
    for point in CRASH_POINTS {
        let w = incremental_project();
        let o = kill_incremental_append_then_rerun(&w, point, id_counts);
        if point != "before_publish" {
            assert!(
                show(&o).contains("recorded now from the target's commit record")
                    || point == "after_state",
                "{}",
                show(&o)
            );
        }
    }
}

#[test]
fn replay_killed_at_each_commit_point_loads_the_replayed_rows_once() {
    for point in CRASH_POINTS {
        // The same job over a CSV file (replay reads the quarantine of a file source).
        let w = incremental_project();
        let job = w.read("jobs/load.toml").replace(
            "connection = \"lite\"\ntable = \"src\"\nincremental = { column = \"updated_at\" }",
            "format = \"csv\"\npath = \"src.csv\"\ncolumns = { updated_at = \"timestamp\" }",
        );
        w.write("jobs/load.toml", &job);
        w.write(
            "src.csv",
            "id,price,updated_at\n1,1.0,2024-01-01T00:00:00Z\n2,-2.0,2024-01-01T00:00:00Z\n",
        );
        let o = w.run(&["run", "load", "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
        let run_id = crate::common::report(&o)["run_id"]
            .as_str()
            .unwrap()
            .to_string();
        // The fix: negative prices are refunds, and allowed.
        let mapping = w.read("mappings/src_to_item.toml");
        w.write(
            "mappings/src_to_item.toml",
            &mapping.replace("price >= 0", "price >= -10"),
        );
        run_killed_at(&w, &["replay", "load", "--run", &run_id], point);
        let again = w.run(&["replay", "load", "--run", &run_id]);
        if point == "before_publish" {
            assert_eq!(again.status.code(), Some(0), "{}", show(&again));
        } else {
            // The killed replay committed: a second one must be refused.
            assert_eq!(again.status.code(), Some(2), "{}", show(&again));
            assert!(
                show(&again).contains("already replayed"),
                "{}",
                show(&again)
            );
        }
        assert_eq!(id_counts(&w), ["1|1", "2|1"], "killed at {point}");
    }
}

/// Each id in SQLite table `dst` with how many times it is there.
fn db_id_counts(w: &Workdir) -> Vec<String> {
    let db = rusqlite::Connection::open(w.path().join("data.db")).unwrap();
    let mut stmt = db
        .prepare("SELECT id, count(*) FROM dst GROUP BY id ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| {
        Ok(format!("{}|{}", r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn incremental_append_into_a_database_killed_at_each_commit_point_loads_every_row_once() {
    for point in CRASH_POINTS {
        let w = incremental_project();
        let job = w.read("jobs/load.toml").replace(
            "format = \"parquet\"\ntable = \"items\"",
            "connection = \"lite\"\ntable = \"dst\"",
        );
        w.write("jobs/load.toml", &job);
        kill_incremental_append_then_rerun(&w, point, db_id_counts);
    }
}

/// Loads ids 1-2, kills the run loading ids 3-4 at `point`, runs again; asserts every id is in
/// the target once (read by `ids`), and the state store's rows and watermark agree. Returns
/// the last run's output.
fn kill_incremental_append_then_rerun(
    w: &Workdir,
    point: &str,
    ids: fn(&Workdir) -> Vec<String>,
) -> std::process::Output {
    sqlite(
        w,
        "INSERT INTO src VALUES (1, 1.0, '2024-01-01T00:00:00Z'), (2, 2.0, '2024-01-01T00:00:00Z');",
    );
    let o = w.run(&["run", "load"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    sqlite(
        w,
        "INSERT INTO src VALUES (3, 3.0, '2024-01-02T00:00:00Z'), (4, 4.0, '2024-01-02T00:00:00Z');",
    );
    run_killed_at(w, &["run", "load"], point);
    let o = w.run(&["run", "load"]);
    assert_eq!(o.status.code(), Some(0), "after {point}: {}", show(&o));
    assert_eq!(
        ids(w),
        ["1|1", "2|1", "3|1", "4|1"],
        "killed at {point}: every source row once; {}",
        show(&o)
    );
    let (loaded, mark) = state_of(w);
    assert_eq!(
        loaded, 4,
        "killed at {point}: the state store agrees with the target"
    );
    assert!(
        mark.as_deref().is_some_and(|m| m.starts_with("2024-01-02")),
        "killed at {point}: watermark {mark:?}"
    );
    o
}

#[test]
fn a_report_that_cannot_be_saved_after_the_publish_does_not_fail_the_run() {
    // A scheduler retries a run that exits 1; after the publish that would load it twice.
    let w = incremental_project();
    sqlite(
        &w,
        "INSERT INTO src VALUES (1, 1.0, '2024-01-01T00:00:00Z'), (2, 2.0, '2024-01-01T00:00:00Z');",
    );
    std::fs::create_dir_all(w.path().join(".sluice/runs")).unwrap();
    w.write(
        ".sluice/runs/load",
        "a file where the job's report folder should be",
    );
    let o = w.run(&["run", "load"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        show(&o).contains("its report was not saved"),
        "{}",
        show(&o)
    );
    assert_eq!(id_counts(&w), ["1|1", "2|1"]);
    // The state store has the run, so the next run reads nothing again.
    let o = w.run(&["run", "load", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(id_counts(&w), ["1|1", "2|1"]);
    assert_eq!(state_of(&w).0, 2);
}

/// Rows of the SQLite table `dst` (merge target) or the Parquet table `items`.
fn target_ids(w: &Workdir, database: bool) -> Vec<String> {
    if database {
        db_id_counts(w)
    } else {
        id_counts(w)
    }
}

#[test]
fn overwrite_merge_and_backfill_killed_at_each_commit_point_leave_each_row_once() {
    // (edits of the job file, command, database target)
    let to_db = (
        "format = \"parquet\"\ntable = \"items\"\nmode = \"append\"",
        "connection = \"lite\"\ntable = \"dst\"\nmode = \"merge\"",
    );
    type Edits = Vec<(&'static str, &'static str)>;
    let cases: Vec<(Edits, Vec<&str>, bool)> = vec![
        (
            vec![
                ("mode = \"append\"", "mode = \"overwrite\""),
                ("incremental = { column = \"updated_at\" }\n", ""),
            ],
            vec!["run", "load"],
            false,
        ),
        (vec![to_db], vec!["run", "load"], true),
        (
            vec![to_db],
            vec![
                "backfill",
                "load",
                "--from",
                "2024-01-01T00:00:00Z",
                "--to",
                "2024-01-03T00:00:00Z",
            ],
            true,
        ),
    ];
    for (edits, args, database) in cases {
        let args = &args[..];
        for point in CRASH_POINTS {
            let w = incremental_project();
            let mut job = w.read("jobs/load.toml");
            for (from, to) in &edits {
                assert!(job.contains(from), "{from}");
                job = job.replace(from, to);
            }
            w.write("jobs/load.toml", &job);
            sqlite(
                &w,
                "INSERT INTO src VALUES (1, 1.0, '2024-01-01T00:00:00Z'), (2, 2.0, '2024-01-01T00:00:00Z');",
            );
            let o = w.run(&["run", "load"]);
            assert_eq!(o.status.code(), Some(0), "{args:?}: {}", show(&o));
            sqlite(
                &w,
                "INSERT INTO src VALUES (3, 3.0, '2024-01-02T00:00:00Z'); UPDATE src SET price = 9.0 WHERE id = 1;",
            );
            run_killed_at(&w, args, point);
            let o = w.run(args);
            assert_eq!(
                o.status.code(),
                Some(0),
                "{args:?} after {point}: {}",
                show(&o)
            );
            assert_eq!(
                target_ids(&w, database),
                ["1|1", "2|1", "3|1"],
                "{args:?} killed at {point}: {}",
                show(&o)
            );
        }
    }
}

#[test]
fn a_recovered_run_registers_the_model_version_it_loaded() {
    // The first run of the job is killed after its publish: the model version it loaded must
    // still hold as a contract, so an incompatible edit under the same version is refused.
    let w = incremental_project();
    sqlite(
        &w,
        "INSERT INTO src VALUES (1, 1.0, '2024-01-01T00:00:00Z');",
    );
    run_killed_at(&w, &["run", "load"], "after_publish");
    let model = w.read("mappings/canonical/item.toml").replace(
        "[fields.price]\ntype = \"float64\"\n",
        "[fields.price]\ntype = \"float64\"\nrequired = true\n",
    );
    w.write("mappings/canonical/item.toml", &model);
    let o = w.run(&["run", "load"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        show(&o).contains("recorded now from the target's commit record"),
        "{}",
        show(&o)
    );
    assert!(show(&o).contains("1.0.0"), "{}", show(&o));
}
