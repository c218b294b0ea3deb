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

use crate::config::spec::{ChecksSpec, HasThresholds, Thresholds};
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

/// Checks the job's dataset checks against the model: fields exist, freshness is on a date or
/// timestamp, SQL aggregates parse and return a number. Returns (key path, message, hint) per
/// problem.
pub fn validate(
    ctx: &SessionContext,
    model: &CanonicalModel,
    checks: &ChecksSpec,
) -> Vec<(String, String, Option<String>)> {
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
    let Ok(schema) = DFSchema::try_from(model.arrow_schema().as_ref().clone()) else {
        return out;
    };
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
        if !crate::config::is_identifier(&s.name) {
            out.push((
                format!("checks.sql.{}", s.name),
                format!("check name `{}` is not snake_case", s.name),
                None,
            ));
        }
        let expr = match ctx.parse_sql_expr(s.expr.get_ref(), &schema) {
            Ok(e)
                if datafusion::logical_expr::utils::find_aggregate_exprs(std::slice::from_ref(
                    &e,
                ))
                .is_empty() =>
            {
                out.push((
                    format!("checks.sql.{}.expr", s.name),
                    format!(
                        "check `{}` is not an aggregate: `{}` has a value per row, not one for the run",
                        s.name,
                        s.expr.get_ref()
                    ),
                    Some("aggregate it, e.g. `avg(...)`, `max(...)` or `count(*) FILTER (WHERE ...)`".into()),
                ));
                continue;
            }
            Ok(e) => e,
            Err(e) => {
                out.push((
                    format!("checks.sql.{}.expr", s.name),
                    format!("in check `{}`: {}", s.name, e.strip_backtrace()),
                    Some(format!(
                        "write an aggregate over fields: {}",
                        names.join(", ")
                    )),
                ));
                continue;
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
                        format!("checks.sql.{}.expr", s.name),
                        format!(
                            "check `{}` returns {t}; thresholds need a number",
                            s.name
                        ),
                        Some("aggregate to a number, e.g. `avg(distance_km)` or `count(*) FILTER (WHERE ...)`".into()),
                    ));
                }
            }
            Err(e) => out.push((
                format!("checks.sql.{}.expr", s.name),
                format!(
                    "in check `{}`: {} (it must be an aggregate such as avg(x) or count(*))",
                    s.name,
                    e.strip_backtrace()
                ),
                None,
            )),
        }
    }
    out
}

/// The aggregate query running beside the load.
pub struct DatasetAggregates {
    sender: Option<mpsc::Sender<RecordBatch>>,
    handle: JoinHandle<datafusion::error::Result<Vec<RecordBatch>>>,
    names: Vec<String>,
}

impl DatasetAggregates {
    /// Starts the query over `schema` (the target's), or returns `None` when no check needs
    /// it.
    ///
    /// # Errors
    /// [`Error::Engine`] when an expression does not plan (validated at compile time, so a
    /// bug).
    pub fn start(
        ctx: &SessionContext,
        schema: SchemaRef,
        checks: &ChecksSpec,
    ) -> Result<Option<DatasetAggregates>> {
        let exprs = aggregate_exprs(checks);
        if exprs.is_empty() {
            return Ok(None);
        }
        let err = |e: datafusion::error::DataFusionError| {
            Error::Internal(format!("dataset check query: {e}"))
        };
        let (tx, table) = crate::sink::parquet::channel_table(schema)?;
        let df = ctx.read_table(std::sync::Arc::new(table)).map_err(err)?;
        let mut aggs = Vec::new();
        let mut names = Vec::new();
        for (name, sql) in exprs {
            let e = ctx.parse_sql_expr(&sql, df.schema()).map_err(err)?;
            aggs.push(e.alias(format!("c{}", names.len())));
            names.push(name);
        }
        let df = df.aggregate(vec![], aggs).map_err(err)?;
        let handle = tokio::spawn(df.collect());
        Ok(Some(DatasetAggregates {
            sender: Some(tx),
            handle,
            names,
        }))
    }

    /// Feeds one batch of loaded rows.
    ///
    /// # Errors
    /// [`Error::Internal`] when the query stopped early (its error comes from `finish`).
    pub async fn send(&mut self, batch: RecordBatch) -> Result<()> {
        if let Some(tx) = &self.sender {
            if tx.send(batch).await.is_err() {
                self.sender = None;
            }
        }
        Ok(())
    }

    /// Ends the input and returns each aggregate by name.
    ///
    /// # Errors
    /// [`Error::Internal`] when the query failed.
    pub async fn finish(mut self) -> Result<HashMap<String, ScalarValue>> {
        self.sender = None;
        let batches = self
            .handle
            .await
            .map_err(|e| Error::Internal(format!("dataset check query: {e}")))?
            .map_err(|e| Error::Internal(format!("dataset check query: {e}")))?;
        let mut out = HashMap::new();
        if let Some(b) = batches.iter().find(|b| b.num_rows() > 0) {
            for (i, name) in self.names.iter().enumerate() {
                let v = ScalarValue::try_from_array(b.column(i), 0)
                    .map_err(|e| Error::Internal(format!("dataset check value: {e}")))?;
                out.insert(name.clone(), v);
            }
        }
        Ok(out)
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
/// `values` are [`DatasetAggregates::finish`]'s; `history` the rows loaded by earlier
/// committed runs, newest first; `rows_loaded` this run's; `started` the run start.
pub fn evaluate(
    checks: &ChecksSpec,
    values: &HashMap<String, ScalarValue>,
    rows_loaded: u64,
    history: &[u64],
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
    if let Some(v) = &checks.volume {
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
                out.push(r);
            }
            _ => out.push(CheckResult {
                check: "volume".into(),
                status: CheckStatus::Pass,
                measured: 1.0,
                threshold: None,
                message: "no committed run with rows in the history yet; nothing to compare".into(),
            }),
        }
    }
    for s in &checks.sql {
        let value = as_f64(values.get(&format!("sql:{}", s.name)));
        match value {
            Some(x) => {
                let mut r = grade(format!("sql.{}", s.name), x, &s.thresholds(), &|x| {
                    format!("{x}")
                });
                r.message = format!("{} = {}", s.expr.get_ref(), r.message);
                out.push(r);
            }
            None => out.push(CheckResult {
                check: format!("sql.{}", s.name),
                status: CheckStatus::Warn,
                measured: f64::NAN,
                threshold: None,
                message: format!("{} is NULL (no rows loaded?)", s.expr.get_ref()),
            }),
        }
    }
    out
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
