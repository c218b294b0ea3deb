//! The mapping compiler: a job's mapping, model and sources become one DataFusion `LogicalPlan`.
//!
//! ```text
//!  from source ─┐
//!  join source ─┼─ JOIN … ON (mapping [[join]])
//!  join source ─┘
//!        │  Projection  [let] helpers                      __let.<name>
//!        │  Projection  field expressions as written        __v.<field>
//!        │  Projection  missing values → NULL, cast to the   __canonical.<field>
//!        │              model type (TRY_CAST when it can fail per row)
//!        ▼  Projection  one boolean per row rule: true = the row fails     __flag.<n>
//!   output: canonical fields, source file/line, raw source values, reason values, flags
//! ```
//!
//! Only built-in plan nodes are used (scans, window, union, join, projection), so the same plan
//! can run distributed. The executor ([`crate::run`]) splits the output stream into valid rows
//! and quarantined rows in one pass.
//!
//! Every expression is parsed by DataFusion's SQL parser and type-checked here, before any row
//! is read: an unknown column, a type that does not fit the field, or a lossy implicit cast is a
//! [`Diagnostic`] naming the mapping file, line and field.
//!
//! Names in expressions: source columns as `alias.column` (or bare when only one source has
//! that column), `[let]` names bare; rules may also use canonical fields bare. Bare names are
//! resolved in this order: canonical field (rules only), let, source column.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{
    Column, DFSchema, DataFusionError, ScalarValue, SchemaError, TableReference,
};
use datafusion::logical_expr::{
    cast, lit, try_cast, when, Expr, ExprSchemable, JoinType, LogicalPlan,
};
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::{visit_expressions_mut, Expr as SqlExpr, Ident};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::config::interpolate::Redactor;
use crate::config::spec::{
    HasThresholds, JoinKind, LoadMode, NullPolicy, RuleAction, SourceFormat,
};
use crate::config::{Job, Mapping, NamedExpr, Project, ReferenceTarget, RuleTest};
pub use crate::db::ExtractMode;
use crate::diagnostic::{did_you_mean, Diagnostics};
use crate::error::{Error, Result};
use crate::model::{CanonicalModel, FieldType};
use crate::quality::{failed_when_not, model_rules, ReasonTemplate, RowRule, RuleKind};
use crate::row_errors::RowGuardPart;
use crate::source::{
    self, qualified_col, ScannedSource, SourceInput, DRIVING_ROW_COLUMN, FILE_COLUMN, LINE_COLUMN,
    PARSE_FAILED_PREFIX, RAW_PREFIX,
};
use datafusion::functions_window::expr_fn::{first_value, row_number};
use datafusion::logical_expr::ExprFunctionExt;
use datafusion::logical_expr::ScalarUDF;
use std::collections::HashMap;
use std::ops::Not;
use std::sync::Arc;

const LET: &str = "__let";
const VALUE: &str = "__v";
const CANONICAL: &str = "__canonical";
const DUPLICATE: &str = "__dup";
/// A guarded expression's `{value, error}` struct, before it is split.
const GUARDED: &str = "__guarded";
/// Error text of a field's expression on a row (see [`crate::row_errors`]).
const EVAL: &str = "__eval";
/// Error text of a `[let]` expression on a row.
const EVAL_LET: &str = "__eval_let";

/// The output columns of one projection step of mapping expressions (lets or fields): each
/// expression's value under `qualifier.<name>`, and for an expression that can fail per row, its
/// error text under `eval_qualifier.<name>`.
struct ValueOutputs {
    qualifier: &'static str,
    eval_qualifier: &'static str,
    plain: Vec<Expr>,
    guarded: Vec<(String, Expr)>,
}

impl ValueOutputs {
    fn new(qualifier: &'static str, eval_qualifier: &'static str) -> Self {
        ValueOutputs {
            qualifier,
            eval_qualifier,
            plain: Vec::new(),
            guarded: Vec::new(),
        }
    }

    /// Adds `expr` as `name`, guarded by a [`crate::row_errors::RowGuard`] when it can fail on
    /// a row's values.
    fn push(
        &mut self,
        state: &datafusion::execution::SessionState,
        name: &str,
        expr: Expr,
        schema: &DFSchema,
    ) {
        match crate::row_errors::guard(state, &expr, schema) {
            Some(call) => self.guarded.push((name.to_string(), call)),
            None => self
                .plain
                .push(expr.alias_qualified(Some(TableReference::bare(self.qualifier)), name)),
        }
    }

    fn is_guarded(&self, name: &str) -> bool {
        self.guarded.iter().any(|(n, _)| n == name)
    }

    /// `frame` with its columns and these outputs: a projection computing the guarded structs
    /// (once each), then one splitting them into value and error columns.
    fn select(self, frame: DataFrame) -> datafusion::common::Result<DataFrame> {
        let frame = if self.guarded.is_empty() {
            frame
        } else {
            let mut exprs = all_columns(frame.schema());
            for (name, call) in &self.guarded {
                exprs.push(
                    call.clone()
                        .alias_qualified(Some(TableReference::bare(GUARDED)), name),
                );
            }
            frame.select(exprs)?
        };
        let mut exprs = columns_except(frame.schema(), GUARDED);
        for (name, _) in &self.guarded {
            let s = qualified_col(GUARDED, name);
            exprs.push(
                ScalarUDF::from(RowGuardPart::value())
                    .call(vec![s.clone()])
                    .alias_qualified(Some(TableReference::bare(self.qualifier)), name),
            );
            exprs.push(
                ScalarUDF::from(RowGuardPart::error())
                    .call(vec![s])
                    .alias_qualified(Some(TableReference::bare(self.eval_qualifier)), name),
            );
        }
        exprs.extend(self.plain);
        frame.select(exprs)
    }
}

/// The `eval.<name>` rule of a guarded expression: fails when the row's error text is set.
struct EvalRule {
    rule: String,
    qualifier: &'static str,
    name: String,
}

impl EvalRule {
    fn new(rule: String, qualifier: &'static str, name: &str) -> Self {
        EvalRule {
            rule,
            qualifier,
            name: name.to_string(),
        }
    }

    fn rule(&self) -> RowRule {
        RowRule {
            name: self.rule.clone(),
            kind: RuleKind::Eval,
            field: (self.qualifier == EVAL).then(|| self.name.clone()),
            failed: qualified_col(self.qualifier, &self.name).is_not_null(),
            reason: ReasonTemplate::with_value(
                &format!("{} could not be computed: ", self.name),
                &format!("{}.{}", self.qualifier, self.name),
                String::new(),
            ),
            description: format!("{} evaluates without error", self.name),
            action: RuleAction::Quarantine,
        }
    }
}

/// `"updated_at DESC NULLS LAST"` → (`"updated_at"`, ascending?, nulls first?). SQL defaults:
/// ascending; nulls last when ascending, first when descending.
fn split_sort(sql: &str) -> (&str, bool, bool) {
    let mut rest = sql.trim();
    let mut nulls_first = None;
    let upper = rest.to_ascii_uppercase();
    if upper.ends_with(" NULLS FIRST") {
        nulls_first = Some(true);
        rest = rest[..rest.len() - 12].trim_end();
    } else if upper.ends_with(" NULLS LAST") {
        nulls_first = Some(false);
        rest = rest[..rest.len() - 11].trim_end();
    }
    let upper = rest.to_ascii_uppercase();
    let mut asc = true;
    if upper.ends_with(" DESC") {
        asc = false;
        rest = rest[..rest.len() - 5].trim_end();
    } else if upper.ends_with(" ASC") {
        rest = rest[..rest.len() - 4].trim_end();
    }
    (rest, asc, nulls_first.unwrap_or(!asc))
}

/// The distinct keys already in the job's target, as `<q>.k0`, `<q>.k1`, ... (typed as the
/// model's fields) and `<q>.hit`; `None` when the target does not exist yet.
async fn target_keys(
    project: &Project,
    job: &Job,
    model: &CanonicalModel,
    keys: &[String],
    q: &str,
    ctx: &SessionContext,
    redactor: &Redactor,
) -> Result<Option<DataFrame>> {
    if job.target.is_database() {
        // A merge or scd2 load matches keys itself; an append replay may add duplicates of
        // a key the table has, which its primary key refuses.
        return Ok(None);
    }
    let dir = match (&job.target.table, &job.target.path) {
        (Some(t), _) => project.path(project.settings.warehouse.join(t.get_ref())),
        (None, Some(p)) => resolve_dir(project, p.get_ref(), redactor)
            .map_err(|e| Error::target(p.get_ref(), e))?,
        (None, None) => return Ok(None),
    };
    if !dir.is_dir() {
        return Ok(None);
    }
    let to_err = |e: DataFusionError| Error::engine(&job.name, redactor, &e);
    let partitions: Vec<(String, DataType)> = job
        .target
        .partition_by
        .iter()
        .filter_map(|p| {
            model
                .field(p.get_ref())
                .map(|f| (f.name.clone(), f.data_type.to_arrow()))
        })
        .collect();
    let frame = ctx
        .read_parquet(
            dir.to_string_lossy().to_string(),
            datafusion::prelude::ParquetReadOptions::default().table_partition_cols(partitions),
        )
        .await
        .map_err(to_err)?;
    let qr = TableReference::bare(q);
    let mut exprs = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let Some(f) = model.field(k) else {
            return Ok(None);
        };
        exprs.push(
            try_cast(source::ident_col(k), f.data_type.to_arrow())
                .alias_qualified(Some(qr.clone()), format!("k{i}")),
        );
    }
    let frame = frame
        .select(exprs)
        .map_err(to_err)?
        .distinct()
        .map_err(to_err)?;
    let mut exprs = all_columns(frame.schema());
    exprs.push(lit(true).alias_qualified(Some(qr), "hit"));
    Ok(Some(frame.select(exprs).map_err(to_err)?))
}

