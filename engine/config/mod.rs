//! Loading and validating a Sluice project: `sluice.toml`, canonical models, mappings, jobs.
//!
//! ```text
//! sluice.toml                      project: warehouse and state folders, connections, defaults
//! mappings/canonical/<entity>.toml canonical models          → model::CanonicalModel
//! mappings/<name>.toml             mappings                  → Mapping
//! jobs/<name>.toml                 jobs                      → Job
//! ```
//!
//! Loading reads every file, reports every problem at once ([`Diagnostics`]) and checks the
//! references between files (a job's mapping exists, a mapping's model exists and its fields
//! cover the model's required fields, ...). Checks that need source schemas — expression types,
//! unknown columns — happen when a job is planned ([`crate::plan`]).

pub mod guard;
pub mod interpolate;
mod job_file;
mod job_sources;
mod job_target;
mod mapping_file;
mod model_file;
pub mod params;
mod project_file;
pub mod reader;
mod references;
pub mod schedule;
pub mod source_spec;
pub mod spec;
pub mod target_spec;

use crate::invalid;
use crate::invalid::InvalidValue;
use job_file::*;
pub use job_file::{parse_duration, DURATION_HINT};
use mapping_file::*;
pub use model_file::parse_model;
use model_file::*;
use project_file::*;
pub use project_file::{MAX_BATCH_SIZE, MAX_RECORD_BYTES_RANGE};

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_spanned::Spanned;
use toml_edit::{Item, Table};

use crate::diagnostic::{did_you_mean, Diagnostic, Diagnostics, SourceText};
use crate::model::{CanonicalModel, Field, FieldType, Literal, Version, TYPE_NAMES};
use reader::{join_key, Reader};
use schedule::{Schedule, ScheduleError};
use spec::*;

/// Name of the project file at the project root.
pub const PROJECT_FILE: &str = "sluice.toml";

/// What kind of file a path holds, from where it sits in the project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `sluice.toml`.
    Project,
    /// `mappings/canonical/*.toml`.
    Model,
    /// `mappings/*.toml`.
    Mapping,
    /// `jobs/*.toml`.
    Job,
}

/// Settings from `sluice.toml`.
#[derive(Debug, Clone)]
pub struct ProjectSettings {
    /// Project name, for reports.
    pub name: String,
    /// Warehouse folder for Parquet targets and the quarantine, relative to the root.
    pub warehouse: PathBuf,
    /// State folder for run reports and locks, relative to the root (and the state store's
    /// SQLite file, unless `state_url`).
    pub state_dir: PathBuf,
    /// `[state] url`: the PostgreSQL database holding the state store, as written (secrets
    /// as references), for several daemons sharing one store.
    pub state_url: Option<String>,
    /// Defaults for every job.
    pub defaults: DefaultsSpec,
    /// Named connections, URLs kept as templates (never resolved here).
    pub connections: BTreeMap<String, ConnectionSpec>,
    /// Object-store connections by name (`kind = "s3" | "gcs" | "azure"`).
    pub stores: BTreeMap<String, StoreSpec>,
    /// The daemon's HTTP server, if configured.
    pub server: Option<ServerSpec>,
    /// Where the daemon sends alerts, if anywhere.
    pub alerts: Option<AlertsSpec>,
    /// How long run reports, quarantined rows and history are kept.
    pub retention: RetentionPolicy,
}

/// `[retention]` of the project file, parsed. `None` keeps forever.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Run report files (`<state_dir>/runs/<job>/<run_id>.json`) older than this go.
    pub run_reports: Option<std::time::Duration>,
    /// Quarantined rows of runs older than this go (a folder's `<run_id>.parquet` files, a
    /// Delta quarantine's `run_id` partitions).
    pub quarantine: Option<std::time::Duration>,
    /// History rows (runs and their quality results, API triggers, delivered alerts) older
    /// than this go.
    pub history: Option<std::time::Duration>,
}

impl RetentionPolicy {
    /// Whether anything is ever pruned.
    pub fn is_set(&self) -> bool {
        self.run_reports.is_some() || self.quarantine.is_some() || self.history.is_some()
    }
}

