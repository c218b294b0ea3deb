//! The `sluice schedule` daemon: runs every job that has a `schedule`, at its fire times, in
//! its time zone ([`crate::config::schedule`]).
//!
//! ```text
//! start ──▶ per scheduled job: last fire taken (state store) ──▶ missed fires? ──misfire──▶ run once now / skip
//!   loop: sleep until the earliest next fire (or a shutdown signal)
//!         fire due ──claim (state store: `running`)──▶ run in its own task ──▶ record `done` + run id
//!         previous run of the job still running ──▶ this fire is skipped and logged (no overlap)
//!         job paused (its circuit open after failed fires in a row) ──▶ fire skipped
//!   API command (server) ──▶ trigger a run now / resume a paused job ──▶ reply
//!   SIGTERM / Ctrl-C ──▶ no new runs; running ones get `grace` to finish, then are aborted
//!                        (a run aborted before its commit leaves its target untouched)
//! beside the loop: the HTTP server ([`crate::server`]) and the alert courier
//! ([`crate::alerts`]), stopped after the last run ends
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

mod after;
mod commands;
mod runner;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::params::RunParams;
use crate::config::schedule::Schedule;
use crate::config::spec::{Misfire, ServerSpec};
use crate::config::Project;
use crate::error::{Error, Result};
use crate::report::RunReport;
use crate::server::{Command, Shared};
use crate::state::StateStore;

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// After a shutdown signal, how long running runs may take to finish before they are
    /// aborted (their targets are then left untouched).
    pub grace: Duration,
    /// How often job files are checked for changes to the set of schedules.
    pub reload_every: Duration,
    /// Where the HTTP server listens, overriding `[server] listen` (and serving without
    /// API tokens when sluice.toml has no `[server]`).
    pub listen: Option<String>,
    /// `/health` answers 503 when the scheduler loop has not woken for this long (it wakes
    /// every second).
    pub stall_after: Duration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            grace: Duration::from_secs(300),
            reload_every: Duration::from_secs(5),
            listen: None,
            stall_after: Duration::from_secs(10),
        }
    }
}

/// How often the loop wakes at the least: the liveness `/health` reports.
const TICK: Duration = Duration::from_secs(1);

/// How long the alert courier's last pass and open HTTP requests may take after the runs end.
const FINAL_PASS: Duration = Duration::from_secs(15);

/// How often `[retention]` is applied (also once at start).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// One scheduled job as the loop tracks it.
struct Entry {
    schedule: Schedule,
    /// The next fire to take.
    next: Option<DateTime<Utc>>,
    /// The project as the job's last run that got past compiling loaded it, run again when
    /// the job's files become invalid.
    last_valid: Option<Arc<Project>>,
    /// The job or its schedule was removed while a run was in progress: no new fires, and
    /// the entry goes when that run ends.
    retired: bool,
}

/// What started a run.
#[derive(Debug, Clone, PartialEq)]
enum Origin {
    /// A schedule fire, at this instant.
    Fire(DateTime<Utc>),
    /// An API request, with this trigger id.
    Trigger(String),
    /// `upstream`, one of the jobs this one runs `after`, committed the logical date `at`,
    /// and the others committed that day.
    After {
        /// The job whose commit started this run.
        upstream: String,
        /// The logical date (the claim in the state store).
        at: DateTime<Utc>,
    },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Fire(at) => write!(f, "fire at {}", show(*at)),
            Origin::Trigger(id) => write!(f, "API trigger {id}"),
            Origin::After { upstream, at } => {
                write!(f, "after {upstream} committed {}", show(*at))
            }
        }
    }
}

/// What a run task returns: the job, what started it, how the run ended, and the project
/// it ran with when that project compiled (the job's new last valid version).
struct Finished {
    job: String,
    origin: Origin,
    result: Result<Option<RunReport>>,
    valid: Option<Arc<Project>>,
}

/// The daemon's state: the scheduled jobs and their runs in progress.
struct Daemon {
    /// Held while the daemon runs: one daemon per state store.
    _lock: crate::fsutil::Lock,
    root: PathBuf,
    store: StateStore,
    /// The project as last read (for `[alerts]` and the set of jobs).
    project: Arc<Project>,
    shared: Arc<Shared>,
    entries: BTreeMap<String, Entry>,
    /// The jobs with a run in progress, and what started it.
    busy: HashMap<String, Origin>,
    runs: JoinSet<Finished>,
    /// Which job and origin each run task is, to free the job if its task ends abnormally.
    tasks: HashMap<tokio::task::Id, (String, Origin)>,
}

