//! Row rules and dataset checks.
//!
//! **Row rules** decide, per canonical row, whether it may be loaded. Three families:
//!
//! | rule name                       | from                         | fails when                      |
//! |---------------------------------|------------------------------|---------------------------------|
//! | `cast.<field>`                  | every mapped field           | a non-null value does not cast to the field's type |
//! | `<model>.<field>.required`      | `required` / `primary_key`   | the value is null               |
//! | `<model>.<field>.enum`          | `enum = [...]`               | the value is not listed         |
//! | `<model>.<field>.min` / `.max`  | `min` / `max` (inclusive)    | the value is out of bounds      |
//! | `<model>.<field>.pattern`       | `pattern`                    | the regex does not match        |
//! | `<model>.<field>.max_length`    | `max_length`                 | longer, in characters           |
//! | `<rule name>`                   | a mapping's `[[rule]]`       | `check` is false (or null with `nulls = "fail"`) |
//!
//! Constraint rules let nulls pass (SQL `CHECK` semantics) except `required`, so a missing
//! optional value is not reported twice. Every rule compiles to a boolean DataFusion
//! expression that is **true when the row fails**; all of them are evaluated in the same
//! projection as the mapping, so valid and quarantined rows come from one pass.
//!
//! **Dataset checks** look at the run as a whole once every row is seen, with `warn` and
//! `fail` thresholds; `fail` is evaluated first. A failing check blocks the target commit.

use std::fmt;

use datafusion::logical_expr::{ident, lit, Expr};
use serde::Serialize;
use std::ops::Not;

use crate::config::spec::{ChecksSpec, NullPolicy, RuleAction};
use crate::model::{CanonicalModel, Literal};

/// The column of a target that lists the `flag` rules each loaded row failed
/// (`list<utf8>`, never null; an empty list for a row without flags).
pub const DQ_FLAGS_COLUMN: &str = "_dq_flags";

/// Which family a row rule belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// A value did not cast to the canonical type.
    Cast,
    /// Null in a required field.
    Required,
    /// Value outside `enum`.
    Enum,
    /// Below `min`.
    Min,
    /// Above `max`.
    Max,
    /// `pattern` did not match.
    Pattern,
    /// Longer than `max_length`.
    MaxLength,
    /// A mapping's custom `check` (SQL boolean, possibly across fields).
    Business,
    /// A malformed source record (CSV).
    Malformed,
    /// A duplicate key within the run (`unique`).
    Unique,
    /// A value missing from another source or table (`references`).
    References,
    /// A mapping expression failed to evaluate on the row's values (`eval.<field>`).
    Eval,
}

/// A row rule, compiled.
#[derive(Debug, Clone)]
pub struct RowRule {
    /// Rule name as shown in the quarantine and report (`flight.origin.pattern`).
    pub name: String,
    /// Family.
    pub kind: RuleKind,
    /// Canonical field the rule is about, if any.
    pub field: Option<String>,
    /// Boolean expression over the canonical row that is **true when the row fails**.
    /// Canonical fields are unqualified columns; source columns are `alias.column`.
    pub failed: Expr,
    /// Human-readable reason, with `{...}` placeholders filled from the failing row.
    pub reason: ReasonTemplate,
    /// The rule's condition as the user would read it (for `plan` output).
    pub description: String,
    /// What happens to a failing row.
    pub action: RuleAction,
}

pub use crate::model::literal_for;

