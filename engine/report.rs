//! The run report: what a run read, wrote, quarantined and checked, and how it ended. One JSON
//! file per run under `<state_dir>/runs/<job>/<run_id>.json`, the output of `sluice run --json`,
//! and what the commit record and the state store are made from.
//!
//! Plain data: this module imports no stage of the run, so the executor ([`crate::run`]), the
//! commit protocol ([`crate::commit`]), the targets and the state store can all use it.

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::config::spec::RuleAction;
use crate::config::Project;
use crate::error::{Error, Result};
use crate::quality::{CheckResult, CheckStatus, RuleKind};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Committed; every check passed.
    Succeeded,
    /// Committed; at least one check warned.
    SucceededWithWarnings,
    /// A dataset check failed: quarantine and report written, target not committed (exit 3).
    CheckFailed,
    /// An error stopped the run; target not committed (exit 1).
    Failed,
}

impl RunStatus {
    /// The name a status has in reports, commit records and the state store
    /// (`succeeded_with_warnings`).
    pub fn name(self) -> String {
        crate::config::spec::json_name(&self)
    }

    /// Whether the run committed its target.
    pub fn committed(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::SucceededWithWarnings
        )
    }
}

/// Row counts of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RowCounts {
    /// Rows of the driving source read.
    pub read: u64,
    /// Rows the plan produced (equals `read` unless a join matched a row more than once).
    pub produced: u64,
    /// Valid rows staged for (and, if committed, loaded into) the target.
    pub written: u64,
    /// Rows sent to the quarantine.
    pub quarantined: u64,
    /// Rows left out by `drop` rules (and no quarantine rule).
    pub dropped: u64,
    /// Rows loaded with at least one `flag` rule in `_dq_flags`.
    pub flagged: u64,
}

/// One row rule's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    /// Rule name.
    pub rule: String,
    /// Family.
    pub kind: RuleKind,
    /// What a failing row meets.
    pub action: RuleAction,
    /// `pass` when no row failed; `fail` when rows failed a rule whose action is `fail`;
    /// `warn` otherwise.
    pub status: CheckStatus,
    /// Rows that failed it (a row failing several rules counts in each).
    pub failed_rows: u64,
    /// Up to three reasons, as written to the quarantine.
    pub samples: Vec<String>,
}

/// An output of the run.
#[derive(Debug, Clone, Serialize)]
pub struct OutputReport {
    /// `target` or `quarantine`.
    pub kind: String,
    /// Folder or file, relative to the project root, or an object-store URL.
    pub path: String,
    /// Rows this run put there.
    pub rows: u64,
    /// Files this run wrote; for a quarantine, 1 when it published the run's rows (one file,
    /// or one commit of a Delta quarantine) and 0 when none was rejected.
    pub files: u64,
    /// Whether it was published.
    pub committed: bool,
}

/// Wall time per stage, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTimes {
    /// Loading config, inferring schemas, planning.
    pub compile_ms: u64,
    /// Reading, mapping, checking rows, writing staging.
    pub execute_ms: u64,
    /// Dataset checks and publishing.
    pub commit_ms: u64,
}

/// The run report: one JSON file per run under `<state_dir>/runs/<job>/<run_id>.json`, and
/// the output of `sluice run --json`. Fields are stable; new ones may be added.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Unique id, sortable by start time: `YYYYMMDDTHHMMSSZ-xxxxxx`.
    pub run_id: String,
    /// Job name.
    pub job: String,
    /// Mapping name.
    pub mapping: String,
    /// Model name.
    pub model: String,
    /// Model version.
    pub model_version: String,
    /// Outcome.
    pub status: RunStatus,
    /// The instant the run stands for (a scheduled run's fire time, a manual run's start or
    /// `--date`), RFC 3339 UTC; `None` for a run recorded before logical dates existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logical_date: Option<String>,
    /// The vars given for this run (`--var`, the API), by name.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub vars: std::collections::BTreeMap<String, String>,
    /// What started the run (`manual`, `schedule`, `api`, `after`, `backfill`, `replay`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// SHA-256 (hex) of the job, mapping and model files as the run loaded them: runs with
    /// the same hash ran the same definition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Start, RFC 3339 UTC.
    pub started_at: String,
    /// End, RFC 3339 UTC.
    pub finished_at: String,
    /// End minus start, milliseconds.
    pub duration_ms: u64,
    /// Row counts.
    pub rows: RowCounts,
    /// Rules with their failure counts, in plan order.
    pub rules: Vec<RuleReport>,
    /// Dataset checks.
    pub checks: Vec<CheckResult>,
    /// Time per stage.
    pub stages: StageTimes,
    /// Outputs.
    pub outputs: Vec<OutputReport>,
    /// The error that stopped the run, if any: class and message.
    pub error: Option<ErrorReport>,
    /// Incremental sources: the range read and the watermark after the run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub watermarks: Vec<WatermarkReport>,
    /// Incremental file sources (`incremental = { files = "new" }`): the files read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub new_files: Vec<NewFilesReport>,
    /// Database targets: rows inserted, updated and deleted by the commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadStats>,
    /// What the run spilled to disk on reaching its `memory_limit`; absent when nothing was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spill: Option<SpillReport>,
}

/// What a run's joins, sorts, aggregations and windows wrote to disk to stay within its
/// memory limit: DataFusion's `spill_count` and `spilled_bytes` metrics summed over the plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SpillReport {
    /// Spill files written.
    pub files: u64,
    /// Bytes written to them (Arrow IPC, uncompressed).
    pub bytes: u64,
}

