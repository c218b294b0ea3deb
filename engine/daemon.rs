//! The `sluice schedule` daemon: runs every job that has a `schedule`, at its fire times, in
//! its time zone ([`crate::config::schedule`]).
//!
//! ```text
//! start ──▶ per scheduled job: last fire taken (state store) ──▶ missed fires? ──misfire──▶ run once now / skip
//!   loop: sleep until the earliest next fire (or a shutdown signal)
//!         fire due ──claim (state store: `running`)──▶ run in its own task ──▶ record `done` + run id
//!         previous run of the job still running ──▶ this fire is skipped and logged (no overlap)
//!   SIGTERM / Ctrl-C ──▶ no new runs; running ones get `grace` to finish, then are aborted
//!                        (a run aborted before its commit leaves its target untouched)
//! ```
//!
//! **Crash points.** A fire is claimed in the state store *before* its run starts, so a daemon
//! killed at any instant never runs that fire twice: at the next start a fire still marked
//! `running` is recorded as `abandoned` and not run again. The run itself follows the commit
//! protocol ([`crate::commit`]): killed before its commit, the target is as before and the
//! watermark has not moved; killed after it, the next run of the job records it from the
//! target's commit record. The next fire runs normally. Runs of one job never overlap: the
//! daemon runs one at a time per job, and the job lock ([`crate::recovery::lock_job`]) also
//! keeps out a `sluice run` of the same job started by hand or by another daemon.
//!
//! Each run reloads the project, so an edited job, mapping or model takes effect at its next
//! fire; when the files the job uses have become invalid, the last valid version runs and the
//! problems are logged. The set of schedules is read again when a job file changes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::task::JoinSet;

use crate::config::schedule::Schedule;
use crate::config::spec::Misfire;
use crate::config::Project;
use crate::db::ExtractMode;
use crate::error::{Error, Result};
use crate::report::RunReport;
use crate::request::Attempt;
use crate::run::NoProgress;
use crate::state::StateStore;

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// After a shutdown signal, how long running runs may take to finish before they are
    /// aborted (their targets are then left untouched).
    pub grace: Duration,
    /// How often job files are checked for changes to the set of schedules.
    pub reload_every: Duration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            grace: Duration::from_secs(300),
            reload_every: Duration::from_secs(5),
        }
    }
}

/// One scheduled job as the loop tracks it.
struct Entry {
    schedule: Schedule,
    /// The next fire to take.
    next: Option<DateTime<Utc>>,
    /// The fire whose run is in progress, if any.
    running: Option<DateTime<Utc>>,
    /// The project as the job's last run that got past compiling loaded it, run again when
    /// the job's files become invalid.
    last_valid: Option<Arc<Project>>,
    /// The job or its schedule was removed while a run was in progress: no new fires, and
    /// the entry goes when that run ends.
    retired: bool,
}

/// What a run task returns: the job, its fire, how the run ended, and the project it ran
/// with when that project compiled (the job's new last valid version).
struct Finished {
    job: String,
    fire: DateTime<Utc>,
    result: Result<Option<RunReport>>,
    valid: Option<Arc<Project>>,
}

/// The daemon's state: the scheduled jobs and their runs in progress.
struct Daemon {
    root: PathBuf,
    store: StateStore,
    entries: BTreeMap<String, Entry>,
    runs: JoinSet<Finished>,
    /// Which job and fire each run task is, to free the job if its task ends abnormally.
    tasks: HashMap<tokio::task::Id, (String, DateTime<Utc>)>,
}

