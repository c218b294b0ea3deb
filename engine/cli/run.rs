//! `sluice run`, `sluice backfill` and `sluice replay`: the request resolved by the library
//! ([`sluice::request`]), each attempt compiled, run and printed.

use std::path::Path;

use sluice::config::Project;
use sluice::db::ExtractMode;
use sluice::error::{Error, EXIT_INVALID};
use sluice::report::RunReport;
use sluice::request::Attempt;
use sluice::run::{NoProgress, Progress, TerminalProgress};

use super::*;
use crate::errln;

pub(crate) async fn run(
    explicit: Option<&Path>,
    job: &str,
    json: bool,
    mode: ExtractMode,
) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let project = load_for_job(&root, job)?;
    let job = project.job(job).map_err(|d| Error::config(*d))?;
    let (job, note) = sluice::request::job_for(job, &mode)?;
    if let Some(note) = note {
        errln(&note);
    }
    let report = sluice::request::run_job(
        &project,
        &job,
        || run_once(&project, &job, json, &mode),
        |attempt, retries, delay| {
            errln(&format!(
                "attempt {attempt} of {} failed for a reason that may pass (above); nothing was committed; retrying in {:.1} s",
                retries.attempts,
                delay.as_secs_f64()
            ))
        },
    )
    .await?;
    // Alerts the run queued go out now, so cron and Airflow users get them without the
    // daemon; what cannot be delivered stays queued for the next run or the daemon.
    sluice::alerts::deliver_once(&project).await;
    // No report: a config error (already reported), no run happened.
    Ok(report.map_or(EXIT_INVALID, |r| r.exit_code()))
}

/// One attempt of a run, printed. `None` when the config is invalid (the error is printed).
async fn run_once(
    project: &Project,
    job: &sluice::config::Job,
    json: bool,
    mode: &ExtractMode,
) -> Result<Option<RunReport>, Error> {
    let mut terminal = if json { None } else { TerminalProgress::new() };
    let mut quiet = NoProgress;
    let progress: &mut dyn Progress = match terminal.as_mut() {
        Some(t) => t,
        None => &mut quiet,
    };
    match sluice::request::attempt(project, job, mode, progress).await? {
        Attempt::Invalid(e) => {
            report_error(&e);
            Ok(None)
        }
        Attempt::NotStarted { report, error } => {
            if json {
                print_json(&report)?;
            } else {
                report_error(&error);
            }
            Ok(Some(report))
        }
        Attempt::Ran(report) => {
            if json {
                print_json(&report)?;
            } else {
                print_summary(&report, project);
            }
            Ok(Some(report))
        }
    }
}

pub(crate) async fn replay(
    explicit: Option<&Path>,
    job: &str,
    run_id: &str,
    json: bool,
) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let project = load_for_job(&root, job)?;
    let job = project.job(job).map_err(|d| Error::config(*d))?;
    let mut terminal = if json { None } else { TerminalProgress::new() };
    let mut quiet = NoProgress;
    let progress: &mut dyn Progress = match terminal.as_mut() {
        Some(t) => t,
        None => &mut quiet,
    };
    let report = sluice::replay::replay(&project, job, run_id, progress).await?;
    if json {
        print_json(&report)?;
    } else {
        outln!("replay of run {run_id}: rows that now pass are appended to the target");
        print_summary(&report, &project);
    }
    Ok(report.exit_code())
}
