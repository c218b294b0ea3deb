//! Running a compiled job: one pass over the sources, split into valid and quarantined rows,
//! dataset checks, atomic commit, run report.
//!
//! ```text
//! plan output ──▶ per batch: OR of rule flags ──┬─ valid rows ──▶ target staging
//!                                               └─ failing rows + reasons ──▶ quarantine staging
//! end of stream ──▶ dataset checks ──pass/warn──▶ publish quarantine, commit target ──▶ report
//!                                 └──fail──────▶ publish quarantine, discard target ──▶ report (exit 3)
//! ```

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListBuilder, RecordBatch, StringBuilder,
};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::{filter, take};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::physical_plan::{execute_stream, ExecutionPlan};
use futures::StreamExt;

use crate::config::spec::RuleAction;
use crate::config::Project;
use crate::error::{Error, Result};
use crate::plan::{CompiledJob, Target};
use crate::quality::{evaluate_checks, CheckResult, CheckStatus};
use crate::quarantine::{self, QuarantineWriter, RejectedRow};
use crate::report::{
    new_run_id, save_report, ErrorReport, NewFilesReport, OutputReport, RowCounts, RuleReport,
    RunReport, RunStatus, SpillReport, StageTimes, WatermarkReport,
};
use crate::sink::delta::DeltaSink;
use crate::sink::object_parquet::ObjectParquetSink;
use crate::sink::parquet::{ParquetSink, SinkMetrics};
use crate::sink::Sink;
use crate::source::DRIVING_ROW_COLUMN;

/// Reasons kept per rule in the report (the quarantine keeps all).
const REPORT_SAMPLES_PER_RULE: usize = 3;

/// Progress shown while a run executes.
pub trait Progress: Send {
    /// Called after each batch with the rows produced so far.
    fn rows(&mut self, produced: u64, quarantined: u64);
    /// Called when a stage starts.
    fn stage(&mut self, name: &str);
    /// Called once at the end.
    fn finish(&mut self);
}

/// No progress output.
pub struct NoProgress;

impl Progress for NoProgress {
    fn rows(&mut self, _: u64, _: u64) {}
    fn stage(&mut self, _: &str) {}
    fn finish(&mut self) {}
}

/// A spinner with row counts and rate on standard error, drawn only on a terminal.
pub struct TerminalProgress {
    bar: indicatif::ProgressBar,
}

impl TerminalProgress {
    /// A spinner if standard error is a terminal, else `None`.
    pub fn new() -> Option<TerminalProgress> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(TerminalProgress { bar })
    }
}

impl Progress for TerminalProgress {
    fn rows(&mut self, produced: u64, quarantined: u64) {
        let secs = self.bar.elapsed().as_secs_f64().max(0.001);
        self.bar.set_message(format!(
            "{} rows ({:.0} rows/s), {} quarantined",
            produced,
            produced as f64 / secs,
            quarantined
        ));
    }
    fn stage(&mut self, name: &str) {
        self.bar.set_message(name.to_string());
    }
    fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}

struct Outcome {
    counts: RowCounts,
    rule_counts: Vec<u64>,
    samples: Vec<Vec<String>>,
    sink_metrics: SinkMetrics,
    /// Why a `fail` rule stopped the run.
    aborted: Option<String>,
    /// Values of the dataset checks' aggregates, and the checks that could not be computed.
    aggregates: crate::checks::AggregateValues,
    /// What the plan spilled to disk, if anything.
    spill: Option<SpillReport>,
}

/// Opens the job's target (see [`crate::sink`] for the contract every target keeps).
///
/// # Errors
/// The target's lock is held, or its staging or connection cannot be set up.
async fn begin_sink(
    project: &Project,
    compiled: &CompiledJob,
    lock_path: &Path,
    staging_root: &Path,
    run_id: &str,
) -> Result<Box<dyn Sink>> {
    let (ctx, schema) = (&compiled.ctx, compiled.target_schema());
    Ok(match &compiled.target {
        Target::ObjectParquet(t) => {
            // Files of runs killed while uploading are deleted unless the state store (just
            // reconciled with the folder's commit record) has their run as committed.
            let store = crate::state::StateStore::of(project)?;
            let job = compiled.job.name.clone();
            let committed = move |id: &str| store.is_committed(&job, id);
            let (t, lock) = (t.clone(), lock_path);
            Box::new(
                ObjectParquetSink::begin(ctx, t, lock, staging_root, run_id, schema, committed)
                    .await?,
            )
        }
        Target::Delta(t) => {
            let t = t.clone();
            Box::new(DeltaSink::begin(ctx, t, lock_path, staging_root, run_id, schema).await?)
        }
        Target::Database(t) => Box::new(crate::db::sink::DbSink::begin(t).await?),
        Target::Folder {
            partition_by,
            files,
        } => {
            let (dir, mode, parts) = (
                &compiled.target_dir,
                compiled.job.target.mode(),
                partition_by.clone(),
            );
            Box::new(ParquetSink::begin(
                ctx, dir, lock_path, run_id, mode, schema, parts, files,
            )?)
        }
    })
}