/// Runs the daemon for the project at `root` until `shutdown` completes, then lets running
/// runs finish within `options.grace`.
///
/// # Errors
/// The state store cannot be opened, or the HTTP server cannot listen. After that nothing
/// stops the daemon but `shutdown`: errors of single runs are in their reports and the log,
/// and a fire that cannot be claimed in the state store is not run (and logged).
pub async fn run(
    root: &Path,
    options: &DaemonOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let (mut daemon, mut commands) = Daemon::start(root, options.stall_after)?;
    let (stop, stopped) = watch::channel(false);
    let server = daemon.start_server(options, stopped.clone()).await?;
    let courier = daemon.start_courier(stopped);
    let mut files = FilesStamp::of(root);
    let mut last_reload = tokio::time::Instant::now();
    let mut last_prune: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let wait = sleep_for(&daemon.entries, TICK);
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = daemon.runs.join_next_with_id(), if !daemon.runs.is_empty() => {
                daemon.finished(done);
                continue;
            }
            Some(command) = commands.recv() => daemon.command(command),
            () = tokio::time::sleep(wait) => {}
        }
        daemon.shared.tick(Utc::now());
        if last_reload.elapsed() >= options.reload_every {
            last_reload = tokio::time::Instant::now();
            // Here, not only in the courier: with no courier (the webhook's secret unset, say)
            // undelivered alerts must still show.
            if let Ok(n) = daemon.store.undelivered_alerts() {
                daemon.shared.metrics.set_alerts_undelivered(n);
            }
            if files.changed(root) {
                daemon.reload();
            }
        }
        daemon.take_due_fires();
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(tokio::time::Instant::now());
            daemon.prune();
        }
    }
    refuse_pending(&mut commands);
    daemon.drain(options.grace).await;
    let _ = stop.send(true);
    // The last alert pass and open HTTP requests get a bounded time: the service manager
    // waits for the grace period, not for a webhook that hangs.
    for task in [server, courier].into_iter().flatten() {
        let _ = tokio::time::timeout(FINAL_PASS, task).await;
    }
    log("stopped");
    Ok(())
}

/// After the shutdown signal: commands not taken yet are answered "stopping", and no more
/// are accepted.
fn refuse_pending(commands: &mut mpsc::Receiver<Command>) {
    commands.close();
    while let Ok(command) = commands.try_recv() {
        commands::refuse(command);
    }
}

impl Daemon {
    /// Opens the state store and computes each scheduled job's first fire.
    fn start(root: &Path, stall_after: Duration) -> Result<(Daemon, mpsc::Receiver<Command>)> {
        let (project, diags) = Project::load_partial(root);
        if !diags.is_empty() {
            log(&format!(
                "warning: some files have problems; a job whose own file is invalid is not scheduled until it is fixed, and a job whose mapping or model is invalid fails its fires:\n{}",
                diags.to_string().trim_end()
            ));
        }
        let state_dir = project.path(&project.settings.state_dir);
        // One daemon per state store: a second one would take the first one's running
        // fires and triggers for abandoned ones at its start.
        let lock_path = state_dir.join("locks").join("daemon.lock");
        let lock = crate::fsutil::Lock::try_acquire(&lock_path).map_err(|e| Error::Usage {
            message: if e.kind() == std::io::ErrorKind::WouldBlock {
                format!(
                    "another `sluice schedule` is running on this project's state store ({})",
                    state_dir.display()
                )
            } else {
                format!("cannot take the daemon lock {}: {e}", lock_path.display())
            },
            hint: Some("run one daemon per project; stop the other one first".into()),
        })?;
        let store = StateStore::of(&project)?;
        // Sharing a PostgreSQL store, queued and running triggers may be another daemon's.
        let abandoned = if store.is_shared() {
            0
        } else {
            store.abandon_triggers()?
        };
        if abandoned > 0 {
            log(&format!(
                "{abandoned} API-triggered run(s) of a daemon that stopped are recorded as abandoned"
            ));
        }
        let state_url = project.settings.state_url.clone();
        let (shared, commands) = Shared::new(root.to_path_buf(), state_dir, state_url, stall_after);
        let mut daemon = Daemon {
            _lock: lock,
            root: root.to_path_buf(),
            store,
            project: Arc::new(project),
            shared,
            entries: BTreeMap::new(),
            busy: HashMap::new(),
            runs: JoinSet::new(),
            tasks: HashMap::new(),
        };
        let now = Utc::now();
        for (name, schedule) in schedules(&daemon.project) {
            let entry = daemon.start_entry(&name, schedule, now)?;
            daemon.entries.insert(name, entry);
        }
        let after: Vec<String> = daemon
            .project
            .jobs
            .values()
            .filter(|j| !j.after.is_empty())
            .map(|j| j.name.clone())
            .collect();
        for name in after {
            daemon.catch_up_after(&name);
        }
        daemon.seed_metrics();
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
        Ok((daemon, commands))
    }