/// How a mapping names its model: `flight` or `flight@1` (major version pinned).
#[derive(Debug, Clone)]
pub struct ModelRef {
    /// Model name.
    pub name: String,
    /// Pinned major version, if any.
    pub major: Option<u64>,
    /// Where the reference is written.
    pub span: Option<Range<usize>>,
}

/// A source as a mapping uses it: the source name a job binds, and its alias in expressions.
#[derive(Debug, Clone)]
pub struct SourceUse {
    /// Name the job binds under `[sources.<name>]`.
    pub source: String,
    /// Table alias in expressions.
    pub alias: String,
    /// Where the use is written.
    pub span: Option<Range<usize>>,
}

/// One join of a mapping.
#[derive(Debug, Clone)]
pub struct Join {
    /// The joined source.
    pub source: SourceUse,
    /// Join type.
    pub kind: JoinKind,
    /// Join condition (SQL), with its span.
    pub on: Spanned<String>,
}

/// A named SQL expression of a mapping (a `[let]` or a `[fields]` entry).
#[derive(Debug, Clone)]
pub struct NamedExpr {
    /// The name (let name or canonical field name).
    pub name: String,
    /// SQL text.
    pub sql: String,
    /// Span of the SQL text in the mapping file.
    pub span: Option<Range<usize>>,
}

/// A business rule of a mapping.
#[derive(Debug, Clone)]
pub struct BusinessRule {
    /// Rule name, as shown in the quarantine.
    pub name: String,
    /// Where the rule is written (its `name` value).
    pub span: Option<Range<usize>>,
    /// What the rule tests.
    pub test: RuleTest,
    /// Reason template.
    pub reason: Option<String>,
    /// Null policy.
    pub nulls: NullPolicy,
    /// What happens to a failing row.
    pub action: RuleAction,
}

/// What a mapping rule tests.
#[derive(Debug, Clone)]
pub enum RuleTest {
    /// A SQL boolean expression that is true for good rows.
    Check(NamedExpr),
    /// Canonical fields unique within the run; the first row by `order_by` is kept.
    Unique {
        /// Key fields.
        fields: Vec<String>,
        /// Sort expressions (SQL, `DESC`/`ASC` allowed), with their spans.
        order_by: Vec<NamedExpr>,
    },
    /// A canonical field's value must exist in another source or a loaded table.
    References {
        /// The canonical field.
        field: String,
        /// Where the valid values are.
        target: ReferenceTarget,
        /// Column holding them.
        column: String,
    },
}

/// Where a referential-integrity rule looks values up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceTarget {
    /// A source the job binds.
    Source(String),
    /// A Parquet table under the warehouse folder.
    Table(String),
}

/// A validated mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// File stem (`nycflights13_to_flight`).
    pub name: String,
    /// The file's text, for locating errors found while planning.
    pub src: SourceText,
    /// The model it produces.
    pub model: ModelRef,
    /// The driving source: one canonical row per row of it (before joins).
    pub from: SourceUse,
    /// Joins in order.
    pub joins: Vec<Join>,
    /// Helper expressions, computed in order; each may use the ones before it.
    pub lets: Vec<NamedExpr>,
    /// One expression per canonical field, in the file's order.
    pub fields: Vec<NamedExpr>,
    /// Business rules.
    pub rules: Vec<BusinessRule>,
    /// `[actions]`: the action of a built-in rule (`"flight.tailnum.pattern" = "flag"`),
    /// with the span of the value.
    pub actions: Vec<(String, RuleAction, Option<Range<usize>>)>,
    /// `[[test]]`s: inline rows and expected results (`sluice test`).
    pub tests: Vec<TestSpec>,
}

impl Mapping {
    /// Every source name the mapping reads (the driving one first, then joins, deduplicated).
    pub fn source_names(&self) -> Vec<&str> {
        let mut out: Vec<&str> = vec![self.from.source.as_str()];
        for j in &self.joins {
            if !out.contains(&j.source.source.as_str()) {
                out.push(j.source.source.as_str());
            }
        }
        for r in &self.rules {
            if let RuleTest::References {
                target: ReferenceTarget::Source(s),
                ..
            } = &r.test
            {
                if !out.contains(&s.as_str()) {
                    out.push(s.as_str());
                }
            }
        }
        out
    }
}

