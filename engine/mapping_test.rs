//! `sluice test [MAPPING...]`: a mapping's `[[test]]` blocks, run in process on inline rows.
//!
//! Each test gives rows for every source the mapping reads, either as CSV text (header
//! first) or as one TOML table per row, and says what must come out:
//!
//! ```toml
//! [[test]]
//! name = "unknown destination is quarantined"
//! sources.flights = """
//! year,month,day,dep_time,sched_dep_time,dep_delay,...
//! 2013,1,1,517,515,2,...
//! """
//! sources.airports = [{ faa = "EWR", tzone = "America/New_York" }]
//! expect = [{ flight_number = 1545, scheduled_departure = "2013-01-01T10:15:00Z" }]
//! quarantined = [{ line = 3, rules = ["destination_known"] }]
//! ```
//!
//! The rows go through the same compiler, rules and actions as a run (column types are
//! inferred from the inline rows; null markers and declared column types come from the first
//! job that uses the mapping), but nothing is read from disk and nothing is written: a test
//! takes milliseconds. `expect` lists the loaded canonical rows in source order and compares
//! only the fields given (numbers numerically, timestamps as instants, `"NULL"` for null);
//! `quarantined` lists every quarantined row by line with the exact set of rules it failed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::compute::filter;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_spanned::Spanned;

use crate::config::spec::{
    ChecksSpec, CsvSourceSpec, ExpectedQuarantine, LoadMode, ParquetTargetSpec, QuarantineSpec,
    SourceFormat, SourceSpec, TargetFormat, TargetSpec, TestRows, TestSpec,
};
use crate::config::{Job, Mapping, Project};
use crate::error::{Error, Result};
use crate::plan::CompiledJob;
use crate::source::{InlineRow, SourceInput};
use datafusion::arrow::record_batch::RecordBatch;

/// The result of one test.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    /// Mapping name.
    pub mapping: String,
    /// Test name.
    pub name: String,
    /// Wall time.
    pub duration: Duration,
    /// What differed, one line each; empty when the test passed.
    pub failures: Vec<String>,
}