    /// Metrics that describe the state store as the daemon finds it: last successes and
    /// paused jobs.
    fn seed_metrics(&self) {
        for job in self.entries.keys() {
            let last = self
                .store
                .runs(job, 1, true)
                .ok()
                .and_then(|r| r.into_iter().next());
            if let Some(at) = last.and_then(|r| DateTime::parse_from_rfc3339(&r.finished_at).ok()) {
                self.shared.metrics.set_last_success(job, at.to_utc());
            }
            let paused = self
                .store
                .circuit(job)
                .ok()
                .flatten()
                .is_some_and(|c| c.opened_at.is_some());
            self.shared.metrics.set_paused(job, paused);
        }
    }

    /// Starts the HTTP server when `[server]` or `--listen` asks for one; it stops when
    /// `stopped` turns true.
    async fn start_server(
        &self,
        options: &DaemonOptions,
        mut stopped: watch::Receiver<bool>,
    ) -> Result<Option<tokio::task::JoinHandle<()>>> {
        let mut spec = match (&self.project.settings.server, &options.listen) {
            (None, None) => return Ok(None),
            (Some(spec), _) => spec.clone(),
            (None, Some(_)) => ServerSpec {
                listen: serde_spanned::Spanned::new(0..0, String::new()),
                max_body_bytes: 64 * 1024,
                tokens: BTreeMap::new(),
                tls_cert: None,
                tls_key: None,
            },
        };
        if let Some(listen) = &options.listen {
            spec.listen = serde_spanned::Spanned::new(0..0, listen.clone());
        }
        let tls = match (&spec.tls_cert, &spec.tls_key) {
            (Some(cert), Some(key)) => Some(crate::server::tls::acceptor(
                &self.project.path(cert.get_ref()),
                &self.project.path(key.get_ref()),
            )?),
            _ => None,
        };
        let listener = crate::server::bind(&spec).await?;
        let address = listener
            .local_addr()
            .map_or_else(|_| spec.listen.get_ref().clone(), |a| a.to_string());
        log(&format!(
            "HTTP server on {}://{address}: /health, /metrics, /openapi.json, /api/v1 ({} token(s))",
            if tls.is_some() { "https" } else { "http" },
            spec.tokens.len()
        ));
        let router = crate::server::router(self.shared.clone(), &spec);
        let until_stopped = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        Ok(Some(tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    crate::server::tls::serve(listener, acceptor, router, until_stopped).await
                }
                None => {
                    if let Err(e) = crate::server::serve(listener, router, until_stopped).await {
                        log(&format!("the HTTP server stopped: {e}"));
                    }
                }
            }
        })))
    }

    /// Starts delivering the outbox's alerts every second when `[alerts]` is set; a last
    /// pass runs when `stopped` turns true.
    fn start_courier(
        &self,
        mut stopped: watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let courier = match crate::alerts::Courier::of(&self.project) {
            Ok(Some(c)) => c,
            Ok(None) => return None,
            Err(e) => {
                log(&format!("alerts are not sent: {e}"));
                return None;
            }
        };
        let mut store = match self.shared.store() {
            Ok(s) => s,
            Err(e) => {
                log(&format!("alerts are not sent: {e}"));
                return None;
            }
        };
        let shared = self.shared.clone();
        Some(tokio::spawn(async move {
            loop {
                let last = *stopped.borrow();
                match courier.deliver_due(&mut store).await {
                    Ok(d) if d.failed > 0 => log(&format!(
                        "{} alert(s) could not be delivered to the webhook; retrying with backoff",
                        d.failed
                    )),
                    Ok(_) => {}
                    Err(e) => log(&format!("alerts: {e}")),
                }
                if let Ok(n) = store.undelivered_alerts() {
                    shared.metrics.set_alerts_undelivered(n);
                }
                if last {
                    break;
                }
                let _ = tokio::time::timeout(TICK, stopped.changed()).await;
            }
        }))
    }

    /// The loop's entry for `job` when it is first scheduled: a fire left `running` by a
    /// daemon that died is recorded as abandoned; fires missed since the last one follow the
    /// misfire policy.
    fn start_entry(&self, job: &str, schedule: Schedule, now: DateTime<Utc>) -> Result<Entry> {
        let last = self.store.last_fire(job)?;
        // A fire left `running` in a shared store may be another daemon's, still running:
        // it is abandoned only when no run holds the job's lock.
        let left = match last.as_ref().filter(|l| l.status == "running") {
            Some(_) if self.store.is_shared() => self.store.job_lock_free(job)?,
            Some(_) => true,
            None => false,
        };
        if let Some(l) = last.as_ref().filter(|_| left) {
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
            last_valid: None,
            retired: false,
        })
    }

    /// Takes every fire that is due: claims it in the state store, then starts its run. A
    /// fire of a job whose previous run is still running is skipped (runs of a job never
    /// overlap), as is a fire the state store shows taken already (by another daemon) and a
    /// fire of a paused job.
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
        if let Some(running) = self.busy.get(job) {
            log(&format!(
                "job {job}: fire at {} skipped: the run of the {running} is still running",
                show(fire),
            ));
            self.shared.metrics.fire(job, "skipped_overlap");
            return;
        }
        let paused = match self.store.circuit(job) {
            Ok(c) => c.and_then(|c| c.opened_at),
            Err(e) => {
                log(&format!(
                    "job {job}: fire at {} not run: the state store cannot be read: {e}",
                    show(fire)
                ));
                return;
            }
        };
        let status = if paused.is_some() {
            "skipped"
        } else {
            "running"
        };
        match self.store.claim_fire(job, fire, status) {
            Ok(true) => {}
            Ok(false) => {
                log(&format!(
                    "job {job}: fire at {} skipped: the state store shows it taken already (by another daemon)",
                    show(fire)
                ));
                self.shared.metrics.fire(job, "skipped_claimed");
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
        if let Some(since) = paused {
            log(&format!(
                "job {job}: fire at {} skipped: the job is paused since {since} after failed fires in a row; `sluice resume {job}` runs its fires again",
                show(fire)
            ));
            self.shared.metrics.fire(job, "skipped_paused");
            return;
        }
        self.shared.metrics.fire(job, "run");
        let params = RunParams {
            trigger: "schedule",
            ..RunParams::at(fire)
        };
        self.spawn_run(job, Origin::Fire(fire), params);
    }

    /// Applies `[retention]` on a blocking thread (file deletions and state-store writes must
    /// not stall the loop); what it deleted, or why it could not, is logged.
    fn prune(&self) {
        if !self.project.settings.retention.is_set() {
            return;
        }
        let project = self.project.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            match runtime.block_on(crate::retention::prune(&project, Utc::now(), false)) {
                Ok(p) if p == crate::retention::Pruned::default() => {}
                Ok(p) => log(&format!(
                    "retention: deleted {} run report(s), {} run(s) of quarantined rows, {} run(s) and {} other row(s) of history",
                    p.reports, p.quarantined_runs, p.runs, p.other_rows
                )),
                Err(e) => log(&format!("retention: nothing pruned: {e}")),
            }
        });
    }

    /// Starts the run of `job` for `origin` with `params` in its own task, and marks the job
    /// busy.
    fn spawn_run(&mut self, job: &str, origin: Origin, params: RunParams) {
        log(&format!("job {job}: {origin}: run starting"));
        self.busy.insert(job.to_string(), origin.clone());
        let previous = self.entries.get(job).and_then(|e| e.last_valid.clone());
        let name = job.to_string();
        let task_origin = origin.clone();
        let root = self.root.clone();
        let shared = self.shared.clone();
        // Every line logged during the run carries its job, origin and (once known) run id.
        let span = tracing::info_span!(target: "sluice::daemon", "run", job = %name, origin = %origin, run_id = tracing::field::Empty);
        let task = self.runs.spawn(
            async move {
                // Reading the files is blocking work: off the loop, so fires of other jobs
                // due at the same instant are not delayed by it.
                let job = name.clone();
                let current = tokio::task::spawn_blocking(move || {
                    runner::load_project(&root, &job).map(|mut p| {
                        // The store the daemon started with, whatever sluice.toml says now.
                        pin_state(Arc::make_mut(&mut p), &shared);
                        p
                    })
                })
                .await
                .ok()
                .flatten();
                let (result, valid) = runner::run_fire(current, previous, &name, &params).await;
                Finished {
                    job: name,
                    origin: task_origin,
                    result,
                    valid,
                }
            }
            .instrument(span),
        );
        self.tasks.insert(task.id(), (job.to_string(), origin));
    }

    /// Marks `job` as not running (dropping a retired entry) and keeps its new last valid
    /// project.
    fn free(&mut self, job: &str, valid: Option<Arc<Project>>) {
        self.busy.remove(job);
        let Some(entry) = self.entries.get_mut(job) else {
            return;
        };
        if valid.is_some() {
            entry.last_valid = valid;
        }
        if entry.retired {
            self.entries.remove(job);
        }
    }

    /// Reads the schedules again after a job file changed. A job whose file is now invalid
    /// keeps its previous schedule (the problem is logged); a removed job or schedule is
    /// dropped, after its run in progress ends.
    fn reload(&mut self) {
        let (project, diags) = Project::load_partial(&self.root);
        if diags
            .0
            .iter()
            .any(|d| d.file == Path::new(crate::config::PROJECT_FILE))
        {
            log(&format!(
                "warning: sluice.toml has problems; the daemon keeps the project as it last read it (schedules, [alerts], [retention]):\n{}",
                diags.to_string().trim_end()
            ));
            return;
        }
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
        let busy = &self.busy;
        self.entries.retain(|job, e| {
            let keep = wanted.contains_key(job) || broken(job);
            let running = busy.contains_key(job);
            if !keep && running {
                e.retired = true;
            }
            keep || running
        });
        for (job, schedule) in wanted {
            self.reschedule(&job, schedule, now);
        }
        let (old, new) = (&self.project.settings, &project.settings);
        if format!("{:?}{:?}", old.server, old.alerts)
            != format!("{:?}{:?}", new.server, new.alerts)
        {
            log("warning: [server] or [alerts] changed in sluice.toml; the HTTP server and the alert courier keep their settings until the daemon restarts (schedules, [retention] and the alerts' `on` apply now)");
        }
        if (&old.state_dir, &old.state_url) != (&new.state_dir, &new.state_url) {
            log("warning: `state_dir` or [state] changed in sluice.toml; the daemon and its runs keep the state store they started with until it restarts");
        }
        let mut project = project;
        pin_state(&mut project, &self.shared);
        self.project = Arc::new(project);
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
    /// The loop keeps ticking meanwhile, so `/health` stays ok.
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
            self.shared.tick(Utc::now());
            let wake = deadline.min(tokio::time::Instant::now() + TICK);
            match tokio::time::timeout_at(wake, self.runs.join_next_with_id()).await {
                Ok(Some(done)) => self.finished(done),
                Ok(None) => break,
                Err(_) if tokio::time::Instant::now() < deadline => {}
                Err(_) => {
                    log("grace period over: aborting the runs still in progress");
                    self.runs.abort_all();
                    while let Some(done) = self.runs.join_next_with_id().await {
                        self.finished(done);
                    }
                }
            }
        }
    }
}

/// The jobs of `project` that have a schedule.
/// `project` with the state store the daemon started with (`shared`), so that editing
/// `state_dir` or `[state]` while it runs cannot split the history between two stores.
fn pin_state(project: &mut Project, shared: &Shared) {
    project.settings.state_dir = shared.state_dir.clone();
    project.settings.state_url = shared.state_url.clone();
}

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

/// The modification times of the project's job files and sluice.toml, to notice edits.
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
        let settings = root.join(crate::config::PROJECT_FILE);
        let modified = std::fs::metadata(&settings).and_then(|m| m.modified()).ok();
        files.push((settings, modified));
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

/// One line of the daemon's log (`info`, target `sluice::daemon`; see [`crate::logging`]).
fn log(message: &str) {
    tracing::info!(target: "sluice::daemon", "{message}");
}
