//! Source formats other than the shipped CSV jobs use: NDJSON, Parquet, text that must cast.

use crate::common::{query, report, rows, show, Workdir};

const PROJECT: &str = "name = \"t\"\n";

const MODEL: &str = r#"
name = "carrier"
version = "1.0.0"

[fields.carrier_code]
type = "string"
primary_key = true
pattern = "^[A-Z0-9]{2}$"

[fields.name]
type = "string"
required = true

[fields.founded_year]
type = "int32"
min = 1900
"#;

fn job(format: &str, path: &str) -> String {
    format!(
        r#"
mapping = "m"

[sources.src]
format = "{format}"
path = "{path}"

[target]
format = "parquet"
table = "carriers"
mode = "overwrite"
"#
    )
}

#[test]
fn ndjson_source_loads_and_quarantines_with_line_numbers() {
    let w = Workdir::with_files(&[
        ("sluice.toml", PROJECT),
        ("mappings/canonical/carrier.toml", MODEL),
        (
            "mappings/m.toml",
            "model = \"carrier@1\"\nfrom = \"src\"\n[fields]\ncarrier_code = \"code\"\nname = \"name\"\nfounded_year = \"CAST(founded AS INT)\"\n",
        ),
        ("jobs/j.toml", &job("json", "data/*.jsonl")),
        (
            "data/a.jsonl",
            "{\"code\":\"AA\",\"name\":\"American\",\"founded\":1926}\n{\"code\":\"DL\",\"name\":\"Delta\",\"founded\":1925}\n{\"code\":\"B6\",\"name\":null,\"founded\":1998}\n",
        ),
    ]);
    let out = w.run(&["run", "j", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let r = report(&out);
    assert_eq!(r["rows"]["read"], 3);
    assert_eq!(r["rows"]["written"], 2);
    let q = query(
        &w.path().join("warehouse/_quarantine/j"),
        "SELECT source_file, source_line, failed_rules[1]['rule'] FROM t",
    );
    assert_eq!(
        rows(&q),
        vec!["data/a.jsonl|3|carrier.name.required".to_string()]
    );
}

#[test]
fn parquet_source_reads_another_jobs_output() {
    let w = Workdir::with_files(&[
        ("sluice.toml", PROJECT),
        ("mappings/canonical/carrier.toml", MODEL),
        (
            "mappings/m.toml",
            "model = \"carrier@1\"\nfrom = \"src\"\n[fields]\ncarrier_code = \"code\"\nname = \"name\"\nfounded_year = \"CAST(founded AS INT)\"\n",
        ),
        (
            "mappings/copy.toml",
            "model = \"carrier@1\"\nfrom = \"src\"\n[fields]\ncarrier_code = \"lower(carrier_code)\"\nname = \"name\"\nfounded_year = \"founded_year\"\n",
        ),
        ("jobs/j.toml", &job("csv", "data/a.csv")),
        (
            "jobs/copy.toml",
            &job("parquet", "warehouse/carriers").replace("mapping = \"m\"", "mapping = \"copy\"").replace("table = \"carriers\"", "table = \"copies\""),
        ),
        ("data/a.csv", "code,name,founded\nAA,American,1926\nDL,Delta,1925\n"),
    ]);
    let out = w.run(&["run", "j"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = w.run(&["run", "copy", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let r = report(&out);
    assert_eq!(r["rows"]["read"], 2);
    // Lower-case codes fail the model's pattern: both rows are quarantined, with the Parquet
    // row number as their line.
    assert_eq!(r["rows"]["quarantined"], 2);
    let q = query(
        &w.path().join("warehouse/_quarantine/copy"),
        "SELECT source_line, failed_rules[1]['reason'] FROM t ORDER BY source_line",
    );
    assert_eq!(
        rows(&q),
        vec![
            "1|carrier_code 'aa' does not match pattern ^[A-Z0-9]{2}$".to_string(),
            "2|carrier_code 'dl' does not match pattern ^[A-Z0-9]{2}$".to_string()
        ]
    );
}

#[test]
fn text_that_does_not_cast_to_the_field_type_is_a_row_failure() {
    let w = Workdir::with_files(&[
        ("sluice.toml", PROJECT),
        ("mappings/canonical/carrier.toml", MODEL),
        (
            "mappings/m.toml",
            "model = \"carrier@1\"\nfrom = \"src\"\n[fields]\ncarrier_code = \"code\"\nname = \"name\"\nfounded_year = \"founded\"\n",
        ),
        ("jobs/j.toml", &job("csv", "data/a.csv")),
        ("data/a.csv", "code,name,founded\nAA,American,1926\nX,Broken,unknown\nDL,Delta,1850\n"),
    ]);
    let out = w.run(&["run", "j", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let r = report(&out);
    assert_eq!(r["rows"]["written"], 1);
    assert_eq!(r["rows"]["quarantined"], 2);
    let q = query(
        &w.path().join("warehouse/_quarantine/j"),
        "SELECT source_line, source_values, failed_rules FROM t ORDER BY source_line",
    );
    let got = rows(&q);
    // Line 3: `founded` is text (one value is not a number), so the field is parsed per row.
    assert!(
        got[0].starts_with("3|{\"code\":\"X\",\"name\":\"Broken\",\"founded\":\"unknown\"}|"),
        "{got:?}"
    );
    assert!(got[0].contains("cast.founded_year"), "{got:?}");
    assert!(
        got[0].contains("value 'unknown' of founded_year is not a valid int32"),
        "{got:?}"
    );
    assert!(got[0].contains("carrier.carrier_code.pattern"), "{got:?}");
    // Line 4: parsed fine, but below the model's minimum.
    assert!(got[1].starts_with("4|"), "{got:?}");
    assert!(
        got[1].contains("founded_year 1850 is below the minimum 1900"),
        "{got:?}"
    );
}

#[test]
fn missing_source_file_fails_the_run_with_a_report() {
    let w = Workdir::with_files(&[
        ("sluice.toml", PROJECT),
        ("mappings/canonical/carrier.toml", MODEL),
        (
            "mappings/m.toml",
            "model = \"carrier@1\"\nfrom = \"src\"\n[fields]\ncarrier_code = \"code\"\nname = \"name\"\n",
        ),
        ("jobs/j.toml", &job("csv", "data/nothing-*.csv")),
    ]);
    let out = w.run(&["run", "j", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r = report(&out);
    assert_eq!(r["status"], "failed");
    assert_eq!(r["error"]["class"], "source");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("source `src` (data/nothing-*.csv): no file matches"),
        "{msg}"
    );
    let run_id = r["run_id"].as_str().unwrap();
    assert!(w
        .path()
        .join(format!(".sluice/runs/j/{run_id}.json"))
        .is_file());
}

#[test]
fn declared_column_types_replace_inference_and_bad_values_are_quarantined() {
    let w = Workdir::with_files(&[
        ("sluice.toml", PROJECT),
        ("mappings/canonical/carrier.toml", MODEL),
        (
            "mappings/m.toml",
            "model = \"carrier@1\"\nfrom = \"src\"\n[fields]\ncarrier_code = \"code\"\nname = \"name\"\nfounded_year = \"founded\"\n",
        ),
        (
            "jobs/j.toml",
            &job("csv", "data/a.csv").replace(
                "path = \"data/a.csv\"",
                "path = \"data/a.csv\"\ncolumns = { founded = \"int32\" }",
            ),
        ),
        ("data/a.csv", "code,name,founded\nAA,American,1926\nUA,United,unknown\n"),
    ]);
    let plan = w.run(&["plan", "j"]);
    assert_eq!(plan.status.code(), Some(0), "{}", show(&plan));
    assert!(
        String::from_utf8_lossy(&plan.stdout)
            .contains("founded          Int32  (parsed from text)"),
        "{}",
        show(&plan)
    );
    let out = w.run(&["run", "j", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let q = query(
        &w.path().join("warehouse/_quarantine/j"),
        "SELECT source_line, failed_rules[1]['rule'], failed_rules[1]['reason'] FROM t",
    );
    assert_eq!(
        rows(&q),
        vec![
            "3|parse.src.founded|value 'unknown' in column src.founded is not a valid Int32"
                .to_string()
        ]
    );
    // A declared column the file does not have is an error naming the file's columns.
    let j = w
        .read("jobs/j.toml")
        .replace("founded = \"int32\"", "foundd = \"int32\"");
    w.write("jobs/j.toml", &j);
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(show(&out).contains("`columns` declares `foundd`, which the file does not have; its columns: code, name, founded"), "{}", show(&out));
}

#[test]
fn numeric_lookup_columns_parse_and_report_bad_values() {
    let model = r#"
name = "plane"
version = "1.0.0"

[fields.tail_number]
type = "string"
primary_key = true

[fields.seats]
type = "int64"
"#;
    let w = Workdir::with_files(&[
        ("sluice.toml", PROJECT),
        ("mappings/canonical/plane.toml", model),
        (
            "mappings/m.toml",
            "model = \"plane@1\"\nfrom = \"flights\"\n[[join]]\nsource = \"planes\"\non = \"planes.tailnum = flights.tailnum\"\n[fields]\ntail_number = \"flights.tailnum\"\nseats = \"planes.seats\"\n",
        ),
        (
            "jobs/j.toml",
            "mapping = \"m\"\n[sources.flights]\nformat = \"csv\"\npath = \"data/flights.csv\"\n[sources.planes]\nformat = \"csv\"\npath = \"data/planes*.csv\"\ncolumns = { seats = \"int64\" }\n[target]\nformat = \"parquet\"\ntable = \"planes\"\nmode = \"overwrite\"\n",
        ),
        ("data/flights.csv", "tailnum\nN1\nN2\nN3\n"),
        ("data/planes.csv", "tailnum,seats\nN1,180\nN2,many\n"),
    ]);
    let out = w.run(&["run", "j", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let r = report(&out);
    assert_eq!(r["rows"]["read"], 3);
    assert_eq!(r["rows"]["quarantined"], 1);
    let q = query(
        &w.path().join("warehouse/_quarantine/j"),
        "SELECT source_line, failed_rules[1]['reason'] FROM t",
    );
    assert_eq!(
        rows(&q),
        vec!["3|value 'many' in column planes.seats is not a valid Int64".to_string()]
    );

    // A second planes file with its columns in another order is refused, not misread.
    w.write("data/planes2.csv", "seats,tailnum\n50,N3\n");
    let out = w.run(&["run", "j", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let msg = report(&out)["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("data/planes2.csv has columns [seats, tailnum], but data/planes.csv has [tailnum, seats]"), "{msg}");
}

/// The carrier mapping from a CSV `src` with columns code,name,founded.
const CSV_MAPPING: &str = "model = \"carrier@1\"\nfrom = \"src\"\n[fields]\ncarrier_code = \"code\"\nname = \"name\"\nfounded_year = \"CAST(founded AS INT)\"\n";

#[test]
fn a_long_source_path_with_a_huge_batch_size_loads_every_row() {
    // Once: the file-name column (the path repeated batch_size times) passed Arrow's 2 GiB,
    // the reader panicked, and the run published an empty target as a success.
    let dirs: Vec<String> = (0..9).map(|i| format!("{i}{}", "d".repeat(249))).collect();
    let rel = format!("{}/carriers.csv", dirs.join("/"));
    assert!(rel.len() > 2_250);
    let mut csv = String::from("code,name,founded\n");
    for i in 0..20_000 {
        let code: String = [b'A' + (i % 26) as u8, b'A' + (i / 26 % 26) as u8]
            .iter()
            .map(|b| *b as char)
            .collect();
        csv.push_str(&format!("{code},Carrier {i},1950\n"));
    }
    let w = Workdir::with_files(&[
        (
            "sluice.toml",
            "name = \"t\"\n\n[defaults]\nbatch_size = 1000000\n",
        ),
        ("mappings/canonical/carrier.toml", MODEL),
        ("mappings/m.toml", CSV_MAPPING),
        ("jobs/j.toml", &job("csv", &rel)),
        (&rel, &csv),
    ]);
    let out = w.run(&["run", "j", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let r = report(&out);
    assert_eq!(r["rows"]["read"], 20_000);
    assert_eq!(r["rows"]["written"], 20_000);
    let n = query(
        &w.path().join("warehouse/carriers"),
        "SELECT count(*) FROM t",
    );
    assert_eq!(rows(&n), ["20000"]);
}

#[test]
fn a_glob_over_a_symlink_loop_is_an_error_not_a_hang() {
    let w = Workdir::with_files(&[
        ("sluice.toml", PROJECT),
        ("mappings/canonical/carrier.toml", MODEL),
        ("mappings/m.toml", CSV_MAPPING),
        ("jobs/j.toml", &job("csv", "data/**/*.csv")),
        (
            "data/a/carriers.csv",
            "code,name,founded\nAA,American,1926\n",
        ),
    ]);
    std::os::unix::fs::symlink(w.path().join("data"), w.path().join("data/a/loop")).unwrap();
    let out = w.run(&["run", "j"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(show(&out).contains("symbolic link loop"), "{}", show(&out));
    // Globs of a fixed depth do not walk into the loop, and still work.
    for glob in ["data/a/*.csv", "data/*/*.csv"] {
        w.write("jobs/j.toml", &job("csv", glob));
        let out = w.run(&["run", "j"]);
        assert_eq!(out.status.code(), Some(0), "{glob}: {}", show(&out));
    }
}

#[test]
fn unwritable_standard_output_is_an_error_but_never_undoes_a_commit() {
    let w = Workdir::with_files(&[
        ("sluice.toml", PROJECT),
        ("mappings/canonical/carrier.toml", MODEL),
        ("mappings/m.toml", CSV_MAPPING),
        ("jobs/j.toml", &job("csv", "carriers.csv")),
        (
            "carriers.csv",
            "code,name,founded\nAA,American,1926\nDL,Delta,1925\n",
        ),
    ]);
    let full = || std::fs::File::create("/dev/full").unwrap();
    let out = w.sluice(&["plan", "j"]).stdout(full()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        show(&out).contains("cannot write to standard output"),
        "{}",
        show(&out)
    );
    // The run commits; its exit code says so, so a scheduler does not load it again.
    let out = w
        .sluice(&["run", "j", "--json"])
        .stdout(full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        show(&out).contains("cannot write to standard output"),
        "{}",
        show(&out)
    );
    let n = query(
        &w.path().join("warehouse/carriers"),
        "SELECT count(*) FROM t",
    );
    assert_eq!(rows(&n), ["2"]);
}

#[test]
fn a_record_above_max_record_bytes_is_quarantined_and_the_rest_load_with_exact_lines() {
    let big = "x".repeat(3000);
    // Line 3: one long unquoted field. Lines 4-6: a long quoted field with two line breaks.
    let csv = format!(
        "code,name,founded\nAA,American,1926\nBB,{big},1930\nCC,\"{big}\n{big}\n{big}\",1931\nDL,Delta,1925\nZZ,,1990\n"
    );
    let w = Workdir::with_files(&[
        (
            "sluice.toml",
            "name = \"t\"\n\n[defaults]\nmax_record_bytes = 2048\n",
        ),
        ("mappings/canonical/carrier.toml", MODEL),
        ("mappings/m.toml", CSV_MAPPING),
        ("jobs/j.toml", &job("csv", "carriers.csv")),
        ("carriers.csv", &csv),
    ]);
    let out = w.run(&["run", "j", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let r = report(&out);
    assert_eq!(r["rows"]["read"], 5);
    assert_eq!(r["rows"]["written"], 2);
    let loaded = query(
        &w.path().join("warehouse/carriers"),
        "SELECT carrier_code FROM t ORDER BY carrier_code",
    );
    assert_eq!(rows(&loaded), ["AA", "DL"]);
    let q = query(
        &w.path().join("warehouse/_quarantine/j"),
        "SELECT source_line, failed_rules[1]['reason'], length(source_values) FROM t ORDER BY source_line",
    );
    let q = rows(&q);
    assert_eq!(q.len(), 3, "{q:?}");
    assert!(q[0].starts_with("3|"), "{q:?}");
    assert!(
        q[0].contains("3008 bytes, above max_record_bytes = 2048"),
        "{q:?}"
    );
    assert!(q[1].starts_with("4|"), "{q:?}");
    assert!(q[1].contains("9012 bytes"), "{q:?}");
    // The line breaks inside the cut record still count: ZZ is on line 8.
    assert!(q[2].starts_with("8|"), "{q:?}");
    // The raw text kept is the record's first bytes, not all of it.
    let kept: usize = q[0].rsplit('|').next().unwrap().parse().unwrap();
    assert!(kept < 3000, "{q:?}");
}

#[test]
fn corrupt_parquet_sources_fail_the_run_with_an_error_never_a_panic() {
    let w = Workdir::with_files(&[
        ("sluice.toml", PROJECT),
        ("mappings/canonical/carrier.toml", MODEL),
        ("mappings/m.toml", CSV_MAPPING),
        (
            "mappings/copy.toml",
            "model = \"carrier@1\"\nfrom = \"src\"\n[fields]\ncarrier_code = \"carrier_code\"\nname = \"name\"\nfounded_year = \"founded_year\"\n",
        ),
        ("jobs/j.toml", &job("csv", "carriers.csv")),
        (
            "jobs/copy.toml",
            &job("parquet", "in/carriers.parquet")
                .replace("mapping = \"m\"", "mapping = \"copy\"")
                .replace("table = \"carriers\"", "table = \"copies\""),
        ),
        ("carriers.csv", "code,name,founded\nAA,American,1926\nDL,Delta,1925\n"),
    ]);
    let out = w.run(&["run", "j"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let written = std::fs::read_dir(w.path().join("warehouse/carriers"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "parquet"))
        .unwrap();
    let good = std::fs::read(written).unwrap();
    let n = good.len();
    // The footer length (4 bytes before the closing "PAR1"), then bytes inside the pages.
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for len in [u32::MAX, n as u32 - 8, n as u32 - 7, 1] {
        let mut b = good.clone();
        b[n - 8..n - 4].copy_from_slice(&len.to_le_bytes());
        cases.push((format!("footer length {len}"), b));
    }
    for at in [4, 8, 16, 32, 64, n / 3, n / 2] {
        let mut b = good.clone();
        for x in &mut b[at..(at + 8).min(n - 8)] {
            *x = !*x;
        }
        cases.push((format!("bytes flipped at {at}"), b));
    }
    // A footer length that does not fit the file made the parquet crate panic: now a clear
    // source error before any reader sees the file.
    w.write("in/.keep", "");
    for (what, bytes) in &cases[..3] {
        std::fs::write(w.path().join("in/carriers.parquet"), bytes).unwrap();
        let out = w.run(&["run", "copy"]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", show(&out));
        assert!(
            show(&out).contains("is not a valid Parquet file: its footer length"),
            "{what}: {}",
            show(&out)
        );
    }
    for (what, bytes) in cases {
        w.write("in/.keep", "");
        std::fs::write(w.path().join("in/carriers.parquet"), &bytes).unwrap();
        let out = w.run(&["run", "copy"]);
        let code = out.status.code();
        // Either the damage is caught (exit 1, a message) or it hit no value the job reads.
        assert!(code == Some(1) || code == Some(0), "{what}: {}", show(&out));
        if code == Some(1) {
            assert!(show(&out).contains("error"), "{what}: {}", show(&out));
        }
        assert!(
            !show(&out).contains("panicked at") || show(&out).contains("internal error"),
            "{what}: {}",
            show(&out)
        );
    }
}

#[test]
fn a_parquet_file_whose_embedded_arrow_schema_panics_the_reader_fails_the_run_cleanly() {
    // Found by the file_source fuzzer: arrow-ipc 59 panics (`unimplemented!`) on an unknown
    // type in a file's ARROW:schema metadata (apache/arrow-rs#10437, fixed upstream after 59).
    // Sluice reads that schema itself first, under `catch_quietly`: a source error naming the
    // file, never a crash or a published target.
    let damaged =
        std::fs::read(crate::common::repo().join("tests/data/arrow_schema_unknown_type.parquet"))
            .unwrap();
    let w = Workdir::project();
    w.write(
        "mappings/copy.toml",
        "model = \"airport@1\"\nfrom = \"src\"\n\n[fields]\nfaa_code = \"faa_code\"\nname = \"name\"\nlatitude = \"latitude\"\nlongitude = \"longitude\"\naltitude_m = \"altitude_m\"\ntime_zone = \"time_zone\"\n",
    );
    w.write(
        "jobs/copy.toml",
        "mapping = \"copy\"\n\n[sources.src]\nformat = \"parquet\"\npath = \"in/a.parquet\"\n\n[target]\nformat = \"parquet\"\ntable = \"copies\"\nmode = \"overwrite\"\n",
    );
    w.write("in/.keep", "");
    std::fs::write(w.path().join("in/a.parquet"), damaged).unwrap();
    let out = w.run(&["run", "copy", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r = report(&out);
    assert_eq!(r["status"], "failed");
    // A source error naming the file, not an internal error; no panic message printed.
    assert_eq!(r["error"]["class"], "source", "{}", show(&out));
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("in/a.parquet is not a valid Parquet file: its embedded Arrow schema"),
        "{}",
        show(&out)
    );
    assert!(!show(&out).contains("panicked"), "{}", show(&out));
    assert!(!w.path().join("warehouse/copies").exists());
}

#[test]
fn quote_mode_lenient_loads_a_quote_inside_an_unquoted_value_as_a_character() {
    let w = Workdir::project();
    w.write(
        "samples/airlines.csv",
        "carrier,name\nAA,American 5'10\" Air\nUA,\"United, Inc.\"\nDL,Delta\"\"Quoted\n",
    );
    let job = w.read("jobs/carriers.toml").replace(
        "samples/nycflights13/airlines.csv.gz",
        "samples/airlines.csv",
    );
    w.write("jobs/carriers.toml", &job);
    let names = |w: &Workdir| {
        rows(&query(
            &w.path().join("warehouse/carriers"),
            "SELECT carrier_code || '|' || name FROM t ORDER BY carrier_code",
        ))
    };
    // Strict (the default): the two records with a stray quote are malformed.
    let out = w.run(&["run", "carriers", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(report(&out)["rows"]["quarantined"], 2);
    assert_eq!(names(&w), vec!["UA|United, Inc.".to_string()]);
    // Lenient: they load with the quotes as written; the quoted value is still unquoted.
    w.write(
        "jobs/carriers.toml",
        &job.replace(
            "path = \"samples/airlines.csv\"\n",
            "path = \"samples/airlines.csv\"\nquote_mode = \"lenient\"\n",
        ),
    );
    let out = w.run(&["run", "carriers", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(report(&out)["rows"]["quarantined"], 0);
    assert_eq!(
        names(&w),
        vec![
            "AA|American 5'10\" Air".to_string(),
            "DL|Delta\"\"Quoted".to_string(),
            "UA|United, Inc.".to_string(),
        ]
    );
}