/// The files incremental file sources read, recorded as read when the target committed.
fn new_files_reports(compiled: &CompiledJob, committed: bool) -> Vec<NewFilesReport> {
    let mut files = compiled.new_files.clone();
    for f in &mut files {
        f.recorded = committed;
    }
    files
}

/// The watermarks of the incremental sources after a run: moved to the largest cursor value
/// read when the target committed (never backwards, never by a backfill).
fn watermark_reports(compiled: &CompiledJob, committed: bool) -> Vec<WatermarkReport> {
    compiled
        .extractions
        .iter()
        .filter_map(|ext| {
            let (idx, _) = ext.cursor?;
            let read = ext.max_cursor.lock().ok().and_then(|m| *m);
            let previous = ext.previous;
            let backfill = matches!(
                compiled.extract_mode,
                crate::db::ExtractMode::Backfill { .. }
            );
            let full = compiled.extract_mode == crate::db::ExtractMode::FullRefresh;
            let next = match (previous, read) {
                (Some(p), Some(r)) if full || r > p => Some(r),
                (None, Some(r)) => Some(r),
                (p, _) => p,
            };
            let moved = committed && !backfill && next != previous;
            Some(WatermarkReport {
                source: ext.source.clone(),
                column: ext.columns[idx].name.clone(),
                range: ext
                    .range
                    .as_ref()
                    .map(|r| r.why.clone())
                    .unwrap_or_default(),
                previous: previous.map(|v| v.to_text()),
                value: if moved { next } else { previous }.map(|v| v.to_text()),
                moved,
            })
        })
        .collect()
}

/// Runs `compiled`: executes, splits, checks, commits, and writes the report.
///
/// Errors during execution do not escape: they are recorded in the report with
/// [`RunStatus::Failed`]. The returned `Err` is only for a report that could not be written.
///
/// # Errors
/// [`Error::State`] when the run report cannot be saved.
pub async fn run(
    project: &Project,
    compiled: CompiledJob,
    started: DateTime<Utc>,
    compile_time: Duration,
    progress: &mut dyn Progress,
) -> Result<RunReport> {
    run_with(project, compiled, started, compile_time, progress, None).await
}

/// [`run`], recording that it reprocesses the quarantine of run `replay_of` (see
/// [`crate::replay`]).
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    project: &Project,
    compiled: CompiledJob,
    started: DateTime<Utc>,
    compile_time: Duration,
    progress: &mut dyn Progress,
    replay_of: Option<&str>,
) -> Result<RunReport> {
    let run_id = new_run_id(started);
    // The daemon's run span (if any) gets the id, so every later log line carries it.
    tracing::Span::current().record("run_id", run_id.as_str());
    let job_name = compiled.job.name.clone();
    let exec_start = Instant::now();
    let mut stages = StageTimes {
        compile_ms: compile_time.as_millis() as u64,
        ..Default::default()
    };
    let lock_path = project
        .path(&project.settings.state_dir)
        .join("locks")
        .join(format!("{}.lock", lock_name(&compiled.target_dir)));
    let staging_root = project.path(&project.settings.state_dir).join("staging");
    let mut quarantine =
        QuarantineWriter::new(&compiled.quarantine, &staging_root, &job_name, &run_id);
    let mut sink_opt: Option<Box<dyn Sink>> = None;
    // Row counts of a pass that fails part-way.
    let mut partial = RowCounts::default();
    progress.stage("reading and mapping rows");
    let executing = async {
        let sink = begin_sink(project, &compiled, &lock_path, &staging_root, &run_id).await?;
        let sink = sink_opt.insert(sink);
        // The target lock is held now.
        quarantine.sweep_crashed();
        let own = compiled.ctx.runtime_env().disk_manager.temp_dir_paths();
        crate::plan::sweep_spill(project, &compiled.job, started.into(), &own);
        execute(
            &compiled,
            &run_id,
            started,
            sink,
            &mut quarantine,
            progress,
            &mut partial,
        )
        .await
    };
    // A panic while reading or writing (in Sluice, DataFusion or a driver) fails the run:
    // the staged target is aborted below like after any other error.
    let outcome = crate::producer::catch_panic(executing, "executing the job").await;
    stages.execute_ms = exec_start.elapsed().as_millis() as u64;
    let commit_start = Instant::now();
    progress.stage("checking and committing");

    let verdict = match outcome {
        Ok(o) => judge(project, &compiled, o, started, quarantine).await,
        Err(e) => {
            if let Some(sink) = sink_opt.take() {
                sink.abort().await;
            }
            quarantine.abort();
            Verdict {
                status: RunStatus::Failed,
                counts: partial,
                rules: Vec::new(),
                checks: Vec::new(),
                outputs: Vec::new(),
                error: Some(ErrorReport::new(&e, &compiled.redactor)),
                spill: None,
            }
        }
    };
    let Verdict {
        status,
        counts,
        rules,
        checks,
        mut outputs,
        error,
        spill,
    } = verdict;
    // The report as it will be once committed: its facts go into the commit itself.
    let will_commit = matches!(
        status,
        RunStatus::Succeeded | RunStatus::SucceededWithWarnings
    ) && sink_opt.is_some();
    if let Some(target) = outputs.first_mut().filter(|o| o.kind == "target") {
        target.committed = will_commit;
    }
    let facts = RunReport::params_of(&compiled.job);
    let mut report = RunReport {
        run_id: run_id.clone(),
        job: job_name.clone(),
        mapping: compiled.mapping.name.clone(),
        model: compiled.model.name.clone(),
        model_version: compiled.model.version.to_string(),
        status,
        logical_date: facts.logical_date,
        vars: facts.vars,
        trigger: facts.trigger,
        config_hash: Some(RunReport::config_hash(project, &compiled.job)),
        started_at: started.to_rfc3339_opts(SecondsFormat::Millis, true),
        finished_at: String::new(),
        duration_ms: 0,
        rows: counts,
        rules,
        checks,
        stages,
        watermarks: watermark_reports(&compiled, will_commit),
        new_files: new_files_reports(&compiled, will_commit),
        outputs,
        error,
        load: None,
        spill,
    };
    report.finish_at(started, Utc::now());
    if let Some(sink) = sink_opt.take() {
        publish(
            project,
            &compiled,
            sink,
            will_commit,
            &mut report,
            replay_of,
        )
        .await;
    }
    report.stages.commit_ms = commit_start.elapsed().as_millis() as u64;
    progress.finish();
    report.finish_at(started, Utc::now());
    record(project, &report, replay_of, Some(&compiled.model));
    crate::commit::crash_point("after_state");
    if let Err(e) = save_report(project, &report) {
        if report.exit_code() != crate::error::EXIT_OK {
            return Err(e);
        }
        // Committed: failing now would make a scheduler load it again.
        crate::logging::stderr_line(&format!(
            "warning: run {} committed, but its report was not saved: {e}",
            report.run_id
        ));
    }
    Ok(report)
}

