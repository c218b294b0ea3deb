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
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
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
    DbTargetSpec, DeltaTargetSpec, HasThresholds, JoinKind, LoadMode, NullPolicy,
    ParquetTargetSpec, RuleAction, SourceFormat, TargetFormat, TargetSpec,
};
use crate::config::{BusinessRule, Job, Mapping, NamedExpr, Project, ReferenceTarget, RuleTest};

mod compile;
mod describe;
mod rules;

pub use crate::config::spec::json_name;
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
pub use describe::describe;
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
    // `name = "type"`: a type name has no character a TOML string would escape.
    let declaration = format!("{} = {:?}", toml_key(&c.name), to.to_string());
    Some(format!(
        "`{}.{}` is parsed as {} from the CSV text; declare its type in the job instead: \
         `[sources.{}] columns = {{ {declaration} }}`, {why}",
        s.alias,
        c.name,
        col.data_type,
        toml_key(&s.name),
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
            .and_then(|spec| spec.csv()?.columns.as_ref())
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
    /// Where rejected rows go (resolved).
    pub quarantine: crate::quarantine::QuarantineLocation,
    /// Secrets to hide from messages.
    pub redactor: Redactor,
    /// Where the valid rows go.
    pub target: Target,
    /// The database sources' extractions (their SQL, cursor and rows read).
    pub extractions: Vec<Arc<crate::db::extract::Extraction>>,
    /// Which rows incremental sources read.
    pub extract_mode: ExtractMode,
    /// The files incremental file sources read (`recorded` false until the run commits).
    pub new_files: Vec<crate::report::NewFilesReport>,
}

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
                crate::quality::DQ_FLAGS_COLUMN,
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

/// A DataFusion session configured from the project's defaults, with Sluice's functions, for
/// reading metadata and quarantined rows: no memory limit, and spill files (which such reads
/// do not make) in the system's temporary folder. A job's run uses [`run_session`].
pub fn session(project: &Project) -> SessionContext {
    let runtime = RuntimeEnvBuilder::new().with_object_store_registry(store_registry(project));
    // Without a spill folder to create, building the runtime cannot fail.
    let runtime = runtime.build().unwrap_or_default();
    session_in(project, runtime)
}

/// The session `job` runs in: [`session`]'s settings, and the memory limit of the job (else of
/// `[defaults]`), past which DataFusion's sorts, aggregations and windows (`unique` rules)
/// spill to `[defaults] spill_dir`; what cannot spill (a hash join's build side, the Parquet
/// writer's row groups) fails the run instead, with an error naming the limit
/// ([`crate::error::out_of_memory`]).
///
/// # Errors
/// [`Error::State`] when the spill folder cannot be created.
pub fn run_session(project: &Project, job: &Job) -> Result<SessionContext> {
    let d = &project.settings.defaults;
    let mut runtime = RuntimeEnvBuilder::new().with_object_store_registry(store_registry(project));
    if let Some(limit) = job.memory_limit.or(d.memory_limit) {
        // The five largest consumers are named in the error when the limit is reached.
        let top = std::num::NonZeroUsize::MIN.saturating_add(4);
        let pool = TrackConsumersPool::new(FairSpillPool::new(limit.bytes()), top);
        runtime = runtime.with_memory_pool(std::sync::Arc::new(pool));
    }
    if let Some(dir) = spill_folder(project, job) {
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::state(
                &dir,
                format!("cannot create the spill folder (`[defaults] spill_dir`): {e}"),
            )
        })?;
        runtime = runtime.with_temp_file_path(dir);
    }
    let runtime = runtime.build().map_err(|e| {
        let dir = d.spill_dir.as_deref().unwrap_or_default();
        Error::state(
            project.root.join(dir),
            format!("cannot use the spill folder: {e}"),
        )
    })?;
    Ok(session_in(project, runtime))
}

