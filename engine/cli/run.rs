//! `sluice run`, `sluice backfill` and `sluice replay`: the request resolved by the library
//! ([`sluice::request`]), each attempt compiled, run and printed.

use std::path::Path;

use sluice::config::params::{self, RunParams};
use sluice::config::{Job, Project};
use sluice::db::ExtractMode;
use sluice::error::{Error, EXIT_INVALID};
use sluice::report::RunReport;
use sluice::request::Attempt;
use sluice::run::{NoProgress, Progress, TerminalProgress};

use super::*;
use crate::errln;

/// The run parameters given on the command line.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct ParamArgs {
    /// The run's logical date, which `${run.date}`, `${run.start}` and `${run.end}` read:
    /// `YYYY-MM-DD` (00:00 of that day in the job's time zone) or an RFC 3339 instant.
    /// Default: now.
    #[arg(long, value_name = "DATE")]
    date: Option<String>,
    /// A value for one of the job's `[vars]` (`${var.KEY}`), over its default; repeatable.
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = params::parse_var)]
    vars: Vec<(String, String)>,
}

impl ParamArgs {
    /// The parameters of a run of `job`.
    pub(crate) fn params(&self, job: &Job) -> Result<RunParams, Error> {
        let logical_date = match &self.date {
            Some(d) => params::parse_date(d, params::zone_of(job)).map_err(|e| Error::Usage {
                message: e.into(),
                hint: Some("--date 2026-11-29".into()),
            })?,
            None => chrono::Utc::now(),
        };
        Ok(RunParams {
            logical_date,
            vars: self.vars.iter().cloned().collect(),
            zone: None,
            trigger: "manual",
        })
    }
}

/// The range of `sluice backfill`.
pub(crate) struct Range {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) restart: bool,
}

pub(crate) async fn run(
    explicit: Option<&Path>,
    job: &str,
    json: bool,
    mode: ExtractMode,
    args: &ParamArgs,
) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let project = load_for_job(&root, job)?;
    let job = project.job(job).map_err(|d| Error::config(*d))?;
    let params = args.params(job)?;
    run_with(&project, job, json, &mode, &params).await
}

/// `sluice backfill`: one run over a cursor range, or one run per date.
pub(crate) async fn backfill(
    explicit: Option<&Path>,
    job: &str,
    json: bool,
    range: Range,
    vars: Vec<(String, String)>,
) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let project = load_for_job(&root, job)?;
    let job = project.job(job).map_err(|d| Error::config(*d))?;
    let args = ParamArgs { date: None, vars };
    if !sluice::backfill::is_by_date(job) {
        let mode = ExtractMode::Backfill {
            from: range.from,
            to: range.to,
        };
        return run_with(&project, job, json, &mode, &args.params(job)?).await;
    }
    let given = args.params(job)?.vars;
    let plan = sluice::backfill::plan(
        &project,
        job,
        (&range.from, &range.to),
        &given,
        range.restart,
    )?;
    if let Some(done) = plan.resumed_after {
        errln(&format!(
            "resuming the backfill of {} .. {}: dates through {done} were committed by an earlier run (--restart runs them again)",
            plan.from, plan.to
        ));
    }
    let base = args.params(job)?;
    sluice::backfill::run_dates(
        &project,
        job,
        &plan,
        &base,
        |params| {
            let project = &project;
            async move { run_with(project, job, json, &ExtractMode::Incremental, &params).await }
        },
        errln,
    )
    .await
}

/// A run of `job` as `mode` and `params` ask, retried as its `[retry]` says, printed; the
/// exit code.
async fn run_with(
    project: &Project,
    job: &Job,
    json: bool,
    mode: &ExtractMode,
    params: &RunParams,
) -> Result<i32, Error> {
    let prepared = sluice::request::prepare(project, job, mode, params)?;
    if let Some(note) = &prepared.note {
        errln(note);
    }
    let (project, job) = (&prepared.project, &prepared.job);
    let report = sluice::request::run_job(
        project,
        job,
        || run_once(project, job, json, mode),
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
    sluice::alerts::deliver_once(project).await;
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
