//! What the daemon keeps in the state store besides its fires: each scheduled job's circuit
//! (consecutive failures, and whether it is paused) and the runs asked for through the API.

use super::sql::vals;
use super::{outbox, rfc3339, StateStore};
use crate::error::Result;

/// The circuit of a scheduled job: how many fires in a row failed, and whether the job is
/// paused because of it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Circuit {
    /// Consecutive failed fires (0 after a success).
    pub failures: u32,
    /// When the job was paused (RFC 3339 UTC), while it is.
    pub opened_at: Option<String>,
    /// The last failure's message.
    pub last_error: Option<String>,
}

/// A run asked for through the API.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct TriggerRecord {
    /// The trigger's id (a UUID v7).
    pub trigger_id: String,
    /// The job.
    pub job: String,
    /// When it was asked for (RFC 3339 UTC).
    pub requested_at: String,
    /// The name of the API token that asked.
    pub requested_by: String,
    /// `queued`, `running`, `done` (it ran: the run's report says how), `failed` (it did not
    /// run: invalid files, or stopped outside its report), `skipped` (another run of the job
    /// held its lock) or `abandoned` (the daemon stopped during it).
    pub status: String,
    /// The run, once it finished.
    pub run_id: Option<String>,
}

impl StateStore {
    /// `job`'s circuit, or `None` when it has not failed since its last success.
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn circuit(&self, job: &str) -> Result<Option<Circuit>> {
        self.row(
            "SELECT failures, opened_at, last_error FROM circuits WHERE job = ?1",
            vals![job],
            |r| {
                Ok(Circuit {
                    failures: r.get(0)?,
                    opened_at: r.get(1)?,
                    last_error: r.get(2)?,
                })
            },
        )
    }

    /// Counts a failed fire of `job`. When it makes `pause_after` failures in a row (and
    /// `pause_after` is not 0) the circuit opens, and `alert` (if any) is queued in the same
    /// transaction. Returns the circuit as it now is, and whether this failure opened it.
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn record_failure(
        &mut self,
        job: &str,
        error: &str,
        pause_after: u32,
        alert: impl FnOnce(u32) -> Option<super::Alert>,
    ) -> Result<(Circuit, bool)> {
        let now = rfc3339(chrono::Utc::now());
        let (failures, opened, opens) = self
            .db
            .transaction(|db| {
                db.execute(
                    "INSERT INTO circuits (job, failures, opened_at, last_error, updated_at)
                     VALUES (?1, 1, NULL, ?2, ?3)
                     ON CONFLICT (job) DO UPDATE SET failures = circuits.failures + 1,
                         last_error = excluded.last_error, updated_at = excluded.updated_at",
                    vals![job, error, &now],
                )?;
                let row = db
                    .query_opt(
                        "SELECT failures, opened_at FROM circuits WHERE job = ?1",
                        vals![job],
                    )?
                    .ok_or("the circuit just written is missing")?;
                let failures: u32 = row.get(0)?;
                let opened: Option<String> = row.get(1)?;
                let opens = pause_after > 0 && failures >= pause_after && opened.is_none();
                if opens {
                    db.execute(
                        "UPDATE circuits SET opened_at = ?2 WHERE job = ?1",
                        vals![job, &now],
                    )?;
                    if let Some(a) = alert(failures) {
                        outbox::enqueue(db, &a)?;
                    }
                }
                Ok((failures, opened, opens))
            })
            .map_err(|e| self.err(e))?;
        let circuit = Circuit {
            failures,
            opened_at: if opens { Some(now) } else { opened },
            last_error: Some(error.to_string()),
        };
        Ok((circuit, opens))
    }

    /// Clears `job`'s circuit: after a successful fire, or when a person resumes the job.
    /// Returns whether the job was paused.
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn close_circuit(&self, job: &str) -> Result<bool> {
        let paused = self.circuit(job)?.is_some_and(|c| c.opened_at.is_some());
        self.db
            .execute("DELETE FROM circuits WHERE job = ?1", vals![job])
            .map_err(|e| self.err(e))?;
        Ok(paused)
    }

    /// Records a run of `job` asked for through the API by the token `requested_by`, as
    /// `queued`. Returns its trigger id.
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error: the run must then not start.
    pub fn insert_trigger(&self, job: &str, requested_by: &str) -> Result<TriggerRecord> {
        let now = chrono::Utc::now();
        let record = TriggerRecord {
            trigger_id: uuid::Uuid::now_v7().to_string(),
            job: job.to_string(),
            requested_at: rfc3339(now),
            requested_by: requested_by.to_string(),
            status: "queued".into(),
            run_id: None,
        };
        self.db
            .execute(
                "INSERT INTO triggers (trigger_id, job, requested_at, requested_by, status, run_id, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?3)",
                vals![
                    &record.trigger_id,
                    &record.job,
                    &record.requested_at,
                    &record.requested_by,
                    &record.status
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(record)
    }

    /// Sets a trigger's status (and its run, once known).
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn update_trigger(
        &self,
        trigger_id: &str,
        status: &str,
        run_id: Option<&str>,
    ) -> Result<()> {
        self.db
            .execute(
                "UPDATE triggers SET status = ?2, run_id = COALESCE(?3, run_id), updated_at = ?4
                 WHERE trigger_id = ?1",
                vals![trigger_id, status, run_id, rfc3339(chrono::Utc::now())],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// A trigger by id.
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn trigger(&self, trigger_id: &str) -> Result<Option<TriggerRecord>> {
        self.row(
            "SELECT trigger_id, job, requested_at, requested_by, status, run_id
             FROM triggers WHERE trigger_id = ?1",
            vals![trigger_id],
            |r| {
                Ok(TriggerRecord {
                    trigger_id: r.get(0)?,
                    job: r.get(1)?,
                    requested_at: r.get(2)?,
                    requested_by: r.get(3)?,
                    status: r.get(4)?,
                    run_id: r.get(5)?,
                })
            },
        )
    }

    /// Marks triggers still `queued` or `running` as `abandoned`: at daemon start, they
    /// belong to a daemon that stopped. Returns how many.
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn abandon_triggers(&self) -> Result<usize> {
        self.db
            .execute(
                "UPDATE triggers SET status = 'abandoned', updated_at = ?1
                 WHERE status IN ('queued', 'running')",
                vals![rfc3339(chrono::Utc::now())],
            )
            .map(|n| n as usize)
            .map_err(|e| self.err(e))
    }
}