/// Why a reference could not be planned: a mistake in the mapping or job, or a run error.
enum RefError {
    Config(String, Option<String>),
    Run(Error),
}

/// The valid values of a `references` rule, converted to `key_type`, as a frame with the
/// columns `<q>.key` (distinct)
/// and `<q>.hit` (true), and how to name the reference in reasons (`airports.faa`).
#[allow(clippy::too_many_arguments)]
async fn reference_frame(
    project: &Project,
    job: &Job,
    ctx: &SessionContext,
    target: &ReferenceTarget,
    column: &str,
    q: &str,
    redactor: &Redactor,
    inputs: &HashMap<String, SourceInput>,
    key_type: &DataType,
) -> std::result::Result<(DataFrame, String), RefError> {
    let to_err = |e: DataFusionError| RefError::Run(Error::engine(&job.name, redactor, &e));
    let (frame, value, shown, columns) = match target {
        ReferenceTarget::Source(name) => {
            let spec = job.sources.get(name).ok_or_else(|| {
                RefError::Run(Error::Internal(format!("source `{name}` not bound")))
            })?;
            let alias = format!("{q}_source");
            let input = inputs.get(name).unwrap_or(&SourceInput::Files);
            let scanned = source::scan_input(
                ctx,
                &project.root,
                name,
                &alias,
                spec,
                false,
                redactor,
                input,
            )
            .await
            .map_err(RefError::Run)?;
            let columns: Vec<String> = scanned.columns.iter().map(|c| c.name.clone()).collect();
            (
                scanned.frame,
                qualified_col(&alias, column),
                format!("{name}.{column}"),
                columns,
            )
        }
        ReferenceTarget::Table(table) => {
            let dir = project.path(project.settings.warehouse.join(table));
            if !dir.is_dir() {
                return Err(RefError::Config(
                    format!("table `{table}` is not loaded: {} does not exist", dir.display()),
                    Some("run the job that loads it first, or reference its source with `source = \"...\"`".into()),
                ));
            }
            let frame = ctx
                .read_parquet(
                    dir.to_string_lossy().to_string(),
                    datafusion::prelude::ParquetReadOptions::default(),
                )
                .await
                .map_err(to_err)?;
            let columns: Vec<String> = frame
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            (
                frame,
                source::ident_col(column),
                format!("table {table}.{column}"),
                columns,
            )
        }
    };
    if !columns.iter().any(|c| c == column) {
        return Err(RefError::Config(
            format!("{shown} does not exist"),
            Some(
                match did_you_mean(column, columns.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("columns: {}", columns.join(", ")),
                },
            ),
        ));
    }
    let qr = TableReference::bare(q);
    // Convert before DISTINCT, so keys that convert to the same value ("7", "07") match once.
    let frame = frame
        .select(vec![
            try_cast(value, key_type.clone()).alias_qualified(Some(qr.clone()), "key")
        ])
        .map_err(to_err)?
        .distinct()
        .map_err(to_err)?;
    let frame = frame
        .select(vec![
            qualified_col(q, "key"),
            lit(true).alias_qualified(Some(qr), "hit"),
        ])
        .map_err(to_err)?;
    Ok((frame, shown))
}

/// How a field expression's type reaches the field's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CastClass {
    /// Already the field's type.
    Same,
    /// Every value converts exactly (int32 → int64; Avro's promotion rules, plus exact decimals).
    Widen,
    /// Text parsed per row; a value that does not parse fails rule `cast.<field>`.
    Parse,
    /// Would lose information; needs an explicit conversion in the expression.
    Lossy(String),
    /// Not convertible at all.
    Incompatible(String),
}

fn int_digits(t: &DataType) -> Option<u8> {
    Some(match t {
        DataType::Int8 | DataType::UInt8 => 3,
        DataType::Int16 | DataType::UInt16 => 5,
        DataType::Int32 | DataType::UInt32 => 10,
        DataType::Int64 => 19,
        DataType::UInt64 => 20,
        _ => return None,
    })
}

/// Classifies the conversion of an expression of type `from` into field type `to`.
pub fn classify_cast(from: &DataType, to: FieldType) -> CastClass {
    use DataType as D;
    if from == &to.to_arrow() {
        return CastClass::Same;
    }
    if matches!(from, D::Null) {
        return CastClass::Widen;
    }
    let is_text = matches!(from, D::Utf8 | D::LargeUtf8 | D::Utf8View);
    if is_text {
        return if to == FieldType::String {
            CastClass::Same
        } else {
            CastClass::Parse
        };
    }
    let lossy = |why: &str| CastClass::Lossy(format!("{from} to {to} {why}"));
    let wrong = || CastClass::Incompatible(format!("the expression is {from}, the field is {to}"));
    match to {
        FieldType::String => wrong(),
        FieldType::Int32 => match from {
            D::Int8 | D::Int16 | D::UInt8 | D::UInt16 => CastClass::Widen,
            D::Int64 | D::UInt32 | D::UInt64 => lossy("can overflow"),
            D::Float16 | D::Float32 | D::Float64 | D::Decimal128(..) | D::Decimal256(..) => {
                lossy("drops the fractional part")
            }
            _ => wrong(),
        },
        FieldType::Int64 => match from {
            D::Int8 | D::Int16 | D::Int32 | D::UInt8 | D::UInt16 | D::UInt32 => CastClass::Widen,
            D::UInt64 => lossy("can overflow"),
            D::Float16 | D::Float32 | D::Float64 | D::Decimal128(..) | D::Decimal256(..) => {
                lossy("drops the fractional part")
            }
            _ => wrong(),
        },
        FieldType::Float64 => match from {
            D::Float16 | D::Float32 => CastClass::Widen,
            // Avro promotes int and long to double; so do we.
            t if int_digits(t).is_some() => CastClass::Widen,
            D::Decimal128(..) | D::Decimal256(..) => lossy("rounds decimal digits"),
            _ => wrong(),
        },
        FieldType::Decimal { precision, scale } => {
            let int_room = precision as i16 - scale as i16;
            match from {
                t if int_digits(t).is_some() => {
                    if int_digits(t).unwrap_or(u8::MAX) as i16 <= int_room {
                        CastClass::Widen
                    } else {
                        lossy("can overflow the integer digits")
                    }
                }
                D::Decimal128(p, s) | D::Decimal256(p, s) => {
                    if *s <= scale && (*p as i16 - *s as i16) <= int_room {
                        CastClass::Widen
                    } else {
                        lossy("does not fit exactly")
                    }
                }
                D::Float16 | D::Float32 | D::Float64 => lossy("is not exact (binary floating point)"),
                _ => wrong(),
            }
        }
        FieldType::Boolean => wrong(),
        FieldType::Date => match from {
            D::Date64 => CastClass::Widen,
            D::Timestamp(..) => lossy("drops the time of day"),
            _ => wrong(),
        },
        FieldType::Timestamp => match from {
            // Sub-microsecond digits are truncated, as Parquet and Spark do.
            D::Timestamp(_, Some(_)) => CastClass::Widen,
            D::Timestamp(_, None) => CastClass::Incompatible(format!(
                "the expression is {from}, a timestamp without time zone; the field is an instant in UTC"
            )),
            D::Date32 | D::Date64 => CastClass::Incompatible(
                "the expression is a date; the field is an instant (timestamp with time zone)".into(),
            ),
            _ => wrong(),
        },
        FieldType::Time => match from {
            D::Time32(_) | D::Time64(_) => CastClass::Widen,
            _ => wrong(),
        },
    }
}

/// Hint for a cast that cannot be implicit.
fn cast_hint(to: FieldType, class: &CastClass) -> String {
    match (to, class) {
        (FieldType::Timestamp, CastClass::Incompatible(m)) if m.contains("without time zone") => {
            "say which zone the wall-clock time is in: to_utc_timestamp(<expression>, 'America/New_York') or a zone column".into()
        }
        (FieldType::String, _) => "convert explicitly: CAST(<expression> AS VARCHAR)".into(),
        (FieldType::Int32 | FieldType::Int64, CastClass::Lossy(m)) if m.contains("fraction") => {
            "round explicitly, e.g. CAST(round(<expression>) AS BIGINT)".into()
        }
        (_, CastClass::Lossy(_)) => format!(
            "if the loss is intended, convert explicitly: TRY_CAST(<expression> AS {0}) gives NULL \
             for a value that does not fit (a `required` field then quarantines the row); \
             CAST(<expression> AS {0}) quarantines such a row as `eval.<field>`",
            sql_type_name(to)
        ),
        _ => format!("the field is declared `{to}` in the model"),
    }
}

/// The hint for a field that reads a CSV column whose type was parsed from the text, where
/// converting the parsed value would lose what was written: declare the column's type in the
/// job instead. Text: a parsed `08123` would print as `8123`. Decimal: a float column would
/// reach the decimal through binary floating point.
fn declared_column_hint(expr: &Expr, to: FieldType, sources: &[ScannedSource]) -> Option<String> {
    let Expr::Column(c) = expr else {
        return None;
    };
    let alias = c.relation.as_ref().map(|r| r.table());
    let mut found = sources.iter().filter_map(|s| {
        let col = s.columns.iter().find(|x| x.name == c.name && x.parsed)?;
        let matches = s.format == SourceFormat::Csv && alias.is_none_or(|a| a == s.alias);
        matches.then_some((s, col))
    });
    let (s, col) = found.next()?;
    let why = match to {
        FieldType::String => format!(
            "so each value stays the text as written (`08123` keeps its zero; converting the {} would print `8123`)",
            col.data_type
        ),
        FieldType::Decimal { .. } if col.data_type.is_floating() => {
            "so each value parses exactly as a decimal, never through binary floating point".into()
        }
        _ => return None,
    };
    Some(format!(
        "`{}.{}` is parsed as {} from the CSV text; declare its type in the job instead: \
         `[sources.{}] columns = {{ {} = \"{to}\" }}`, {why}",
        s.alias,
        c.name,
        col.data_type,
        toml_key(&s.name),
        toml_key(&c.name),
    ))
}