/// The folder `job`'s spill files go to, when `[defaults] spill_dir` is set:
/// `<spill_dir>/<project>-<hash>/<job>`, the hash (8 hex digits of the SHA-256 of the project's
/// canonical root) keeping apart two projects that share one `spill_dir` with the same project
/// and job names (a dev and a prod copy). DataFusion makes one `datafusion-XXXXXX` folder in
/// it per session and removes it when the session ends.
fn spill_folder(project: &Project, job: &Job) -> Option<std::path::PathBuf> {
    use sha2::Digest;
    let dir = project.settings.defaults.spill_dir.as_ref()?;
    let root = std::fs::canonicalize(&project.root).unwrap_or_else(|_| project.root.clone());
    let digest = sha2::Sha256::digest(root.to_string_lossy().as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let name: String = project
        .settings
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(
        project
            .root
            .join(dir)
            .join(format!("{name}-{hash}"))
            .join(&job.name),
    )
}

/// Removes the spill folders a run of `job` killed before its end left behind (crash point:
/// `kill -9` while executing): the `datafusion-*` folders in the job's spill folder other than
/// `own` (this run's, from its session's disk manager) last changed more than a second before
/// `started`. Call with the job's target lock held, so no other run of the job is executing;
/// one that compiled and waits for the lock made its folder after a second before `started` at
/// the latest. A folder that cannot be removed is logged and left for the next run.
pub fn sweep_spill(
    project: &Project,
    job: &Job,
    started: std::time::SystemTime,
    own: &[std::path::PathBuf],
) {
    let Some(dir) = spill_folder(project, job) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let cutoff = started - std::time::Duration::from_secs(1);
    for e in entries.flatten() {
        let stale = e.file_name().to_string_lossy().starts_with("datafusion-")
            && !own.contains(&e.path())
            && e.file_type().is_ok_and(|t| t.is_dir())
            && e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
        if stale {
            let path = e.path();
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(folder = %path.display(), "removed the spill folder of a run that did not end")
                }
                Err(err) => {
                    tracing::warn!(folder = %path.display(), error = %err, "cannot remove the spill folder of a run that did not end")
                }
            }
        }
    }
}

/// Object stores: each bucket's client from its `[connections.<name>]` (crate::store).
fn store_registry(project: &Project) -> std::sync::Arc<crate::store::Registry> {
    std::sync::Arc::new(crate::store::Registry::new(
        &project.settings.stores,
        &project.root,
        crate::config::interpolate::Redactor::process(),
    ))
}

/// A session over `runtime`. Joins stay hash joins under a memory limit: sort-merge joins,
/// whose sorts could spill, needed more memory than hash joins on the flights job (the merge
/// of spilled runs of wide rows does not spill), and sort the large input.
fn session_in(project: &Project, runtime: RuntimeEnv) -> SessionContext {
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
    let ctx = SessionContext::new_with_config_rt(cfg, std::sync::Arc::new(runtime));
    crate::functions::register(&ctx);
    ctx
}