/// What a run amounts to once its pass is over: status, counts, rule and check results, the
/// outputs (target first) and the error that failed it, if one did.
struct Verdict {
    status: RunStatus,
    counts: RowCounts,
    rules: Vec<RuleReport>,
    checks: Vec<CheckResult>,
    outputs: Vec<OutputReport>,
    error: Option<ErrorReport>,
    spill: Option<SpillReport>,
}

/// Judges a completed pass: a `fail` rule that stopped it, or the dataset checks; then
/// commits the quarantine (kept whatever the checks say) and refuses a `delete_missing` load
/// that rejected rows. The target is not committed here.
async fn judge(
    project: &Project,
    compiled: &CompiledJob,
    o: Outcome,
    started: DateTime<Utc>,
    quarantine: QuarantineWriter,
) -> Verdict {
    let mut error = None;
    let (checks, worst) = match &o.aborted {
        Some(why) => {
            error = Some(ErrorReport {
                class: "quality".into(),
                message: compiled.redactor.redact(why),
                transient: false,
            });
            (Vec::new(), CheckStatus::Fail)
        }
        None => dataset_checks(project, compiled, &o, started),
    };
    let mut outputs = Vec::new();
    let q_rows = quarantine.rows();
    let q_path = compiled.redactor.redact(&quarantine.shown(project));
    let mut status = match worst {
        CheckStatus::Pass => RunStatus::Succeeded,
        CheckStatus::Warn => RunStatus::SucceededWithWarnings,
        CheckStatus::Fail => RunStatus::CheckFailed,
    };
    match quarantine.commit().await {
        Ok(written) => outputs.push(OutputReport {
            kind: "quarantine".into(),
            path: q_path,
            rows: q_rows,
            files: u64::from(written),
            committed: written,
        }),
        Err(e) => {
            status = RunStatus::Failed;
            error = Some(ErrorReport::new(&e, &compiled.redactor));
        }
    }
    if let Some(refused) = refuse_delete_missing(compiled, &o, status) {
        status = RunStatus::Failed;
        error = Some(refused);
    }
    outputs.insert(
        0,
        OutputReport {
            kind: "target".into(),
            path: compiled.redactor.redact(&compiled.target_shown),
            rows: o.sink_metrics.rows_written,
            files: o.sink_metrics.files_written,
            committed: false,
        },
    );
    Verdict {
        status,
        spill: o.spill,
        rules: rule_reports(compiled, &o.rule_counts, o.samples),
        counts: o.counts,
        checks,
        outputs,
        error,
    }
}