impl TestOutcome {
    /// True when nothing differed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs the tests of the named mappings (all mappings when empty), in name order.
///
/// # Errors
/// [`Error::Usage`] for an unknown mapping name. A mapping that does not compile on a test's
/// rows is a failed test, not an error.
pub async fn run_tests(project: &Project, names: &[String]) -> Result<Vec<TestOutcome>> {
    for n in names {
        if !project.mappings.contains_key(n) {
            let known: Vec<&str> = project.mappings.keys().map(String::as_str).collect();
            return Err(Error::Usage {
                message: format!("no mapping named `{n}`"),
                hint: Some(
                    match crate::diagnostic::did_you_mean(n, known.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("mappings: {}", known.join(", ")),
                    },
                ),
            });
        }
    }
    let mut out = Vec::new();
    for (name, mapping) in &project.mappings {
        if !names.is_empty() && !names.contains(name) {
            continue;
        }
        for test in &mapping.tests {
            let t0 = Instant::now();
            let failures = match run_one(project, mapping, test).await {
                Ok(f) => f,
                Err(e) => vec![format!("{}", e)],
            };
            out.push(TestOutcome {
                mapping: name.clone(),
                name: test.name.get_ref().clone(),
                duration: t0.elapsed(),
                failures,
            });
        }
    }
    Ok(out)
}

/// A job for running `mapping` on inline rows: the first job using it (for its sources'
/// null markers and declared types), without dataset checks; else a minimal one.
fn test_job(project: &Project, mapping: &Mapping) -> Job {
    // Nothing is written, so the target and quarantine are placeholders (a real job's may
    // need environment variables the test machine does not have).
    let target = TargetSpec::Parquet(ParquetTargetSpec {
        format: Spanned::new(0..0, TargetFormat::Parquet),
        table: Some(Spanned::new(0..0, "__test".to_string())),
        path: None,
        mode: LoadMode::Overwrite,
        partition_by: Vec::new(),
        compression: None,
        compression_level: None,
        row_group_size: None,
        max_rows_per_file: None,
        files: Default::default(),
    });
    if let Some(j) = project.jobs.values().find(|j| j.mapping == mapping.name) {
        let mut j = j.clone();
        j.checks = ChecksSpec::default();
        j.target = target;
        j.quarantine = QuarantineSpec::default();
        return j;
    }
    let spec = |_: &str| {
        SourceSpec::Csv(CsvSourceSpec {
            format: Spanned::new(0..0, SourceFormat::Csv),
            path: Spanned::new(0..0, "inline".to_string()),
            incremental: None,
            compression: None,
            delimiter: None,
            quote: None,
            has_header: None,
            null_values: None,
            infer_schema_rows: None,
            columns: None,
            on_malformed: None,
            quote_mode: None,
        })
    };
    Job {
        name: format!("test:{}", mapping.name),
        src: mapping.src.clone(),
        description: None,
        owner: None,
        mapping: mapping.name.clone(),
        sources: mapping
            .source_names()
            .into_iter()
            .map(|s| (s.to_string(), spec(s)))
            .collect(),
        target,
        quarantine: QuarantineSpec::default(),
        checks: ChecksSpec::default(),
        retry: Default::default(),
        schedule: None,
        after: Vec::new(),
        vars: BTreeMap::new(),
        memory_limit: None,
        run: None,
    }
}

/// The inline rows of one source, with their lines.
fn inline_rows(source: &str, rows: &TestRows) -> std::result::Result<Vec<InlineRow>, String> {
    let file = format!("test:{source}");
    match rows {
        TestRows::Rows(rows) => Ok(rows
            .iter()
            .enumerate()
            .map(|(i, r)| InlineRow {
                file: file.clone(),
                line: i as i64 + 2,
                values: r.iter().map(|(k, v)| (k.clone(), plain(v))).collect(),
            })
            .collect()),
        TestRows::Csv(text) => {
            let mut reader = csv::ReaderBuilder::new().from_reader(text.trim_start().as_bytes());
            let header: Vec<String> = reader
                .headers()
                .map_err(|e| format!("sources.{source}: {e}"))?
                .iter()
                .map(|h| h.trim().to_string())
                .collect();
            let mut out = Vec::new();
            for rec in reader.records() {
                let rec = rec.map_err(|e| format!("sources.{source}: {e}"))?;
                let line = rec.position().map_or(0, |p| p.line() as i64);
                out.push(InlineRow {
                    file: file.clone(),
                    line,
                    values: header
                        .iter()
                        .cloned()
                        .zip(rec.iter().map(|v| serde_json::Value::String(v.to_string())))
                        .collect(),
                });
            }
            Ok(out)
        }
    }
}

/// A TOML value as JSON: a TOML date-time (which serde shows as a one-key map) becomes its
/// text.
fn plain(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) if m.len() == 1 => match m.values().next() {
            Some(serde_json::Value::String(s)) if m.keys().all(|k| k.contains("datetime")) => {
                serde_json::Value::String(s.clone())
            }
            _ => v.clone(),
        },
        other => other.clone(),
    }
}

