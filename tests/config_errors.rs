//! Config mistakes: each names the file and line, all are reported at once, exit code 2.

use crate::common::{query, report, rows, show, Workdir};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Asserts that `err` (validate's output) has a diagnostic starting with `message` at `line`
/// of `file`.
fn assert_reported_at(err: &str, file: &str, line: usize, message: &str) {
    let at = format!("--> {file}:{line}:");
    let found = err
        .split("error: ")
        .any(|d| d.starts_with(message) && d.contains(&at));
    assert!(found, "expected {message} at {at} in:\n{err}");
}

#[test]
fn three_mistakes_in_one_file_are_all_reported_with_lines() {
    let w = Workdir::project();
    // Line 2: unknown key; line 9: wrong type; line 14: misspelled key in [target].
    w.write(
        "jobs/broken.toml",
        r#"mapping = "nycflights13_to_carrier"
onwer = "me"

[sources.airlines]
format = "csv"
path = "samples/nycflights13/airlines.csv.gz"

[checks.row_count]
fail_below = "ten"

[target]
format = "parquet"
table = "carriers_copy"
partiton_by = ["name"]
mode = "overwrite"
"#,
    );
    let out = w.run(&["validate", "jobs/broken.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("jobs/broken.toml:2:1"), "{err}");
    assert!(err.contains("unknown key `onwer`"), "{err}");
    assert!(err.contains("did you mean `owner`?"), "{err}");
    assert!(err.contains("jobs/broken.toml:9:"), "{err}");
    assert!(err.contains("wrong type"), "{err}");
    assert!(err.contains("jobs/broken.toml:14:1"), "{err}");
    assert!(err.contains("did you mean `partition_by`?"), "{err}");
    assert!(err.contains("3 problems found"), "{err}");
}

#[test]
fn unknown_column_names_mapping_line_field_and_valid_columns() {
    let w = Workdir::project();
    let m = w
        .read("mappings/nycflights13_to_carrier.toml")
        .replace("name = \"name\"", "name = \"nmae\"");
    w.write("mappings/nycflights13_to_carrier.toml", &m);
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    let line = m.lines().position(|l| l.contains("nmae")).unwrap() + 1;
    assert!(
        err.contains(&format!("mappings/nycflights13_to_carrier.toml:{line}:")),
        "{err}"
    );
    assert!(
        err.contains("in field `name`: unknown column `nmae`"),
        "{err}"
    );
    assert!(err.contains("did you mean `airlines.name`?"), "{err}");
    assert!(
        err.contains("valid columns: airlines.carrier, airlines.name"),
        "{err}"
    );
}

#[test]
fn wrong_type_and_lossy_cast_are_compile_errors() {
    let w = Workdir::project();
    let m = w.read("mappings/nycflights13_to_flight.toml");
    let m = m
        .replace(
            "flight_number = \"CAST(flights.flight AS INT)\"",
            "flight_number = \"flights.distance * 1.5\"",
        )
        .replace(
            "cancelled = \"flights.dep_time IS NULL\"",
            "cancelled = \"flights.dep_time\"",
        )
        .replace(
            "scheduled_departure = \"sched_dep_utc\"",
            "scheduled_departure = \"sched_dep_local\"",
        );
    w.write("mappings/nycflights13_to_flight.toml", &m);
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    let line_of = |needle: &str| m.lines().position(|l| l.contains(needle)).unwrap() + 1;
    assert!(
        err.contains("lossy implicit cast for field `flight_number`: Float64 to int32 drops the fractional part"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "nycflights13_to_flight.toml:{}:",
            line_of("flights.distance * 1.5")
        )),
        "{err}"
    );
    assert!(
        err.contains(
            "wrong type for field `cancelled`: the expression is Int64, the field is boolean"
        ),
        "{err}"
    );
    assert!(err.contains("timestamp without time zone"), "{err}");
    assert!(err.contains("to_utc_timestamp("), "{err}");
    assert!(err.contains("3 problems found"), "{err}");
}

#[test]
fn bad_expression_syntax_names_the_line() {
    let w = Workdir::project();
    let m = w.read("mappings/nycflights13_to_carrier.toml").replace(
        "carrier_code = \"carrier\"",
        "carrier_code = \"upper(carrier\"",
    );
    w.write("mappings/nycflights13_to_carrier.toml", &m);
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    let line = m.lines().position(|l| l.contains("upper(carrier")).unwrap() + 1;
    assert!(
        err.contains(&format!("nycflights13_to_carrier.toml:{line}:")),
        "{err}"
    );
    assert!(err.contains("in field `carrier_code`"), "{err}");
}

#[test]
fn missing_references_are_reported() {
    let w = Workdir::project();
    let j = w.read("jobs/carriers.toml").replace(
        "mapping = \"nycflights13_to_carrier\"",
        "mapping = \"nycflights13_to_carriers\"",
    );
    w.write("jobs/carriers.toml", &j);
    let m = w
        .read("mappings/nycflights13_to_airport.toml")
        .replace("model = \"airport@1\"", "model = \"airprot@1\"");
    w.write("mappings/nycflights13_to_airport.toml", &m);
    // A required field left unmapped.
    let f = w
        .read("mappings/nycflights13_to_flight.toml")
        .replace("distance_km = \"flights.distance * 1.609344\"\n", "");
    w.write("mappings/nycflights13_to_flight.toml", &f);
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    let line = j.lines().position(|l| l.starts_with("mapping")).unwrap() + 1;
    assert!(
        err.contains(&format!("jobs/carriers.toml:{line}:1")),
        "{err}"
    );
    assert!(
        err.contains("no mapping named `nycflights13_to_carriers`"),
        "{err}"
    );
    assert!(
        err.contains("did you mean `nycflights13_to_carrier`?"),
        "{err}"
    );
    assert!(
        err.contains("mappings/nycflights13_to_airport.toml:"),
        "{err}"
    );
    assert!(err.contains("no canonical model named `airprot`"), "{err}");
    assert!(err.contains("did you mean `airport`?"), "{err}");
    assert!(
        err.contains("required field of model `flight` not mapped: distance_km"),
        "{err}"
    );
}

#[test]
fn run_with_invalid_config_exits_2_and_writes_nothing() {
    let w = Workdir::project();
    let m = w
        .read("mappings/canonical/carrier.toml")
        .replace("type = \"string\"", "type = \"strng\"");
    w.write("mappings/canonical/carrier.toml", &m);
    let out = w.run(&["run", "carriers"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("mappings/canonical/carrier.toml:"), "{err}");
    assert!(err.contains("did you mean `string`?"), "{err}");
    assert!(!w.path().join("warehouse").exists());
}

#[test]
fn secrets_from_the_environment_are_never_printed() {
    let w = Workdir::project();
    let p = w.read("sluice.toml")
        + "\n[connections.ops]\nkind = \"postgres\"\nurl = \"postgres://loader:${env:SLUICE_TEST_PW}@db/ops\"\n";
    w.write("sluice.toml", &p);
    // A target path taken from the environment, pointing at a folder that cannot be created.
    let j = w.read("jobs/carriers.toml").replace(
        "table = \"carriers\"",
        "path = \"${env:SLUICE_TEST_PW}/carriers\"",
    );
    w.write("jobs/carriers.toml", &j);
    w.write("hunter2-secret", "a file where a folder should be");
    let out = w
        .sluice(&["run", "carriers", "--json"])
        .env("SLUICE_TEST_PW", "hunter2-secret")
        .output()
        .unwrap();
    let all = show(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(!all.contains("hunter2"), "secret leaked:\n{all}");
    assert!(all.contains("***"), "{all}");
    let plan = w
        .sluice(&["plan", "carriers"])
        .env("SLUICE_TEST_PW", "hunter2-secret")
        .output()
        .unwrap();
    assert!(!show(&plan).contains("hunter2"), "{}", show(&plan));
    // A password written in plain text is refused.
    w.write(
        "sluice.toml",
        &(w.read("sluice.toml")
            .replace("${env:SLUICE_TEST_PW}", "hunter2")),
    );
    let out = w.run(&["validate", "sluice.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).contains("password written in plain text"),
        "{}",
        show(&out)
    );
    // ... and not printed again in the line shown under the error.
    assert!(!show(&out).contains("hunter2"), "{}", show(&out));
    assert!(stderr(&out).contains(":***@"), "{}", show(&out));
}

#[test]
fn a_broken_model_is_reported_once_not_as_missing_everywhere() {
    let w = Workdir::project();
    let m = w
        .read("mappings/canonical/carrier.toml")
        .replace("version = \"1.0.0\"", "version = \"1.0\"");
    w.write("mappings/canonical/carrier.toml", &m);
    // An independent mistake in another job's mapping is still found by compiling that job.
    let a = w
        .read("mappings/nycflights13_to_airport.toml")
        .replace("latitude = \"lat\"", "latitude = \"latt\"");
    w.write("mappings/nycflights13_to_airport.toml", &a);
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("`1.0` is not a semantic version"), "{err}");
    assert!(!err.contains("no canonical model named"), "{err}");
    assert!(
        err.contains("in field `latitude`: unknown column `latt`"),
        "{err}"
    );
    assert!(err.contains("2 problems found"), "{err}");
}

#[test]
fn an_unbound_source_is_reported_at_the_mapping_with_the_jobs_bindings() {
    let w = Workdir::project();
    let m = w
        .read("mappings/nycflights13_to_carrier.toml")
        .replace("from = \"airlines\"", "from = \"airline\"");
    w.write("mappings/nycflights13_to_carrier.toml", &m);
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    let line = m.lines().position(|l| l.starts_with("from")).unwrap() + 1;
    assert!(
        err.contains(&format!("mappings/nycflights13_to_carrier.toml:{line}:")),
        "{err}"
    );
    assert!(
        err.contains("source `airline` is not bound by job `carriers` (it binds: airlines)"),
        "{err}"
    );
    assert!(err.contains("did you mean `airlines`?"), "{err}");
}

#[test]
fn every_unknown_key_of_one_table_is_reported() {
    let w = Workdir::project();
    let m = w.read("mappings/nycflights13_to_airport.toml");
    w.write(
        "mappings/nycflights13_to_airport.toml",
        &format!("{m}\n[[rule]]\nname = \"t\"\nchekc = \"altitude_m > 0\"\nreson = \"x\"\n"),
    );
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("unknown key `chekc`"), "{err}");
    assert!(err.contains("did you mean `check`?"), "{err}");
    assert!(err.contains("unknown key `reson`"), "{err}");
    assert!(err.contains("did you mean `reason`?"), "{err}");
}

#[test]
fn a_mistake_is_reported_at_its_own_key_and_a_nested_table_reports_every_unknown_key() {
    let w = Workdir::project();
    // `format` and `path` are written in [sources.airlines] first; the mistakes are the
    // ones in [target] (lines 10 and 11). [checks.quarantine_ratio] has two unknown keys (15, 16).
    w.write(
        "jobs/carriers_pg.toml",
        r#"mapping = "nycflights13_to_carrier"

[sources.airlines]
format = "csv"
path = "samples/nycflights13/airlines.csv.gz"

[target]
connection = "warehouse_pg"
table = "carriers_copy"
format = "parquet"
path = "out/carriers"
mode = "append"

[checks.quarantine_ratio]
fail_abve = 0.1
warn_abve = 0.05
"#,
    );
    let out = w.run(&["validate", "jobs/carriers_pg.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("jobs/carriers_pg.toml:10:1"), "{err}");
    assert!(
        err.contains("`format = \"parquet\"` and `connection` both given"),
        "{err}"
    );
    assert!(err.contains("jobs/carriers_pg.toml:11:1"), "{err}");
    assert!(
        err.contains("`path` applies only to Parquet targets"),
        "{err}"
    );
    assert!(!err.contains("carriers_pg.toml:4:"), "{err}");
    assert!(!err.contains("carriers_pg.toml:5:"), "{err}");
    assert!(err.contains("jobs/carriers_pg.toml:15:1"), "{err}");
    assert!(err.contains("did you mean `fail_above`?"), "{err}");
    assert!(err.contains("jobs/carriers_pg.toml:16:1"), "{err}");
    assert!(err.contains("did you mean `warn_above`?"), "{err}");
    assert!(err.contains("4 problems found"), "{err}");
}

#[test]
fn validating_one_mapping_file_compiles_the_jobs_that_use_it() {
    let w = Workdir::project();
    let m = w.read("mappings/nycflights13_to_airport.toml");
    w.write(
        "mappings/nycflights13_to_airport.toml",
        &format!("{m}\n[[rule]]\nname = \"u\"\nunique = [\"faa\"]\n"),
    );
    let out = w.run(&["validate", "mappings/nycflights13_to_airport.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).contains("names `faa`, which is not a field"),
        "{}",
        show(&out)
    );
    let out = w.run(&["validate", "mappings/nycflights13_to_carrier.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

/// The carriers job with its `[target]` location replaced by `location` (a `table = ...` or
/// `path = ...` line).
fn carriers_targeting(w: &Workdir, location: &str) -> usize {
    let job = w
        .read("jobs/carriers.toml")
        .replace("table = \"carriers\"", location);
    w.write("jobs/carriers.toml", &job);
    job.lines()
        .collect::<Vec<_>>()
        .iter()
        .rposition(|l| *l == location)
        .unwrap()
        + 1
}

#[test]
fn targets_over_sources_the_project_state_or_other_outputs_are_refused_with_their_line() {
    // (the target's location, what the refusal says); `{project}` is the project folder's name.
    let cases = [
        (
            "path = \"samples/nycflights13/airlines.csv.gz\"",
            "is source `airlines`",
        ),
        ("path = \"samples\"", "contains source `airlines`"),
        ("path = \"../{project}\"", "is the project root"),
        ("path = \"..\"", "contains the project root"),
        ("path = \".sluice\"", "is the state folder"),
        (
            "table = \"_quarantine\"",
            "contains the quarantine of job `flights`",
        ),
        ("table = \"flights\"", "is the target of job `flights`"),
        (
            "path = \"warehouse/flights/origin=JFK\"",
            "lies inside the target of job `flights`",
        ),
    ];
    for (location, expected) in cases {
        let w = Workdir::project();
        let before = w.read("sluice.toml");
        let name = w.path().file_name().unwrap().to_string_lossy().to_string();
        let location = location.replace("{project}", &name);
        let line = carriers_targeting(&w, &location);
        let out = w.run(&["validate"]);
        assert_eq!(out.status.code(), Some(2), "{location}: {}", show(&out));
        let err = stderr(&out);
        assert!(err.contains(expected), "{location}: {err}");
        assert!(
            err.contains(&format!("jobs/carriers.toml:{line}:")),
            "{location}: {err}"
        );
        // `run` refuses it too, before touching anything.
        let out = w.run(&["run", "carriers"]);
        assert_eq!(out.status.code(), Some(2), "{location}: {}", show(&out));
        assert_eq!(w.read("sluice.toml"), before);
        assert!(w
            .path()
            .join("samples/nycflights13/airlines.csv.gz")
            .is_file());
    }
}

#[test]
fn a_target_path_with_an_unset_variable_is_refused_at_its_line() {
    let w = Workdir::project();
    let line = carriers_targeting(&w, "path = \"${env:SLUICE_TEST_UNSET_DIR}/carriers\"");
    for args in [&["validate"][..], &["run", "carriers"][..]] {
        let out = w
            .sluice(args)
            .env_remove("SLUICE_TEST_UNSET_DIR")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("jobs/carriers.toml:{line}:")),
            "{err}"
        );
        assert!(err.contains("SLUICE_TEST_UNSET_DIR"), "{err}");
    }
}

#[test]
fn settings_that_cannot_work_are_refused_with_their_line() {
    // (file, text replaced, replacement, expected message)
    let cases = [
        (
            "sluice.toml",
            "batch_size = 8192",
            "batch_size = 0",
            "batch_size = 0 is outside",
        ),
        (
            "sluice.toml",
            "batch_size = 8192",
            "batch_size = 9223372036854775807",
            "is outside 1..=1048576",
        ),
        (
            "sluice.toml",
            "batch_size = 8192",
            "batch_size = 8192\nmax_record_bytes = 10",
            "max_record_bytes = 10 is outside",
        ),
        (
            "jobs/carriers.toml",
            "fail_below = 1\n",
            "fail_below = 1\nfail_above = 0\n",
            "fail_below (1) is above fail_above (0)",
        ),
    ];
    for (file, find, replacement, expected) in cases {
        let w = Workdir::project();
        let text = w.read(file);
        assert!(text.contains(find), "{file} has no `{find}`");
        w.write(file, &text.replacen(find, replacement, 1));
        let out = w.run(&["validate"]);
        assert_eq!(out.status.code(), Some(2), "{replacement}: {}", show(&out));
        let err = stderr(&out);
        assert!(err.contains(expected), "{replacement}: {err}");
        assert!(err.contains(&format!("{file}:")), "{replacement}: {err}");
    }
    // `enum = []` in a model.
    let w = Workdir::project();
    let model = w.read("mappings/canonical/carrier.toml");
    let field = model.lines().find(|l| l.starts_with("[fields.")).unwrap();
    w.write(
        "mappings/canonical/carrier.toml",
        &model.replacen(field, &format!("{field}\nenum = []"), 1),
    );
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).contains("`enum = []` allows no value"),
        "{}",
        show(&out)
    );
}

#[test]
fn validate_reports_every_one_of_many_problems() {
    // 20,000 unknown keys in one job: each is reported, in time linear in their number.
    let w = Workdir::project();
    let mut job = w.read("jobs/carriers.toml");
    job.push_str("\n[retry]\n");
    for i in 0..20_000 {
        job.push_str(&format!("unknown_{i} = 1\n"));
    }
    w.write("jobs/carriers.toml", &job);
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).contains("20000 problems found"),
        "{}",
        &stderr(&out)[..2000.min(stderr(&out).len())]
    );
}

#[test]
fn secrets_stay_redacted_at_every_log_level() {
    let w = Workdir::project();
    // A credential (a connection's password) that also appears in a path, which DataFusion's
    // debug log prints.
    let p = w.read("sluice.toml")
        + "\n[connections.ops]\nkind = \"postgres\"\nurl = \"postgres://loader:${env:SLUICE_TEST_DIR}@db/ops\"\n";
    w.write("sluice.toml", &p);
    let j = w.read("jobs/carriers.toml").replace(
        "table = \"carriers\"",
        "path = \"${env:SLUICE_TEST_DIR}/carriers\"",
    );
    w.write("jobs/carriers.toml", &j);
    for level in ["debug", "trace"] {
        let out = w
            .sluice(&["run", "carriers"])
            .env("SLUICE_TEST_DIR", "hunter2-dir")
            .env("SLUICE_LOG", level)
            .output()
            .unwrap();
        let all = show(&out);
        assert_eq!(out.status.code(), Some(0), "{all}");
        assert!(w.path().join("hunter2-dir/carriers").is_dir());
        assert!(
            all.contains("DEBUG"),
            "SLUICE_LOG={level} logged nothing: {all}"
        );
        assert!(!all.contains("hunter2"), "secret leaked at {level}:\n{all}");
    }
}

#[test]
fn sources_read_by_glob_leave_folders_beside_them_free_for_targets() {
    // `*.csv` starts at the project root and `warehouse/*/part-*.parquet` reads every table:
    // neither makes the folders under them sources.
    let w = Workdir::project();
    w.write("top.csv", "carrier,name\nAA,American\n");
    w.write("warehouse/stage/carriers.csv", "carrier,name\nDL,Delta\n");
    let job = w
        .read("jobs/carriers.toml")
        .replace("samples/nycflights13/airlines.csv.gz", "*.csv");
    w.write("jobs/carriers.toml", &job);
    let downstream = job
        .replace("\"*.csv\"", "\"warehouse/*/carriers*.csv\"")
        .replace("table = \"carriers\"", "table = \"carriers_all\"");
    w.write("jobs/carriers_all.toml", &downstream);
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    // But a target folder holding files the glob matches is refused when the run starts.
    let job = job
        .replace("\"*.csv\"", "\"data/**/*.csv\"")
        .replace("table = \"carriers\"", "path = \"data/out\"");
    w.write("jobs/carriers.toml", &job);
    w.write("data/in/a.csv", "carrier,name\nAA,American\n");
    w.write("data/out/b.csv", "carrier,name\nDL,Delta\n");
    let out = w.run(&["run", "carriers"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).contains("contains data/out/b.csv, a file of source `airlines`"),
        "{}",
        show(&out)
    );
    assert!(w.path().join("data/out/b.csv").is_file());
}

#[test]
fn a_parsed_csv_column_into_text_or_decimal_hints_at_declaring_its_type() {
    let w = Workdir::project();
    let mapping = "mappings/nycflights13_to_airport.toml";
    let m = w.read(mapping).replace("name = \"name\"", "name = \"tz\"");
    w.write(mapping, &m);
    let model = "mappings/canonical/airport.toml";
    let decimal = w.read(model).replacen(
        "[fields.latitude]\ntype = \"float64\"",
        "[fields.latitude]\ntype = \"decimal(9,6)\"",
        1,
    );
    w.write(model, &decimal);
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("`airports.tz` is parsed as Int64 from the CSV text; declare its type in the job instead: `[sources.airports] columns = { tz = \"string\" }`"),
        "{err}"
    );
    assert!(err.contains("`08123` keeps its zero"), "{err}");
    assert!(
        err.contains("`[sources.airports] columns = { lat = \"decimal(9,6)\" }`, so each value parses exactly as a decimal"),
        "{err}"
    );
    assert!(!err.contains("CAST(<expression> AS VARCHAR)"), "{err}");
    // Following the hint fixes both.
    let job = w.read("jobs/airports.toml").replace(
        "null_values = [\"\", \"NA\"]\n",
        "null_values = [\"\", \"NA\"]\ncolumns = { tz = \"string\", lat = \"decimal(9,6)\" }\n",
    );
    w.write("jobs/airports.toml", &job);
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

#[test]
fn misspelled_csv_columns_get_a_did_you_mean_written_as_it_must_be_typed() {
    let w = Workdir::project();
    w.write(
        "samples/airlines.csv",
        "Carrier,Full Name\nUA,United Air Lines Inc.\n",
    );
    let job = w
        .read("jobs/carriers.toml")
        .replace(
            "samples/nycflights13/airlines.csv.gz",
            "samples/airlines.csv",
        )
        .replace(
            "path = \"samples/airlines.csv\"\n",
            "path = \"samples/airlines.csv\"\ncolumns = { carier = \"string\" }\n",
        );
    w.write("jobs/carriers.toml", &job);
    // A declared column the file does not have: at its line in the job, with the near name.
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    let line = job.lines().position(|l| l.contains("carier")).unwrap() + 1;
    assert!(
        err.contains(&format!("jobs/carriers.toml:{line}:")),
        "{err}"
    );
    assert!(
        err.contains("`columns` declares `carier`, which the file does not have; its columns: Carrier, \"Full Name\""),
        "{err}"
    );
    assert!(err.contains("did you mean `Carrier`?"), "{err}");

    // An unquoted mixed-case name in an expression: the suggestion is quoted.
    w.write(
        "jobs/carriers.toml",
        &job.replace("columns = { carier = \"string\" }\n", ""),
    );
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("unknown column `carrier`"), "{err}");
    assert!(
        err.contains("did you mean `airlines.\"Carrier\"`?"),
        "{err}"
    );
    assert!(err.contains("airlines.\"Full Name\""), "{err}");
}

#[test]
fn a_path_from_the_environment_is_shown_as_it_resolves_everywhere() {
    let w = Workdir::project();
    std::fs::create_dir_all(w.path().join("in")).unwrap();
    std::fs::copy(
        w.path().join("samples/nycflights13/airlines.csv.gz"),
        w.path().join("in/airlines.csv.gz"),
    )
    .unwrap();
    let p = w.read("sluice.toml").replace(
        "warehouse = \"warehouse\"",
        "warehouse = \"${env:SLUICE_TEST_WH}\"",
    );
    w.write("sluice.toml", &p);
    let j = w.read("jobs/carriers.toml").replace(
        "samples/nycflights13/airlines.csv.gz",
        "${env:SLUICE_TEST_IN}/airlines.csv.gz",
    );
    w.write("jobs/carriers.toml", &j);
    let m = w.read("mappings/nycflights13_to_carrier.toml")
        + "\n[[rule]]\nname = \"reject_ua\"\ncheck = \"carrier_code <> 'UA'\"\n";
    w.write("mappings/nycflights13_to_carrier.toml", &m);
    let run = |args: &[&str]| {
        w.sluice(args)
            .env("SLUICE_TEST_WH", "lake")
            .env("SLUICE_TEST_IN", "in")
            .output()
            .unwrap()
    };
    let out = run(&["run", "carriers", "--json"]);
    let all = show(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!all.contains("***"), "{all}");
    let r = report(&out);
    assert_eq!(r["outputs"][0]["path"], "lake/carriers", "{r}");
    assert!(
        r["outputs"][1]["path"]
            .as_str()
            .unwrap()
            .starts_with("lake/_quarantine/carriers/"),
        "{r}"
    );
    // The quarantine records the source file as read.
    let q = rows(&query(
        &w.path().join("lake/_quarantine/carriers"),
        "SELECT DISTINCT source_file FROM t",
    ));
    assert_eq!(q, vec!["in/airlines.csv.gz".to_string()]);
    // An unset variable in `warehouse` is refused at its line.
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    let line = p.lines().position(|l| l.starts_with("warehouse")).unwrap() + 1;
    assert!(err.contains(&format!("sluice.toml:{line}:")), "{err}");
    assert!(
        err.contains("environment variable `SLUICE_TEST_WH` is not set"),
        "{err}"
    );
}

#[test]
fn a_broken_file_stops_only_the_jobs_that_use_it() {
    let w = Workdir::project();
    // The airports mapping is broken; carriers does not use it.
    let m = w.read("mappings/nycflights13_to_airport.toml") + "\nnot toml at all [\n";
    w.write("mappings/nycflights13_to_airport.toml", &m);
    let out = w.run(&["run", "carriers"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: files that job `carriers` does not use have problems"),
        "{err}"
    );
    let line = m.lines().count();
    assert!(
        err.contains(&format!("mappings/nycflights13_to_airport.toml:{line}:")),
        "{err}"
    );
    assert!(w.path().join("warehouse/carriers").is_dir());
    // A job that uses it stops, and validate still reports it.
    let out = w.run(&["run", "airports"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

/// A source's kind (`format`, or `connection`) decides its keys: each key of another kind is
/// named with the kind it belongs to, at its own line, together with a misspelled key and a
/// key of the wrong kind inside `incremental`, all in one run of `validate`.
#[test]
fn a_parquet_source_reports_every_key_of_another_kind_at_its_line() {
    let w = Workdir::project();
    w.write(
        "jobs/carriers_pq.toml",
        r#"mapping = "nycflights13_to_carrier"

[sources.airlines]
format = "parquet"
path = "samples/airlines.parquet"
delimiter = ";"
table = "public.airlines"
compresion = "gzip"
incremental = { column = "updated_at" }

[target]
format = "parquet"
table = "carriers_pq"
mode = "overwrite"
"#,
    );
    let out = w.run(&["validate", "jobs/carriers_pq.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    for (line, message) in [
        (6, "`delimiter` applies only to CSV sources"),
        (7, "`table` applies only to database sources"),
        (8, "unknown key `compresion`"),
        (9, "`incremental.column` applies only to database sources"),
    ] {
        assert_reported_at(&err, "jobs/carriers_pq.toml", line, message);
    }
    assert!(err.contains("4 problems found"), "{err}");
}

/// A database source rejects the keys of file sources, naming them as such.
#[test]
fn a_database_source_names_file_keys_as_file_only() {
    let w = Workdir::project();
    w.write(
        "jobs/carriers_db.toml",
        r#"mapping = "nycflights13_to_carrier"

[sources.airlines]
connection = "warehouse"
table = "public.airlines"
path = "samples/airlines.csv"
incremental = { files = "new" }

[target]
format = "parquet"
table = "carriers_db"
mode = "append"
"#,
    );
    let out = w.run(&["validate", "jobs/carriers_db.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("`path` applies only to file sources"), "{err}");
    assert!(
        err.contains("`incremental.files` applies only to file sources"),
        "{err}"
    );
}

/// A source whose kind cannot be told (`format` misspelled, no `connection`) still gets its
/// misspelling named, and a key of the other kind inside `incremental` is one error, not two.
#[test]
fn a_misspelled_format_is_named_and_a_foreign_incremental_key_is_one_error() {
    let w = Workdir::project();
    w.write(
        "jobs/carriers_typo.toml",
        r#"mapping = "nycflights13_to_carrier"

[sources.airlines]
fromat = "csv"
path = "samples/airlines.csv"

[sources.planes]
format = "csv"
path = "samples/planes.csv"
incremental = { column = "year" }

[target]
format = "parquet"
table = "carriers_typo"
mode = "append"
"#,
    );
    let out = w.run(&["validate", "jobs/carriers_typo.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("unknown key `fromat`"), "{err}");
    assert!(err.contains("did you mean `format`?"), "{err}");
    assert!(err.contains("missing required key `format`"), "{err}");
    assert!(
        err.contains("`incremental.column` applies only to database sources"),
        "{err}"
    );
    assert!(!err.contains("missing required key `files`"), "{err}");
    assert!(err.contains("3 problems found"), "{err}");
}

/// A target's kind (`format`, or `connection`) decides its keys, as a source's does: each key
/// of another kind is named with the kinds it belongs to, at its own line, together with a
/// misspelled key and a mode the kind cannot load, all in one run of `validate`.
#[test]
fn a_parquet_target_reports_every_key_of_another_kind_at_its_line() {
    let w = Workdir::project();
    w.write(
        "jobs/carriers_keys.toml",
        r#"mapping = "nycflights13_to_carrier"

[sources.airlines]
format = "csv"
path = "samples/nycflights13/airlines.csv.gz"

[target]
format = "parquet"
table = "carriers_keys"
mode = "overwrite"
track = ["name"]
replace_where = "carrier = 'AA'"
on_schema_change = "add_columns"
partiton_by = ["carrier"]
"#,
    );
    let out = w.run(&["validate", "jobs/carriers_keys.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    for (line, message) in [
        (11, "`track` applies only to database targets"),
        (12, "`replace_where` applies only to Delta targets"),
        (
            13,
            "`on_schema_change` applies only to database and Delta targets",
        ),
        (14, "unknown key `partiton_by`"),
    ] {
        assert_reported_at(&err, "jobs/carriers_keys.toml", line, message);
    }
    assert!(err.contains("did you mean `partition_by`?"), "{err}");
    assert!(err.contains("or set `format = \"delta\"`"), "{err}");
    assert!(err.contains("4 problems found"), "{err}");

    // Without the misspelling the entry is read, so its values are checked in the same run.
    let job = w.read("jobs/carriers_keys.toml");
    let job = job
        .replace("mode = \"overwrite\"", "mode = \"merge\"")
        .replace("partiton_by = [\"carrier\"]\n", "");
    w.write("jobs/carriers_keys.toml", &job);
    let out = w.run(&["validate", "jobs/carriers_keys.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("jobs/carriers_keys.toml:10:1"), "{err}");
    assert!(
        err.contains("`mode = \"merge\"` needs a Delta or database target"),
        "{err}"
    );
    assert!(err.contains("4 problems found"), "{err}");
}

/// A Delta target accepts the keys Delta has (`replace_where` with `overwrite`) and names the
/// database-only ones; a database target names the file-only ones.
#[test]
fn delta_and_database_targets_name_the_keys_of_the_other_kinds() {
    let w = Workdir::project();
    w.write(
        "jobs/carriers_delta.toml",
        r#"mapping = "nycflights13_to_carrier"

[sources.airlines]
format = "csv"
path = "samples/nycflights13/airlines.csv.gz"

[target]
format = "delta"
table = "carriers_delta"
mode = "overwrite"
replace_where = "carrier = 'AA'"
track = ["name"]
compression = "snappy"
"#,
    );
    w.write(
        "jobs/carriers_db_keys.toml",
        r#"mapping = "nycflights13_to_carrier"

[sources.airlines]
format = "csv"
path = "samples/nycflights13/airlines.csv.gz"

[target]
connection = "warehouse_pg"
table = "carriers_copy"
mode = "merge"
partition_by = ["carrier"]
properties = { "delta.appendOnly" = "false" }
"#,
    );
    let out = w.run(&["validate", "jobs/carriers_delta.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("jobs/carriers_delta.toml:12:1"), "{err}");
    assert!(
        err.contains("`track` applies only to database targets"),
        "{err}"
    );
    assert!(!err.contains("replace_where"), "{err}");
    // delta-rs writes the table's files, so the Parquet folder's file settings do not apply.
    assert!(err.contains("jobs/carriers_delta.toml:13:1"), "{err}");
    assert!(
        err.contains("`compression` applies only to Parquet folders"),
        "{err}"
    );
    assert!(err.contains("2 problems found"), "{err}");

    let out = w.run(&["validate", "jobs/carriers_db_keys.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("jobs/carriers_db_keys.toml:11:1"), "{err}");
    assert!(
        err.contains("`partition_by` applies only to Parquet targets"),
        "{err}"
    );
    assert!(err.contains("jobs/carriers_db_keys.toml:12:1"), "{err}");
    assert!(
        err.contains("`properties` applies only to Delta targets"),
        "{err}"
    );
    assert!(err.contains("a database target names its `table`"), "{err}");
}

/// A file target's Parquet settings are checked where they are written: a level outside the
/// codec's range, a level for a codec without levels, zero rows, and a file size limit on a
/// partitioned folder.
#[test]
fn parquet_file_settings_out_of_range_are_reported_at_their_line() {
    let w = Workdir::project();
    let job = |target: &str| {
        format!(
            "mapping = \"nycflights13_to_carrier\"\n\n[sources.airlines]\nformat = \"csv\"\npath = \"samples/nycflights13/airlines.csv.gz\"\n\n[target]\nformat = \"parquet\"\ntable = \"carriers_files\"\nmode = \"overwrite\"\n{target}"
        )
    };
    for (target, line, message) in [
        (
            "compression_level = 30\n",
            11,
            "30 is not a zstd level: write 1 to 22",
        ),
        (
            "compression = \"snappy\"\ncompression_level = 3\n",
            12,
            "`snappy` has no compression level",
        ),
        (
            "row_group_size = 0\n",
            11,
            "`row_group_size` must be at least 1 (rows)",
        ),
        (
            "partition_by = [\"carrier_code\"]\nmax_rows_per_file = 1000\n",
            12,
            "`max_rows_per_file` applies to targets without `partition_by`",
        ),
        ("compression = \"lzo\"\n", 11, "unknown value `lzo`"),
    ] {
        w.write("jobs/carriers_files.toml", &job(target));
        let out = w.run(&["validate", "jobs/carriers_files.toml"]);
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
        let err = stderr(&out);
        assert_reported_at(&err, "jobs/carriers_files.toml", line, message);
    }
    w.write(
        "jobs/carriers_files.toml",
        &job("compression = \"gzip\"\ncompression_level = 9\nrow_group_size = 50000\n"),
    );
    let out = w.run(&["validate", "jobs/carriers_files.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

/// A target whose kind cannot be told (`format` misspelled, no `connection`) still gets its
/// misspelling named, beside the missing `format`.
#[test]
fn a_target_with_a_misspelled_format_names_the_misspelling() {
    let w = Workdir::project();
    w.write(
        "jobs/carriers_fromat.toml",
        "mapping = \"nycflights13_to_carrier\"\n\n[sources.airlines]\nformat = \"csv\"\npath = \"samples/nycflights13/airlines.csv.gz\"\n\n[target]\nfromat = \"parquet\"\ntable = \"carriers_fromat\"\nmode = \"overwrite\"\n",
    );
    let out = w.run(&["validate", "jobs/carriers_fromat.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("jobs/carriers_fromat.toml:8:1"), "{err}");
    assert!(err.contains("unknown key `fromat`"), "{err}");
    assert!(err.contains("did you mean `format`?"), "{err}");
    assert!(err.contains("missing required key `format`"), "{err}");
    assert!(err.contains("2 problems found"), "{err}");
}