/// The dataset checks of a completed pass (row counts, the aggregates, volume against the
/// history of committed runs) and the worst of their statuses.
fn dataset_checks(
    project: &Project,
    compiled: &CompiledJob,
    o: &Outcome,
    started: DateTime<Utc>,
) -> (Vec<CheckResult>, CheckStatus) {
    let mut checks = evaluate_checks(
        &compiled.job.checks,
        o.counts.read,
        o.counts.written,
        o.counts.quarantined,
    );
    let history = if compiled.job.checks.volume.is_some() {
        crate::state::StateStore::of(project)
            .and_then(|s| s.runs(&compiled.job.name, crate::state::VOLUME_BASELINE_RUNS, true))
            .map(|runs| runs.iter().map(|r| r.rows_written).collect::<Vec<_>>())
            .unwrap_or_else(|e| {
                crate::logging::stderr_line(&format!("warning: volume check without history: {e}"));
                Vec::new()
            })
    } else {
        Vec::new()
    };
    checks.extend(crate::checks::evaluate(
        &compiled.job.checks,
        &o.aggregates,
        o.counts.written,
        &history,
        started,
    ));
    let worst = checks
        .iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(CheckStatus::Pass);
    (checks, worst)
}

/// `delete_missing` removes the keys this run did not load; a key whose row was quarantined
/// or dropped is missing only because it failed a rule, so such a run loads nothing.
fn refuse_delete_missing(
    compiled: &CompiledJob,
    o: &Outcome,
    status: RunStatus,
) -> Option<ErrorReport> {
    let shown = match &compiled.target {
        Target::Database(t) if t.delete_missing => t.shown(),
        Target::Delta(t) if t.delete_missing => t.shown.clone(),
        _ => return None,
    };
    let rejected = o.counts.quarantined + o.counts.dropped;
    let loading = matches!(
        status,
        RunStatus::Succeeded | RunStatus::SucceededWithWarnings
    );
    (rejected > 0 && loading).then(|| ErrorReport {
        class: "target".into(),
        message: format!(
            "{rejected} rows were quarantined or dropped, so `delete_missing` would delete (or close) the target rows of their keys; nothing was loaded into {}. Fix the rows (see `sluice quarantine {}`) or set `delete_missing = false`",
            shown,
            compiled.job.name
        ),
        transient: false,
    })
}

/// Each rule's report: how many rows failed it, with samples, and its status.
fn rule_reports(
    compiled: &CompiledJob,
    counts: &[u64],
    samples: Vec<Vec<String>>,
) -> Vec<RuleReport> {
    compiled
        .rules
        .iter()
        .zip(counts.iter().zip(samples))
        .map(|(r, (n, samples))| RuleReport {
            rule: r.name.clone(),
            kind: r.kind,
            action: r.action,
            status: match (*n, r.action) {
                (0, _) => CheckStatus::Pass,
                (_, RuleAction::Fail) => CheckStatus::Fail,
                _ => CheckStatus::Warn,
            },
            failed_rows: *n,
            samples,
        })
        .collect()
}

/// Commits `sink` with the run's commit record when `will_commit` (on failure `report` becomes
/// a failed run that moved nothing), else discards it.
async fn publish(
    project: &Project,
    compiled: &CompiledJob,
    sink: Box<dyn Sink>,
    will_commit: bool,
    report: &mut RunReport,
    replay_of: Option<&str>,
) {
    if !will_commit {
        sink.abort().await;
        return;
    }
    let record = crate::commit::CommitRecord::of(report, replay_of)
        .with_model_definition(std::fs::read_to_string(project.path(&compiled.model.file)).ok());
    crate::commit::pause_point("before_commit").await;
    let committed = match crate::recovery::confirm_lock(project, &compiled.job) {
        Ok(()) => sink.commit(&record).await,
        Err(e) => {
            sink.abort().await;
            Err(e)
        }
    };
    match committed {
        Ok(stats) => {
            tracing::info!(target_dir = %compiled.target_shown, "target committed");
            report.load = stats;
        }
        Err(e) => {
            report.status = RunStatus::Failed;
            report.error = Some(ErrorReport::new(&e, &compiled.redactor));
            if let Some(target) = report.outputs.first_mut() {
                target.committed = false;
            }
            report.watermarks = watermark_reports(compiled, false);
            report.new_files = new_files_reports(compiled, false);
        }
    }
}

