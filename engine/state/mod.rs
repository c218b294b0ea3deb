//! The state store: an embedded SQLite database (`<state_dir>/state.db`), or a PostgreSQL
//! database (`[state] url`) that several daemons share, holding the run history and the
//! quality history of every job, watermarks, which runs have been replayed, the daemon's fires,
//! circuits and API triggers, the alert outbox and date backfills. Both live behind
//! [`sql::Backend`] (docs/decisions/0009-state-store-on-postgresql.md).
//!
//! The contract, whichever database holds it:
//! - a run is recorded with its quality results, moved watermarks and the alerts it raises in
//!   one transaction ([`StateStore::record_run`]);
//! - a fire is claimed by one atomic statement, once, by one daemon
//!   ([`StateStore::claim_fire`]), and a job lock taken there excludes every other holder
//!   ([`StateStore::try_lock_job`]);
//! - schema changes are numbered migrations applied once, under a lock, by whoever opens the
//!   store first; a store newer than this Sluice is refused.
//!
//! Tables (analysts may query them with any SQLite client; columns are only ever added, by
//! numbered migrations, [`MIGRATIONS`]):
//!
//! | table     | one row per                       | columns |
//! |-----------|-----------------------------------|---------|
//! | `runs`    | run                               | `run_id`, `job`, `status`, `started_at`, `finished_at` (RFC 3339 UTC), `rows_read`, `rows_written`, `rows_quarantined`, `rows_dropped`, `model`, `model_version`, `replay_of` (the run a replay reprocessed), `sluice_version`, `error`, `logical_date` (RFC 3339 UTC), `vars` (JSON object, or NULL for none), `trigger` (`manual`, `schedule`, `api`, `after`, `backfill`, `replay`), `config_hash` (hex SHA-256 of the job, mapping and model files) |
//! | `backfills` | date backfill (`sluice backfill` of a job without an incremental source) | `job`, `vars` (the vars given, as JSON), `from_date`, `to_date` (`YYYY-MM-DD`, the range asked for), `done_through` (the last date committed), `updated_at` |
//! | `models`  | model version loaded at least once | `name`, `version`, `definition` (the model file's TOML), `registered_at` |
//! | `source_files` | job × incremental file source × file read | `job`, `source`, `file` (path relative to the project, or URL), `run_id` (the committed run that read it), `read_at` (that run's end, RFC 3339 UTC) |
//! | `watermarks` | job × incremental source      | `job`, `source`, `cursor_column`, `value` (as [`crate::db::extract::CursorValue::to_text`] writes it), `run_id` (the run that moved it), `updated_at` |
//! | `schedule_fires` | scheduled job              | `job`, `fire_at` (RFC 3339 UTC: the latest fire the daemon took), `status` (`running`, `done`, `skipped`, `abandoned`, `failed`: not run, or stopped outside its run report), `run_id` (its run, once finished), `updated_at` |
//! | `circuits` | scheduled job that failed      | `job`, `failures` (consecutive failed fires), `opened_at` (set while the job is paused), `last_error`, `updated_at` |
//! | `triggers` | run asked for through the API  | `trigger_id`, `job`, `requested_at`, `requested_by` (token name), `status` (`queued`, `running`, `done`, `failed`, `abandoned`), `run_id`, `updated_at` |
//! | `alert_outbox` | alert to deliver           | `alert_id`, `event`, `job`, `run_id`, `created_at`, `payload` (the JSON body), `attempts`, `next_attempt_at`, `delivered_at`, `last_error` |
//! | `quality` | run × row rule or dataset check   | `run_id`, `job`, `started_at`, `kind` (`rule`/`check`), `name`, `rows_checked`, `rows_failed`, `measured`, `threshold`, `status` (`pass`/`warn`/`fail`), `action` |
//!
//! A run is recorded after its target commit (or after it failed), in one transaction, so the
//! history never shows a load that did not happen. The database runs in WAL mode with a busy
//! timeout, so concurrent runs of different jobs can record at the same time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::report::{RunReport, RunStatus};

mod backfill;
mod daemon;
mod outbox;
mod retention;
mod sql;

use sql::{vals, Db, Value};

pub use daemon::{Circuit, TriggerRecord};
pub use outbox::{Alert, PendingAlert};
pub use retention::VOLUME_BASELINE_RUNS;

/// Version 1 of the schema: the tables as they were when versions began. `IF NOT EXISTS`, so a
/// store created before then (version 0, with some of them) gets the rest.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id           TEXT PRIMARY KEY,
    job              TEXT NOT NULL,
    status           TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    finished_at      TEXT NOT NULL,
    rows_read        INTEGER NOT NULL,
    rows_written     INTEGER NOT NULL,
    rows_quarantined INTEGER NOT NULL,
    rows_dropped     INTEGER NOT NULL,
    model            TEXT NOT NULL,
    model_version    TEXT NOT NULL,
    replay_of        TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, started_at);
