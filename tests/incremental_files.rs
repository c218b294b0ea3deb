//! Incremental file sources (`incremental = { files = "new" }`): a run reads only the files
//! no committed run of the job read; the files are recorded as read with the target commit,
//! so a failed or killed run reads them again and a committed one never does.

use crate::common::{query, report, rows, run_killed_at, show, Workdir};

/// A project whose job `load` reads `landing/*.csv` (`id,price`) as an incremental file
/// source into the target `target` (TOML lines of `[target]`), with a rule quarantining
/// negative prices.
fn landing_project(target: &str) -> Workdir {
    Workdir::with_files(&[
        ("sluice.toml", "name = \"landing\"\n"),
        (
            "mappings/canonical/item.toml",
            "name = \"item\"\nversion = \"1.0.0\"\n\n[fields.id]\ntype = \"int64\"\nprimary_key = true\n\n[fields.price]\ntype = \"float64\"\n",
        ),
        (
            "mappings/src_to_item.toml",
            "model = \"item@1\"\nfrom = \"src\"\n\n[fields]\nid = \"src.id\"\nprice = \"src.price\"\n\n[[rule]]\nname = \"price_not_negative\"\ncheck = \"price >= 0\"\nreason = \"price {price} is negative\"\n",
        ),
        (
            "jobs/load.toml",
            &format!(
                "mapping = \"src_to_item\"\n\n[sources.src]\nformat = \"csv\"\npath = \"landing/*.csv\"\nincremental = {{ files = \"new\" }}\n\n[target]\n{target}\n"
            ),
        ),
    ])
}

const PARQUET_APPEND: &str = "format = \"parquet\"\ntable = \"items\"\nmode = \"append\"";

/// Writes `landing/<name>.csv` with `ids` (price = id).
fn land(w: &Workdir, name: &str, ids: &[i64]) {
    let mut csv = String::from("id,price\n");
    for id in ids {
        csv.push_str(&format!("{id},{id}.0\n"));
    }
    w.write(&format!("landing/{name}.csv"), &csv);
}

/// Each id in the Parquet table `items` with how many times it is there: `id|count` lines.
fn id_counts(w: &Workdir) -> Vec<String> {
    rows(&query(
        &w.path().join("warehouse/items"),
        "SELECT id, count(*) FROM t GROUP BY id ORDER BY id",
    ))
}

/// Runs `sluice run load --json ARGS` and returns its exit code and report.
fn run(w: &Workdir, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut all = vec!["run", "load", "--json"];
    all.extend_from_slice(args);
    let o = w.run(&all);
    assert!(
        !show(&o).contains("panicked"),
        "a panic is a failed run: {}",
        show(&o)
    );
    (o.status.code(), report(&o))
}

/// The `new_files` entry of source `src` in a report.
fn new_files(r: &serde_json::Value) -> &serde_json::Value {
    &r["new_files"][0]
}

