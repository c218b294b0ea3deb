//! The quality engine on real rows (nycflights13): rule actions, null policies, duplicate
//! keys, referential integrity, malformed CSV records, dataset checks and the quality history.
//!
//! Expected values are computed here from the raw CSV files with the csv crate, independently
//! of the engine.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;

use crate::common::{query, repo, report, rows, show, Workdir};

/// The rows of a gzipped sample CSV as maps from column to raw text.
fn sample(name: &str) -> (Vec<String>, Vec<HashMap<String, String>>) {
    let path = repo().join("samples/nycflights13").join(name);
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| {
            let rec = rec.unwrap();
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect()
        })
        .collect();
    (header, rows)
}

/// The first `n` data lines of flights.csv (plus the header), as text.
fn flights_head(n: usize) -> String {
    let path = repo().join("samples/nycflights13/flights.csv.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text.lines().take(n + 1).map(|l| format!("{l}\n")).collect()
}

/// The `rules[]` entry of a run report named `name`.
fn rule(r: &serde_json::Value, name: &str) -> serde_json::Value {
    r["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["rule"] == name)
        .unwrap_or_else(|| panic!("no rule {name}: {r}"))
        .clone()
}

/// The `checks[]` entry of a run report named `name`.
fn check(r: &serde_json::Value, name: &str) -> serde_json::Value {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {r}"))
        .clone()
}

/// What the airport model and mapping quarantine, decided from the raw row: a time zone that
/// is missing (`""`, `NA`, `\N`) or an FAA code that does not match the model's pattern.
fn airport_quarantined(row: &HashMap<String, String>) -> bool {
    let pattern = regex::Regex::new("^[A-Z0-9]{3,4}$").unwrap();
    tz_missing(row) || !pattern.is_match(&row["faa"])
}

fn tz_missing(row: &HashMap<String, String>) -> bool {
    ["", "NA", "\\N"].contains(&row["tzone"].as_str())
}

const AIRPORT_MAPPING: &str = "mappings/nycflights13_to_airport.toml";

/// Adds rules to the airport mapping, and lets the job load any number of rows.
fn with_airport_rules(w: &Workdir, rules: &str) {
    let base = w.read(AIRPORT_MAPPING);
    w.write(AIRPORT_MAPPING, &format!("{base}\n{rules}"));
    let job = w
        .read("jobs/airports.toml")
        .replace("fail_below = 1000", "fail_below = 1");
    w.write("jobs/airports.toml", &job);
}

#[test]
fn drop_and_flag_actions_on_real_airports() {
    let w = Workdir::project();
    with_airport_rules(
        &w,
        r#"
[[rule]]
name = "below_sea_level"
check = "altitude_m >= 0"
action = "flag"

[[rule]]
name = "outside_the_americas"
check = "time_zone LIKE 'America/%'"
action = "drop"
"#,
    );
    let out = w.run(&["run", "airports", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let r = report(&out);

    let (_, airports) = sample("airports.csv.gz");
    let quarantined: Vec<_> = airports.iter().filter(|a| airport_quarantined(a)).collect();
    let dropped: Vec<_> = airports
        .iter()
        .filter(|a| !airport_quarantined(a) && !a["tzone"].starts_with("America/"))
        .collect();
    let loaded: Vec<_> = airports
        .iter()
        .filter(|a| !airport_quarantined(a) && a["tzone"].starts_with("America/"))
        .collect();
    let flagged: BTreeSet<String> = loaded
        .iter()
        .filter(|a| a["alt"].parse::<f64>().unwrap() < 0.0)
        .map(|a| a["faa"].clone())
        .collect();
    assert!(
        !dropped.is_empty() && !flagged.is_empty(),
        "fixture has both"
    );

    assert_eq!(r["rows"]["read"], airports.len() as u64);
    assert_eq!(r["rows"]["quarantined"], quarantined.len() as u64);
    assert_eq!(r["rows"]["dropped"], dropped.len() as u64);
    assert_eq!(r["rows"]["written"], loaded.len() as u64);
    assert_eq!(r["rows"]["flagged"], flagged.len() as u64);
    let rule = |name: &str| rule(&r, name);
    assert_eq!(rule("below_sea_level")["action"], "flag");
    assert_eq!(rule("below_sea_level")["status"], "warn");
    assert_eq!(rule("outside_the_americas")["action"], "drop");

    // Flagged rows are loaded with the rule's name in _dq_flags; the others have none.
    let table = w.path().join("warehouse/airports");
    let got: BTreeSet<String> = rows(&query(
        &table,
        "SELECT faa_code FROM t WHERE array_length(_dq_flags) > 0 AND _dq_flags[1] = 'below_sea_level'",
    ))
    .into_iter()
    .collect();
    assert_eq!(got, flagged);
    // Dropped rows are neither loaded nor quarantined.
    let q = rows(&query(
        &w.path().join("warehouse/_quarantine/airports"),
        "SELECT count(*) FROM t",
    ));
    assert_eq!(q, vec![quarantined.len().to_string()]);
}

#[test]
fn a_fail_rule_stops_the_run_and_loads_nothing() {
    let w = Workdir::project();
    with_airport_rules(
        &w,
        r#"
[[rule]]
name = "below_sea_level"
check = "altitude_m >= 0"
reason = "{faa_code} lies {altitude_m} m below sea level"
action = "fail"
"#,
    );
    let out = w.run(&["run", "airports", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let r = report(&out);
    assert_eq!(r["status"], "check_failed");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("rule `below_sea_level`"), "{msg}");
    assert!(msg.contains("airports.csv.gz:"), "{msg}");
    assert!(!w.path().join("warehouse/airports").exists());
    // The rows seen so far, including the failing one, are in the quarantine.
    let q = rows(&query(
        &w.path().join("warehouse/_quarantine/airports"),
        "SELECT count(*) FROM (SELECT unnest(failed_rules) AS f FROM t) WHERE f['rule'] = 'below_sea_level'",
    ));
    assert_ne!(q, vec!["0".to_string()]);
}

/// Independent expectation for `unique = ["time_zone"]` keeping the greatest FAA code among
/// the rows that pass the other rules.
fn kept_per_zone(airports: &[HashMap<String, String>]) -> BTreeMap<String, String> {
    let mut kept: BTreeMap<String, String> = BTreeMap::new();
    for a in airports.iter().filter(|a| !airport_quarantined(a)) {
        let e = kept.entry(a["tzone"].clone()).or_default();
        if a["faa"] > *e {
            *e = a["faa"].clone();
        }
    }
    kept
}

#[test]
fn duplicate_keys_keep_the_first_row_by_the_declared_order() {
    let w = Workdir::project();
    with_airport_rules(
        &w,
        r#"
[[rule]]
name = "one_airport_per_zone"
unique = ["time_zone"]
order_by = ["faa_code DESC"]
"#,
    );
    let out = w.run(&["run", "airports", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let (_, airports) = sample("airports.csv.gz");
    let kept = kept_per_zone(&airports);
    let got: BTreeMap<String, String> = rows(&query(
        &w.path().join("warehouse/airports"),
        "SELECT time_zone || '=' || faa_code FROM t",
    ))
    .into_iter()
    .map(|s| {
        let (a, b) = s.split_once('=').unwrap();
        (a.to_string(), b.to_string())
    })
    .collect();
    assert_eq!(got, kept);
    let r = report(&out);
    let candidates = airports.iter().filter(|a| !airport_quarantined(a)).count();
    let dup = rule(&r, "one_airport_per_zone");
    assert_eq!(dup["failed_rows"], (candidates - kept.len()) as u64);
    // The reason names the key and the kept row's line.
    let sample = dup["samples"][0].as_str().unwrap();
    assert!(
        sample.starts_with("duplicate key (time_zone=") && sample.contains("is kept"),
        "{sample}"
    );
}

#[test]
fn null_policy_decides_whether_a_null_key_is_a_duplicate() {
    let (_, airports) = sample("airports.csv.gz");
    let pattern = regex::Regex::new("^[A-Z0-9]{3,4}$").unwrap();
    let nulls = airports
        .iter()
        .filter(|a| tz_missing(a) && pattern.is_match(&a["faa"]))
        .count();
    assert!(nulls > 0, "fixture has airports without a time zone");
    let mut failed = Vec::new();
    for policy in ["pass", "fail"] {
        let w = Workdir::project();
        // Without the shipped time_zone_known rule, null zones reach the unique rule.
        let base = w.read(AIRPORT_MAPPING);
        let cut = base.find("[[rule]]").unwrap();
        w.write(
            AIRPORT_MAPPING,
            &format!(
                "{}\n[[rule]]\nname = \"one_airport_per_zone\"\nunique = [\"time_zone\"]\nnulls = \"{policy}\"\n",
                &base[..cut]
            ),
        );
        let job = w
            .read("jobs/airports.toml")
            .replace("fail_below = 1000", "fail_below = 1");
        w.write("jobs/airports.toml", &job);
        let out = w.run(&["run", "airports", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let r = report(&out);
        failed.push(
            rule(&r, "one_airport_per_zone")["failed_rows"]
                .as_u64()
                .unwrap(),
        );
    }
    assert_eq!(failed[1] - failed[0], nulls as u64);
}

#[test]
fn references_fail_rows_whose_value_is_missing_from_a_source_or_a_loaded_table() {
    let (_, airports) = sample("airports.csv.gz");
    let faa: BTreeSet<&str> = airports.iter().map(|a| a["faa"].as_str()).collect();
    let head = flights_head(5000);
    let mut r = csv::Reader::from_reader(head.as_bytes());
    let missing = r
        .records()
        .filter(|rec| !faa.contains(&rec.as_ref().unwrap()[13]))
        .count();
    assert!(missing > 0, "fixture has unknown destinations");

    for (name, target) in [
        (
            "dest_in_source",
            r#"{ source = "airports", column = "faa" }"#,
        ),
        (
            "dest_in_table",
            r#"{ table = "airports", column = "faa_code" }"#,
        ),
    ] {
        let w = flights_slice(
            5000,
            &format!(
                "[[rule]]\nname = \"{name}\"\nfield = \"destination\"\nreferences = {target}\n"
            ),
        );
        if name == "dest_in_table" {
            let out = w.run(&["run", "airports"]);
            assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        }
        let out = w.run(&["run", "flights", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let rep = report(&out);
        assert_eq!(rule(&rep, name)["failed_rows"], missing as u64, "{name}");
    }
}

#[test]
fn malformed_records_are_quarantined_with_line_and_raw_text() {
    let head = flights_head(1000);
    let mut lines: Vec<String> = head.lines().map(String::from).collect();
    // Line numbers are 1-based with the header on line 1.
    let short = lines[9].rsplit_once(',').unwrap().0.to_string();
    lines[9] = short.clone();
    // A quote in the middle of the carrier code: `"M"Q`.
    let mut fields: Vec<String> = lines[19].split(',').map(String::from).collect();
    fields[9] = format!("\"{}\"{}", &fields[9][..1], &fields[9][1..]);
    lines[19] = fields.join(",");
    let broken_quote = lines[19].clone();
    let mut bytes: Vec<u8> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if i == 29 {
            bytes.extend_from_slice(&l.as_bytes()[..l.len() - 4]);
            bytes.extend_from_slice(b"\xff\xfe");
        } else {
            bytes.extend_from_slice(l.as_bytes());
        }
        bytes.push(b'\n');
    }

    let clean = flights_project(head.as_bytes());
    let bad = flights_project(&bytes);
    let out_clean = clean.run(&["run", "flights", "--json"]);
    assert_eq!(out_clean.status.code(), Some(0), "{}", show(&out_clean));
    let out = bad.run(&["run", "flights", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let (rc, rb) = (report(&out_clean), report(&out));
    assert_eq!(rb["rows"]["read"], 1000);
    // Exactly the three damaged lines are lost to the load.
    let loaded = |w: &Workdir| {
        rows(&query(
            &w.path().join("warehouse/flights"),
            "SELECT CAST(scheduled_departure AS VARCHAR) || carrier_code || CAST(flight_number AS VARCHAR) AS id FROM t ORDER BY id",
        ))
    };
    let (lc, lb) = (loaded(&clean), loaded(&bad));
    let lost: Vec<&String> = lc.iter().filter(|id| !lb.contains(id)).collect();
    assert_eq!(
        rb["rows"]["written"].as_u64().unwrap() + lost.len() as u64,
        rc["rows"]["written"].as_u64().unwrap()
    );
    assert!(lost.len() <= 3 && lb.iter().all(|id| lc.contains(id)));
    let q = rows(&query(
        &bad.path().join("warehouse/_quarantine/flights"),
        "SELECT CAST(source_line AS VARCHAR) || '|' || f['rule'] || '|' || source_values
           FROM (SELECT source_line, source_values, unnest(failed_rules) AS f FROM t)
           WHERE f['rule'] = 'malformed.flights' ORDER BY source_line",
    ));
    assert_eq!(q.len(), 3, "{q:?}");
    let raw = |s: &str| serde_json::to_string(s).unwrap();
    assert_eq!(
        q[0],
        format!("10|malformed.flights|{{\"_raw\":{}}}", raw(&short))
    );
    assert!(q[1].starts_with("20|malformed.flights|"), "{}", q[1]);
    assert!(q[1].contains(&raw(&broken_quote)[1..20]), "{}", q[1]);
    assert!(q[2].starts_with("30|malformed.flights|"), "{}", q[2]);

    // on_malformed = "fail": the run stops at the first bad record with its position.
    let job = bad.read("jobs/flights.toml").replace(
        "null_values = [\"\", \"NA\"]\n",
        "null_values = [\"\", \"NA\"]\non_malformed = \"fail\"\n",
    );
    bad.write("jobs/flights.toml", &job);
    let out = bad.run(&["run", "flights"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = show(&out);
    assert!(
        err.contains("samples/head/flights.csv:10: malformed record: expected 19 fields, found 18"),
        "{err}"
    );
    assert!(err.contains("byte offset"), "{err}");
}

#[test]
fn a_custom_check_failing_on_the_data_fails_that_check_at_its_line_and_the_others_are_measured() {
    let w = Workdir::project();
    let job = w.read("jobs/airports.toml");
    let job = format!(
        "{job}
[checks.null_ratio]
altitude_m = {{ warn_above = 0.5 }}

[[checks.sql]]
name = \"names_as_numbers\"
expr = \"sum(CAST(name AS INT))\"
fail_above = 0

[[checks.sql]]
name = \"mean_altitude_m\"
expr = \"avg(altitude_m)\"
fail_above = 10000
"
    );
    let line = 1 + job
        .lines()
        .position(|l| l.contains("CAST(name AS INT)"))
        .unwrap();
    w.write("jobs/airports.toml", &job);
    let out = w.run(&["run", "airports", "--json"]);
    // A failed check: the run completes, the target is not committed.
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let r = report(&out);
    let failed = check(&r, "sql.names_as_numbers");
    assert_eq!(failed["status"], "fail", "{failed}");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("jobs/airports.toml:{line}")),
        "the check's file and line: {message}"
    );
    assert!(message.contains("Cannot cast"), "the data error: {message}");
    assert!(!show(&out).contains("bug in Sluice"), "{}", show(&out));
    // The other checks are still measured on the loaded rows.
    assert_eq!(check(&r, "null_ratio.altitude_m")["measured"], 0.0);
    let mean = check(&r, "sql.mean_altitude_m");
    assert_eq!(mean["status"], "pass", "{mean}");
    assert!(mean["measured"].as_f64().unwrap() > 0.0, "{mean}");
    assert!(!w.path().join("warehouse/airports").exists());
}

#[test]
fn dataset_checks_measure_the_loaded_rows_and_volume_uses_history() {
    let w = Workdir::project();
    let job = w.read("jobs/airports.toml");
    w.write(
        "jobs/airports.toml",
        &format!(
            "{job}
[checks.null_ratio]
altitude_m = {{ warn_above = 0.5 }}

[checks.unique]
key = [\"time_zone\"]
warn_above = 0

[checks.volume]
runs = 3
fail_below = 0.5

[[checks.sql]]
name = \"mean_altitude_m\"
expr = \"avg(altitude_m)\"
fail_above = 10000
"
        ),
    );
    let (_, airports) = sample("airports.csv.gz");
    let loaded: Vec<_> = airports
        .iter()
        .filter(|a| !airport_quarantined(a))
        .collect();
    let mean = loaded
        .iter()
        .map(|a| a["alt"].parse::<f64>().unwrap() * 0.3048)
        .sum::<f64>()
        / loaded.len() as f64;
    let zones: BTreeSet<&str> = loaded.iter().map(|a| a["tzone"].as_str()).collect();

    for _ in 0..2 {
        let out = w.run(&["run", "airports", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let r = report(&out);
        let check = |name: &str| check(&r, name);
        assert_eq!(check("null_ratio.altitude_m")["measured"], 0.0);
        assert_eq!(check("unique")["status"], "warn");
        assert_eq!(
            check("unique")["measured"],
            (loaded.len() - zones.len()) as f64
        );
        let m = check("sql.mean_altitude_m")["measured"].as_f64().unwrap();
        assert!((m - mean).abs() < 1e-6, "{m} vs {mean}");
        assert_eq!(check("volume")["status"], "pass");
    }
    // A source with a tenth of the rows fails the volume check against that history.
    let mut text = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(w.path().join("samples/nycflights13/airports.csv.gz")).unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    let tenth: String = text
        .lines()
        .take(loaded.len() / 10)
        .map(|l| format!("{l}\n"))
        .collect();
    w.write("samples/head/airports.csv", &tenth);
    let job = w
        .read("jobs/airports.toml")
        .replace(
            "samples/nycflights13/airports.csv.gz",
            "samples/head/airports.csv",
        )
        .replace("fail_below = 1000", "fail_below = 1");
    w.write("jobs/airports.toml", &job);
    let out = w.run(&["run", "airports", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let r = report(&out);
    let volume = check(&r, "volume");
    assert_eq!(volume["status"], "fail");
    assert!(volume["measured"].as_f64().unwrap() < 0.15);

    // The history shows the three runs and the checks' values.
    let out = w.run(&["quality", "airports"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("last 3 run(s)"), "{text}");
    assert!(text.contains("check_failed"), "{text}");
    let volume_row = text.lines().find(|l| l.contains("volume")).unwrap();
    assert!(volume_row.contains(" fail "), "{volume_row}");
    let rule_row = text
        .lines()
        .find(|l| l.contains("time_zone_known"))
        .unwrap();
    assert!(rule_row.contains("rule"), "{rule_row}");
}

#[test]
fn bad_rule_and_check_declarations_are_config_errors() {
    let w = Workdir::project();
    with_airport_rules(
        &w,
        r#"
[[rule]]
name = "two_things"
check = "altitude_m > 0"
unique = ["faa_code"]

[[rule]]
name = "bad_field"
unique = ["faa"]

[actions]
"airport.faa_code.patern" = "flag"
"#,
    );
    let job = w.read("jobs/airports.toml");
    w.write(
        "jobs/airports.toml",
        &format!("{job}\n[checks.freshness]\nfield = \"name\"\nfail_after_hours = 1\n\n[checks.volume]\nruns = 0\n\n[[checks.sql]]\nname = \"per_row\"\nexpr = \"altitude_m + 1\"\n\n[[checks.sql]]\nname = \"per_row\"\nexpr = \"avg(altitude_m)\"\n"),
    );
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rule `two_things` has check and unique"),
        "{err}"
    );
    // The first mistake stops the mapping from loading; fix it to see the compile-time ones.
    let m = w
        .read(AIRPORT_MAPPING)
        .replace("unique = [\"faa_code\"]\n", "");
    w.write(AIRPORT_MAPPING, &m);
    let out = w.run(&["validate"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("names `faa`, which is not a field"), "{err}");
    assert!(err.contains("did you mean `faa_code`?"), "{err}");
    assert!(
        err.contains("no rule named `airport.faa_code.patern`"),
        "{err}"
    );
    assert!(
        err.contains("did you mean `airport.faa_code.pattern`?"),
        "{err}"
    );
    assert!(
        err.contains("freshness needs a timestamp or date field"),
        "{err}"
    );
    assert!(err.contains("`runs` must be at least 1"), "{err}");
    assert!(err.contains("check `per_row` is not an aggregate"), "{err}");
    assert!(
        err.contains("two `[[checks.sql]]` are named `per_row`"),
        "{err}"
    );
}

/// A flights project whose flights source is `data` (CSV bytes), with the sample-size checks
/// relaxed.
fn flights_project(data: &[u8]) -> Workdir {
    let w = Workdir::project();
    std::fs::create_dir_all(w.path().join("samples/head")).unwrap();
    std::fs::write(w.path().join("samples/head/flights.csv"), data).unwrap();
    let job = w
        .read("jobs/flights.toml")
        .replace(
            "samples/nycflights13/flights.csv.gz",
            "samples/head/flights.csv",
        )
        .replace("warn_below = 300000", "")
        .replace("fail_above = 0.10", "");
    w.write("jobs/flights.toml", &job);
    w
}

/// A flights project reading the first `n` rows, with an extra rule.
fn flights_slice(n: usize, rule: &str) -> Workdir {
    let w = flights_project(flights_head(n).as_bytes());
    let mapping = w.read("mappings/nycflights13_to_flight.toml");
    w.write(
        "mappings/nycflights13_to_flight.toml",
        &format!("{mapping}\n{rule}"),
    );
    w
}

#[test]
fn replay_after_a_mapping_fix_loads_exactly_the_rejected_rows_that_now_pass() {
    let strict = "[[rule]]\nname = \"short_haul\"\ncheck = \"distance_km < 2000\"\n";
    let fixed = "[[rule]]\nname = \"short_haul\"\ncheck = \"distance_km < 5000\"\n";
    let w = flights_slice(3000, strict);
    let out = w.run(&["run", "flights", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let first = report(&out);
    let run_id = first["run_id"].as_str().unwrap().to_string();

    // The fix, then the replay.
    let m = w
        .read("mappings/nycflights13_to_flight.toml")
        .replace(strict, fixed);
    w.write("mappings/nycflights13_to_flight.toml", &m);
    let out = w.run(&["replay", "flights", "--run", &run_id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let replay = report(&out);
    assert_eq!(replay["rows"]["read"], first["rows"]["quarantined"]);
    assert!(replay["rows"]["written"].as_u64().unwrap() > 0);

    // The target now holds what a fresh run with the fixed mapping loads, each row once.
    let fresh = flights_slice(3000, fixed);
    let out = fresh.run(&["run", "flights", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let fresh_report = report(&out);
    assert_eq!(
        first["rows"]["written"].as_u64().unwrap() + replay["rows"]["written"].as_u64().unwrap(),
        fresh_report["rows"]["written"].as_u64().unwrap()
    );
    let all = |w: &Workdir| {
        let mut v = rows(&query(
            &w.path().join("warehouse/flights"),
            "SELECT CAST(scheduled_departure AS VARCHAR) || carrier_code || CAST(flight_number AS VARCHAR) || COALESCE(tail_number, '') AS id FROM t",
        ));
        v.sort();
        v
    };
    assert_eq!(all(&w), all(&fresh));
    // Rows that still fail keep their original file and line.
    let still = rows(&query(
        &w.path().join("warehouse/_quarantine/flights"),
        &format!(
            "SELECT DISTINCT source_file FROM t WHERE run_id = '{}'",
            replay["run_id"].as_str().unwrap()
        ),
    ));
    assert_eq!(still, vec!["samples/head/flights.csv".to_string()]);

    // A second replay of the same run is refused: nothing loads twice.
    let out = w.run(&["replay", "flights", "--run", &run_id]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        show(&out).contains("was already replayed by run"),
        "{}",
        show(&out)
    );
    let out = w.run(&["replay", "flights", "--run", "20200101T000000Z-000000"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        show(&out).contains("has no quarantined rows"),
        "{}",
        show(&out)
    );
}

#[test]
fn sluice_test_passes_on_the_shipped_mappings_and_shows_a_readable_diff() {
    let w = Workdir::project();
    let out = w.run(&["test"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 test(s): 3 passed, 0 failed"),
        "{}",
        show(&out)
    );

    // A wrong fixture: one expected time off by a minute, one rule missing.
    let m = w
        .read("mappings/nycflights13_to_flight.toml")
        .replace(
            "scheduled_arrival = \"2013-01-01T14:19:00Z\"",
            "scheduled_arrival = \"2013-01-01T14:20:00Z\"",
        )
        .replace(
            "rules = [\"destination_known\", \"flight.scheduled_arrival.required\"]",
            "rules = [\"destination_known\"]",
        );
    w.write("mappings/nycflights13_to_flight.toml", &m);
    let out = w.run(&["test", "nycflights13_to_flight", "--junit", "junit.xml"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL  nycflights13_to_flight › local hhmm times"),
        "{text}"
    );
    assert!(
        text.contains(
            "row 1, scheduled_arrival: expected 2013-01-01T14:20:00Z, got 2013-01-01T14:19:00Z"
        ),
        "{text}"
    );
    assert!(
        text.contains("line 4: expected rules [destination_known], got [destination_known, flight.scheduled_arrival.required]"),
        "{text}"
    );
    assert!(text.contains("1 test(s): 0 passed, 1 failed"), "{text}");
    let xml = w.read("junit.xml");
    assert!(
        xml.contains("<testsuite name=\"nycflights13_to_flight\" tests=\"1\" failures=\"1\""),
        "{xml}"
    );
    assert!(
        xml.contains("<failure message=\"row 1, scheduled_arrival"),
        "{xml}"
    );

    let out = w.run(&["test", "no_such_mapping"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

#[test]
fn model_versions_are_contracts_against_what_runs_loaded() {
    let w = Workdir::project();
    let out = w.run(&["run", "carriers"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let model_path = "mappings/canonical/carrier.toml";
    let v1 = w.read(model_path);
    std::fs::write(w.path().join("old.toml"), &v1).unwrap();

    // An additive change without a version bump is refused by validate and by run.
    let added = format!("{v1}\n[fields.alliance]\ntype = \"string\"\n");
    w.write(model_path, &added);
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("carrier.toml:"), "{err}");
    assert!(
        err.contains("compared with 1.0.0, the newest version a run has loaded"),
        "{err}"
    );
    let out = w.run(&["run", "carriers"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));

    // A minor bump is right for it.
    w.write(
        model_path,
        &added.replace("version = \"1.0.0\"", "version = \"1.1.0\""),
    );
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = w.run(&["model", "diff", "old.toml", model_path]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("additive"), "{text}");

    // Removing a field is breaking: 1.1.0 is not enough, whatever the diff tool or validate.
    let removed = v1
        .replace("version = \"1.0.0\"", "version = \"1.1.0\"")
        .replace("[fields.name]", "[fields.carrier_name]");
    w.write(model_path, &removed);
    let out = w.run(&["model", "diff", "old.toml", model_path]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("breaking"), "{text}");
    assert!(text.contains("2.0.0"), "{text}");
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        show(&out).contains("bump the major version to 2.0.0"),
        "{}",
        show(&out)
    );
}

#[test]
fn replay_keeps_duplicates_of_loaded_keys_out_and_refuses_uncommitted_runs() {
    let w = Workdir::project();
    with_airport_rules(
        &w,
        "[[rule]]\nname = \"one_airport_per_zone\"\nunique = [\"time_zone\"]\n",
    );
    let out = w.run(&["run", "airports", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let first = report(&out);
    let run_id = first["run_id"].as_str().unwrap().to_string();

    // The "fix": airports without a time zone are now welcome.
    let base = w.read(AIRPORT_MAPPING);
    let start = base.find("[[rule]]\nname = \"time_zone_known\"").unwrap();
    let end = start + base[start..].find("\n\n").unwrap();
    w.write(
        AIRPORT_MAPPING,
        &format!("{}{}", &base[..start], &base[end..]),
    );
    let out = w.run(&["replay", "airports", "--run", &run_id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let replay = report(&out);

    // Loaded now: exactly the zone-less airports with a valid code. Every duplicate of a zone
    // already loaded stays in the quarantine.
    let (_, airports) = sample("airports.csv.gz");
    let pattern = regex::Regex::new("^[A-Z0-9]{3,4}$").unwrap();
    let zoneless = airports
        .iter()
        .filter(|a| tz_missing(a) && pattern.is_match(&a["faa"]))
        .count();
    assert_eq!(replay["rows"]["written"], zoneless as u64);
    let dups = rows(&query(
        &w.path().join("warehouse/airports"),
        "SELECT count(*) FROM (SELECT time_zone FROM t WHERE time_zone IS NOT NULL GROUP BY time_zone HAVING count(*) > 1)",
    ));
    assert_eq!(dups, vec!["0".to_string()]);

    // A run that did not commit is run again, not replayed.
    let job = w
        .read("jobs/airports.toml")
        .replace("fail_below = 1\n", "fail_below = 100000\n");
    w.write("jobs/airports.toml", &job);
    let out = w.run(&["run", "airports", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let failed = report(&out)["run_id"].as_str().unwrap().to_string();
    let out = w.run(&["replay", "airports", "--run", &failed]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        show(&out).contains("ended `check_failed`"),
        "{}",
        show(&out)
    );
}

/// The rule counts of a report, by rule name.
fn failed_by_rule(r: &serde_json::Value) -> BTreeMap<String, u64> {
    r["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["rule"].as_str().unwrap().to_string(),
                x["failed_rows"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn model_constraints_on_real_rows_accepted_values_ranges_and_length_let_nulls_pass() {
    let w = Workdir::project();
    let model = w
        .read("mappings/canonical/airport.toml")
        .replace(
            "[fields.time_zone]\n",
            "[fields.time_zone]\nenum = [\"America/New_York\", \"America/Chicago\", \"America/Denver\", \"America/Los_Angeles\"]\n",
        )
        .replace("[fields.name]\n", "[fields.name]\nmax_length = 30\n")
        .replace("[fields.altitude_m]\n", "[fields.altitude_m]\nmin = 0.0\n");
    w.write("mappings/canonical/airport.toml", &model);
    let job = w
        .read("jobs/airports.toml")
        .replace("fail_below = 1000", "fail_below = 1");
    w.write("jobs/airports.toml", &job);
    let out = w.run(&["run", "airports", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let got = failed_by_rule(&report(&out));

    let (_, airports) = sample("airports.csv.gz");
    let listed = [
        "America/New_York",
        "America/Chicago",
        "America/Denver",
        "America/Los_Angeles",
    ];
    // Null (missing) zones pass the enum: they are reported by time_zone_known only.
    let not_listed = airports
        .iter()
        .filter(|a| !tz_missing(a) && !listed.contains(&a["tzone"].as_str()))
        .count();
    let long = airports
        .iter()
        .filter(|a| a["name"].chars().count() > 30)
        .count();
    let below = airports
        .iter()
        .filter(|a| a["alt"].parse::<f64>().unwrap() < 0.0)
        .count();
    assert!(not_listed > 0 && long > 0 && below > 0);
    assert_eq!(got["airport.time_zone.enum"], not_listed as u64);
    assert_eq!(got["airport.name.max_length"], long as u64);
    assert_eq!(got["airport.altitude_m.min"], below as u64);
    assert_eq!(
        got["time_zone_known"],
        airports.iter().filter(|a| tz_missing(a)).count() as u64
    );

    // A date range on flights: the first 2,000 flights span 1-3 January.
    let w = flights_slice(2000, "");
    let model = w.read("mappings/canonical/flight.toml").replace(
        "[fields.flight_date]\n",
        "[fields.flight_date]\nmax = \"2013-01-02\"\n",
    );
    w.write("mappings/canonical/flight.toml", &model);
    let out = w.run(&["run", "flights", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let got = failed_by_rule(&report(&out));
    let head = flights_head(2000);
    let mut r = csv::Reader::from_reader(head.as_bytes());
    let after = r
        .records()
        .filter(|rec| rec.as_ref().unwrap()[2].parse::<u32>().unwrap() > 2)
        .count();
    assert!(after > 0);
    assert_eq!(got["flight.flight_date.max"], after as u64);
}

#[test]
fn a_cross_field_check_counts_null_results_only_with_nulls_fail() {
    let (_, airports) = sample("airports.csv.gz");
    let faa: BTreeSet<&str> = airports.iter().map(|a| a["faa"].as_str()).collect();
    let head = flights_head(3000);
    let mut r = csv::Reader::from_reader(head.as_bytes());
    // Without both delays, or without the destination's time zone, an actual time is null.
    let unknown = r
        .records()
        .filter(|rec| {
            let rec = rec.as_ref().unwrap();
            rec[5] == *"NA" || rec[8] == *"NA" || !faa.contains(&rec[13])
        })
        .count();
    assert!(unknown > 0);
    let mut failed = BTreeMap::new();
    for nulls in ["pass", "fail"] {
        let rule = format!(
            "[[rule]]\nname = \"lands_after_take_off\"\ncheck = \"actual_arrival > actual_departure\"\nnulls = \"{nulls}\"\n"
        );
        let w = flights_slice(3000, &rule);
        let out = w.run(&["run", "flights", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        failed.insert(nulls, failed_by_rule(&report(&out))["lands_after_take_off"]);
    }
    assert_eq!(failed["pass"], 0);
    assert_eq!(failed["fail"], unknown as u64);
}

/// Sets column `col` of data line `line` (1-based, header = line 1) of `lines`.
fn set_field(lines: &mut [String], line: usize, col: usize, value: &str) {
    let mut fields: Vec<String> = lines[line - 1].split(',').map(String::from).collect();
    fields[col] = value.to_string();
    lines[line - 1] = fields.join(",");
}

#[test]
fn a_row_whose_expression_fails_is_quarantined_with_the_error_and_the_rest_load() {
    let head = flights_head(1000);
    let per_hour =
        "[[rule]]\nname = \"speed_positive\"\ncheck = \"per_hour IS NULL OR per_hour > 0\"\n";
    let with_let = |w: &Workdir| {
        let m = w.read("mappings/nycflights13_to_flight.toml").replace(
            "[let]\n",
            "[let]\nper_hour = \"flights.distance * 60 / flights.air_time\"\n",
        );
        w.write(
            "mappings/nycflights13_to_flight.toml",
            &format!("{m}\n{per_hour}"),
        );
    };
    let clean = flights_project(head.as_bytes());
    with_let(&clean);
    let out_clean = clean.run(&["run", "flights", "--json"]);
    assert_eq!(out_clean.status.code(), Some(0), "{}", show(&out_clean));
    let rejected = rows(&query(
        &clean.path().join("warehouse/_quarantine/flights"),
        "SELECT CAST(source_line AS VARCHAR) FROM t",
    ));
    // Three lines the clean run loaded.
    let picked: Vec<usize> = (2..=1001)
        .filter(|l| !rejected.contains(&l.to_string()))
        .take(3)
        .collect();

    let mut lines: Vec<String> = head.lines().map(String::from).collect();
    // 30 February, which `make_date` refuses.
    set_field(&mut lines, picked[0], 1, "2");
    set_field(&mut lines, picked[0], 2, "30");
    // A departure delay that `CAST(... AS INT)` cannot hold.
    set_field(&mut lines, picked[1], 5, "99999999999");
    // Zero air time, divided by in a `[let]`.
    set_field(&mut lines, picked[2], 14, "0");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let bad = flights_project(text.as_bytes());
    with_let(&bad);
    let out = bad.run(&["run", "flights", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let (rc, rb) = (report(&out_clean), report(&out));
    assert_eq!(rb["rows"]["read"], 1000);
    assert_eq!(
        rb["rows"]["written"].as_u64().unwrap() + 3,
        rc["rows"]["written"].as_u64().unwrap(),
        "{rb}"
    );
    let q = rows(&query(
        &bad.path().join("warehouse/_quarantine/flights"),
        "SELECT CAST(source_line AS VARCHAR) || '|' || f['rule'] || '|' || f['reason']
           FROM (SELECT source_line, unnest(failed_rules) AS f FROM t)
           WHERE f['rule'] LIKE 'eval.%' ORDER BY source_line",
    ));
    assert_eq!(q.len(), 3, "{q:?}");
    let expect = |i: usize, prefix: &str, text: &str| {
        let p = format!("{}|{prefix}", picked[i]);
        assert!(
            q[i].starts_with(&p) && q[i].contains(text),
            "{} (want {p} … {text})",
            q[i]
        );
    };
    expect(
        0,
        "eval.flight_date|flight_date could not be computed: ",
        "2013, 2, 30",
    );
    expect(1, "eval.departure_delay_minutes|", "99999999999");
    expect(
        2,
        "eval.let.per_hour|per_hour could not be computed: ",
        "Divide by zero",
    );
    assert_eq!(rule(&rb, "eval.flight_date")["failed_rows"], 1, "{rb}");
}

#[test]
fn a_run_that_fails_part_way_reports_the_rows_it_read_and_its_error_on_stderr() {
    // Rule checks are not guarded per row: an integer division by zero in one stops the run.
    // The first 842 flights are on 1 January; `day - 2` is zero from the next one.
    let w = flights_slice(
        1000,
        "[[rule]]\nname = \"bad\"\ncheck = \"100 / (flights.day - 2) <> 0\"\n",
    );
    let out = w.run(&["run", "flights"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!stdout.contains("error ("), "{}", show(&out));
    assert!(stderr.contains("error (engine): "), "{}", show(&out));
    assert!(
        stderr.to_lowercase().contains("divide by zero"),
        "{}",
        show(&out)
    );
    let out = w.run(&["run", "flights", "--json"]);
    let r = report(&out);
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["rows"]["read"], 1000, "{r}");
    assert_eq!(r["rows"]["written"], 0, "{r}");
}
