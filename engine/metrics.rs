//! The daemon's Prometheus metrics, served at `/metrics` in the text exposition format (by
//! the `prometheus-client` crate).
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `sluice_runs_total` | counter | `job`, `status` | runs finished, by status (`succeeded`, `succeeded_with_warnings`, `check_failed`, `failed`, `not_run`) |
//! | `sluice_run_duration_seconds` | histogram | `job` | wall time of each run |
//! | `sluice_rows_total` | counter | `job`, `kind` | rows `read`, `written` and `quarantined` |
//! | `sluice_last_success_timestamp_seconds` | gauge | `job` | Unix time the last committed run finished |
//! | `sluice_fires_total` | counter | `job`, `outcome` | fires taken: `run`, `skipped_overlap`, `skipped_paused`, `skipped_claimed` |
//! | `sluice_job_paused` | gauge | `job` | 1 while the job's circuit is open |
//! | `sluice_scheduler_last_tick_timestamp_seconds` | gauge | | Unix time the scheduler loop last woke |
//! | `sluice_alerts_undelivered` | gauge | | alerts waiting in the outbox |

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::report::RunReport;

type Labels = Vec<(String, String)>;
type SecondsGauge = Gauge<f64, AtomicU64>;

/// Every metric the daemon keeps; cheap to update from any task.
pub struct Metrics {
    registry: Registry,
    runs: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    rows: Family<Labels, Counter>,
    last_success: Family<Labels, SecondsGauge>,
    fires: Family<Labels, Counter>,
    paused: Family<Labels, Gauge>,
    last_tick: SecondsGauge,
    alerts_undelivered: Gauge,
}

fn duration_histogram() -> Histogram {
    // 0.1 s to about 55 min, doubling.
    Histogram::new(exponential_buckets(0.1, 2.0, 16))
}

fn job(job: &str) -> Labels {
    vec![("job".into(), job.into())]
}

fn job_and(job: &str, key: &str, value: &str) -> Labels {
    vec![("job".into(), job.into()), (key.into(), value.into())]
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            runs: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            rows: Family::default(),
            last_success: Family::default(),
            fires: Family::default(),
            paused: Family::default(),
            last_tick: SecondsGauge::default(),
            alerts_undelivered: Gauge::default(),
        };
        let mut registry = Registry::default();
        registry.register(
            "sluice_runs",
            "Runs finished, by job and status",
            m.runs.clone(),
        );
        registry.register(
            "sluice_run_duration_seconds",
            "Wall time of each run, in seconds",
            m.duration.clone(),
        );
        registry.register(
            "sluice_rows",
            "Rows read, written and quarantined",
            m.rows.clone(),
        );
        registry.register(
            "sluice_last_success_timestamp_seconds",
            "Unix time the job's last committed run finished",
            m.last_success.clone(),
        );
        registry.register(
            "sluice_fires",
            "Schedule fires taken, by outcome",
            m.fires.clone(),
        );
        registry.register(
            "sluice_job_paused",
            "1 while the job is paused after failing fires in a row",
            m.paused.clone(),
        );
        registry.register(
            "sluice_scheduler_last_tick_timestamp_seconds",
            "Unix time the scheduler loop last woke",
            m.last_tick.clone(),
        );
        registry.register(
            "sluice_alerts_undelivered",
            "Alerts waiting in the outbox",
            m.alerts_undelivered.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a finished run.
    pub fn run_finished(&self, report: &RunReport) {
        let job_name = report.job.as_str();
        self.runs
            .get_or_create(&job_and(job_name, "status", &report.status.name()))
            .inc();
        self.duration
            .get_or_create(&job(job_name))
            .observe(report.duration_ms as f64 / 1000.0);
        for (kind, n) in [
            ("read", report.rows.read),
            ("written", report.rows.written),
            ("quarantined", report.rows.quarantined),
        ] {
            self.rows
                .get_or_create(&job_and(job_name, "kind", kind))
                .inc_by(n);
        }
        if report.status.committed() {
            self.last_success
                .get_or_create(&job(job_name))
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        }
    }

    /// Counts a fire that produced no run report (invalid files, or stopped outside it).
    pub fn not_run(&self, job_name: &str) {
        self.runs
            .get_or_create(&job_and(job_name, "status", "not_run"))
            .inc();
    }

    /// Sets the last success of `job_name` from the state store, at daemon start.
    pub fn set_last_success(&self, job_name: &str, at: chrono::DateTime<chrono::Utc>) {
        self.last_success
            .get_or_create(&job(job_name))
            .set(at.timestamp_millis() as f64 / 1000.0);
    }

    /// Counts a fire with its outcome (`run`, `skipped_overlap`, `skipped_paused`,
    /// `skipped_claimed`).
    pub fn fire(&self, job_name: &str, outcome: &str) {
        self.fires
            .get_or_create(&job_and(job_name, "outcome", outcome))
            .inc();
    }

    /// Sets whether `job_name` is paused.
    pub fn set_paused(&self, job_name: &str, paused: bool) {
        self.paused
            .get_or_create(&job(job_name))
            .set(i64::from(paused));
    }

    /// Records that the scheduler loop woke now.
    pub fn tick(&self, now: chrono::DateTime<chrono::Utc>) {
        self.last_tick.set(now.timestamp_millis() as f64 / 1000.0);
    }

    /// Sets the number of undelivered alerts.
    pub fn set_alerts_undelivered(&self, n: u64) {
        self.alerts_undelivered.set(n as i64);
    }

    /// The metrics in the Prometheus text exposition format (version 0.0.4 / OpenMetrics
    /// text, as `prometheus-client` writes it).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