/// The constraint rules a model declares, in field order.
pub fn model_rules(model: &CanonicalModel) -> Vec<RowRule> {
    let mut rules = Vec::new();
    for f in &model.fields {
        let c = ident(&f.name);
        let prefix = format!("{}.{}", model.name, f.name);
        if f.required {
            rules.push(RowRule {
                name: format!("{prefix}.required"),
                kind: RuleKind::Required,
                field: Some(f.name.clone()),
                failed: c.clone().is_null(),
                reason: ReasonTemplate::literal(format!("{} is required but missing", f.name)),
                description: format!("{} IS NOT NULL", f.name),
                action: RuleAction::Quarantine,
            });
        }
        let ty = f.data_type;
        if let Some(values) = &f.allowed {
            let list: Vec<Expr> = values
                .iter()
                .filter_map(|v| literal_for(v, ty).ok())
                .map(lit)
                .collect();
            let shown: Vec<String> = values.iter().map(Literal::to_string).collect();
            rules.push(RowRule {
                name: format!("{prefix}.enum"),
                kind: RuleKind::Enum,
                field: Some(f.name.clone()),
                failed: c.clone().in_list(list, true),
                reason: ReasonTemplate::with_value(
                    &format!("{} ", f.name),
                    &f.name,
                    format!(" is not one of {}", shown.join(", ")),
                ),
                description: format!("{} IN ({})", f.name, shown.join(", ")),
                action: RuleAction::Quarantine,
            });
        }
        if let Some(min) = f.min.as_ref().and_then(|m| literal_for(m, ty).ok()) {
            rules.push(RowRule {
                name: format!("{prefix}.min"),
                kind: RuleKind::Min,
                field: Some(f.name.clone()),
                failed: c.clone().lt(lit(min.clone())),
                reason: ReasonTemplate::with_value(
                    &format!("{} ", f.name),
                    &f.name,
                    format!(" is below the minimum {min}"),
                ),
                description: format!("{} >= {min}", f.name),
                action: RuleAction::Quarantine,
            });
        }
        if let Some(max) = f.max.as_ref().and_then(|m| literal_for(m, ty).ok()) {
            rules.push(RowRule {
                name: format!("{prefix}.max"),
                kind: RuleKind::Max,
                field: Some(f.name.clone()),
                failed: c.clone().gt(lit(max.clone())),
                reason: ReasonTemplate::with_value(
                    &format!("{} ", f.name),
                    &f.name,
                    format!(" is above the maximum {max}"),
                ),
                description: format!("{} <= {max}", f.name),
                action: RuleAction::Quarantine,
            });
        }
        if let Some(p) = &f.pattern {
            rules.push(RowRule {
                name: format!("{prefix}.pattern"),
                kind: RuleKind::Pattern,
                field: Some(f.name.clone()),
                failed: datafusion::functions::expr_fn::regexp_like(
                    c.clone(),
                    lit(p.clone()),
                    None,
                )
                .not(),
                reason: ReasonTemplate::with_value(
                    &format!("{} '", f.name),
                    &f.name,
                    format!("' does not match pattern {p}"),
                ),
                description: format!("{} matches /{p}/", f.name),
                action: RuleAction::Quarantine,
            });
        }
        if let Some(n) = f.max_length {
            rules.push(RowRule {
                name: format!("{prefix}.max_length"),
                kind: RuleKind::MaxLength,
                field: Some(f.name.clone()),
                failed: datafusion::functions::expr_fn::character_length(c.clone())
                    .gt(lit(n as i64)),
                reason: ReasonTemplate::with_value(
                    &format!("{} '", f.name),
                    &f.name,
                    format!("' is longer than {n} characters"),
                ),
                description: format!("length({}) <= {n}", f.name),
                action: RuleAction::Quarantine,
            });
        }
    }
    rules
}

pub use crate::reason::ReasonTemplate;

/// Turns a check (true = pass) into a failure expression under a null policy.
pub fn failed_when_not(check: Expr, nulls: NullPolicy) -> Expr {
    let null_passes = matches!(nulls, NullPolicy::Pass);
    datafusion::functions::expr_fn::coalesce(vec![check, lit(null_passes)]).not()
}

/// Outcome of a dataset check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Within thresholds.
    Pass,
    /// A warn threshold was crossed; the run still commits.
    Warn,
    /// A fail threshold was crossed; the target is not committed.
    Fail,
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
        })
    }
}

/// One dataset check's result, as recorded in the run report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// `row_count` or `quarantine_ratio`.
    pub check: String,
    /// Outcome.
    pub status: CheckStatus,
    /// The measured value (rows, or a fraction).
    pub measured: f64,
    /// The threshold crossed, or null when passing.
    pub threshold: Option<f64>,
    /// One sentence a person can act on.
    pub message: String,
}