/// Runs the daemon for the project at `root` until `shutdown` completes, then lets running
/// runs finish within `options.grace`.
///
/// # Errors
/// The state store cannot be opened. After that nothing stops the daemon but `shutdown`:
/// errors of single runs are in their reports and the log, and a fire that cannot be claimed
/// in the state store is not run (and logged).
pub async fn run(
    root: &Path,
    options: &DaemonOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let mut daemon = Daemon::start(root)?;
    let mut files = FilesStamp::of(root);
    let mut last_reload = tokio::time::Instant::now();
    tokio::pin!(shutdown);
    loop {
        let wait = sleep_for(&daemon.entries, options.reload_every);
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = daemon.runs.join_next_with_id(), if !daemon.runs.is_empty() => {
                daemon.finished(done);
                continue;
            }
            () = tokio::time::sleep(wait) => {}
        }
        if last_reload.elapsed() >= options.reload_every {
            last_reload = tokio::time::Instant::now();
            if files.changed(root) {
                daemon.reload();
            }
        }
        daemon.take_due_fires();
    }
    daemon.drain(options.grace).await;
    Ok(())
}

impl Daemon {
    /// Opens the state store and computes each scheduled job's first fire.
    fn start(root: &Path) -> Result<Daemon> {
        let (project, diags) = Project::load_partial(root);
        if !diags.is_empty() {
            log(&format!(
                "warning: some files have problems; a job whose own file is invalid is not scheduled until it is fixed, and a job whose mapping or model is invalid fails its fires:\n{}",
                diags.to_string().trim_end()
            ));
        }
        let store = StateStore::open(&project.path(&project.settings.state_dir))?;
        let mut daemon = Daemon {
            root: root.to_path_buf(),
            store,
            entries: BTreeMap::new(),
            runs: JoinSet::new(),
            tasks: HashMap::new(),
        };
        let now = Utc::now();
        for (name, schedule) in schedules(&project) {
            let entry = daemon.start_entry(&name, schedule, now)?;
            daemon.entries.insert(name, entry);
        }
        log(&format!(
            "scheduling {} job(s): {}",
            daemon.entries.len(),
            daemon
                .entries
                .iter()
                .map(|(n, e)| format!(
                    "{n} [{}, next {}]",
                    e.schedule.describe(),
                    e.next.map_or("never".into(), show)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(daemon)
    }

    /// The loop's entry for `job` when it is first scheduled: a fire left `running` by a
    /// daemon that died is recorded as abandoned; fires missed since the last one follow the
    /// misfire policy.
    fn start_entry(&self, job: &str, schedule: Schedule, now: DateTime<Utc>) -> Result<Entry> {
        let last = self.store.last_fire(job)?;
        if let Some(l) = last.as_ref().filter(|l| l.status == "running") {
            self.store.finish_fire(job, l.fire_at, "abandoned", None)?;
            log(&format!(
                "job {job}: the daemon stopped during the run of the fire at {}; that run was abandoned (its target is as before it, or its commit is recorded at the next run) and is not run again",
                show(l.fire_at)
            ));
        }
        let missed = last.as_ref().and_then(|l| {
            schedule
                .latest_at_or_before(now)
                .filter(|latest| *latest > l.fire_at)
        });
        let next = match (missed, schedule.misfire) {
            (Some(fire), Misfire::RunOnce) => {
                log(&format!(
                    "job {job}: fires were missed while the daemon was down (latest {}); misfire = \"run_once\": running it once now",
                    show(fire)
                ));
                Some(fire)
            }
            (Some(fire), Misfire::Skip) => {
                self.store.claim_fire(job, fire, "skipped")?;
                log(&format!(
                    "job {job}: fires were missed while the daemon was down (latest {}); misfire = \"skip\": waiting for the next one",
                    show(fire)
                ));
                schedule.next_after(now)
            }
            (None, _) => schedule.next_after(now),
        };
        Ok(Entry {
            schedule,
            next,
            running: None,
            last_valid: None,
            retired: false,
        })
    }

    /// Takes every fire that is due: claims it in the state store, then starts its run. A
    /// fire of a job whose previous run is still running is skipped (runs of a job never
    /// overlap), as is a fire the state store shows taken already (by another daemon).
    fn take_due_fires(&mut self) {
        let now = Utc::now();
        let due: Vec<(String, DateTime<Utc>)> = self
            .entries
            .iter_mut()
            .filter(|(_, e)| !e.retired)
            .filter_map(|(job, e)| {
                let fire = e.next.filter(|t| *t <= now)?;
                // Fires that passed while the loop was busy are not run one by one: the
                // next fire is the first one after now.
                e.next = e.schedule.next_after(now.max(fire));
                if e.next.is_none() {
                    log(&format!(
                        "job {job}: its schedule has no fire after this one"
                    ));
                }
                Some((job.clone(), fire))
            })
            .collect();
        for (job, fire) in due {
            self.take_fire(&job, fire);
        }
    }

    /// Claims `job`'s fire at `fire` and starts its run, or logs why not.
    fn take_fire(&mut self, job: &str, fire: DateTime<Utc>) {
        let Some(entry) = self.entries.get_mut(job) else {
            return;
        };
        if let Some(running) = entry.running {
            log(&format!(
                "job {job}: fire at {} skipped: the run of the fire at {} is still running",
                show(fire),
                show(running)
            ));
            return;
        }
        match self.store.claim_fire(job, fire, "running") {
            Ok(true) => {}
            Ok(false) => {
                log(&format!(
                    "job {job}: fire at {} skipped: the state store shows it taken already (by another daemon)",
                    show(fire)
                ));
                return;
            }
            Err(e) => {
                log(&format!(
                    "job {job}: fire at {} not run: it cannot be recorded in the state store: {e}",
                    show(fire)
                ));
                return;
            }
        }
        entry.running = Some(fire);
        log(&format!("job {job}: fire at {}: run starting", show(fire)));
        let current = load_project(&self.root, job);
        let previous = entry.last_valid.clone();
        let name = job.to_string();
        let task = self.runs.spawn(async move {
            let (result, valid) = run_fire(current, previous, &name).await;
            Finished {
                job: name,
                fire,
                result,
                valid,
            }
        });
        self.tasks.insert(task.id(), (job.to_string(), fire));
    }

    /// Records how a run ended and frees its job for the next fire. A state store that
    /// cannot be written is logged: the fire is claimed, so it is never run again either way.
    fn finished(
        &mut self,
        done: std::result::Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
    ) {
        let (id, f) = match done {
            Ok((id, f)) => (id, f),
            // Panics are caught inside the task, so only an aborted task ends here.
            Err(e) => {
                if let Some((job, fire)) = self.tasks.remove(&e.id()) {
                    self.free(&job, None);
                    self.record(&job, fire, "abandoned", None);
                }
                return;
            }
        };
        self.tasks.remove(&id);
        self.free(&f.job, f.valid);
        match f.result {
            Ok(Some(report)) => {
                self.record(&f.job, f.fire, "done", Some(&report.run_id));
                log(&format!(
                    "job {}: fire at {}: run {} {} ({} rows read, {} written, {} quarantined{})",
                    f.job,
                    show(f.fire),
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
            }
            Ok(None) => self.record(&f.job, f.fire, "done", None),
            Err(e) => {
                self.record(&f.job, f.fire, "failed", None);
                log(&format!(
                    "job {}: fire at {}: not run: {e}",
                    f.job,
                    show(f.fire)
                ));
            }
        }
    }

    /// Marks `job` as not running (dropping a retired entry) and keeps its new last valid
    /// project.
    fn free(&mut self, job: &str, valid: Option<Arc<Project>>) {
        let Some(entry) = self.entries.get_mut(job) else {
            return;
        };
        entry.running = None;
        if valid.is_some() {
            entry.last_valid = valid;
        }
        if entry.retired {
            self.entries.remove(job);
        }
    }

    /// Writes how a fire ended to the state store; a failure is logged.
    fn record(&self, job: &str, fire: DateTime<Utc>, status: &str, run_id: Option<&str>) {
        if let Err(e) = self.store.finish_fire(job, fire, status, run_id) {
            log(&format!(
                "job {job}: fire at {}: cannot record it as {status} in the state store: {e}",
                show(fire)
            ));
        }
    }

    /// Reads the schedules again after a job file changed. A job whose file is now invalid
    /// keeps its previous schedule (the problem is logged); a removed job or schedule is
    /// dropped, after its run in progress ends.
    fn reload(&mut self) {
        let (project, diags) = Project::load_partial(&self.root);
        let broken = |job: &str| {
            diags
                .0
                .iter()
                .any(|d| d.file == Path::new("jobs").join(format!("{job}.toml")))
        };
        if !diags.is_empty() {
            log(&format!(
                "warning: files changed and some have problems; jobs whose file is invalid keep their previous schedule:\n{}",
                diags.to_string().trim_end()
            ));
        }
        let now = Utc::now();
        let wanted: BTreeMap<String, Schedule> = schedules(&project).into_iter().collect();
        self.entries.retain(|job, e| {
            let keep = wanted.contains_key(job) || broken(job);
            if !keep && e.running.is_some() {
                e.retired = true;
            }
            keep || e.running.is_some()
        });
        for (job, schedule) in wanted {
            self.reschedule(&job, schedule, now);
        }
    }

    /// Applies `job`'s schedule as read now.
    fn reschedule(&mut self, job: &str, schedule: Schedule, now: DateTime<Utc>) {
        if let Some(e) = self.entries.get_mut(job) {
            if e.schedule != schedule || e.retired {
                log(&format!("job {job}: schedule now {}", schedule.describe()));
                e.next = schedule.next_after(now);
                e.schedule = schedule;
                e.retired = false;
            }
            return;
        }
        log(&format!("job {job}: scheduled {}", schedule.describe()));
        match self.start_entry(job, schedule, now) {
            Ok(entry) => {
                self.entries.insert(job.to_string(), entry);
            }
            Err(e) => log(&format!(
                "job {job}: not scheduled: the state store cannot be read: {e}"
            )),
        }
    }

    /// After a shutdown signal: waits up to `grace` for running runs, then aborts the rest
    /// (their fires are recorded as abandoned; a run aborted before its commit changed
    /// nothing, and one aborted after it is recorded from its commit record by the next run).
    async fn drain(&mut self, grace: Duration) {
        if !self.runs.is_empty() {
            log(&format!(
                "stopping: no new runs; waiting up to {:.0} s for {} running run(s)",
                grace.as_secs_f64(),
                self.runs.len()
            ));
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !self.runs.is_empty() {
            match tokio::time::timeout_at(deadline, self.runs.join_next_with_id()).await {
                Ok(Some(done)) => self.finished(done),
                Ok(None) => break,
                Err(_) => {
                    log("grace period over: aborting the runs still in progress");
                    self.runs.abort_all();
                    while let Some(done) = self.runs.join_next_with_id().await {
                        self.finished(done);
                    }
                }
            }
        }
        log("stopped");
    }
}

/// The jobs of `project` that have a schedule.
fn schedules(project: &Project) -> Vec<(String, Schedule)> {
    project
        .jobs
        .values()
        .filter_map(|j| j.schedule.clone().map(|s| (j.name.clone(), s)))
        .collect()
}

/// How long to sleep: until the earliest next fire, but at most `cap` (so file changes are
/// noticed and a clock jump is caught up on).
fn sleep_for(entries: &BTreeMap<String, Entry>, cap: Duration) -> Duration {
    let now = Utc::now();
    entries
        .values()
        .filter(|e| !e.retired)
        .filter_map(|e| e.next)
        .min()
        .map_or(cap, |t| (t - now).to_std().unwrap_or(Duration::ZERO))
        .min(cap)
}

/// The project to run `job` with, as its files are now; `None` (the problems logged) when
/// the files the job uses are invalid.
fn load_project(root: &Path, job: &str) -> Option<Arc<Project>> {
    match Project::load_for_job(root, job) {
        Ok((project, others)) => {
            if !others.is_empty() {
                log(&format!(
                    "job {job}: files it does not use have problems; running it anyway:\n{}",
                    others.to_string().trim_end()
                ));
            }
            Some(Arc::new(project))
        }
        Err(diags) => {
            log(&format!(
                "job {job}: its files have problems:\n{}",
                diags.to_string().trim_end()
            ));
            None
        }
    }
}

/// One scheduled run of `job`: with `current` (the files as they are now) when it loads and
/// compiles, else with `previous` (the version its last run loaded), else not at all. Returns
/// how it ended and the project that compiled.
async fn run_fire(
    current: Option<Arc<Project>>,
    previous: Option<Arc<Project>>,
    job: &str,
) -> (Result<Option<RunReport>>, Option<Arc<Project>>) {
    let mut invalid = None;
    if let Some(project) = current {
        match guarded_run(project.clone(), job).await {
            Err(e @ Error::Config(_)) => invalid = Some(e),
            other => return (other, Some(project)),
        }
    }
    match previous {
        Some(project) => {
            log(&format!(
                "job {job}: its files have problems; running the version its last run loaded{}",
                invalid.map(|e| format!(":\n{e}")).unwrap_or_default()
            ));
            (guarded_run(project.clone(), job).await, Some(project))
        }
        None => (
            Err(invalid.unwrap_or_else(|| Error::Usage {
                message: format!("job `{job}` has no valid version to run"),
                hint: Some("fix the problems logged above; the next fire runs it".into()),
            })),
            None,
        ),
    }
}

/// [`run_once`] with a panic turned into a failed run.
async fn guarded_run(project: Arc<Project>, job: &str) -> Result<Option<RunReport>> {
    crate::producer::catch_panic(run_once(project, job), "running the job").await
}

/// One scheduled run of `job` in `project`: the job lock, retries, the run. An invalid
/// configuration (found while compiling) is an [`Error::Config`].
async fn run_once(project: Arc<Project>, job: &str) -> Result<Option<RunReport>> {
    let job = project.job(job).map_err(|d| Error::config(*d))?.clone();
    let mode = ExtractMode::Incremental;
    crate::request::run_job(
        &project,
        &job,
        || {
            let (project, job, mode) = (project.clone(), job.clone(), mode.clone());
            async move {
                match crate::request::attempt(&project, &job, &mode, &mut NoProgress).await? {
                    Attempt::Invalid(e) => Err(e),
                    Attempt::NotStarted { report, .. } | Attempt::Ran(report) => Ok(Some(report)),
                }
            }
        },
        |attempt, retries, delay| {
            log(&format!(
                "job {}: attempt {attempt} of {} failed for a reason that may pass; nothing was committed; retrying in {:.1} s",
                job.name,
                retries.attempts,
                delay.as_secs_f64()
            ))
        },
    )
    .await
}

/// The modification times of the project's job files, to notice edits.
#[derive(PartialEq)]
struct FilesStamp(Vec<(PathBuf, Option<SystemTime>)>);

impl FilesStamp {
    fn of(root: &Path) -> FilesStamp {
        let mut files: Vec<(PathBuf, Option<SystemTime>)> = std::fs::read_dir(root.join("jobs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| (e.path(), e.metadata().and_then(|m| m.modified()).ok()))
            .collect();
        files.sort();
        FilesStamp(files)
    }

    /// Whether the files changed since the last call; remembers the new state.
    fn changed(&mut self, root: &Path) -> bool {
        let now = FilesStamp::of(root);
        let changed = now != *self;
        *self = now;
        changed
    }
}

fn show(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One log line on standard error, prefixed with the time.
fn log(message: &str) {
    crate::logging::stderr_line(&format!("{} {message}", show(Utc::now())));
}
