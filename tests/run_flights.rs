//! The real job on the bundled nycflights13 sample, run by the real binary.

use crate::common::{query, report, rows, show, Workdir};

/// Flights whose canonical times were worked out by hand from the source row and the airports'
/// time zones (EST = UTC-5, EDT = UTC-4, CST = UTC-6, PST = UTC-8, HST = UTC-10).
const HAND_CHECKED: &[(&str, &str, &str, &str, &str, &str, &str)] = &[
    // carrier, flight, local date, scheduled departure, actual departure, scheduled arrival, actual arrival
    // UA1545 EWR 05:15 EST → IAH 08:19 CST; departed 2 min late, arrived 11 min late.
    (
        "UA",
        "1545",
        "2013-01-01",
        "2013-01-01T10:15:00Z",
        "2013-01-01T10:17:00Z",
        "2013-01-01T14:19:00Z",
        "2013-01-01T14:30:00Z",
    ),
    // B6 1816 JFK 22:50 EST, left at 2400 (midnight) → SYR 23:56 EST, landed 00:59 the next day.
    (
        "B6",
        "1816",
        "2013-12-09",
        "2013-12-10T03:50:00Z",
        "2013-12-10T05:00:00Z",
        "2013-12-10T04:56:00Z",
        "2013-12-10T05:59:00Z",
    ),
    // UA1482 EWR 20:30 EST → LAX 00:05 PST the next day (scheduled overnight), landed 28 min early.
    (
        "UA",
        "1482",
        "2013-01-01",
        "2013-01-02T01:30:00Z",
        "2013-01-02T01:35:00Z",
        "2013-01-02T08:05:00Z",
        "2013-01-02T07:37:00Z",
    ),
    // US1113 on the day DST starts: 05:00 is already EDT.
    (
        "US",
        "1113",
        "2013-03-10",
        "2013-03-10T09:00:00Z",
        "2013-03-10T08:54:00Z",
        "2013-03-10T10:48:00Z",
        "2013-03-10T10:28:00Z",
    ),
    // HA51 JFK 09:00 EST → HNL 15:30 HST.
    (
        "HA",
        "51",
        "2013-01-01",
        "2013-01-01T14:00:00Z",
        "2013-01-01T13:57:00Z",
        "2013-01-02T01:30:00Z",
        "2013-01-02T01:16:00Z",
    ),
];

