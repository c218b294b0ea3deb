//! Object stores and Delta Lake: sources read from a real S3-compatible server (moto, started
//! by `tools/s3/server.sh`), Delta tables written locally and on it, and every table read back
//! with an independent reader (the `deltalake` Python package, delta-rs's Python binding).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::{report, show, Workdir};

const PORT: &str = "9900";
const KEY_ID: &str = "sluice-test-key-id";
/// A secret that must never appear in any output.
const SECRET: &str = "s3cr3t-Zq81-never-printed";

fn venv() -> PathBuf {
    match std::env::var("SLUICE_S3_VENV") {
        Ok(v) => PathBuf::from(v),
        Err(_) => PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/sluice/s3venv"),
    }
}

/// Starts the local S3 server once per test process.
fn server() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let o = Command::new("bash")
            .arg(crate::common::repo().join("tools/s3/server.sh"))
            .env("SLUICE_S3_PORT", PORT)
            .output()
            .unwrap();
        assert!(o.status.success(), "S3 server: {}", show(&o));
    });
}

/// curl's arguments for a signed request (moto refuses unsigned reads and overwrites).
const SIGNED: [&str; 4] = ["--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "k:s"];

/// A fresh bucket on the local S3 server.
struct Bucket {
    name: String,
}

impl Bucket {
    fn new(tag: &str) -> Bucket {
        server();
        let name = format!(
            "{tag}-{}",
            uuid::Uuid::now_v7().simple().to_string()[20..].to_lowercase()
        );
        let o = Command::new("curl")
            .args(["-sf", "-X", "PUT"])
            .args(SIGNED)
            .arg(format!("http://127.0.0.1:{PORT}/{name}"))
            .output()
            .unwrap();
        assert!(o.status.success(), "create bucket: {}", show(&o));
        Bucket { name }
    }

    /// Uploads a local file as `key`.
    fn put(&self, key: &str, file: &Path) {
        let o = Command::new("curl")
            // No `Expect: 100-continue` (moto's server never answers it) and no form type.
            .args(["-sf", "-X", "PUT", "-H", "Expect:"])
            .args(SIGNED)
            .args([
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
            ])
            .arg(format!("@{}", file.display()))
            .arg(format!("http://127.0.0.1:{PORT}/{}/{key}", self.name))
            .output()
            .unwrap();
        assert!(o.status.success(), "upload {key}: {}", show(&o));
    }

    /// The `[connections.lake]` a project names this bucket with (credentials by reference).
    fn connection(&self) -> String {
        format!(
            r#"
[connections.test_bucket]
kind = "s3"
bucket = "{}"
endpoint = "http://127.0.0.1:{PORT}"
region = "us-east-1"
path_style = true
access_key_id = "${{env:LAKE_KEY_ID}}"
secret_access_key = "${{env:LAKE_SECRET}}"
"#,
            self.name
        )
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.name)
    }
}

/// Runs `sluice ARGS` with the bucket's credentials in the environment (and none of the
/// provider's own variables, so only the connection's settings are used).
fn run_with_keys(w: &Workdir, args: &[&str]) -> std::process::Output {
    w.sluice(args)
        .env("LAKE_KEY_ID", KEY_ID)
        .env("LAKE_SECRET", SECRET)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap()
}