/// Evaluates the job's dataset checks on a run's counts.
///
/// `rows_loaded` is the number of rows that would be committed to the target; the quarantine
/// ratio's denominator is `rows_read` (every row of the driving source), so a source that is
/// entirely rejected scores 1.0. A run that read nothing scores 0.0.
pub fn evaluate_checks(
    checks: &ChecksSpec,
    rows_read: u64,
    rows_loaded: u64,
    rows_quarantined: u64,
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    if let Some(rc) = &checks.row_count {
        let n = rows_loaded;
        let (status, threshold, message) = if let Some(t) = rc.fail_below.filter(|t| n < *t) {
            (
                CheckStatus::Fail,
                Some(t),
                format!("{n} rows to load, fewer than fail_below = {t}"),
            )
        } else if let Some(t) = rc.fail_above.filter(|t| n > *t) {
            (
                CheckStatus::Fail,
                Some(t),
                format!("{n} rows to load, more than fail_above = {t}"),
            )
        } else if let Some(t) = rc.warn_below.filter(|t| n < *t) {
            (
                CheckStatus::Warn,
                Some(t),
                format!("{n} rows to load, fewer than warn_below = {t}"),
            )
        } else if let Some(t) = rc.warn_above.filter(|t| n > *t) {
            (
                CheckStatus::Warn,
                Some(t),
                format!("{n} rows to load, more than warn_above = {t}"),
            )
        } else {
            (
                CheckStatus::Pass,
                None,
                format!("{n} rows to load, within bounds"),
            )
        };
        out.push(CheckResult {
            check: "row_count".into(),
            status,
            measured: n as f64,
            threshold: threshold.map(|t| t as f64),
            message,
        });
    }
    if let Some(q) = &checks.quarantine_ratio {
        let ratio = if rows_read == 0 {
            0.0
        } else {
            rows_quarantined as f64 / rows_read as f64
        };
        let pct = |x: f64| format!("{:.3}%", x * 100.0);
        let (status, threshold, message) = if let Some(t) = q.fail_above.filter(|t| ratio > *t) {
            (CheckStatus::Fail, Some(t), format!("{} of rows quarantined ({rows_quarantined} of {rows_read}), above fail_above = {}", pct(ratio), pct(t)))
        } else if let Some(t) = q.warn_above.filter(|t| ratio > *t) {
            (CheckStatus::Warn, Some(t), format!("{} of rows quarantined ({rows_quarantined} of {rows_read}), above warn_above = {}", pct(ratio), pct(t)))
        } else {
            (
                CheckStatus::Pass,
                None,
                format!(
                    "{} of rows quarantined ({rows_quarantined} of {rows_read})",
                    pct(ratio)
                ),
            )
        };
        out.push(CheckResult {
            check: "quarantine_ratio".into(),
            status,
            measured: ratio,
            threshold,
            message,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::spec::{QuarantineRatioSpec, RowCountSpec};

    fn checks(rc: RowCountSpec, q: QuarantineRatioSpec) -> ChecksSpec {
        ChecksSpec {
            row_count: Some(rc),
            quarantine_ratio: Some(q),
            ..Default::default()
        }
    }

    #[test]
    fn fail_thresholds_win_over_warn() {
        let c = checks(
            RowCountSpec {
                fail_below: Some(10),
                warn_below: Some(100),
                ..Default::default()
            },
            QuarantineRatioSpec {
                fail_above: Some(0.5),
                warn_above: Some(0.1),
            },
        );
        let r = evaluate_checks(&c, 20, 5, 15);
        assert_eq!(r[0].status, CheckStatus::Fail);
        assert_eq!(r[0].threshold, Some(10.0));
        assert_eq!(r[1].status, CheckStatus::Fail);
        assert_eq!(r[1].measured, 0.75);
        let r = evaluate_checks(&c, 100, 50, 20);
        assert_eq!(r[0].status, CheckStatus::Warn);
        assert_eq!(r[1].status, CheckStatus::Warn);
        let r = evaluate_checks(&c, 1000, 1000, 0);
        assert!(r.iter().all(|c| c.status == CheckStatus::Pass));
        // Nothing read: the ratio is 0, not NaN.
        assert_eq!(evaluate_checks(&c, 0, 0, 0)[1].measured, 0.0);
    }
}
