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

use std::collections::BTreeMap;
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
    /// The project as the job's last run loaded it, run again when its files become invalid.
    last_valid: Option<Arc<Project>>,
}

/// What a run task returns: the job, its fire, and how the run ended.
type Finished = (String, DateTime<Utc>, Result<Option<RunReport>>);

/// Runs the daemon for the project at `root` until `shutdown` completes, then lets running
/// runs finish within `options.grace`.
///
/// # Errors
/// The project's files cannot be read at start, or the state store cannot be opened or
/// written (a fire that cannot be claimed must not run). Errors of single runs are logged and
/// recorded in their reports; they do not stop the daemon.
pub async fn run(
    root: &Path,
    options: &DaemonOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let (project, diags) = Project::load_partial(root);
    if !diags.is_empty() {
        log(&format!(
            "warning: some files have problems; the jobs that use them are not scheduled until they are fixed:\n{}",
            diags.to_string().trim_end()
        ));
    }
    let state_dir = project.path(&project.settings.state_dir);
    let store = StateStore::open(&state_dir)?;
    let now = Utc::now();
    let mut entries = BTreeMap::new();
    for (name, schedule) in schedules(&project) {
        entries.insert(name.clone(), start_entry(&store, &name, schedule, now)?);
    }
    log(&format!(
        "scheduling {} job(s): {}",
        entries.len(),
        entries
            .iter()
            .map(|(n, e)| format!(
                "{n} [{}, next {}]",
                e.schedule.describe(),
                e.next.map_or("never".into(), show)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut runs: JoinSet<Finished> = JoinSet::new();
    let mut files = FilesStamp::of(root);
    let mut last_reload = tokio::time::Instant::now();
    tokio::pin!(shutdown);
    loop {
        let wait = sleep_for(&entries, options.reload_every);
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = runs.join_next(), if !runs.is_empty() => {
                finished(&store, &mut entries, done)?;
                continue;
            }
            () = tokio::time::sleep(wait) => {}
        }
        if last_reload.elapsed() >= options.reload_every {
            last_reload = tokio::time::Instant::now();
            if files.changed(root) {
                reload(root, &store, &mut entries)?;
            }
        }
        take_due_fires(root, &store, &mut entries, &mut runs)?;
    }
    drain(&store, &mut entries, runs, options.grace).await
}

/// The jobs of `project` that have a schedule.
fn schedules(project: &Project) -> Vec<(String, Schedule)> {
    project
        .jobs
        .values()
        .filter_map(|j| j.schedule.clone().map(|s| (j.name.clone(), s)))
        .collect()
}

/// The loop's entry for `job` at daemon start: a fire left `running` by a daemon that died is
/// recorded as abandoned; fires missed since the last one follow the misfire policy.
fn start_entry(
    store: &StateStore,
    job: &str,
    schedule: Schedule,
    now: DateTime<Utc>,
) -> Result<Entry> {
    let last = store.last_fire(job)?;
    if let Some(l) = last.as_ref().filter(|l| l.status == "running") {
        store.finish_fire(job, l.fire_at, "abandoned", None)?;
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
            store.claim_fire(job, fire, "skipped")?;
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
    })
}

/// How long to sleep: until the earliest next fire, but at most `cap` (so file changes are
/// noticed and a clock jump is caught up on).
fn sleep_for(entries: &BTreeMap<String, Entry>, cap: Duration) -> Duration {
    let now = Utc::now();
    entries
        .values()
        .filter_map(|e| e.next)
        .min()
        .map_or(cap, |t| (t - now).to_std().unwrap_or(Duration::ZERO))
        .min(cap)
}

/// Takes every fire that is due: claims it in the state store, then starts its run. A fire
/// of a job whose previous run is still running is skipped (runs of a job never overlap).
fn take_due_fires(
    root: &Path,
    store: &StateStore,
    entries: &mut BTreeMap<String, Entry>,
    runs: &mut JoinSet<Finished>,
) -> Result<()> {
    let now = Utc::now();
    for (job, entry) in entries.iter_mut() {
        let Some(fire) = entry.next.filter(|t| *t <= now) else {
            continue;
        };
        // Fires that passed while the loop was busy are not run one by one: the next fire
        // is the first one after now.
        entry.next = entry.schedule.next_after(now.max(fire));
        if let Some(running) = entry.running {
            log(&format!(
                "job {job}: fire at {} skipped: the run of the fire at {} is still running",
                show(fire),
                show(running)
            ));
            continue;
        }
        let Some(project) = project_for(root, job, entry) else {
            store.claim_fire(job, fire, "failed")?;
            log(&format!(
                "job {job}: fire at {}: not run: its files have problems (above)",
                show(fire)
            ));
            continue;
        };
        store.claim_fire(job, fire, "running")?;
        entry.running = Some(fire);
        log(&format!("job {job}: fire at {}: run starting", show(fire)));
        let job = job.clone();
        runs.spawn(async move {
            // A panic is a failed run, never a lost task: the job stays schedulable.
            let result =
                crate::producer::catch_panic(run_fire(project, &job), "running the job").await;
            (job, fire, result)
        });
    }
    Ok(())
}

/// The project to run `job` with: as its files are now, or, when the files the job uses have
/// become invalid, the version its last run loaded (the problems are logged). `None` when
/// there is no valid version.
fn project_for(root: &Path, job: &str, entry: &mut Entry) -> Option<Arc<Project>> {
    match Project::load_for_job(root, job) {
        Ok((project, others)) => {
            if !others.is_empty() {
                log(&format!(
                    "job {job}: files it does not use have problems; running it anyway:\n{}",
                    others.to_string().trim_end()
                ));
            }
            let project = Arc::new(project);
            entry.last_valid = Some(project.clone());
            Some(project)
        }
        Err(diags) => {
            let previous = entry.last_valid.clone();
            log(&format!(
                "job {job}: its files have problems{}:\n{}",
                if previous.is_some() {
                    "; running the version its last run loaded"
                } else {
                    ""
                },
                diags.to_string().trim_end()
            ));
            previous
        }
    }
}

/// One scheduled run of `job` in `project`: the job lock, retries, the run.
async fn run_fire(project: Arc<Project>, job: &str) -> Result<Option<RunReport>> {
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

/// Records how a run ended and frees its job for the next fire.
fn finished(
    store: &StateStore,
    entries: &mut BTreeMap<String, Entry>,
    done: std::result::Result<Finished, tokio::task::JoinError>,
) -> Result<()> {
    let (job, fire, result) = match done {
        Ok(f) => f,
        // Only an aborted task ends here (panics are caught in the task): its fire stays
        // `running` and is recorded as abandoned at the next start.
        Err(e) => {
            log(&format!("a run stopped abnormally: {e}"));
            return Ok(());
        }
    };
    if let Some(entry) = entries.get_mut(&job) {
        entry.running = None;
    }
    match result {
        Ok(Some(report)) => {
            store.finish_fire(&job, fire, "done", Some(&report.run_id))?;
            log(&format!(
                "job {job}: fire at {}: run {} {} ({} rows read, {} written, {} quarantined{})",
                show(fire),
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
        Ok(None) => store.finish_fire(&job, fire, "done", None)?,
        Err(e) => {
            store.finish_fire(&job, fire, "failed", None)?;
            log(&format!("job {job}: fire at {}: not run: {e}", show(fire)));
        }
    }
    Ok(())
}

/// Reads the schedules again after a job file changed. A job whose file is now invalid keeps
/// its previous schedule (the problem is logged); a removed job or schedule is dropped.
fn reload(root: &Path, store: &StateStore, entries: &mut BTreeMap<String, Entry>) -> Result<()> {
    let (project, diags) = Project::load_partial(root);
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
    entries.retain(|job, _| wanted.contains_key(job) || broken(job));
    for (job, schedule) in wanted {
        match entries.get_mut(&job) {
            Some(e) if e.schedule == schedule => {}
            Some(e) => {
                log(&format!("job {job}: schedule now {}", schedule.describe()));
                e.next = schedule.next_after(now);
                e.schedule = schedule;
            }
            None => {
                log(&format!("job {job}: scheduled {}", schedule.describe()));
                let entry = start_entry(store, &job, schedule, now)?;
                entries.insert(job, entry);
            }
        }
    }
    Ok(())
}

/// After a shutdown signal: waits up to `grace` for running runs, then aborts the rest (their
/// fires are recorded as abandoned; a run aborted before its commit changed nothing).
async fn drain(
    store: &StateStore,
    entries: &mut BTreeMap<String, Entry>,
    mut runs: JoinSet<Finished>,
    grace: Duration,
) -> Result<()> {
    if !runs.is_empty() {
        log(&format!(
            "stopping: no new runs; waiting up to {:.0} s for {} running run(s)",
            grace.as_secs_f64(),
            runs.len()
        ));
    }
    let deadline = tokio::time::Instant::now() + grace;
    while !runs.is_empty() {
        match tokio::time::timeout_at(deadline, runs.join_next()).await {
            Ok(Some(done)) => finished(store, entries, done)?,
            Ok(None) => break,
            Err(_) => {
                runs.abort_all();
                for (job, e) in entries.iter() {
                    if let Some(fire) = e.running {
                        store.finish_fire(job, fire, "abandoned", None)?;
                        log(&format!(
                            "job {job}: run of the fire at {} aborted after the grace period; its target was not committed",
                            show(fire)
                        ));
                    }
                }
                break;
            }
        }
    }
    log("stopped");
    Ok(())
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
