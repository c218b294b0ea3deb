//! Guarded paths: a job's target and quarantine never replace what they must not touch.
//!
//! A Parquet target is published by swapping its whole folder (decision 0002), and an
//! overwrite deletes the previous version. So a target folder that is, contains, or lies inside
//! a source folder, the state folder or another job's output would delete those files; one
//! that is or contains the project root would delete the project. The quarantine folder gets
//! the same guard (it holds one file per run and is cleaned of crashed staging files).
//!
//! | the target or quarantine `T` and a protected location `P` | refused when |
//! |---|---|
//! | a source's file or folder                                    | `T` = `P`, `T` contains `P`, `P` contains `T` |
//! | the folder a source's glob starts from (`data` of `data/*.csv`) | `T` = `P` or `T` contains `P` |
//! | a file a job's glob matches when the run starts              | `T` contains it ([`check_source_files`]) |
//! | the state folder (`.sluice/`)                                | `T` = `P`, `T` contains `P`, `P` contains `T` |
//! | another job's target or quarantine, this job's other output | `T` = `P`, `T` contains `P`, `P` contains `T` |
//! | the project root                                             | `T` = `P` or `T` contains `P` (inside it is normal) |
//!
//! Object-store URLs are compared with URLs the same way (two jobs appending to one bucket
//! folder would delete each other's files and commit records); a URL never meets a local path.
//! Another job's source that reads a job's output is a chain of jobs, and allowed. Paths are
//! compared after resolving `..`, `.` and symlinks of the part that exists, so `../project`,
//! `./warehouse/../samples` and a symlink to a source folder are all caught.
//! [`check_project`] runs at validate time on the paths as written (templates whose `${...}`
//! cannot be resolved are skipped there); [`check_run`] runs again when a run starts, on the
//! resolved paths.

use std::path::{Component, Path, PathBuf};

use crate::config::interpolate::Redactor;
use crate::config::{Job, Project};
use crate::diagnostic::{Diagnostic, Diagnostics};

/// Something a job writes into: its target folder or its quarantine folder.
#[derive(Debug, Clone)]
struct Output {
    /// `target` or `quarantine`.
    kind: &'static str,
    /// The TOML key that sets it (`target.table`, `target.path`, `quarantine.path`).
    key: &'static str,
    /// Its span in the job file, when written there (the default quarantine has none).
    span: Option<std::ops::Range<usize>>,
    path: PathBuf,
}

/// A location a job's outputs must keep clear of.
#[derive(Debug, Clone)]
struct Protected {
    /// What it is, for the message (``source `flights` of job `flights` ``).
    what: String,
    path: PathBuf,
    /// True when an output may lie inside it (not over it): the project root, and the folder
    /// a source glob starts from (the files it matches are checked when a run starts, see
    /// [`check_source_files`]).
    inside_allowed: bool,
}

/// The problems of every job of `project`: each output that overlaps a protected location.
pub fn check_project(project: &Project) -> Diagnostics {
    let redactor = Redactor::default();
    let layout = Layout::of(project, &redactor);
    let mut diags = Diagnostics::default();
    for job in project.jobs.values() {
        diags.extend(check_job(project, job, &layout, &redactor));
    }
    diags
}

/// The problems of `job`'s outputs, with paths resolved as a run resolves them.
pub fn check_run(project: &Project, job: &Job, redactor: &Redactor) -> Diagnostics {
    check_job(project, job, &Layout::of(project, redactor), redactor)
}

/// Every job's outputs and file sources, located once per check: the paths are resolved
/// (with symlinks, which costs system calls) once per job, not once per pair of jobs, so a
/// project of hundreds of jobs loads in milliseconds.
struct Layout {
    /// Each job's outputs, by job name.
    outputs: Vec<(String, Output)>,
    /// Each job's file sources, by job name, and whether the source reads another job's
    /// output (a chain of jobs).
    sources: Vec<(String, Protected, bool)>,
    /// The project root and the state folder.
    fixed: [Protected; 2],
}