/// The job's quarantine: `[quarantine] path` (default `<warehouse>/_quarantine/<job>`) in its
/// `format`, a folder of Parquet files or a Delta table. `ctx` gives an object-store table its
/// store (see [`session`]).
///
/// # Errors
/// A config error at `quarantine.path` when its `${...}` references cannot be resolved, or it
/// names an object store for a folder quarantine (an object store has no atomic publish of a
/// file; a Delta table's commit is atomic there).
pub fn quarantine_location(
    project: &Project,
    job: &Job,
    redactor: &Redactor,
    ctx: &SessionContext,
) -> Result<crate::quarantine::QuarantineLocation> {
    use crate::quarantine::QuarantineLocation;
    let resolved = match &job.quarantine.path {
        Some(p) => redactor
            .resolve_path(p.get_ref(), &project.root)
            .map_err(|e| path_error(job, "quarantine.path", p, &e.0))?,
        None => {
            let dir = project
                .settings
                .warehouse
                .join("_quarantine")
                .join(&job.name);
            dir.to_string_lossy().to_string()
        }
    };
    let refuse = |why: String, hint: &str| quarantine_error(job, why, hint);
    if job.quarantine.format == Some(TargetFormat::Delta) {
        let t = crate::sink::delta::DeltaTarget::append_only(
            project,
            &resolved,
            vec![crate::quarantine::delta::PARTITION_COLUMN.to_string()],
            ctx,
            redactor,
        )
        .map_err(|e| refuse(e.into(), "check the path and its [connections.<name>]"))?;
        if let Some(dir) = t.local_dir().filter(|d| !d.join("_delta_log").exists()) {
            if crate::quarantine::has_run_files(&dir) {
                return Err(refuse(
                    format!("{} holds a folder quarantine's files (`<run_id>.parquet`), not a Delta table", project.shown(&dir)),
                    "give the Delta quarantine a path of its own under [quarantine]. The folder's runs stay in their files (any Parquet reader opens them), but `sluice quarantine`, `replay` and retention no longer see them: replay what you need first, then delete the folder",
                ));
            }
        }
        return Ok(QuarantineLocation::Delta(Box::new(t)));
    }
    if crate::store::is_url(&resolved) {
        return Err(refuse(
            format!("`{resolved}` is an object-store location, and a quarantine folder's files cannot be published atomically there (object stores have no rename)"),
            "write `format = \"delta\"` under [quarantine] to keep the quarantine as a Delta table, whose commits are atomic on object stores",
        ));
    }
    let dir = project.path(resolved);
    if dir.join("_delta_log").exists() {
        return Err(refuse(
            format!(
                "{} is a Delta table, and this quarantine is a folder of Parquet files",
                project.shown(&dir)
            ),
            "write `format = \"delta\"` under [quarantine] to keep the quarantine in that table",
        ));
    }
    Ok(QuarantineLocation::Folder(dir))
}

/// A quarantine `job` cannot use, as a config error at `[quarantine] path` (or `format`, or
/// the `[quarantine]` table, for the default path) with `hint`.
fn quarantine_error(job: &Job, why: String, hint: &str) -> Error {
    let (key, span) = match &job.quarantine.path {
        Some(p) => ("quarantine.path", Some(p.span())),
        None => (
            "quarantine.format",
            crate::config::key_path_span(&job.src, "quarantine.format"),
        ),
    };
    let mut d = job.src.diagnostic(span, key, why);
    d.hint = Some(hint.to_string());
    Error::config(d)
}

/// A path template of `job` whose `${...}` cannot be resolved (an unset variable, say), as a
/// config error at its line.
fn path_error(job: &Job, key: &str, template: &serde_spanned::Spanned<String>, why: &str) -> Error {
    let mut d = job
        .src
        .diagnostic(Some(template.span()), key, why.to_string());
    d.hint = (why.contains("variable") || why.contains("${")).then(|| {
        "set the variable in the environment that runs sluice, or write the path without it".into()
    });
    Error::config(d)
}

/// Resolves a project-relative folder template.
fn resolve_dir(
    project: &Project,
    template: &str,
    redactor: &Redactor,
) -> std::result::Result<PathBuf, String> {
    let resolved = redactor.resolve_path(template, &project.root)?;
    if crate::store::is_url(&resolved) {
        return Err(format!(
            "`{resolved}` is an object-store location, and a folder of Parquet files cannot be published atomically there (object stores have no rename)"
        ) + "; write `format = \"delta\"` to load a Delta table, whose commits are atomic on object stores");
    }
    Ok(project.path(resolved))
}

/// The folder naming the lock of a target that is not a local folder (a database table, a
/// table or folder on an object store): `<state_dir>/targets/<shown, made file-safe>`.
fn lock_dir(project: &Project, shown: &str) -> PathBuf {
    project
        .path(&project.settings.state_dir)
        .join("targets")
        .join(lock_safe(shown))
}

