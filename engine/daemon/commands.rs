//! The loop's answers to the HTTP server's commands, and what happens when a run ends: the
//! fire or trigger recorded, the job's circuit counted (paused after failed fires in a row),
//! metrics, the log line.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{log, show, Daemon, Finished, Origin};
use crate::config::params::{self, RunParams};
use crate::report::RunReport;
use crate::server::{Command, Refused};
use crate::state::TriggerRecord;

/// Answers `command` with "the daemon is stopping".
pub(super) fn refuse(command: Command) {
    match command {
        Command::Trigger { reply, .. } => {
            let _ = reply.send(Err(Refused::Stopping));
        }
        Command::Resume { reply, .. } => {
            let _ = reply.send(Err(Refused::Stopping));
        }
    }
}

/// How a run task ended, for the circuit and the records.
enum Outcome<'a> {
    /// A report: the run happened (whatever its status).
    Report(&'a RunReport),
    /// No run: its files were invalid, or it stopped outside its report.
    NotRun(String),
    /// The task was aborted (grace period over) or its run was lost.
    Abandoned,
    /// Another run of the job (a `sluice run` by hand, say) held its lock: nothing ran, and
    /// that says nothing about the job's health.
    Busy,
}

impl Daemon {
    /// Carries out one command of the HTTP server.
    pub(super) fn command(&mut self, command: Command) {
        match command {
            Command::Trigger {
                job,
                requested_by,
                date,
                vars,
                reply,
            } => {
                let _ = reply.send(self.trigger(&job, &requested_by, date.as_deref(), vars));
            }
            Command::Resume { job, reply } => {
                let _ = reply.send(self.resume(&job));
            }
        }
    }

    fn knows(&self, job: &str) -> bool {
        self.project.jobs.contains_key(job) || self.entries.contains_key(job)
    }

    /// Starts a run of `job` now for the API token `requested_by`, for the logical date
    /// `date` (default: now) with `vars`, unless it is running.
    fn trigger(
        &mut self,
        job: &str,
        requested_by: &str,
        date: Option<&str>,
        vars: BTreeMap<String, String>,
    ) -> Result<TriggerRecord, Refused> {
        if !self.knows(job) {
            // The job may have been added since the last reload.
            self.reload();
            if !self.knows(job) {
                return Err(Refused::UnknownJob(job.to_string()));
            }
        }
        let params = self.trigger_params(job, date, vars)?;
        if let Some(running) = self.busy.get(job) {
            return Err(Refused::Running(format!(
                "a run of job `{job}` is in progress ({running}); runs of a job never overlap"
            )));
        }
        let mut record = self
            .store
            .insert_trigger(job, requested_by)
            .map_err(|e| Refused::State(e.to_string()))?;
        log(&format!(
            "job {job}: run asked for through the API by token `{requested_by}` (trigger {})",
            record.trigger_id
        ));
        let _ = self
            .store
            .update_trigger(&record.trigger_id, "running", None);
        record.status = "running".into();
        self.spawn_run(job, Origin::Trigger(record.trigger_id.clone()), params);
        Ok(record)
    }

