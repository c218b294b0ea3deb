//! The commit protocol: a run's facts are recorded **with** its target commit, so that after a
//! crash at any instant the next run can tell whether the commit happened (decision 0006).
//!
//! ```text
//! run N: stage files ─▶ write _sluice_commit.json into staging ─▶ fsync ─▶ swap (publish)
//!                                                                            │
//!        state store: runs + watermarks + replay marker ◀── record ─────────┘  (may be lost)
//!
//! run N+1 (job lock held, before planning): read the published _sluice_commit.json (or the
//!        database target's sluice_runs row, written in the load's transaction, see
//!        crate::db::runs); if the state store lacks that run, record it now ─▶ then read
//!        watermarks, plan, run
//! ```
//!
//! The published folder and its commit record change in the same `rename`, so the record
//! describes exactly the version readers see. Whatever the state store says after a crash,
//! the record wins: a watermark, a replay marker or a run the store missed is put back before
//! anything reads them, so no crash point can make an incremental extraction or a replay load
//! a row twice.
//!
//! Only the latest commit's record is kept: every run reconciles before it plans, so when run
//! N+1 commits, run N is already in the state store.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::report::{NewFilesReport, RunReport, RunStatus};

/// File name of the commit record inside a published Parquet folder. The leading `_` keeps it
/// out of readers' listings (DataFusion, Spark and DuckDB's `*.parquet` globs skip it).
pub const COMMIT_FILE: &str = "_sluice_commit.json";

/// Environment variable naming a crash point: the process kills itself (`SIGKILL`) when it
/// reaches that point. For the crash tests (`tests/crash_safety.rs`); see [`crash_point`].
pub const CRASH_ENV: &str = "SLUICE_CRASH_AT";

/// The named points of the protocol where the crash tests kill the process.
pub const CRASH_POINTS: &[&str] = &[
    // Staging and its commit record are complete and durable; nothing is published.
    "before_publish",
    // An object-store Parquet append has uploaded its first file, not its commit record.
    "mid_publish",
    // The new version is published; the state store has not recorded the run.
    "after_publish",
    // The state store has recorded the run; the run report is not written.
    "after_state",
    // A Delta quarantine: the run's rejected rows are staged, not committed.
    "quarantine_before_commit",
    // A Delta quarantine: the run's rejected rows are committed; the target is not.
    "quarantine_after_commit",
];

/// Environment variable naming a point where the process waits, `POINT:MILLISECONDS`
/// (`before_commit:3000`), so that a test can act while a run stands there (cut its
/// connections, say). For the fault tests; see [`pause_point`].
pub const PAUSE_ENV: &str = "SLUICE_PAUSE_AT";