/// A Parquet target given by `target.path` `p`: a local folder, or a folder on an object
/// store (then also returned, see [`object_parquet_target`]). Returns the target as shown and
/// the folder (local) or the folder naming its lock (object store).
///
/// # Errors
/// A config error at `target.path` when it does not resolve, or as
/// [`object_parquet_target`].
fn parquet_path_target(
    project: &Project,
    job: &Job,
    t: &ParquetTargetSpec,
    p: &serde_spanned::Spanned<String>,
    redactor: &Redactor,
    mode: &ExtractMode,
    ctx: &SessionContext,
) -> Result<(
    String,
    PathBuf,
    Option<crate::sink::object_parquet::ObjectParquetTarget>,
)> {
    let resolved = redactor
        .resolve_path(p.get_ref(), &project.root)
        .map_err(|e| path_error(job, "target.path", p, &e.0))?;
    if crate::store::is_url(&resolved) {
        let t = object_parquet_target(job, t, p, &resolved, mode, ctx)?;
        return Ok((t.shown.clone(), lock_dir(project, &t.shown), Some(t)));
    }
    let dir = project.path(resolved);
    Ok((project.shown(&dir), dir, None))
}

/// The Parquet folder of `job` at the object-store URL `resolved` (from `target.path` `p`):
/// `append` only, as an object store cannot replace a folder atomically.
///
/// # Errors
/// A config error at `target.path` for another mode, or a URL or store that cannot be set up.
fn object_parquet_target(
    job: &Job,
    t: &ParquetTargetSpec,
    p: &serde_spanned::Spanned<String>,
    resolved: &str,
    mode: &ExtractMode,
    ctx: &SessionContext,
) -> Result<crate::sink::object_parquet::ObjectParquetTarget> {
    if *mode == ExtractMode::FullRefresh {
        return Err(Error::Usage {
            message: format!(
                "--full-refresh replaces the target, and `{resolved}`, a folder of Parquet files on an object store, cannot be replaced atomically (object stores have no rename)"
            ),
            hint: Some("run without --full-refresh, or load a Delta table (`format = \"delta\"`), which an overwrite replaces in one commit".into()),
        });
    }
    if t.mode != LoadMode::Append {
        let mut d = job.src.diagnostic(
            Some(p.span()),
            "target.path",
            format!(
                "`{resolved}` is an object-store location, and a folder of Parquet files cannot be replaced atomically there (object stores have no rename)"
            ),
        );
        d.hint = Some("write `format = \"delta\"` to load a Delta table, whose commits are atomic on object stores, or `mode = \"append\"` (each run adds its own files)".into());
        return Err(Error::config(d));
    }
    let partition_by = job.target.partition_columns();
    let mut target = crate::sink::object_parquet::ObjectParquetTarget::of(
        &job.name,
        resolved,
        partition_by,
        ctx,
    )
    .map_err(|e| path_error(job, "target.path", p, &e.0))?;
    target.files = t.files.clone();
    Ok(target)
}