/// Appends the run and its quality results to the state store and, for a committed run, the
/// model version it loaded (so later edits can be checked against it, see
/// [`crate::contract::check_registered`]). A failure here cannot undo a commit, so it is a
/// warning on standard error, not a failed run.
fn record(
    project: &Project,
    report: &RunReport,
    replay_of: Option<&str>,
    model: Option<&crate::model::CanonicalModel>,
) {
    let recorded = crate::state::StateStore::of(project).and_then(|mut s| {
        s.record_run(report, replay_of, &crate::alerts::of_run(project, report))
            .map(|()| s)
    });
    let store = match recorded {
        Ok(s) => s,
        Err(e) => {
            crate::logging::stderr_line(&format!(
                "warning: run {} is not in the quality history: {e}",
                report.run_id
            ));
            return;
        }
    };
    let committed = matches!(
        report.status,
        RunStatus::Succeeded | RunStatus::SucceededWithWarnings
    );
    if let Some(model) = model.filter(|_| committed) {
        let result = std::fs::read_to_string(project.path(&model.file))
            .map_err(|e| Error::state(&model.file, e.to_string()))
            .and_then(|text| store.register_model(&model.name, &model.version.to_string(), &text));
        if let Err(e) = result {
            crate::logging::stderr_line(&format!(
                "warning: model {} {} not registered: {e}",
                model.name, model.version
            ));
        }
    }
}

/// Records a run that failed before it could start executing (a source that cannot be found,
/// say): saves and returns a report with status `failed`, zero counts and the error.
///
/// # Errors
/// [`Error::State`] when the report cannot be saved.
pub fn failed_before_start(
    project: &Project,
    job: &crate::config::Job,
    started: DateTime<Utc>,
    error: &Error,
    redactor: &crate::config::interpolate::Redactor,
) -> Result<RunReport> {
    let finished = Utc::now();
    let (model, model_version) = project
        .mappings
        .get(&job.mapping)
        .and_then(|m| project.models.get(&m.model.name))
        .map(|m| (m.name.clone(), m.version.to_string()))
        .unwrap_or_default();
    let facts = RunReport::params_of(job);
    let report = RunReport {
        run_id: new_run_id(started),
        job: job.name.clone(),
        mapping: job.mapping.clone(),
        model,
        model_version,
        status: RunStatus::Failed,
        logical_date: facts.logical_date,
        vars: facts.vars,
        trigger: facts.trigger,
        config_hash: Some(RunReport::config_hash(project, job)),
        started_at: started.to_rfc3339_opts(SecondsFormat::Millis, true),
        finished_at: finished.to_rfc3339_opts(SecondsFormat::Millis, true),
        duration_ms: (finished - started).num_milliseconds().max(0) as u64,
        rows: RowCounts::default(),
        rules: Vec::new(),
        checks: Vec::new(),
        stages: StageTimes::default(),
        outputs: Vec::new(),
        error: Some(ErrorReport::new(error, redactor)),
        watermarks: Vec::new(),
        new_files: Vec::new(),
        load: None,
        spill: None,
    };
    save_report(project, &report)?;
    record(project, &report, None, None);
    Ok(report)
}

/// A file name for a target's lock: the folder's name plus a hash of its canonical path, so
/// every spelling of one target (`table = "x"`, `path = "warehouse/x/"`, a symlink) shares one
/// lock, and no secret in the path appears in the lock's name.
fn lock_name(target: &Path) -> String {
    let canonical = match (target.parent(), target.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or_else(|_| target.to_path_buf()),
        _ => target.to_path_buf(),
    };
    // FNV-1a, 64 bit: stable across builds and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.to_string_lossy().as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let name: String = canonical
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("{name}-{hash:016x}")
}

/// Running totals of one pass over the rows.
struct Tally {
    counts: RowCounts,
    /// Per rule (in `CompiledJob::rules` order): rows failing it.
    rule_counts: Vec<u64>,
    /// Per rule: the first few reasons, for the report.
    samples: Vec<Vec<String>>,
}

/// Reads and maps every row, stages the valid ones in `sink` and writes the rejected ones to
/// `quarantine`, in one pass. `counts` holds the row counts so far when this fails, so a
/// failed run still reports what it read.
///
/// # Errors
/// An engine error while reading or mapping, or a target or quarantine write error; nothing is
/// published either way.
#[allow(clippy::too_many_arguments)]
async fn execute(
    compiled: &CompiledJob,
    run_id: &str,
    started: DateTime<Utc>,
    sink: &mut Box<dyn Sink>,
    quarantine: &mut QuarantineWriter,
    progress: &mut dyn Progress,
    counts: &mut RowCounts,
) -> Result<Outcome> {
    let engine_err = |e: datafusion::error::DataFusionError| {
        Error::engine(&compiled.job.name, &compiled.redactor, &e)
    };
    let physical = compiled
        .frame
        .clone()
        .create_physical_plan()
        .await
        .map_err(engine_err)?;
    let mut stream =
        execute_stream(physical.clone(), compiled.ctx.task_ctx()).map_err(engine_err)?;
    let mut aggregates = crate::checks::DatasetAggregates::start(
        &compiled.ctx,
        compiled.target_schema(),
        &compiled.job.checks,
        &compiled.job.src,
    )?;
    let mut tally = Tally {
        counts: RowCounts::default(),
        rule_counts: vec![0u64; compiled.rules.len()],
        samples: vec![Vec::new(); compiled.rules.len()],
    };
    let batches = BatchWriter {
        compiled,
        run_id,
        started_micros: started.timestamp_micros(),
    };
    let mut aborted: Option<String> = None;
    let pass: Result<()> = async {
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(engine_err)?;
            if batch.num_rows() == 0 {
                continue;
            }
            aborted = batches
                .write(&batch, &mut tally, sink, quarantine, aggregates.as_mut())
                .await?;
            progress.rows(tally.counts.produced, tally.counts.quarantined);
            if aborted.is_some() {
                break;
            }
        }
        Ok(())
    }
    .await;
    tally.counts.read = match &compiled.sources[0].records {
        Some(records) => records.load(std::sync::atomic::Ordering::Relaxed),
        None => driving_rows_read(&physical),
    };
    if let Err(e) = pass {
        // Nothing is loaded; the rows read until the error still count.
        tally.counts.written = 0;
        *counts = tally.counts;
        return Err(e);
    }
    let redact = |t: &str| compiled.redactor.redact(t);
    let mut outcome = finish(tally, aborted, sink, aggregates, &redact).await?;
    outcome.spill = spilled(&physical);
    Ok(outcome)
}