/// How a run was asked for, as its report records it.
#[derive(Debug, Clone, Default)]
pub struct RunFacts {
    /// The logical date, RFC 3339 UTC.
    pub logical_date: Option<String>,
    /// The vars given.
    pub vars: std::collections::BTreeMap<String, String>,
    /// What started it.
    pub trigger: Option<String>,
}

/// The watermark of one incremental source in a run report.
#[derive(Debug, Clone, Serialize)]
pub struct WatermarkReport {
    /// Source name in the job.
    pub source: String,
    /// Cursor column.
    pub column: String,
    /// Why this range was read (`watermark ... minus lookback 2h`, `backfill ...`).
    pub range: String,
    /// Watermark before the run.
    pub previous: Option<String>,
    /// Watermark after the run (the largest cursor value committed so far).
    pub value: Option<String>,
    /// True when the run moves the watermark (committed, not a backfill, a larger value).
    pub moved: bool,
}

/// An incremental file source (`incremental = { files = "new" }`) in a run report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewFilesReport {
    /// Source name in the job.
    pub source: String,
    /// Files the source's `path` matches that committed runs had read, skipped by this run
    /// (0 with `--full-refresh`, which reads them all).
    pub skipped: u64,
    /// Files this run read, by path relative to the project (local) or URL, sorted.
    pub read: Vec<String>,
    /// True with `--full-refresh`: the files read replace the job's record of files read.
    pub replace: bool,
    /// True when the run committed, so `read` is now recorded as read.
    pub recorded: bool,
}

/// An error in a report.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport {
    /// Class (`source`, `target`, `engine`, ...).
    pub class: String,
    /// Message, secrets redacted.
    pub message: String,
    /// True when a retry may succeed (a dropped connection, say); `[retry]` retries these.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub transient: bool,
}

impl ErrorReport {
    /// The report of `e`, secrets redacted.
    pub fn new(e: &Error, redactor: &crate::config::interpolate::Redactor) -> ErrorReport {
        ErrorReport {
            class: e.class().into(),
            message: redactor.redact(&e.to_string()),
            transient: e.is_transient(),
        }
    }
}

impl RunReport {
    /// The `logical_date`, `vars` and `trigger` fields of a report of a run of `job`.
    pub fn params_of(job: &crate::config::Job) -> RunFacts {
        match &job.run {
            Some(p) => RunFacts {
                logical_date: Some(
                    p.logical_date
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ),
                vars: p.vars.clone(),
                trigger: Some(p.trigger.to_string()),
            },
            None => RunFacts::default(),
        }
    }

    /// The hex SHA-256 of the texts of `job`'s file, its mapping's and its model's (in that
    /// order, each followed by a NUL byte): the definition the run loaded.
    pub fn config_hash(project: &crate::config::Project, job: &crate::config::Job) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(job.src.text.as_bytes());
        h.update([0]);
        if let Some(m) = project.mappings.get(&job.mapping) {
            h.update(m.src.text.as_bytes());
            h.update([0]);
            if let Some(model) = project.models.get(&m.model.name) {
                h.update(std::fs::read(project.path(&model.file)).unwrap_or_default());
                h.update([0]);
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Sets the end time and the duration from `started`.
    pub(crate) fn finish_at(&mut self, started: DateTime<Utc>, finished: DateTime<Utc>) {
        self.finished_at = finished.to_rfc3339_opts(SecondsFormat::Millis, true);
        self.duration_ms = u64::try_from((finished - started).num_milliseconds()).unwrap_or(0);
    }

    /// Exit code for `sluice run`: 0, 1 or 3 (see [`crate::error`]).
    pub fn exit_code(&self) -> i32 {
        match self.status {
            RunStatus::Succeeded | RunStatus::SucceededWithWarnings => crate::error::EXIT_OK,
            RunStatus::CheckFailed => crate::error::EXIT_CHECK_FAILED,
            RunStatus::Failed => crate::error::EXIT_RUN_FAILED,
        }
    }
}

/// A new run id: UTC start time plus 6 random hex digits.
pub fn new_run_id(started: DateTime<Utc>) -> String {
    let rand = uuid::Uuid::now_v7().simple().to_string();
    format!(
        "{}-{}",
        started.format("%Y%m%dT%H%M%SZ"),
        &rand[rand.len() - 6..]
    )
}

/// Rows a commit changed.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LoadStats {
    /// Rows inserted (new keys, or new versions for `scd2`).
    pub inserted: u64,
    /// Rows updated in place (`merge`) or versions closed (`scd2`).
    pub updated: u64,
    /// Rows deleted (`merge` with `delete_missing`; `overwrite`: the rows replaced).
    pub deleted: u64,
}

/// Path of a run's report.
pub fn report_path(project: &Project, job: &str, run_id: &str) -> PathBuf {
    report_path_in(&project.path(&project.settings.state_dir), job, run_id)
}

/// Path of a run's report under the state folder `state_dir`:
/// `<state_dir>/runs/<job>/<run_id>.json`.
pub fn report_path_in(state_dir: &std::path::Path, job: &str, run_id: &str) -> PathBuf {
    state_dir
        .join("runs")
        .join(job)
        .join(format!("{run_id}.json"))
}

pub(crate) fn save_report(project: &Project, report: &RunReport) -> Result<()> {
    let path = report_path(project, &report.job, &report.run_id);
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(|e| Error::state(&dir, format!("cannot create: {e}")))?;
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(report).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(&tmp, json).map_err(|e| Error::state(&tmp, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, &path)
        .map_err(|e| Error::state(&path, format!("cannot publish: {e}")))?;
    Ok(())
}