/// A validated job.
#[derive(Debug, Clone)]
pub struct Job {
    /// File stem (`flights`).
    pub name: String,
    /// The file's text.
    pub src: SourceText,
    /// Free text.
    pub description: Option<String>,
    /// Who to call when it fails.
    pub owner: Option<String>,
    /// Mapping name.
    pub mapping: String,
    /// Concrete sources by the mapping's source names.
    pub sources: BTreeMap<String, SourceSpec>,
    /// Target.
    pub target: TargetSpec,
    /// Quarantine settings.
    pub quarantine: QuarantineSpec,
    /// Dataset checks.
    pub checks: ChecksSpec,
    /// Retry policy for transient failures.
    pub retry: RetryPolicy,
    /// When the `sluice schedule` daemon runs it (`None`: only when asked).
    pub schedule: Option<schedule::Schedule>,
    /// `after = [...]`: the jobs whose success for a logical date makes the daemon run this
    /// one for that date (a job has `schedule` or `after`, not both).
    pub after: Vec<String>,
    /// `[vars]`: the run parameters the job declares, with their default values (see
    /// [`params`]).
    pub vars: BTreeMap<String, String>,
    /// `memory_limit`: replaces the project's `[defaults] memory_limit` for this job's runs.
    pub memory_limit: Option<MemoryLimit>,
    /// The parameters of the run this job is prepared for ([`params::apply`]); `None` as
    /// loaded from its file.
    pub run: Option<params::RunParams>,
}

/// A table name as written in a job: `name` or `schema.name`. Each part is used exactly as
/// written, quoted, so it must be spelled as the database stores it (PostgreSQL folds unquoted
/// names to lower case: write `public.flights`, not `Public.Flights`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// Schema (PostgreSQL), database (MySQL) or attached database (SQLite); none for the
    /// connection's default.
    pub schema: Option<String>,
    /// Table name.
    pub name: String,
}

impl TableName {
    /// Parses `name` or `schema.name`; each part is letters, digits, `_` or `$`, not starting
    /// with a digit.
    ///
    /// # Errors
    /// A message saying what is wrong, for a config diagnostic.
    pub fn parse(text: &str) -> std::result::Result<TableName, InvalidValue> {
        let parts: Vec<&str> = text.split('.').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && !p.starts_with(|c: char| c.is_ascii_digit())
                && p.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        };
        match parts.as_slice() {
            [name] if ok(name) => Ok(TableName {
                schema: None,
                name: name.to_string(),
            }),
            [schema, name] if ok(schema) && ok(name) => Ok(TableName {
                schema: Some(schema.to_string()),
                name: name.to_string(),
            }),
            _ => Err(invalid!(
                "`{text}` is not a table name: write `table` or `schema.table` (letters, digits and `_`)"
            )),
        }
    }
}

/// A job's `[retry]` as validated: durations parsed (see [`RetrySpec`] for the keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Runs in all, the first included (1: no retry).
    pub attempts: u32,
    /// Wait before the first retry, doubled after each, jittered.
    pub backoff: std::time::Duration,
    /// Longest wait between attempts.
    pub max_backoff: std::time::Duration,
}

impl Default for RetryPolicy {
    /// One attempt; `2s` and `1m` as `[retry]` defaults them.
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            backoff: std::time::Duration::from_secs(2),
            max_backoff: std::time::Duration::from_secs(60),
        }
    }
}

/// A loaded project.
#[derive(Debug, Clone)]
pub struct Project {
    /// Folder holding `sluice.toml`; relative paths in the project are relative to it.
    pub root: PathBuf,
    /// Project settings.
    pub settings: ProjectSettings,
    /// Models by name.
    pub models: BTreeMap<String, CanonicalModel>,
    /// Mappings by name.
    pub mappings: BTreeMap<String, Mapping>,
    /// Jobs by name.
    pub jobs: BTreeMap<String, Job>,
}