impl Layout {
    fn of(project: &Project, redactor: &Redactor) -> Layout {
        let outputs: Vec<(String, Output)> = project
            .jobs
            .values()
            .flat_map(|j| {
                outputs_of(project, j, redactor)
                    .into_iter()
                    .map(|o| (j.name.clone(), o))
            })
            .collect();
        let sources = project
            .jobs
            .values()
            .flat_map(|j| sources_of(project, j, redactor))
            .map(|(job, p)| {
                let downstream = outputs.iter().any(|(_, o)| p.path.starts_with(&o.path));
                (job, p, downstream)
            })
            .collect();
        let fixed = [
            Protected {
                what: "the project root".into(),
                path: canonical(&project.root),
                inside_allowed: true,
            },
            Protected {
                what: "the state folder".into(),
                path: canonical(&project.path(&project.settings.state_dir)),
                inside_allowed: false,
            },
        ];
        Layout {
            outputs,
            sources,
            fixed,
        }
    }

    /// Everything `job`'s outputs must keep clear of: the project root, the state folder,
    /// every file source of every job (except one that reads another job's output: that is
    /// a chain of jobs, not raw data to protect), and the other jobs' outputs.
    fn protected_for(&self, job: &Job) -> Vec<Protected> {
        let sources = self
            .sources
            .iter()
            .filter(|(owner, _, downstream)| *owner == job.name || !downstream)
            .map(|(_, p, _)| p.clone());
        let others = self
            .outputs
            .iter()
            .filter(|(owner, _)| *owner != job.name)
            .map(|(owner, o)| Protected {
                what: format!("the {} of job `{owner}`", o.kind),
                path: o.path.clone(),
                inside_allowed: false,
            });
        self.fixed
            .iter()
            .cloned()
            .chain(sources)
            .chain(others)
            .collect()
    }
}

fn check_job(project: &Project, job: &Job, layout: &Layout, redactor: &Redactor) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let outputs: Vec<&Output> = layout
        .outputs
        .iter()
        .filter(|(owner, _)| *owner == job.name)
        .map(|(_, o)| o)
        .collect();
    let protected = layout.protected_for(job);
    for o in outputs.iter().copied() {
        // The target must keep clear of its own quarantine too (reported once, at the target).
        let own = outputs
            .iter()
            .filter(|s| o.kind == "target" && s.kind != "target")
            .map(|s| Protected {
                what: format!("the {} of this job", s.kind),
                path: s.path.clone(),
                inside_allowed: false,
            });
        for p in protected.iter().cloned().chain(own) {
            if let Some(how) = overlap(&o.path, &p.path, p.inside_allowed) {
                let mut d = refusal(project, job, o, &p, how);
                // A path resolved from `${env:...}` may hold a secret.
                d.message = redactor.redact(&d.message);
                diags.push(d);
            }
        }
    }
    diags
}

fn refusal(project: &Project, job: &Job, o: &Output, p: &Protected, how: &str) -> Diagnostic {
    let mut d = job.src.diagnostic(
        o.span.clone(),
        o.key,
        format!(
            "the {} folder {} {how} {} ({}); publishing there would delete or replace those files",
            o.kind,
            shown(project, &o.path),
            p.what,
            shown(project, &p.path)
        ),
    );
    d.hint = Some(if o.kind == "target" {
        "give the target a folder of its own, e.g. `table = \"<name>\"` under the warehouse".into()
    } else {
        "give the quarantine a folder of its own, or remove `[quarantine] path` to use <warehouse>/_quarantine/<job>".into()
    });
    d
}