/// A name for a lock file or folder from a target as shown (`s3://lake/t` → `s3___lake_t`).
fn lock_safe(shown: &str) -> String {
    shown.replace([':', '/'], "_")
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
    compile::Compiler::new(project, job, inputs, mode)?
        .compile()
        .await
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

/// Where a job's valid rows go, resolved for this run: one variant per kind of target, each
/// with what its sink needs (a folder target's folder is [`CompiledJob::target_dir`]).
#[derive(Debug)]
pub enum Target {
    /// A Parquet folder on the local filesystem, published by a folder swap.
    Folder {
        /// Hive partition columns (`partition_by`), in order.
        partition_by: Vec<String>,
        /// How the files are laid out.
        files: crate::config::spec::ParquetFiles,
    },
    /// A Parquet folder on an object store (append only).
    ObjectParquet(crate::sink::object_parquet::ObjectParquetTarget),
    /// A Delta table, local or on an object store.
    Delta(crate::sink::delta::DeltaTarget),
    /// A database table.
    Database(crate::db::sink::DbTarget),
}

impl Target {
    /// The database target, when the job loads one.
    pub fn database(&self) -> Option<&crate::db::sink::DbTarget> {
        match self {
            Target::Database(t) => Some(t),
            _ => None,
        }
    }
}

/// Where a job's valid and rejected rows go, resolved for this run.
struct JobOutputs {
    target: Target,
    /// The target as shown (a folder relative to the project, or `connection:table`).
    target_shown: String,
    /// The target folder (database targets: the folder naming the target's lock).
    target_dir: PathBuf,
    quarantine: crate::quarantine::QuarantineLocation,
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
        ctx: &SessionContext,
    ) -> Result<JobOutputs> {
        let (target_shown, target_dir, target) = match &job.target {
            TargetSpec::Delta(t) => {
                delta_target(project, job, t, model, mode, ctx, redactor, diags)?
            }
            TargetSpec::Database(t) => {
                let connector = crate::db::Connector::shared(
                    project,
                    t.connection.get_ref(),
                    redactor,
                    connectors,
                )?;
                validate_db_target(job, t, model, mode, diags);
                database_target(project, job, t, connector, model, with_flags, diags)?
            }
            TargetSpec::Parquet(t) => parquet_target(project, job, t, redactor, mode, ctx)?,
        };
        let quarantine = quarantine_location(project, job, redactor, ctx)?;
        // Again with `${...}` resolved as this run resolves them, and against the files the
        // sources' globs match now.
        diags.extend(crate::config::guard::check_run(project, job, redactor));
        diags.extend(crate::config::guard::check_source_files(
            project,
            job,
            (!job.target.is_database()).then_some(target_dir.as_path()),
            quarantine.local_dir().as_deref(),
            sources
                .iter()
                .flat_map(|s| s.files.iter().map(move |f| (s.name.as_str(), f.as_str()))),
        ));
        for p in job.target.partition_by() {
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
            target,
            target_shown,
            target_dir,
            quarantine,
        })
    }
}

/// A target as shown, its folder (or the folder naming its lock), and what the run loads.
type ResolvedTarget = (String, PathBuf, Target);

/// The Delta target `t` of `job`, with the checks a Delta table needs (a key for `merge`, no
/// `time` field, `delete_missing` only on runs that read everything) reported to `diags`.
///
/// # Errors
/// As [`crate::sink::delta::DeltaTarget::of`].
#[allow(clippy::too_many_arguments)]
fn delta_target(
    project: &Project,
    job: &Job,
    t: &DeltaTargetSpec,
    model: &CanonicalModel,
    mode: &ExtractMode,
    ctx: &SessionContext,
    redactor: &Redactor,
    diags: &mut Diagnostics,
) -> Result<ResolvedTarget> {
    check_delete_missing_reads_everything(job, t.delete_missing, mode, diags);
    if t.mode == LoadMode::Merge && model.primary_key().is_empty() {
        diags.push(job.src.diagnostic(
            crate::config::key_path_span(&job.src, "target.mode"),
            "target.mode",
            format!("`merge` needs a primary key, and model `{}` has none (mark its key fields `primary_key = true`)", model.name),
        ));
    }
    for f in model
        .fields
        .iter()
        .filter(|f| f.data_type == FieldType::Time)
    {
        let mut d = job.src.diagnostic(
            Some(t.format.span()),
            "target.format",
            format!(
                "model `{}` has `{}`, a `time` field, and Delta Lake has no time-of-day type",
                model.name, f.name
            ),
        );
        d.hint = Some("load a Parquet or database target, or store the time another way in a new model version: minutes since midnight (`int32`) or text (`string`)".into());
        diags.push(d);
    }
    let key = model
        .primary_key()
        .into_iter()
        .map(str::to_string)
        .collect();
    let t = crate::sink::delta::DeltaTarget::of(project, job, t, key, ctx, redactor)?;
    let dir = match t.url.to_file_path() {
        Ok(local) if t.url.scheme() == "file" => local,
        // Not a folder: names the target's lock.
        _ => lock_dir(project, &t.shown),
    };
    Ok((t.shown.clone(), dir, Target::Delta(t)))
}

