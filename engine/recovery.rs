//! Before a run: the job lock, then reconciliation of the state store with the published
//! target. This is the second half of the commit protocol described in [`crate::commit`]: a run
//! that was published but not recorded (the process stopped in between) is recorded from the
//! target's commit record before anything reads a watermark.

use std::path::PathBuf;

use crate::commit::{read_record, CommitRecord};
use crate::config::interpolate::Redactor;
use crate::config::spec::{DbTargetSpec, DeltaTargetSpec, TargetSpec};
use crate::config::{Job, Project};
use crate::error::{Error, Result};
use crate::fsutil::Lock;

/// A held job lock: the lock file in the state folder and, with a PostgreSQL state store
/// shared by several daemons, a session advisory lock in that database (released when its
/// connection closes, also when the process is killed).
pub struct JobLock {
    job: String,
    _file: Lock,
    shared: Option<SharedLock>,
}

/// The connection holding a job's lock in a shared store, reachable by the run (to confirm
/// the lock before its commit, [`confirm_lock`]).
type SharedLock = std::sync::Arc<std::sync::Mutex<crate::state::StateStore>>;

/// The shared-store locks this process holds, by job.
fn held() -> &'static std::sync::Mutex<std::collections::HashMap<String, SharedLock>> {
    static HELD: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, SharedLock>>,
    > = std::sync::OnceLock::new();
    HELD.get_or_init(Default::default)
}

impl Drop for JobLock {
    fn drop(&mut self) {
        // The database lock first, and at once (not when its connection thread ends), so a
        // run that takes the file lock next finds it free too.
        if let Some(store) = self.shared.take() {
            if let Ok(mut held) = held().lock() {
                held.remove(&self.job);
            }
            if let Ok(store) = store.lock() {
                let _ = store.unlock_job(&self.job);
            }
        }
    }
}

/// Before a commit: with a shared (PostgreSQL) store, checks that this process still holds
/// `job`'s lock there. A connection that dropped (a server restart, a cut network) loses its
/// advisory lock, and another daemon could then be running the job: the commit must not
/// happen. A no-op for the SQLite store, whose lock is a file.
///
/// # Errors
/// [`Error::State`] when the lock is lost or cannot be checked.
pub fn confirm_lock(project: &Project, job: &Job) -> Result<()> {
    if project.settings.state_url.is_none() {
        return Ok(());
    }
    let store = held().lock().ok().and_then(|h| h.get(&job.name).cloned());
    let Some(store) = store else {
        return Ok(());
    };
    let store = store
        .lock()
        .map_err(|_| Error::Internal("the job lock's store was poisoned".into()))?;
    let why = match store.holds_job_lock(&job.name) {
        Ok(true) => return Ok(()),
        Ok(false) => "its connection dropped".to_string(),
        Err(e) => e.to_string(),
    };
    Err(Error::state(
        store.path(),
        format!(
            "the lock of job `{}` in the shared state store was lost ({why}), so another daemon may be running it; nothing was committed",
            job.name
        ),
    ))
}

/// Takes `job`'s lock: one run (or replay, or backfill) of a job at a time, so the watermark a
/// run reads is the one it moves, also across daemons sharing a PostgreSQL state store. Held
/// until the returned lock is dropped. Call [`reconcile`] next, before anything reads the
/// state store.
///
/// # Errors
/// [`Error::State`] when another run holds the lock or the lock file cannot be created, or
/// the shared store cannot be reached.
pub fn lock_job(project: &Project, job: &Job) -> Result<JobLock> {
    let file = lock_job_at(project, job)?;
    let shared = match &project.settings.state_url {
        None => None,
        Some(_) => {
            let store = crate::state::StateStore::of(project)?;
            if !store.try_lock_job(&job.name)? {
                return Err(Error::state(
                    store.path(),
                    format!(
                        "{HELD_BY_ANOTHER_RUN} `{}` is in progress on another machine sharing the state store; wait for it to finish",
                        job.name
                    ),
                ));
            }
            let store: SharedLock = std::sync::Arc::new(std::sync::Mutex::new(store));
            if let Ok(mut h) = held().lock() {
                h.insert(job.name.clone(), store.clone());
            }
            Some(store)
        }
    };
    Ok(JobLock {
        job: job.name.clone(),
        _file: file,
        shared,
    })
}

/// The start of the message [`lock_job`] fails with when another run holds the lock.
const HELD_BY_ANOTHER_RUN: &str = "another run of job";

/// Whether `e` is [`lock_job`]'s "another run is in progress" (not a failure of the job).
pub fn is_held_by_another_run(e: &Error) -> bool {
    matches!(e, Error::State { message, .. } if message.starts_with(HELD_BY_ANOTHER_RUN))
}

fn lock_job_at(project: &Project, job: &Job) -> Result<Lock> {
    let lock_path = project
        .path(&project.settings.state_dir)
        .join("locks")
        .join(format!("job-{}.lock", job.name));
    Lock::try_acquire(&lock_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Error::state(
                &lock_path,
                format!(
                    "{HELD_BY_ANOTHER_RUN} `{}` is in progress (runs of one job never overlap, so each reads the watermark the previous one left); wait for it to finish",
                    job.name
                ),
            )
        } else {
            Error::state(&lock_path, format!("cannot take the job lock: {e}"))
        }
    })
}