CREATE TABLE IF NOT EXISTS quality (
    run_id       TEXT NOT NULL,
    job          TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    rows_checked INTEGER,
    rows_failed  INTEGER,
    measured     REAL,
    threshold    REAL,
    status       TEXT NOT NULL,
    action       TEXT,
    PRIMARY KEY (run_id, kind, name)
);
CREATE INDEX IF NOT EXISTS quality_by_job ON quality (job, name, started_at);
CREATE TABLE IF NOT EXISTS watermarks (
    job           TEXT NOT NULL,
    source        TEXT NOT NULL,
    cursor_column TEXT NOT NULL,
    value         TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (job, source)
);
CREATE TABLE IF NOT EXISTS schedule_fires (
    job        TEXT PRIMARY KEY,
    fire_at    TEXT NOT NULL,
    status     TEXT NOT NULL,
    run_id     TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS circuits (
    job        TEXT PRIMARY KEY,
    failures   INTEGER NOT NULL,
    opened_at  TEXT,
    last_error TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS triggers (
    trigger_id   TEXT PRIMARY KEY,
    job          TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    status       TEXT NOT NULL,
    run_id       TEXT,
    updated_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_outbox (
    alert_id        TEXT PRIMARY KEY,
    event           TEXT NOT NULL,
    job             TEXT NOT NULL,
    run_id          TEXT,
    created_at      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at TEXT NOT NULL,
    delivered_at    TEXT,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS alerts_due ON alert_outbox (delivered_at, next_attempt_at);
CREATE TABLE IF NOT EXISTS models (
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    definition    TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
";

/// The schema as numbered migrations, applied in order at [`StateStore::open`]; SQLite's
/// `PRAGMA user_version` holds how many a store has. A migration only adds (tables, columns,
/// indexes), so an older Sluice can still read what it knows of a newer store's rows — but
/// it refuses to open a store with more migrations than it has.
const MIGRATIONS: &[&str] = &[
    SCHEMA_V1,
    // 2: which Sluice recorded a run, and its error message.
    "ALTER TABLE runs ADD COLUMN sluice_version TEXT;
     ALTER TABLE runs ADD COLUMN error TEXT;",
    // 3: each run's logical date and vars; how far each date backfill got.
    "ALTER TABLE runs ADD COLUMN logical_date TEXT;
     ALTER TABLE runs ADD COLUMN vars TEXT;
     CREATE TABLE backfills (
         job          TEXT NOT NULL,
         vars         TEXT NOT NULL,
         from_date    TEXT NOT NULL,
         to_date      TEXT NOT NULL,
         done_through TEXT,
         updated_at   TEXT NOT NULL,
         PRIMARY KEY (job, vars, from_date, to_date)
     );",
    // 4: what started each run, and the hash of the definition it ran.
    "ALTER TABLE runs ADD COLUMN trigger TEXT;
     ALTER TABLE runs ADD COLUMN config_hash TEXT;",
    // 5: the files incremental file sources have read.
    "CREATE TABLE source_files (
         job     TEXT NOT NULL,
         source  TEXT NOT NULL,
         file    TEXT NOT NULL,
         run_id  TEXT NOT NULL,
         read_at TEXT NOT NULL,
         PRIMARY KEY (job, source, file)
     );",
];

/// Applies the migrations `db` lacks, each in a transaction that first takes the database's
/// write lock (so two processes opening one store at once apply each migration once): SQLite's
/// `PRAGMA user_version` counts them, PostgreSQL's `sluice_schema` table.
fn migrate(db: &Db) -> std::result::Result<(), String> {
    db.backend().prepare_versions()?;
    loop {
        let applied = db.transaction(|db| {
            let version = db.backend().version()?;
            let version = usize::try_from(version).unwrap_or(usize::MAX);
            if version > MIGRATIONS.len() {
                return Err(format!(
                    "the state store has schema version {version}, written by a newer Sluice; this one knows versions up to {}",
                    MIGRATIONS.len()
                ));
            }
            let Some(migration) = MIGRATIONS.get(version) else {
                return Ok(false);
            };
            db.backend().apply(migration, (version + 1) as i64)?;
            Ok(true)
        })?;
        if !applied {
            return Ok(());
        }
    }
}

/// An open state store.
pub struct StateStore {
    db: Db,
    /// How the store is named in messages: the SQLite file, or the URL as written.
    path: PathBuf,
}

/// One past run, as the volume check, `sluice quality`, `sluice runs` and `sluice status`
/// read it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct RunRecord {
    /// Run id.
    pub run_id: String,
    /// Job name.
    pub job: String,
    /// Status as stored (`succeeded`, `check_failed`, ...).
    pub status: String,
    /// Start, RFC 3339 UTC.
    pub started_at: String,
    /// End, RFC 3339 UTC.
    pub finished_at: String,
    /// Rows of the driving source read.
    pub rows_read: u64,
    /// Rows loaded.
    pub rows_written: u64,
    /// Rows quarantined.
    pub rows_quarantined: u64,
    /// The run whose quarantine this run replayed, if it is a replay.
    pub replay_of: Option<String>,
    /// The run's error message, when it failed (runs recorded before Sluice kept it: none).
    pub error: Option<String>,
    /// The run's logical date, RFC 3339 UTC (runs recorded before Sluice kept it: none).
    pub logical_date: Option<String>,
    /// The vars given for the run, by name.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub vars: std::collections::BTreeMap<String, String>,
    /// What started the run (`manual`, `schedule`, `api`, `after`, `backfill`, `replay`).
    pub trigger: Option<String>,
    /// Hex SHA-256 of the job, mapping and model files the run loaded.
    pub config_hash: Option<String>,
}

/// A stored watermark.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredWatermark {
    /// The cursor value, as text.
    pub value: String,
    /// The run that set it.
    pub run_id: String,
    /// The cursor column it is a value of.
    pub cursor_column: String,
}

/// The latest fire of a scheduled job the daemon took (see [`StateStore::claim_fire`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FireRecord {
    /// The fire instant (the run's logical date).
    pub fire_at: chrono::DateTime<chrono::Utc>,
    /// `running` (claimed, its run not finished), `done`, `skipped`, `abandoned` (the
    /// daemon stopped during its run) or `failed` (not run: the job's files were invalid, or
    /// the run stopped outside its report).
    pub status: String,
    /// The run of this fire, once it finished.
    pub run_id: Option<String>,
}

/// One quality measurement of a past run.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityRecord {
    /// Run id.
    pub run_id: String,
    /// `rule` or `check`.
    pub kind: String,
    /// Rule or check name.
    pub name: String,
    /// Rows failing (rules).
    pub rows_failed: Option<u64>,
    /// The measured value (rules: failed fraction; checks: the check's measure).
    pub measured: Option<f64>,
    /// `pass`, `warn` or `fail`.
    pub status: String,
}

