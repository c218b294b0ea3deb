//! Dataset checks that need the loaded rows: null ratio per field, key uniqueness, freshness
//! and custom SQL aggregates, plus volume against the run history.
//!
//! The aggregates are computed in the same pass as the load: every batch sent to the target
//! is also sent, through a bounded channel, into one DataFusion aggregate query over the
//! target's schema, so no row is read twice and memory is the aggregate state (for
//! uniqueness: the distinct keys). The query's expressions are checked against the model at
//! compile time.
//!
//! | check          | measured value                                             |
//! |----------------|------------------------------------------------------------|
//! | `null_ratio.F` | null values of F / rows loaded (0 when nothing is loaded)  |
//! | `unique`       | rows with a full key − distinct full keys (duplicate rows) |
//! | `freshness`    | hours from the newest value of the field to the run start  |
//! | `volume`       | rows loaded / median rows loaded by the last N committed runs |
//! | `sql.NAME`     | the value of the aggregate expression                      |

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::prelude::SessionContext;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::spec::{ChecksSpec, HasThresholds, SqlCheckSpec, Thresholds, VolumeSpec};
use crate::diagnostic::SourceText;
use crate::error::{Error, Result};
use crate::model::{CanonicalModel, FieldType};
use crate::quality::{CheckResult, CheckStatus};

