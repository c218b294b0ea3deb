//! Databases as sources and targets, against the real PostgreSQL and MariaDB servers of this
//! machine (127.0.0.1:5432, user `postgres`, database `test`; 127.0.0.1:3306, `root`, database
//! `test`) and SQLite files. Each test works in its own schema or tables, named after the test
//! and the process, and drops them when it ends.
//!
//! Expected values are written from the SQL that creates the source rows, not from Sluice's
//! output.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{query, rows, show, Workdir};

/// Runs SQL with `psql` on the `test` database; panics with psql's message on failure.
fn psql(sql: &str) -> String {
    psql_in("test", sql)
}

/// Runs SQL with `psql` on database `db` of the local server; panics with psql's message on
/// failure.
pub(crate) fn psql_in(db: &str, sql: &str) -> String {
    let o = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            db,
            "-Atq",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("psql");
    assert!(
        o.status.success(),
        "psql failed: {}\n{sql}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Runs SQL with the `mariadb` client on database `test`.
fn mariadb(sql: &str) -> String {
    let o = Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-u",
            "root",
            "-N",
            "-B",
            "test",
            "-e",
            sql,
        ])
        .output()
        .expect("mariadb");
    assert!(
        o.status.success(),
        "mariadb failed: {}\n{sql}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A PostgreSQL schema for one test, dropped when dropped.
struct PgSchema(String);

impl PgSchema {
    fn new(test: &str) -> PgSchema {
        let name = format!("sluice_t_{test}_{}", std::process::id());
        psql(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
        ));
        PgSchema(name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0))
            .output();
    }
}

/// MariaDB tables of one test (prefix), dropped when dropped.
struct MyTables(String);

impl MyTables {
    fn new(test: &str) -> MyTables {
        MyTables(format!("t_{test}_{}", std::process::id()))
    }
}

impl Drop for MyTables {
    fn drop(&mut self) {
        let out = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-u", "root", "-N", "-B", "test", "-e"])
            .arg(format!(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'test' AND table_name LIKE '{}%'",
                self.0
            ))
            .output();
        if let Ok(o) = out {
            for t in String::from_utf8_lossy(&o.stdout).lines() {
                let _ = Command::new("mariadb")
                    .args(["-h", "127.0.0.1", "-u", "root", "test", "-e"])
                    .arg(format!("DROP TABLE IF EXISTS `{t}`"))
                    .output();
            }
        }
    }
}

const CONNECTIONS: &str = r#"
name = "dbtest"

[connections.pg]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:5432/test"

[connections.my]
kind = "mysql"
url = "mysql://root@127.0.0.1:3306/test"

[connections.lite]
kind = "sqlite"
url = "data.db"
"#;

/// `item`: a small model with a key, text, an exact decimal and a timestamp.
const ITEM_MODEL: &str = r#"
name = "item"
version = "1.0.0"

[fields.id]
type = "int64"
primary_key = true

[fields.name]
type = "string"
required = true

[fields.price]
type = "decimal(10,2)"

[fields.updated_at]
type = "timestamp"
"#;

/// The item mapping from a CSV (or database) source `items`.
const ITEM_MAPPING: &str = r#"
model = "item@1"
from = "items"

[fields]
id = "items.id"
name = "items.name"
price = "items.price"
updated_at = "items.updated_at"
"#;

fn item_project(job: &str) -> Workdir {
    Workdir::with_files(&[
        ("sluice.toml", CONNECTIONS),
        ("mappings/canonical/item.toml", ITEM_MODEL),
        ("mappings/items_to_item.toml", ITEM_MAPPING),
        ("jobs/load.toml", job),
    ])
}

/// A job loading `items.csv` into `table` of connection `conn` with `mode` (+ extra lines).
fn csv_job(conn: &str, table: &str, mode: &str, extra: &str) -> String {
    format!(
        r#"
mapping = "items_to_item"

[sources.items]
format = "csv"
path = "items.csv"
columns = {{ price = "decimal(10,2)", updated_at = "timestamp" }}

[target]
connection = "{conn}"
table = "{table}"
mode = "{mode}"
{extra}
"#
    )
}

fn run_json(w: &Workdir, args: &[&str]) -> (std::process::Output, serde_json::Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let o = w.run(&all);
    let r = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o, r)
}

fn load_counts(r: &serde_json::Value) -> (u64, u64, u64) {
    let l = &r["load"];
    (
        l["inserted"].as_u64().unwrap_or(u64::MAX),
        l["updated"].as_u64().unwrap_or(u64::MAX),
        l["deleted"].as_u64().unwrap_or(u64::MAX),
    )
}

const V1: &str = "id,name,price,updated_at\n1,apple,1.10,2024-01-01T00:00:00Z\n2,pear,2.20,2024-01-01T00:00:00Z\n3,plum,3.30,2024-01-01T00:00:00Z\n";
/// Pear's price changed, plum and apple are gone, fig is new.
const V2: &str =
    "id,name,price,updated_at\n2,pear,2.25,2024-01-02T00:00:00Z\n4,fig,4.40,2024-01-02T00:00:00Z\n";

/// Reads a table as `id|name|price` lines ordered by id (and valid_from for scd2).
fn pg_rows(sql: &str) -> Vec<String> {
    let out = psql(sql);
    out.lines().map(str::to_string).collect()
}

