//! Alerts: JSON POSTs to the project's `[alerts] webhook` when a run fails, a dataset check
//! fails or warns, or a scheduled job is paused after failing fires in a row.
//!
//! ```text
//! run recorded ─┐ (one state-store transaction)        deliver_due (daemon: every second;
//! circuit opens ┴─▶ alert_outbox row (undelivered) ──▶ `sluice run`: once before exiting)
//!                                                        POST 2xx ─▶ marked delivered
//!                                                        else     ─▶ retried after 2^n s (≤ 5 min)
//! ```
//!
//! **Crash points.** An alert is written in the transaction that records its cause, so a
//! process killed after the run's record has its alerts queued, and one killed before has
//! neither. A delivery killed after the receiver answered but before the row was marked is
//! sent again: delivery is *at least once*, and each payload carries its `alert_id` so a
//! receiver can drop repeats.
//!
//! The payload (all fields always present, `null` where they do not apply):
//!
//! ```json
//! {"alert_id": "0193…", "event": "run_failed", "project": "flights", "job": "flights",
//!  "run_id": "20261130T020000Z-…", "created_at": "2026-11-30T02:00:04Z",
//!  "status": "failed", "message": "…", "rows": {"read": 0, "written": 0, "quarantined": 0},
//!  "checks": [{"check": "row_count", "status": "fail", "message": "…"}], "failures": null}
//! ```

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::config::spec::AlertEvent;
use crate::config::Project;
use crate::error::Result;
use crate::quality::CheckStatus;
use crate::report::{RunReport, RunStatus};
use crate::state::{Alert, StateStore};

/// Longest wait between delivery attempts of one alert.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(300);

/// How long `sluice run` spends delivering alerts at most, before it exits.
const DELIVER_ONCE_LIMIT: Duration = Duration::from_secs(15);

/// How long one POST may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// The event a finished run raises, if any: `failed` → `run_failed`, `check_failed` →
/// `check_failed`, `succeeded_with_warnings` → `check_warned`.
pub fn event_of(status: RunStatus) -> Option<AlertEvent> {
    match status {
        RunStatus::Failed => Some(AlertEvent::RunFailed),
        RunStatus::CheckFailed => Some(AlertEvent::CheckFailed),
        RunStatus::SucceededWithWarnings => Some(AlertEvent::CheckWarned),
        RunStatus::Succeeded => None,
    }
}

