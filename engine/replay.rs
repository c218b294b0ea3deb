//! `sluice replay JOB --run RUN_ID`: reprocess a run's quarantined rows through the current
//! mapping (after a fix) and load the rows that now pass.
//!
//! ```text
//! <quarantine>/<RUN_ID>.parquet, or the Delta quarantine's rows WHERE run_id = RUN_ID
//!        ──source_values──▶ driving source rows (original file, line)
//!        lookups: read from the job's sources as usual
//! compile the current mapping ──▶ run (append) ──▶ rows that pass: target
//!                                              └─▶ rows that still fail: quarantine of the replay run
//! ```
//!
//! Guarantees:
//! - **Nothing loads twice.** Only a committed run can be replayed (a run that did not commit
//!   is run again instead), and only once: the state store records the replay
//!   (`runs.replay_of`) after its commit, and a second replay of the same run is refused.
//! - **Duplicates stay out.** A `unique` rule also fails a replayed row whose key the target
//!   already holds.
//!   The rows that still fail are in the replay run's own quarantine, so they can be replayed
//!   again, from that run, after the next fix.
//! - **The target is appended to**, whatever the job's mode: a replay adds rows the original
//!   load left out. The job's dataset checks are not applied (they describe a full load).
//! - Column types come from the source's files as they are now (CSV raw text is replayed as
//!   text, so it parses exactly as the first time); a malformed record is parsed again and
//!   stays malformed if it still does not fit.

use std::collections::HashMap;
use std::time::Instant;

use chrono::Utc;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::prelude::DataFrame;

use crate::config::spec::{ChecksSpec, LoadMode};
use crate::config::{Job, Project};
use crate::error::{Error, Result};
use crate::report::RunReport;
use crate::run::Progress;
use crate::source::{InlineRow, SourceInput};
use crate::state::StateStore;

/// Replays the quarantine of run `run_id` of `job`; returns the replay run's report. Takes the
/// job lock and reconciles the state store first, like a run ([`crate::recovery`]).
///
/// # Errors
/// [`Error::State`] when another run of the job holds the lock; [`Error::Usage`] when the run has no quarantined rows or was replayed already;
/// [`Error::Config`] when the current mapping does not compile; [`Error::Engine`] when the
/// quarantine cannot be read. Errors during the load itself are in the report.
pub async fn replay(
    project: &Project,
    job: &Job,
    run_id: &str,
    progress: &mut dyn Progress,
) -> Result<RunReport> {
    let started = Utc::now();
    let t0 = Instant::now();
    // The replay stands for the logical date and vars of the run it replays, so its
    // `${run.*}` and `${var.*}` pick the same folders.
    let replayed = StateStore::of(project)?.run(run_id)?;
    let params = crate::config::params::RunParams {
        trigger: "replay",
        vars: replayed
            .as_ref()
            .map(|r| r.vars.clone())
            .unwrap_or_default(),
        ..crate::config::params::RunParams::at(
            replayed
                .and_then(|r| r.logical_date)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map_or(started, |t| t.with_timezone(&Utc)),
        )
    };
    let (project, job) = crate::config::params::apply(project, job, &params)
        .map_err(|d| Error::Config(crate::diagnostic::Diagnostics(d)))?;
    let (project, job) = (&project, &job);
    let _job_lock = crate::recovery::lock_job(project, job)?;
    crate::recovery::reconcile(project, job).await?;
    let store = StateStore::of(project)?;
    if let Some(by) = store.replayed_by(&job.name, run_id)? {
        return Err(Error::Usage {
            message: format!("run {run_id} of job `{}` was already replayed by run {by}; its rows were loaded then", job.name),
            hint: Some(format!(
                "rows that still failed are in the quarantine of run {by}: sluice replay {} --run {by}",
                job.name
            )),
        });
    }
    match store.run_status(&job.name, run_id)?.as_deref() {
        Some("succeeded" | "succeeded_with_warnings") => {}
        Some(status) => {
            return Err(Error::Usage {
                message: format!(
                    "run {run_id} of job `{}` ended `{status}`: its target was not committed, so its good rows were not loaded either",
                    job.name
                ),
                hint: Some(format!(
                    "fix the cause and run the job again (`sluice run {}`); replay is for runs that committed",
                    job.name
                )),
            })
        }
        None => {
            let has_rows = quarantined(project, job, run_id).await?.0.is_some();
            return Err(Error::Usage {
                message: format!(
                    "run {run_id} of job `{}` is not in the state store, so it cannot be replayed safely{}",
                    job.name,
                    if has_rows { "" } else { " (and it has no quarantined rows)" }
                ),
                hint: Some(format!(
                    "`sluice quarantine {}` lists the runs with rejected rows",
                    job.name
                )),
            });
        }
    }
    let (frame, shown) = quarantined(project, job, run_id).await?;
    let Some(frame) = frame else {
        return Err(Error::Usage {
            message: format!(
                "run {run_id} of job `{}` has no quarantined rows (in {shown})",
                job.name
            ),
            hint: Some(format!(
                "`sluice quarantine {}` lists the runs with rejected rows",
                job.name
            )),
        });
    };
    let rows = read_quarantine(frame, &shown, &job.name).await?;
    let mapping = project
        .mappings
        .get(&job.mapping)
        .ok_or_else(|| Error::Internal(format!("job `{}` without mapping", job.name)))?;
    let mut inputs = HashMap::new();
    inputs.insert(mapping.from.source.clone(), SourceInput::Replay(rows));
    let mut replay_job = job.clone();
    replay_job.target.set_mode(LoadMode::Append);
    replay_job.checks = ChecksSpec::default();
    let compiled = crate::plan::compile_with(project, &replay_job, &inputs).await?;
    crate::run::run_with(
        project,
        compiled,
        started,
        t0.elapsed(),
        progress,
        Some(run_id),
    )
    .await
}