#[test]
fn postgres_load_modes_commit_what_each_mode_promises() {
    let s = PgSchema::new("modes");
    let t = |name: &str| format!("{}.{name}", s.0);

    // append: the table is created from the model; loading the same keys again is refused by
    // the primary key and leaves the table as it was.
    let w = item_project(&csv_job("pg", &t("appended"), "append", ""));
    w.write("items.csv", V1);
    let (o, r) = run_json(&w, &["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(load_counts(&r), (3, 0, 0));
    let (o, r) = run_json(&w, &["run", "load"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let msg = r["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("duplicate key"), "{msg}");
    assert_eq!(
        psql(&format!("SELECT count(*) FROM {}", t("appended"))),
        "3"
    );
    let ddl = psql(&format!(
        "SELECT string_agg(column_name || ' ' || data_type || ' ' || is_nullable, ', ' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = '{}' AND table_name = 'appended'",
        s.0
    ));
    assert_eq!(
        ddl,
        "id bigint NO, name text NO, price numeric YES, updated_at timestamp with time zone YES"
    );

    // overwrite: the second run's rows replace the first's.
    let w = item_project(&csv_job("pg", &t("replaced"), "overwrite", ""));
    w.write("items.csv", V1);
    assert!(w.run(&["run", "load"]).status.success());
    w.write("items.csv", V2);
    let (o, r) = run_json(&w, &["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(load_counts(&r), (2, 0, 3));
    assert_eq!(
        pg_rows(&format!(
            "SELECT id, name, price FROM {} ORDER BY id",
            t("replaced")
        )),
        ["2|pear|2.25", "4|fig|4.40"]
    );

    // merge: new keys inserted, changed rows updated, others kept.
    let w = item_project(&csv_job("pg", &t("merged"), "merge", ""));
    w.write("items.csv", V1);
    assert!(w.run(&["run", "load"]).status.success());
    w.write("items.csv", V2);
    let (o, r) = run_json(&w, &["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(load_counts(&r), (1, 1, 0));
    assert_eq!(
        pg_rows(&format!(
            "SELECT id, name, price FROM {} ORDER BY id",
            t("merged")
        )),
        ["1|apple|1.10", "2|pear|2.25", "3|plum|3.30", "4|fig|4.40"]
    );
    // The same rows again change nothing.
    let (_, r) = run_json(&w, &["run", "load"]);
    assert_eq!(load_counts(&r), (0, 0, 0));

    // merge with delete_missing: keys this run did not read go.
    let w = item_project(&csv_job(
        "pg",
        &t("mirrored"),
        "merge",
        "delete_missing = true",
    ));
    w.write("items.csv", V1);
    assert!(w.run(&["run", "load"]).status.success());
    w.write("items.csv", V2);
    let (_, r) = run_json(&w, &["run", "load"]);
    assert_eq!(load_counts(&r), (1, 1, 2));
    assert_eq!(
        pg_rows(&format!(
            "SELECT id, name, price FROM {} ORDER BY id",
            t("mirrored")
        )),
        ["2|pear|2.25", "4|fig|4.40"]
    );

    // scd2: a changed row closes its current version and opens a new one.
    let w = item_project(&csv_job(
        "pg",
        &t("history"),
        "scd2",
        "delete_missing = true",
    ));
    w.write("items.csv", V1);
    assert!(w.run(&["run", "load"]).status.success());
    w.write("items.csv", V2);
    let (o, r) = run_json(&w, &["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    // Pear v2 and fig inserted; pear v1 closed; apple and plum closed as missing.
    assert_eq!(load_counts(&r), (2, 1, 2));
    assert_eq!(
        pg_rows(&format!(
            "SELECT id, price, is_current, valid_to IS NULL FROM {} ORDER BY id, valid_from",
            t("history")
        )),
        [
            "1|1.10|f|f",
            "2|2.20|f|f",
            "2|2.25|t|t",
            "3|3.30|f|f",
            "4|4.40|t|t"
        ]
    );
    // A closed version ends when its successor starts.
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM {h} a JOIN {h} b ON a.id = b.id AND a.valid_to = b.valid_from",
            h = t("history")
        )),
        "1"
    );
    // Loading the same rows again finds no change.
    let (_, r) = run_json(&w, &["run", "load"]);
    assert_eq!(load_counts(&r), (0, 0, 0));
}

#[test]
fn merge_refuses_two_rows_of_one_key_and_loads_nothing() {
    let s = PgSchema::new("dupkeys");
    let w = item_project(&csv_job("pg", &format!("{}.items", s.0), "merge", ""));
    w.write(
        "items.csv",
        "id,name,price,updated_at\n1,a,1.00,2024-01-01T00:00:00Z\n1,b,2.00,2024-01-01T00:00:00Z\n",
    );
    let (o, r) = run_json(&w, &["run", "load"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("appear more than once") && msg.contains("unique"),
        "{msg}"
    );
    // The table was created in the same transaction, so it is not there either.
    assert_eq!(
        psql(&format!("SELECT to_regclass('{}.items') IS NULL", s.0)),
        "t"
    );
}

#[test]
fn mariadb_and_sqlite_load_modes() {
    let my = MyTables::new("modes");
    for (conn, table) in [
        ("my", format!("{}_merged", my.0)),
        ("lite", "merged".to_string()),
    ] {
        let w = item_project(&csv_job(conn, &table, "merge", ""));
        w.write("items.csv", V1);
        let (o, _) = run_json(&w, &["run", "load"]);
        assert!(o.status.success(), "{conn}: {}", show(&o));
        w.write("items.csv", V2);
        let (o, r) = run_json(&w, &["run", "load"]);
        assert!(o.status.success(), "{conn}: {}", show(&o));
        assert_eq!(load_counts(&r), (1, 1, 0), "{conn}");
        let got = read_items(conn, &w, &table, "id, name, price");
        assert_eq!(
            got,
            ["1|apple|1.10", "2|pear|2.25", "3|plum|3.30", "4|fig|4.40"],
            "{conn}"
        );
        let (_, r) = run_json(&w, &["run", "load"]);
        assert_eq!(
            load_counts(&r),
            (0, 0, 0),
            "{conn}: a second merge changes nothing"
        );

        let table = format!("{table}_h");
        let w = item_project(&csv_job(conn, &table, "scd2", ""));
        w.write("items.csv", V1);
        assert!(w.run(&["run", "load"]).status.success());
        w.write("items.csv", V2);
        let (o, r) = run_json(&w, &["run", "load"]);
        assert!(o.status.success(), "{conn}: {}", show(&o));
        assert_eq!(load_counts(&r), (2, 1, 0), "{conn}");
        let got = read_items(conn, &w, &table, "id, price, is_current");
        assert_eq!(
            got,
            ["1|1.10|1", "2|2.20|0", "2|2.25|1", "3|3.30|1", "4|4.40|1"],
            "{conn}"
        );

        let table = table.replace("_h", "_o");
        let w = item_project(&csv_job(conn, &table, "overwrite", ""));
        w.write("items.csv", V1);
        assert!(w.run(&["run", "load"]).status.success());
        w.write("items.csv", V2);
        let (o, r) = run_json(&w, &["run", "load"]);
        assert!(o.status.success(), "{conn}: {}", show(&o));
        assert_eq!(load_counts(&r), (2, 0, 3), "{conn}");
        assert_eq!(
            read_items(conn, &w, &table, "id, name, price"),
            ["2|pear|2.25", "4|fig|4.40"],
            "{conn}"
        );
    }
}

/// Rows of a MariaDB (`my`) or SQLite (`lite`) table as `a|b|c`, ordered by the first column
/// (then by `valid_from` when present).
fn read_items(conn: &str, w: &Workdir, table: &str, cols: &str) -> Vec<String> {
    let order = if cols.contains("is_current") {
        "1, valid_from"
    } else {
        "1"
    };
    match conn {
        "my" => mariadb(&format!(
            "SELECT CONCAT_WS('|', {cols}) FROM `{table}` ORDER BY {order}"
        ))
        .lines()
        .map(str::to_string)
        .collect(),
        _ => {
            let db = rusqlite::Connection::open(w.path().join("data.db")).unwrap();
            let sql = format!(
                "SELECT {} FROM \"{table}\" ORDER BY {order}",
                cols.split(", ").collect::<Vec<_>>().join(" || '|' || ")
            );
            let mut stmt = db.prepare(&sql).unwrap();
            stmt.query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        }
    }
}

/// A source table of events with an `updated_at` cursor, merged into a target with a lookback.
fn incremental_project(schema: &str, lookback: &str) -> Workdir {
    let job = format!(
        r#"
mapping = "items_to_item"

[sources.items]
connection = "pg"
table = "{schema}.src"
incremental = {{ column = "updated_at", lookback = "{lookback}" }}

[target]
connection = "pg"
table = "{schema}.dst"
mode = "merge"
"#
    );
    item_project(&job)
}

#[test]
fn incremental_runs_read_above_the_watermark_catch_late_rows_and_backfill() {
    let s = PgSchema::new("incr");
    psql(&format!(
        "CREATE TABLE {s}.src (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2), updated_at timestamptz NOT NULL);
         INSERT INTO {s}.src VALUES
           (1, 'a', 1.00, '2024-01-01 10:00+00'),
           (2, 'b', 2.00, '2024-01-01 11:00+00'),
           (3, 'c', 3.00, '2024-01-01 12:00+00');",
        s = s.0
    ));
    let w = incremental_project(&s.0, "1h");
    let (o, r) = run_json(&w, &["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(r["rows"]["read"], 3);
    assert_eq!(
        r["watermarks"][0]["value"],
        "2024-01-01 12:00:00.000000+00:00"
    );

    // `plan` shows the SQL the database runs: the used columns and the bound range.
    let o = w.run(&["plan", "load"]);
    let plan = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        plan.contains(&format!(
            r#"SELECT "id", "name", "price", "updated_at" FROM "{}"."src" WHERE "updated_at" > $1::text::timestamptz"#,
            s.0
        )),
        "{plan}"
    );
    assert!(
        plan.contains("parameter 1: 2024-01-01 11:00:00.000000+00:00"),
        "{plan}"
    );

    // New row 4; late row 5 (committed after the last run, stamped inside the lookback);
    // row 6 stamped before the lookback; row 1 updated.
    psql(&format!(
        "INSERT INTO {s}.src VALUES
           (4, 'd', 4.00, '2024-01-01 13:00+00'),
           (5, 'e', 5.00, '2024-01-01 11:30+00'),
           (6, 'f', 6.00, '2024-01-01 10:30+00');
         UPDATE {s}.src SET name = 'a2', updated_at = '2024-01-01 12:30+00' WHERE id = 1;",
        s = s.0
    ));
    let (o, r) = run_json(&w, &["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    // Rows with updated_at > 11:00: c (12:00, read again), d, e, a2.
    assert_eq!(r["rows"]["read"], 4);
    assert_eq!(
        load_counts(&r),
        (2, 1, 0),
        "d and e inserted, a updated, c unchanged"
    );
    assert_eq!(
        r["watermarks"][0]["value"],
        "2024-01-01 13:00:00.000000+00:00"
    );
    assert_eq!(
        pg_rows(&format!("SELECT id, name FROM {}.dst ORDER BY id", s.0)),
        ["1|a2", "2|b", "3|c", "4|d", "5|e"]
    );

    // A backfill reads its range, loads row 6, and leaves the watermark alone.
    let (o, r) = run_json(
        &w,
        &[
            "backfill",
            "load",
            "--from",
            "2024-01-01T10:00:00Z",
            "--to",
            "2024-01-01T11:00:00Z",
        ],
    );
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(r["rows"]["read"], 1);
    assert_eq!(r["watermarks"][0]["moved"], false);
    // The next run still reads from the 13:00 watermark minus the lookback.
    let plan = String::from_utf8_lossy(&w.run(&["plan", "load"]).stdout).to_string();
    assert!(
        plan.contains("parameter 1: 2024-01-01 12:00:00.000000+00:00"),
        "{plan}"
    );
    assert_eq!(psql(&format!("SELECT count(*) FROM {}.dst", s.0)), "6");

    // --full-refresh reads every row again; the merge finds nothing to change.
    let (o, r) = run_json(&w, &["run", "load", "--full-refresh"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(r["rows"]["read"], 6);
    assert_eq!(load_counts(&r), (0, 0, 0));
    assert_eq!(
        psql(&format!(
            "SELECT count(*) = count(DISTINCT id) FROM {}.dst",
            s.0
        )),
        "t"
    );
}

#[test]
fn a_table_that_differs_from_the_model_stops_the_run_and_plan_shows_why() {
    let s = PgSchema::new("mismatch");
    psql(&format!(
        "CREATE TABLE {}.items (id bigint PRIMARY KEY, name text NOT NULL, price text, updated_at timestamptz);
         INSERT INTO {}.items VALUES (9, 'kept', 'x', NULL);",
        s.0, s.0
    ));
    let w = item_project(&csv_job("pg", &format!("{}.items", s.0), "merge", ""));
    w.write("items.csv", V1);
    let o = w.run(&["plan", "load"]);
    let plan = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        plan.contains("column `price` is text in the table, numeric(10,2) in the model"),
        "{plan}"
    );
    let (o, r) = run_json(&w, &["run", "load"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("column `price` is text in the table"), "{msg}");
    assert_eq!(
        pg_rows(&format!("SELECT id, name FROM {}.items", s.0)),
        ["9|kept"]
    );

    // A table lacking a nullable field of the model: refused by default...
    psql(&format!(
        "DROP TABLE {s}.items; CREATE TABLE {s}.items (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2));",
        s = s.0
    ));
    let (o, r) = run_json(&w, &["run", "load"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("column `updated_at` is in the model but not in the table")
            && msg.contains("on_schema_change = \"add_columns\""),
        "{msg}"
    );
    // ...and added with on_schema_change = "add_columns".
    w.write(
        "jobs/load.toml",
        &csv_job(
            "pg",
            &format!("{}.items", s.0),
            "merge",
            "on_schema_change = \"add_columns\"",
        ),
    );
    let (o, r) = run_json(&w, &["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(load_counts(&r), (3, 0, 0));
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM {}.items WHERE updated_at = '2024-01-01 00:00+00'",
            s.0
        )),
        "3"
    );
}

#[test]
fn secrets_never_appear_in_output_reports_or_plans() {
    let secret = format!("db_s3cr3t_{}", std::process::id());
    let toml = r#"
name = "secrets"

[connections.pg]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:5432/${env:SLUICE_TEST_DB}"
"#;
    let w = Workdir::with_files(&[
        ("sluice.toml", toml),
        ("mappings/canonical/item.toml", ITEM_MODEL),
        ("mappings/items_to_item.toml", ITEM_MAPPING),
        ("jobs/load.toml", &csv_job("pg", "items", "merge", "")),
    ]);
    w.write("items.csv", V1);
    let mut outputs = Vec::new();
    for args in [
        vec!["run", "load"],
        vec!["run", "load", "--json"],
        vec!["plan", "load"],
        vec!["validate"],
    ] {
        let o = w
            .sluice(&args)
            .env("SLUICE_TEST_DB", &secret)
            .output()
            .unwrap();
        outputs.push((args.join(" "), show(&o)));
    }
    // The database does not exist, and PostgreSQL's message names it: Sluice must hide it.
    let (_, run_out) = &outputs[0];
    assert!(run_out.contains("***"), "{run_out}");
    assert!(run_out.contains("does not exist"), "{run_out}");
    for (args, out) in &outputs {
        assert!(
            !out.contains(&secret),
            "`sluice {args}` printed the secret:\n{out}"
        );
    }
    for entry in crate::common::walk(w.path()) {
        if let Ok(text) = std::fs::read(&entry) {
            assert!(
                !String::from_utf8_lossy(&text).contains(&secret),
                "{} holds the secret",
                entry.display()
            );
        }
    }
    // A password written in plain text is refused.
    w.write(
        "sluice.toml",
        &toml.replace("postgres@", "postgres:hunter2@"),
    );
    let o = w.run(&["validate"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        show(&o).contains("password written in plain text"),
        "{}",
        show(&o)
    );
}

/// Kills the first backend of application `app` whose query starts with `prefix`
/// (PostgreSQL), polling until `deadline`; returns whether it killed one.
fn kill_pg_when(app: &str, prefix: &str, deadline: Duration) -> std::thread::JoinHandle<bool> {
    let prefix = prefix.to_string();
    let app = app.to_string();
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < deadline {
            let killed = psql(&format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{app}' AND query LIKE '{prefix}%' AND pid <> pg_backend_pid()"
            ));
            if killed != "0" {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    })
}

#[test]
fn a_killed_postgres_connection_leaves_target_and_watermark_and_a_retry_loads_once() {
    let s = PgSchema::new("kill");
    // Enough rows that the COPY into staging lasts a while.
    psql(&format!(
        "CREATE TABLE {s}.src (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2), updated_at timestamptz NOT NULL);
         INSERT INTO {s}.src SELECT g, 'n' || g, g % 1000 / 10.0, '2024-01-01'::timestamptz + g * interval '1 second'
           FROM generate_series(1, 1000) g;",
        s = s.0
    ));
    let w = incremental_project(&s.0, "1h");
    // Its own application name, so the killer only sees this test's connections.
    let app = format!("sluice_kill_{}", std::process::id());
    w.write(
        "sluice.toml",
        &CONNECTIONS.replace(
            "5432/test\"",
            &format!("5432/test?application_name={app}\""),
        ),
    );
    let (o, _) = run_json(&w, &["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    let before = psql(&format!("SELECT count(*), sum(price) FROM {}.dst", s.0));
    assert_eq!(before, "1000|49950.00");
    psql(&format!(
        "INSERT INTO {s}.src SELECT g, 'n' || g, 1.00, '2024-02-01'::timestamptz + g * interval '1 second'
           FROM generate_series(1001, 400000) g;",
        s = s.0
    ));
    let state = w.path().join(".sluice/state.db");
    let watermark = || {
        rusqlite::Connection::open(&state)
            .unwrap()
            .query_row("SELECT value FROM watermarks", [], |r| {
                r.get::<_, String>(0)
            })
            .unwrap()
    };
    let wm_before = watermark();

    let killer = kill_pg_when(&app, "COPY", Duration::from_secs(60));
    let (o, r) = run_json(&w, &["run", "load"]);
    assert!(killer.join().unwrap(), "the load was never seen running");
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(r["error"]["class"], "connection", "{}", show(&o));
    assert_eq!(r["error"]["transient"], true, "{}", show(&o));
    let msg = r["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("terminating connection") || msg.contains("closed"),
        "{}",
        show(&o)
    );
    assert_eq!(
        psql(&format!("SELECT count(*), sum(price) FROM {}.dst", s.0)),
        before
    );
    assert_eq!(watermark(), wm_before, "the watermark moved without data");

    // With retries, the killed attempt is followed by one that loads every row once.
    let job = std::fs::read_to_string(w.path().join("jobs/load.toml")).unwrap()
        + "\n[retry]\nattempts = 3\nbackoff = \"100ms\"\n";
    w.write("jobs/load.toml", &job);
    let killer = kill_pg_when(&app, "COPY", Duration::from_secs(60));
    let o = w.run(&["run", "load"]);
    assert!(killer.join().unwrap(), "the load was never seen running");
    assert!(o.status.success(), "{}", show(&o));
    assert!(show(&o).contains("attempt 1 of 3 failed"), "{}", show(&o));
    assert_eq!(
        psql(&format!(
            "SELECT count(*), count(DISTINCT id), sum(price) FROM {}.dst",
            s.0
        )),
        "400000|400000|448950.00"
    );
    assert_ne!(watermark(), wm_before);
}

#[test]
fn a_killed_mariadb_connection_leaves_the_target_as_it_was() {
    let my = MyTables::new("kill");
    let table = format!("{}_dst", my.0);
    let w = item_project(&csv_job("my", &table, "merge", ""));
    w.write("items.csv", V1);
    assert!(w.run(&["run", "load"]).status.success());
    let mut csv = String::from("id,name,price,updated_at\n");
    for i in 1..=200_000 {
        csv.push_str(&format!("{i},n{i},1.00,2024-01-01T00:00:00Z\n"));
    }
    w.write("items.csv", &csv);
    let pattern = format!("INSERT INTO `{table}%");
    let killer = std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            let ids = mariadb(&format!(
                "SELECT id FROM information_schema.PROCESSLIST WHERE info LIKE '{pattern}' AND id <> CONNECTION_ID()"
            ));
            if let Some(id) = ids.lines().next() {
                let _ = Command::new("mariadb")
                    .args(["-h", "127.0.0.1", "-u", "root", "-e"])
                    .arg(format!("KILL {id}"))
                    .output();
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    });
    let (o, r) = run_json(&w, &["run", "load"]);
    assert!(killer.join().unwrap(), "the load was never seen running");
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(r["error"]["class"], "connection", "{}", show(&o));
    assert_eq!(
        read_items("my", &w, &table, "id, name, price"),
        ["1|apple|1.10", "2|pear|2.20", "3|plum|3.30"]
    );
}

#[test]
fn postgres_source_types_map_exactly() {
    let s = PgSchema::new("types");
    psql(&format!(
        r#"CREATE TABLE {s}.src (
             id integer PRIMARY KEY, i2 smallint, i8 bigint, f4 real, f8 double precision,
             amount numeric(12,2), big numeric(38,10), flag boolean, name varchar(20), note text,
             blob bytea, doc json, docb jsonb, uid uuid, day date, at timestamp, at_tz timestamptz,
             tod time);
           INSERT INTO {s}.src VALUES
             (1, -32768, 9223372036854775807, 1.5, 2.25, -1234567890.12,
              1234567890123456789012345678.0123456789, true, 'Zoë', 'two
lines', '\x00ff'::bytea, '{{"a": 1}}', '{{"b": [1, 2]}}',
              'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2013-06-30', '2013-06-30 23:59:59.123456',
              '2013-06-30 23:59:59.123456-05', '12:34:56.789'),
             (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
              NULL, NULL, NULL);"#,
        s = s.0
    ));
    let w = types_project("pg", &format!("{}.src", s.0));
    let o = w.run(&["plan", "load"]);
    let plan = String::from_utf8_lossy(&o.stdout).to_string();
    for (col, arrow, db) in [
        ("amount", "Decimal128(12, 2)", "numeric(12,2)"),
        ("big", "Decimal128(38, 10)", "numeric(38,10)"),
        ("at_tz", "Timestamp(µs, \"UTC\")", "timestamptz"),
        ("at", "Timestamp(µs)", "timestamp"),
        ("tod", "Time64(µs)", "time"),
        ("blob", "Binary", "bytea"),
        ("docb", "Utf8", "jsonb"),
        ("uid", "Utf8", "uuid"),
    ] {
        let line = plan
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{col} ")))
            .unwrap_or_else(|| panic!("no `{col}` in plan:\n{plan}"));
        assert!(line.contains(arrow) && line.contains(db), "{line}");
    }
    assert_types_loaded(&w, "pg");

    // An interval has no exact Arrow type here; an unconstrained numeric no fixed scale.
    for (ty, what) in [
        ("interval", "interval"),
        ("numeric", "numeric without precision and scale"),
    ] {
        psql(&format!(
            "DROP TABLE IF EXISTS {s}.odd; CREATE TABLE {s}.odd (id integer, amount integer, v {ty}, w text[])",
            s = s.0
        ));
        let w = types_project_for_odd("pg", &format!("{}.odd", s.0));
        let o = w.run(&["run", "load"]);
        assert_eq!(o.status.code(), Some(1), "{}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(
            err.contains(&format!("column `v` has type {what}"))
                && err.contains("column `w` has type text[]")
                && err.contains("query ="),
            "{err}"
        );
    }
}

#[test]
fn mariadb_source_types_map_exactly() {
    let my = MyTables::new("types");
    let t = format!("{}_src", my.0);
    mariadb(&format!(
        r#"CREATE TABLE `{t}` (
             id int PRIMARY KEY, i2 smallint, i8 bigint, f4 float, f8 double,
             amount decimal(12,2), big decimal(38,10), flag tinyint, name varchar(20), note text,
             `blob` varbinary(10), doc json, docb json, uid uuid, day date, at datetime(6), at_tz timestamp(6) NULL,
             tod time(6));
           SET time_zone = '-05:00';
           INSERT INTO `{t}` VALUES
             (1, -32768, 9223372036854775807, 1.5, 2.25, -1234567890.12,
              1234567890123456789012345678.0123456789, 1, 'Zoë', 'two\nlines', x'00ff', '{{"a": 1}}', '{{"b": [1, 2]}}',
              'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2013-06-30', '2013-06-30 23:59:59.123456',
              '2013-06-30 23:59:59.123456', '12:34:56.789'),
             (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
              NULL, NULL, NULL);"#
    ));
    let w = types_project("my", &t);
    assert_types_loaded(&w, "my");
}

#[test]
fn sqlite_source_types_map_exactly() {
    let w = types_project("lite", "src");
    let db = rusqlite::Connection::open(w.path().join("data.db")).unwrap();
    db.execute_batch(
        r#"CREATE TABLE src (
             id INTEGER PRIMARY KEY, i2 SMALLINT, i8 BIGINT, f4 FLOAT, f8 DOUBLE,
             amount DECIMAL(12,2), big DECIMAL_TEXT(38,10), flag BOOLEAN, name VARCHAR(20), note TEXT,
             blob BLOB, doc JSON, docb JSON, uid UUID, day DATE, at DATETIME, at_tz TIMESTAMPTZ,
             tod TIME);
           INSERT INTO src VALUES
             (1, -32768, 9223372036854775807, 1.5, 2.25, '-1234567890.12',
              '1234567890123456789012345678.0123456789', 1, 'Zoë', 'two
lines', x'00ff', '{"a": 1}', '{"b": [1, 2]}',
              'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2013-06-30', '2013-06-30 23:59:59.123456',
              '2013-06-30T23:59:59.123456-05:00', '12:34:56.789'),
             (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
              NULL, NULL, NULL);"#,
    )
    .unwrap();
    drop(db);
    assert_types_loaded(&w, "lite");
}

const TYPES_MODEL: &str = r#"
name = "typed"
version = "1.0.0"

[fields.id]
type = "int64"
primary_key = true

[fields.i2]
type = "int32"
[fields.i8]
type = "int64"
[fields.f4]
type = "float64"
[fields.f8]
type = "float64"
[fields.amount]
type = "decimal(12,2)"
[fields.big]
type = "decimal(38,10)"
[fields.flag]
type = "boolean"
[fields.name]
type = "string"
[fields.note]
type = "string"
[fields.blob_hex]
type = "string"
[fields.doc]
type = "string"
[fields.docb]
type = "string"
[fields.uid]
type = "string"
[fields.day]
type = "date"
[fields.at]
type = "timestamp"
[fields.at_tz]
type = "timestamp"
[fields.tod]
type = "time"
"#;

fn types_project(conn: &str, table: &str) -> Workdir {
    // MariaDB has no boolean type (tinyint), so its flag is compared with 0.
    let flag = if conn == "my" {
        "src.flag <> 0"
    } else {
        "src.flag"
    };
    let mapping = format!(
        r#"
model = "typed@1"
from = "src"

[fields]
id = "src.id"
i2 = "CAST(src.i2 AS INT)"
i8 = "src.i8"
f4 = "src.f4"
f8 = "src.f8"
amount = "src.amount"
big = "src.big"
flag = "{flag}"
name = "src.name"
note = "src.note"
blob_hex = "encode(src.blob, 'hex')"
doc = "src.doc"
docb = "src.docb"
uid = "src.uid"
day = "src.day"
at = "to_utc_timestamp(src.at, 'UTC')"
at_tz = "src.at_tz"
tod = "src.tod"
"#
    );
    let job = format!(
        r#"
mapping = "src_to_typed"

[sources.src]
connection = "{conn}"
table = "{table}"

[target]
format = "parquet"
table = "typed"
mode = "overwrite"
"#
    );
    Workdir::with_files(&[
        ("sluice.toml", CONNECTIONS),
        ("mappings/canonical/typed.toml", TYPES_MODEL),
        ("mappings/src_to_typed.toml", &mapping),
        ("jobs/load.toml", &job),
    ])
}

fn types_project_for_odd(conn: &str, table: &str) -> Workdir {
    let mapping = r#"
model = "item@1"
from = "items"

[fields]
id = "items.id"
name = "'x'"
price = "items.amount"
"#;
    let job = format!(
        r#"
mapping = "items_to_item"

[sources.items]
connection = "{conn}"
table = "{table}"

[target]
format = "parquet"
table = "odd"
mode = "overwrite"
"#
    );
    Workdir::with_files(&[
        ("sluice.toml", CONNECTIONS),
        ("mappings/canonical/item.toml", ITEM_MODEL),
        ("mappings/items_to_item.toml", mapping),
        ("jobs/load.toml", &job),
    ])
}

/// Runs the types job and compares the loaded values with the ones the SQL inserted.
fn assert_types_loaded(w: &Workdir, conn: &str) {
    let (o, r) = run_json(w, &["run", "load"]);
    assert!(o.status.success(), "{conn}: {}", show(&o));
    assert_eq!(r["rows"]["written"], 2, "{conn}: {}", show(&o));
    let got = rows(&query(
        &w.path().join("warehouse/typed"),
        "SELECT id, i2, i8, f4, f8, CAST(amount AS VARCHAR), CAST(big AS VARCHAR), flag, name, note,
                blob_hex, doc, docb, uid, CAST(day AS VARCHAR), CAST(at AS VARCHAR),
                CAST(at_tz AS VARCHAR), CAST(tod AS VARCHAR)
         FROM t ORDER BY id",
    ));
    // PostgreSQL normalises jsonb; MySQL and SQLite keep JSON as written.
    let expected = [
        "1",
        "-32768",
        "9223372036854775807",
        "1.5",
        "2.25",
        "-1234567890.12",
        "1234567890123456789012345678.0123456789",
        "true",
        "Zoë",
        "two\nlines",
        "00ff",
        "{\"a\": 1}",
        "{\"b\": [1, 2]}",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "2013-06-30",
        "2013-06-30T23:59:59.123456Z",
        // 23:59:59.123456 at UTC-5 is 04:59:59.123456 UTC the next day.
        "2013-07-01T04:59:59.123456Z",
        "12:34:56.789",
    ]
    .join("|");
    let nulls = std::iter::once("2".to_string())
        .chain(std::iter::repeat_n("NULL".to_string(), 17))
        .collect::<Vec<_>>()
        .join("|");
    assert_eq!(got, [expected, nulls], "{conn}");
}

#[test]
fn delete_missing_is_refused_when_rows_were_quarantined() {
    let s = PgSchema::new("delq");
    let job = csv_job(
        "pg",
        &format!("{}.items", s.0),
        "merge",
        "delete_missing = true",
    );
    let w = item_project(&job);
    w.write("items.csv", V1);
    assert!(w.run(&["run", "load"]).status.success());
    // Plum's name is missing (a required field): its row is quarantined, so its key is
    // absent from the run; delete_missing must not delete the good plum already loaded.
    w.write(
        "items.csv",
        "id,name,price,updated_at\n1,apple,1.10,2024-01-01T00:00:00Z\n2,pear,2.20,2024-01-01T00:00:00Z\n3,,3.30,2024-01-01T00:00:00Z\n",
    );
    let (o, r) = run_json(&w, &["run", "load"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("1 rows were quarantined or dropped"), "{msg}");
    assert_eq!(
        pg_rows(&format!("SELECT id, name FROM {}.items ORDER BY id", s.0)),
        ["1|apple", "2|pear", "3|plum"]
    );
}

#[test]
fn merge_into_a_table_keyed_otherwise_is_refused() {
    let my = MyTables::new("nokey");
    let table = format!("{}_items", my.0);
    // Same columns, but no primary key: ON DUPLICATE KEY would never match.
    mariadb(&format!(
        "CREATE TABLE `{table}` (id bigint NOT NULL, name longtext NOT NULL, price decimal(10,2), updated_at datetime(6))"
    ));
    let w = item_project(&csv_job("my", &table, "merge", ""));
    w.write("items.csv", V1);
    let (o, r) = run_json(&w, &["run", "load"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("the table's primary key is (), but this load matches rows by (id)"),
        "{msg}"
    );
    assert_eq!(mariadb(&format!("SELECT count(*) FROM `{table}`")), "0");
}

#[test]
fn sqlite_time_cursors_compare_as_instants_and_runs_of_a_job_never_overlap() {
    let job = r#"
mapping = "items_to_item"

[sources.items]
connection = "lite"
query = """
SELECT id, name, price, updated_at FROM src -- every row
"""
incremental = { column = "updated_at" }

[target]
connection = "lite"
table = "dst"
mode = "append"
"#;
    let w = item_project(job);
    let db = rusqlite::Connection::open(w.path().join("data.db")).unwrap();
    // Times written by other tools: ISO 8601 with a `T`, with and without an offset.
    db.execute_batch(
        "CREATE TABLE src (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price DECIMAL(10,2), updated_at TIMESTAMPTZ);
         INSERT INTO src VALUES (1, 'a', 1.5, '2024-01-01T10:00:00Z'), (2, 'b', 2.5, '2024-01-01T11:00:00+00:00');",
    )
    .unwrap();
    let (o, r) = run_json(&w, &["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(r["rows"]["written"], 2);
    // Nothing new: the next run reads nothing (a text comparison would re-read `T` rows).
    let (o, r) = run_json(&w, &["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(r["rows"]["read"], 0, "{}", show(&o));
    db.execute_batch("INSERT INTO src VALUES (3, 'c', 3.5, '2024-01-01 12:00:00.5')")
        .unwrap();
    let (_, r) = run_json(&w, &["run", "load"]);
    assert_eq!(r["rows"]["read"], 1);
    let n: i64 = db
        .query_row("SELECT count(*) FROM dst", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);

    // While another run of the job holds its lock, a second run refuses to start.
    let lock = w.path().join(".sluice/locks/job-load.lock");
    let holder = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .unwrap();
    holder.try_lock().unwrap();
    let o = w.run(&["run", "load"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        show(&o).contains("another run of job `load` is in progress"),
        "{}",
        show(&o)
    );
    drop(holder);

    // Changing the cursor column needs a full refresh.
    let changed = job.replace(
        r#"incremental = { column = "updated_at" }"#,
        r#"incremental = { column = "id" }"#,
    );
    w.write("jobs/load.toml", &changed);
    let o = w.run(&["run", "load"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(show(&o).contains("--full-refresh"), "{}", show(&o));
}

/// A project whose job reads one row of `query` from connection `pg` (settings `extra`) into
/// Parquet, as the `item` model.
fn query_project(query: &str, extra: &str) -> Workdir {
    let toml = format!(
        "name = \"conn\"\n\n[connections.pg]\nkind = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:5432/test\"\n{extra}\n"
    );
    let job = format!(
        r#"
mapping = "items_to_item"

[sources.items]
connection = "pg"
query = "{query}"

[target]
format = "parquet"
table = "items"
mode = "overwrite"
"#
    );
    Workdir::with_files(&[
        ("sluice.toml", &toml),
        ("mappings/canonical/item.toml", ITEM_MODEL),
        ("mappings/items_to_item.toml", ITEM_MAPPING),
        ("jobs/load.toml", &job),
    ])
}

#[test]
fn tls_modes_and_statement_timeout_are_applied() {
    assert_eq!(
        psql("SHOW ssl"),
        "on",
        "this test needs PostgreSQL with TLS on"
    );
    // `require`: the session is encrypted (the server says so for its own backend).
    let q = "SELECT 1::bigint AS id, CASE WHEN ssl THEN 'tls' ELSE 'plain' END AS name, NULL::numeric(10,2) AS price, NULL::timestamptz AS updated_at FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    for (mode, expected) in [("require", "tls"), ("disable", "plain")] {
        let w = query_project(q, &format!("sslmode = \"{mode}\""));
        let (o, _) = run_json(&w, &["run", "load"]);
        assert!(o.status.success(), "{mode}: {}", show(&o));
        let got = rows(&query(
            &w.path().join("warehouse/items"),
            "SELECT name FROM t",
        ));
        assert_eq!(got, [expected], "{mode}");
    }
    // `verify-full` checks the certificate against the CA file and the host name: the server's
    // certificate names `localhost`, not 127.0.0.1.
    let w = query_project(
        q,
        "sslmode = \"verify-full\"\nca_file = \"/etc/ssl/certs/ssl-cert-snakeoil.pem\"",
    );
    let (o, r) = run_json(&w, &["run", "load"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let msg = r["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(msg.contains("certificate"), "{msg}");

    // statement_timeout cancels a statement that runs longer.
    let slow = "SELECT 1::bigint AS id, 'x' AS name, NULL::numeric(10,2) AS price, NULL::timestamptz AS updated_at FROM pg_sleep(3)";
    let w = query_project(slow, "statement_timeout = \"300ms\"");
    let t0 = Instant::now();
    let (o, r) = run_json(&w, &["run", "load"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("statement timeout"), "{msg}");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "the statement was not cut short"
    );
}

#[test]
fn integer_cursors_with_a_numeric_lookback() {
    let s = PgSchema::new("intcursor");
    psql(&format!(
        "CREATE TABLE {s}.src (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2), updated_at timestamptz, version integer NOT NULL);
         INSERT INTO {s}.src VALUES (1, 'a', 1, NULL, 10), (2, 'b', 2, NULL, 20);",
        s = s.0
    ));
    let job = format!(
        r#"
mapping = "items_to_item"

[sources.items]
connection = "pg"
table = "{s}.src"
incremental = {{ column = "version", lookback = 5 }}

[target]
connection = "pg"
table = "{s}.dst"
mode = "merge"
"#,
        s = s.0
    );
    let w = item_project(&job);
    let (o, r) = run_json(&w, &["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(r["watermarks"][0]["value"], "20");
    // Version 16 arrived late (within the lookback of 5), version 14 too late.
    psql(&format!(
        "INSERT INTO {s}.src VALUES (3, 'c', 3, NULL, 16), (4, 'd', 4, NULL, 14);",
        s = s.0
    ));
    let (o, r) = run_json(&w, &["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    // version > 15: b (20, unchanged) and c (16).
    assert_eq!(r["rows"]["read"], 2);
    assert_eq!(load_counts(&r), (1, 0, 0));
    assert_eq!(r["watermarks"][0]["value"], "20");
    assert_eq!(
        pg_rows(&format!("SELECT id FROM {}.dst ORDER BY id", s.0)),
        ["1", "2", "3"]
    );
    // A duration is not a lookback for an integer cursor.
    w.write(
        "jobs/load.toml",
        &job.replace("lookback = 5", "lookback = \"5m\""),
    );
    let o = w.run(&["run", "load"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(show(&o).contains("write a number"), "{}", show(&o));
}

#[test]
fn config_mistakes_with_databases_are_reported_with_their_line() {
    let s = PgSchema::new("cfg");
    psql(&format!(
        "CREATE TABLE {s}.src (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2), updated_at timestamptz NOT NULL)",
        s = s.0
    ));
    let job = |conn: &str, mode: &str| {
        format!(
            r#"mapping = "items_to_item"

[sources.items]
connection = "{conn}"
table = "{s}.src"
incremental = {{ column = "updated_at" }}

[target]
format = "parquet"
table = "items"
mode = "{mode}"
"#,
            s = s.0
        )
    };
    // A misspelled connection: exit 2, the line, and the name it probably meant.
    let w = item_project(&job("pgg", "append"));
    let o = w.run(&["validate"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let out = show(&o);
    assert!(
        out.contains("no connection named `pgg`")
            && out.contains("jobs/load.toml:4")
            && out.contains("did you mean `pg`?"),
        "{out}"
    );
    // An incremental source into an overwrite target would keep only the new rows.
    w.write("jobs/load.toml", &job("pg", "overwrite"));
    let o = w.run(&["validate"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        show(&o).contains("would replace the table with them"),
        "{}",
        show(&o)
    );
    // A password in the URL's query string is plain text too.
    w.write(
        "sluice.toml",
        &CONNECTIONS.replace("5432/test\"", "5432/test?password=hunter2\""),
    );
    let o = w.run(&["validate"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        show(&o).contains("password written in plain text"),
        "{}",
        show(&o)
    );
}

#[test]
fn a_backfill_reads_lookup_sources_whole() {
    let s = PgSchema::new("bflookup");
    psql(&format!(
        "CREATE TABLE {s}.src (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2), updated_at timestamptz NOT NULL, kind text);
         CREATE TABLE {s}.kinds (kind text PRIMARY KEY, label text);
         INSERT INTO {s}.kinds VALUES ('f', 'fruit');
         INSERT INTO {s}.src VALUES (1, 'apple', 1, '2024-01-01 10:00+00', 'f'), (2, 'pear', 2, '2024-01-02 10:00+00', 'f');",
        s = s.0
    ));
    let mapping = r#"
model = "item@1"
from = "items"

[[join]]
source = "kinds"
on = "kinds.kind = items.kind"

[fields]
id = "items.id"
name = "items.name || ' (' || kinds.label || ')'"
price = "items.price"
updated_at = "items.updated_at"
"#;
    let job = format!(
        r#"mapping = "items_to_item"

[sources.items]
connection = "pg"
table = "{s}.src"
incremental = {{ column = "updated_at" }}

[sources.kinds]
connection = "pg"
table = "{s}.kinds"

[target]
connection = "pg"
table = "{s}.dst"
mode = "merge"
"#,
        s = s.0
    );
    let w = item_project(&job);
    w.write("mappings/items_to_item.toml", mapping);
    let (o, r) = run_json(
        &w,
        &[
            "backfill",
            "load",
            "--from",
            "2024-01-02",
            "--to",
            "2024-01-03",
        ],
    );
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(r["rows"]["read"], 1);
    assert_eq!(
        pg_rows(&format!("SELECT id, name FROM {}.dst", s.0)),
        ["2|pear (fruit)"]
    );
}

#[test]
fn mariadb_keys_compare_exactly() {
    let my = MyTables::new("keys");
    let table = format!("{}_items", my.0);
    let model = ITEM_MODEL.replace(
        "[fields.id]\ntype = \"int64\"",
        "[fields.id]\ntype = \"string\"",
    );
    let mapping = ITEM_MAPPING.replace("id = \"items.id\"", "id = \"CAST(items.id AS VARCHAR)\"");
    let w = Workdir::with_files(&[
        ("sluice.toml", CONNECTIONS),
        ("mappings/canonical/item.toml", &model),
        ("mappings/items_to_item.toml", &mapping),
        ("jobs/load.toml", &csv_job("my", &table, "merge", "")),
    ]);
    // Three keys that MariaDB's default collation would call equal.
    w.write(
        "items.csv",
        "id,name,price,updated_at\nabc,a,1.00,2024-01-01T00:00:00Z\nABC,b,2.00,2024-01-01T00:00:00Z\nabc ,c,3.00,2024-01-01T00:00:00Z\n",
    );
    let (o, r) = run_json(&w, &["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(load_counts(&r), (3, 0, 0));
    assert_eq!(mariadb(&format!("SELECT count(*) FROM `{table}`")), "3");
}

/// Kills an incremental append from `src` to `dst` of connection `conn` right after its
/// COMMIT (`SLUICE_CRASH_AT=after_publish`): the next run must record the committed run from
/// `sluice_runs` and read only new rows. Returns the ids in `dst` with their counts.
fn killed_after_commit_then_rerun(
    w: &Workdir,
    exec: &dyn Fn(&str) -> String,
    src: &str,
    dst: &str,
) -> String {
    exec(&format!(
        "INSERT INTO {src} VALUES (1, 'a', 1.00, '2024-01-01 10:00:00'), (2, 'b', 2.00, '2024-01-01 10:00:00')"
    ));
    let o = w.run(&["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    exec(&format!(
        "INSERT INTO {src} VALUES (3, 'c', 3.00, '2024-01-02 10:00:00')"
    ));
    crate::common::run_killed_at(w, &["run", "load"], "after_publish");
    let o = w.run(&["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        show(&o).contains("recorded now from the target's commit record"),
        "{}",
        show(&o)
    );
    exec(&format!(
        "SELECT string_agg(concat(id, '|', n), ',' ORDER BY id) FROM (SELECT id, count(*) AS n FROM {dst} GROUP BY id) x"
    ))
}

fn append_job(conn: &str, src: &str, dst: &str) -> String {
    format!(
        r#"
mapping = "items_to_item"

[sources.items]
connection = "{conn}"
table = "{src}"
incremental = {{ column = "updated_at" }}

[target]
connection = "{conn}"
table = "{dst}"
mode = "append"
"#
    )
}

#[test]
fn a_database_append_killed_after_its_commit_is_recorded_and_never_repeated() {
    // PostgreSQL.
    let s = PgSchema::new("killed_commit");
    psql(&format!(
        "CREATE TABLE {s}.src (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2), updated_at timestamptz NOT NULL);",
        s = s.0
    ));
    let w = item_project(&append_job(
        "pg",
        &format!("{}.src", s.0),
        &format!("{}.dst", s.0),
    ));
    let pg = |sql: &str| psql(&sql.replace("10:00:00'", "10:00:00+00'"));
    let counts =
        killed_after_commit_then_rerun(&w, &pg, &format!("{}.src", s.0), &format!("{}.dst", s.0));
    assert_eq!(counts, "1|1,2|1,3|1");
    // The record is a row of sluice_runs beside the target.
    let n = psql(&format!(
        "SELECT count(*) FROM {}.sluice_runs WHERE job = 'load'",
        s.0
    ));
    assert_eq!(n, "1");

    // MariaDB (no string_agg: GROUP_CONCAT).
    let t = MyTables::new("killed_commit");
    mariadb(&format!(
        "CREATE TABLE {t}_src (id BIGINT PRIMARY KEY, name VARCHAR(50) NOT NULL, price DECIMAL(10,2), updated_at TIMESTAMP(6) NOT NULL);",
        t = t.0
    ));
    let w = item_project(&append_job(
        "my",
        &format!("{}_src", t.0),
        &format!("{}_dst", t.0),
    ));
    let my = |sql: &str| {
        mariadb(&sql.replace(
            "string_agg(concat(id, '|', n), ',' ORDER BY id)",
            "GROUP_CONCAT(concat(id, '|', n) ORDER BY id SEPARATOR ',')",
        ))
    };
    let counts =
        killed_after_commit_then_rerun(&w, &my, &format!("{}_src", t.0), &format!("{}_dst", t.0));
    assert_eq!(counts, "1|1,2|1,3|1");
}

#[test]
fn a_failed_first_load_into_mariadb_leaves_no_table_behind() {
    // MySQL commits DDL at once, so the table a first run created must be dropped again when
    // the run does not commit.
    let t = MyTables::new("failed_first");
    let table = format!("{}_dst", t.0);
    let w = item_project(&csv_job(
        "my",
        &table,
        "append",
        "\n[checks.row_count]\nfail_below = 100\n",
    ));
    w.write("items.csv", V1);
    let o = w.run(&["run", "load"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let n = mariadb(&format!(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'test' AND table_name = '{table}'"
    ));
    assert_eq!(n, "0", "the empty table stayed: {}", show(&o));
}

#[test]
fn a_mariadb_overwrite_killed_at_its_swap_leaves_one_table_or_the_other_never_a_mix() {
    // MySQL cannot roll back DDL, so an overwrite fills a new table and publishes it with one
    // RENAME; the crash points sit around that statement.
    let t = MyTables::new("killed_swap");
    let table = format!("{}_o", t.0);
    let w = item_project(&csv_job("my", &table, "overwrite", ""));
    w.write("items.csv", V1);
    let o = w.run(&["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    let v1 = ["1|apple|1.10", "2|pear|2.20", "3|plum|3.30"];
    let v2 = ["2|pear|2.25", "4|fig|4.40"];
    w.write("items.csv", V2);
    crate::common::run_killed_at(&w, &["run", "load"], "before_publish");
    assert_eq!(read_items("my", &w, &table, "id, name, price"), v1);
    crate::common::run_killed_at(&w, &["run", "load"], "after_publish");
    assert_eq!(read_items("my", &w, &table, "id, name, price"), v2);
    let (o, r) = run_json(&w, &["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        load_counts(&r),
        (2, 0, 2),
        "the rerun replaces the swapped-in rows"
    );
    assert_eq!(read_items("my", &w, &table, "id, name, price"), v2);
    let left = mariadb(&format!(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'test' AND table_name LIKE '{table}\\_\\_sluice%'"
    ));
    assert_eq!(left, "0", "work tables left behind");
}

/// A MariaDB database of one test, dropped when dropped.
struct MyDatabase(String);

impl Drop for MyDatabase {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-u", "root", "-e"])
            .arg(format!("DROP DATABASE IF EXISTS {}", self.0))
            .output();
    }
}

#[test]
fn a_mariadb_load_whose_commit_fails_leaves_the_table_as_it_was() {
    // MySQL commits an open transaction before any DDL: after a failed statement, the load
    // must roll back before it drops its work table, or the rows appended so far commit.
    let db = MyDatabase(format!("t_failed_commit_{}", std::process::id()));
    mariadb(&format!("CREATE DATABASE {}", db.0));
    let table = format!("{}.items", db.0);
    let w = item_project(&csv_job("my", &table, "append", ""));
    w.write("items.csv", V1);
    let o = w.run(&["run", "load"]);
    assert!(o.status.success(), "{}", show(&o));
    // The run's record is the last statement before COMMIT: make it fail.
    for event in ["INSERT", "UPDATE"] {
        mariadb(&format!(
            "CREATE TRIGGER {d}.refuse_{event} BEFORE {event} ON {d}.sluice_runs FOR EACH ROW \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test'",
            d = db.0
        ));
    }
    w.write(
        "items.csv",
        "id,name,price,updated_at\n7,kiwi,7.70,2024-01-03T00:00:00Z\n8,lime,8.80,2024-01-03T00:00:00Z\n",
    );
    let o = w.run(&["run", "load"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(show(&o).contains("refused by the test"), "{}", show(&o));
    assert_eq!(
        mariadb(&format!("SELECT count(*) FROM {table}")),
        "3",
        "the failed run's rows were committed"
    );
}