/// The aggregate expressions the job's checks need, as (name, SQL) over canonical fields.
pub fn aggregate_exprs(checks: &ChecksSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !(checks.null_ratio.is_empty()
        && checks.unique.is_none()
        && checks.freshness.is_none()
        && checks.sql.is_empty())
    {
        out.push(("rows".to_string(), "count(*)".to_string()));
    }
    for field in checks.null_ratio.keys() {
        out.push((
            format!("nulls:{field}"),
            format!("sum(CASE WHEN \"{field}\" IS NULL THEN 1 ELSE 0 END)"),
        ));
    }
    if let Some(u) = &checks.unique {
        let full = u
            .key
            .iter()
            .map(|k| format!("\"{k}\" IS NOT NULL"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let text = u
            .key
            .iter()
            .map(|k| format!("CAST(\"{k}\" AS VARCHAR)"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push((
            "unique:rows".into(),
            format!("sum(CASE WHEN {full} THEN 1 ELSE 0 END)"),
        ));
        out.push((
            "unique:distinct".into(),
            format!("count(DISTINCT CASE WHEN {full} THEN concat_ws(chr(31), {text}) END)"),
        ));
    }
    if let Some(f) = &checks.freshness {
        out.push(("freshness".into(), format!("max(\"{}\")", f.field)));
    }
    for s in &checks.sql {
        out.push((format!("sql:{}", s.name), s.expr.get_ref().clone()));
    }
    out
}

/// A problem in a job's dataset checks: (key path, message, hint).
pub type CheckProblem = (String, String, Option<String>);

/// Checks the job's dataset checks against the model: fields exist, freshness is on a date or
/// timestamp, thresholds can be met, SQL aggregates parse and return a number. Returns every
/// problem found.
pub fn validate(
    ctx: &SessionContext,
    model: &CanonicalModel,
    checks: &ChecksSpec,
) -> Vec<CheckProblem> {
    let mut out = validate_fields(model, checks);
    let Ok(schema) = DFSchema::try_from(model.arrow_schema().as_ref().clone()) else {
        return out;
    };
    out.extend(validate_thresholds(checks));
    let mut seen = std::collections::BTreeSet::new();
    for s in &checks.sql {
        if !seen.insert(s.name.as_str()) {
            out.push((
                format!("checks.sql.{}", s.name),
                format!("two `[[checks.sql]]` are named `{}`", s.name),
                Some(
                    "names identify a check in reports and the quality history; make them unique"
                        .into(),
                ),
            ));
        }
    }
    for s in &checks.sql {
        out.extend(validate_sql(ctx, model, &schema, s));
    }
    out
}

/// The fields the checks name exist; freshness is measured on a date or timestamp.
fn validate_fields(model: &CanonicalModel, checks: &ChecksSpec) -> Vec<CheckProblem> {
    let mut out = Vec::new();
    let names: Vec<&str> = model.fields.iter().map(|f| f.name.as_str()).collect();
    let unknown = |out: &mut Vec<_>, key: String, field: &str| {
        out.push((
            key,
            format!("`{field}` is not a field of model `{}`", model.name),
            Some(
                match crate::diagnostic::did_you_mean(field, names.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("fields: {}", names.join(", ")),
                },
            ),
        ));
    };
    for field in checks.null_ratio.keys() {
        if model.field(field).is_none() {
            unknown(&mut out, format!("checks.null_ratio.{field}"), field);
        }
    }
    if let Some(u) = &checks.unique {
        if u.key.is_empty() {
            out.push((
                "checks.unique.key".into(),
                "`key` needs at least one field".into(),
                None,
            ));
        }
        for k in &u.key {
            if model.field(k).is_none() {
                unknown(&mut out, "checks.unique.key".into(), k);
            }
        }
    }
    if let Some(f) = &checks.freshness {
        match model.field(&f.field) {
            None => unknown(&mut out, "checks.freshness.field".into(), &f.field),
            Some(field) if !matches!(field.data_type, FieldType::Timestamp | FieldType::Date) => {
                out.push((
                    "checks.freshness.field".into(),
                    format!(
                        "freshness needs a timestamp or date field; `{}` is {}",
                        f.field, field.data_type
                    ),
                    None,
                ))
            }
            Some(_) => {}
        }
    }
    out
}

/// Thresholds that can be met: at least one run for volume, no negative age for freshness,
/// no `fail_below` above `fail_above`.
fn validate_thresholds(checks: &ChecksSpec) -> Vec<CheckProblem> {
    let mut out = Vec::new();
    if let Some(v) = &checks.volume {
        if v.runs == 0 {
            out.push((
                "checks.volume.runs".into(),
                "`runs` must be at least 1".into(),
                Some("the median is taken over the last `runs` committed runs; 7 is usual".into()),
            ));
        }
    }
    if let Some(f) = &checks.freshness {
        for (key, v) in [
            ("warn_after_hours", f.warn_after_hours),
            ("fail_after_hours", f.fail_after_hours),
        ] {
            if v.is_some_and(|h| h < 0.0) {
                out.push((
                    format!("checks.freshness.{key}"),
                    format!("`{key}` is negative"),
                    Some("give the age in hours after which the data is stale, e.g. 36".into()),
                ));
            }
        }
    }
    let mut bounds: Vec<(String, Thresholds)> = checks
        .null_ratio
        .iter()
        .map(|(f, t)| (format!("checks.null_ratio.{f}"), t.clone()))
        .collect();
    if let Some(u) = &checks.unique {
        bounds.push(("checks.unique".into(), u.thresholds()));
    }
    if let Some(v) = &checks.volume {
        bounds.push(("checks.volume".into(), v.thresholds()));
    }
    for s in &checks.sql {
        bounds.push((format!("checks.sql.{}", s.name), s.thresholds()));
    }
    for (key, t) in bounds {
        if let (Some(lo), Some(hi)) = (t.fail_below, t.fail_above) {
            if lo > hi {
                out.push((
                    key,
                    format!("fail_below = {lo} is above fail_above = {hi}: every value fails"),
                    Some(
                        "fail_below is the lowest acceptable value, fail_above the highest".into(),
                    ),
                ));
            }
        }
    }
    out
}

/// One `[[checks.sql]]`: a snake_case name, and an aggregate over the model's fields that
/// plans and returns a number.
fn validate_sql(
    ctx: &SessionContext,
    model: &CanonicalModel,
    schema: &DFSchema,
    s: &SqlCheckSpec,
) -> Vec<CheckProblem> {
    let mut out = Vec::new();
    let key = format!("checks.sql.{}.expr", s.name);
    if !crate::config::is_identifier(&s.name) {
        out.push((
            format!("checks.sql.{}", s.name),
            format!("check name `{}` is not snake_case", s.name),
            None,
        ));
    }
    let expr = match ctx.parse_sql_expr(s.expr.get_ref(), schema) {
        Ok(e)
            if datafusion::logical_expr::utils::find_aggregate_exprs(std::slice::from_ref(&e))
                .is_empty() =>
        {
            out.push((
                key,
                format!(
                    "check `{}` is not an aggregate: `{}` has a value per row, not one for the run",
                    s.name,
                    s.expr.get_ref()
                ),
                Some(
                    "aggregate it, e.g. `avg(...)`, `max(...)` or `count(*) FILTER (WHERE ...)`"
                        .into(),
                ),
            ));
            return out;
        }
        Ok(e) => e,
        Err(e) => {
            let names: Vec<&str> = model.fields.iter().map(|f| f.name.as_str()).collect();
            out.push((
                key,
                format!("in check `{}`: {}", s.name, e.strip_backtrace()),
                Some(format!(
                    "write an aggregate over fields: {}",
                    names.join(", ")
                )),
            ));
            return out;
        }
    };
    let df = datafusion::datasource::MemTable::try_new(model.arrow_schema(), vec![vec![]])
        .and_then(|t| ctx.read_table(std::sync::Arc::new(t)))
        .and_then(|d| d.aggregate(vec![], vec![expr]));
    match df {
        Ok(d) => {
            let t = d.schema().field(0).data_type().clone();
            if !(t.is_numeric() || t.is_null()) {
                out.push((
                    key,
                    format!("check `{}` returns {t}; thresholds need a number", s.name),
                    Some("aggregate to a number, e.g. `avg(distance_km)` or `count(*) FILTER (WHERE ...)`".into()),
                ));
            }
        }
        Err(e) => out.push((
            key,
            format!(
                "in check `{}`: {} (it must be an aggregate such as avg(x) or count(*))",
                s.name,
                e.strip_backtrace()
            ),
            None,
        )),
    }
    out
}

/// One aggregate query running beside the load.
struct AggregateQuery {
    sender: Option<mpsc::Sender<RecordBatch>>,
    handle: JoinHandle<datafusion::error::Result<Vec<RecordBatch>>>,
    names: Vec<String>,
    /// The custom check this query computes (`sql.NAME`) and where it is written
    /// (`jobs/flights.toml:42`); `None` for the query of the built-in checks.
    custom: Option<(String, String)>,
}

/// The aggregate queries running beside the load: one for the built-in checks (null ratio,
/// uniqueness, freshness) and one per `[[checks.sql]]`, so that a custom expression that fails
/// on the data (an integer division by zero, a cast of text that is not a number) fails its
/// own check, with its file and line, and every other check is still measured.
pub struct DatasetAggregates {
    queries: Vec<AggregateQuery>,
}

/// What the aggregate queries measured.
#[derive(Debug, Default)]
pub struct AggregateValues {
    /// Each aggregate's value by name (`rows`, `nulls:F`, `sql:NAME`, ...).
    pub values: HashMap<String, ScalarValue>,
    /// Checks that could not be computed, as failed results: `sql.NAME` for a custom check,
    /// `dataset_checks` when the built-in query failed.
    pub failed: Vec<CheckResult>,
}

impl DatasetAggregates {
    /// Starts the queries over `schema` (the target's), or returns `None` when no check needs
    /// them. `src` is the job file, to say where a failing custom check is written.
    ///
    /// # Errors
    /// [`Error::Internal`] when an expression does not plan (they are validated at compile
    /// time, so that is a bug).
    pub fn start(
        ctx: &SessionContext,
        schema: SchemaRef,
        checks: &ChecksSpec,
        src: &SourceText,
    ) -> Result<Option<DatasetAggregates>> {
        let exprs = aggregate_exprs(checks);
        if exprs.is_empty() {
            return Ok(None);
        }
        let (custom, builtin): (Vec<_>, Vec<_>) = exprs
            .into_iter()
            .partition(|(name, _)| name.starts_with("sql:"));
        let mut queries = vec![AggregateQuery::start(ctx, schema.clone(), builtin, None)?];
        for (name, sql) in custom {
            let check = name.replacen("sql:", "sql.", 1);
            let at = checks
                .sql
                .iter()
                .find(|s| format!("sql.{}", s.name) == check)
                .map(|s| {
                    let (line, _) = src.line_col(s.expr.span().start);
                    format!("{}:{line}", src.path.display())
                })
                .unwrap_or_else(|| src.path.display().to_string());
            let q =
                AggregateQuery::start(ctx, schema.clone(), vec![(name, sql)], Some((check, at)))?;
            queries.push(q);
        }
        Ok(Some(DatasetAggregates { queries }))
    }

    /// Feeds one batch of loaded rows to every query (a query that stopped early is skipped;
    /// its error comes from `finish`).
    ///
    /// # Errors
    /// None today; the signature leaves room for a bounded wait.
    pub async fn send(&mut self, batch: RecordBatch) -> Result<()> {
        for q in &mut self.queries {
            if let Some(tx) = &q.sender {
                if tx.send(batch.clone()).await.is_err() {
                    q.sender = None;
                }
            }
        }
        Ok(())
    }

    /// Ends the input and returns each aggregate by name, and the checks that could not be
    /// computed (their error text redacted by `redact`): a query that failed on the data,
    /// panicked, or returned a value that cannot be read fails its own check, never the run.
    pub async fn finish(self, redact: &(dyn Fn(&str) -> String + Sync)) -> AggregateValues {
        let mut out = AggregateValues::default();
        for mut q in self.queries {
            q.sender = None;
            let custom = q.custom.take();
            // A query that failed on the data, or whose task panicked, fails its check (or,
            // for the built-in query, its checks); the others are still measured.
            let batches = match q.handle.await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    let why = crate::error::datafusion_message(&e);
                    out.failed.push(failed_check(custom, &redact(&why)));
                    continue;
                }
                Err(e) => {
                    out.failed
                        .push(failed_check(custom, &format!("the query stopped: {e}")));
                    continue;
                }
            };
            let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
                continue;
            };
            let values: std::result::Result<Vec<ScalarValue>, _> = (0..q.names.len())
                .map(|i| ScalarValue::try_from_array(b.column(i), 0))
                .collect();
            match values {
                Ok(values) => out.values.extend(q.names.into_iter().zip(values)),
                Err(e) => out.failed.push(failed_check(
                    custom,
                    &format!("its value cannot be read: {e}"),
                )),
            }
        }
        out
    }
}

/// The failed result of a check that could not be computed: `sql.NAME` (with where it is
/// written) for a custom check, `dataset_checks` for the built-in query.
fn failed_check(custom: Option<(String, String)>, why: &str) -> CheckResult {
    let (check, message) = match custom {
        Some((check, at)) => (
            check,
            format!("could not be computed on the loaded rows ({at}): {why}"),
        ),
        None => (
            "dataset_checks".to_string(),
            format!("the dataset checks could not be computed: {why}"),
        ),
    };
    CheckResult {
        check,
        status: CheckStatus::Fail,
        measured: f64::NAN,
        threshold: None,
        message,
    }
}

impl AggregateQuery {
    /// Starts one aggregate query of `exprs` (name, SQL) fed through a bounded channel.
    fn start(
        ctx: &SessionContext,
        schema: SchemaRef,
        exprs: Vec<(String, String)>,
        custom: Option<(String, String)>,
    ) -> Result<AggregateQuery> {
        let err = |e: datafusion::error::DataFusionError| {
            Error::Internal(format!("dataset check query: {e}"))
        };
        let (tx, table) = crate::producer::channel_table(schema)?;
        let df = ctx.read_table(std::sync::Arc::new(table)).map_err(err)?;
        let mut aggs = Vec::new();
        let mut names = Vec::new();
        for (name, sql) in exprs {
            let e = ctx.parse_sql_expr(&sql, df.schema()).map_err(err)?;
            aggs.push(e.alias(format!("c{}", names.len())));
            names.push(name);
        }
        let df = df.aggregate(vec![], aggs).map_err(err)?;
        Ok(AggregateQuery {
            sender: Some(tx),
            handle: tokio::spawn(df.collect()),
            names,
            custom,
        })
    }
}

/// Grades `measured` against thresholds: fail bounds first, then warn bounds.
pub fn grade(
    check: String,
    measured: f64,
    t: &Thresholds,
    describe: &dyn Fn(f64) -> String,
) -> CheckResult {
    let v = describe(measured);
    let (status, threshold, message) = if let Some(x) = t.fail_below.filter(|x| measured < *x) {
        (
            CheckStatus::Fail,
            Some(x),
            format!("{v}, below fail_below = {}", describe(x)),
        )
    } else if let Some(x) = t.fail_above.filter(|x| measured > *x) {
        (
            CheckStatus::Fail,
            Some(x),
            format!("{v}, above fail_above = {}", describe(x)),
        )
    } else if let Some(x) = t.warn_below.filter(|x| measured < *x) {
        (
            CheckStatus::Warn,
            Some(x),
            format!("{v}, below warn_below = {}", describe(x)),
        )
    } else if let Some(x) = t.warn_above.filter(|x| measured > *x) {
        (
            CheckStatus::Warn,
            Some(x),
            format!("{v}, above warn_above = {}", describe(x)),
        )
    } else {
        (CheckStatus::Pass, None, format!("{v}, within thresholds"))
    };
    CheckResult {
        check,
        status,
        measured,
        threshold,
        message,
    }
}

fn as_f64(v: Option<&ScalarValue>) -> Option<f64> {
    let v = v?;
    if v.is_null() {
        return None;
    }
    v.cast_to(&datafusion::arrow::datatypes::DataType::Float64)
        .ok()
        .and_then(|c| match c {
            ScalarValue::Float64(x) => x,
            _ => None,
        })
}

/// Evaluates the aggregate-based checks and the volume check.
///
/// `measured` is [`DatasetAggregates::finish`]'s; a check that could not be computed is
/// reported as failed (and when the built-in query failed, its checks are not graded on
/// missing values). `history` the rows loaded by earlier committed runs, newest first;
/// `rows_loaded` this run's; `started` the run start.
pub fn evaluate(
    checks: &ChecksSpec,
    measured: &AggregateValues,
    rows_loaded: u64,
    history: &[u64],
    started: DateTime<Utc>,
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let values = &measured.values;
    let failed = |check: &str| measured.failed.iter().find(|f| f.check == check);
    if let Some(f) = failed("dataset_checks") {
        out.push(f.clone());
    } else {
        out.extend(builtin_results(checks, values, started));
    }
    if let Some(v) = &checks.volume {
        out.push(volume_result(v, rows_loaded, history));
    }
    for s in &checks.sql {
        let check = format!("sql.{}", s.name);
        if let Some(f) = failed(&check) {
            let mut f = f.clone();
            f.message = format!("{} {}", s.expr.get_ref(), f.message);
            out.push(f);
            continue;
        }
        out.push(sql_result(
            s,
            check,
            as_f64(values.get(&format!("sql:{}", s.name))),
        ));
    }
    out
}

/// The null-ratio, uniqueness and freshness results from the built-in query's values.
fn builtin_results(
    checks: &ChecksSpec,
    values: &HashMap<String, ScalarValue>,
    started: DateTime<Utc>,
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let rows = as_f64(values.get("rows")).unwrap_or(0.0);
    for (field, t) in &checks.null_ratio {
        let nulls = as_f64(values.get(&format!("nulls:{field}"))).unwrap_or(0.0);
        let ratio = if rows > 0.0 { nulls / rows } else { 0.0 };
        let mut r = grade(format!("null_ratio.{field}"), ratio, t, &|x| {
            format!("{:.3}% null", x * 100.0)
        });
        r.message = format!("{field}: {} ({nulls:.0} of {rows:.0} rows)", r.message);
        out.push(r);
    }
    if let Some(u) = &checks.unique {
        let full = as_f64(values.get("unique:rows")).unwrap_or(0.0);
        let distinct = as_f64(values.get("unique:distinct")).unwrap_or(0.0);
        let mut t = u.thresholds();
        if t == Thresholds::default() {
            t.fail_above = Some(0.0);
        }
        let mut r = grade("unique".into(), full - distinct, &t, &|x| {
            format!("{x:.0} duplicate row(s)")
        });
        r.message = format!("key ({}): {}", u.key.join(", "), r.message);
        out.push(r);
    }
    if let Some(f) = &checks.freshness {
        let newest = values.get("freshness").and_then(|v| match v {
            ScalarValue::TimestampMicrosecond(Some(us), _) => Some(*us),
            ScalarValue::Date32(Some(d)) => Some(i64::from(*d) * 86_400_000_000),
            _ => None,
        });
        let t = Thresholds {
            fail_above: f.fail_after_hours,
            warn_above: f.warn_after_hours,
            ..Default::default()
        };
        match newest {
            Some(us) => {
                let hours = (started.timestamp_micros() - us) as f64 / 3_600_000_000.0;
                let mut r = grade("freshness".into(), hours, &t, &|x| format!("{x:.1} h"));
                r.message = format!(
                    "newest {} is {}",
                    f.field,
                    r.message
                        .replace("fail_above", "fail_after_hours")
                        .replace("warn_above", "warn_after_hours")
                        .replace(", within thresholds", " old, within thresholds")
                );
                out.push(r);
            }
            None => out.push(CheckResult {
                check: "freshness".into(),
                status: if f.fail_after_hours.is_some() {
                    CheckStatus::Fail
                } else {
                    CheckStatus::Warn
                },
                measured: f64::INFINITY,
                threshold: f.fail_after_hours.or(f.warn_after_hours),
                message: format!("no value of {} was loaded", f.field),
            }),
        }
    }
    out
}

/// The volume check: rows loaded against the median of the last `runs` committed runs.
fn volume_result(v: &VolumeSpec, rows_loaded: u64, history: &[u64]) -> CheckResult {
    let recent: Vec<u64> = history.iter().take(v.runs.max(1)).copied().collect();
    match median(&recent) {
        Some(m) if m > 0.0 => {
            let ratio = rows_loaded as f64 / m;
            let mut r = grade("volume".into(), ratio, &v.thresholds(), &|x| {
                format!("{x:.2}×")
            });
            r.message = format!(
                "{rows_loaded} rows loaded; median of the last {} committed run(s) is {m:.0}: {}",
                recent.len(),
                r.message
            );
            r
        }
        _ => CheckResult {
            check: "volume".into(),
            status: CheckStatus::Pass,
            measured: 1.0,
            threshold: None,
            message: "no committed run with rows in the history yet; nothing to compare".into(),
        },
    }
}

/// A custom SQL check graded on its value (`None`: the aggregate was NULL).
fn sql_result(s: &SqlCheckSpec, check: String, value: Option<f64>) -> CheckResult {
    match value {
        Some(x) => {
            let mut r = grade(check, x, &s.thresholds(), &|x| format!("{x}"));
            r.message = format!("{} = {}", s.expr.get_ref(), r.message);
            r
        }
        None => CheckResult {
            check,
            status: CheckStatus::Warn,
            measured: f64::NAN,
            threshold: None,
            message: format!("{} is NULL (no rows loaded?)", s.expr.get_ref()),
        },
    }
}

/// The median of `xs` (mean of the two middle values for an even count), or `None` if empty.
pub fn median(xs: &[u64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_grades() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5, 1, 3]), Some(3.0));
        assert_eq!(median(&[4, 1, 3, 10]), Some(3.5));
        let t = Thresholds {
            fail_below: Some(0.5),
            warn_below: Some(0.8),
            ..Default::default()
        };
        let f = |x: f64| format!("{x}");
        assert_eq!(grade("v".into(), 0.4, &t, &f).status, CheckStatus::Fail);
        assert_eq!(grade("v".into(), 0.6, &t, &f).status, CheckStatus::Warn);
        assert_eq!(grade("v".into(), 0.8, &t, &f).status, CheckStatus::Pass);
    }
}