/// What `plan`'s operators spilled to disk, summed over every node; `None` when nothing.
fn spilled(plan: &Arc<dyn ExecutionPlan>) -> Option<SpillReport> {
    let mut total = SpillReport::default();
    for_each_node(plan, |node| {
        if let Some(m) = node.metrics() {
            total.files += m.spill_count().unwrap_or(0) as u64;
            total.bytes += m.spilled_bytes().unwrap_or(0) as u64;
        }
    });
    (total.files > 0).then_some(total)
}

/// Calls `f` on every node of `plan`, by DataFusion's `TreeNode` walk.
fn for_each_node(plan: &Arc<dyn ExecutionPlan>, mut f: impl FnMut(&Arc<dyn ExecutionPlan>)) {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    // The visitor never fails, so neither does the walk.
    let _ = plan.apply(|node| {
        f(node);
        Ok(TreeNodeRecursion::Continue)
    });
}

/// Finishes the staged target and the dataset checks' aggregates after the pass.
async fn finish(
    mut tally: Tally,
    aborted: Option<String>,
    sink: &mut Box<dyn Sink>,
    aggregates: Option<crate::checks::DatasetAggregates>,
    redact: &(dyn Fn(&str) -> String + Sync),
) -> Result<Outcome> {
    let counts = &mut tally.counts;
    tracing::info!(
        read = counts.read,
        written = counts.written,
        quarantined = counts.quarantined,
        "all rows processed; finishing staged files"
    );
    let sink_metrics = if aborted.is_some() {
        SinkMetrics::default()
    } else {
        sink.finish().await?
    };
    let aggregates = match aggregates {
        Some(a) if aborted.is_none() => a.finish(redact).await,
        _ => crate::checks::AggregateValues::default(),
    };
    if aborted.is_some() {
        // Staged rows are discarded: nothing was loaded. The reader may have read ahead of
        // the row that stopped the run; count the rows processed.
        counts.written = 0;
        counts.read = counts.produced;
    }
    Ok(Outcome {
        counts: tally.counts,
        rule_counts: tally.rule_counts,
        samples: tally.samples,
        sink_metrics,
        aborted,
        aggregates,
        spill: None,
    })
}

/// Splits each batch of plan output into valid rows (staged in the target) and rejected
/// rows (written to the quarantine with their reasons).
struct BatchWriter<'a> {
    compiled: &'a CompiledJob,
    run_id: &'a str,
    started_micros: i64,
}