impl Project {
    /// Finds the project root: the nearest folder at or above `start` holding `sluice.toml`.
    pub fn find_root(start: &Path) -> Option<PathBuf> {
        let start = if start.is_file() {
            start.parent()?.to_path_buf()
        } else {
            start.to_path_buf()
        };
        let start = std::fs::canonicalize(&start).unwrap_or(start);
        start
            .ancestors()
            .find(|p| p.join(PROJECT_FILE).is_file())
            .map(Path::to_path_buf)
    }

    /// Loads and validates every file of the project at `root`.
    ///
    /// # Errors
    /// Every problem found, each with file, line and hint.
    pub fn load(root: &Path) -> Result<Project, Diagnostics> {
        let (project, diags) = Project::load_partial(root);
        diags.into_result(project)
    }

    /// Loads the project to run the job `job` (a name or a job file's path): problems in the
    /// files the job uses (`sluice.toml`, its job file, its mapping, its model) stop it, with
    /// every problem found; problems only in other files do not, and are returned to be shown
    /// as warnings, so one broken file does not stop every job.
    ///
    /// # Errors
    /// Every diagnostic, when one is in a file the job uses or the job did not load.
    pub fn load_for_job(root: &Path, job: &str) -> Result<(Project, Diagnostics), Diagnostics> {
        let (project, diags) = Project::load_partial(root);
        if diags.is_empty() {
            return Ok((project, diags));
        }
        let Some(used) = project.files_of(job) else {
            return Err(diags);
        };
        let in_used = |d: &Diagnostic| {
            d.file.as_os_str().is_empty()
                || used.contains(&d.file)
                || (d.file.starts_with(Path::new("mappings").join("canonical"))
                    && d.file.file_stem() == used.last().and_then(|m| m.file_stem()))
        };
        if diags.0.iter().any(in_used) {
            return Err(diags);
        }
        Ok((project, diags))
    }

    /// The files job `job` is read from, as diagnostics name them: `sluice.toml`, the job file,
    /// the mapping file, and last the model's file name (`<model>.toml`). `None` when the job,
    /// its mapping or its model did not load.
    fn files_of(&self, job: &str) -> Option<Vec<PathBuf>> {
        let job = self.job(job).ok()?;
        let mapping = self.mappings.get(&job.mapping)?;
        self.models.get(&mapping.model.name)?;
        Some(vec![
            PathBuf::from(PROJECT_FILE),
            job.src.path.clone(),
            mapping.src.path.clone(),
            PathBuf::from(format!("{}.toml", mapping.model.name)),
        ])
    }

    /// Loads what can be loaded: the project holds every file that is valid on its own, and
    /// the diagnostics every problem found. Used by `validate` to go on checking the jobs whose
    /// files are fine. A reference to a file that exists but has errors is not reported again.
    pub fn load_partial(root: &Path) -> (Project, Diagnostics) {
        let mut diags = Diagnostics::default();
        let mut broken = BTreeSet::new();
        let settings = load_project_file(root, &mut diags);
        let mut models = BTreeMap::new();
        for path in toml_files(&root.join("mappings").join("canonical")) {
            if let Some(src) = read_source(root, &path, &mut diags) {
                match load_model(&src, &mut diags, true) {
                    Some(m) => {
                        models.insert(m.name.clone(), m);
                    }
                    None => {
                        broken.insert(format!("model:{}", stem(&src)));
                    }
                }
            }
        }
        let mut mappings = BTreeMap::new();
        for path in toml_files(&root.join("mappings")) {
            if let Some(src) = read_source(root, &path, &mut diags) {
                match load_mapping(&src, &mut diags) {
                    Some(m) => {
                        mappings.insert(m.name.clone(), m);
                    }
                    None => {
                        broken.insert(format!("mapping:{}", stem(&src)));
                    }
                }
            }
        }
        let mut jobs = BTreeMap::new();
        for path in toml_files(&root.join("jobs")) {
            if let Some(src) = read_source(root, &path, &mut diags) {
                match load_job(&src, &mut diags) {
                    Some(j) => {
                        jobs.insert(j.name.clone(), j);
                    }
                    None => {
                        broken.insert(format!("job:{}", stem(&src)));
                    }
                }
            }
        }
        let project = Project {
            root: root.to_path_buf(),
            settings: settings.unwrap_or_else(|| default_settings(root)),
            models,
            mappings,
            jobs,
        };
        project.check_references(&broken, &mut diags);
        diags.extend(crate::config::guard::check_project(&project));
        // Credentials are hidden from every message from the start, also where a value
        // reappears outside its connection (see `interpolate`). One that does not resolve
        // is reported when its connection is opened.
        for c in project.settings.connections.values() {
            let _ = interpolate::Redactor::process().resolve(c.url.get_ref(), &project.root);
        }
        (project, diags)
    }