#[test]
fn flights_job_loads_every_row_or_quarantines_it_with_reasons() {
    let w = Workdir::project();
    let out = w.run(&["run", "flights", "--json"]);
    // The sample quarantines 2.26% of rows, above warn_above = 2%: a warning, exit 0.
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let r = report(&out);
    assert_eq!(r["status"], "succeeded_with_warnings", "{}", show(&out));
    let read = r["rows"]["read"].as_u64().unwrap();
    let written = r["rows"]["written"].as_u64().unwrap();
    let quarantined = r["rows"]["quarantined"].as_u64().unwrap();
    assert_eq!(read, 336_776, "every flight of nycflights13 is read");
    assert_eq!(read, written + quarantined);
    // Destinations missing from airports.csv (SJU, BQN, STT, PSE: 7,602 flights, counted
    // with a script over the CSV files) are exactly the quarantined rows.
    assert_eq!(quarantined, 7_602);

    let target = w.path().join("warehouse/flights");
    let n = query(&target, "SELECT count(*) FROM t");
    assert_eq!(rows(&n), vec![written.to_string()]);
    let partitions: Vec<String> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    for p in ["origin=EWR", "origin=JFK", "origin=LGA"] {
        assert!(partitions.contains(&p.to_string()), "{partitions:?}");
    }

    // Quarantine: every row carries both reasons, and its file and line point at the raw row.
    let qdir = w.path().join("warehouse/_quarantine/flights");
    let q = query(
        &qdir,
        "SELECT source_file, source_line, source_values, failed_rules FROM t ORDER BY source_line LIMIT 1",
    );
    let first = rows(&q);
    let line = &first[0];
    assert!(
        line.starts_with("samples/nycflights13/flights.csv.gz|"),
        "{line}"
    );
    assert!(line.contains("destination_known"), "{line}");
    assert!(line.contains("is not in the airports reference"), "{line}");
    assert!(line.contains("flight.scheduled_arrival.required"), "{line}");
    let source_line: usize = line.split('|').nth(1).unwrap().parse().unwrap();
    let raw = flate_line(
        &w.path().join("samples/nycflights13/flights.csv.gz"),
        source_line,
    );
    let dest = raw.split(',').nth(13).unwrap();
    assert!(
        ["SJU", "BQN", "STT", "PSE"].contains(&dest),
        "line {source_line}: {raw}"
    );
    assert!(
        line.contains(&format!("\"dest\":\"{dest}\"")),
        "{line} vs {raw}"
    );
    let per_rule = query(
        &qdir,
        "SELECT count(*) FROM t WHERE array_length(failed_rules) = 2",
    );
    assert_eq!(rows(&per_rule), vec!["7602".to_string()]);

    for (carrier, flight, date, sd, ad, sa, aa) in HAND_CHECKED {
        let got = query(
            &target,
            &format!(
                "SELECT to_char(scheduled_departure, '%Y-%m-%dT%H:%M:%SZ'), to_char(actual_departure, '%Y-%m-%dT%H:%M:%SZ'), \
                 to_char(scheduled_arrival, '%Y-%m-%dT%H:%M:%SZ'), to_char(actual_arrival, '%Y-%m-%dT%H:%M:%SZ') \
                 FROM t WHERE carrier_code = '{carrier}' AND flight_number = {flight} AND flight_date = DATE '{date}'"
            ),
        );
        assert_eq!(
            rows(&got),
            vec![format!("{sd}|{ad}|{sa}|{aa}")],
            "{carrier}{flight} on {date}"
        );
    }

    // The run report is saved in the state folder too.
    let run_id = r["run_id"].as_str().unwrap();
    let saved = w.read(&format!(".sluice/runs/flights/{run_id}.json"));
    let saved: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(saved["rows"], r["rows"]);
}

fn flate_line(path: &std::path::Path, line: usize) -> String {
    use std::io::{BufRead, BufReader};
    let f = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    BufReader::new(f).lines().nth(line - 1).unwrap().unwrap()
}

#[test]
fn second_overwrite_run_of_flights_gives_identical_rows() {
    let w = Workdir::project();
    let first = w.run(&["run", "flights"]);
    assert_eq!(first.status.code(), Some(0), "{}", show(&first));
    let snapshot = w.path().join("first-run");
    crate::common::copy(&w.path().join("warehouse/flights"), &snapshot);
    let second = w.run(&["run", "flights"]);
    assert_eq!(second.status.code(), Some(0), "{}", show(&second));
    // Same rows as a multiset, compared both ways with EXCEPT ALL.
    let diff = crate::common::flights_diff(&snapshot, &w.path().join("warehouse/flights"));
    assert_eq!(diff, "329174|329174|0|0");
}

#[test]
fn second_overwrite_run_gives_identical_data() {
    let w = Workdir::project();
    let target = w.path().join("warehouse/carriers");
    let first = w.run(&["run", "carriers"]);
    assert_eq!(first.status.code(), Some(0), "{}", show(&first));
    let before = rows(&query(&target, "SELECT * FROM t ORDER BY carrier_code"));
    let second = w.run(&["run", "carriers"]);
    assert_eq!(second.status.code(), Some(0), "{}", show(&second));
    let after = rows(&query(&target, "SELECT * FROM t ORDER BY carrier_code"));
    assert_eq!(before.len(), 16, "airlines.csv has 16 carriers");
    assert_eq!(before, after);
    assert!(
        before.contains(&"UA|United Air Lines Inc.".to_string()),
        "{before:?}"
    );
}