impl BatchWriter<'_> {
    /// Writes one batch; returns why a `fail` rule stopped the run, if one did.
    async fn write(
        &self,
        batch: &RecordBatch,
        tally: &mut Tally,
        sink: &mut Box<dyn Sink>,
        quarantine: &mut QuarantineWriter,
        aggregates: Option<&mut crate::checks::DatasetAggregates>,
    ) -> Result<Option<String>> {
        let compiled = self.compiled;
        let counts = &mut tally.counts;
        counts.produced += batch.num_rows() as u64;
        let classified = classify(compiled, batch);
        for (i, values) in classified.flag_values.iter().enumerate() {
            tally.rule_counts[i] += values.count_set_bits() as u64;
        }
        counts.dropped += (&classified.to_drop & &!&classified.any).count_set_bits() as u64;
        let valid = BooleanArray::new(!&classified.removed, None);
        let mut columns: Vec<ArrayRef> = compiled
            .layout
            .canonical
            .iter()
            .map(|i| filter(batch.column(*i), &valid))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Internal(format!("filtering valid rows: {e}")))?;
        if compiled.has_flag_rules() {
            let flagged = &classified.to_flag & &!&classified.removed;
            counts.flagged += flagged.count_set_bits() as u64;
            columns.push(dq_flags(compiled, &classified.flag_values, &valid));
        }
        let valid_batch = RecordBatch::try_new(compiled.target_schema(), columns)
            .map_err(|e| Error::Internal(format!("valid rows do not fit the model schema: {e}")))?;
        counts.written += valid_batch.num_rows() as u64;
        if classified.to_fail.count_set_bits() == 0 {
            if let Some(a) = aggregates {
                a.send(valid_batch.clone()).await?;
            }
            sink.write(valid_batch).await?;
        }

        let failing: Vec<u32> = classified.any.set_indices().map(|i| i as u32).collect();
        if failing.is_empty() {
            return Ok(None);
        }
        let rows = self.rejected(batch, &failing, &classified.flag_values, &mut tally.samples)?;
        tally.counts.quarantined += rows.len() as u64;
        let qb = quarantine::batch(self.run_id, &compiled.job.name, self.started_micros, &rows)?;
        quarantine.write(&qb).await?;
        let Some(k) = failing
            .iter()
            .position(|&i| classified.to_fail.value(i as usize))
        else {
            return Ok(None);
        };
        let row = &rows[k];
        let (rule, reason) = row
            .failed
            .iter()
            .find(|(name, _)| {
                compiled
                    .rules
                    .iter()
                    .any(|r| &r.name == name && r.action == RuleAction::Fail)
            })
            .cloned()
            .unwrap_or_default();
        Ok(Some(format!(
            "rule `{rule}` (action = \"fail\") failed at {}:{}: {reason}; the run stopped and nothing was loaded",
            row.source_file.as_deref().unwrap_or("?"),
            row.source_line.map_or("?".to_string(), |l| l.to_string()),
        )))
    }

    /// The quarantine rows for the `failing` rows of `batch`: source file, line and values,
    /// and every rule each failed with its reason (the first few also go to `samples`).
    fn rejected(
        &self,
        batch: &RecordBatch,
        failing: &[u32],
        flag_values: &[BooleanBuffer],
        samples: &mut [Vec<String>],
    ) -> Result<Vec<RejectedRow>> {
        let compiled = self.compiled;
        let layout = &compiled.layout;
        let format = FormatOptions::default().with_null("NULL");
        let internal = |e: datafusion::arrow::error::ArrowError| Error::Internal(e.to_string());
        let indices = datafusion::arrow::array::UInt32Array::from(failing.to_vec());
        let take_col = |i: usize| take(batch.column(i), &indices, None);
        let file = take_col(layout.file).map_err(internal)?;
        let line = take_col(layout.line).map_err(internal)?;
        let file = file.as_string::<i32>();
        let line = line.as_any().downcast_ref::<Int64Array>();
        let src_cols: Vec<(String, ArrayRef)> = layout
            .source_values
            .iter()
            .map(|(name, i)| take_col(*i).map(|a| (name.clone(), a)))
            .collect::<std::result::Result<_, _>>()
            .map_err(internal)?;
        let src_fmt: Vec<(String, &ArrayRef, ArrayFormatter)> = src_cols
            .iter()
            .map(|(n, a)| ArrayFormatter::try_new(a.as_ref(), &format).map(|f| (n.clone(), a, f)))
            .collect::<std::result::Result<_, _>>()
            .map_err(internal)?;
        let reason_cols: Vec<(String, ArrayRef)> = layout
            .reason_values
            .iter()
            .map(|(name, i)| take_col(*i).map(|a| (name.clone(), a)))
            .collect::<std::result::Result<_, _>>()
            .map_err(internal)?;
        let reason_fmt: HashMap<&str, ArrayFormatter> = reason_cols
            .iter()
            .map(|(n, a)| ArrayFormatter::try_new(a.as_ref(), &format).map(|f| (n.as_str(), f)))
            .collect::<std::result::Result<_, _>>()
            .map_err(internal)?;
        let raw_record = match layout.malformed {
            Some((_, col)) => Some(take_col(col).map_err(internal)?),
            None => None,
        };
        let raw_record = raw_record.as_ref().map(|a| a.as_string::<i32>());
        let mut rows = Vec::with_capacity(failing.len());
        for (k, &row) in failing.iter().enumerate() {
            let mut values = serde_json::Map::new();
            let raw = raw_record.as_ref().filter(|r| r.is_valid(k));
            if let Some(raw) = raw {
                // A malformed record has no column values, only its text.
                values.insert(
                    "_raw".into(),
                    serde_json::Value::String(raw.value(k).to_string()),
                );
            }
            for (name, array, f) in src_fmt.iter().filter(|_| raw.is_none()) {
                let v = if array.is_null(k) {
                    serde_json::Value::Null
                } else {
                    serde_json::Value::String(f.value(k).to_string())
                };
                values.insert(name.clone(), v);
            }
            let mut failed = Vec::new();
            for (i, (r, flags)) in compiled.rules.iter().zip(flag_values).enumerate() {
                if flags.value(row as usize) {
                    let reason = r.reason.render(|p| {
                        reason_fmt
                            .get(p)
                            .map(|f| f.value(k).to_string())
                            .unwrap_or_else(|| "?".into())
                    });
                    if samples[i].len() < REPORT_SAMPLES_PER_RULE {
                        samples[i].push(reason.clone());
                    }
                    failed.push((r.name.clone(), reason));
                }
            }
            rows.push(RejectedRow {
                source_file: file.is_valid(k).then(|| file.value(k).to_string()),
                source_line: line.and_then(|l| l.is_valid(k).then(|| l.value(k))),
                source_values: serde_json::Value::Object(values).to_string(),
                failed,
            });
        }
        Ok(rows)
    }
}

