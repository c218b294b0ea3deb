//! Running one fire or trigger of a job: load its files (falling back to the last version
//! that compiled), take the job lock, retry transient failures, and turn a panic into a
//! failed run.

use std::path::Path;
use std::sync::Arc;

use super::log;
use crate::config::params::RunParams;
use crate::config::Project;
use crate::db::ExtractMode;
use crate::error::{Error, Result};
use crate::report::RunReport;
use crate::request::Attempt;
use crate::run::NoProgress;

/// The project to run `job` with, as its files are now; `None` (the problems logged) when
/// the files the job uses are invalid.
pub(super) fn load_project(root: &Path, job: &str) -> Option<Arc<Project>> {
    match Project::load_for_job(root, job) {
        Ok((project, others)) => {
            if !others.is_empty() {
                log(&format!(
                    "job {job}: files it does not use have problems; running it anyway:\n{}",
                    others.to_string().trim_end()
                ));
            }
            Some(Arc::new(project))
        }
        Err(diags) => {
            log(&format!(
                "job {job}: its files have problems:\n{}",
                diags.to_string().trim_end()
            ));
            None
        }
    }
}

/// One scheduled run of `job`: with `current` (the files as they are now) when it loads and
/// compiles, else with `previous` (the version its last run loaded), else not at all. Returns
/// how it ended and the project that compiled.
pub(super) async fn run_fire(
    current: Option<Arc<Project>>,
    previous: Option<Arc<Project>>,
    job: &str,
    params: &RunParams,
) -> (Result<Option<RunReport>>, Option<Arc<Project>>) {
    let mut invalid = None;
    if let Some(project) = current {
        match guarded_run(project.clone(), job, params).await {
            Err(e @ Error::Config(_)) => invalid = Some(e),
            other => return (other, Some(project)),
        }
    }
    match previous {
        Some(project) => {
            log(&format!(
                "job {job}: its files have problems; running the version its last run loaded{}",
                invalid.map(|e| format!(":\n{e}")).unwrap_or_default()
            ));
            (
                guarded_run(project.clone(), job, params).await,
                Some(project),
            )
        }
        None => (
            Err(invalid.unwrap_or_else(|| Error::Usage {
                message: format!("job `{job}` has no valid version to run"),
                hint: Some("fix the problems logged above; the next fire runs it".into()),
            })),
            None,
        ),
    }
}

/// [`run_once`] with a panic turned into a failed run.
async fn guarded_run(
    project: Arc<Project>,
    job: &str,
    params: &RunParams,
) -> Result<Option<RunReport>> {
    crate::producer::catch_panic(run_once(project, job, params), "running the job").await
}

/// One scheduled run of `job` in `project` with `params`: the job lock, retries, the run.
/// An invalid configuration (found while preparing or compiling) is an [`Error::Config`].
async fn run_once(
    project: Arc<Project>,
    job: &str,
    params: &RunParams,
) -> Result<Option<RunReport>> {
    let job = project.job(job).map_err(|d| Error::config(*d))?;
    let mode = ExtractMode::Incremental;
    let prepared = crate::request::prepare(&project, job, &mode, params)?;
    let (project, job) = (Arc::new(prepared.project), prepared.job);
    crate::request::run_job(
        &project,
        &job,
        || {
            let (project, job, mode) = (project.clone(), job.clone(), mode.clone());
            async move {
                match crate::request::attempt(&project, &job, &mode, &mut NoProgress).await? {
                    Attempt::Invalid(e) => Err(e),
                    Attempt::NotStarted { report, .. } | Attempt::Ran(report) => Ok(Some(report)),
                }
            }
        },
        |attempt, retries, delay| {
            log(&format!(
                "job {}: attempt {attempt} of {} failed for a reason that may pass; nothing was committed; retrying in {:.1} s",
                job.name,
                retries.attempts,
                delay.as_secs_f64()
            ))
        },
    )
    .await
}