/// The files the state store records as read for `load`'s source `src`, sorted.
fn recorded_files(w: &Workdir) -> Vec<String> {
    let db = rusqlite::Connection::open(w.path().join(".sluice/state.db")).unwrap();
    let mut stmt = db
        .prepare(
            "SELECT file FROM source_files WHERE job = 'load' AND source = 'src' ORDER BY file",
        )
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn each_run_reads_only_the_files_no_committed_run_read() {
    let w = landing_project(PARQUET_APPEND);
    land(&w, "2024-01-01", &[1, 2]);
    let (code, r) = run(&w, &[]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(
        new_files(&r)["read"],
        serde_json::json!(["landing/2024-01-01.csv"])
    );
    assert_eq!(new_files(&r)["recorded"], true);

    // A new file lands: only it is read.
    land(&w, "2024-01-02", &[3, 4]);
    let (code, r) = run(&w, &[]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(
        new_files(&r)["read"],
        serde_json::json!(["landing/2024-01-02.csv"])
    );
    assert_eq!(new_files(&r)["skipped"], 1);
    assert_eq!(r["rows"]["read"], 2);
    assert_eq!(id_counts(&w), ["1|1", "2|1", "3|1", "4|1"]);

    // Nothing new: the run succeeds, reads no row and loads nothing.
    let o = w.run(&["run", "load"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        show(&o).contains(
            "source src: 0 new file(s) read, 2 read by earlier runs skipped; nothing new to load"
        ),
        "{}",
        show(&o)
    );
    assert!(
        show(&o).contains("quarantine no rows rejected"),
        "no quarantine path for a file that was not written: {}",
        show(&o)
    );
    assert_eq!(id_counts(&w), ["1|1", "2|1", "3|1", "4|1"]);
    assert_eq!(
        recorded_files(&w),
        ["landing/2024-01-01.csv", "landing/2024-01-02.csv"]
    );

    // `sluice plan` shows what the next run reads.
    land(&w, "2024-01-03", &[5]);
    let o = w.run(&["plan", "load"]);
    assert!(
        show(&o).contains("incremental files: 1 new, 2 read by earlier runs (skipped)"),
        "{}",
        show(&o)
    );

    // --full-refresh reads every file, replaces the table, and records the files anew.
    let (code, r) = run(&w, &["--full-refresh"]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(new_files(&r)["skipped"], 0);
    assert_eq!(new_files(&r)["replace"], true);
    assert_eq!(r["rows"]["read"], 5);
    assert_eq!(id_counts(&w), ["1|1", "2|1", "3|1", "4|1", "5|1"]);
    assert_eq!(recorded_files(&w).len(), 3);
}

#[test]
fn a_run_that_does_not_commit_leaves_its_files_unread_for_the_next_run() {
    // A dataset check that fails (fewer than 3 rows) stops the commit.
    let w = landing_project(&format!(
        "{PARQUET_APPEND}\n\n[checks.row_count]\nfail_below = 3"
    ));
    land(&w, "a", &[1, 2]);
    let (code, r) = run(&w, &[]);
    assert_eq!(code, Some(3), "{r}");
    assert_eq!(new_files(&r)["recorded"], false);
    assert!(recorded_files(&w).is_empty());

    land(&w, "b", &[3]);
    let (code, r) = run(&w, &[]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(
        new_files(&r)["read"],
        serde_json::json!(["landing/a.csv", "landing/b.csv"]),
        "the file of the run that did not commit is read again"
    );
    assert_eq!(id_counts(&w), ["1|1", "2|1", "3|1"]);

    // Nothing new arrived: the dataset checks still run, and row_count says so.
    let (code, r) = run(&w, &[]);
    assert_eq!(code, Some(3), "{r}");
    assert_eq!(r["rows"]["read"], 0, "{r}");
    assert_eq!(id_counts(&w), ["1|1", "2|1", "3|1"]);
}

#[test]
fn killed_at_each_commit_point_every_files_rows_load_once() {
    for point in ["before_publish", "after_publish", "after_state"] {
        let w = landing_project(PARQUET_APPEND);
        land(&w, "a", &[1, 2]);
        assert_eq!(run(&w, &[]).0, Some(0));
        land(&w, "b", &[3, 4]);
        run_killed_at(&w, &["run", "load"], point);

        let (code, r) = run(&w, &[]);
        assert_eq!(code, Some(0), "after {point}: {r}");
        let read_again = if point == "before_publish" {
            serde_json::json!(["landing/b.csv"])
        } else {
            serde_json::json!([])
        };
        assert_eq!(new_files(&r)["read"], read_again, "after {point}");
        assert_eq!(
            id_counts(&w),
            ["1|1", "2|1", "3|1", "4|1"],
            "killed at {point}: every row once"
        );
        assert_eq!(
            recorded_files(&w),
            ["landing/a.csv", "landing/b.csv"],
            "killed at {point}"
        );
    }
}

#[test]
fn a_delta_append_killed_after_its_commit_is_recorded_from_the_table_log() {
    let w = landing_project("format = \"delta\"\ntable = \"items\"\nmode = \"append\"");
    let table = w.path().join("warehouse/items");
    land(&w, "a", &[1, 2]);
    assert_eq!(run(&w, &[]).0, Some(0));
    land(&w, "b", &[3]);
    run_killed_at(&w, &["run", "load"], "after_publish");

    let o = w.run(&["run", "load"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        show(&o).contains("its new files recorded as read"),
        "{}",
        show(&o)
    );
    assert!(show(&o).contains("nothing new to load"), "{}", show(&o));
    assert_eq!(
        crate::object_store::delta_rows(table.to_str().unwrap(), "id"),
        ["1", "2", "3"]
    );
}

#[test]
fn incremental_files_are_refused_on_a_lookup_and_on_a_database_source_with_a_hint() {
    let w = landing_project(PARQUET_APPEND);
    land(&w, "a", &[1]);
    // A database source with `files`, and a file source with a cursor column.
    w.write(
        "sluice.toml",
        "name = \"landing\"\n\n[connections.lite]\nkind = \"sqlite\"\nurl = \"data.db\"\n",
    );
    w.write(
        "jobs/load.toml",
        "mapping = \"src_to_item\"\n\n[sources.src]\nconnection = \"lite\"\ntable = \"src\"\nincremental = { files = \"new\" }\n\n[target]\nformat = \"parquet\"\ntable = \"items\"\nmode = \"append\"\n",
    );
    let o = w.run(&["validate"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        show(&o).contains("jobs/load.toml:6")
            && show(&o).contains("`incremental.files` applies only to file sources"),
        "{}",
        show(&o)
    );
    w.write(
        "jobs/load.toml",
        "mapping = \"src_to_item\"\n\n[sources.src]\nformat = \"csv\"\npath = \"landing/*.csv\"\nincremental = { column = \"id\" }\n\n[target]\nformat = \"parquet\"\ntable = \"items\"\nmode = \"append\"\n",
    );
    let o = w.run(&["validate"]);
    assert!(
        show(&o).contains("`incremental.column` applies only to database sources")
            && show(&o).contains("incremental = { files = \"new\" }"),
        "{}",
        show(&o)
    );

    // A lookup must be read whole.
    w.write(
        "mappings/src_to_item.toml",
        "model = \"item@1\"\nfrom = \"src\"\n\n[[join]]\nsource = \"prices\"\nas = \"p\"\non = \"p.id = src.id\"\n\n[fields]\nid = \"src.id\"\nprice = \"p.price\"\n",
    );
    w.write(
        "jobs/load.toml",
        "mapping = \"src_to_item\"\n\n[sources.src]\nformat = \"csv\"\npath = \"landing/*.csv\"\n\n[sources.prices]\nformat = \"csv\"\npath = \"landing/*.csv\"\nincremental = { files = \"new\" }\n\n[target]\nformat = \"parquet\"\ntable = \"items\"\nmode = \"append\"\n",
    );
    let o = w.run(&["validate"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        show(&o).contains("source `prices` is a lookup of mapping `src_to_item`")
            && show(&o).contains("a lookup is read whole"),
        "{}",
        show(&o)
    );
}
