//! What `sluice status` and `sluice runs` show: every job of the project with its schedule,
//! last run and next fire (the project's integration inventory), and the run history, read
//! from the config and the state store.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::config::Project;
use crate::error::Result;
use crate::state::{RunRecord, StateStore};

/// One job in `sluice status`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    /// Job name.
    pub job: String,
    /// The job's `description`.
    pub description: Option<String>,
    /// The job's `owner`.
    pub owner: Option<String>,
    /// `cron (zone)`, or `None` for a job run only when asked.
    pub schedule: Option<String>,
    /// The latest run (a replay included), if any.
    pub last_run: Option<RunRecord>,
    /// The latest run's duration, milliseconds.
    pub last_duration_ms: Option<u64>,
    /// The next fire after now, RFC 3339 UTC (scheduled jobs).
    pub next_run: Option<String>,
    /// `ok` (last run succeeded), `warnings` (succeeded with warnings), `failing` (failed or a
    /// check failed), `paused` (the daemon stopped running its fires after failures in a row,
    /// until `sluice resume`), `never run`.
    pub health: String,
}

/// The status of every job of `project`, by name, as of `now`.
///
/// # Errors
/// [`crate::error::Error::State`] when the state store cannot be read.
pub fn job_statuses(
    project: &Project,
    store: &StateStore,
    now: DateTime<Utc>,
) -> Result<Vec<JobStatus>> {
    project
        .jobs
        .values()
        .map(|job| {
            let last_run = store.runs(&job.name, 1, false)?.into_iter().next();
            let paused = store
                .circuit(&job.name)?
                .is_some_and(|c| c.opened_at.is_some());
            let health = match last_run.as_ref().map(|r| r.status.as_str()) {
                _ if paused => "paused",
                None => "never run",
                Some("succeeded") => "ok",
                Some("succeeded_with_warnings") => "warnings",
                Some(_) => "failing",
            };
            Ok(JobStatus {
                job: job.name.clone(),
                description: job.description.clone(),
                owner: job.owner.clone(),
                schedule: job.schedule.as_ref().map(|s| s.describe()),
                last_duration_ms: last_run.as_ref().and_then(duration_ms),
                next_run: job
                    .schedule
                    .as_ref()
                    .and_then(|s| s.next_after(now))
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
                last_run,
                health: health.into(),
            })
        })
        .collect()
}

/// A run's duration from its stored start and end, milliseconds.
pub fn duration_ms(run: &RunRecord) -> Option<u64> {
    let start = DateTime::parse_from_rfc3339(&run.started_at).ok()?;
    let end = DateTime::parse_from_rfc3339(&run.finished_at).ok()?;
    u64::try_from((end - start).num_milliseconds()).ok()
}

/// `sluice status` as a text table: job, owner, schedule, last run, result, duration, rows
/// read, written and quarantined, next run.
pub fn status_table(statuses: &[JobStatus]) -> String {
    let mut t = table(&[
        "job",
        "owner",
        "schedule",
        "last run",
        "result",
        "duration",
        "read",
        "written",
        "quarantined",
        "next run",
    ]);
    for s in statuses {
        let run = s.last_run.as_ref();
        t.add_row(vec![
            s.job.clone(),
            s.owner.clone().unwrap_or_default(),
            s.schedule.clone().unwrap_or_else(|| "-".into()),
            run.map_or("-".into(), |r| r.run_id.clone()),
            run.map_or_else(|| s.health.clone(), |r| r.status.clone()),
            s.last_duration_ms.map_or("-".into(), seconds),
            run.map_or("-".into(), |r| r.rows_read.to_string()),
            run.map_or("-".into(), |r| r.rows_written.to_string()),
            run.map_or("-".into(), |r| r.rows_quarantined.to_string()),
            s.next_run.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    t.to_string()
}

/// `sluice runs` as a text table, newest first.
pub fn runs_table(runs: &[RunRecord]) -> String {
    let mut t = table(&[
        "run",
        "job",
        "status",
        "logical date",
        "started",
        "duration",
        "read",
        "written",
        "quarantined",
        "replay of",
    ]);
    for r in runs {
        t.add_row(vec![
            r.run_id.clone(),
            r.job.clone(),
            r.status.clone(),
            r.logical_date.clone().unwrap_or_else(|| "-".into()),
            r.started_at.clone(),
            duration_ms(r).map_or("-".into(), seconds),
            r.rows_read.to_string(),
            r.rows_written.to_string(),
            r.rows_quarantined.to_string(),
            r.replay_of.clone().unwrap_or_default(),
        ]);
    }
    t.to_string()
}

fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header(header.to_vec());
    t
}

fn seconds(ms: u64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}