/// Entries of a CSV source's `columns` that name no column of its files, each at its line in
/// the job file, with the column it most likely meant.
fn unknown_declared_columns(job: &Job, sources: &[ScannedSource]) -> Diagnostics {
    let mut diags = Diagnostics::default();
    for s in sources.iter().filter(|s| s.format == SourceFormat::Csv) {
        let Some(declared) = job
            .sources
            .get(&s.name)
            .and_then(|spec| spec.columns.as_ref())
        else {
            continue;
        };
        let names: Vec<&str> = s.columns.iter().map(|c| c.name.as_str()).collect();
        let shown: Vec<String> = names.iter().map(|n| toml_key(n)).collect();
        // Case does not matter for the suggestion: `carrier` may mean `Carrier`.
        let lower: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
        for (column, ty) in declared {
            if names.contains(&column.as_str()) {
                continue;
            }
            let mut d = job.src.diagnostic(
                Some(ty.span()),
                format!("sources.{}.columns.{column}", s.name),
                format!(
                    "`columns` declares `{column}`, which the file does not have; its columns: {}",
                    shown.join(", ")
                ),
            );
            d.hint = did_you_mean(&column.to_lowercase(), lower.iter().map(String::as_str))
                .and_then(|m| lower.iter().position(|l| l == m))
                .map(|i| format!("did you mean `{}`?", toml_key(names[i])));
            diags.push(d);
        }
    }
    diags
}

/// `name` as a TOML key: bare when it can be, else quoted.
fn toml_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_string()
    } else {
        serde_json::to_string(name).unwrap_or_else(|_| format!("\"{name}\""))
    }
}

fn sql_type_name(t: FieldType) -> String {
    match t {
        FieldType::String => "VARCHAR".into(),
        FieldType::Int32 => "INT".into(),
        FieldType::Int64 => "BIGINT".into(),
        FieldType::Float64 => "DOUBLE".into(),
        FieldType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
        FieldType::Boolean => "BOOLEAN".into(),
        FieldType::Date => "DATE".into(),
        FieldType::Timestamp => "TIMESTAMP".into(),
        FieldType::Time => "TIME".into(),
    }
}

/// Where each part of a row sits in the plan's output.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Output column of each model field, in model order.
    pub canonical: Vec<usize>,
    /// Source file of the driving row.
    pub file: usize,
    /// Source line of the driving row.
    pub line: usize,
    /// Driving source values for the quarantine: (source column name, output column).
    pub source_values: Vec<(String, usize)>,
    /// Output column of each rule's flag, parallel to `CompiledJob::rules`.
    pub flags: Vec<usize>,
    /// Output column of each value a reason template quotes, by placeholder text.
    pub reason_values: Vec<(String, usize)>,
    /// For a CSV driving source: the index of the `malformed.<alias>` rule in
    /// `CompiledJob::rules` and the output column of the record's raw text.
    pub malformed: Option<(usize, usize)>,
}

/// What a canonical field's expression compiled to.
#[derive(Debug, Clone)]
pub struct FieldPlan {
    /// Field name.
    pub name: String,
    /// The SQL as written, or `NULL` for an unmapped optional field.
    pub sql: String,
    /// Type of the expression before the cast.
    pub expr_type: DataType,
    /// How it reaches the field type.
    pub cast: CastClass,
}

/// A job compiled to a plan, ready to execute.
pub struct CompiledJob {
    /// The job.
    pub job: Job,
    /// Its mapping.
    pub mapping: Mapping,
    /// The model it loads.
    pub model: CanonicalModel,
    /// Session the plan belongs to (functions registered).
    pub ctx: SessionContext,
    /// The plan, as a DataFrame.
    pub frame: DataFrame,
    /// Row rules, in flag order.
    pub rules: Vec<RowRule>,
    /// Field plans, in model order.
    pub fields: Vec<FieldPlan>,
    /// Scanned sources (driving first).
    pub sources: Vec<ScannedSource>,
    /// Output positions.
    pub layout: Layout,
    /// Target folder (resolved, absolute).
    pub target_dir: PathBuf,
    /// Target folder as written (template), for display.
    pub target_shown: String,
    /// Quarantine folder (resolved, absolute).
    pub quarantine_dir: PathBuf,
    /// Secrets to hide from messages.
    pub redactor: Redactor,
    /// A database target, when the job loads one.
    pub db_target: Option<crate::db::sink::DbTarget>,
    /// The database sources' extractions (their SQL, cursor and rows read).
    pub extractions: Vec<Arc<crate::db::extract::Extraction>>,
    /// Which rows incremental sources read.
    pub extract_mode: ExtractMode,
}

/// The column of a target that lists the `flag` rules each loaded row failed.
pub const DQ_FLAGS_COLUMN: &str = "_dq_flags";

impl CompiledJob {
    /// Whether any rule has `action = "flag"` (then the target has a `_dq_flags` column).
    pub fn has_flag_rules(&self) -> bool {
        self.rules.iter().any(|r| r.action == RuleAction::Flag)
    }

    /// The target's Arrow schema: the model's, plus `_dq_flags: list<utf8>` (never null; an
    /// empty list for a row without flags) when a rule flags.
    pub fn target_schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        let model = self.model.arrow_schema();
        if !self.has_flag_rules() {
            return model;
        }
        let mut fields: Vec<datafusion::arrow::datatypes::FieldRef> =
            model.fields().iter().cloned().collect();
        fields.push(std::sync::Arc::new(
            datafusion::arrow::datatypes::Field::new(
                DQ_FLAGS_COLUMN,
                DataType::List(std::sync::Arc::new(
                    datafusion::arrow::datatypes::Field::new_list_field(DataType::Utf8, false),
                )),
                false,
            ),
        ));
        std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(fields))
    }

    /// The logical plan.
    pub fn logical_plan(&self) -> &LogicalPlan {
        self.frame.logical_plan()
    }
}

/// A DataFusion session configured from the project's defaults, with Sluice's functions.
pub fn session(project: &Project) -> SessionContext {
    let d = &project.settings.defaults;
    let mut cfg = SessionConfig::new()
        .with_batch_size(d.batch_size.max(1))
        // One partition per file keeps row_number() in file order (source lines).
        .set_bool("datafusion.optimizer.repartition_file_scans", false)
        // Canonical strings are Utf8; avoid view types so casts are no-ops.
        .set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        );
    if d.target_partitions > 0 {
        cfg = cfg.with_target_partitions(d.target_partitions);
    }
    cfg = cfg.with_extension(std::sync::Arc::new(crate::record_limit::MaxRecordBytes(
        d.max_record_bytes,
    )));
    let ctx = SessionContext::new_with_config(cfg);
    crate::functions::register(&ctx);
    ctx
}

/// The job's quarantine folder: `[quarantine] path`, or `<warehouse>/_quarantine/<job>`.
///
/// # Errors
/// [`Error::Target`] when the path's `${...}` references cannot be resolved.
pub fn quarantine_dir(project: &Project, job: &Job, redactor: &Redactor) -> Result<PathBuf> {
    match &job.quarantine.path {
        Some(p) => {
            resolve_dir(project, p.get_ref(), redactor).map_err(|e| Error::target(p.get_ref(), e))
        }
        None => Ok(project.path(
            project
                .settings
                .warehouse
                .join("_quarantine")
                .join(&job.name),
        )),
    }
}

/// A path template of `job` whose `${...}` cannot be resolved (an unset variable, say), as a
/// config error at its line.
fn path_error(job: &Job, key: &str, template: &serde_spanned::Spanned<String>, why: &str) -> Error {
    let mut d = job
        .src
        .diagnostic(Some(template.span()), key, why.to_string());
    d.hint = Some(
        "set the variable in the environment that runs sluice, or write the path without it".into(),
    );
    Error::config(d)
}

/// Resolves a project-relative folder template.
fn resolve_dir(
    project: &Project,
    template: &str,
    redactor: &Redactor,
) -> std::result::Result<PathBuf, String> {
    Ok(project.path(redactor.resolve_path(template, &project.root)?))
}

/// Compiles `job` of `project` into a plan. Reads only source schemas (and the first rows to
/// infer CSV types).
///
/// # Errors
/// [`Error::Config`] with every problem found in the mapping's expressions; [`Error::Source`]
/// when a source cannot be found or read.
pub async fn compile(project: &Project, job: &Job) -> Result<CompiledJob> {
    compile_with(project, job, &HashMap::new()).await
}

/// [`compile`], with some sources' rows given instead of read from their files (keyed by
/// source name; see [`SourceInput`]).
///
/// # Errors
/// As [`compile`].
pub async fn compile_with(
    project: &Project,
    job: &Job,
    inputs: &HashMap<String, SourceInput>,
) -> Result<CompiledJob> {
    compile_for(project, job, inputs, &ExtractMode::Incremental).await
}