/// Runs Python `code` with the deltalake package; `TABLE` is the table's URI and
/// `OPTIONS` the storage options for the local S3 server. Returns stdout lines.
fn python(table: &str, code: &str) -> Vec<String> {
    server(); // which creates the virtual environment
    let prelude = format!(
        r#"
import json, sys
from deltalake import DeltaTable
TABLE = {table:?}
OPTIONS = {{"AWS_ENDPOINT_URL": "http://127.0.0.1:{PORT}", "AWS_REGION": "us-east-1",
  "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ALLOW_HTTP": "true",
  "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}}
def open_table():
    return DeltaTable(TABLE, storage_options=OPTIONS) if TABLE.startswith("s3://") else DeltaTable(TABLE)
"#
    );
    let o = Command::new(venv().join("bin/python"))
        .arg("-c")
        // os._exit: the deltalake package can abort in its threads' teardown at exit.
        .arg(format!(
            "{prelude}\n{code}\nimport os\nsys.stdout.flush()\nos._exit(0)"
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "python: {}", show(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The table's rows as `col=value` lines, sorted (read by delta-rs's Python package).
pub(crate) fn delta_rows(table: &str, columns: &str) -> Vec<String> {
    python(
        table,
        &format!(
            r#"
t = open_table().to_pyarrow_table(columns={columns:?}.split(","))
rows = sorted("|".join(str(v) for v in r.values()) for r in t.to_pylist())
print("\n".join(rows))
"#
        ),
    )
}

/// The table's version and the run id recorded in its newest commit.
fn delta_version_and_run(table: &str) -> (i64, String) {
    let out = python(
        table,
        r#"
t = open_table()
c = t.history(1)[0]
print(t.version())
print(json.loads(c["sluice.commit"])["run_id"] if isinstance(c.get("sluice.commit"), str) else c["sluice.commit"]["run_id"])
"#,
    );
    (out[0].parse().unwrap(), out[1].clone())
}

fn airports_csv(rows: &[&str]) -> String {
    let mut s = String::from("faa,name,lat,lon,alt,tz,dst,tzone\n");
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s
}

const JFK: &str = "JFK,John F Kennedy Intl,40.639751,-73.778925,13,-5,A,America/New_York";
const LGA: &str = "LGA,La Guardia,40.777245,-73.872608,22,-5,A,America/New_York";
const LGA_RENAMED: &str = "LGA,LaGuardia Airport,40.777245,-73.872608,22,-5,A,America/New_York";
const EWR: &str = "EWR,Newark Liberty Intl,40.6925,-74.168667,18,-5,A,America/New_York";
const LAX: &str = "LAX,Los Angeles Intl,33.942536,-118.408075,126,-8,A,America/Los_Angeles";

/// A project with an airports job loading `data/airports.csv` into a Delta table.
fn airports_project(target: &str) -> Workdir {
    let w = Workdir::project();
    w.write(
        "jobs/airports_delta.toml",
        &format!(
            r#"
mapping = "nycflights13_to_airport"

[sources.airports]
format = "csv"
path = "data/airports.csv"
null_values = ["", "NA"]

[target]
format = "delta"
{target}
"#
        ),
    );
    w
}

/// Runs `sluice ARGS --json`, which must succeed, and returns its report.
fn run_ok(w: &Workdir, args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    if !args.contains(&"--json") {
        args.push("--json");
    }
    let o = run_with_keys(w, &args);
    assert!(o.status.success(), "{}", show(&o));
    report(&o)
}

#[test]
fn delta_merge_upserts_by_primary_key_and_deletes_missing_keys_when_asked() {
    let w = airports_project("table = \"airports_d\"\nmode = \"merge\"");
    let table = w.path().join("warehouse/airports_d");
    let table = table.to_str().unwrap();
    w.write("data/airports.csv", &airports_csv(&[JFK, LGA, EWR]));
    run_ok(&w, &["run", "airports_delta", "--json"]);
    assert_eq!(
        delta_rows(table, "faa_code,name"),
        [
            "EWR|Newark Liberty Intl",
            "JFK|John F Kennedy Intl",
            "LGA|La Guardia"
        ]
    );

    // LGA renamed, EWR gone, LAX new: LGA updated, LAX inserted, EWR kept.
    w.write("data/airports.csv", &airports_csv(&[JFK, LGA_RENAMED, LAX]));
    let r = run_ok(&w, &["run", "airports_delta", "--json"]);
    assert_eq!(
        delta_rows(table, "faa_code,name"),
        [
            "EWR|Newark Liberty Intl",
            "JFK|John F Kennedy Intl",
            "LAX|Los Angeles Intl",
            "LGA|LaGuardia Airport"
        ]
    );
    let (version, run) = delta_version_and_run(table);
    assert_eq!(version, 1, "one commit per run");
    assert_eq!(run, r["run_id"].as_str().unwrap());

    // With delete_missing, keys this run did not read are deleted.
    let job = w.read("jobs/airports_delta.toml") + "delete_missing = true\n";
    w.write("jobs/airports_delta.toml", &job);
    w.write("data/airports.csv", &airports_csv(&[JFK, LAX]));
    run_ok(&w, &["run", "airports_delta", "--json"]);
    assert_eq!(
        delta_rows(table, "faa_code"),
        ["JFK", "LAX"],
        "EWR and LGA were not read, so they are deleted"
    );
}

/// `delete_missing` on a Delta merge deletes the keys a run did not read, so a run whose rows
/// were quarantined loads nothing (their keys would go), and an incremental source is refused
/// before anything is read (its keys outside the range would go).
#[test]
fn delta_delete_missing_never_deletes_a_key_the_run_did_not_read_in_full() {
    let w = airports_project("table = \"airports_dm\"\nmode = \"merge\"\ndelete_missing = true");
    let table = w.path().join("warehouse/airports_dm");
    let table = table.to_str().unwrap();
    w.write("data/airports.csv", &airports_csv(&[JFK, LGA, EWR]));
    run_ok(&w, &["run", "airports_delta"]);

    // LGA has no time zone now: quarantined, so its key is absent from the run.
    let lga_no_zone = "LGA,La Guardia,40.777245,-73.872608,22,-5,A,NA";
    w.write("data/airports.csv", &airports_csv(&[JFK, lga_no_zone, EWR]));
    let o = run_with_keys(&w, &["run", "airports_delta", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let msg = report(&o)["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.contains("1 rows were quarantined or dropped"), "{msg}");
    assert_eq!(delta_rows(table, "faa_code"), ["EWR", "JFK", "LGA"]);
    assert_eq!(delta_version_and_run(table).0, 0, "no new version");

    let job = w.read("jobs/airports_delta.toml").replace(
        "null_values = [\"\", \"NA\"]",
        "null_values = [\"\", \"NA\"]\nincremental = { files = \"new\" }",
    );
    w.write("jobs/airports_delta.toml", &job);
    let o = run_with_keys(&w, &["run", "airports_delta"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        show(&o).contains("`delete_missing` with an incremental source would remove every row"),
        "{}",
        show(&o)
    );
    assert_eq!(delta_rows(table, "faa_code"), ["EWR", "JFK", "LGA"]);
}

#[test]
fn delta_append_overwrite_and_replace_where_each_make_one_commit() {
    let w = airports_project(
        "table = \"airports_d\"\nmode = \"append\"\npartition_by = [\"time_zone\"]",
    );
    let table = w.path().join("warehouse/airports_d");
    let table = table.to_str().unwrap();
    w.write("data/airports.csv", &airports_csv(&[JFK, LAX]));
    run_ok(&w, &["run", "airports_delta"]);
    run_ok(&w, &["run", "airports_delta"]);
    assert_eq!(
        delta_rows(table, "faa_code"),
        ["JFK", "JFK", "LAX", "LAX"],
        "append adds each run's rows"
    );
    assert_eq!(delta_version_and_run(table).0, 1);

    // replace_where: only New York's rows are replaced; Los Angeles's stay.
    let job = w.read("jobs/airports_delta.toml").replace(
        "mode = \"append\"",
        "mode = \"overwrite\"\nreplace_where = \"time_zone = 'America/New_York'\"",
    );
    w.write("jobs/airports_delta.toml", &job);
    w.write("data/airports.csv", &airports_csv(&[LGA, EWR]));
    run_ok(&w, &["run", "airports_delta"]);
    assert_eq!(
        delta_rows(table, "faa_code"),
        ["EWR", "LAX", "LAX", "LGA"],
        "the New York partition is replaced, the others are untouched"
    );

    // A plain overwrite replaces everything.
    let job = w
        .read("jobs/airports_delta.toml")
        .replace("replace_where = \"time_zone = 'America/New_York'\"\n", "");
    w.write("jobs/airports_delta.toml", &job);
    w.write("data/airports.csv", &airports_csv(&[JFK]));
    run_ok(&w, &["run", "airports_delta"]);
    assert_eq!(delta_rows(table, "faa_code"), ["JFK"]);
    assert_eq!(delta_version_and_run(table).0, 3, "four runs, four commits");
}

#[test]
fn delta_run_killed_before_its_commit_leaves_the_previous_version() {
    let w = airports_project("table = \"airports_d\"\nmode = \"overwrite\"");
    let table = w.path().join("warehouse/airports_d");
    let table = table.to_str().unwrap();
    w.write("data/airports.csv", &airports_csv(&[JFK, LGA]));
    let first = run_ok(&w, &["run", "airports_delta", "--json"]);

    w.write("data/airports.csv", &airports_csv(&[LAX]));
    crate::common::run_killed_at(&w, &["run", "airports_delta"], "before_publish");
    assert_eq!(delta_rows(table, "faa_code"), ["JFK", "LGA"]);
    assert_eq!(
        delta_version_and_run(table),
        (0, first["run_id"].as_str().unwrap().to_string()),
        "no commit from the killed run"
    );

    // The next run cleans the killed run's staging and commits normally.
    run_ok(&w, &["run", "airports_delta"]);
    assert_eq!(delta_rows(table, "faa_code"), ["LAX"]);
    let staging = w.path().join(".sluice/staging");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging left behind: {left:?}");
}

/// Two projects run `mode` into one Delta table, both paused just before their commit so
/// that they commit together. Returns each run's output and the table's rows after.
fn race(mode: &str, a_rows: &[&str], b_rows: &[&str]) -> [(std::process::Output, Vec<String>); 1] {
    let shared = tempfile::tempdir().unwrap();
    let table = shared.path().join("airports");
    let target = format!("path = {:?}\nmode = \"{mode}\"", table.to_str().unwrap());
    let a = airports_project(&target);
    let b = airports_project(&target);
    // Both start from the same version 0.
    a.write("data/airports.csv", &airports_csv(&[JFK]));
    run_ok(&a, &["run", "airports_delta"]);
    a.write("data/airports.csv", &airports_csv(a_rows));
    b.write("data/airports.csv", &airports_csv(b_rows));
    let spawn = |w: &Workdir| {
        w.sluice(&["run", "airports_delta"])
            .env("SLUICE_PAUSE_AT", "before_commit:1500")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(&a), spawn(&b));
    let (oa, ob) = (
        ca.wait_with_output().unwrap(),
        cb.wait_with_output().unwrap(),
    );
    let rows = delta_rows(table.to_str().unwrap(), "faa_code");
    let failed: Vec<&std::process::Output> = [&oa, &ob]
        .into_iter()
        .filter(|o| !o.status.success())
        .collect();
    for o in &failed {
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("another writer changed the table"),
            "a losing run says why: {}",
            show(o)
        );
    }
    assert!(
        failed.len() < 2,
        "both failed:\n{}\n{}",
        show(&oa),
        show(&ob)
    );
    [(if oa.status.success() { ob } else { oa }, rows)]
}

#[test]
fn two_projects_appending_to_one_delta_table_at_once_both_land_exactly_once() {
    let [(other, rows)] = race("append", &[LGA], &[EWR, LAX]);
    if other.status.success() {
        assert_eq!(
            rows,
            ["EWR", "JFK", "LAX", "LGA"],
            "both appends landed once"
        );
    } else {
        assert!(
            rows == ["JFK", "LGA"] || rows == ["EWR", "JFK", "LAX"],
            "{rows:?}"
        );
    }
}

#[test]
fn two_overwrites_of_one_delta_table_at_once_leave_one_whole_version() {
    let [(_, rows)] = race("overwrite", &[LGA], &[EWR, LAX]);
    assert!(
        rows == ["LGA"] || rows == ["EWR", "LAX"],
        "one run's rows, never a mix: {rows:?}"
    );
}

/// A bucket with the flights samples under `raw/`, and a copy of the project whose job
/// `flights_s3` reads them from there (flights by a glob) into the Delta table
/// `tables/flights` of the bucket.
fn flights_on_s3(tag: &str) -> (Bucket, Workdir) {
    let bucket = Bucket::new(tag);
    let samples = crate::common::repo().join("samples/nycflights13");
    for f in ["flights.csv.gz", "airports.csv.gz", "airlines.csv.gz"] {
        bucket.put(&format!("raw/{f}"), &samples.join(f));
    }
    let w = Workdir::project();
    let settings = w.read("sluice.toml") + &bucket.connection();
    w.write("sluice.toml", &settings);
    let job = w
        .read("jobs/flights.toml")
        .replace(
            "samples/nycflights13/flights.csv.gz",
            &bucket.url("raw/flights*.csv.gz"),
        )
        .replace("samples/nycflights13/", &bucket.url("raw/"))
        .replace(
            "format = \"parquet\"\ntable = \"flights\"",
            &format!(
                "format = \"delta\"\npath = \"{}\"",
                bucket.url("tables/flights")
            ),
        );
    w.write("jobs/flights_s3.toml", &job);
    (bucket, w)
}

#[test]
fn flights_read_from_s3_load_a_delta_table_there_with_the_credentials_never_shown() {
    let (bucket, w) = flights_on_s3("flights");
    let o = run_with_keys(&w, &["run", "flights_s3", "--json"]);
    assert!(o.status.success(), "{}", show(&o));
    let r = report(&o);
    // The same job on the local files, for the expected values.
    let local = run_ok(&w, &["run", "flights", "--json"]);
    assert_eq!(r["rows"]["written"], local["rows"]["written"], "{r}");
    let written = local["rows"]["written"].as_u64().unwrap();
    assert!(written > 300_000, "{local}");

    let table = bucket.url("tables/flights");
    let out = python(
        &table,
        r#"
import pyarrow.compute as pc
t = open_table().to_pyarrow_table()
print(t.num_rows)
print(sorted(set(t.column("origin").to_pylist())))
"#,
    );
    assert_eq!(out[0], written.to_string());
    assert_eq!(out[1], "['EWR', 'JFK', 'LGA']");
    let local_sum = crate::common::rows(&crate::common::query(
        &w.path().join("warehouse/flights"),
        "SELECT sum(distance_km) FROM t",
    ));
    let delta_sum = python(
        &table,
        "import pyarrow.compute as pc\nprint(pc.sum(open_table().to_pyarrow_table().column('distance_km')).as_py())",
    );
    let (l, d): (f64, f64) = (local_sum[0].parse().unwrap(), delta_sum[0].parse().unwrap());
    assert!((l - d).abs() < 1e-6 * l.abs(), "local {l} vs delta {d}");

    // The secret is nowhere: not in the output, the report files, or the state store.
    let mut seen = String::from_utf8_lossy(&o.stdout).to_string();
    seen += &String::from_utf8_lossy(&o.stderr);
    for e in crate::common::walk(&w.path().join(".sluice")) {
        seen += &String::from_utf8_lossy(&std::fs::read(e).unwrap_or_default());
    }
    assert!(!seen.contains(SECRET), "the secret access key was shown");
}

#[test]
fn an_unreachable_store_fails_naming_the_table_and_never_the_secret() {
    let bucket = Bucket::new("denied");
    let w = airports_project(&format!(
        "path = \"{}\"\nmode = \"overwrite\"",
        bucket.url("t")
    ));
    w.write("data/airports.csv", &airports_csv(&[JFK]));
    // moto accepts any key, so the error path is reached with an endpoint nothing listens on.
    let settings = w.read("sluice.toml")
        + &bucket
            .connection()
            .replace(&format!("127.0.0.1:{PORT}"), "127.0.0.1:9");
    w.write("sluice.toml", &settings);
    let o = run_with_keys(&w, &["run", "airports_delta"]);
    assert!(!o.status.success(), "{}", show(&o));
    let all = show(&o);
    assert!(!all.contains(SECRET), "{all}");
    assert!(
        all.contains(&bucket.url("t")),
        "the error names the table: {all}"
    );
}

#[test]
fn overwriting_a_parquet_folder_on_an_object_store_is_refused_with_a_hint_to_use_delta() {
    let bucket = Bucket::new("refused");
    let w = Workdir::project();
    let job = w.read("jobs/airports.toml").replace(
        "table = \"airports\"",
        &format!("path = \"{}\"", bucket.url("airports")),
    );
    w.write("jobs/airports.toml", &job);
    let o = run_with_keys(&w, &["run", "airports"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("format = \"delta\""), "{err}");
    assert!(err.contains("jobs/airports.toml"), "{err}");
}

#[test]
fn a_model_with_a_time_field_cannot_load_a_delta_table_and_is_told_before_reading() {
    let w = Workdir::with_files(&[
        ("sluice.toml", "name = \"slots\"\n"),
        (
            "mappings/canonical/slot.toml",
            "name = \"slot\"\nversion = \"1.0.0\"\n[fields.id]\ntype = \"int64\"\nprimary_key = true\n[fields.at]\ntype = \"time\"\n",
        ),
        (
            "mappings/to_slot.toml",
            "model = \"slot@1\"\nfrom = \"s\"\n[fields]\nid = \"id\"\nat = \"CAST(t AS TIME)\"\n",
        ),
        ("data/s.csv", "id,t\n1,10:00:00\n"),
        (
            "jobs/slots.toml",
            "mapping = \"to_slot\"\n[sources.s]\nformat = \"csv\"\npath = \"data/s.csv\"\n[target]\nformat = \"delta\"\ntable = \"slots\"\nmode = \"overwrite\"\n",
        ),
    ]);
    let o = w.run(&["run", "slots"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`at`, a `time` field"), "{err}");
    assert!(err.contains("jobs/slots.toml"), "{err}");
    assert!(
        !w.path().join("warehouse/slots").exists(),
        "nothing written"
    );
}

#[test]
fn parquet_and_ndjson_sources_on_s3_are_read_by_glob_and_by_folder() {
    let bucket = Bucket::new("formats");
    // The airports sample as two Parquet files and two NDJSON files, written by pyarrow.
    let scratch = tempfile::tempdir().unwrap();
    let csv = crate::common::repo().join("samples/nycflights13/airports.csv.gz");
    python(
        "",
        &format!(
            r#"
import pyarrow.csv as pc, pyarrow.parquet as pq
t = pc.read_csv({csv:?}, convert_options=pc.ConvertOptions(null_values=["", "NA"], strings_can_be_null=True))
half = t.num_rows // 2
for i, part in enumerate([t.slice(0, half), t.slice(half)]):
    pq.write_table(part, {dir:?} + f"/part-{{i}}.parquet")
    with open({dir:?} + f"/part-{{i}}.json", "w") as f:
        for r in part.to_pylist():
            f.write(json.dumps(r) + "\n")
"#,
            dir = scratch.path().to_str().unwrap()
        ),
    );
    for i in 0..2 {
        bucket.put(
            &format!("raw/pq/part-{i}.parquet"),
            &scratch.path().join(format!("part-{i}.parquet")),
        );
        bucket.put(
            &format!("raw/json/part-{i}.json"),
            &scratch.path().join(format!("part-{i}.json")),
        );
    }
    // A hidden object under the folder is not read.
    bucket.put("raw/json/_SUCCESS", &scratch.path().join("part-0.json"));

    let w = Workdir::project();
    let settings = w.read("sluice.toml") + &bucket.connection();
    w.write("sluice.toml", &settings);
    let local = run_ok(&w, &["run", "airports"]);
    for (format, path) in [
        ("parquet", bucket.url("raw/pq/*.parquet")),
        ("json", bucket.url("raw/json/")),
    ] {
        let job = w
            .read("jobs/airports.toml")
            .replace("format = \"csv\"", &format!("format = \"{format}\""))
            .replace("null_values = [\"\", \"NA\"]\n", "")
            .replace("samples/nycflights13/airports.csv.gz", &path)
            .replace(
                "table = \"airports\"",
                &format!("table = \"airports_{format}\""),
            );
        w.write(&format!("jobs/airports_{format}.toml"), &job);
        let r = run_ok(&w, &["run", &format!("airports_{format}")]);
        // Both parts read (each holds half the rows), and _SUCCESS left out.
        assert_eq!(r["rows"]["read"], local["rows"]["read"], "{format}: {r}");
        assert_eq!(
            r["rows"]["written"], local["rows"]["written"],
            "{format}: {r}"
        );
    }
}

#[test]
fn kill_9_while_loading_a_delta_table_on_s3_never_leaves_a_partial_version() {
    let (bucket, w) = flights_on_s3("kill");
    let first = run_ok(&w, &["run", "flights_s3"]);
    let rows = first["rows"]["written"].as_u64().unwrap();
    let table = bucket.url("tables/flights");
    let state = || {
        let out = python(
            &table,
            "t = open_table()\nprint(t.version())\nprint(t.to_pyarrow_table().num_rows)",
        );
        (
            out[0].parse::<i64>().unwrap(),
            out[1].parse::<u64>().unwrap(),
        )
    };
    assert_eq!(state(), (0, rows));
    // Kill at moments spread over the run (reading, staging, uploading, committing): the
    // table is at its last version, whole, every time.
    let mut version = 0;
    for delay_ms in [150, 400, 650, 900, 1150, 1400] {
        let mut child = w
            .sluice(&["run", "flights_s3"])
            .env("LAKE_KEY_ID", KEY_ID)
            .env("LAKE_SECRET", SECRET)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let (v, n) = state();
        assert!(
            v == version || v == version + 1,
            "killed at {delay_ms} ms: version {v} after {version}"
        );
        assert_eq!(
            n, rows,
            "killed at {delay_ms} ms: version {v} holds {n} rows"
        );
        version = v;
    }
    // The next run commits normally.
    run_ok(&w, &["run", "flights_s3"]);
    assert_eq!(state(), (version + 1, rows));
}

#[test]
fn hive_partition_folders_become_columns_locally_and_on_s3() {
    let bucket = Bucket::new("hive");
    let scratch = tempfile::tempdir().unwrap();
    let parts = [
        ("region=east/day=2024-01-01/a.csv", "id,v\n1,1.5\n2,2.5\n"),
        ("region=west/day=2024-01-01/b.csv", "id,v\n3,3.5\n"),
        (
            "region=__HIVE_DEFAULT_PARTITION__/day=2024-01-02/c.csv",
            "id,v\n4,4.5\n",
        ),
    ];
    for (key, text) in parts {
        let file = scratch.path().join(key.replace('/', "_"));
        std::fs::write(&file, text).unwrap();
        bucket.put(&format!("readings/{key}"), &file);
    }
    let mut files: Vec<(&str, String)> = vec![
        ("sluice.toml", format!("name = \"hive\"\n{}", bucket.connection())),
        (
            "mappings/canonical/reading.toml",
            "name = \"reading\"\nversion = \"1.0.0\"\n[fields.id]\ntype = \"int64\"\nprimary_key = true\n[fields.region]\ntype = \"string\"\n[fields.day]\ntype = \"date\"\n[fields.value]\ntype = \"float64\"\n".into(),
        ),
        (
            "mappings/to_reading.toml",
            "model = \"reading@1\"\nfrom = \"s\"\n[fields]\nid = \"id\"\nregion = \"region\"\nday = \"CAST(day AS DATE)\"\nvalue = \"v\"\n".into(),
        ),
    ];
    for (key, text) in parts {
        files.push((
            Box::leak(format!("data/{key}").into_boxed_str()),
            text.to_string(),
        ));
    }
    for (job, path) in [
        ("local", "data/**/*.csv".to_string()),
        ("s3", bucket.url("readings/**/*.csv")),
    ] {
        files.push((
            Box::leak(format!("jobs/{job}.toml").into_boxed_str()),
            format!("mapping = \"to_reading\"\n[sources.s]\nformat = \"csv\"\npath = \"{path}\"\n[target]\nformat = \"parquet\"\ntable = \"{job}\"\nmode = \"overwrite\"\n"),
        ));
    }
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let w = Workdir::with_files(&refs);
    for job in ["local", "s3"] {
        run_ok(&w, &["run", job]);
        let got = crate::common::rows(&crate::common::query(
            &w.path().join("warehouse").join(job),
            "SELECT id, region, day, value FROM t ORDER BY id",
        ));
        assert_eq!(
            got,
            [
                "1|east|2024-01-01|1.5",
                "2|east|2024-01-01|2.5",
                "3|west|2024-01-01|3.5",
                "4|NULL|2024-01-02|4.5"
            ],
            "{job}"
        );
    }
}

#[test]
fn a_backfill_into_a_delta_table_replaces_only_each_dates_rows() {
    let day = |d: &str, rows: &str| (format!("data/day={d}/part.csv"), format!("id,v\n{rows}"));
    let (d1, d1_text) = day("2024-01-01", "1,1.5\n2,2.5\n");
    let (d2, d2_text) = day("2024-01-02", "3,3.5\n");
    let w = Workdir::with_files(&[
        ("sluice.toml", "name = \"days\"\n"),
        (
            "mappings/canonical/reading.toml",
            "name = \"reading\"\nversion = \"1.0.0\"\n[fields.id]\ntype = \"int64\"\nprimary_key = true\n[fields.day]\ntype = \"date\"\n[fields.value]\ntype = \"float64\"\n",
        ),
        (
            "mappings/to_reading.toml",
            "model = \"reading@1\"\nfrom = \"s\"\n[fields]\nid = \"id\"\nday = \"CAST(day AS DATE)\"\nvalue = \"v\"\n",
        ),
        (&d1, &d1_text),
        (&d2, &d2_text),
        (
            "jobs/days.toml",
            "mapping = \"to_reading\"\n[sources.s]\nformat = \"csv\"\npath = \"data/day=${run.date}/*.csv\"\n[target]\nformat = \"delta\"\ntable = \"days\"\nmode = \"overwrite\"\npartition_by = [\"day\"]\nreplace_where = \"day = '${run.date}'\"\n",
        ),
    ]);
    let table = w.path().join("warehouse/days");
    let table = table.to_str().unwrap();
    // FROM <= date < TO: two dates.
    let o = w.run(&[
        "backfill",
        "days",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-03",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        delta_rows(table, "id,day"),
        ["1|2024-01-01", "2|2024-01-01", "3|2024-01-02"]
    );
    // Day 1 corrected and backfilled again: its rows replaced, day 2's untouched.
    w.write(&d1, "id,v\n1,9.5\n");
    let o = w.run(&[
        "backfill",
        "days",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-02",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        delta_rows(table, "id,day,value"),
        ["1|2024-01-01|9.5", "3|2024-01-02|3.5"]
    );
}

#[test]
fn object_store_connections_refuse_plain_text_credentials_and_keys_of_another_kind() {
    let w = Workdir::project();
    let settings = w.read("sluice.toml")
        + "\n[connections.other]\nkind = \"s3\"\nbucket = \"other\"\nsecret_access_key = \"hunter2\"\naccount = \"acct\"\n\n[connections.gcs]\nkind = \"gcs\"\nbucket = \"s3://b\"\nendpoint = \"127.0.0.1:9\"\n";
    w.write("sluice.toml", &settings);
    let o = w.run(&["validate"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for expected in [
        "connections.other.secret_access_key",
        "credential written in plain text",
        "`account` does not apply to a `s3` connection",
        "`endpoint` does not apply to a `gcs` connection",
        "`s3://b` is not a bucket name",
        "sluice.toml:",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    // The line shown under the error masks the value: a secret written by mistake is not
    // printed again into a terminal or a CI log.
    assert!(
        !show(&o).contains("hunter2"),
        "the plain-text secret was shown:\n{err}"
    );
    assert!(err.contains("secret_access_key = \"***\""), "{err}");
}

#[test]
fn an_incremental_file_source_on_s3_reads_only_the_objects_no_committed_run_read() {
    let bucket = Bucket::new("landing");
    let w = airports_project(&format!(
        "path = \"{}\"\nmode = \"append\"",
        bucket.url("tables/airports")
    ));
    let settings = w.read("sluice.toml") + &bucket.connection();
    w.write("sluice.toml", &settings);
    let job = w.read("jobs/airports_delta.toml").replace(
        "path = \"data/airports.csv\"",
        &format!(
            "path = \"{}\"\nincremental = {{ files = \"new\" }}",
            bucket.url("landing/*.csv")
        ),
    );
    w.write("jobs/airports_delta.toml", &job);
    let land = |key: &str, rows: &[&str]| {
        w.write("upload.csv", &airports_csv(rows));
        bucket.put(key, &w.path().join("upload.csv"));
    };
    land("landing/1.csv", &[JFK, LGA]);
    let r = run_ok(&w, &["run", "airports_delta"]);
    assert_eq!(
        r["new_files"][0]["read"],
        serde_json::json!([bucket.url("landing/1.csv")])
    );

    land("landing/2.csv", &[EWR]);
    land("landing/3.csv", &[LAX]);
    let r = run_ok(&w, &["run", "airports_delta"]);
    assert_eq!(
        r["new_files"][0]["read"],
        serde_json::json!([bucket.url("landing/2.csv"), bucket.url("landing/3.csv")])
    );
    assert_eq!(r["new_files"][0]["skipped"], 1);
    let r = run_ok(&w, &["run", "airports_delta"]);
    assert_eq!(r["rows"]["read"], 0, "{r}");
    assert_eq!(
        delta_rows(&bucket.url("tables/airports"), "faa_code"),
        ["EWR", "JFK", "LAX", "LGA"],
        "every object's rows once"
    );
}

const EYW_NO_ZONE: &str = "EYW,Key West Intl,24.556111,-81.759556,3,-5,A,";
const LOWER_CASE: &str = "jfk,lower case,40.6,-73.7,13,-5,A,America/New_York";

/// The Delta quarantine at `url`: its version, the runs its commits name (oldest first), and
/// its rows as `run_id|source_line|rules`, sorted (read by delta-rs's Python package).
fn delta_quarantine(url: &str) -> (i64, Vec<String>, Vec<String>) {
    let out = python(
        url,
        r#"
t = open_table()
print(t.version())
runs = []
for c in reversed(t.history()):
    q = c.get("sluice.quarantine")
    q = json.loads(q) if isinstance(q, str) else q
    if q and "run_id" in q:
        runs.append(q["run_id"])
print(",".join(runs))
rows = t.to_pyarrow_table().to_pylist()
print("\n".join(sorted("%s|%s|%s" % (r["run_id"], r["source_line"], "+".join(sorted(f["rule"] for f in r["failed_rules"]))) for r in rows)))
"#,
    );
    let runs = out[1]
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    (out[0].parse().unwrap(), runs, out[2..].to_vec())
}

#[test]
fn a_delta_quarantine_on_s3_takes_one_commit_per_run_and_serves_quarantine_replay_and_prune() {
    let bucket = Bucket::new("quarantine");
    let w = airports_project("table = \"airports_d\"\nmode = \"append\"");
    let settings = w.read("sluice.toml") + &bucket.connection();
    w.write("sluice.toml", &settings);
    let quarantine = bucket.url("quarantine/airports");
    let job = w.read("jobs/airports_delta.toml")
        + &format!("\n[quarantine]\nformat = \"delta\"\npath = \"{quarantine}\"\n");
    w.write("jobs/airports_delta.toml", &job);
    w.write(
        "data/airports.csv",
        &airports_csv(&[JFK, EYW_NO_ZONE, LOWER_CASE]),
    );
    let first = run_ok(&w, &["run", "airports_delta"]);
    let first_id = first["run_id"].as_str().unwrap().to_string();
    assert_eq!(first["rows"]["quarantined"], 2, "{first}");
    let (version, runs, rows) = delta_quarantine(&quarantine);
    assert_eq!((version, runs), (0, vec![first_id.clone()]));
    assert_eq!(
        rows,
        [
            format!("{first_id}|3|time_zone_known"),
            format!("{first_id}|4|airport.faa_code.pattern"),
        ]
    );
    let o = run_with_keys(&w, &["quarantine", "airports_delta"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", show(&o));
    for expected in [
        quarantine.as_str(),
        first_id.as_str(),
        "time_zone_known",
        "airport.faa_code.pattern",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }

    // Killed before its quarantine commit: the table is as it was. Killed after it (before
    // the target's commit): the run's rows are there in one commit, the target unchanged.
    let killed = |point: &str| {
        let mut cmd = w.sluice(&["run", "airports_delta"]);
        cmd.env("LAKE_KEY_ID", KEY_ID).env("LAKE_SECRET", SECRET);
        crate::common::run_killed_at_with(cmd, point);
    };
    killed("quarantine_before_commit");
    assert_eq!(delta_quarantine(&quarantine).0, 0);
    killed("quarantine_after_commit");
    let (version, runs, rows) = delta_quarantine(&quarantine);
    assert_eq!((version, runs.len(), rows.len()), (1, 2, 4));
    let target = w.path().join("warehouse/airports_d");
    assert_eq!(
        delta_version_and_run(target.to_str().unwrap()),
        (0, first_id.clone()),
        "the killed run committed nothing to the target"
    );
    let o = run_with_keys(&w, &["replay", "airports_delta", "--run", &runs[1]]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is not in the state store"),
        "a run that did not commit is not replayed: {}",
        show(&o)
    );

    // After a fix to the mapping, the first run's rows are replayed from the Delta table: the
    // row with no zone now loads; the lower-case code still fails, into the replay's commit.
    let mapping = w.read("mappings/nycflights13_to_airport.toml").replace(
        "time_zone = \"tzone\"",
        "time_zone = \"coalesce(tzone, 'America/New_York')\"",
    );
    w.write("mappings/nycflights13_to_airport.toml", &mapping);
    let replay = run_ok(&w, &["replay", "airports_delta", "--run", &first_id]);
    assert_eq!(
        (&replay["rows"]["written"], &replay["rows"]["quarantined"]),
        (&serde_json::json!(1), &serde_json::json!(1)),
        "{replay}"
    );
    let replay_id = replay["run_id"].as_str().unwrap().to_string();
    let staging = w.path().join(".sluice/staging/_quarantine-airports_delta");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "the killed runs' staging is left: {left:?}"
    );
    assert_eq!(
        delta_rows(target.to_str().unwrap(), "faa_code"),
        ["EYW", "JFK"]
    );
    let (version, _, rows) = delta_quarantine(&quarantine);
    assert_eq!(version, 2);
    assert!(
        rows.contains(&format!("{replay_id}|4|airport.faa_code.pattern")),
        "{rows:?}"
    );

    // Retention deletes old runs' rows in one commit: the killed run's. The latest run (the
    // replay) and the latest committed load (the first run, which the target's commit names)
    // keep theirs.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let settings = w.read("sluice.toml") + "\n[retention]\nquarantine = \"1s\"\n";
    w.write("sluice.toml", &settings);
    let o = run_with_keys(&w, &["prune"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("1 run(s) of quarantined rows"),
        "{}",
        show(&o)
    );
    let (version, _, rows) = delta_quarantine(&quarantine);
    assert_eq!(version, 3);
    let mut expected = vec![
        format!("{first_id}|3|time_zone_known"),
        format!("{first_id}|4|airport.faa_code.pattern"),
        format!("{replay_id}|4|airport.faa_code.pattern"),
    ];
    expected.sort();
    assert_eq!(rows, expected);
    assert!(!show(&o).contains(SECRET));
}

#[test]
fn a_quarantine_is_never_switched_between_folder_and_delta_in_place() {
    let w = airports_project("table = \"airports_d\"\nmode = \"append\"");
    w.write("data/airports.csv", &airports_csv(&[JFK, EYW_NO_ZONE]));
    run_ok(&w, &["run", "airports_delta"]);
    let folder = w.path().join("warehouse/_quarantine/airports_delta");
    assert_eq!(
        std::fs::read_dir(&folder).unwrap().count(),
        1,
        "one run's file"
    );

    // Delta over a folder quarantine's files: refused at the job's [quarantine], nothing read.
    let job = w.read("jobs/airports_delta.toml");
    w.write(
        "jobs/airports_delta.toml",
        &format!("{job}\n[quarantine]\nformat = \"delta\"\n"),
    );
    let o = w.run(&["run", "airports_delta"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for expected in [
        "airports_delta.toml:",
        "holds a folder quarantine's files",
        "a path of its own",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }

    // A path of its own: a local Delta quarantine.
    w.write(
        "jobs/airports_delta.toml",
        &format!("{job}\n[quarantine]\nformat = \"delta\"\npath = \"warehouse/_quarantine/airports_dq\"\n"),
    );
    let r = run_ok(&w, &["run", "airports_delta"]);
    let table = w.path().join("warehouse/_quarantine/airports_dq");
    let run_id = r["run_id"].as_str().unwrap();
    assert_eq!(
        delta_quarantine(table.to_str().unwrap()),
        (
            0,
            vec![run_id.to_string()],
            vec![format!("{run_id}|3|time_zone_known")]
        )
    );

    // A folder quarantine over that Delta table: refused with the hint to say `delta`.
    w.write(
        "jobs/airports_delta.toml",
        &format!("{job}\n[quarantine]\npath = \"warehouse/_quarantine/airports_dq\"\n"),
    );
    let o = w.run(&["run", "airports_delta"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for expected in ["quarantine.path", "is a Delta table", "format = \"delta\""] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn a_quarantine_folder_on_an_object_store_is_refused_with_a_hint_to_use_delta() {
    let w = airports_project("table = \"airports_d\"\nmode = \"append\"");
    let job = w.read("jobs/airports_delta.toml")
        + "\n[quarantine]\npath = \"s3://lake/quarantine/airports\"\n";
    w.write("jobs/airports_delta.toml", &job);
    w.write("data/airports.csv", &airports_csv(&[JFK]));
    let o = w.run(&["run", "airports_delta"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for expected in [
        "airports_delta.toml:",
        "quarantine.path",
        "no rename",
        "format = \"delta\"",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(
        !w.path().join("warehouse/airports_d").exists(),
        "nothing was loaded"
    );
}

/// The rows of the Parquet folder at `url` (Hive partitions as columns), `columns` joined by
/// `|`, sorted, read by pyarrow's dataset reader (which skips `_` and `.` objects, as Spark
/// and Hive do).
fn s3_parquet_rows(url: &str, columns: &str) -> Vec<String> {
    python(
        url,
        &format!(
            r#"
import pyarrow.dataset as ds, pyarrow.fs as fs
s3 = fs.S3FileSystem(endpoint_override="127.0.0.1:{PORT}", scheme="http", access_key="k", secret_key="s", region="us-east-1")
t = ds.dataset(TABLE[len("s3://"):], filesystem=s3, format="parquet", partitioning="hive").to_table(columns={columns:?}.split(","))
# Partition folders are percent-encoded (`time_zone=America%2FNew_York`); pyarrow keeps that.
from urllib.parse import unquote
print("\n".join(sorted("|".join(unquote(str(v)) for v in r.values()) for r in t.to_pylist())))
"#
        ),
    )
}

#[test]
fn a_parquet_append_on_s3_killed_mid_upload_is_cleaned_by_the_next_run_and_loads_each_row_once() {
    let bucket = Bucket::new("append");
    let url = bucket.url("tables/airports");
    let w = airports_project("");
    let settings = w.read("sluice.toml") + &bucket.connection();
    w.write("sluice.toml", &settings);
    let job = w.read("jobs/airports_delta.toml").replace(
        "format = \"delta\"",
        &format!("format = \"parquet\"\npath = \"{url}\"\nmode = \"append\"\npartition_by = [\"time_zone\"]"),
    );
    w.write("jobs/airports_pq.toml", &job);
    std::fs::remove_file(w.path().join("jobs/airports_delta.toml")).unwrap();
    w.write("data/airports.csv", &airports_csv(&[JFK, LAX]));
    run_ok(&w, &["run", "airports_pq"]);

    // Killed after the first of its two files (one per time zone) was uploaded: that file is
    // visible, whole; the next run deletes it before loading.
    w.write("data/airports.csv", &airports_csv(&[LGA, LAX]));
    let killed = |point: &str| {
        let mut cmd = w.sluice(&["run", "airports_pq"]);
        cmd.env("LAKE_KEY_ID", KEY_ID).env("LAKE_SECRET", SECRET);
        crate::common::run_killed_at_with(cmd, point);
    };
    killed("mid_publish");
    assert_eq!(
        s3_parquet_rows(&url, "faa_code").len(),
        3,
        "JFK, LAX and the killed run's first file (Los Angeles)"
    );
    w.write("data/airports.csv", &airports_csv(&[LGA]));
    let o = run_with_keys(&w, &["run", "airports_pq"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        show(&o).contains("deleted 1 file(s)") && show(&o).contains("never committed"),
        "{}",
        show(&o)
    );
    assert_eq!(s3_parquet_rows(&url, "faa_code"), ["JFK", "LAX", "LGA"]);

    // Killed after its commit record: the next run records it and does not delete its files.
    w.write("data/airports.csv", &airports_csv(&[EWR]));
    killed("after_publish");
    w.write("data/airports.csv", &airports_csv(&[LAX]));
    let o = run_with_keys(&w, &["run", "airports_pq"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        show(&o).contains("recorded now from the target's commit record"),
        "{}",
        show(&o)
    );
    assert_eq!(
        s3_parquet_rows(&url, "faa_code,time_zone"),
        [
            "EWR|America/New_York",
            "JFK|America/New_York",
            "LAX|America/Los_Angeles",
            "LAX|America/Los_Angeles",
            "LGA|America/New_York"
        ]
    );

    // A second job appending to the same folder is refused before it runs: the two would
    // overwrite each other's commit record.
    w.write("jobs/other_pq.toml", &w.read("jobs/airports_pq.toml"));
    let o = run_with_keys(&w, &["validate"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        show(&o).contains("the target of job `airports_pq`"),
        "{}",
        show(&o)
    );
}

/// Azurite's well-known development account key (public, in Azure's documentation): the
/// test still passes it by reference and checks it is never shown.
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Starts Azurite (the Azure Blob Storage emulator) once per test process, and makes a
/// container `name` holding `blobs` (name, text).
fn azure_container(name: &str, blobs: &[(&str, String)]) {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        server(); // the virtual environment with azure-storage-blob
        let o = Command::new("bash")
            .arg(crate::common::repo().join("tools/azure/server.sh"))
            .output()
            .unwrap();
        assert!(o.status.success(), "Azurite: {}", show(&o));
    });
    let uploads: String = blobs
        .iter()
        .map(|(b, text)| format!("c.upload_blob({b:?}, {text:?}.encode(), overwrite=True)\n"))
        .collect();
    let code = format!(
        r#"
from azure.storage.blob import BlobServiceClient
s = BlobServiceClient.from_connection_string("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;")
c = s.get_container_client({name:?})
if not c.exists():
    c.create_container()
{uploads}"#
    );
    python("", &code);
}

#[test]
fn csv_objects_on_azure_are_read_incrementally_into_a_delta_table_there() {
    let container = format!("az{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    azure_container(&container, &[("raw/1.csv", airports_csv(&[JFK, LGA]))]);
    let w = airports_project(&format!(
        "path = \"az://{container}/tables/airports\"\nmode = \"append\""
    ));
    let settings = w.read("sluice.toml")
        + &format!(
            "\n[connections.azlake]\nkind = \"azure\"\nbucket = \"{container}\"\naccount = \"devstoreaccount1\"\naccess_key = \"${{env:AZ_KEY}}\"\nendpoint = \"http://127.0.0.1:10000/devstoreaccount1\"\n"
        );
    w.write("sluice.toml", &settings);
    let job = w.read("jobs/airports_delta.toml").replace(
        "path = \"data/airports.csv\"",
        &format!("path = \"az://{container}/raw/*.csv\"\nincremental = {{ files = \"new\" }}"),
    );
    w.write("jobs/airports_delta.toml", &job);
    let run = || {
        let o = w
            .sluice(&["run", "airports_delta", "--json"])
            .env("AZ_KEY", AZURITE_KEY)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", show(&o));
        let seen = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!seen.contains(AZURITE_KEY), "the account key was shown");
        report(&o)
    };
    let first = run();
    assert_eq!(first["rows"]["written"], 2, "{first}");
    azure_container(&container, &[("raw/2.csv", airports_csv(&[LAX]))]);
    let second = run();
    assert_eq!(
        second["new_files"][0]["read"],
        serde_json::json!([format!("az://{container}/raw/2.csv")])
    );

    let table = format!("az://{container}/tables/airports");
    let out = python(
        &table,
        &format!(
            r#"
t = DeltaTable(TABLE, storage_options={{"account_name": "devstoreaccount1", "account_key": "{AZURITE_KEY}", "use_emulator": "true", "allow_http": "true"}})
print(t.version())
print(",".join(sorted(t.to_pyarrow_table(columns=["faa_code"]).column(0).to_pylist())))
"#
        ),
    );
    assert_eq!(
        out,
        ["1", "JFK,LAX,LGA"],
        "two runs, two commits, every row once"
    );
}