/// Rows read from the driving source: the sum of `output_rows` of the plan nodes that create
/// the driving row counter (one window per driving file).
fn driving_rows_read(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let mut total = 0;
    for_each_node(plan, |node| {
        let makes_counter = node.schema().index_of(DRIVING_ROW_COLUMN).is_ok()
            && node
                .children()
                .iter()
                .all(|c| c.schema().index_of(DRIVING_ROW_COLUMN).is_err());
        if makes_counter {
            total += node.metrics().and_then(|m| m.output_rows()).unwrap_or(0) as u64;
        }
    });
    total
}

/// The `_dq_flags` column of the rows kept by `valid`: the names of the `flag` rules each row
/// failed (an empty list when none).
fn dq_flags(
    compiled: &CompiledJob,
    flag_values: &[BooleanBuffer],
    valid: &BooleanArray,
) -> ArrayRef {
    let flag_rules: Vec<(usize, &str)> = compiled
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.action == RuleAction::Flag)
        .map(|(i, r)| (i, r.name.as_str()))
        .collect();
    let mut list = ListBuilder::new(StringBuilder::new())
        .with_field(Arc::new(Field::new_list_field(DataType::Utf8, false)));
    for row in valid.values().set_indices() {
        for (i, name) in &flag_rules {
            if flag_values[*i].value(row) {
                list.values().append_value(name);
            }
        }
        list.append(true);
    }
    Arc::new(list.finish())
}

/// What each row of a plan batch meets, by the rules' actions.
pub(crate) struct Classified {
    /// Per rule (in `CompiledJob::rules` order): rows failing it. A malformed record fails
    /// only its `malformed.*` rule.
    pub flag_values: Vec<BooleanBuffer>,
    /// Rows failing a `flag` rule.
    pub to_flag: BooleanBuffer,
    /// Rows failing a `drop` rule.
    pub to_drop: BooleanBuffer,
    /// Rows failing a `fail` rule.
    pub to_fail: BooleanBuffer,
    /// Rows going to the quarantine (a `quarantine` or `fail` rule failed).
    pub any: BooleanBuffer,
    /// Rows not loaded (quarantined or dropped).
    pub removed: BooleanBuffer,
}

/// Classifies the rows of one batch of `compiled`'s plan output. Precedence: a row failing
/// a `quarantine` or `fail` rule is quarantined; else one failing a `drop` rule is dropped;
/// else it is loaded, with the names of the `flag` rules it failed.
pub(crate) fn classify(compiled: &CompiledJob, batch: &RecordBatch) -> Classified {
    let layout = &compiled.layout;
    let n = batch.num_rows();
    let mut flag_values: Vec<BooleanBuffer> = Vec::with_capacity(layout.flags.len());
    for idx in &layout.flags {
        let flag = batch.column(*idx).as_boolean();
        flag_values.push(match flag.nulls() {
            Some(nulls) => flag.values() & nulls.inner(),
            None => flag.values().clone(),
        });
    }
    // A malformed record has no values: its only failure is being malformed.
    if let Some((m, _)) = layout.malformed {
        let well_formed = !&flag_values[m];
        for (i, v) in flag_values.iter_mut().enumerate() {
            if i != m {
                *v = &*v & &well_formed;
            }
        }
    }
    let none = BooleanBuffer::new_unset(n);
    let (mut to_quarantine, mut to_drop, mut to_flag, mut to_fail) =
        (none.clone(), none.clone(), none.clone(), none);
    for (values, r) in flag_values.iter().zip(&compiled.rules) {
        if values.count_set_bits() == 0 {
            continue;
        }
        let acc = match r.action {
            RuleAction::Quarantine => &mut to_quarantine,
            RuleAction::Drop => &mut to_drop,
            RuleAction::Flag => &mut to_flag,
            RuleAction::Fail => &mut to_fail,
        };
        *acc = &*acc | values;
    }
    let any = &to_quarantine | &to_fail;
    let removed = &any | &to_drop;
    Classified {
        flag_values,
        to_flag,
        to_drop,
        to_fail,
        any,
        removed,
    }
}
