//! Jobs run `after` others: when a run commits, each job naming its job in `after` runs for
//! the same logical date, read in the zone of the job that committed (so both see the same
//! `${run.date}`), once every other job it names has committed a run whose logical date falls
//! on that calendar day. The logical date is claimed in the state store like a fire, so the
//! downstream job runs once for it, also with two daemons on one store.
//!
//! Caught up ([`Daemon::catch_up_after`]) when the daemon starts and when the downstream
//! job's run ends: the latest date its upstream jobs committed, if the job has not run for it
//! or a later date (it was still running when the upstream committed, the daemon was down, or
//! the upstream was run by hand). Only the latest: a date older than one the job already ran
//! for is not run again; `sluice run JOB --date D` runs it.

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

    /// Runs `job` (one with `after`) for the latest logical date its upstream jobs committed,
    /// when it has not run for that date or a later one.
    pub(super) fn catch_up_after(&mut self, name: &str) {
        let Some(job) = self
            .project
            .jobs
            .get(name)
            .filter(|j| !j.after.is_empty())
            .cloned()
        else {
            return;
        };
        let parse = |t: &str| DateTime::parse_from_rfc3339(t).ok().map(|t| t.to_utc());
        let mut latest: Option<(DateTime<Utc>, String)> = None;
        for u in &job.after {
            match self.store.latest_committed_date(u) {
                Ok(Some(t)) => {
                    if let Some(t) = parse(&t).filter(|t| latest.as_ref().is_none_or(|l| *t > l.0))
                    {
                        latest = Some((t, u.clone()));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    return log(&format!(
                        "job {name}: cannot read its upstream jobs' runs: {e}"
                    ))
                }
            }
        }
        let Some((logical, upstream)) = latest else {
            return;
        };
        let ran = match self.store.last_fire(name) {
            Ok(last) => last.is_some_and(|l| l.fire_at >= logical),
            Err(e) => return log(&format!("job {name}: cannot read its last run: {e}")),
        };
        if !ran {
            self.start_after(&job, &upstream, logical);
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
            trigger: "after",
            ..RunParams::at(logical)
        };
        self.spawn_run(name, origin, params);
    }
}