/// [`compile_with`], reading database sources' rows as `mode` says (incremental, full
/// refresh, or a backfill range).
///
/// # Errors
/// As [`compile`].
pub async fn compile_for(
    project: &Project,
    job: &Job,
    inputs: &HashMap<String, SourceInput>,
    mode: &ExtractMode,
) -> Result<CompiledJob> {
    let redactor = Redactor::default();
    let mapping = project
        .mappings
        .get(&job.mapping)
        .ok_or_else(|| Error::Internal(format!("job `{}` references missing mapping", job.name)))?
        .clone();
    let model = project
        .models
        .get(&mapping.model.name)
        .ok_or_else(|| {
            Error::Internal(format!(
                "mapping `{}` references missing model",
                mapping.name
            ))
        })?
        .clone();
    let ctx = session(project);
    let mut diags = Diagnostics::default();
    // Problems of the job's dataset checks, reported with whatever the mapping has.
    let mut check_diags = Diagnostics::default();
    for (key, msg, hint) in crate::checks::validate(&ctx, &model, &job.checks) {
        let span = crate::config::key_path_span(&job.src, &key);
        let mut d = job.src.diagnostic(span, key, msg);
        d.hint = hint;
        check_diags.push(d);
    }
    let with_checks = |mut d: Diagnostics| {
        d.extend(check_diags.clone());
        Error::Config(d)
    };

    // Sources.
    let mut sources = Vec::new();
    let mut extractions = Vec::new();
    let mut connectors = HashMap::new();
    let uses = std::iter::once((&mapping.from, true))
        .chain(mapping.joins.iter().map(|j| (&j.source, false)));
    for (u, driving) in uses {
        let spec = job
            .sources
            .get(&u.source)
            .ok_or_else(|| Error::Internal(format!("source `{}` not bound", u.source)))?;
        let input = inputs.get(&u.source).unwrap_or(&SourceInput::Files);
        if spec.is_database() && matches!(input, SourceInput::Files) {
            let (scanned, ext) = crate::db::scan(
                &ctx,
                project,
                &job.name,
                &u.source,
                &u.alias,
                spec,
                driving,
                &redactor,
                mode,
                &mut connectors,
            )
            .await?;
            sources.push(scanned);
            extractions.push(ext);
            continue;
        }
        sources.push(
            source::scan_input(
                &ctx,
                &project.root,
                &u.source,
                &u.alias,
                spec,
                driving,
                &redactor,
                input,
            )
            .await?,
        );
    }
    let unknown_columns = unknown_declared_columns(job, &sources);
    if !unknown_columns.is_empty() {
        return Err(Error::Config(unknown_columns));
    }
    if matches!(mode, ExtractMode::Backfill { .. })
        && !extractions.iter().any(|e| e.cursor.is_some())
    {
        return Err(Error::Usage {
            message: format!(
                "job `{}` has no incremental source, so there is no cursor range to backfill",
                job.name
            ),
            hint: Some("backfill needs a database source with `incremental = { column = ... }`; to read everything again use `sluice run --full-refresh`".into()),
        });
    }
    let driving = sources[0].clone();

    let err_at = |diags: &mut Diagnostics,
                  span: Option<std::ops::Range<usize>>,
                  key: String,
                  msg: String,
                  hint: Option<String>| {
        let mut d = mapping.src.diagnostic(span, key, msg);
        d.hint = hint;
        diags.push(d);
    };
    // A DataFusion error about one expression, with the names the user could have meant.
    let expr_err = |diags: &mut Diagnostics,
                    span: Option<std::ops::Range<usize>>,
                    key: String,
                    what: String,
                    e: &DataFusionError,
                    valid: &[String]| {
        let (msg, hint) = explain(e, valid);
        err_at(diags, span, key, format!("{what}: {msg}"), hint);
    };
    let to_err = |e: DataFusionError| Error::engine(&job.name, &redactor, &e);
    let is_replay = inputs.values().any(|i| matches!(i, SourceInput::Replay(_)));

    let aliases: Vec<String> = sources.iter().map(|s| s.alias.clone()).collect();

    // Joins.
    let mut frame = driving.frame.clone();
    for (j, scanned) in mapping.joins.iter().zip(sources.iter().skip(1)) {
        let right = scanned.frame.clone();
        let merged = frame.schema().join(right.schema()).map_err(to_err)?;
        let on = match parse_expr(&ctx, j.on.get_ref(), &merged, &|_| None) {
            Ok(e) => e,
            Err(e) => {
                expr_err(
                    &mut diags,
                    Some(j.on.span()),
                    format!("join.{}.on", j.source.alias),
                    format!("in join `{}`", j.source.alias),
                    &e,
                    &visible_columns(&merged, &[], &aliases),
                );
                continue;
            }
        };
        // DataFusion builds its hash table from the join's left input and streams the right
        // one. Sources have no row-count statistics for the optimizer to swap sides by, so put
        // the lookup on the left and keep the driving rows streaming: a left join from the
        // mapping's point of view is a right join here. Memory then scales with the lookup
        // tables, not with the source.
        let kind = match j.kind {
            JoinKind::Left => JoinType::Right,
            JoinKind::Inner => JoinType::Inner,
        };
        frame = right.join_on(frame, kind, vec![on]).map_err(to_err)?;
    }
    if !diags.is_empty() {
        return Err(with_checks(diags));
    }

    // Lets.
    let state = ctx.state();
    let mut evals: Vec<EvalRule> = Vec::new();
    let mut let_names: Vec<String> = Vec::new();
    for l in &mapping.lets {
        let names = let_names.clone();
        let resolver = move |n: &str| names.iter().any(|x| x == n).then_some(LET);
        match parse_expr(&ctx, &l.sql, frame.schema(), &resolver) {
            Ok(e) => {
                if let Err(e) = e.get_type(frame.schema()) {
                    expr_err(
                        &mut diags,
                        l.span.clone(),
                        format!("let.{}", l.name),
                        format!("in `{}`", l.name),
                        &e,
                        &visible_columns(frame.schema(), &let_names, &aliases),
                    );
                    continue;
                }
                let mut outputs = ValueOutputs::new(LET, EVAL_LET);
                outputs.push(&state, &l.name, e, frame.schema());
                if outputs.is_guarded(&l.name) {
                    evals.push(EvalRule::new(
                        format!("eval.let.{}", l.name),
                        EVAL_LET,
                        &l.name,
                    ));
                }
                frame = outputs.select(frame).map_err(to_err)?;
                let_names.push(l.name.clone());
            }
            Err(e) => {
                expr_err(
                    &mut diags,
                    l.span.clone(),
                    format!("let.{}", l.name),
                    format!("in `{}`", l.name),
                    &e,
                    &visible_columns(frame.schema(), &let_names, &aliases),
                );
            }
        }
    }

    // Field expressions, as written.
    let mut fields = Vec::new();
    let mut values = ValueOutputs::new(VALUE, EVAL);
    let lets_for_fields = let_names.clone();
    let field_resolver = move |n: &str| lets_for_fields.iter().any(|x| x == n).then_some(LET);
    for f in &model.fields {
        let written: Option<&NamedExpr> = mapping.fields.iter().find(|e| e.name == f.name);
        let (expr, sql) = match written {
            Some(w) => match parse_expr(&ctx, &w.sql, frame.schema(), &field_resolver) {
                Ok(e) => (e, w.sql.clone()),
                Err(e) => {
                    expr_err(
                        &mut diags,
                        w.span.clone(),
                        format!("fields.{}", f.name),
                        format!("in field `{}`", f.name),
                        &e,
                        &visible_columns(frame.schema(), &let_names, &aliases),
                    );
                    continue;
                }
            },
            None => (
                lit(ScalarValue::try_from(&f.data_type.to_arrow()).map_err(to_err)?),
                "NULL".to_string(),
            ),
        };
        let expr_type = match expr.get_type(frame.schema()) {
            Ok(t) => t,
            Err(e) => {
                expr_err(
                    &mut diags,
                    written.and_then(|w| w.span.clone()),
                    format!("fields.{}", f.name),
                    format!("in field `{}`", f.name),
                    &e,
                    &visible_columns(frame.schema(), &let_names, &aliases),
                );
                continue;
            }
        };
        let class = classify_cast(&expr_type, f.data_type);
        if let CastClass::Lossy(m) | CastClass::Incompatible(m) = &class {
            let what = if matches!(class, CastClass::Lossy(_)) {
                "lossy implicit cast"
            } else {
                "wrong type"
            };
            err_at(
                &mut diags,
                written.and_then(|w| w.span.clone()),
                format!("fields.{}", f.name),
                format!("{what} for field `{}`: {m}", f.name),
                Some(
                    declared_column_hint(&expr, f.data_type, &sources)
                        .unwrap_or_else(|| cast_hint(f.data_type, &class)),
                ),
            );
            continue;
        }
        values.push(&state, &f.name, expr, frame.schema());
        if values.is_guarded(&f.name) {
            evals.push(EvalRule::new(format!("eval.{}", f.name), EVAL, &f.name));
        }
        fields.push(FieldPlan {
            name: f.name.clone(),
            sql,
            expr_type,
            cast: class,
        });
    }
    if !diags.is_empty() {
        return Err(with_checks(diags));
    }
    frame = values.select(frame).map_err(to_err)?;

    // Canonical values: missing values → NULL, then cast; cast flags.
    let mut rules: Vec<RowRule> = Vec::new();
    let mut flag_exprs: Vec<Expr> = Vec::new();
    let mut canonical_exprs = columns_except(frame.schema(), VALUE);
    for (f, fp) in model.fields.iter().zip(&fields) {
        let v = qualified_col(VALUE, &f.name);
        let cleaned = if f.missing_values.is_empty() {
            v.clone()
        } else {
            let null = lit(ScalarValue::try_from(&fp.expr_type).map_err(to_err)?);
            when(
                cast(v.clone(), DataType::Utf8).in_list(
                    f.missing_values.iter().map(|m| lit(m.clone())).collect(),
                    false,
                ),
                null,
            )
            .otherwise(v.clone())
            .map_err(to_err)?
        };
        let target = f.data_type.to_arrow();
        let typed = match fp.cast {
            CastClass::Parse => try_cast(cleaned.clone(), target),
            _ => cast(cleaned.clone(), target),
        };
        if fp.cast == CastClass::Parse {
            rules.push(RowRule {
                name: format!("cast.{}", f.name),
                kind: RuleKind::Cast,
                field: Some(f.name.clone()),
                failed: cleaned.is_not_null().and(typed.clone().is_null()),
                reason: ReasonTemplate::parse(&format!(
                    "value '{{__v.{0}}}' of {0} is not a valid {1}",
                    f.name, f.data_type
                ))
                .unwrap_or_else(|_| {
                    ReasonTemplate::literal(format!("{} is not a valid {}", f.name, f.data_type))
                }),
                description: format!("{} parses as {}", f.name, f.data_type),
                action: RuleAction::Quarantine,
            });
            flag_exprs.push(rules.last().map(|r| r.failed.clone()).unwrap_or(lit(false)));
        }
        canonical_exprs.push(typed.alias_qualified(Some(TableReference::bare(CANONICAL)), &f.name));
    }
    // Keep the raw values for cast reasons.
    for f in &fields {
        if f.cast == CastClass::Parse {
            canonical_exprs.push(qualified_col(VALUE, &f.name));
        }
    }
    // Parse failures of source values: every column of the driving source, and the columns of
    // lookup sources that the mapping uses.
    let used = used_columns(&mapping);
    for s in &sources {
        for c in s.columns.iter().filter(|c| c.parsed) {
            let is_driving = s.alias == driving.alias;
            if !is_driving
                && !used.contains(&(s.alias.clone(), c.name.clone()))
                && !used.contains(&(String::new(), c.name.clone()))
            {
                continue;
            }
            let flag = qualified_col(&s.alias, &format!("{PARSE_FAILED_PREFIX}{}", c.name));
            rules.push(RowRule {
                name: format!("parse.{}.{}", s.alias, c.name),
                kind: RuleKind::Cast,
                field: None,
                failed: flag.clone(),
                reason: ReasonTemplate::parse(&format!(
                    "value '{{{}.{RAW_PREFIX}{}}}' in column {}.{} is not a valid {}",
                    s.alias, c.name, s.alias, c.name, c.data_type
                ))
                .unwrap_or_else(|_| {
                    ReasonTemplate::literal(format!("{}.{} does not parse", s.alias, c.name))
                }),
                description: format!("{}.{} parses as {}", s.alias, c.name, c.data_type),
                action: RuleAction::Quarantine,
            });
            flag_exprs.push(flag);
        }
    }
    frame = frame.select(canonical_exprs).map_err(to_err)?;

    // Rows whose expressions failed to evaluate (see `row_errors`).
    for e in evals {
        flag_exprs.push(qualified_col(e.qualifier, &e.name).is_not_null());
        rules.push(e.rule());
    }

    // Model constraints and business rules, over canonical fields.
    for r in model_rules(&model) {
        let failed = requalify(r.failed.clone(), CANONICAL);
        flag_exprs.push(failed.clone());
        rules.push(RowRule { failed, ..r });
    }
    let field_names: Vec<String> = model.fields.iter().map(|f| f.name.clone()).collect();
    let lets_for_rules = let_names.clone();
    let rule_resolver = move |n: &str| {
        if field_names.iter().any(|x| x == n) {
            Some(CANONICAL)
        } else if lets_for_rules.iter().any(|x| x == n) {
            Some(LET)
        } else {
            None
        }
    };
    let canonical_names: Vec<String> = model.fields.iter().map(|f| f.name.clone()).collect();

    // A malformed CSV record of the driving source has no values: one rule says why.
    if driving.records.is_some() && driving.format == SourceFormat::Csv {
        let a = &driving.alias;
        rules.push(RowRule {
            name: format!("malformed.{a}"),
            kind: RuleKind::Malformed,
            field: None,
            failed: qualified_col(a, crate::csv_reader::MALFORMED_COLUMN).is_not_null(),
            reason: ReasonTemplate::parse(&format!(
                "malformed record: {{{a}.{}}}",
                crate::csv_reader::MALFORMED_COLUMN
            ))
            .unwrap_or_else(|_| ReasonTemplate::literal("malformed record".into())),
            description: "the record is well-formed CSV (RFC 4180, one field per column, UTF-8)"
                .into(),
            action: RuleAction::Quarantine,
        });
        flag_exprs.push(rules.last().map(|r| r.failed.clone()).unwrap_or(lit(false)));
    }

    // Mapping rules: custom checks and references first, then duplicate keys (which prefer
    // to keep a row that passes every other rule).
    let ordered = mapping
        .rules
        .iter()
        .filter(|b| !matches!(b.test, RuleTest::Unique { .. }))
        .chain(
            mapping
                .rules
                .iter()
                .filter(|b| matches!(b.test, RuleTest::Unique { .. })),
        );
    for b in ordered {
        let visible = {
            let mut v = canonical_names.clone();
            v.extend(visible_columns(frame.schema(), &let_names, &aliases));
            v
        };
        let key = format!("rule.{}", b.name);
        let unknown_field = |diags: &mut Diagnostics, f: &str, what: &str| {
            let mut d = mapping.src.diagnostic(
                b.span.clone(),
                key.clone(),
                format!(
                    "{what} of rule `{}` names `{f}`, which is not a field of model `{}`",
                    b.name, model.name
                ),
            );
            d.hint = Some(
                match did_you_mean(f, canonical_names.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("fields: {}", canonical_names.join(", ")),
                },
            );
            diags.push(d);
        };
        let (kind, failed, default_reason, description) = match &b.test {
            RuleTest::Check(c) => {
                let typed = parse_expr(&ctx, &c.sql, frame.schema(), &rule_resolver)
                    .and_then(|e| e.get_type(frame.schema()).map(|t| (e, t)));
                let check = match typed {
                    Ok((e, DataType::Boolean | DataType::Null)) => e,
                    Ok((_, t)) => {
                        err_at(
                            &mut diags,
                            c.span.clone(),
                            format!("{key}.check"),
                            format!("rule `{}` check is {t}, not a boolean", b.name),
                            Some("write a condition that is true for good rows, e.g. `distance_km > 0`".into()),
                        );
                        continue;
                    }
                    Err(e) => {
                        expr_err(
                            &mut diags,
                            c.span.clone(),
                            key,
                            format!("in rule `{}`", b.name),
                            &e,
                            &visible,
                        );
                        continue;
                    }
                };
                (
                    RuleKind::Business,
                    failed_when_not(check, b.nulls),
                    ReasonTemplate::literal(format!("failed: {}", c.sql)),
                    c.sql.clone(),
                )
            }
            RuleTest::References {
                field,
                target,
                column,
            } => {
                let Some(f) = model.field(field) else {
                    unknown_field(&mut diags, field, "`field`");
                    continue;
                };
                let q = format!("__ref_{}", b.name);
                let (lookup, shown) = match reference_frame(
                    project,
                    job,
                    &ctx,
                    target,
                    column,
                    &q,
                    &redactor,
                    inputs,
                    &f.data_type.to_arrow(),
                )
                .await
                {
                    Ok(x) => x,
                    Err(RefError::Config(msg, hint)) => {
                        err_at(
                            &mut diags,
                            b.span.clone(),
                            format!("{key}.references"),
                            msg,
                            hint,
                        );
                        continue;
                    }
                    Err(RefError::Run(e)) => return Err(e),
                };
                let value = qualified_col(CANONICAL, &f.name);
                let on = qualified_col(&q, "key").eq(value.clone());
                frame = lookup
                    .join_on(frame, JoinType::Right, vec![on])
                    .map_err(to_err)?;
                let missing = qualified_col(&q, "hit").is_null();
                let failed = match b.nulls {
                    NullPolicy::Pass => value.is_not_null().and(missing),
                    NullPolicy::Fail => missing,
                };
                (
                    RuleKind::References,
                    failed,
                    ReasonTemplate::with_value(
                        &format!("{field} '"),
                        field,
                        format!("' is not in {shown}"),
                    ),
                    format!("{field} exists in {shown}"),
                )
            }
            RuleTest::Unique {
                fields: keys,
                order_by,
            } => {
                let mut ok = true;
                for k in keys {
                    if model.field(k).is_none() {
                        unknown_field(&mut diags, k, "`unique`");
                        ok = false;
                    }
                }
                let mut sorts = Vec::new();
                // Rows that fail another rule sort last, so the kept row is a loadable one.
                let other_failed = flag_exprs
                    .iter()
                    .map(|e| datafusion::functions::expr_fn::coalesce(vec![e.clone(), lit(false)]))
                    .reduce(Expr::or)
                    .unwrap_or(lit(false));
                sorts.push(other_failed.sort(true, false));
                for o in order_by {
                    let (sql, asc, nulls_first) = split_sort(&o.sql);
                    match parse_expr(&ctx, sql, frame.schema(), &rule_resolver) {
                        Ok(e) => sorts.push(e.sort(asc, nulls_first)),
                        Err(e) => {
                            expr_err(
                                &mut diags,
                                o.span.clone(),
                                format!("{key}.order_by"),
                                format!("in `order_by` of rule `{}`", b.name),
                                &e,
                                &visible,
                            );
                            ok = false;
                        }
                    }
                }
                if !ok {
                    continue;
                }
                sorts.push(qualified_col(&driving.alias, FILE_COLUMN).sort(true, true));
                sorts.push(qualified_col(&driving.alias, LINE_COLUMN).sort(true, true));
                let partition: Vec<Expr> =
                    keys.iter().map(|k| qualified_col(CANONICAL, k)).collect();
                let q = TableReference::bare(DUPLICATE);
                let rn = row_number()
                    .partition_by(partition.clone())
                    .order_by(sorts.clone())
                    .build()
                    .map_err(to_err)?
                    .alias_qualified(Some(q.clone()), format!("{}_rank", b.name));
                let location = datafusion::functions::expr_fn::concat(vec![
                    qualified_col(&driving.alias, FILE_COLUMN),
                    lit(":"),
                    cast(qualified_col(&driving.alias, LINE_COLUMN), DataType::Utf8),
                ]);
                let first = first_value(location)
                    .partition_by(partition.clone())
                    .order_by(sorts)
                    .build()
                    .map_err(to_err)?
                    .alias_qualified(Some(q.clone()), format!("{}_first", b.name));
                frame = frame.window(vec![rn, first]).map_err(to_err)?;
                let any_null = partition
                    .iter()
                    .map(|k| k.clone().is_null())
                    .reduce(Expr::or)
                    .unwrap_or(lit(false));
                let mut later = qualified_col(DUPLICATE, &format!("{}_rank", b.name)).gt(lit(1u64));
                // A replay sees only the rejected rows: a key is also a duplicate when the
                // target already holds it.
                let first_shown = qualified_col(DUPLICATE, &format!("{}_first", b.name));
                let mut shown_expr = first_shown.clone();
                if is_replay {
                    let qt = format!("__dupt_{}", b.name);
                    if let Some(lookup) =
                        target_keys(project, job, &model, keys, &qt, &ctx, &redactor).await?
                    {
                        let on: Vec<Expr> = keys
                            .iter()
                            .enumerate()
                            .map(|(i, k)| {
                                qualified_col(&qt, &format!("k{i}")).eq(qualified_col(CANONICAL, k))
                            })
                            .collect();
                        frame = lookup.join_on(frame, JoinType::Right, on).map_err(to_err)?;
                        let in_target = qualified_col(&qt, "hit").is_not_null();
                        shown_expr = when(
                            in_target.clone(),
                            lit("a row already loaded into the target"),
                        )
                        .otherwise(first_shown)
                        .map_err(to_err)?;
                        later = later.or(in_target);
                    }
                }
                let mut exprs = all_columns(frame.schema());
                exprs.push(shown_expr.alias_qualified(
                    Some(TableReference::bare(DUPLICATE)),
                    format!("{}_kept", b.name),
                ));
                frame = frame.select(exprs).map_err(to_err)?;
                let failed = match b.nulls {
                    NullPolicy::Pass => any_null.not().and(later),
                    NullPolicy::Fail => any_null.or(later),
                };
                let key_text = keys
                    .iter()
                    .map(|k| format!("{k}={{{k}}}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                (
                    RuleKind::Unique,
                    failed,
                    ReasonTemplate::parse(&format!(
                        "duplicate key ({key_text}); the first occurrence, which is kept, is {{{DUPLICATE}.{}_kept}}",
                        b.name
                    ))
                    .unwrap_or_else(|_| ReasonTemplate::literal("duplicate key".into())),
                    format!("({}) unique within the run", keys.join(", ")),
                )
            }
        };
        let reason = match &b.reason {
            Some(t) => {
                ReasonTemplate::parse(t).unwrap_or_else(|_| ReasonTemplate::literal(t.clone()))
            }
            None => default_reason,
        };
        flag_exprs.push(failed.clone());
        rules.push(RowRule {
            name: b.name.clone(),
            kind,
            field: None,
            failed,
            reason,
            description,
            action: b.action,
        });
    }

    // `[actions]` set the action of built-in rules.
    for (name, action, span) in &mapping.actions {
        let Some(r) = rules.iter_mut().find(|r| &r.name == name) else {
            let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
            err_at(
                &mut diags,
                span.clone(),
                format!("actions.{name}"),
                format!("no rule named `{name}` in this mapping"),
                Some(match did_you_mean(name, names.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("rules: {}", names.join(", ")),
                }),
            );
            continue;
        };
        if *action == RuleAction::Flag && matches!(r.kind, RuleKind::Required | RuleKind::Malformed)
        {
            err_at(
                &mut diags,
                span.clone(),
                format!("actions.{name}"),
                format!("rule `{name}` cannot be `flag`: the row has no value to load"),
                Some("use `quarantine` or `drop`".into()),
            );
            continue;
        }
        r.action = *action;
    }

    // Reason placeholders must name something the row has.
    let mut reason_exprs: Vec<(String, Expr)> = Vec::new();
    for r in &rules {
        for p in r.reason.placeholders() {
            if reason_exprs.iter().any(|(n, _)| n == p) {
                continue;
            }
            let e = match p.split_once('.') {
                Some((q, n)) => qualified_col(q, n),
                None if model.field(p).is_some() => qualified_col(CANONICAL, p),
                None if let_names.iter().any(|l| l == p) => qualified_col(LET, p),
                None => match unique_source_column(frame.schema(), p) {
                    Some(c) => Expr::Column(c),
                    None => Expr::Column(Column::new_unqualified(p)),
                },
            };
            if e.get_type(frame.schema()).is_err() {
                let rule = mapping.rules.iter().find(|b| b.name == r.name);
                let span = rule.and_then(|b| b.span.clone());
                let valid = visible_columns(frame.schema(), &let_names, &aliases);
                let mut all = canonical_names.clone();
                all.extend(valid);
                err_at(
                    &mut diags,
                    span,
                    format!("rule.{}.reason", r.name),
                    format!(
                        "reason of rule `{}` quotes `{{{p}}}`, which is not a field or column",
                        r.name
                    ),
                    Some(match did_you_mean(p, all.iter().map(String::as_str)) {
                        Some(s) => format!("did you mean `{{{s}}}`?"),
                        None => format!("valid names: {}", all.join(", ")),
                    }),
                );
                continue;
            }
            reason_exprs.push((p.to_string(), e));
        }
    }
    if !diags.is_empty() {
        return Err(with_checks(diags));
    }

    // Final projection.
    let (frame, layout) =
        final_projection(frame, &model, &driving, &rules, flag_exprs, reason_exprs)
            .map_err(to_err)?;
    // Catch anything the per-expression checks missed, before any row is read.
    frame.clone().into_optimized_plan().map_err(to_err)?;

    // Target and quarantine folders.
    let with_flags = rules.iter().any(|r| r.action == RuleAction::Flag);
    let outputs = JobOutputs::resolve(
        project,
        job,
        &model,
        mode,
        with_flags,
        &sources,
        &redactor,
        &mut connectors,
        &mut diags,
    )?;
    if !diags.is_empty() || !check_diags.is_empty() {
        return Err(with_checks(diags));
    }

    Ok(CompiledJob {
        job: job.clone(),
        mapping,
        model,
        ctx,
        frame,
        rules,
        fields,
        sources,
        layout,
        target_dir: outputs.target_dir,
        target_shown: outputs.target_shown,
        quarantine_dir: outputs.quarantine_dir,
        redactor,
        db_target: outputs.db_target,
        extractions,
        extract_mode: mode.clone(),
    })
}

/// The plan's output columns, in the order [`Layout`] records: canonical fields, the driving
/// row's file, line and counter, its source values (raw text for CSV), the raw record when a
/// `malformed` rule exists, the values reasons quote, and one flag per rule (true = fails).
fn final_projection(
    frame: DataFrame,
    model: &CanonicalModel,
    driving: &ScannedSource,
    rules: &[RowRule],
    flag_exprs: Vec<Expr>,
    reason_exprs: Vec<(String, Expr)>,
) -> datafusion::common::Result<(DataFrame, Layout)> {
    let mut out: Vec<Expr> = Vec::new();
    for f in &model.fields {
        out.push(qualified_col(CANONICAL, &f.name).alias(&f.name));
    }
    let file_idx = out.len();
    out.push(qualified_col(&driving.alias, FILE_COLUMN).alias("__source_file"));
    out.push(qualified_col(&driving.alias, LINE_COLUMN).alias("__source_line"));
    out.push(qualified_col(&driving.alias, DRIVING_ROW_COLUMN).alias(DRIVING_ROW_COLUMN));
    let mut source_values = Vec::new();
    for c in &driving.columns {
        let e = if driving.format == SourceFormat::Csv {
            qualified_col(&driving.alias, &format!("{RAW_PREFIX}{}", c.name))
        } else {
            qualified_col(&driving.alias, &c.name)
        };
        source_values.push((c.name.clone(), out.len()));
        out.push(e.alias(format!("__source:{}", c.name)));
    }
    let malformed = match rules.iter().position(|r| r.kind == RuleKind::Malformed) {
        Some(i) => {
            out.push(
                qualified_col(&driving.alias, crate::csv_reader::RAW_RECORD_COLUMN)
                    .alias(crate::csv_reader::RAW_RECORD_COLUMN),
            );
            Some((i, out.len() - 1))
        }
        None => None,
    };
    let mut reason_values = Vec::new();
    for (p, e) in reason_exprs {
        reason_values.push((p.clone(), out.len()));
        out.push(e.alias(format!("__reason:{p}")));
    }
    let mut flags = Vec::new();
    for (e, r) in flag_exprs.into_iter().zip(rules) {
        flags.push(out.len());
        out.push(
            datafusion::functions::expr_fn::coalesce(vec![e, lit(false)])
                .alias(format!("__rule:{}", r.name)),
        );
    }
    let layout = Layout {
        canonical: (0..model.fields.len()).collect(),
        file: file_idx,
        line: file_idx + 1,
        source_values,
        flags,
        reason_values,
        malformed,
    };
    Ok((frame.select(out)?, layout))
}

/// Where a job's valid and rejected rows go, resolved for this run.
struct JobOutputs {
    db_target: Option<crate::db::sink::DbTarget>,
    /// The target as shown (a folder relative to the project, or `connection:table`).
    target_shown: String,
    /// The target folder (database targets: the folder naming the target's lock).
    target_dir: PathBuf,
    quarantine_dir: PathBuf,
}

impl JobOutputs {
    /// Resolves the target and quarantine of `job` with `${...}` as this run resolves them,
    /// and checks them: the path guard against the files the sources match now, the
    /// database target against the model, the partition columns. Problems go to `diags`.
    ///
    /// # Errors
    /// A path that cannot be resolved (a config error at its line), or a database target
    /// whose connection cannot be set up.
    #[allow(clippy::too_many_arguments)]
    fn resolve(
        project: &Project,
        job: &Job,
        model: &CanonicalModel,
        mode: &ExtractMode,
        with_flags: bool,
        sources: &[ScannedSource],
        redactor: &Redactor,
        connectors: &mut HashMap<String, crate::db::Connector>,
        diags: &mut Diagnostics,
    ) -> Result<JobOutputs> {
        let mut db_target = None;
        let (target_shown, target_dir) = match (&job.target.table, &job.target.path) {
            (Some(t), _) if job.target.is_database() => {
                let conn = job
                    .target
                    .connection
                    .as_ref()
                    .map(|c| c.get_ref().clone())
                    .unwrap_or_default();
                let table = crate::db::TableName::parse(t.get_ref())
                    .map_err(|e| Error::target(t.get_ref(), e))?;
                let connector = crate::db::Connector::shared(project, &conn, redactor, connectors)?;
                validate_db_target(job, model, mode, diags);
                if let Some(d) = crate::db::mysql::table_name_problem(connector.kind, &table) {
                    let mut diag = job.src.diagnostic(Some(t.span()), "target.table", d.0);
                    diag.hint = Some(d.1);
                    diags.push(diag);
                }
                let target = crate::db::sink::DbTarget::new(
                    connector,
                    table,
                    job.target.mode,
                    model,
                    with_flags,
                    &job.target,
                    chrono::Utc::now(),
                );
                let shown = target.shown();
                db_target = Some(target);
                // Not a folder: names the target's lock and appears in messages.
                (
                    shown.clone(),
                    project
                        .path(&project.settings.state_dir)
                        .join("targets")
                        .join(shown.replace([':', '/'], "_")),
                )
            }
            (Some(t), _) => {
                let rel = project.settings.warehouse.join(t.get_ref());
                (rel.to_string_lossy().to_string(), project.path(rel))
            }
            (None, Some(p)) => {
                let dir = resolve_dir(project, p.get_ref(), redactor)
                    .map_err(|e| path_error(job, "target.path", p, &e))?;
                (project.shown(&dir), dir)
            }
            (None, None) => return Err(Error::Internal("target without table or path".into())),
        };
        let quarantine_dir = match &job.quarantine.path {
            Some(p) => resolve_dir(project, p.get_ref(), redactor)
                .map_err(|e| path_error(job, "quarantine.path", p, &e))?,
            None => quarantine_dir(project, job, redactor)?,
        };
        // Again with `${...}` resolved as this run resolves them, and against the files the
        // sources' globs match now.
        diags.extend(crate::guard::check_run(project, job, redactor));
        diags.extend(crate::guard::check_source_files(
            project,
            job,
            (!job.target.is_database()).then_some(target_dir.as_path()),
            &quarantine_dir,
            sources
                .iter()
                .flat_map(|s| s.files.iter().map(move |f| (s.name.as_str(), f.as_str()))),
        ));
        for p in &job.target.partition_by {
            if let Some(f) = model.field(p.get_ref()) {
                if matches!(
                    f.data_type,
                    FieldType::Timestamp | FieldType::Float64 | FieldType::Time
                ) {
                    let mut d = job.src.diagnostic(
                        Some(p.span()),
                        "target.partition_by",
                        format!("cannot partition by `{}`, a {} field", f.name, f.data_type),
                    );
                    d.hint = Some("partition by a date, string, integer or boolean field; add a date field (e.g. flight_date) if needed".into());
                    diags.push(d);
                }
            }
        }
        Ok(JobOutputs {
            db_target,
            target_shown,
            target_dir,
            quarantine_dir,
        })
    }
}

/// Checks of a database target that need the model: `merge` and `scd2` need a primary key,
/// `track` names fields, the `scd2` columns are free, and `delete_missing` reads everything.
fn validate_db_target(
    job: &Job,
    model: &CanonicalModel,
    mode: &ExtractMode,
    diags: &mut Diagnostics,
) {
    let t = &job.target;
    let span = |key: &str| crate::config::key_path_span(&job.src, &format!("target.{key}"));
    let mut err = |key: &str, msg: String, hint: Option<String>| {
        let mut d = job.src.diagnostic(span(key), format!("target.{key}"), msg);
        d.hint = hint;
        diags.push(d);
    };
    if matches!(t.mode, LoadMode::Merge | LoadMode::Scd2) && model.primary_key().is_empty() {
        err(
            "mode",
            format!(
                "`mode = \"{}\"` matches rows by the primary key, and model `{}` has none",
                json_name(&t.mode),
                model.name
            ),
            Some(format!(
                "mark the key fields with `primary_key = true` in {}",
                model.file.display()
            )),
        );
    }
    if t.mode == LoadMode::Scd2 {
        for f in &model.fields {
            if crate::db::sink::SCD2_COLUMNS.contains(&f.name.as_str()) {
                err(
                    "mode",
                    format!(
                        "model field `{}` has the name of a column scd2 adds",
                        f.name
                    ),
                    Some(format!(
                        "scd2 adds {}; rename the field",
                        crate::db::sink::SCD2_COLUMNS.join(", ")
                    )),
                );
            }
        }
    }
    if let Some(track) = &t.track {
        for name in track.get_ref() {
            if model.field(name).is_none() {
                let names = model.fields.iter().map(|f| f.name.as_str());
                err(
                    "track",
                    format!("`{name}` is not a field of model `{}`", model.name),
                    did_you_mean(name, names).map(|s| format!("did you mean `{s}`?")),
                );
            }
        }
    }
    if t.delete_missing
        && *mode != ExtractMode::FullRefresh
        && job.sources.values().any(|s| s.incremental.is_some())
    {
        err(
            "delete_missing",
            "`delete_missing` with an incremental source would remove every row the run's range did not read".into(),
            Some("a run reading only new rows cannot tell which keys disappeared: drop `delete_missing`, or run this job only with --full-refresh".into()),
        );
    }
}

/// Every column of a schema as a column expression (qualifiers kept).
fn all_columns(schema: &DFSchema) -> Vec<Expr> {
    schema.columns().into_iter().map(Expr::Column).collect()
}

/// Every column of `schema` except those qualified by `qualifier` (a step's working columns).
fn columns_except(schema: &DFSchema, qualifier: &str) -> Vec<Expr> {
    schema
        .columns()
        .into_iter()
        .filter(|c| c.relation.as_ref().is_none_or(|r| r.table() != qualifier))
        .map(Expr::Column)
        .collect()
}

/// Names a user may write, for error hints: `alias.column` of sources (in the mapping's order
/// of `from` and joins), then let names.
fn visible_columns(schema: &DFSchema, lets: &[String], aliases: &[String]) -> Vec<String> {
    let rank = |q: Option<&TableReference>| {
        q.and_then(|q| aliases.iter().position(|a| a == q.table()))
            .unwrap_or(usize::MAX)
    };
    let mut fields: Vec<_> = schema.iter().collect();
    fields.sort_by_key(|(q, _)| rank(*q));
    let mut out: Vec<String> = fields
        .into_iter()
        .filter(|(q, f)| {
            !f.name().starts_with("__") && q.is_some_and(|q| !q.table().starts_with("__"))
        })
        .map(|(q, f)| match q {
            Some(q) => format!("{q}.{}", f.name()),
            None => f.name().to_string(),
        })
        .collect();
    out.extend(lets.iter().cloned());
    out
}

/// The only source column named `name`, if exactly one source has it.
fn unique_source_column(schema: &DFSchema, name: &str) -> Option<Column> {
    let matches: Vec<Column> = schema
        .columns()
        .into_iter()
        .filter(|c| {
            c.name == name
                && c.relation
                    .as_ref()
                    .is_some_and(|r| !r.table().starts_with("__"))
        })
        .collect();
    (matches.len() == 1).then(|| matches[0].clone())
}

/// (alias, column) pairs the mapping mentions; alias empty for bare names. Approximate: used to
/// decide which lookup columns get parse rules.
fn used_columns(mapping: &Mapping) -> BTreeSet<(String, String)> {
    let dialect = GenericDialect {};
    let mut out = BTreeSet::new();
    let texts = mapping
        .joins
        .iter()
        .map(|j| j.on.get_ref().clone())
        .chain(mapping.lets.iter().map(|l| l.sql.clone()))
        .chain(mapping.fields.iter().map(|f| f.sql.clone()))
        .chain(mapping.rules.iter().filter_map(|r| match &r.test {
            RuleTest::Check(c) => Some(c.sql.clone()),
            _ => None,
        }));
    for sql in texts {
        let Ok(mut ast) = Parser::new(&dialect)
            .try_with_sql(&sql)
            .and_then(|mut p| p.parse_expr())
        else {
            continue;
        };
        let _ = visit_expressions_mut(&mut ast, |e| {
            match e {
                SqlExpr::Identifier(i) => {
                    out.insert((String::new(), normalize(i)));
                }
                SqlExpr::CompoundIdentifier(parts) if parts.len() == 2 => {
                    out.insert((normalize(&parts[0]), normalize(&parts[1])));
                }
                _ => {}
            }
            ControlFlow::<()>::Continue(())
        });
    }
    out
}

fn normalize(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// Parses a SQL expression against `schema`, first qualifying bare names that `resolve` knows
/// (canonical fields, lets) with their hidden qualifier.
///
/// # Errors
/// DataFusion's parse or planning error.
pub fn parse_expr(
    ctx: &SessionContext,
    sql: &str,
    schema: &DFSchema,
    resolve: &dyn Fn(&str) -> Option<&'static str>,
) -> std::result::Result<Expr, DataFusionError> {
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(sql)
        .map_err(|e| DataFusionError::SQL(Box::new(e), None))?;
    let mut ast = parser
        .parse_expr()
        .map_err(|e| DataFusionError::SQL(Box::new(e), None))?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(DataFusionError::Plan(format!(
            "unexpected `{}` after the end of the expression",
            next.token
        )));
    }
    let _ = visit_expressions_mut(&mut ast, |e| {
        if let SqlExpr::Identifier(id) = e {
            if let Some(q) = resolve(&normalize(id)) {
                *e = SqlExpr::CompoundIdentifier(vec![Ident::new(q), id.clone()]);
            }
        }
        ControlFlow::<()>::Continue(())
    });
    ctx.parse_sql_expr(&ast.to_string(), schema)
}

/// Qualifies every unqualified column of `e` with `qualifier`.
fn requalify(e: Expr, qualifier: &str) -> Expr {
    e.transform_up(|e| match e {
        Expr::Column(c) if c.relation.is_none() => Ok(Transformed::yes(Expr::Column(Column::new(
            Some(TableReference::bare(qualifier)),
            c.name,
        )))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
    .unwrap_or_else(|_| lit(false))
}

/// A user-facing message and hint for a DataFusion error about an expression.
fn explain(e: &DataFusionError, valid: &[String]) -> (String, Option<String>) {
    let root = e.find_root();
    if let DataFusionError::SchemaError(se, _) = root {
        match se.as_ref() {
            SchemaError::FieldNotFound { field, .. } => {
                let name = match &field.relation {
                    Some(r) if !r.table().starts_with("__") => format!("{r}.{}", field.name),
                    _ => field.name.clone(),
                };
                // Compare with whole names and with their column part (`nmae` ~ `airlines.name`).
                let by_column = || {
                    let short: Vec<&str> = valid
                        .iter()
                        .map(|v| v.rsplit('.').next().unwrap_or(v))
                        .collect();
                    did_you_mean(&field.name, short.iter().copied())
                        .and_then(|s| valid.iter().find(|v| v.rsplit('.').next() == Some(s)))
                        .map(String::as_str)
                };
                let shown: Vec<String> = valid.iter().map(|v| sql_name(v)).collect();
                let hint = match did_you_mean(&name, valid.iter().map(String::as_str))
                    .or_else(by_column)
                {
                    Some(s) => format!(
                        "did you mean `{}`? valid columns: {}",
                        sql_name(s),
                        shown.join(", ")
                    ),
                    None => format!("valid columns: {}", shown.join(", ")),
                };
                return (format!("unknown column `{name}`"), Some(hint));
            }
            SchemaError::AmbiguousReference { field } => {
                return (
                    format!("`{}` is ambiguous: more than one source has it", field.name),
                    Some(format!(
                        "qualify it with the source alias, e.g. `<alias>.{}`",
                        field.name
                    )),
                );
            }
            _ => {}
        }
    }
    let text = root.to_string();
    let text = text
        .strip_prefix("Error during planning: ")
        .or_else(|| text.strip_prefix("SQL error: "))
        .unwrap_or(&text)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    (text, None)
}

/// `alias.column` (or a bare name) as it must be written in SQL: the column part in double
/// quotes when it is not a plain lower-case identifier, since unquoted names are lower-cased
/// (`flights."DepTime"`).
fn sql_name(name: &str) -> String {
    let (prefix, column) = match name.split_once('.') {
        Some((alias, column)) => (format!("{alias}."), column),
        None => (String::new(), name),
    };
    let plain = column
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && column
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        format!("{prefix}{column}")
    } else {
        format!("{prefix}\"{}\"", column.replace('"', "\"\""))
    }
}

/// `fail_below = 1, warn_below = 300000`: the thresholds that are set.
fn thresholds<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(m)) => m
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    }
}

