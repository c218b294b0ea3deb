//! How a run was asked for, resolved once, in the library: the load mode the job runs with for
//! this request, the job lock, and the attempts its `[retry]` policy allows.
//!
//! | request                      | extract                 | load mode                                  |
//! |------------------------------|-------------------------|--------------------------------------------|
//! | `sluice run JOB`             | above the watermark     | the job's                                  |
//! | `sluice run --full-refresh`  | every row               | `append` becomes `overwrite` (no row twice) |
//! | `sluice backfill --from --to`| `from <= cursor < to`   | the job's; `overwrite` is refused           |
//!
//! Every run also has its parameters ([`RunParams`]: the logical date and the vars), replaced
//! in the job and its mapping once, by [`prepare`].
//!
//! The command line and the daemon parse arguments, call [`prepare`], then [`run_job`] with
//! [`attempt`], and print; they decide nothing here.

use std::future::Future;
use std::time::Duration;

use backon::BackoffBuilder;

use crate::config::params::RunParams;
use crate::config::spec::LoadMode;
use crate::config::{Job, Project, RetryPolicy};
use crate::db::ExtractMode;
use crate::error::{Error, Result};
use crate::report::RunReport;
use crate::run::Progress;

/// The job as `mode` runs it, and a note for the user when the request changes or risks
/// something (printed to stderr by the caller).
///
/// # Errors
/// [`Error::Usage`] for a backfill of a job that overwrites its target: the table would be
/// replaced by only the range read.
pub fn job_for(job: &Job, mode: &ExtractMode) -> Result<(Job, Option<String>)> {
    let mut job = job.clone();
    let note = match (mode, job.target.mode()) {
        (ExtractMode::FullRefresh, LoadMode::Append) => {
            job.target.set_mode(LoadMode::Overwrite);
            Some("note: --full-refresh replaces the target (overwrite) instead of appending, so no row is loaded twice".to_string())
        }
        (ExtractMode::Backfill { .. }, LoadMode::Overwrite) => {
            return Err(Error::Usage {
                message: format!(
                    "job `{}` overwrites its target, so a backfill would replace the table with only the range read",
                    job.name
                ),
                hint: Some("backfill jobs with `mode = \"merge\"` or `\"scd2\"`; to reload everything use `sluice run --full-refresh`".into()),
            });
        }
        (ExtractMode::Backfill { .. }, LoadMode::Append) => Some(format!(
            "warning: job `{}` appends, so rows of the range that were loaded before are loaded again; prefer `mode = \"merge\"`",
            job.name
        )),
        _ => None,
    };
    Ok((job, note))
}

/// A run's project and job as its request and parameters make them.
pub struct Prepared {
    /// The project, its job's mapping with the run's references replaced.
    pub project: Project,
    /// The job as the request runs it ([`job_for`]), its references replaced and
    /// [`Job::run`] set.
    pub job: Job,
    /// A note for the user (see [`job_for`]).
    pub note: Option<String>,
}

/// `job` of `project` prepared for one run: the load mode `mode` asks for ([`job_for`]) and
/// every `${run.*}`/`${var.*}` replaced with `params` ([`crate::config::params::apply`]).
///
/// # Errors
/// As [`job_for`]; [`Error::Config`] with every reference that cannot be replaced, at its
/// file and line.
pub fn prepare(
    project: &Project,
    job: &Job,
    mode: &ExtractMode,
    params: &RunParams,
) -> Result<Prepared> {
    let (job, note) = job_for(job, mode)?;
    let (project, job) = crate::config::params::apply(project, &job, params)
        .map_err(|d| Error::Config(crate::diagnostic::Diagnostics(d)))?;
    Ok(Prepared { project, job, note })
}

/// The waits between attempts of a job: exponential from `backoff` to `max_backoff`, with
/// jitter, `attempts - 1` retries (the `backon` crate's exponential backoff).
pub struct Retries {
    delays: backon::ExponentialBackoff,
    /// Attempts in all, the first one included.
    pub attempts: u32,
}

impl Retries {
    /// The waits of a job's `[retry]` policy.
    pub fn of(policy: &RetryPolicy) -> Retries {
        let delays = backon::ExponentialBuilder::default()
            .with_min_delay(policy.backoff)
            .with_max_delay(policy.max_backoff)
            .with_jitter()
            .with_max_times(policy.attempts.saturating_sub(1) as usize)
            .build();
        Retries {
            delays,
            attempts: policy.attempts,
        }
    }

    /// The wait before the next attempt, or `None` when the attempts are used up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        self.delays.next()
    }
}