/// The quarantined rows of run `run_id` of `job` (`None` when it has none) and the
/// quarantine as shown.
///
/// # Errors
/// As [`crate::plan::quarantine_location`] and [`crate::quarantine::QuarantineLocation::read`].
async fn quarantined(
    project: &Project,
    job: &Job,
    run_id: &str,
) -> Result<(Option<DataFrame>, String)> {
    let ctx = crate::plan::session(project);
    let redactor = crate::config::interpolate::Redactor::default();
    let location = crate::plan::quarantine_location(project, job, &redactor, &ctx)?;
    let shown = location.shown(project);
    Ok((location.read(&ctx, Some(run_id)).await?, shown))
}

/// The rows of one run's quarantine (`frame`, from the quarantine shown as `shown`) as
/// driving-source rows.
async fn read_quarantine(frame: DataFrame, shown: &str, job: &str) -> Result<Vec<InlineRow>> {
    let err = |e: datafusion::error::DataFusionError| Error::Engine {
        job: job.to_string(),
        message: format!("cannot read quarantine {shown}: {e}"),
    };
    let batches = frame
        .select_columns(&["source_file", "source_line", "source_values"])
        .map_err(err)?
        .collect()
        .await
        .map_err(err)?;
    let mut rows = Vec::new();
    use datafusion::arrow::datatypes::DataType;
    for b in &batches {
        // Readers may hand strings back as views; cast to the written types.
        let column = |i: usize, t: &DataType| {
            datafusion::arrow::compute::cast(b.column(i), t).map_err(|e| Error::Engine {
                job: job.to_string(),
                message: format!("quarantine {shown} has an unexpected schema: {e}"),
            })
        };
        let (files, lines, values) = (
            column(0, &DataType::Utf8)?,
            column(1, &DataType::Int64)?,
            column(2, &DataType::Utf8)?,
        );
        let files = files.as_string::<i32>();
        let lines = lines.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let values = values.as_string::<i32>();
        for i in 0..b.num_rows() {
            let parsed: serde_json::Value =
                serde_json::from_str(values.value(i)).map_err(|e| Error::Engine {
                    job: job.to_string(),
                    message: format!("quarantine row {i} has unreadable source values: {e}"),
                })?;
            rows.push(InlineRow {
                file: if files.is_valid(i) {
                    files.value(i).to_string()
                } else {
                    String::new()
                },
                line: if lines.is_valid(i) { lines.value(i) } else { 0 },
                values: match parsed {
                    serde_json::Value::Object(m) => m,
                    _ => serde_json::Map::new(),
                },
            });
        }
    }
    Ok(rows)
}