#[test]
fn failed_check_keeps_previous_target_and_exits_3() {
    let w = Workdir::project();
    let ok = w.run(&["run", "carriers"]);
    assert_eq!(ok.status.code(), Some(0), "{}", show(&ok));
    let target = w.path().join("warehouse/carriers");
    let before = rows(&query(&target, "SELECT * FROM t ORDER BY carrier_code"));
    // Demand more carriers than exist: the row count check fails.
    let job = w
        .read("jobs/carriers.toml")
        .replace("fail_below = 1", "fail_below = 100");
    w.write("jobs/carriers.toml", &job);
    let out = w.run(&["run", "carriers", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let r = report(&out);
    assert_eq!(r["status"], "check_failed");
    assert_eq!(r["checks"][0]["status"], "fail");
    assert_eq!(r["outputs"][0]["committed"], false);
    let after = rows(&query(&target, "SELECT * FROM t ORDER BY carrier_code"));
    assert_eq!(
        before, after,
        "the target must not change when a check fails"
    );
}

#[test]
fn append_adds_rows_and_keeps_old_files() {
    let w = Workdir::project();
    let job = w
        .read("jobs/carriers.toml")
        .replace("mode = \"overwrite\"", "mode = \"append\"");
    w.write("jobs/carriers.toml", &job);
    for _ in 0..2 {
        let out = w.run(&["run", "carriers"]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    }
    let target = w.path().join("warehouse/carriers");
    let n = query(
        &target,
        "SELECT count(*), count(DISTINCT carrier_code) FROM t",
    );
    assert_eq!(rows(&n), vec!["32|16".to_string()]);
}

/// Points the carriers job at a 4-row airlines file whose lines 3 (code `U`, too short) and 5
/// (no code) break the carrier model.
fn use_bad_airlines(w: &Workdir) {
    w.write(
        "samples/mini/airlines.csv",
        "carrier,name\nAA,American Airlines Inc.\nU,Too Short Air\n9E,Endeavor Air Inc.\n,No Code\n",
    );
    let job = w.read("jobs/carriers.toml").replace(
        "samples/nycflights13/airlines.csv.gz",
        "samples/mini/airlines.csv",
    );
    w.write("jobs/carriers.toml", &job);
}

#[test]
fn malformed_values_are_quarantined_with_their_line_not_fatal() {
    let w = Workdir::project();
    use_bad_airlines(&w);
    let out = w.run(&["run", "carriers", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let r = report(&out);
    assert_eq!(r["rows"]["read"], 4);
    assert_eq!(r["rows"]["written"], 2);
    assert_eq!(r["rows"]["quarantined"], 2);
    let q = query(
        &w.path().join("warehouse/_quarantine/carriers"),
        "SELECT source_line, failed_rules[1]['rule'] FROM t ORDER BY source_line",
    );
    assert_eq!(
        rows(&q),
        vec![
            "3|carrier.carrier_code.pattern".to_string(),
            "5|carrier.carrier_code.required".to_string()
        ]
    );
}

#[test]
fn quarantine_command_summarises_runs_rules_and_samples() {
    let w = Workdir::project();
    let empty = w.run(&["quarantine", "carriers"]);
    assert_eq!(empty.status.code(), Some(0), "{}", show(&empty));
    assert!(
        String::from_utf8_lossy(&empty.stdout).contains("no quarantined rows for job `carriers`")
    );
    use_bad_airlines(&w);
    let run = w.run(&["run", "carriers", "--json"]);
    let run_id = report(&run)["run_id"].as_str().unwrap().to_string();
    let out = w.run(&["quarantine", "carriers"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("rules failed in run {run_id}")),
        "{text}"
    );
    assert!(
        text.contains("| carrier.carrier_code.pattern  | 1    |"),
        "{text}"
    );
    assert!(
        text.contains("| carrier.carrier_code.required | 1    |"),
        "{text}"
    );
    assert!(text.contains("| samples/mini/airlines.csv | 3           | carrier_code 'U' does not match pattern ^[A-Z0-9]{2}$"), "{text}");
    let bad = w.run(&["quarantine", "carriers", "--run", "nope"]);
    assert_eq!(bad.status.code(), Some(2), "{}", show(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains(&run_id),
        "{}",
        show(&bad)
    );
}

#[test]
fn a_run_that_loads_no_rows_publishes_a_readable_empty_table() {
    // Every row fails a rule, so the target receives none; flights is partitioned by origin.
    for (job, mapping, field) in [
        ("carriers", "nycflights13_to_carrier", "carrier_code"),
        ("flights", "nycflights13_to_flight", "flight_date"),
    ] {
        let w = Workdir::project();
        let m = w.read(&format!("mappings/{mapping}.toml"));
        w.write(
            &format!("mappings/{mapping}.toml"),
            &format!("{m}\n[[rule]]\nname = \"none_pass\"\ncheck = \"{field} IS NULL\"\n"),
        );
        let spec = w.read(&format!("jobs/{job}.toml"));
        w.write(
            &format!("jobs/{job}.toml"),
            &spec[..spec.find("[checks").unwrap()],
        );
        let out = w.run(&["run", job, "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        assert_eq!(report(&out)["rows"]["written"], 0);
        // Readable, with the model's columns.
        let got = rows(&query(
            &w.path().join("warehouse").join(job),
            &format!("SELECT COUNT(*), COUNT({field}) FROM t"),
        ));
        assert_eq!(got, vec!["0|0".to_string()], "{job}");
    }
}

/// Every Parquet file of `dir`: its codecs, its row groups' row counts and its rows.
fn parquet_layout(
    dir: &std::path::Path,
) -> Vec<(Vec<datafusion::parquet::basic::Compression>, Vec<i64>, i64)> {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let files = crate::common::walk(dir)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "parquet"));
    files
        .map(|f| {
            let reader = SerializedFileReader::new(std::fs::File::open(&f).unwrap()).unwrap();
            let meta = reader.metadata();
            let groups = meta.row_groups();
            let mut codecs: Vec<_> = groups
                .iter()
                .flat_map(|g| g.columns().iter().map(|c| c.compression()))
                .collect();
            codecs.dedup();
            let rows = groups.iter().map(|g| g.num_rows()).collect();
            (codecs, rows, meta.file_metadata().num_rows())
        })
        .collect()
}

/// A Parquet target's files follow its `compression`, `row_group_size` and
/// `max_rows_per_file`; without them an unpartitioned table is one zstd file (DataFusion's
/// writer alone would make four).
#[test]
fn parquet_files_follow_the_targets_codec_row_group_and_file_size() {
    use datafusion::parquet::basic::Compression;
    let w = Workdir::project();
    let unpartitioned = w
        .read("jobs/flights.toml")
        .replace("partition_by = [\"origin\"]\n", "");
    w.write("jobs/flights.toml", &unpartitioned);
    let out = w.run(&["run", "flights"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let layout = parquet_layout(&w.path().join("warehouse/flights"));
    assert_eq!(layout.len(), 1, "one file");
    // (A file does not record the level it was compressed at.)
    let (codecs, groups, _) = &layout[0];
    assert!(
        codecs.iter().all(|c| matches!(c, Compression::ZSTD(_))),
        "the default codec: {codecs:?}"
    );
    assert!(
        groups.iter().all(|&n| n <= 131_072),
        "row groups {groups:?}"
    );

    let job = unpartitioned.replace(
        "mode = \"overwrite\"\n",
        "mode = \"overwrite\"\ncompression = \"snappy\"\nrow_group_size = 10000\nmax_rows_per_file = 100000\n",
    );
    w.write("jobs/flights.toml", &job);
    let out = w.run(&["run", "flights", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let written = report(&out)["rows"]["written"].as_i64().unwrap();
    let layout = parquet_layout(&w.path().join("warehouse/flights"));
    // 329,174 rows at most 100,000 (plus the batch that crosses it) to a file.
    assert!(layout.len() >= 4, "{} files", layout.len());
    let mut total = 0;
    for (codecs, groups, rows) in &layout {
        assert_eq!(codecs, &vec![Compression::SNAPPY]);
        assert!(groups.iter().all(|&n| n <= 10_000), "row groups {groups:?}");
        assert!(*rows <= 100_000 + 8192, "{rows} rows in one file");
        total += rows;
    }
    assert_eq!(total, written);
}