/// The database target `t` of `job` on `connector`, with the table name's problems on this
/// kind of database reported to `diags`.
///
/// # Errors
/// [`Error::Target`] for a table name that does not parse (config has checked it).
fn database_target(
    project: &Project,
    job: &Job,
    t: &DbTargetSpec,
    connector: crate::db::Connector,
    model: &CanonicalModel,
    with_flags: bool,
    diags: &mut Diagnostics,
) -> Result<ResolvedTarget> {
    let table = crate::db::TableName::parse(t.table.get_ref())
        .map_err(|e| Error::target(t.table.get_ref(), e))?;
    if let Some(d) = connector.dialect().table_name_problem(&table) {
        let mut diag = job
            .src
            .diagnostic(Some(t.table.span()), "target.table", d.0);
        diag.hint = Some(d.1);
        diags.push(diag);
    }
    let target = crate::db::sink::DbTarget::new(
        connector,
        table,
        t.mode,
        model,
        with_flags,
        t,
        chrono::Utc::now(),
    );
    let shown = target.shown();
    // Not a folder: names the target's lock and appears in messages.
    let dir = lock_dir(project, &shown);
    Ok((shown, dir, Target::Database(target)))
}

/// The Parquet target `t` of `job`: a folder under the warehouse (`table`), or at `path` (a
/// local folder or one on an object store).
///
/// # Errors
/// As [`parquet_path_target`].
fn parquet_target(
    project: &Project,
    job: &Job,
    t: &ParquetTargetSpec,
    redactor: &Redactor,
    mode: &ExtractMode,
    ctx: &SessionContext,
) -> Result<ResolvedTarget> {
    let (partition_by, files) = (job.target.partition_columns(), t.files.clone());
    let (shown, dir, object) = match (&t.table, &t.path) {
        (Some(table), _) => {
            let rel = project.settings.warehouse.join(table.get_ref());
            let folder = Target::Folder {
                partition_by,
                files,
            };
            return Ok((rel.to_string_lossy().to_string(), project.path(rel), folder));
        }
        (None, Some(p)) => parquet_path_target(project, job, t, p, redactor, mode, ctx)?,
        (None, None) => return Err(Error::Internal("target without table or path".into())),
    };
    let target = match object {
        Some(o) => Target::ObjectParquet(o),
        None => Target::Folder {
            partition_by,
            files,
        },
    };
    Ok((shown, dir, target))
}

/// Checks of a database target that need the model: `merge` and `scd2` need a primary key,
/// `track` names fields, the `scd2` columns are free, and `delete_missing` reads everything.
fn validate_db_target(
    job: &Job,
    t: &DbTargetSpec,
    model: &CanonicalModel,
    mode: &ExtractMode,
    diags: &mut Diagnostics,
) {
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
    check_delete_missing_reads_everything(job, t.delete_missing, mode, diags);
}

/// `delete_missing` (database and Delta `merge`, database `scd2`) removes the keys a run did
/// not read, so it needs a run that reads every row: not an incremental one.
fn check_delete_missing_reads_everything(
    job: &Job,
    delete_missing: bool,
    mode: &ExtractMode,
    diags: &mut Diagnostics,
) {
    if delete_missing
        && *mode != ExtractMode::FullRefresh
        && job.sources.values().any(|s| s.incremental_span().is_some())
    {
        let span = crate::config::key_path_span(&job.src, "target.delete_missing");
        let mut d = job.src.diagnostic(
            span,
            "target.delete_missing",
            "`delete_missing` with an incremental source would remove every row the run's range did not read",
        );
        d.hint = Some("a run reading only new rows cannot tell which keys disappeared: drop `delete_missing`, or run this job only with --full-refresh".into());
        diags.push(d);
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
