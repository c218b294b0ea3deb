//! The alert outbox: alerts are written in the transaction that records what raised them
//! (a run, a circuit opening); delivery only marks them (retention deletes delivered ones
//! later), so a crash at any point loses none (an alert whose POST succeeded but was not yet marked is sent
//! again: at least once).

use super::sql::{vals, Db};

use super::{rfc3339, StateStore};
use crate::config::spec::AlertEvent;
use crate::error::Result;

/// One alert, as queued in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// A UUID v7, also in the payload.
    pub alert_id: String,
    /// What raised it.
    pub event: AlertEvent,
    /// The job.
    pub job: String,
    /// The run, when a run raised it.
    pub run_id: Option<String>,
    /// When it was raised, RFC 3339 UTC.
    pub created_at: String,
    /// The JSON body POSTed to the webhook.
    pub payload: serde_json::Value,
}

/// An alert waiting for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingAlert {
    /// Its id (also in the payload, for receivers that deduplicate).
    pub alert_id: String,
    /// The JSON body to POST.
    pub payload: String,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// When it became due, as stored (what [`StateStore::claim_alert`] checks).
    pub next_attempt_at: String,
}

/// Queues `alert` in the transaction `db` is in.
pub(super) fn enqueue(db: &Db, alert: &Alert) -> std::result::Result<(), String> {
    db.execute(
        "INSERT INTO alert_outbox (alert_id, event, job, run_id, created_at, payload,
             attempts, next_attempt_at, delivered_at, last_error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?5, NULL, NULL) ON CONFLICT DO NOTHING",
        vals![
            &alert.alert_id,
            crate::config::spec::json_name(&alert.event),
            &alert.job,
            alert.run_id.as_deref(),
            &alert.created_at,
            alert.payload.to_string()
        ],
    )
    .map(drop)
}

impl StateStore {
    /// Undelivered alerts whose next attempt is due at `now`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn due_alerts(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<PendingAlert>> {
        self.rows(
            "SELECT alert_id, payload, attempts, next_attempt_at FROM alert_outbox
             WHERE delivered_at IS NULL AND next_attempt_at <= ?1
             ORDER BY created_at, alert_id LIMIT ?2",
            vals![rfc3339(now), limit as i64],
            |r| {
                Ok(PendingAlert {
                    alert_id: r.get(0)?,
                    payload: r.get(1)?,
                    attempts: r.get(2)?,
                    next_attempt_at: r.get(3)?,
                })
            },
        )
    }

    /// Claims `alert` for one delivery attempt until `until`: true for the one sender (of
    /// several daemons, or a daemon and a `sluice run`) whose statement moved its next attempt
    /// from the time it read; the others skip it. An attempt that dies leaves the alert due
    /// again at `until`.
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn claim_alert(
        &self,
        alert: &PendingAlert,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        self.db
            .execute(
                "UPDATE alert_outbox SET next_attempt_at = ?3
                 WHERE alert_id = ?1 AND next_attempt_at = ?2 AND delivered_at IS NULL",
                vals![&alert.alert_id, &alert.next_attempt_at, rfc3339(until)],
            )
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    /// Marks an alert delivered.
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error (the alert is then sent again).
    pub fn alert_delivered(&self, alert_id: &str) -> Result<()> {
        self.db
            .execute(
                "UPDATE alert_outbox SET delivered_at = ?2, attempts = attempts + 1, last_error = NULL
                 WHERE alert_id = ?1",
                vals![alert_id, rfc3339(chrono::Utc::now())],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records a failed delivery attempt and when to try again.
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn alert_failed(
        &self,
        alert_id: &str,
        error: &str,
        next_attempt_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        self.db
            .execute(
                "UPDATE alert_outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3
                 WHERE alert_id = ?1",
                vals![alert_id, error, rfc3339(next_attempt_at)],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// How many alerts are not delivered yet.
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn undelivered_alerts(&self) -> Result<u64> {
        self.one(
            "SELECT COUNT(*) FROM alert_outbox WHERE delivered_at IS NULL",
            &[],
        )
        .map(|n| n.unwrap_or(0))
    }
}