/// Runs `job` as `mode` asks: takes the job lock (one run of a job at a time), then calls
/// `attempt` until it succeeds, fails for a reason a retry cannot cure, or the job's
/// `[retry]` attempts are used up. Only a transient error (a dropped connection, say) is
/// retried; the load is all-or-nothing, so a retry never loads a row twice. `on_retry` is
/// told each retry (the attempt that failed and the wait).
///
/// `attempt` returns `None` when no run happened (an invalid config, already reported).
///
/// # Errors
/// The lock cannot be taken, or an attempt fails outside a run (its report not saved).
pub async fn run_job<F, Fut>(
    project: &Project,
    job: &Job,
    mut attempt: F,
    mut on_retry: impl FnMut(u32, &Retries, Duration),
) -> Result<Option<RunReport>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<RunReport>>>,
{
    // Each attempt first records a commit an earlier run made but did not record, before
    // anything reads the state store.
    let _job_lock = crate::recovery::lock_job(project, job)?;
    let mut retries = Retries::of(&job.retry);
    let mut n = 1;
    loop {
        let Some(report) = attempt().await? else {
            return Ok(None);
        };
        let transient = report.error.as_ref().is_some_and(|e| e.transient);
        match retries.next_delay() {
            Some(delay) if transient => {
                on_retry(n, &retries, delay);
                tokio::time::sleep(delay).await;
                n += 1;
            }
            _ => return Ok(Some(report)),
        }
    }
}

/// What one attempt of a run came to.
pub enum Attempt {
    /// The configuration is invalid (a broken model contract, a mapping that does not
    /// compile): nothing ran and no report was saved. The error names the file and line.
    Invalid(Error),
    /// The run stopped while planning (a missing source file, an unreachable database): a
    /// report with status `failed` and zero counts was saved. `error` is the cause.
    NotStarted {
        /// The saved report.
        report: RunReport,
        /// Why planning stopped.
        error: Error,
    },
    /// The run executed; its report was saved (whatever its status).
    Ran(RunReport),
}

impl Attempt {
    /// The saved report, if the attempt made one.
    pub fn report(&self) -> Option<&RunReport> {
        match self {
            Attempt::Invalid(_) => None,
            Attempt::NotStarted { report, .. } | Attempt::Ran(report) => Some(report),
        }
    }
}

/// One attempt of a run of `job` (already resolved by [`job_for`]) with the job lock held:
/// records a commit an earlier run made but did not record ([`crate::recovery::reconcile`]),
/// checks the model against every version committed runs loaded
/// ([`crate::contract::check_registered`]), compiles and runs. A panic while planning is a
/// failed attempt, never a success.
///
/// # Errors
/// What stops the run outside its report: the state store cannot be read or written, or the
/// report cannot be saved.
pub async fn attempt(
    project: &Project,
    job: &Job,
    mode: &ExtractMode,
    progress: &mut dyn Progress,
) -> Result<Attempt> {
    let started = chrono::Utc::now();
    let t0 = std::time::Instant::now();
    let no_inputs = std::collections::HashMap::new();
    let compiling = async {
        crate::recovery::reconcile(project, job).await?;
        // Models as contracts, checked against every version committed runs loaded (a run
        // recovered just now included).
        let model = project
            .mappings
            .get(&job.mapping)
            .and_then(|m| project.models.get(&m.model.name));
        if let Some(d) = model.and_then(|m| crate::contract::check_registered(project, m)) {
            return Err(Error::config(d));
        }
        crate::plan::compile_for(project, job, &no_inputs, mode).await
    };
    progress.stage("planning");
    let compiled = match crate::producer::catch_panic(compiling, "planning the job").await {
        Ok(c) => c,
        Err(e) => {
            progress.finish();
            if matches!(e, Error::Config(_)) {
                return Ok(Attempt::Invalid(e));
            }
            let redactor = crate::config::interpolate::Redactor::process();
            let report = crate::run::failed_before_start(project, job, started, &e, redactor)?;
            return Ok(Attempt::NotStarted { report, error: e });
        }
    };
    let report = crate::run::run(project, compiled, started, t0.elapsed(), progress).await?;
    Ok(Attempt::Ran(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_count_the_first_run_and_waits_stay_within_their_bounds() {
        let policy = RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(150),
        };
        let mut retries = Retries::of(&policy);
        let waits: Vec<Duration> = std::iter::from_fn(|| retries.next_delay()).collect();
        assert_eq!(waits.len(), 2, "3 attempts: the first run and two retries");
        for w in &waits {
            // Each wait is jittered by up to its own length, and capped at max_backoff first.
            assert!(*w >= Duration::from_millis(100), "{w:?}");
            assert!(*w <= Duration::from_millis(300), "{w:?}");
        }
        let mut once = Retries::of(&RetryPolicy::default());
        assert_eq!(
            once.next_delay(),
            None,
            "the default is one attempt, no retry"
        );
    }
}