impl StateStore {
    /// The store of a project: the PostgreSQL database of `[state] url` when set, else
    /// `<state_dir>/state.db`, created on first use.
    ///
    /// # Errors
    /// [`Error::State`] when the folder or database cannot be created, opened or reached.
    pub fn of(project: &crate::config::Project) -> Result<StateStore> {
        match &project.settings.state_url {
            Some(url) => StateStore::open_url(url, &project.root),
            None => StateStore::open(&project.path(&project.settings.state_dir)),
        }
    }

    /// The SQLite store in `state_dir`: `<state_dir>/state.db`, created on first use.
    ///
    /// # Errors
    /// [`Error::State`] when the folder or database cannot be created or opened.
    pub fn open(state_dir: &Path) -> Result<StateStore> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| Error::state(state_dir, format!("cannot create: {e}")))?;
        let path = state_dir.join("state.db");
        let err = |e: rusqlite::Error| Error::state(&path, e.to_string());
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        StateStore::migrated(Db::sqlite(conn), path)
    }

    /// The PostgreSQL store at `url_template` (`postgres://…`, secrets as `${env:NAME}` or
    /// `${file:PATH}`, resolved here and hidden from every message), its tables created or
    /// migrated on first use.
    ///
    /// # Errors
    /// [`Error::State`] when a reference cannot be resolved or the database cannot be
    /// reached or migrated; the message shows the URL as written.
    pub fn open_url(url_template: &str, root: &Path) -> Result<StateStore> {
        let label = PathBuf::from(url_template);
        let redactor = crate::config::interpolate::Redactor::process();
        let url = redactor
            .resolve(url_template, root)
            .map_err(|e| Error::state(&label, e))?;
        let db =
            sql::Postgres::connect(&url).map_err(|e| Error::state(&label, redactor.redact(&e)))?;
        StateStore::migrated(Db::postgres(db), label)
    }

    /// Takes the lock of `job` on this store's connection, without waiting: a PostgreSQL
    /// session advisory lock, held until this store is dropped (its connection closes, also
    /// when the process dies). Returns false when another connection holds it. Always true
    /// for SQLite, whose one daemon locks jobs with files.
    ///
    /// # Errors
    /// [`Error::State`] on a database error.
    pub fn try_lock_job(&self, job: &str) -> Result<bool> {
        if !self.is_shared() {
            return Ok(true);
        }
        // Class 0x51C3 ("sluice") keeps the keys apart from other users of advisory locks.
        self.one::<i64>(
            "SELECT CAST(pg_try_advisory_lock(20931, hashtext(?1)) AS INTEGER)",
            vals![format!("job:{job}")],
        )
        .map(|held| held == Some(1))
    }

    /// True when this store's connection holds `job`'s lock ([`try_lock_job`](Self::try_lock_job)).
    /// Always true for SQLite.
    ///
    /// # Errors
    /// [`Error::State`] on a database error (a lost connection included).
    pub fn holds_job_lock(&self, job: &str) -> Result<bool> {
        if !self.is_shared() {
            return Ok(true);
        }
        self.one::<i64>(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
               AND pid = pg_backend_pid() AND classid = 20931
               AND objid = CAST(CAST(hashtext(?1) AS BIGINT) & 4294967295 AS OID)",
            vals![format!("job:{job}")],
        )
        .map(|n| n == Some(1))
    }

    /// Releases the lock [`try_lock_job`](Self::try_lock_job) took.
    ///
    /// # Errors
    /// [`Error::State`] on a database error (the lock then goes with the connection).
    pub fn unlock_job(&self, job: &str) -> Result<()> {
        if self.is_shared() {
            self.db
                .batch(&format!(
                    "SELECT pg_advisory_unlock(20931, hashtext('{}'))",
                    format!("job:{job}").replace('\'', "''")
                ))
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// True when no run of `job` holds its lock in the store: a fire left `running` is then
    /// one a stopped daemon left. Always true for SQLite (one daemon per store).
    ///
    /// # Errors
    /// [`Error::State`] on a database error.
    pub fn job_lock_free(&self, job: &str) -> Result<bool> {
        let free = self.try_lock_job(job)?;
        if free {
            self.unlock_job(job)?;
        }
        Ok(free)
    }

    /// How the store is named in messages: the SQLite file, or the URL as written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True for a PostgreSQL store, which several daemons may share: what one finds
    /// `running` may be another's run in progress, not one a crash left.
    pub fn is_shared(&self) -> bool {
        self.db.shared()
    }

    fn migrated(db: Db, path: PathBuf) -> Result<StateStore> {
        migrate(&db).map_err(|m| Error::state(&path, m))?;
        Ok(StateStore { db, path })
    }

    fn err(&self, e: String) -> Error {
        Error::state(
            &self.path,
            crate::config::interpolate::Redactor::process().redact(&e),
        )
    }

    /// Records a finished run, its quality results and the alerts it raises (into the
    /// outbox) in one transaction, so an alert is never lost between the run's record and its
    /// delivery. `replay_of` names the run a replay reprocessed.
    ///
    /// # Errors
    /// [`Error::State`] on a database error (the run's outputs are already committed; the
    /// caller reports this as a state failure).
    pub fn record_run(
        &mut self,
        report: &RunReport,
        replay_of: Option<&str>,
        alerts: &[Alert],
    ) -> Result<()> {
        let record = crate::commit::CommitRecord::of(report, replay_of);
        self.db
            .transaction(|db| {
                insert_run(db, &record)?;
                db.execute(
                    "UPDATE runs SET sluice_version = ?2, error = ?3, trigger = ?4, config_hash = ?5
                     WHERE run_id = ?1",
                    vals![
                        &report.run_id,
                        env!("CARGO_PKG_VERSION"),
                        report.error.as_ref().map(|e| e.message.as_str()),
                        report.trigger.as_deref(),
                        report.config_hash.as_deref()
                    ],
                )?;
                insert_quality(db, report)?;
                for alert in alerts {
                    outbox::enqueue(db, alert)?;
                }
                Ok(())
            })
            .map_err(|e| self.err(e))
    }

    /// The latest fire of `job` the daemon took, if any.
    ///
    /// # Errors
    /// [`Error::State`] on a database error or a stored time that is not RFC 3339.
    pub fn last_fire(&self, job: &str) -> Result<Option<FireRecord>> {
        self.row(
            "SELECT fire_at, status, run_id FROM schedule_fires WHERE job = ?1",
            vals![job],
            |r| {
                let at: String = r.get(0)?;
                let fire_at = chrono::DateTime::parse_from_rfc3339(&at)
                    .map_err(|e| format!("schedule_fires.fire_at `{at}`: {e}"))?
                    .to_utc();
                Ok(FireRecord {
                    fire_at,
                    status: r.get(1)?,
                    run_id: r.get(2)?,
                })
            },
        )
    }

    /// Takes `job`'s fire at `fire_at` with `status` (`running` before its run starts, so a
    /// daemon killed during the run never runs that fire again; `skipped` for a fire the
    /// misfire policy passed over). Returns false, changing nothing, when the store already
    /// holds this fire or a later one: a fire is taken once, also by two daemons sharing the
    /// store (one statement: an upsert with a condition, atomic in SQLite and PostgreSQL).
    ///
    /// # Errors
    /// [`Error::State`] on a database error: the fire must then not run.
    pub fn claim_fire(
        &self,
        job: &str,
        fire_at: chrono::DateTime<chrono::Utc>,
        status: &str,
    ) -> Result<bool> {
        self.db
            .execute(
                "INSERT INTO schedule_fires (job, fire_at, status, run_id, updated_at)
                 VALUES (?1, ?2, ?3, NULL, ?4)
                 ON CONFLICT (job) DO UPDATE SET fire_at = excluded.fire_at,
                     status = excluded.status, run_id = NULL, updated_at = excluded.updated_at
                 WHERE excluded.fire_at > schedule_fires.fire_at",
                vals![job, rfc3339(fire_at), status, rfc3339(chrono::Utc::now())],
            )
            .map(|changed| changed == 1)
            .map_err(|e| self.err(e))
    }

    /// Records how the run of `job`'s fire at `fire_at` ended (`done` with its run id, or
    /// `abandoned`). A no-op when a later fire has replaced it.
    ///
    /// # Errors
    /// [`Error::State`] on a database error.
    pub fn finish_fire(
        &self,
        job: &str,
        fire_at: chrono::DateTime<chrono::Utc>,
        status: &str,
        run_id: Option<&str>,
    ) -> Result<()> {
        self.db
            .execute(
                "UPDATE schedule_fires SET status = ?3, run_id = ?4, updated_at = ?5
                 WHERE job = ?1 AND fire_at = ?2",
                vals![
                    job,
                    rfc3339(fire_at),
                    status,
                    run_id,
                    rfc3339(chrono::Utc::now())
                ],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records a committed run from its commit record (see [`crate::recovery::reconcile`]):
    /// the run, and the watermarks it moved, in one transaction. Its quality results are not
    /// in the record, so such a run has none in the history.
    ///
    /// # Errors
    /// [`Error::State`] on a database error.
    pub fn record_commit(&mut self, record: &crate::commit::CommitRecord) -> Result<()> {
        self.db
            .transaction(|db| insert_run(db, record))
            .map_err(|e| self.err(e))
    }

    /// The watermark of an incremental source of `job`, if a committed run set one.
    ///
    /// # Errors
    /// [`Error::State`] on a database error.
    pub fn watermark(&self, job: &str, source: &str) -> Result<Option<StoredWatermark>> {
        self.row(
            "SELECT value, run_id, cursor_column FROM watermarks WHERE job = ?1 AND source = ?2",
            vals![job, source],
            |r| {
                Ok(StoredWatermark {
                    value: r.get(0)?,
                    run_id: r.get(1)?,
                    cursor_column: r.get(2)?,
                })
            },
        )
    }

    /// The files committed runs of `job` read from its incremental file source `source`
    /// (`incremental = { files = "new" }`), as the report names them.
    ///
    /// # Errors
    /// [`Error::State`] on a database error.
    pub fn files_read(
        &self,
        job: &str,
        source: &str,
    ) -> Result<std::collections::BTreeSet<String>> {
        let files = self.rows(
            "SELECT file FROM source_files WHERE job = ?1 AND source = ?2",
            vals![job, source],
            |r| r.get(0),
        )?;
        Ok(files.into_iter().collect())
    }

    /// The most recent `limit` runs of `job`, newest first; only committed ones when
    /// `committed_only` (status `succeeded` or `succeeded_with_warnings`).
    ///
    /// # Errors
    /// [`Error::State`] on a database error.
    pub fn runs(&self, job: &str, limit: usize, committed_only: bool) -> Result<Vec<RunRecord>> {
        let filter = if committed_only {
            "job = ?1 AND status IN ('succeeded', 'succeeded_with_warnings') AND replay_of IS NULL"
        } else {
            "job = ?1"
        };
        self.select_runs(filter, vals![job, limit as i64])
    }

    /// The latest `limit` runs of every job, newest first.
    ///
    /// # Errors
    /// [`Error::State`] on a database error.
    pub fn all_runs(&self, limit: usize) -> Result<Vec<RunRecord>> {
        self.select_runs("job <> ?1", vals!["", limit as i64])
    }

    /// The run with id `run_id`, if recorded.
    ///
    /// # Errors
    /// [`Error::State`] on a database error.
    pub fn run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        Ok(self
            .select_runs("run_id = ?1", vals![run_id, 1i64])?
            .into_iter()
            .next())
    }

    /// Runs matching the SQL condition `filter` (over `?1`), newest first, at most `?2`.
    fn select_runs(&self, filter: &str, args: &[Value]) -> Result<Vec<RunRecord>> {
        let sql = format!(
            "SELECT run_id, job, status, started_at, finished_at, rows_read, rows_written,
                    rows_quarantined, replay_of, error, logical_date, vars, trigger,
                    config_hash
             FROM runs WHERE {filter} ORDER BY started_at DESC, run_id DESC LIMIT ?2"
        );
        self.rows(&sql, args, |r| {
            Ok(RunRecord {
                run_id: r.get(0)?,
                job: r.get(1)?,
                status: r.get(2)?,
                started_at: r.get(3)?,
                finished_at: r.get(4)?,
                rows_read: r.get(5)?,
                rows_written: r.get(6)?,
                rows_quarantined: r.get(7)?,
                replay_of: r.get(8)?,
                error: r.get(9)?,
                logical_date: r.get(10)?,
                vars: r
                    .get::<Option<String>>(11)?
                    .and_then(|v| serde_json::from_str(&v).ok())
                    .unwrap_or_default(),
                trigger: r.get(12)?,
                config_hash: r.get(13)?,
            })
        })
    }

    /// Every quality record of the given runs of `job`.
    ///
    /// # Errors
    /// [`Error::State`] on a database error.
    pub fn quality(&self, job: &str, run_ids: &[String]) -> Result<Vec<QualityRecord>> {
        let mut out = Vec::new();
        for id in run_ids {
            out.extend(self.rows(
                "SELECT run_id, kind, name, rows_failed, measured, status FROM quality
                 WHERE job = ?1 AND run_id = ?2",
                vals![job, id],
                |r| {
                    Ok(QualityRecord {
                        run_id: r.get(0)?,
                        kind: r.get(1)?,
                        name: r.get(2)?,
                        rows_failed: r.get(3)?,
                        measured: r.get(4)?,
                        status: r.get(5)?,
                    })
                },
            )?);
        }
        Ok(out)
    }

    /// Registers the definition of a model version a committed run loaded (the first
    /// definition of a version is kept).
    ///
    /// # Errors
    /// [`Error::State`] on a database error.
    pub fn register_model(&self, name: &str, version: &str, definition: &str) -> Result<()> {
        self.db
            .execute(
                "INSERT INTO models (name, version, definition, registered_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                vals![
                    name,
                    version,
                    definition,
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The registered versions of model `name`: (version, definition).
    ///
    /// # Errors
    /// [`Error::State`] on a database error.
    pub fn registered_models(&self, name: &str) -> Result<Vec<(String, String)>> {
        self.rows(
            "SELECT version, definition FROM models WHERE name = ?1",
            vals![name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// The stored status of run `run_id` of `job` (`succeeded`, `check_failed`, ...).
    ///
    /// # Errors
    /// [`Error::State`] on a database error.
    pub fn run_status(&self, job: &str, run_id: &str) -> Result<Option<String>> {
        self.one(
            "SELECT status FROM runs WHERE job = ?1 AND run_id = ?2",
            vals![job, run_id],
        )
    }

    /// Whether run `run_id` of `job` is recorded as committed (succeeded, with or without
    /// warnings).
    ///
    /// # Errors
    /// [`Error::State`] on a database error.
    pub fn is_committed(&self, job: &str, run_id: &str) -> Result<bool> {
        let status = self.run_status(job, run_id)?;
        Ok(status.is_some_and(|s| {
            [RunStatus::Succeeded, RunStatus::SucceededWithWarnings]
                .iter()
                .any(|c| c.name() == s)
        }))
    }

    /// The committed replay of `run_id`, if one happened.
    ///
    /// # Errors
    /// [`Error::State`] on a database error.
    pub fn replayed_by(&self, job: &str, run_id: &str) -> Result<Option<String>> {
        self.one(
            "SELECT run_id FROM runs WHERE job = ?1 AND replay_of = ?2
               AND status IN ('succeeded', 'succeeded_with_warnings')",
            vals![job, run_id],
        )
    }

    /// The rows `sql` selects, each made a `T` by `f`.
    fn rows<T>(
        &self,
        sql: &str,
        params: &[Value],
        f: impl Fn(&sql::Row) -> std::result::Result<T, String>,
    ) -> Result<Vec<T>> {
        self.db
            .query(sql, params)
            .and_then(|rows| rows.iter().map(f).collect())
            .map_err(|e| self.err(e))
    }

    /// The first row `sql` selects made a `T` by `f`, if any.
    fn row<T>(
        &self,
        sql: &str,
        params: &[Value],
        f: impl Fn(&sql::Row) -> std::result::Result<T, String>,
    ) -> Result<Option<T>> {
        self.db
            .query_opt(sql, params)
            .and_then(|r| r.as_ref().map(f).transpose())
            .map_err(|e| self.err(e))
    }

    /// The first column of the first row `sql` selects, if any.
    fn one<T: sql::FromValue>(&self, sql: &str, params: &[Value]) -> Result<Option<T>> {
        self.row(sql, params, |r| r.get(0))
    }
}

/// Inserts (or replaces) the run of `r`, and for a committed run the watermarks it moved.
fn insert_run(db: &Db, r: &crate::commit::CommitRecord) -> std::result::Result<(), String> {
    db.execute(
        "INSERT INTO runs (run_id, job, status, started_at, finished_at, rows_read,
            rows_written, rows_quarantined, rows_dropped, model, model_version, replay_of,
            logical_date, vars)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (run_id) DO UPDATE SET job = excluded.job, status = excluded.status,
            started_at = excluded.started_at, finished_at = excluded.finished_at,
            rows_read = excluded.rows_read, rows_written = excluded.rows_written,
            rows_quarantined = excluded.rows_quarantined, rows_dropped = excluded.rows_dropped,
            model = excluded.model, model_version = excluded.model_version,
            replay_of = excluded.replay_of, logical_date = excluded.logical_date,
            vars = excluded.vars",
        vals![
            &r.run_id,
            &r.job,
            &r.status,
            &r.started_at,
            &r.finished_at,
            r.rows_read,
            r.rows_written,
            r.rows_quarantined,
            r.rows_dropped,
            &r.model,
            &r.model_version,
            r.replay_of.as_deref(),
            r.logical_date.as_deref(),
            vars_json(&r.vars),
        ],
    )?;
    // Watermarks move with the run record, and only for a run that committed.
    if r.committed() {
        for (source, column, value) in &r.watermarks {
            db.execute(
                "INSERT INTO watermarks (job, source, cursor_column, value, run_id, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (job, source) DO UPDATE SET cursor_column = excluded.cursor_column,
                    value = excluded.value, run_id = excluded.run_id,
                    updated_at = excluded.updated_at",
                vals![&r.job, source, column, value, &r.run_id, &r.finished_at],
            )?;
        }
        for f in &r.new_files {
            if f.replace {
                db.execute(
                    "DELETE FROM source_files WHERE job = ?1 AND source = ?2",
                    vals![&r.job, &f.source],
                )?;
            }
            for file in &f.read {
                db.execute(
                    "INSERT INTO source_files (job, source, file, run_id, read_at)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (job, source, file) DO NOTHING",
                    vals![&r.job, &f.source, file, &r.run_id, &r.finished_at],
                )?;
            }
        }
    }
    Ok(())
}

/// `vars` as stored: a JSON object, or NULL for none.
fn vars_json(vars: &std::collections::BTreeMap<String, String>) -> Option<String> {
    (!vars.is_empty()).then(|| serde_json::to_string(vars).unwrap_or_default())
}

/// Inserts the quality results of `report`: one row per rule and per dataset check.
fn insert_quality(db: &Db, report: &RunReport) -> std::result::Result<(), String> {
    const INSERT: &str = "INSERT INTO quality (run_id, job, started_at, kind, name,
            rows_checked, rows_failed, measured, threshold, status, action)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (run_id, kind, name) DO UPDATE SET rows_checked = excluded.rows_checked,
            rows_failed = excluded.rows_failed, measured = excluded.measured,
            threshold = excluded.threshold, status = excluded.status, action = excluded.action";
    let checked = report.rows.produced;
    let rules = report.rules.iter().map(|r| {
        let fraction = if checked == 0 {
            0.0
        } else {
            r.failed_rows as f64 / checked as f64
        };
        let action = crate::config::spec::json_name(&r.action);
        // kind, name, rows checked, rows failed, measured, threshold, status, action
        let row: [Value; 8] = [
            "rule".into(),
            (&r.rule).into(),
            checked.into(),
            r.failed_rows.into(),
            fraction.into(),
            Value::Null,
            r.status.to_string().into(),
            action.into(),
        ];
        row
    });
    let checks = report.checks.iter().map(|c| {
        [
            "check".into(),
            (&c.check).into(),
            Value::Null,
            Value::Null,
            c.measured.into(),
            c.threshold.into(),
            c.status.to_string().into(),
            Value::Null,
        ]
    });
    for row in rules.chain(checks) {
        let mut params = vec![
            (&report.run_id).into(),
            (&report.job).into(),
            (&report.started_at).into(),
        ];
        params.extend(row);
        db.execute(INSERT, &params)?;
    }
    Ok(())
}

/// `t` as stored: RFC 3339, UTC, seconds.
fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{RowCounts, RunStatus, StageTimes};

    #[test]
    fn a_store_from_before_versions_is_migrated_keeping_its_rows_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A store as the release before schema versions wrote it: `runs` without the
        // columns of migration 2, one run in it, user_version 0.
        {
            let conn = Connection::open(dir.path().join("state.db")).unwrap();
            conn.execute_batch(
                "CREATE TABLE runs (run_id TEXT PRIMARY KEY, job TEXT NOT NULL, status TEXT NOT NULL,
                    started_at TEXT NOT NULL, finished_at TEXT NOT NULL, rows_read INTEGER NOT NULL,
                    rows_written INTEGER NOT NULL, rows_quarantined INTEGER NOT NULL,
                    rows_dropped INTEGER NOT NULL, model TEXT NOT NULL, model_version TEXT NOT NULL,
                    replay_of TEXT);
                 INSERT INTO runs VALUES ('r0', 'flights', 'succeeded', '2026-01-01T00:00:00Z',
                    '2026-01-01T00:01:00Z', 10, 10, 0, 0, 'flight', '1.0.0', NULL);",
            )
            .unwrap();
        }
        let store = StateStore::open(dir.path()).unwrap();
        let runs = store.runs("flights", 10, false).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].error, None);
        let version: i64 = store
            .db
            .query_opt("PRAGMA user_version", &[])
            .unwrap()
            .unwrap()
            .get(0)
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
        drop(store);
        // Opening again applies nothing twice.
        StateStore::open(dir.path()).unwrap();

        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let newer = StateStore::open(dir.path())
            .err()
            .expect("a newer store is refused");
        assert!(newer.to_string().contains("schema version 99"), "{newer}");
    }

    fn report(id: &str, status: RunStatus, written: u64) -> RunReport {
        RunReport {
            spill: None,
            run_id: id.into(),
            job: "flights".into(),
            mapping: "m".into(),
            model: "flight".into(),
            model_version: "1.0.0".into(),
            status,
            logical_date: None,
            vars: Default::default(),
            trigger: None,
            config_hash: None,
            started_at: format!("2026-01-0{}T00:00:00.000Z", &id[1..]),
            finished_at: "2026-01-01T00:00:01.000Z".into(),
            duration_ms: 1000,
            rows: RowCounts {
                read: written,
                produced: written,
                written,
                ..Default::default()
            },
            rules: Vec::new(),
            checks: Vec::new(),
            stages: StageTimes::default(),
            outputs: Vec::new(),
            error: None,
            watermarks: Vec::new(),
            new_files: Vec::new(),
            load: None,
        }
    }

    #[test]
    fn runs_come_back_newest_first_and_failed_ones_can_be_excluded() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::open(dir.path()).unwrap();
        store
            .record_run(&report("r1", RunStatus::Succeeded, 10), None, &[])
            .unwrap();
        store
            .record_run(&report("r2", RunStatus::CheckFailed, 20), None, &[])
            .unwrap();
        store
            .record_run(
                &report("r3", RunStatus::SucceededWithWarnings, 30),
                None,
                &[],
            )
            .unwrap();
        // A replay is history, but not a volume baseline.
        store
            .record_run(&report("r4", RunStatus::Succeeded, 5), Some("r2"), &[])
            .unwrap();
        let all: Vec<String> = store
            .runs("flights", 10, false)
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(all, ["r4", "r3", "r2", "r1"]);
        let committed: Vec<u64> = store
            .runs("flights", 10, true)
            .unwrap()
            .into_iter()
            .map(|r| r.rows_written)
            .collect();
        assert_eq!(committed, [30, 10]);
        assert_eq!(
            store.replayed_by("flights", "r2").unwrap().as_deref(),
            Some("r4")
        );
        assert_eq!(store.replayed_by("flights", "r1").unwrap(), None);
        // Reopening sees the same history.
        drop(store);
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.runs("flights", 1, false).unwrap()[0].run_id, "r4");
    }

    #[test]
    fn a_fire_is_taken_once_and_never_again_after_a_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        let f1 = at("2026-03-29T01:00:00Z");
        let f2 = at("2026-03-30T01:00:00Z");
        assert!(store.claim_fire("j", f1, "running").unwrap());
        // A second daemon (or a restart) cannot take the same fire again.
        assert!(!store.claim_fire("j", f1, "running").unwrap());
        store.finish_fire("j", f1, "abandoned", None).unwrap();
        assert!(!store.claim_fire("j", f1, "running").unwrap());
        assert!(store.claim_fire("j", f2, "running").unwrap());
        // An older fire never replaces a newer one.
        assert!(!store.claim_fire("j", f1, "skipped").unwrap());
        store.finish_fire("j", f2, "done", Some("r9")).unwrap();
        let last = store.last_fire("j").unwrap().unwrap();
        assert_eq!(
            (last.fire_at, last.status.as_str(), last.run_id.as_deref()),
            (f2, "done", Some("r9"))
        );
        // Other jobs are independent.
        assert!(store.claim_fire("k", f1, "running").unwrap());
    }
}