/// Records in the state store the run whose commit record the published target holds (the
/// Parquet folder's `_sluice_commit.json`, or the database target's `sluice_runs` row), when
/// the store does not have it as committed: the process stopped between the publish and the
/// state write. Returns that run's id. Call with the job lock held.
///
/// # Errors
/// [`Error::Connection`] when a database target cannot be reached; [`Error::State`] when the
/// record cannot be read or the store cannot be written (the run must not start then: it
/// would read a stale watermark).
pub async fn reconcile(project: &Project, job: &Job) -> Result<Option<String>> {
    let record = match &job.target {
        TargetSpec::Database(t) => database_record(project, job, t).await?,
        TargetSpec::Delta(t) => delta_record(project, job, t).await?,
        TargetSpec::Parquet(_) => match object_target(project, job) {
            Some(target) => target.last_record().await?,
            None => match target_folder(project, job) {
                Some((dir, shown)) => read_record(&dir, &shown)?,
                None => None,
            },
        },
    };
    let Some(record) = record else {
        return Ok(None);
    };
    if record.job != job.name || !record.committed() {
        return Ok(None);
    }
    let mut store = crate::state::StateStore::of(project)?;
    let known = store.run_status(&job.name, &record.run_id)?;
    if known.as_deref() == Some(record.status.as_str()) {
        return Ok(None);
    }
    store.record_commit(&record)?;
    if let Some(definition) = &record.model_definition {
        store.register_model(&record.model, &record.model_version, definition)?;
    }
    crate::logging::stderr_line(&format!(
        "note: run {} of job `{}` was committed, but the process stopped before recording it; recorded now from the target's commit record ({} rows loaded{})",
        record.run_id,
        job.name,
        record.rows_written,
        match (record.watermarks.is_empty(), record.new_files.is_empty()) {
            (true, true) => "",
            (false, true) => ", watermarks moved",
            (true, false) => ", its new files recorded as read",
            (false, false) => ", watermarks moved, its new files recorded as read",
        }
    ));
    Ok(Some(record.run_id))
}

/// The commit record of `job`'s newest commit in its Delta table's log (`commitInfo`).
async fn delta_record(
    project: &Project,
    job: &Job,
    t: &DeltaTargetSpec,
) -> Result<Option<CommitRecord>> {
    // A target that does not resolve is the planner's to report, with its line.
    let ctx = crate::plan::session(project);
    let redactor = Redactor::default();
    match crate::sink::delta::DeltaTarget::of(project, job, t, Vec::new(), &ctx, &redactor) {
        Ok(t) => t.last_record(&job.name).await,
        Err(_) => Ok(None),
    }
}

/// The Parquet folder on an object store that `job` appends to, if its `path` is a URL (one
/// that does not resolve is the planner's to report, with its line).
fn object_target(
    project: &Project,
    job: &Job,
) -> Option<crate::sink::object_parquet::ObjectParquetTarget> {
    let append = job.target.mode() == crate::config::spec::LoadMode::Append;
    let path = job
        .target
        .path()
        .filter(|_| job.target.table().is_none() && append)?;
    let resolved = Redactor::default()
        .resolve_path(path.get_ref(), &project.root)
        .ok()
        .filter(|r| crate::store::is_url(r))?;
    let ctx = crate::plan::session(project);
    crate::sink::object_parquet::ObjectParquetTarget::of(&job.name, &resolved, Vec::new(), &ctx)
        .ok()
}

/// The commit record in `sluice_runs` beside a database target.
async fn database_record(
    project: &Project,
    job: &Job,
    t: &DbTargetSpec,
) -> Result<Option<CommitRecord>> {
    let (conn, table) = (&t.connection, &t.table);
    // A bad table name or connection is the planner's to report, with its line.
    let Ok(table) = crate::db::TableName::parse(table.get_ref()) else {
        return Ok(None);
    };
    let Ok(connector) =
        crate::db::Connector::resolve(project, conn.get_ref(), &Redactor::default())
    else {
        return Ok(None);
    };
    crate::db::runs::read(&connector, &table, &job.name).await
}

/// The folder of `job`'s Parquet target and how Sluice shows it (relative to the project) (`None` for a
/// database target, or a path whose `${...}` cannot be resolved: the planner reports that).
pub fn target_folder(project: &Project, job: &Job) -> Option<(PathBuf, String)> {
    if job.target.is_database() {
        return None;
    }
    let rel = match (job.target.table(), job.target.path()) {
        (Some(t), _) => project.settings.warehouse.join(t.get_ref()),
        (None, Some(p)) => PathBuf::from(
            Redactor::default()
                .resolve_path(p.get_ref(), &project.root)
                .ok()?,
        ),
        (None, None) => return None,
    };
    let dir = project.path(rel);
    let shown = project.shown(&dir);
    Some((dir, shown))
}