/// The problems of a run whose source files (as expanded by the run) lie inside its target
/// or quarantine folder: publishing would delete them. `files` are project-relative or
/// absolute; `target` is `None` for a database target, `quarantine` for one on an object
/// store.
pub fn check_source_files<'a>(
    project: &Project,
    job: &Job,
    target: Option<&Path>,
    quarantine: Option<&Path>,
    files: impl Iterator<Item = (&'a str, &'a str)>,
) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let outputs: Vec<(&str, PathBuf)> = target
        .map(|t| ("target", canonical(t)))
        .into_iter()
        .chain(quarantine.map(|q| ("quarantine", canonical(q))))
        .collect();
    for (source, file) in files {
        let path = canonical(&project.path(file));
        for (kind, out) in &outputs {
            if path.starts_with(out) {
                let key = match *kind {
                    "target" if job.target.path().is_some() => "target.path",
                    "target" => "target.table",
                    _ => "quarantine.path",
                };
                let span = match *kind {
                    "target" => job.target.path().or(job.target.table()).map(|p| p.span()),
                    _ => job.quarantine.path.as_ref().map(|p| p.span()),
                };
                let mut d = job.src.diagnostic(
                    span,
                    key,
                    Redactor::process().redact(&format!(
                        "the {kind} folder {} contains {}, a file of source `{source}`; publishing there would delete it",
                        shown(project, out),
                        shown(project, &path)
                    )),
                );
                d.hint = Some(format!("give the {kind} a folder of its own"));
                diags.push(d);
                return diags;
            }
        }
    }
    diags
}

/// How `output` overlaps `protected`, if it does.
fn overlap(output: &Path, protected: &Path, inside_allowed: bool) -> Option<&'static str> {
    if output == protected {
        Some("is")
    } else if protected.starts_with(output) {
        Some("contains")
    } else if !inside_allowed && output.starts_with(protected) {
        Some("lies inside")
    } else {
        None
    }
}

/// The folders `job` writes into (file targets only: a database target has no folder).
fn outputs_of(project: &Project, job: &Job, redactor: &Redactor) -> Vec<Output> {
    let mut out = Vec::new();
    if !job.target.is_database() {
        let written = match (job.target.table(), job.target.path()) {
            (Some(t), _) => Some((
                "target.table",
                t.span(),
                Ok(project.settings.warehouse.join(t.get_ref())),
            )),
            (None, Some(p)) => Some((
                "target.path",
                p.span(),
                resolve_static(redactor, p.get_ref(), project).map(PathBuf::from),
            )),
            (None, None) => None,
        };
        if let Some((key, span, Ok(rel))) = written {
            out.push(Output {
                kind: "target",
                key,
                span: Some(span),
                path: located(project, &rel),
            });
        }
    }
    let quarantine = match &job.quarantine.path {
        Some(p) => redactor
            .resolve_path(p.get_ref(), &project.root)
            .ok()
            .map(|r| (Some(p.span()), PathBuf::from(r))),
        None => Some((
            None,
            project
                .settings
                .warehouse
                .join("_quarantine")
                .join(&job.name),
        )),
    };
    if let Some((span, rel)) = quarantine {
        out.push(Output {
            kind: "quarantine",
            key: "quarantine.path",
            span,
            path: located(project, &rel),
        });
    }
    out
}

/// `job`'s file sources as protected locations, with the job's name.
fn sources_of(project: &Project, job: &Job, redactor: &Redactor) -> Vec<(String, Protected)> {
    let mut out = Vec::new();
    for (name, s) in &job.sources {
        let Some(p) = s.path() else {
            continue;
        };
        let Ok(resolved) = resolve_static(redactor, p.get_ref(), project) else {
            continue;
        };
        let is_glob = resolved.contains(['*', '?', '[']);
        // A URL's glob base keeps its components (`s3:`, bucket, keys), as `located` does.
        let path = match glob_base(&resolved) {
            base if crate::config::spec::is_url(&resolved) => base,
            base => canonical(&project.path(base)),
        };
        let protected = Protected {
            what: format!("source `{name}` of job `{}`", job.name),
            path,
            // `data/*.csv` (or `*.csv`, whose folder is the project root) does not make
            // every folder under `data` a source.
            inside_allowed: is_glob,
        };
        out.push((job.name.clone(), protected));
    }
    out
}

