//! Validating a project: every job whose own files loaded, compiled against its sources'
//! schemas, so `sluice validate` reports expression errors, unknown columns and unreadable
//! sources with the job's file and line, beside the files' own mistakes.

use crate::config::spec::SourceSpec;
use crate::config::{Job, Project};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::error::Error;

/// Compiles the jobs `wanted` selects whose own files loaded, against their sources' schemas,
/// and returns the problems found (expression errors, unknown fields in rules, unreadable
/// sources at their `path` or `table`) and warnings (a job checked without its database,
/// which could not be reached).
pub async fn compile_jobs(
    project: &Project,
    wanted: impl Fn(&Job) -> bool,
) -> (Diagnostics, Vec<String>) {
    let mut diags = Diagnostics::default();
    let mut warnings = Vec::new();
    for job in project.jobs.values().filter(|j| wanted(j)) {
        let Some(mapping) = project.mappings.get(&job.mapping) else {
            continue;
        };
        if !project.models.contains_key(&mapping.model.name)
            || !mapping
                .source_names()
                .iter()
                .all(|s| job.sources.contains_key(*s))
        {
            continue;
        }
        let raw = sources_by_date(job);
        // Run references read now and the vars' defaults, as a manual run would.
        let params = crate::config::params::RunParams::at(chrono::Utc::now());
        let (project, job) = match crate::config::params::apply(project, job, &params) {
            Ok(applied) => applied,
            Err(d) => {
                diags.extend(crate::diagnostic::Diagnostics(d));
                continue;
            }
        };
        let (project, job) = (&project, &job);
        match crate::plan::compile(project, job).await {
            Ok(_) => {}
            Err(Error::Config(d)) => diags.extend(d),
            // A source whose path names a date has no files for some dates: not an error of
            // the project.
            Err(Error::Source {
                source_name, path, ..
            }) if raw.contains(&source_name) => warnings.push(format!(
                "job `{}`: source `{source_name}` has no files for today ({path}), so the job was not compiled against its schema; `sluice plan {} --date DATE` checks it for a date that has files",
                job.name, job.name
            )),
            Err(Error::Source {
                source_name,
                path,
                message,
            }) => {
                let spec = job.sources.get(&source_name);
                let database = spec.is_some_and(|s| s.database().is_some());
                let span = spec.and_then(|s| match s {
                    SourceSpec::Database(d) => d.table.as_ref().or(d.query.as_ref()).map(|t| t.span()),
                    file => file.path().map(|p| p.span()),
                });
                let key = if database { "table" } else { "path" };
                let mut d = job.src.diagnostic(
                    span,
                    format!("sources.{source_name}.{key}"),
                    format!("source `{source_name}` ({path}): {message}"),
                );
                d.hint = Some(if database {
                    "check the table or query, and the type table in docs/reference.md".into()
                } else {
                    "check the path and that the files are in place".into()
                });
                diags.push(d);
            }
            // A database that cannot be reached says nothing about the files: warn, and
            // check the rest.
            Err(e @ Error::Connection { .. }) => warnings.push(format!(
                "warning: job `{}` was checked without its database, which could not be reached: {e}",
                job.name
            )),
            Err(e) => diags.push(Diagnostic::file_level(job.src.path.clone(), e.to_string())),
        }
    }
    (diags, warnings)
}

/// The file sources of `job` whose path uses `${run.*}` (their files differ by date).
fn sources_by_date(job: &Job) -> Vec<String> {
    job.sources
        .iter()
        .filter(|(_, s)| {
            s.path()
                .is_some_and(|p| crate::config::params::references(p.get_ref(), "${run."))
        })
        .map(|(name, _)| name.clone())
        .collect()
}