/// The alerts `report` raises under the project's `[alerts]` (none without it, or when its
/// `on` leaves the event out).
pub fn of_run(project: &Project, report: &RunReport) -> Vec<Alert> {
    let Some(event) = event_of(report.status).filter(|e| wanted(project, *e)) else {
        return Vec::new();
    };
    let not_passed: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.status != CheckStatus::Pass)
        .collect();
    let message = match &report.error {
        Some(e) => e.message.clone(),
        None => format!(
            "{} dataset check(s) did not pass: {}",
            not_passed.len(),
            not_passed
                .iter()
                .map(|c| format!("{} ({}): {}", c.check, c.status, c.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    let checks: Vec<Value> = not_passed
        .iter()
        .map(|c| json!({"check": c.check, "status": c.status.to_string(), "message": c.message}))
        .collect();
    let mut alert = new_alert(project, event, &report.job, Some(&report.run_id), message);
    alert.payload["status"] = json!(report.status.name());
    alert.payload["rows"] = json!({
        "read": report.rows.read,
        "written": report.rows.written,
        "quarantined": report.rows.quarantined,
    });
    alert.payload["checks"] = Value::Array(checks);
    vec![alert]
}

/// The alert for `job` paused after `failures` failed fires in a row, or `None` when the
/// project's `[alerts]` does not want it.
pub fn circuit_opened(
    project: &Project,
    job: &str,
    failures: u32,
    last_error: &str,
) -> Option<Alert> {
    if !wanted(project, AlertEvent::CircuitOpened) {
        return None;
    }
    let message = format!(
        "job `{job}` is paused after {failures} failed fires in a row; last error: {last_error}; resume it with `sluice resume {job}` once the cause is fixed"
    );
    let mut alert = new_alert(project, AlertEvent::CircuitOpened, job, None, message);
    alert.payload["failures"] = json!(failures);
    Some(alert)
}

fn wanted(project: &Project, event: AlertEvent) -> bool {
    project
        .settings
        .alerts
        .as_ref()
        .is_some_and(|a| a.on.contains(&event))
}

fn new_alert(
    project: &Project,
    event: AlertEvent,
    job: &str,
    run_id: Option<&str>,
    message: String,
) -> Alert {
    let alert_id = uuid::Uuid::now_v7().to_string();
    let created_at = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let payload = json!({
        "alert_id": alert_id,
        "event": crate::config::spec::json_name(&event),
        "project": project.settings.name,
        "job": job,
        "run_id": run_id,
        "created_at": created_at,
        "status": null,
        "message": message,
        "rows": null,
        "checks": [],
        "failures": null,
    });
    Alert {
        alert_id,
        event,
        job: job.to_string(),
        run_id: run_id.map(str::to_string),
        created_at,
        payload,
    }
}

/// Delivers alerts from a project's outbox to its webhook.
pub struct Courier {
    client: reqwest::Client,
    url: String,
}

/// What one [`Courier::deliver_due`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Alerts the receiver accepted (a 2xx answer).
    pub delivered: usize,
    /// Alerts whose POST failed; each is retried later.
    pub failed: usize,
}

impl Courier {
    /// The courier of `project`, or `None` without `[alerts]`.
    ///
    /// # Errors
    /// [`crate::error::Error::Usage`] when the webhook URL's `${env:…}`/`${file:…}` cannot be
    /// resolved, or the HTTP client cannot be built.
    pub fn of(project: &Project) -> Result<Option<Courier>> {
        let Some(spec) = &project.settings.alerts else {
            return Ok(None);
        };
        let redactor = crate::config::interpolate::Redactor::process();
        let url = redactor
            .resolve(spec.webhook.get_ref(), &project.root)
            .map_err(|e| crate::error::Error::Usage {
                message: format!("[alerts] webhook: {e}"),
                hint: Some("set the variable in the environment that runs sluice".into()),
            })?;
        let client = reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| crate::error::Error::Internal(format!("HTTP client: {e}")))?;
        Ok(Some(Courier { client, url }))
    }

    /// POSTs every alert due now, oldest first, marking each delivered on a 2xx answer and
    /// scheduling a retry otherwise. (`&mut`: the store is not `Sync`, and the courier's
    /// task must be `Send`.)
    ///
    /// # Errors
    /// [`crate::error::Error::State`] when the outbox cannot be read or written.
    pub async fn deliver_due(&self, store: &mut StateStore) -> Result<Delivery> {
        let mut done = Delivery::default();
        for alert in store.due_alerts(Utc::now(), 100)? {
            // Another sender sharing the store may have taken it since it was read.
            let lease = Utc::now() + chrono::Duration::seconds(60);
            if !store.claim_alert(&alert, lease)? {
                continue;
            }
            match self.post(&alert.payload).await {
                Ok(()) => {
                    store.alert_delivered(&alert.alert_id)?;
                    done.delivered += 1;
                }
                Err(e) => {
                    let next = Utc::now() + retry_wait(alert.attempts);
                    store.alert_failed(&alert.alert_id, &e, next)?;
                    done.failed += 1;
                }
            }
        }
        Ok(done)
    }

    async fn post(&self, payload: &str) -> std::result::Result<(), String> {
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(payload.to_string())
            .send()
            .await
            .map_err(|e| crate::config::interpolate::Redactor::process().redact(&e.to_string()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("the webhook answered {}", response.status()))
        }
    }
}

/// The wait before attempt `attempts + 1`: 1 s, 2 s, 4 s, … up to 5 minutes.
fn retry_wait(attempts: u32) -> chrono::Duration {
    let wait = Duration::from_secs(1u64 << attempts.min(16)).min(MAX_RETRY_WAIT);
    chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
}

/// When `[alerts]` is set: delivers what is due in `project`'s outbox once (after a
/// `sluice run`, so cron users get alerts without the daemon). Failures are warnings: the
/// alerts stay queued for the next run or the daemon.
pub async fn deliver_once(project: &Project) {
    let courier = match Courier::of(project) {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => {
            crate::logging::stderr_line(&format!("warning: alerts not sent: {e}"));
            return;
        }
    };
    let mut store = match StateStore::of(project) {
        Ok(s) => s,
        Err(e) => {
            crate::logging::stderr_line(&format!("warning: alerts not sent: {e}"));
            return;
        }
    };
    // Bounded: a webhook that swallows connections must not hold a committed run's exit.
    let delivery = tokio::time::timeout(DELIVER_ONCE_LIMIT, courier.deliver_due(&mut store)).await;
    let Ok(delivery) = delivery else {
        crate::logging::stderr_line(&format!(
            "warning: the webhook did not take the alerts within {} s; they stay queued for the next run or `sluice schedule`",
            DELIVER_ONCE_LIMIT.as_secs()
        ));
        return;
    };
    match delivery {
        Ok(d) if d.failed > 0 => crate::logging::stderr_line(&format!(
            "warning: {} alert(s) could not be delivered to the webhook; they are retried by the next run or by `sluice schedule`",
            d.failed
        )),
        Ok(_) => {}
        Err(e) => crate::logging::stderr_line(&format!("warning: alerts not sent: {e}")),
    }
}