fn expected_text(v: &serde_json::Value) -> String {
    match plain(v) {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Whether an actual value (as Arrow formats it) matches the expected text.
fn matches(expected: &str, actual: &str) -> bool {
    if expected == actual {
        return true;
    }
    if let (Ok(a), Ok(b)) = (expected.parse::<f64>(), actual.parse::<f64>()) {
        return (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    }
    let instant = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .or_else(|_| chrono::DateTime::parse_from_rfc3339(&s.replacen(' ', "T", 1)))
            .ok()
    };
    matches!((instant(expected), instant(actual)), (Some(a), Some(b)) if a == b)
}

async fn run_one(project: &Project, mapping: &Mapping, test: &TestSpec) -> Result<Vec<String>> {
    let (inputs, mut failures) = test_inputs(mapping, test)?;
    if !failures.is_empty() {
        return Ok(failures);
    }
    // `${run.*}` read today, `${var.*}` the job's defaults.
    let params = crate::config::params::RunParams::at(chrono::Utc::now());
    let (project, job) =
        crate::config::params::apply(project, &test_job(project, mapping), &params)
            .map_err(|d| Error::Config(crate::diagnostic::Diagnostics(d)))?;
    let compiled = crate::plan::compile_with(&project, &job, &inputs).await?;
    let batches = compiled
        .frame
        .clone()
        .collect()
        .await
        .map_err(|e| Error::engine(&job.name, &compiled.redactor, &e))?;
    let outcome = TestOutput::of(&compiled, &batches)?;
    if let Some(expect) = &test.expect {
        failures.extend(compare_loaded(
            expect,
            &outcome.loaded,
            &compiled.model.name,
        ));
    }
    if let Some(expected) = &test.quarantined {
        failures.extend(compare_quarantined(
            expected,
            &outcome.quarantined,
            &compiled,
        ));
    }
    Ok(failures)
}

/// The test's rows as each source's input, and what is missing or extra (a failure each).
///
/// # Errors
/// [`Error::Usage`] when a source's rows cannot be read.
fn test_inputs(
    mapping: &Mapping,
    test: &TestSpec,
) -> Result<(HashMap<String, SourceInput>, Vec<String>)> {
    let mut failures = Vec::new();
    let mut inputs = HashMap::new();
    for s in mapping.source_names() {
        match test.sources.get(s) {
            Some(rows) => {
                let rows = inline_rows(s, rows).map_err(|m| Error::Usage {
                    message: m,
                    hint: None,
                })?;
                inputs.insert(s.to_string(), SourceInput::Inline(rows));
            }
            None => failures.push(format!(
                "no rows for source `{s}`; add `sources.{s} = [...]` with at least one row holding the columns the mapping uses"
            )),
        }
    }
    for s in test.sources.keys() {
        if !mapping.source_names().contains(&s.as_str()) {
            failures.push(format!("source `{s}` is not read by the mapping"));
        }
    }
    Ok((inputs, failures))
}

/// What a test's plan did with its rows.
struct TestOutput {
    /// Loaded rows in source-line order, each field's value as text (`NULL` for null).
    loaded: Vec<BTreeMap<String, String>>,
    /// Rejected rows by line, with the rules each failed.
    quarantined: BTreeMap<i64, BTreeSet<String>>,
}

impl TestOutput {
    /// Splits the plan's output as a run would.
    ///
    /// # Errors
    /// [`Error::Internal`] when a column cannot be filtered or formatted.
    fn of(compiled: &CompiledJob, batches: &[RecordBatch]) -> Result<TestOutput> {
        let format = FormatOptions::default().with_null("NULL");
        let names: Vec<&str> = compiled
            .model
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        // (line, values): the plan may reorder rows, the expectation is in source order.
        let mut loaded: Vec<(i64, BTreeMap<String, String>)> = Vec::new();
        let mut quarantined: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
        for batch in batches.iter().filter(|b| b.num_rows() > 0) {
            let c = crate::run::classify(compiled, batch);
            let keep = datafusion::arrow::array::BooleanArray::new(!&c.removed, None);
            let cols = compiled
                .layout
                .canonical
                .iter()
                .map(|i| filter(batch.column(*i), &keep))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Internal(e.to_string()))?;
            let fmts = cols
                .iter()
                .map(|a| ArrayFormatter::try_new(a.as_ref(), &format))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Internal(e.to_string()))?;
            let lines = batch
                .column(compiled.layout.line)
                .as_any()
                .downcast_ref::<Int64Array>();
            let line_of = |i: usize| lines.filter(|l| l.is_valid(i)).map_or(0, |l| l.value(i));
            for (row, i) in keep.values().set_indices().enumerate() {
                let values = names
                    .iter()
                    .zip(&fmts)
                    .map(|(n, f)| (n.to_string(), f.value(row).to_string()))
                    .collect();
                loaded.push((line_of(i), values));
            }
            for row in c.any.set_indices() {
                let failed = compiled
                    .rules
                    .iter()
                    .zip(&c.flag_values)
                    .filter(|(_, f)| f.value(row))
                    .map(|(r, _)| r.name.clone())
                    .collect();
                quarantined.insert(line_of(row), failed);
            }
        }
        loaded.sort_by_key(|(line, _)| *line);
        Ok(TestOutput {
            loaded: loaded.into_iter().map(|(_, r)| r).collect(),
            quarantined,
        })
    }
}

/// Differences between the expected loaded rows and the loaded ones (only the fields the
/// expectation names are compared).
fn compare_loaded(
    expect: &[serde_json::Map<String, serde_json::Value>],
    loaded: &[BTreeMap<String, String>],
    model: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    if expect.len() != loaded.len() {
        failures.push(format!(
            "expected {} loaded row(s), got {}",
            expect.len(),
            loaded.len()
        ));
    }
    for (i, (want, got)) in expect.iter().zip(loaded).enumerate() {
        for (field, value) in want {
            let want = expected_text(value);
            match got.get(field) {
                None => failures.push(format!(
                    "row {}: `{field}` is not a field of model `{model}`",
                    i + 1
                )),
                Some(g) if !matches(&want, g) => {
                    failures.push(format!("row {}, {field}: expected {want}, got {g}", i + 1))
                }
                Some(_) => {}
            }
        }
    }
    failures
}

