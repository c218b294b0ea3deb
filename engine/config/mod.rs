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

pub mod interpolate;
pub mod reader;
pub mod spec;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_spanned::Spanned;
use toml_edit::{Item, Table};

use crate::diagnostic::{did_you_mean, Diagnostic, Diagnostics, SourceText};
use crate::model::{CanonicalModel, Field, FieldType, Literal, Version, TYPE_NAMES};
use reader::{join_key, Reader};
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
    /// State folder for run reports and locks, relative to the root.
    pub state_dir: PathBuf,
    /// Defaults for every job.
    pub defaults: DefaultsSpec,
    /// Named connections, URLs kept as templates (never resolved here).
    pub connections: BTreeMap<String, ConnectionSpec>,
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
    pub retry: RetrySpec,
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
                if let Some(j) = load_job(&src, &mut diags) {
                    jobs.insert(j.name.clone(), j);
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
        diags.extend(crate::guard::check_project(&project));
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

    /// Checks references between files: job → mapping → model, source bindings, field coverage.
    fn check_references(&self, broken: &BTreeSet<String>, diags: &mut Diagnostics) {
        for m in self.mappings.values() {
            self.check_mapping_model(m, broken, diags);
        }
        for j in self.jobs.values() {
            self.check_job_references(j, broken, diags);
        }
    }

    /// A mapping's model exists, has the pinned major version, and has every field the
    /// mapping writes; every required field is mapped.
    fn check_mapping_model(&self, m: &Mapping, broken: &BTreeSet<String>, diags: &mut Diagnostics) {
        let Some(model) = self.models.get(&m.model.name) else {
            if broken.contains(&format!("model:{}", m.model.name)) {
                // Its own errors are reported; saying it is missing would mislead.
                return;
            }
            let known: Vec<&str> = self.models.keys().map(String::as_str).collect();
            let mut d = m.src.diagnostic(
                m.model.span.clone(),
                "model",
                format!("no canonical model named `{}`", m.model.name),
            );
            d.hint = Some(match did_you_mean(&m.model.name, known.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "models are files in mappings/canonical/; known: {}",
                    known.join(", ")
                ),
            });
            diags.push(d);
            return;
        };
        if let Some(major) = m.model.major {
            if major != model.version.major {
                let mut d = m.src.diagnostic(
                    m.model.span.clone(),
                    "model",
                    format!(
                        "mapping pins `{}@{major}` but the model is version {}",
                        model.name, model.version
                    ),
                );
                d.hint = Some(format!(
                    "update the mapping for the model's breaking changes, then pin `{}@{}`",
                    model.name, model.version.major
                ));
                diags.push(d);
            }
        }
        let mapped: BTreeSet<&str> = m.fields.iter().map(|f| f.name.as_str()).collect();
        for f in &m.fields {
            if model.field(&f.name).is_none() {
                let names = model.fields.iter().map(|f| f.name.as_str());
                let mut d = m.src.diagnostic(
                    f.span.clone(),
                    format!("fields.{}", f.name),
                    format!("`{}` is not a field of model `{}`", f.name, model.name),
                );
                d.hint = Some(match did_you_mean(&f.name, names) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("add it to {} first", model.file.display()),
                });
                diags.push(d);
            }
        }
        let missing: Vec<&str> = model
            .fields
            .iter()
            .filter(|f| f.required && !mapped.contains(f.name.as_str()))
            .map(|f| f.name.as_str())
            .collect();
        if !missing.is_empty() {
            let span = key_path_span(&m.src, "fields");
            let mut d = m.src.diagnostic(
                span,
                "fields",
                format!(
                    "required field{} of model `{}` not mapped: {}",
                    if missing.len() == 1 { "" } else { "s" },
                    model.name,
                    missing.join(", ")
                ),
            );
            d.hint = Some(format!(
                "add `{} = \"<SQL expression>\"` under [fields]",
                missing[0]
            ));
            diags.push(d);
        }
    }

    /// A job's mapping and connections exist, its sources are exactly the ones the mapping
    /// reads, and its partition columns are fields of the model.
    fn check_job_references(&self, j: &Job, broken: &BTreeSet<String>, diags: &mut Diagnostics) {
        let Some(m) = self.mappings.get(&j.mapping) else {
            if broken.contains(&format!("mapping:{}", j.mapping)) {
                return;
            }
            let known: Vec<&str> = self.mappings.keys().map(String::as_str).collect();
            let span = key_path_span(&j.src, "mapping");
            let mut d =
                j.src
                    .diagnostic(span, "mapping", format!("no mapping named `{}`", j.mapping));
            d.hint = Some(match did_you_mean(&j.mapping, known.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "mappings are files in mappings/; known: {}",
                    known.join(", ")
                ),
            });
            diags.push(d);
            return;
        };
        self.check_connections(j, diags);
        check_bindings(j, m, diags);
        if let Some(model) = self.models.get(&m.model.name) {
            for p in &j.target.partition_by {
                if model.field(p.get_ref()).is_none() {
                    let names = model.fields.iter().map(|f| f.name.as_str());
                    let mut d = j.src.diagnostic(
                        Some(p.span()),
                        "target.partition_by",
                        format!("`{}` is not a field of model `{}`", p.get_ref(), model.name),
                    );
                    d.hint =
                        did_you_mean(p.get_ref(), names).map(|s| format!("did you mean `{s}`?"));
                    diags.push(d);
                }
            }
        }
    }

    /// Every connection a job names is declared in sluice.toml.
    fn check_connections(&self, j: &Job, diags: &mut Diagnostics) {
        let known: Vec<&str> = self
            .settings
            .connections
            .keys()
            .map(String::as_str)
            .collect();
        let named = j
            .sources
            .iter()
            .filter_map(|(n, s)| {
                s.connection
                    .as_ref()
                    .map(|c| (format!("sources.{n}.connection"), c))
            })
            .chain(
                j.target
                    .connection
                    .as_ref()
                    .map(|c| ("target.connection".to_string(), c)),
            );
        for (key, c) in named {
            if self.settings.connections.contains_key(c.get_ref()) {
                continue;
            }
            let mut d = j.src.diagnostic(
                Some(c.span()),
                key,
                format!("no connection named `{}` in sluice.toml", c.get_ref()),
            );
            d.hint = Some(match did_you_mean(c.get_ref(), known.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None if known.is_empty() => {
                    "declare it in sluice.toml as [connections.<name>] with `kind` and `url`".into()
                }
                None => format!("connections in sluice.toml: {}", known.join(", ")),
            });
            diags.push(d);
        }
    }
}