/// Waits as [`PAUSE_ENV`] says when it names `point`; a no-op otherwise.
pub async fn pause_point(point: &str) {
    let Ok(spec) = std::env::var(PAUSE_ENV) else {
        return;
    };
    if let Some(ms) = spec
        .strip_prefix(point)
        .and_then(|rest| rest.strip_prefix(':'))
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        eprintln!("{PAUSE_ENV}={spec}: waiting");
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// Kills the process with `SIGKILL` when [`CRASH_ENV`] names `point`: the same effect as a
/// `kill -9` or a power cut at that instant (no destructor, no flush). A no-op otherwise.
pub fn crash_point(point: &str) {
    if std::env::var(CRASH_ENV).is_ok_and(|p| p == point) {
        eprintln!("{CRASH_ENV}={point}: killing the process");
        // SAFETY: kill(2) with our own pid has no memory effects.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// What a committed run consumed and produced, as the state store records it. Written as JSON
/// into the target's staging folder before the publish.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommitRecord {
    /// Run id.
    pub run_id: String,
    /// Job name.
    pub job: String,
    /// `succeeded` or `succeeded_with_warnings`.
    pub status: String,
    /// Start, RFC 3339 UTC.
    pub started_at: String,
    /// When the commit was prepared, RFC 3339 UTC.
    pub finished_at: String,
    /// Rows of the driving source read.
    pub rows_read: u64,
    /// Rows loaded by this run.
    pub rows_written: u64,
    /// Rows quarantined by this run.
    pub rows_quarantined: u64,
    /// Rows dropped by `drop` rules.
    pub rows_dropped: u64,
    /// Model name.
    pub model: String,
    /// Model version loaded.
    pub model_version: String,
    /// The run whose quarantine this run replayed, if it is a replay.
    pub replay_of: Option<String>,
    /// Watermarks this run moves: (source, cursor column, value as text).
    pub watermarks: Vec<(String, String, String)>,
    /// The model file's text as loaded, so a recovered run registers the version it loaded
    /// (see [`crate::contract::check_registered`]).
    #[serde(default)]
    pub model_definition: Option<String>,
    /// The run's logical date, RFC 3339 UTC (records written before logical dates: none).
    #[serde(default)]
    pub logical_date: Option<String>,
    /// The vars given for the run.
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
    /// The files incremental file sources read, recorded as read with this commit (records
    /// written before incremental file sources: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub new_files: Vec<NewFilesReport>,
}

impl CommitRecord {
    /// The record of `report`, as it will be once committed.
    pub fn of(report: &RunReport, replay_of: Option<&str>) -> CommitRecord {
        CommitRecord {
            run_id: report.run_id.clone(),
            job: report.job.clone(),
            status: report.status.name(),
            started_at: report.started_at.clone(),
            finished_at: report.finished_at.clone(),
            rows_read: report.rows.read,
            rows_written: report.rows.written,
            rows_quarantined: report.rows.quarantined,
            rows_dropped: report.rows.dropped,
            model: report.model.clone(),
            model_version: report.model_version.clone(),
            replay_of: replay_of.map(str::to_owned),
            watermarks: report
                .watermarks
                .iter()
                .filter(|w| w.moved)
                .filter_map(|w| {
                    w.value
                        .as_ref()
                        .map(|v| (w.source.clone(), w.column.clone(), v.clone()))
                })
                .collect(),
            model_definition: None,
            logical_date: report.logical_date.clone(),
            vars: report.vars.clone(),
            new_files: report
                .new_files
                .iter()
                .filter(|f| f.recorded)
                .cloned()
                .collect(),
        }
    }

    /// The record with the model file's text.
    pub fn with_model_definition(mut self, text: Option<String>) -> CommitRecord {
        self.model_definition = text;
        self
    }

    /// Whether the run committed (always true for a record read from a published target).
    pub fn committed(&self) -> bool {
        [RunStatus::Succeeded, RunStatus::SucceededWithWarnings]
            .iter()
            .any(|s| self.status == s.name())
    }
}

/// The commit record of the version published in `dir`, if any. `shown` names the folder in
/// errors (as the job writes it: a resolved `${env:...}` may be a secret).
///
/// # Errors
/// [`Error::State`] when the file exists but cannot be read or parsed.
pub fn read_record(dir: &Path, shown: &str) -> Result<Option<CommitRecord>> {
    let path = dir.join(COMMIT_FILE);
    let shown = Path::new(shown).join(COMMIT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        // No published version yet (or a path the run will report as it writes).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(Error::state(&shown, format!("cannot read: {e}"))),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::state(&shown, format!("not a Sluice commit record: {e}")))
}

/// Writes `record` into the staging folder `dir` and makes it durable.
///
/// # Errors
/// [`Error::Target`] on an I/O error.
pub fn write_record(dir: &Path, record: &CommitRecord) -> Result<()> {
    let path = dir.join(COMMIT_FILE);
    let json = serde_json::to_vec_pretty(record).map_err(|e| Error::Internal(e.to_string()))?;
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&json)?;
        f.sync_all()?;
        crate::fsutil::sync_dir(dir)
    };
    write().map_err(|e| Error::target(&path, format!("cannot write the commit record: {e}")))
}