    /// The job named `name_or_path`: a job name (`flights`) or a path to its file.
    ///
    /// # Errors
    /// A diagnostic listing the known jobs.
    pub fn job(&self, name_or_path: &str) -> Result<&Job, Box<Diagnostic>> {
        let name = Path::new(name_or_path)
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|_| name_or_path.ends_with(".toml"))
            .unwrap_or(name_or_path);
        self.jobs.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.jobs.keys().map(String::as_str).collect();
            let hint = match did_you_mean(name, known.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("jobs in this project: {}", known.join(", ")),
            };
            Box::new(
                Diagnostic::file_level(
                    self.root.join("jobs"),
                    format!("no job named `{name}` in jobs/"),
                )
                .with_hint(hint),
            )
        })
    }

    /// Absolute path of a project-relative path.
    pub fn path(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.root.join(relative)
    }

    /// `path` as Sluice shows it: relative to the project root when inside it.
    pub fn shown(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// Span of a dotted key path in a file (`version`, `checks.freshness.field`,
/// `checks.null_ratio.tail_number`): the key when found, else the deepest table found. In an
/// array of tables a segment names the element whose `name` is that segment
/// (`checks.sql.<name>.expr`). `None` when the text does not parse or nothing matches.
pub fn key_path_span(src: &SourceText, path: &str) -> Option<Range<usize>> {
    let doc = toml_edit::ImDocument::parse(src.text.clone()).ok()?;
    key_path_span_in(doc.as_table(), path)
}

/// [`key_path_span`] in an already parsed file.
pub fn key_path_span_in(root: &Table, path: &str) -> Option<Range<usize>> {
    let mut table = root;
    let mut found = None;
    let mut segments = path.split('.').peekable();
    while let Some(seg) = segments.next() {
        let span = Reader::key_span(table, seg);
        match table.get(seg) {
            Some(Item::Table(t)) => {
                found = span.or(found);
                table = t;
            }
            Some(Item::Value(toml_edit::Value::InlineTable(t))) => {
                // `sources.x = { ... }`: the rest of the path is a key of the inline table.
                found = span.or(found);
                let Some(key) = segments.next() else {
                    return found;
                };
                return t.key(key).and_then(|k| k.span()).or(found);
            }
            Some(Item::ArrayOfTables(a)) => {
                let Some(name) = segments.next() else {
                    return span.or(found);
                };
                let element = a
                    .iter()
                    .find(|t| t.get("name").and_then(Item::as_str) == Some(name))?;
                found = Reader::key_span(element, "name").or(found);
                table = element;
            }
            Some(_) => return span.or(found),
            None => return found,
        }
    }
    found
}

/// The `*.toml` files directly in `dir`, sorted; none when `dir` does not exist.
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml"))
        .collect();
    out.sort();
    out
}

/// Reads a file; the displayed path is relative to `root` when possible.
pub fn read_source(root: &Path, path: &Path, diags: &mut Diagnostics) -> Option<SourceText> {
    let shown = path.strip_prefix(root).unwrap_or(path).to_path_buf();
    match std::fs::read_to_string(path) {
        Ok(text) => Some(SourceText::new(shown, text)),
        Err(e) => {
            diags.push(Diagnostic::file_level(
                shown,
                format!("cannot read file: {e}"),
            ));
            None
        }
    }
}