/// The sources a mapping reads (`from`, joins, `references` to a source) are bound by the
/// job, and the job binds no source the mapping does not read.
fn check_bindings(j: &Job, m: &Mapping, diags: &mut Diagnostics) {
    let needed = m.source_names();
    let bound: Vec<&str> = j.sources.keys().map(String::as_str).collect();
    let ref_uses: Vec<SourceUse> = m
        .rules
        .iter()
        .filter_map(|r| match &r.test {
            RuleTest::References {
                target: ReferenceTarget::Source(s),
                ..
            } => Some(SourceUse {
                source: s.clone(),
                alias: s.clone(),
                span: r.span.clone(),
            }),
            _ => None,
        })
        .collect();
    let uses = std::iter::once(&m.from)
        .chain(m.joins.iter().map(|x| &x.source))
        .chain(ref_uses.iter());
    let mut reported = BTreeSet::new();
    for u in uses {
        if j.sources.contains_key(&u.source) || !reported.insert(u.source.clone()) {
            continue;
        }
        let mut d = m.src.diagnostic(
            u.span.clone(),
            "from",
            format!(
                "source `{}` is not bound by job `{}` (it binds: {})",
                u.source,
                j.name,
                if bound.is_empty() {
                    "nothing".to_string()
                } else {
                    bound.join(", ")
                }
            ),
        );
        d.hint = Some(match did_you_mean(&u.source, bound.iter().copied()) {
            Some(s) => format!(
                "did you mean `{s}`? Otherwise add [sources.{}] to {}",
                u.source,
                j.src.path.display()
            ),
            None => format!(
                "add [sources.{}] with `format` and `path` to {}",
                u.source,
                j.src.path.display()
            ),
        });
        diags.push(d);
    }
    for name in j.sources.keys() {
        if !needed.contains(&name.as_str()) {
            let span = key_path_span(&j.src, &format!("sources.{name}"));
            let mut d = j.src.diagnostic(
                span,
                format!("sources.{name}"),
                format!("source `{name}` is not read by mapping `{}`", m.name),
            );
            d.hint = Some(format!(
                "the mapping reads: {}; remove this source or fix the name",
                needed.join(", ")
            ));
            diags.push(d);
        }
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

fn default_settings(root: &Path) -> ProjectSettings {
    ProjectSettings {
        name: root
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("sluice")
            .to_string(),
        warehouse: PathBuf::from("warehouse"),
        state_dir: PathBuf::from(".sluice"),
        defaults: DefaultsSpec::default(),
        connections: BTreeMap::new(),
    }
}

fn load_project_file(root: &Path, diags: &mut Diagnostics) -> Option<ProjectSettings> {
    let src = read_source(root, &root.join(PROJECT_FILE), diags)?;
    parse_project(&src, diags)
}

const PROJECT_KEYS: &[&str] = &["name", "warehouse", "state_dir", "defaults", "connections"];

fn parse_project(src: &SourceText, diags: &mut Diagnostics) -> Option<ProjectSettings> {
    let mut r = Reader::new(src, diags);
    let table = r.parse()?;
    let mut s = default_settings(Path::new(""));
    s.name = String::new();
    for (key, item) in table.iter() {
        match key {
            "name" => s.name = r.entry::<String>(key, item).unwrap_or_default(),
            "warehouse" | "state_dir" => {
                let Some(p) = r.entry::<String>(key, item) else {
                    continue;
                };
                match interpolate::resolve_with(&p, &|n| std::env::var(n).ok(), &|_| {
                    Err("a folder is not read from a file; use `${env:NAME}`".into())
                }) {
                    Ok(v) if key == "warehouse" => s.warehouse = PathBuf::from(v.value),
                    Ok(v) => s.state_dir = PathBuf::from(v.value),
                    Err(e) => r.error(
                        Reader::key_span(&table, key),
                        key,
                        format!("cannot resolve `{key}`: {e}"),
                        Some("set the variable in the environment that runs sluice, or write the folder without it".into()),
                    ),
                }
            }
            "defaults" => {
                if let Some(d) = r.entry::<DefaultsSpec>(key, item) {
                    validate_defaults(&mut r, item, &d);
                    s.defaults = d
                }
            }
            "connections" => {
                for (name, c, _) in entries::<ConnectionSpec>(&mut r, &table, key) {
                    if interpolate::has_plaintext_password(c.url.get_ref()) {
                        r.error(
                            Some(c.url.span()),
                            &format!("connections.{name}.url"),
                            "password written in plain text",
                            Some("write it as `${env:NAME}` or `${file:PATH}` and keep the value out of the project".into()),
                        );
                    }
                    validate_connection(&mut r, &name, &c);
                    s.connections.insert(name, c);
                }
            }
            other => r.unknown_key(&table, other, "", PROJECT_KEYS),
        }
    }
    if s.name.is_empty() {
        r.missing_key(
            None,
            "",
            "name",
            "add `name = \"my_project\"` at the top of sluice.toml",
        );
    }
    Some(s)
}

/// Largest `[defaults] batch_size`: 2^20 rows. Beyond it a batch's buffers grow past what
/// DataFusion's operators are tuned for, with no gain in speed.
pub const MAX_BATCH_SIZE: usize = 1 << 20;

/// Bounds of `[defaults] max_record_bytes`: 1 KiB to 1 GiB.
pub const MAX_RECORD_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1024..=1 << 30;

fn validate_defaults(r: &mut Reader<'_>, item: &toml_edit::Item, d: &DefaultsSpec) {
    let span = |key: &str| {
        item.as_table_like()
            .and_then(|t| t.get(key))
            .and_then(toml_edit::Item::span)
    };
    if !(1..=MAX_BATCH_SIZE).contains(&d.batch_size) {
        r.error(
            span("batch_size"),
            "defaults.batch_size",
            format!(
                "batch_size = {} is outside 1..={MAX_BATCH_SIZE}",
                d.batch_size
            ),
            Some("rows per Arrow batch; the default, 8192, suits most loads".into()),
        );
    }
    if !MAX_RECORD_BYTES_RANGE.contains(&d.max_record_bytes) {
        r.error(
            span("max_record_bytes"),
            "defaults.max_record_bytes",
            format!(
                "max_record_bytes = {} is outside {}..={}",
                d.max_record_bytes,
                MAX_RECORD_BYTES_RANGE.start(),
                MAX_RECORD_BYTES_RANGE.end()
            ),
            Some(
                "the longest CSV record read whole, in bytes; the default is 16777216 (16 MiB)"
                    .into(),
            ),
        );
    }
}

fn validate_connection(r: &mut Reader<'_>, name: &str, c: &ConnectionSpec) {
    let path = format!("connections.{name}");
    for (key, v) in [
        ("connect_timeout", &c.connect_timeout),
        ("statement_timeout", &c.statement_timeout),
    ] {
        if let Some(v) = v {
            if let Err(e) = parse_duration(v.get_ref()) {
                r.error(
                    Some(v.span()),
                    &format!("{path}.{key}"),
                    e,
                    Some(DURATION_HINT.into()),
                );
            }
        }
    }
    if c.pool_size == Some(0) {
        r.error(
            Some(c.url.span()),
            &format!("{path}.pool_size"),
            "`pool_size` must be at least 1",
            None,
        );
    }
    let tls_given = c.sslmode.is_some() || c.ca_file.is_some();
    if c.kind == ConnectionKind::Sqlite && tls_given {
        r.error(
            Some(c.url.span()),
            &format!("{path}.sslmode"),
            "a SQLite connection is a local file: `sslmode` and `ca_file` do not apply",
            Some("remove them".into()),
        );
    }
    if let (Some(ca), Some(mode)) = (&c.ca_file, c.sslmode) {
        if mode != SslMode::VerifyFull {
            r.error(
                Some(ca.span()),
                &format!("{path}.ca_file"),
                "`ca_file` is only used to verify the server's certificate",
                Some("set `sslmode = \"verify-full\"`, or remove `ca_file`".into()),
            );
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

const MODEL_KEYS: &[&str] = &["name", "version", "description", "fields"];

/// Loads one canonical model from its text (any file, or a version kept in the state store;
/// unlike in a project, the file need not be named after the model).
///
/// # Errors
/// Every problem of the file, as diagnostics.
pub fn parse_model(src: &SourceText) -> Result<CanonicalModel, Diagnostics> {
    let mut diags = Diagnostics::default();
    match load_model(src, &mut diags, false) {
        Some(m) if diags.is_empty() => Ok(m),
        _ => Err(diags),
    }
}

/// Loads a model file; `in_project` also requires the file to be named after the model.
fn load_model(
    src: &SourceText,
    diags: &mut Diagnostics,
    in_project: bool,
) -> Option<CanonicalModel> {
    let before = diags.len();
    let mut r = Reader::new(src, diags);
    let table = r.parse()?;
    let mut name = None;
    let mut version = None;
    let mut description = None;
    let mut fields = Vec::new();
    for (key, item) in table.iter() {
        match key {
            "name" => name = r.entry::<Spanned<String>>(key, item),
            "version" => {
                if let Some(v) = r.entry::<Spanned<String>>(key, item) {
                    match Version::parse(v.get_ref()) {
                        Some(parsed) => version = Some(parsed),
                        None => r.error(
                            Some(v.span()),
                            "version",
                            format!("`{}` is not a semantic version", v.get_ref()),
                            Some(
                                "write MAJOR.MINOR.PATCH, e.g. \"1.0.0\" (https://semver.org)"
                                    .into(),
                            ),
                        ),
                    }
                }
            }
            "description" => description = r.entry::<String>(key, item),
            "fields" => {
                for (fname, spec, span) in entries::<FieldSpec>(&mut r, &table, key) {
                    if let Some(f) = validate_field(&mut r, &fname, spec, span) {
                        fields.push(f);
                    }
                }
            }
            other => r.unknown_key(&table, other, "", MODEL_KEYS),
        }
    }
    let expected = stem(src);
    match &name {
        None => r.missing_key(None, "", "name", &format!("add `name = \"{expected}\"`")),
        Some(n) if in_project && n.get_ref() != &expected => r.error(
            Some(n.span()),
            "name",
            format!(
                "model name `{}` differs from its file name `{expected}.toml`",
                n.get_ref()
            ),
            Some("name the file after the model, so it can be found".into()),
        ),
        Some(_) => {}
    }
    if version.is_none() && !table.contains_key("version") {
        r.missing_key(None, "", "version", "add `version = \"1.0.0\"`");
    }
    if fields.is_empty() && !table.contains_key("fields") {
        r.missing_key(
            None,
            "",
            "fields",
            "add at least one `[fields.<name>]` section with a `type`",
        );
    }
    if r.diags.len() > before {
        return None;
    }
    Some(CanonicalModel {
        name: name?.into_inner(),
        version: version?,
        description,
        fields,
        file: src.path.clone(),
    })
}

fn validate_field(
    r: &mut Reader<'_>,
    name: &str,
    spec: FieldSpec,
    key_span: Option<Range<usize>>,
) -> Option<Field> {
    let path = format!("fields.{name}");
    let mut ok = true;
    if !is_identifier(name) {
        r.error(
            key_span.clone(),
            &path,
            format!("field name `{name}` is not snake_case"),
            Some("use lowercase letters, digits and `_`, starting with a letter".into()),
        );
        ok = false;
    }
    let data_type = match FieldType::parse(spec.data_type.get_ref()) {
        Ok(t) => Some(t),
        Err(e) => {
            let hint = type_hint(spec.data_type.get_ref());
            r.error(
                Some(spec.data_type.span()),
                &format!("{path}.type"),
                e,
                Some(hint),
            );
            None
        }
    };
    let data_type = data_type?;
    let mut check_bound = |r: &mut Reader<'_>, which: &str, b: &Option<Spanned<Literal>>| {
        if let Some(b) = b {
            if !data_type.is_ordered() {
                r.error(
                    Some(b.span()),
                    &format!("{path}.{which}"),
                    format!("`{which}` does not apply to {data_type} fields"),
                    None,
                );
                ok = false;
            } else if let Err(e) = crate::quality::literal_for(b.get_ref(), data_type) {
                r.error(Some(b.span()), &format!("{path}.{which}"), e, None);
                ok = false;
            }
        }
    };
    check_bound(r, "min", &spec.min);
    check_bound(r, "max", &spec.max);
    if let Some(values) = &spec.allowed {
        if values.get_ref().is_empty() {
            r.error(
                Some(values.span()),
                &format!("{path}.enum"),
                "`enum = []` allows no value, so every row would fail",
                Some("list the allowed values, or remove `enum`".into()),
            );
            ok = false;
        }
        for v in values.get_ref() {
            if let Err(e) = crate::quality::literal_for(v, data_type) {
                r.error(Some(values.span()), &format!("{path}.enum"), e, None);
                ok = false;
            }
        }
    }
    if let Some(p) = &spec.pattern {
        if data_type != FieldType::String {
            r.error(
                Some(p.span()),
                &format!("{path}.pattern"),
                "`pattern` applies only to string fields",
                None,
            );
            ok = false;
        } else if let Err(e) = regex::Regex::new(p.get_ref()) {
            r.error(
                Some(p.span()),
                &format!("{path}.pattern"),
                format!(
                    "invalid regular expression: {}",
                    e.to_string().lines().last().unwrap_or("")
                ),
                Some("the syntax is Rust `regex` (https://docs.rs/regex/#syntax)".into()),
            );
            ok = false;
        }
    }
    if spec.max_length.is_some() && data_type != FieldType::String {
        r.error(
            key_span,
            &format!("{path}.max_length"),
            "`max_length` applies only to string fields",
            None,
        );
        ok = false;
    }
    ok.then(|| Field {
        name: name.to_string(),
        data_type,
        required: spec.required || spec.primary_key,
        primary_key: spec.primary_key,
        allowed: spec.allowed.map(Spanned::into_inner),
        min: spec.min.map(Spanned::into_inner),
        max: spec.max.map(Spanned::into_inner),
        pattern: spec.pattern.map(Spanned::into_inner),
        max_length: spec.max_length,
        missing_values: spec.missing_values,
        description: spec.description,
    })
}

/// Hint for an unknown type name: a synonym or a close spelling, and the list of types.
fn type_hint(written: &str) -> String {
    let written = written.trim().to_ascii_lowercase();
    match type_synonym(&written).or_else(|| did_you_mean(&written, TYPE_NAMES.iter().copied())) {
        Some(s) => format!("did you mean `{s}`? (types: {})", TYPE_NAMES.join(", ")),
        None => format!("types: {}", TYPE_NAMES.join(", ")),
    }
}

/// Sluice's name for a type name from SQL or other tools, for hints.
fn type_synonym(name: &str) -> Option<&'static str> {
    Some(match name {
        "int" | "integer" | "int4" => "int32",
        "bigint" | "long" | "int8" => "int64",
        "text" | "varchar" | "str" | "utf8" | "char" => "string",
        "bool" => "boolean",
        "double" | "float" | "float8" | "real" | "number" => "float64",
        "numeric" | "decimal" => "decimal(p,s)",
        "datetime" | "instant" => "timestamp",
        _ => return None,
    })
}

const MAPPING_KEYS: &[&str] = &[
    "model",
    "description",
    "from",
    "join",
    "let",
    "fields",
    "rule",
    "actions",
    "test",
];

fn load_mapping(src: &SourceText, diags: &mut Diagnostics) -> Option<Mapping> {
    let before = diags.len();
    let mut r = Reader::new(src, diags);
    let table = r.parse()?;
    let mut model = None;
    let mut from = None;
    let mut joins = Vec::new();
    let mut lets = Vec::new();
    let mut fields = Vec::new();
    let mut rules = Vec::new();
    let mut actions = Vec::new();
    let mut tests = Vec::new();
    for (key, item) in table.iter() {
        match key {
            "test" => tests = array_entries::<TestSpec>(&mut r, &table, key),
            "actions" => {
                if let Some(a) = r.entry::<IndexMap<String, Spanned<RuleAction>>>(key, item) {
                    for (rule, action) in a {
                        let span = Some(action.span());
                        actions.push((rule, action.into_inner(), span));
                    }
                }
            }
            "model" => {
                if let Some(m) = r.entry::<Spanned<String>>(key, item) {
                    model = Some(model_ref(&mut r, m));
                }
            }
            "description" => {
                r.entry::<String>(key, item);
            }
            "from" => {
                if let Some(s) = r.entry::<Spanned<String>>(key, item) {
                    from = Some(SourceUse {
                        source: s.get_ref().clone(),
                        alias: s.get_ref().clone(),
                        span: Some(s.span()),
                    });
                }
            }
            "join" => {
                let specs = array_entries::<JoinSpec>(&mut r, &table, key);
                joins.extend(specs.into_iter().map(Join::from));
            }
            "let" => lets = expressions(&mut r, &table, key),
            "fields" => fields = expressions(&mut r, &table, key),
            "rule" => rules = array_entries::<RuleSpec>(&mut r, &table, key),
            other => r.unknown_key(&table, other, "", MAPPING_KEYS),
        }
    }
    if model.is_none() && !table.contains_key("model") {
        r.missing_key(
            None,
            "",
            "model",
            "add `model = \"<entity>@<major>\"`, e.g. `model = \"flight@1\"`",
        );
    }
    if from.is_none() && !table.contains_key("from") {
        r.missing_key(
            None,
            "",
            "from",
            "add `from = \"<source>\"`: the source with one row per canonical row",
        );
    }
    check_names(&mut r, from.as_ref(), &joins, &lets);
    let mut rule_names = BTreeSet::new();
    let business: Vec<BusinessRule> = rules
        .into_iter()
        .filter_map(|rule| business_rule(&mut r, rule, &mut rule_names))
        .collect();
    if r.diags.len() > before {
        return None;
    }
    Some(Mapping {
        name: stem(src),
        src: src.clone(),
        model: model?,
        from: from?,
        joins,
        lets,
        fields,
        rules: business,
        actions,
        tests,
    })
}

/// `model = "flight@1"`: the model's name and the pinned major version, if any.
fn model_ref(r: &mut Reader<'_>, m: Spanned<String>) -> ModelRef {
    let span = Some(m.span());
    let text = m.into_inner();
    let (name, major) = match text.split_once('@') {
        Some((n, v)) => match v.parse::<u64>() {
            Ok(v) => (n.to_string(), Some(v)),
            Err(_) => {
                r.error(
                    span.clone(),
                    "model",
                    format!("`{text}`: the part after `@` must be a major version"),
                    Some("write `flight@1` to pin major version 1".into()),
                );
                (n.to_string(), None)
            }
        },
        None => (text.clone(), None),
    };
    ModelRef { name, major, span }
}

impl From<JoinSpec> for Join {
    fn from(j: JoinSpec) -> Join {
        let alias = j.alias.as_ref().unwrap_or(&j.source);
        Join {
            source: SourceUse {
                source: j.source.get_ref().clone(),
                alias: alias.get_ref().clone(),
                span: Some(alias.span()),
            },
            kind: j.kind,
            on: j.on,
        }
    }
}

/// Source aliases and let names are identifiers, each used once (a let cannot take an
/// alias's name).
fn check_names(r: &mut Reader<'_>, from: Option<&SourceUse>, joins: &[Join], lets: &[NamedExpr]) {
    let mut aliases: Vec<(String, Option<Range<usize>>)> = Vec::new();
    if let Some(f) = from {
        aliases.push((f.alias.clone(), f.span.clone()));
    }
    aliases.extend(
        joins
            .iter()
            .map(|j| (j.source.alias.clone(), j.source.span.clone())),
    );
    let mut seen = BTreeSet::new();
    for (alias, span) in &aliases {
        if !is_identifier(alias) {
            r.error(
                span.clone(),
                "join",
                format!("`{alias}` is not a valid source alias"),
                Some("use lowercase letters, digits and `_`".into()),
            );
        } else if !seen.insert(alias.clone()) {
            r.error(
                span.clone(),
                "join",
                format!("alias `{alias}` is used twice"),
                Some("give the second use its own name with `as = \"...\"`".into()),
            );
        }
    }
    let mut let_names = BTreeSet::new();
    for l in lets {
        if !is_identifier(&l.name) {
            r.error(
                l.span.clone(),
                &format!("let.{}", l.name),
                format!("`{}` is not snake_case", l.name),
                None,
            );
        }
        if seen.contains(&l.name) || !let_names.insert(l.name.clone()) {
            r.error(
                l.span.clone(),
                &format!("let.{}", l.name),
                format!("`{}` is already a source alias or let name", l.name),
                Some("give it another name".into()),
            );
        }
    }
}

/// One `[[rule]]` as written, checked: a snake_case name used once, a reason template that
/// parses, exactly one test. `None` (with the mistakes reported) when it cannot be used.
fn business_rule(
    r: &mut Reader<'_>,
    rule: RuleSpec,
    rule_names: &mut BTreeSet<String>,
) -> Option<BusinessRule> {
    let name = rule.name.get_ref().clone();
    if !is_identifier(&name) {
        r.error(
            Some(rule.name.span()),
            "rule.name",
            format!("rule name `{name}` is not snake_case"),
            None,
        );
    } else if !rule_names.insert(name.clone()) {
        r.error(
            Some(rule.name.span()),
            "rule.name",
            format!("rule `{name}` is defined twice"),
            None,
        );
    }
    if let Some(reason) = &rule.reason {
        if let Err(e) = crate::quality::ReasonTemplate::parse(reason.get_ref()) {
            r.error(
                Some(reason.span()),
                &format!("rule.{name}.reason"),
                e,
                Some("quote a value as `{field}`; write `{{` for a literal brace".into()),
            );
        }
    }
    let span = Some(rule.name.span());
    let reason = rule.reason.clone().map(Spanned::into_inner);
    let (nulls, action) = (rule.nulls, rule.action);
    let test = rule_test(r, rule, &name)?;
    Some(BusinessRule {
        span,
        test,
        name,
        reason,
        nulls,
        action,
    })
}

/// What a `[[rule]]` tests: exactly one of `check`, `unique` (with its `order_by`) or `field`
/// with `references`.
fn rule_test(r: &mut Reader<'_>, rule: RuleSpec, name: &str) -> Option<RuleTest> {
    let key = format!("rule.{name}");
    let given: Vec<&str> = [
        rule.check.as_ref().map(|_| "check"),
        rule.unique.as_ref().map(|_| "unique"),
        rule.references.as_ref().map(|_| "references"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() != 1 {
        r.error(
            Some(rule.name.span()),
            &key,
            if given.is_empty() {
                format!("rule `{name}` does not say what it tests")
            } else {
                format!("rule `{name}` has {}; a rule tests one thing", given.join(" and "))
            },
            Some("give exactly one of `check = \"<sql>\"`, `unique = [\"field\", ...]` or `field = \"...\"` with `references = { source = \"...\", column = \"...\" }`".into()),
        );
        return None;
    }
    if !rule.order_by.is_empty() && rule.unique.is_none() {
        r.error(
            rule.order_by.first().map(Spanned::span),
            &format!("{key}.order_by"),
            "`order_by` only applies to `unique` rules",
            None,
        );
    }
    if rule.field.is_some() != rule.references.is_some() {
        r.error(
            rule.field.as_ref().map(Spanned::span).or(Some(rule.name.span())),
            &key,
            "`field` and `references` go together",
            Some("write `field = \"destination\"` and `references = { source = \"airports\", column = \"faa\" }`".into()),
        );
        return None;
    }
    let named = |o: Spanned<String>| NamedExpr {
        name: name.to_string(),
        span: Some(o.span()),
        sql: o.into_inner(),
    };
    if let Some(check) = rule.check {
        return Some(RuleTest::Check(named(check)));
    }
    if let Some(unique) = rule.unique {
        if unique.get_ref().is_empty() {
            r.error(
                Some(unique.span()),
                &format!("{key}.unique"),
                "`unique` needs at least one field",
                None,
            );
        }
        return Some(RuleTest::Unique {
            fields: unique.into_inner(),
            order_by: rule.order_by.into_iter().map(named).collect(),
        });
    }
    let (Some(field), Some(refs)) = (rule.field, rule.references) else {
        return None;
    };
    let span = refs.span();
    let refs = refs.into_inner();
    let target = match (refs.source, refs.table) {
        (Some(s), None) => ReferenceTarget::Source(s.into_inner()),
        (None, Some(t)) => ReferenceTarget::Table(t.into_inner()),
        _ => {
            r.error(
                Some(span),
                &format!("{key}.references"),
                "`references` needs exactly one of `source` or `table`",
                Some("`source` names a source the job binds; `table` a table loaded in the warehouse".into()),
            );
            return None;
        }
    };
    Some(RuleTest::References {
        field: field.into_inner(),
        target,
        column: refs.column.into_inner(),
    })
}

const JOB_KEYS: &[&str] = &[
    "description",
    "owner",
    "mapping",
    "sources",
    "target",
    "quarantine",
    "checks",
    "retry",
];

fn load_job(src: &SourceText, diags: &mut Diagnostics) -> Option<Job> {
    let before = diags.len();
    let mut r = Reader::new(src, diags);
    let table = r.parse()?;
    let mut description = None;
    let mut owner = None;
    let mut mapping = None;
    let mut sources = BTreeMap::new();
    let mut target: Option<TargetSpec> = None;
    let mut quarantine = QuarantineSpec::default();
    let mut checks = ChecksSpec::default();
    let mut retry = RetrySpec::default();
    for (key, item) in table.iter() {
        match key {
            "retry" => {
                if let Some(spec) = r.entry::<RetrySpec>(key, item) {
                    validate_retry(&mut r, &spec);
                    retry = spec;
                }
            }
            "description" => description = r.entry::<String>(key, item),
            "owner" => owner = r.entry::<String>(key, item),
            "mapping" => mapping = r.entry::<String>(key, item),
            "sources" => {
                for (name, s, _) in entries::<SourceSpec>(&mut r, &table, key) {
                    validate_source(&mut r, &name, &s);
                    sources.insert(name, s);
                }
            }
            "target" => target = r.entry::<TargetSpec>(key, item),
            "quarantine" => quarantine = r.entry::<QuarantineSpec>(key, item).unwrap_or_default(),
            "checks" => {
                if let Some(c) = r.entry::<ChecksSpec>(key, item) {
                    validate_checks(&mut r, &c);
                    checks = c;
                }
            }
            other => r.unknown_key(&table, other, "", JOB_KEYS),
        }
    }
    if !table.contains_key("mapping") {
        r.missing_key(
            None,
            "",
            "mapping",
            "add `mapping = \"<file name in mappings/ without .toml>\"`",
        );
    }
    if !table.contains_key("target") {
        r.missing_key(
            None,
            "",
            "target",
            "add a [target] section with `format`, `table` and `mode`",
        );
    }
    if let Some(t) = &target {
        validate_target(&mut r, &table, t);
        if t.mode == LoadMode::Overwrite {
            for (name, s) in &sources {
                if let Some(inc) = &s.incremental {
                    r.error(
                        Some(inc.column.span()),
                        &format!("sources.{name}.incremental"),
                        "an incremental source reads only new rows, and an `overwrite` target would replace the table with them",
                        Some("use `mode = \"append\"` (Parquet or database) or `\"merge\"` (database), or remove `incremental`".into()),
                    );
                }
            }
        }
        if t.mode == LoadMode::Append {
            for (name, s) in &sources {
                if let Some(lb) = s.incremental.as_ref().and_then(|i| i.lookback.as_ref()) {
                    r.error(
                        Some(lb.span()),
                        &format!("sources.{name}.incremental.lookback"),
                        "a lookback reads rows again, and an `append` target would load them twice",
                        Some("use `mode = \"merge\"` (or `scd2`) on a database target, or remove `lookback`".into()),
                    );
                }
            }
        }
    }
    if r.diags.len() > before {
        return None;
    }
    Some(Job {
        name: stem(src),
        src: src.clone(),
        description,
        owner,
        mapping: mapping?,
        sources,
        target: target?,
        quarantine,
        checks,
        retry,
    })
}

fn validate_retry(r: &mut Reader<'_>, spec: &RetrySpec) {
    if spec.attempts == 0 {
        let span = key_path_span(r.src, "retry.attempts");
        r.error(
            span,
            "retry.attempts",
            "`attempts` counts the first run too, so it must be at least 1",
            Some("write `attempts = 3` for the first run and two retries".into()),
        );
    }
    for (key, v) in [
        ("backoff", &spec.backoff),
        ("max_backoff", &spec.max_backoff),
    ] {
        if let Err(e) = parse_duration(v.get_ref()) {
            r.error(
                Some(v.span()),
                &format!("retry.{key}"),
                e,
                Some(DURATION_HINT.into()),
            );
        }
    }
}

/// How durations are written, for hints.
pub const DURATION_HINT: &str =
    "write a duration such as \"500ms\", \"30s\", \"5m\", \"2h\" or \"1d\"";

/// Parses a duration as written in TOML (`"30s"`, `"5m"`, `"2h 30m"`, `"1d"`), with the
/// `humantime` crate's syntax.
///
/// # Errors
/// A message quoting the text.
pub fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("`{text}` is not a duration ({e})"))
}

fn validate_target(r: &mut Reader<'_>, table: &Table, t: &TargetSpec) {
    let target_span = Reader::key_span(table, "target");
    if t.is_database() {
        if let Some(f) = t.format {
            let span = key_path_span_in(table, "target.format");
            r.error(
                span,
                "target.format",
                format!(
                    "`format = \"{}\"` and `connection` both given",
                    crate::plan::json_name(&f)
                ),
                Some("a database target has no file format: remove `format`".into()),
            );
        }
        for (key, set) in [
            ("path", t.path.is_some()),
            ("partition_by", !t.partition_by.is_empty()),
        ] {
            if set {
                r.error(
                    key_path_span_in(table, &format!("target.{key}")),
                    &format!("target.{key}"),
                    format!("`{key}` applies only to Parquet targets"),
                    Some(format!(
                        "remove `{key}`; a database target names its `table`"
                    )),
                );
            }
        }
        match &t.table {
            None => r.missing_key(
                target_span,
                "target",
                "table",
                "add `table = \"<name>\"` or `table = \"<schema>.<name>\"`",
            ),
            Some(tb) => {
                if let Err(e) = crate::db::TableName::parse(tb.get_ref()) {
                    r.error(Some(tb.span()), "target.table", e, None);
                }
            }
        }
    } else {
        if t.format.is_none() {
            r.missing_key(
                target_span.clone(),
                "target",
                "format",
                "add `format = \"parquet\"` for a warehouse table, or `connection = \"<name>\"` for a database table",
            );
        }
        match (&t.table, &t.path) {
            (None, None) => r.missing_key(
                target_span,
                "target",
                "table",
                "add `table = \"<name>\"` (a folder under the warehouse) or `path = \"...\"`",
            ),
            (Some(tb), Some(_)) => r.error(
                Some(tb.span()),
                "target.table",
                "`table` and `path` both given",
                Some(
                    "keep one: `table` for the warehouse folder, `path` for any other folder"
                        .into(),
                ),
            ),
            (Some(tb), None) if !is_identifier(tb.get_ref()) => r.error(
                Some(tb.span()),
                "target.table",
                format!("table name `{}` is not snake_case", tb.get_ref()),
                None,
            ),
            _ => {}
        }
        if matches!(t.mode, LoadMode::Merge | LoadMode::Scd2) {
            r.error(
                key_path_span_in(table, "target.mode"),
                "target.mode",
                format!(
                    "`mode = \"{}\"` needs a database target",
                    crate::plan::json_name(&t.mode)
                ),
                Some("Parquet targets support `append` and `overwrite`; for merge or scd2 load a database table (`connection = \"<name>\"`)".into()),
            );
        }
        for (key, set) in [
            ("delete_missing", t.delete_missing),
            ("track", t.track.is_some()),
            (
                "on_schema_change",
                t.on_schema_change != OnSchemaChange::Fail,
            ),
        ] {
            if set {
                r.error(
                    key_path_span_in(table, &format!("target.{key}")),
                    &format!("target.{key}"),
                    format!("`{key}` applies only to database targets"),
                    Some(format!("remove `{key}`")),
                );
            }
        }
    }
    if t.delete_missing && !matches!(t.mode, LoadMode::Merge | LoadMode::Scd2) {
        r.error(
            key_path_span_in(table, "target.delete_missing"),
            "target.delete_missing",
            "`delete_missing` applies to `merge` and `scd2` loads",
            Some("`overwrite` already replaces every row; remove `delete_missing`".into()),
        );
    }
    if t.track.is_some() && t.mode != LoadMode::Scd2 {
        r.error(
            t.track.as_ref().map(Spanned::span),
            "target.track",
            "`track` applies to `scd2` loads",
            Some("remove `track`, or set `mode = \"scd2\"`".into()),
        );
    }
}

fn validate_source(r: &mut Reader<'_>, name: &str, s: &SourceSpec) {
    let path = format!("sources.{name}");
    let entry_span = key_path_span(r.src, &path);
    if s.is_database() {
        validate_db_source(r, name, s, entry_span);
        return;
    }
    for (key, span) in [
        ("table", s.table.as_ref().map(Spanned::span)),
        ("query", s.query.as_ref().map(Spanned::span)),
        (
            "incremental",
            s.incremental.as_ref().map(|i| i.column.span()),
        ),
    ] {
        if let Some(span) = span {
            r.error(
                Some(span),
                &format!("{path}.{key}"),
                format!("`{key}` applies only to database sources"),
                Some("add `connection = \"<name>\"` (a [connections.<name>] of sluice.toml), or remove it".into()),
            );
        }
    }
    let (Some(format_spanned), Some(path_spanned)) = (&s.format, &s.path) else {
        let missing = if s.format.is_none() { "format" } else { "path" };
        r.missing_key(
            entry_span,
            &path,
            missing,
            "a file source needs `format` and `path`; a database source needs `connection` and `table` or `query`",
        );
        return;
    };
    let format = *format_spanned.get_ref();
    let format_span = format_spanned.span();
    let csv_only: [(&str, Option<Range<usize>>); 7] = [
        (
            "columns",
            s.columns
                .as_ref()
                .and_then(|c| c.values().next().map(Spanned::span)),
        ),
        ("delimiter", s.delimiter.as_ref().map(Spanned::span)),
        ("quote", s.quote.as_ref().map(Spanned::span)),
        ("has_header", s.has_header.map(|_| format_span.clone())),
        (
            "null_values",
            s.null_values.as_ref().map(|_| format_span.clone()),
        ),
        (
            "on_malformed",
            s.on_malformed.as_ref().map(|_| format_span.clone()),
        ),
        (
            "quote_mode",
            s.quote_mode.as_ref().map(|_| format_span.clone()),
        ),
    ];
    if format != SourceFormat::Csv {
        for (key, span) in csv_only {
            if let Some(span) = span {
                r.error(
                    Some(span),
                    &format!("{path}.{key}"),
                    format!("`{key}` applies only to CSV sources"),
                    Some("remove it, or set `format = \"csv\"`".into()),
                );
            }
        }
    }
    if format == SourceFormat::Parquet {
        for (key, set) in [
            ("compression", s.compression.is_some()),
            ("infer_schema_rows", s.infer_schema_rows.is_some()),
        ] {
            if set {
                r.error(
                    Some(format_span.clone()),
                    &format!("{path}.{key}"),
                    format!("`{key}` does not apply to Parquet sources (Parquet files carry their own compression and schema)"),
                    Some(format!("remove `{key}`")),
                );
            }
        }
    }
    for (key, v) in [("delimiter", &s.delimiter), ("quote", &s.quote)] {
        if let Some(v) = v {
            if v.get_ref().len() != 1 {
                r.error(
                    Some(v.span()),
                    &format!("{path}.{key}"),
                    format!(
                        "`{key}` must be exactly one ASCII character, got {:?}",
                        v.get_ref()
                    ),
                    Some("for tab-separated files write \"\\t\"".into()),
                );
            }
        }
    }
    for (column, t) in s.columns.iter().flatten() {
        if let Err(e) = FieldType::parse(t.get_ref()) {
            let hint = type_hint(t.get_ref());
            r.error(
                Some(t.span()),
                &format!("{path}.columns.{column}"),
                e,
                Some(hint),
            );
        }
    }
    if path_spanned.get_ref().trim().is_empty() {
        r.error(
            Some(path_spanned.span()),
            &format!("{path}.path"),
            "`path` is empty",
            None,
        );
    }
    if let Some(n) = s.infer_schema_rows {
        if n == 0 {
            r.error(
                Some(format_span.clone()),
                &format!("{path}.infer_schema_rows"),
                "`infer_schema_rows` must be at least 1",
                None,
            );
        }
    }
}

fn validate_db_source(
    r: &mut Reader<'_>,
    name: &str,
    s: &SourceSpec,
    entry_span: Option<Range<usize>>,
) {
    let path = format!("sources.{name}");
    let file_only: [(&str, bool); 11] = [
        ("format", s.format.is_some()),
        ("path", s.path.is_some()),
        ("compression", s.compression.is_some()),
        ("delimiter", s.delimiter.is_some()),
        ("quote", s.quote.is_some()),
        ("has_header", s.has_header.is_some()),
        ("null_values", s.null_values.is_some()),
        ("infer_schema_rows", s.infer_schema_rows.is_some()),
        ("columns", s.columns.is_some()),
        ("on_malformed", s.on_malformed.is_some()),
        ("quote_mode", s.quote_mode.is_some()),
    ];
    for (key, set) in file_only {
        if set {
            r.error(
                entry_span.clone(),
                &format!("{path}.{key}"),
                format!("`{key}` applies only to file sources, and this one reads `connection`"),
                Some(format!(
                    "remove `{key}`: a database source gives `table` or `query`, and its column types come from the database"
                )),
            );
        }
    }
    match (&s.table, &s.query) {
        (None, None) => r.missing_key(
            entry_span,
            &path,
            "table",
            "add `table = \"<schema>.<table>\"` or `query = \"SELECT ...\"`",
        ),
        (Some(t), Some(_)) => r.error(
            Some(t.span()),
            &format!("{path}.table"),
            "`table` and `query` both given",
            Some("keep one: `table` reads a whole table (only the columns the mapping uses), `query` any SELECT".into()),
        ),
        (Some(t), None) => {
            if let Err(e) = crate::db::TableName::parse(t.get_ref()) {
                r.error(Some(t.span()), &format!("{path}.table"), e, None);
            }
        }
        (None, Some(q)) => {
            if q.get_ref().trim().is_empty() {
                r.error(Some(q.span()), &format!("{path}.query"), "`query` is empty", None);
            }
        }
    }
    if let Some(inc) = &s.incremental {
        if let Some(lb) = &inc.lookback {
            match lb.get_ref() {
                Lookback::Number(n) if *n < 0 => r.error(
                    Some(lb.span()),
                    &format!("{path}.incremental.lookback"),
                    format!("`lookback` is negative ({n})"),
                    Some("a lookback reads rows below the watermark again; write 0 or more".into()),
                ),
                Lookback::Duration(d) => {
                    if let Err(e) = parse_duration(d) {
                        r.error(
                            Some(lb.span()),
                            &format!("{path}.incremental.lookback"),
                            e,
                            Some(format!(
                                "{DURATION_HINT}; for an integer cursor write a number"
                            )),
                        );
                    }
                }
                _ => {}
            }
        }
    }
}

fn validate_checks(r: &mut Reader<'_>, c: &ChecksSpec) {
    let span_of = |key: &str| key_path_span(r.src, &format!("checks.{key}"));
    if let Some(v) = &c.row_count {
        let rc_span = span_of("row_count");
        if let (Some(w), Some(f)) = (v.warn_below, v.fail_below) {
            if f > w {
                r.error(
                    rc_span.clone(),
                    "checks.row_count",
                    format!("fail_below ({f}) is above warn_below ({w})"),
                    Some(
                        "the fail threshold should be the stricter one: fail_below ≤ warn_below"
                            .into(),
                    ),
                );
            }
        }
        if let (Some(below), Some(above)) = (v.fail_below, v.fail_above) {
            if below > above {
                r.error(
                    rc_span.clone(),
                    "checks.row_count",
                    format!(
                        "fail_below ({below}) is above fail_above ({above}): every run would fail"
                    ),
                    Some(
                        "fail_below is the smallest acceptable row count, fail_above the largest"
                            .into(),
                    ),
                );
            }
        }
        if let (Some(w), Some(f)) = (v.warn_above, v.fail_above) {
            if f < w {
                r.error(
                    rc_span.clone(),
                    "checks.row_count",
                    format!("fail_above ({f}) is below warn_above ({w})"),
                    Some("fail_above should be ≥ warn_above".into()),
                );
            }
        }
    }
    if let Some(v) = &c.quarantine_ratio {
        let q_span = span_of("quarantine_ratio");
        for (name, x) in [("fail_above", v.fail_above), ("warn_above", v.warn_above)] {
            if let Some(x) = x {
                if !(0.0..=1.0).contains(&x) {
                    r.error(
                        span_of(&format!("quarantine_ratio.{name}")).or(q_span.clone()),
                        &format!("checks.quarantine_ratio.{name}"),
                        format!("{name} = {x} is not a fraction between 0 and 1"),
                        Some("write 0.05 for 5%".into()),
                    );
                }
            }
        }
    }
}