    /// The parameters of an API trigger, checked against the job as last loaded.
    fn trigger_params(
        &self,
        job: &str,
        date: Option<&str>,
        vars: BTreeMap<String, String>,
    ) -> Result<RunParams, Refused> {
        let Some(spec) = self.project.jobs.get(job) else {
            // Known only from a schedule whose file is now invalid: the run falls back to the
            // last valid version, which checks the vars when it loads.
            return Ok(RunParams {
                logical_date: Utc::now(),
                vars,
                zone: None,
                trigger: "api",
            });
        };
        for (name, value) in &vars {
            if !spec.vars.contains_key(name) {
                return Err(Refused::Invalid(format!(
                    "job `{job}` declares no var `{name}` (it declares: {})",
                    spec.vars.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            params::check_var(name, value).map_err(|e| Refused::Invalid(e.into()))?;
        }
        let logical_date = match date {
            Some(d) => params::parse_date(d, params::zone_of(spec))
                .map_err(|e| Refused::Invalid(e.into()))?,
            None => Utc::now(),
        };
        Ok(RunParams {
            logical_date,
            vars,
            zone: None,
            trigger: "api",
        })
    }

    /// Closes `job`'s circuit; returns whether it was paused.
    pub(super) fn resume(&mut self, job: &str) -> Result<bool, Refused> {
        if !self.knows(job) {
            return Err(Refused::UnknownJob(job.to_string()));
        }
        let was_paused = self
            .store
            .close_circuit(job)
            .map_err(|e| Refused::State(e.to_string()))?;
        self.shared.metrics.set_paused(job, false);
        if was_paused {
            log(&format!("job {job}: resumed; its next fire runs"));
        }
        Ok(was_paused)
    }

    /// Records how a run ended and frees its job for the next fire. A state store that
    /// cannot be written is logged: the fire is claimed, so it is never run again either way.
    pub(super) fn finished(
        &mut self,
        done: std::result::Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
    ) {
        let f = match done {
            Ok((id, f)) => {
                self.tasks.remove(&id);
                f
            }
            // Panics are caught inside the task, so only an aborted task ends here.
            Err(e) => {
                if let Some((job, origin)) = self.tasks.remove(&e.id()) {
                    self.free(&job, None);
                    self.settle(&job, &origin, &Outcome::Abandoned);
                }
                return;
            }
        };
        self.free(&f.job, f.valid);
        // An upstream job may have committed while this one ran.
        self.catch_up_after(&f.job);
        match &f.result {
            Ok(Some(report)) => {
                self.shared.metrics.run_finished(report);
                tracing::info!(target: "sluice::daemon", job = %f.job, run_id = %report.run_id, "{}", format!(
                    "job {}: {}: run {} {} ({} rows read, {} written, {} quarantined{})",
                    f.job,
                    f.origin,
                    report.run_id,
                    report.status.name(),
                    report.rows.read,
                    report.rows.written,
                    report.rows.quarantined,
                    report
                        .error
                        .as_ref()
                        .map(|e| format!("; {}", e.message))
                        .unwrap_or_default()
                ));
                self.settle(&f.job, &f.origin, &Outcome::Report(report));
                if report.status.committed() {
                    self.start_downstream(report);
                }
            }
            Ok(None) => self.settle(&f.job, &f.origin, &Outcome::NotRun("no run".into())),
            Err(e) if crate::recovery::is_held_by_another_run(e) => {
                self.shared.metrics.fire(&f.job, "skipped_overlap");
                log(&format!("job {}: {}: not run: {e}", f.job, f.origin));
                self.settle(&f.job, &f.origin, &Outcome::Busy);
            }
            Err(e) => {
                self.shared.metrics.not_run(&f.job);
                log(&format!("job {}: {}: not run: {e}", f.job, f.origin));
                self.settle(&f.job, &f.origin, &Outcome::NotRun(e.to_string()));
            }
        }
    }

    /// Records `outcome` for the fire or trigger, and counts it in the job's circuit: a
    /// committed run closes it; a failed scheduled fire counts towards pausing the job.
    fn settle(&mut self, job: &str, origin: &Origin, outcome: &Outcome<'_>) {
        let (status, run_id) = match outcome {
            Outcome::Report(r) => ("done", Some(r.run_id.as_str())),
            Outcome::NotRun(_) => ("failed", None),
            Outcome::Abandoned => ("abandoned", None),
            Outcome::Busy => ("skipped", None),
        };
        let recorded = match origin {
            Origin::Fire(at) | Origin::After { at, .. } => {
                self.store.finish_fire(job, *at, status, run_id)
            }
            Origin::Trigger(id) => self.store.update_trigger(id, status, run_id),
        };
        if let Err(e) = recorded {
            log(&format!(
                "job {job}: {origin}: cannot record it as {status} in the state store: {e}"
            ));
        }
        let failure = match outcome {
            Outcome::Report(r) if r.status.committed() => None,
            Outcome::Report(r) => Some(r.error.as_ref().map_or_else(
                || format!("status {}", r.status.name()),
                |e| e.message.clone(),
            )),
            Outcome::NotRun(message) => Some(message.clone()),
            // The daemon stopped it, or another run had the job: nothing about the job's health.
            Outcome::Abandoned | Outcome::Busy => return,
        };
        match (failure, origin) {
            (None, _) => self.close_circuit_after_success(job),
            (Some(message), Origin::Fire(at)) => self.count_failure(job, *at, &message),
            // A run asked for by hand does not pause the schedule; a job run `after` others
            // has no schedule to pause.
            (Some(_), Origin::Trigger(_) | Origin::After { .. }) => {}
        }
    }

    fn close_circuit_after_success(&mut self, job: &str) {
        match self.store.close_circuit(job) {
            Ok(true) => {
                log(&format!(
                    "job {job}: a run succeeded; the job is no longer paused"
                ));
                self.shared.metrics.set_paused(job, false);
            }
            Ok(false) => {}
            Err(e) => log(&format!("job {job}: cannot reset its failure count: {e}")),
        }
    }

    /// Counts a failed fire; pauses the job (and queues the alert) when it makes
    /// `pause_after_failures` in a row.
    fn count_failure(&mut self, job: &str, fire: DateTime<Utc>, message: &str) {
        let Some(pause_after) = self
            .entries
            .get(job)
            .map(|e| e.schedule.pause_after_failures)
        else {
            return;
        };
        let project = self.project.clone();
        let counted = self.store.record_failure(job, message, pause_after, |n| {
            crate::alerts::circuit_opened(&project, job, n, message)
        });
        match counted {
            Ok((circuit, true)) => {
                self.shared.metrics.set_paused(job, true);
                log(&format!(
                    "job {job}: paused after {} failed fires in a row (the last at {}); its fires are skipped until `sluice resume {job}` (or POST /api/v1/jobs/{job}/resume)",
                    circuit.failures,
                    show(fire)
                ));
            }
            Ok((circuit, false)) if pause_after > 0 => log(&format!(
                "job {job}: {} failed fire(s) in a row; paused at {pause_after}",
                circuit.failures
            )),
            Ok(_) => {}
            Err(e) => log(&format!("job {job}: cannot count the failed fire: {e}")),
        }
    }
}