/// The name a unit enum has in TOML (`overwrite`, `csv`).
pub fn json_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Text of the compiled plan for `sluice plan`: fields, rules, logical and physical plans.
///
/// # Errors
/// When the physical plan cannot be created.
pub async fn describe(compiled: &CompiledJob, project_root: &Path) -> Result<String> {
    use std::fmt::Write;
    let mut s = String::new();
    let job = &compiled.job;
    let m = &compiled.model;
    let _ = writeln!(s, "job:      {}", job.name);
    let _ = writeln!(s, "mapping:  {}", compiled.mapping.name);
    let _ = writeln!(s, "model:    {} {}", m.name, m.version);
    let to_err = |e: DataFusionError| Error::engine(&job.name, &compiled.redactor, &e);
    // Planning the physical plan builds each database source's SELECT (with the columns the
    // plan uses), shown below.
    let physical = compiled
        .frame
        .clone()
        .create_physical_plan()
        .await
        .map_err(to_err)?;
    let _ = writeln!(
        s,
        "target:   {} ({}, {}{})",
        compiled.target_shown,
        match &compiled.db_target {
            Some(t) => json_name(&t.connector.kind),
            None => "parquet".to_string(),
        },
        json_name(&job.target.mode),
        if job.target.partition_by.is_empty() {
            String::new()
        } else {
            format!(
                ", partition_by = [{}]",
                job.target
                    .partition_by
                    .iter()
                    .map(|p| p.get_ref().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let _ = writeln!(
        s,
        "quarantine: {}",
        compiled
            .quarantine_dir
            .strip_prefix(project_root)
            .unwrap_or(&compiled.quarantine_dir)
            .display()
    );
    if let Some(t) = &compiled.db_target {
        let d = t.connector.dialect();
        match crate::db::sink::inspect(t).await {
            Ok(None) => {
                let _ = writeln!(s, "  the table does not exist; the first run creates it:");
                for line in t.create_sql(d).lines() {
                    let _ = writeln!(s, "    {line}");
                }
            }
            Ok(Some(diffs)) if diffs.is_empty() => {
                let _ = writeln!(s, "  the table exists and matches the model");
            }
            Ok(Some(diffs)) => {
                let _ = writeln!(
                    s,
                    "  the table differs from the model (on_schema_change = \"{}\"):",
                    json_name(&t.on_schema_change)
                );
                for x in &diffs {
                    let _ = writeln!(
                        s,
                        "    - {x}{}",
                        if x.addable()
                            && t.on_schema_change == crate::config::spec::OnSchemaChange::AddColumns
                        {
                            " (will be added)"
                        } else {
                            ""
                        }
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(s, "  the table could not be inspected: {e}");
            }
        }
    }
    let _ = writeln!(s, "\nsources:");
    let mut extractions = compiled.extractions.iter();
    for src in &compiled.sources {
        let _ = writeln!(
            s,
            "  {} (source `{}`, {}): {}",
            src.alias,
            src.name,
            json_name(&src.format),
            src.files.join(", ")
        );
        if src.format == SourceFormat::Database {
            if let Some(ext) = extractions.next() {
                let _ = writeln!(s, "    sql: {}", ext.describe());
                for (c, db) in src.columns.iter().zip(&ext.columns) {
                    let _ = writeln!(
                        s,
                        "    {:<16} {:<28} {}",
                        c.name,
                        c.data_type.to_string(),
                        db.db_type
                    );
                }
                continue;
            }
        }
        for c in &src.columns {
            let _ = writeln!(
                s,
                "    {:<16} {}{}",
                c.name,
                c.data_type,
                if c.parsed { "  (parsed from text)" } else { "" }
            );
        }
    }
    let _ = writeln!(s, "\ncanonical schema ({} {}):", m.name, m.version);
    for (f, fp) in m.fields.iter().zip(&compiled.fields) {
        let cast = match &fp.cast {
            CastClass::Same => String::new(),
            CastClass::Widen => format!("  [widened from {}]", fp.expr_type),
            CastClass::Parse => format!(
                "  [parsed from {}; failures → cast.{}]",
                fp.expr_type, f.name
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "  {:<28} {:<14} {}{}\n      = {}{}",
            f.name,
            f.data_type.to_string(),
            if f.required { "required" } else { "nullable" },
            if f.primary_key { ", primary key" } else { "" },
            fp.sql.split_whitespace().collect::<Vec<_>>().join(" "),
            cast
        );
    }
    let _ = writeln!(s, "\nrow rules ({}):", compiled.rules.len());
    for r in &compiled.rules {
        let _ = writeln!(
            s,
            "  {:<44} {:<10} {}",
            r.name,
            json_name(&r.action),
            r.description
        );
    }
    let _ = writeln!(s, "\ndataset checks:");
    if let Some(rc) = &job.checks.row_count {
        let _ = writeln!(s, "  row_count        {}", thresholds(rc));
    }
    if let Some(q) = &job.checks.quarantine_ratio {
        let _ = writeln!(s, "  quarantine_ratio {}", thresholds(q));
    }
    for (field, t) in &job.checks.null_ratio {
        let _ = writeln!(s, "  null_ratio.{field} {}", thresholds(t));
    }
    if let Some(u) = &job.checks.unique {
        let _ = writeln!(s, "  unique           {}", thresholds(u));
    }
    if let Some(f) = &job.checks.freshness {
        let _ = writeln!(s, "  freshness        {}", thresholds(f));
    }
    if let Some(v) = &job.checks.volume {
        let _ = writeln!(s, "  volume           {}", thresholds(v));
    }
    for q in &job.checks.sql {
        let _ = writeln!(
            s,
            "  sql.{}  {} {}",
            q.name,
            q.expr.get_ref(),
            thresholds(&q.thresholds())
        );
    }
    let logical = compiled
        .frame
        .clone()
        .into_optimized_plan()
        .map_err(to_err)?;
    let _ = writeln!(
        s,
        "\nlogical plan (optimized):\n{}",
        logical.display_indent()
    );
    let _ = writeln!(
        s,
        "\nphysical plan:\n{}",
        datafusion::physical_plan::displayable(physical.as_ref()).indent(false)
    );
    Ok(compiled.redactor.redact(&s))
}