/// Classifies a file by its place in the project, or by its keys when it sits elsewhere.
pub fn file_kind(root: &Path, path: &Path, text: &str) -> Option<FileKind> {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    if abs.file_name().is_some_and(|n| n == PROJECT_FILE) {
        return Some(FileKind::Project);
    }
    if let Ok(rel) = abs.strip_prefix(&root) {
        let parent: Vec<_> = rel
            .parent()
            .map(|p| p.components().collect())
            .unwrap_or_default();
        let parts: Vec<&str> = parent
            .iter()
            .filter_map(|c| c.as_os_str().to_str())
            .collect();
        match parts.as_slice() {
            ["mappings", "canonical"] => return Some(FileKind::Model),
            ["mappings"] => return Some(FileKind::Mapping),
            ["jobs"] => return Some(FileKind::Job),
            _ => {}
        }
    }
    let table = toml_edit::ImDocument::parse(text.to_string())
        .ok()?
        .into_table();
    if table.contains_key("mapping") || table.contains_key("target") {
        Some(FileKind::Job)
    } else if table.contains_key("from") || table.contains_key("model") {
        Some(FileKind::Mapping)
    } else if table.contains_key("version") {
        Some(FileKind::Model)
    } else {
        None
    }
}

/// Loads one file of a known kind on its own (for `sluice validate FILE`), reporting problems
/// that the file has by itself (not its references).
pub fn load_file(kind: FileKind, src: &SourceText, diags: &mut Diagnostics) {
    match kind {
        FileKind::Project => {
            parse_project(src, diags);
        }
        FileKind::Model => {
            load_model(src, diags, true);
        }
        FileKind::Mapping => {
            load_mapping(src, diags);
        }
        FileKind::Job => {
            load_job(src, diags);
        }
    }
}

/// Reads every entry of the sub-table `key` of `table` (`[fields.x]`, `[sources.y]`, ...)
/// individually. Returns (name, value, span of the entry's key).
fn entries<T: serde::de::DeserializeOwned>(
    r: &mut Reader<'_>,
    table: &Table,
    key: &str,
) -> Vec<(String, T, Option<Range<usize>>)> {
    let mut out = Vec::new();
    let Some(item) = table.get(key) else {
        return out;
    };
    let Some(sub) = item.as_table_like() else {
        r.error(
            Reader::key_span(table, key),
            key,
            format!("`{key}` must be a table"),
            Some(format!("write `[{key}.<name>]` sections")),
        );
        return out;
    };
    for (name, entry) in sub.iter() {
        let span = sub
            .key(name)
            .and_then(|k| k.span())
            .or_else(|| entry.span());
        if let Some(v) = r.entry::<T>(&join_key(key, name), entry) {
            out.push((name.to_string(), v, span));
        }
    }
    out
}

/// Reads each element of an array of tables (`[[rule]]`) individually.
fn array_entries<T: serde::de::DeserializeOwned>(
    r: &mut Reader<'_>,
    table: &Table,
    key: &str,
) -> Vec<T> {
    let mut out = Vec::new();
    match table.get(key) {
        Some(Item::ArrayOfTables(arr)) => {
            for (i, t) in arr.iter().enumerate() {
                if let Some(v) = r.entry::<T>(&format!("{key}[{i}]"), &Item::Table(t.clone())) {
                    out.push(v);
                }
            }
        }
        Some(Item::Value(toml_edit::Value::Array(arr))) => {
            for (i, v) in arr.iter().enumerate() {
                if let Some(v) = r.entry::<T>(&format!("{key}[{i}]"), &Item::Value(v.clone())) {
                    out.push(v);
                }
            }
        }
        Some(_) => r.error(
            Reader::key_span(table, key),
            key,
            format!("`{key}` must be an array of tables"),
            Some(format!("write each entry as a `[[{key}]]` section")),
        ),
        None => {}
    }
    out
}

/// Reads a table of `name = "SQL"` entries, keeping each expression's span.
fn expressions(r: &mut Reader<'_>, table: &Table, key: &str) -> Vec<NamedExpr> {
    entries::<Spanned<String>>(r, table, key)
        .into_iter()
        .map(|(name, sql, _)| NamedExpr {
            name,
            span: Some(sql.span()),
            sql: sql.into_inner(),
        })
        .collect()
}

fn stem(src: &SourceText) -> String {
    src.path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string()
}

/// True for names usable as columns without quoting: `[a-z_][a-z0-9_]*`.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