/// Differences between the expected quarantined lines (with their rules) and the actual
/// ones; an expected rule the mapping does not have is a failure too.
fn compare_quarantined(
    expected: &[ExpectedQuarantine],
    quarantined: &BTreeMap<i64, BTreeSet<String>>,
    compiled: &CompiledJob,
) -> Vec<String> {
    let mut failures = Vec::new();
    let names: Vec<&str> = compiled.rules.iter().map(|r| r.name.as_str()).collect();
    for q in expected {
        for rule in q.rules.iter().filter(|r| !names.contains(&r.as_str())) {
            failures.push(format!(
                "line {}: no rule named `{rule}`{}",
                q.line,
                match crate::diagnostic::did_you_mean(rule, names.iter().copied()) {
                    Some(s) => format!(" (did you mean `{s}`?)"),
                    None => String::new(),
                }
            ));
        }
    }
    let want: BTreeMap<i64, BTreeSet<String>> = expected
        .iter()
        .map(|q| (q.line, q.rules.iter().cloned().collect()))
        .collect();
    for (line, rules) in &want {
        match quarantined.get(line) {
            None => failures.push(format!(
                "line {line}: expected quarantined by [{}], but it was not quarantined",
                join(rules)
            )),
            Some(got) if got != rules => failures.push(format!(
                "line {line}: expected rules [{}], got [{}]",
                join(rules),
                join(got)
            )),
            Some(_) => {}
        }
    }
    for (line, rules) in quarantined {
        if !want.contains_key(line) {
            failures.push(format!(
                "line {line}: quarantined by [{}], not expected",
                join(rules)
            ));
        }
    }
    failures
}

fn join(s: &BTreeSet<String>) -> String {
    s.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// JUnit XML (the Jenkins/Ant schema most CI systems read): one `<testsuite>` per mapping,
/// one `<testcase>` per test, a `<failure>` listing what differed.
pub fn junit_xml(outcomes: &[TestOutcome]) -> String {
    use quick_xml::escape::escape;
    let mut suites: BTreeMap<&str, Vec<&TestOutcome>> = BTreeMap::new();
    for o in outcomes {
        suites.entry(o.mapping.as_str()).or_default().push(o);
    }
    let failures = outcomes.iter().filter(|o| !o.passed()).count();
    let total: f64 = outcomes.iter().map(|o| o.duration.as_secs_f64()).sum();
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"sluice test\" tests=\"{}\" failures=\"{failures}\" time=\"{total:.3}\">\n",
        outcomes.len()
    );
    for (mapping, tests) in suites {
        let f = tests.iter().filter(|o| !o.passed()).count();
        let t: f64 = tests.iter().map(|o| o.duration.as_secs_f64()).sum();
        s.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" time=\"{t:.3}\">\n",
            escape(mapping),
            tests.len()
        ));
        for o in tests {
            s.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                escape(mapping),
                escape(o.name.as_str()),
                o.duration.as_secs_f64()
            ));
            if o.passed() {
                s.push_str("/>\n");
            } else {
                s.push_str(&format!(
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                    escape(o.failures[0].as_str()),
                    escape(o.failures.join("\n").as_str())
                ));
            }
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_numerically_and_as_instants() {
        assert!(matches("1545", "1545"));
        assert!(matches("1609.344", "1609.3440000000001"));
        assert!(!matches("1609.3", "1609.344"));
        assert!(matches("2013-01-01T10:15:00Z", "2013-01-01T10:15:00Z"));
        assert!(matches("2013-01-01 05:15:00-05:00", "2013-01-01T10:15:00Z"));
        assert!(!matches("2013-01-01T10:15:00Z", "2013-01-01T10:16:00Z"));
        assert!(matches("NULL", "NULL"));
    }

    #[test]
    fn junit_escapes_and_counts() {
        let xml = junit_xml(&[
            TestOutcome {
                mapping: "m".into(),
                name: "a <b>".into(),
                duration: Duration::from_millis(3),
                failures: vec![],
            },
            TestOutcome {
                mapping: "m".into(),
                name: "c".into(),
                duration: Duration::from_millis(4),
                failures: vec!["row 1, x: expected \"1\", got 2".into()],
            },
        ]);
        assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
        assert!(xml.contains("name=\"a &lt;b&gt;\""), "{xml}");
        assert!(xml.contains("expected &quot;1&quot;, got 2"), "{xml}");
    }
}