/// Where `path` (relative to the project, absolute, or an object-store URL) is, for
/// comparing: a local path made [`canonical`]; a URL as written without a trailing `/`. A
/// URL's components (`s3:`, bucket, keys: `Path` collapses the `//`) compare with other
/// URLs' and never with a local path, which is absolute.
fn located(project: &Project, path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    if crate::config::spec::is_url(&text) {
        PathBuf::from(text.trim_end_matches('/'))
    } else {
        canonical(&project.path(path))
    }
}

/// A path template resolved up to its first run reference (`out/x/date=${run.date}` →
/// `out/x/`): the folder every run's path lies in. `Err` when that cannot be resolved, or the
/// template starts with a run reference (no folder is known before the run).
fn resolve_static(
    redactor: &Redactor,
    template: &str,
    project: &Project,
) -> std::result::Result<String, String> {
    let prefix = super::params::static_prefix(template);
    if prefix.is_empty() && super::params::uses_params(template) {
        return Err("the path starts with a run reference".into());
    }
    redactor
        .resolve_path(prefix, &project.root)
        .map_err(String::from)
}

/// The literal folder a glob starts from (`samples/*/flights.csv` → `samples`), or the path
/// itself when it has no pattern.
pub fn glob_base(path: &str) -> PathBuf {
    let mut base = PathBuf::new();
    for c in Path::new(path).components() {
        if c.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
            break;
        }
        base.push(c);
    }
    base
}

/// `path` with `.` and `..` resolved, and symlinks resolved in the longest part that exists
/// (a target folder may not exist yet).
pub fn canonical(path: &Path) -> PathBuf {
    let mut lexical = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                lexical.pop();
            }
            other => lexical.push(other),
        }
    }
    let mut existing = lexical.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let mut out = real;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return out;
        }
        match (existing.file_name().map(ToOwned::to_owned), existing.pop()) {
            (Some(name), true) => rest.push(name),
            _ => return lexical,
        }
    }
}

fn shown(project: &Project, path: &Path) -> String {
    let root = canonical(&project.root);
    match path.strip_prefix(&root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".into(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_are_found_both_ways_and_the_root_only_from_above() {
        let p = Path::new;
        assert_eq!(overlap(p("/a/b"), p("/a/b"), false), Some("is"));
        assert_eq!(overlap(p("/a"), p("/a/b"), false), Some("contains"));
        assert_eq!(overlap(p("/a/b/c"), p("/a/b"), false), Some("lies inside"));
        assert_eq!(
            overlap(p("/a/bc"), p("/a/b"), false),
            None,
            "a sibling with a longer name"
        );
        assert_eq!(overlap(p("/proj/warehouse/x"), p("/proj"), true), None);
        assert_eq!(overlap(p("/"), p("/proj"), true), Some("contains"));
    }

    #[test]
    fn canonical_resolves_dots_and_missing_tails() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        std::fs::create_dir(root.join("proj")).unwrap();
        assert_eq!(canonical(&root.join("proj/warehouse/../..")), root);
        assert_eq!(
            canonical(&root.join("proj/./new/table")),
            root.join("proj/new/table")
        );
        std::os::unix::fs::symlink(root.join("proj"), root.join("link")).unwrap();
        assert_eq!(canonical(&root.join("link/x")), root.join("proj/x"));
    }

    #[test]
    fn glob_base_stops_at_the_first_pattern() {
        assert_eq!(glob_base("samples/*/f.csv"), PathBuf::from("samples"));
        assert_eq!(glob_base("samples/f.csv"), PathBuf::from("samples/f.csv"));
        assert_eq!(glob_base("s/**/*.csv"), PathBuf::from("s"));
    }
}
