//! Jobs run `after` others: when a run commits, each job naming its job in `after` runs for
//! the same logical date, read in the zone of the job that committed (so both see the same
//! `${run.date}`), once every other job it names has committed a run whose logical date falls
//! on that calendar day. The logical date is claimed in the state store like a fire, so the
//! downstream job runs once for it, also with two daemons on one store.
//!
//! Not caught up later: a date whose downstream run could not start (the job was still
//! running, or the daemon stopped between the upstream's commit and the start), or a date
//! older than one the downstream job already ran for. `sluice run JOB --date D` runs it.

use chrono::{DateTime, Utc};

use super::{log, Daemon, Origin};
use crate::config::params::{self, RunParams};
use crate::config::Job;
use crate::report::RunReport;

impl Daemon {
    /// Starts the jobs that run after `report`'s job, for its logical date, where every job
    /// they wait for has committed that day.
    pub(super) fn start_downstream(&mut self, report: &RunReport) {
        let Some(logical) = report
            .logical_date
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
        else {
            return;
        };
        let downstream: Vec<Job> = self
            .project
            .jobs
            .values()
            .filter(|j| j.after.contains(&report.job))
            .cloned()
            .collect();
        for job in downstream {
            self.start_after(&job, &report.job, logical);
        }
    }

    /// Starts `job` for `logical` (the date `upstream` just committed), or logs why not.
    fn start_after(&mut self, job: &Job, upstream: &str, logical: DateTime<Utc>) {
        let name = job.name.as_str();
        let zone = self
            .project
            .jobs
            .get(upstream)
            .map_or(chrono_tz::UTC, params::zone_of);
        let (day, start, end) = params::day_of(zone, logical);
        for u in &job.after {
            match self.store.committed_between(u, start, end) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    log(&format!(
                        "job {name}: {upstream} committed {day}; waiting for {u} to commit {day} too"
                    ));
                    return;
                }
                Err(e) => {
                    log(&format!(
                        "job {name}: not run for {day}: the state store cannot be read: {e}"
                    ));
                    return;
                }
            }
        }
        if let Some(running) = self.busy.get(name) {
            log(&format!(
                "job {name}: not run for {day}: the run of the {running} is still running (runs of a job never overlap); `sluice run {name} --date {day}` runs it"
            ));
            return;
        }
        match self.store.claim_fire(name, logical, "running") {
            Ok(true) => {}
            Ok(false) => {
                log(&format!(
                    "job {name}: not run for {}: it ran for this logical date or a later one already",
                    super::show(logical)
                ));
                return;
            }
            Err(e) => {
                log(&format!(
                    "job {name}: not run for {day}: it cannot be recorded in the state store: {e}"
                ));
                return;
            }
        }
        let origin = Origin::After {
            upstream: upstream.to_string(),
            at: logical,
        };
        let params = RunParams {
            zone: Some(zone),
            ..RunParams::at(logical)
        };
        self.spawn_run(name, origin, params);
    }
}
