//! `sluice schedule`: the daemon runs scheduled jobs at their fires, stops cleanly on SIGTERM,
//! and a `kill -9` mid-write neither changes the target nor runs that fire again.
//!
//! The job fires every 2 seconds (a six-field cron with seconds), so each test takes seconds.

use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::{query, rows, show, Workdir};

/// The sample project with `carriers` (16 rows, `overwrite`) fired every 2 seconds.
fn scheduled_project() -> Workdir {
    let w = Workdir::project();
    schedule_carriers(&w, "");
    w
}

/// Fires `carriers` of `w` every 2 seconds (missed fires skipped), with `extra` schedule keys
/// (`, pause_after_failures = 1`).
pub(crate) fn schedule_carriers(w: &Workdir, extra: &str) {
    let job = w.read("jobs/carriers.toml");
    w.write(
        "jobs/carriers.toml",
        &format!("schedule = {{ cron = \"*/2 * * * * *\", misfire = \"skip\"{extra} }}\n{job}"),
    );
}

/// Starts the daemon with its standard error in `<workdir>/daemon-<n>.log`.
pub(crate) fn start_daemon(w: &Workdir, n: u32, env: &[(&str, &str)]) -> Child {
    let log = std::fs::File::create(w.path().join(format!("daemon-{n}.log"))).unwrap();
    let mut cmd = w.sluice(&["schedule", "--grace", "30s"]);
    cmd.stdout(Stdio::null()).stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start sluice schedule")
}

/// The reports of `job`'s runs, as JSON, oldest first.
pub(crate) fn reports(w: &Workdir, job: &str) -> Vec<serde_json::Value> {
    let dir = w.path().join(".sluice/runs").join(job);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    files
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

pub(crate) fn wait_for(what: &str, log: &Path, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}; daemon log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn wait_exit(child: &mut Child, log: &Path) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!(
                "the daemon did not stop; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn sigterm(child: &Child) {
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "cannot send SIGTERM");
}

/// The fire instants the daemon logged as starting a run.
fn fires_started(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.ends_with(": run starting"))
        .filter_map(|l| l.split("fire at ").nth(1))
        .map(|s| s.trim_end_matches(": run starting").to_string())
        .collect()
}

#[test]
fn the_daemon_runs_a_job_at_each_fire_once_and_stops_on_sigterm() {
    let w = scheduled_project();
    let log_path = w.path().join("daemon-1.log");
    let mut daemon = start_daemon(&w, 1, &[]);
    wait_for("three scheduled runs", &log_path, || {
        reports(&w, "carriers").len() >= 3
    });
    sigterm(&daemon);
    let status = wait_exit(&mut daemon, &log_path);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(status.code(), Some(0), "daemon log:\n{log}");
    assert!(log.contains("stopped"), "{log}");

    // Only the scheduled job ran, once per fire, at fires two seconds apart.
    assert!(reports(&w, "flights").is_empty() && reports(&w, "airports").is_empty());
    let runs = reports(&w, "carriers");
    let fires = fires_started(&log);
    assert_eq!(fires.len(), runs.len(), "one run per fire:\n{log}");
    let mut distinct = fires.clone();
    distinct.dedup();
    assert_eq!(distinct, fires, "a fire ran twice:\n{log}");
    for f in &fires {
        let second: u32 = f[17..19].parse().unwrap();
        assert_eq!(second % 2, 0, "fire {f} is not on the schedule:\n{log}");
    }
    for r in &runs {
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["rows"]["written"], 16, "{r}");
    }
    // overwrite: the table holds one run's rows, not one copy per run.
    let n = rows(&query(
        &w.path().join("warehouse/carriers"),
        "SELECT count(*) FROM t",
    ));
    assert_eq!(n, ["16"]);
}

#[test]
fn kill_9_of_the_daemon_mid_write_leaves_the_target_and_never_reruns_that_fire() {
    let w = scheduled_project();
    let first = w.run(&["run", "carriers"]);
    assert_eq!(first.status.code(), Some(0), "{}", show(&first));
    let target = w.path().join("warehouse/carriers");
    let commit_before = std::fs::read(target.join("_sluice_commit.json")).unwrap();

    // The daemon kills itself (SIGKILL) with the first scheduled run's staging complete and
    // nothing published: the same as `kill -9` at that instant.
    let log1 = w.path().join("daemon-1.log");
    let mut daemon = start_daemon(&w, 1, &[("SLUICE_CRASH_AT", "before_publish")]);
    let status = wait_exit(&mut daemon, &log1);
    let log = std::fs::read_to_string(&log1).unwrap();
    assert_eq!(status.code(), None, "killed by a signal:\n{log}");
    let killed_fire = fires_started(&log).pop().expect("a run started");
    assert_eq!(
        std::fs::read(target.join("_sluice_commit.json")).unwrap(),
        commit_before,
        "the target changed"
    );
    assert_eq!(reports(&w, "carriers").len(), 1, "only the manual run");

    // Restarted, the daemon records that fire as abandoned, does not run it again, and the
    // next fire loads the job.
    let log2 = w.path().join("daemon-2.log");
    let mut daemon = start_daemon(&w, 2, &[]);
    wait_for("a scheduled run after the restart", &log2, || {
        reports(&w, "carriers").len() >= 2
    });
    sigterm(&daemon);
    assert_eq!(wait_exit(&mut daemon, &log2).code(), Some(0));
    let log = std::fs::read_to_string(&log2).unwrap();
    assert!(
        log.contains(&format!(
            "the daemon stopped during the run of the fire at {killed_fire}"
        )),
        "{log}"
    );
    assert!(!fires_started(&log).contains(&killed_fire), "{log}");
    let runs = reports(&w, "carriers");
    assert_eq!(runs[1]["status"], "succeeded", "{}", runs[1]);
    assert_ne!(
        std::fs::read(target.join("_sluice_commit.json")).unwrap(),
        commit_before,
        "the next fire did not commit"
    );
    let n = rows(&query(&target, "SELECT count(*) FROM t"));
    assert_eq!(n, ["16"]);
}

#[test]
fn after_kill_9_of_the_daemon_missed_fires_run_once_under_the_default_misfire_policy() {
    // `misfire` left out: the default, "run_once".
    let w = Workdir::project();
    let job = w.read("jobs/carriers.toml");
    w.write(
        "jobs/carriers.toml",
        &format!("schedule = {{ cron = \"*/2 * * * * *\" }}\n{job}"),
    );
    let log1 = w.path().join("daemon-1.log");
    let mut daemon = start_daemon(&w, 1, &[]);
    wait_for("a first scheduled run", &log1, || {
        !reports(&w, "carriers").is_empty()
    });
    daemon.kill().unwrap(); // SIGKILL
    daemon.wait().unwrap();
    let last_before = fires_started(&std::fs::read_to_string(&log1).unwrap())
        .pop()
        .expect("a run started");
    // Down for 7 seconds: at least three fires (two seconds apart) pass.
    std::thread::sleep(Duration::from_secs(7));

    let log2 = w.path().join("daemon-2.log");
    let mut daemon = start_daemon(&w, 2, &[]);
    wait_for("two runs after the restart", &log2, || {
        fires_started(&std::fs::read_to_string(&log2).unwrap()).len() >= 2
    });
    sigterm(&daemon);
    assert_eq!(wait_exit(&mut daemon, &log2).code(), Some(0));
    let log = std::fs::read_to_string(&log2).unwrap();
    let latest = log
        .lines()
        .find_map(|l| {
            let rest = l
                .split("fires were missed while the daemon was down (latest ")
                .nth(1)?;
            if !rest.contains("misfire = \"run_once\": running it once now") {
                return None;
            }
            Some(rest[..rest.find(')')?].to_string())
        })
        .unwrap_or_else(|| panic!("no run_once catch-up logged:\n{log}"));
    // The missed fires span at least two instants of the schedule, but only the latest runs,
    // and it runs first; every later run is at a fire after the restart.
    assert!(latest > last_before, "{latest} vs {last_before}:\n{log}");
    let fires = fires_started(&log);
    assert_eq!(fires[0], latest, "{log}");
    let missed_and_run: Vec<_> = fires
        .iter()
        .filter(|f| **f > last_before && **f <= latest)
        .collect();
    assert_eq!(missed_and_run, [&latest], "one catch-up run only:\n{log}");
    let mut distinct = fires.clone();
    distinct.dedup();
    assert_eq!(distinct, fires, "a fire ran twice:\n{log}");
    let n = rows(&query(
        &w.path().join("warehouse/carriers"),
        "SELECT count(*) FROM t",
    ));
    assert_eq!(n, ["16"]);
}

#[test]
fn a_job_whose_files_become_invalid_keeps_running_its_last_valid_version() {
    let w = scheduled_project();
    let log_path = w.path().join("daemon-1.log");
    let mut daemon = start_daemon(&w, 1, &[]);
    wait_for("a first scheduled run", &log_path, || {
        !reports(&w, "carriers").is_empty()
    });
    // An edit that breaks the mapping: the next fire runs the version the last run loaded.
    let mapping = "mappings/nycflights13_to_carrier.toml";
    let text = w.read(mapping);
    w.write(mapping, &format!("{text}\nnot toml at all ]\n"));
    let fallback = "job carriers: its files have problems; running the version its last run loaded";
    wait_for("a fire after the edit", &log_path, || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains(fallback))
    });
    // The run of that fire finishes (a run that started before the edit may finish first).
    let started = |l: &str| fires_started(l).len();
    let fired = started(&std::fs::read_to_string(&log_path).unwrap());
    wait_for("the run of that fire", &log_path, || {
        reports(&w, "carriers").len() >= fired
    });
    sigterm(&daemon);
    assert_eq!(wait_exit(&mut daemon, &log_path).code(), Some(0));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains(
            "job carriers: its files have problems; running the version its last run loaded"
        ),
        "{log}"
    );
    assert!(
        log.contains("nycflights13_to_carrier.toml:"),
        "the problem's position:\n{log}"
    );
    let runs = reports(&w, "carriers");
    assert_eq!(runs.last().unwrap()["status"], "succeeded");
}

#[test]
fn status_lists_every_job_with_its_schedule_last_run_and_next_run() {
    let w = scheduled_project();
    let run = w.run(&["run", "carriers", "--json"]);
    assert_eq!(run.status.code(), Some(0), "{}", show(&run));
    let run_id = crate::common::report(&run)["run_id"].clone();

    let out = w.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let jobs = jobs.as_array().unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j["job"].as_str().unwrap()).collect();
    assert_eq!(names, ["airports", "carriers", "flights"]);
    let carriers = &jobs[1];
    assert_eq!(carriers["schedule"], "*/2 * * * * * (UTC)");
    assert_eq!(carriers["last_run"]["run_id"], run_id);
    assert_eq!(carriers["last_run"]["rows_written"], 16);
    assert_eq!(carriers["health"], "ok");
    let next: chrono::DateTime<chrono::Utc> =
        carriers["next_run"].as_str().unwrap().parse().unwrap();
    assert!(next > chrono::Utc::now() - chrono::Duration::seconds(1));
    assert_eq!(next.timestamp() % 2, 0, "{next}");
    assert_eq!(jobs[0]["health"], "never run");
    assert!(jobs[0]["next_run"].is_null() && jobs[0]["schedule"].is_null());

    let table = w.run(&["status"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("data-platform@example.com"), "{text}");

    let runs = w.run(&["runs", "carriers", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs[0]["run_id"], run_id);
    assert_eq!(runs[0]["status"], "succeeded");
}

#[test]
pub(crate) fn sigterm_during_a_run_lets_it_finish_and_commit_within_the_grace_period() {
    // flights (336,776 rows) takes over a second here, so SIGTERM lands mid-run.
    let w = Workdir::project();
    let job = w.read("jobs/flights.toml");
    w.write(
        "jobs/flights.toml",
        &format!("schedule = {{ cron = \"*/2 * * * * *\" }}\n{job}"),
    );
    let log_path = w.path().join("daemon-1.log");
    let mut daemon = start_daemon(&w, 1, &[]);
    wait_for("a run to start", &log_path, || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| !fires_started(&l).is_empty())
    });
    sigterm(&daemon);
    assert_eq!(wait_exit(&mut daemon, &log_path).code(), Some(0));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("stopping: no new runs; waiting up to 30 s for 1 running run(s)"),
        "{log}"
    );
    assert_eq!(
        fires_started(&log).len(),
        1,
        "no run started after SIGTERM:\n{log}"
    );
    let runs = reports(&w, "flights");
    assert_eq!(runs.len(), 1, "{log}");
    assert_eq!(runs[0]["status"], "succeeded_with_warnings", "{}", runs[0]);
    let n = rows(&query(
        &w.path().join("warehouse/flights"),
        "SELECT count(*) FROM t",
    ));
    assert_eq!(n, ["329174"]);
}

/// libfaketime's library (Debian package `libfaketime`, installed with `faketime` by .ci/run).
pub(crate) const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// `cmd` with its clock faked as libfaketime's `FAKETIME` spec says (`@2026-03-29 00:50:00
/// x600`: starting then, 600 times faster), in UTC.
pub(crate) fn faked_clock(mut cmd: std::process::Command, spec: &str) -> std::process::Command {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: apt-get install faketime (.ci/run does)"
    );
    cmd.env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME", spec)
        .env("TZ", "UTC");
    cmd
}

/// Runs the daemon under libfaketime from `start` (UTC) with time going `speed` times faster,
/// with `carriers` scheduled at `cron` in Europe/London, for `real` seconds; returns the fires
/// that started a run.
fn fires_under_faketime(start: &str, speed: u32, cron: &str, real: Duration) -> Vec<String> {
    let w = Workdir::project();
    let job = w.read("jobs/carriers.toml");
    w.write(
        "jobs/carriers.toml",
        &format!("schedule = {{ cron = \"{cron}\", timezone = \"Europe/London\" }}\n{job}"),
    );
    let log_path = w.path().join("daemon-1.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // libfaketime preloaded into the daemon itself (the `faketime` wrapper would take the
    // SIGTERM meant for it).
    let mut daemon = faked_clock(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice")),
        &format!("@{start} x{speed}"),
    )
    .args(["schedule", "--grace", "30s"])
    .current_dir(w.path())
    .env_remove("SLUICE_LOG")
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .expect("start sluice schedule");
    std::thread::sleep(real);
    sigterm(&daemon);
    let status = wait_exit(&mut daemon, &log_path);
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(
        text.contains("scheduling 1 job(s)"),
        "the daemon did not start under faketime:\n{text}"
    );
    let fires = fires_started(&text);
    assert_eq!(reports(&w, "carriers").len(), fires.len(), "{text}");
    fires
}

#[test]
fn across_the_spring_gap_a_daily_run_at_a_time_that_does_not_exist_runs_once_after_the_gap() {
    // 2026-03-29 in London: 01:00 GMT jumps to 02:00 BST, so 01:30 does not exist that day.
    // The clock starts at 00:50 UTC and runs 600 times faster: 20 s cover until 04:10 UTC.
    let fires = fires_under_faketime(
        "2026-03-29 00:50:00",
        600,
        "30 1 * * *",
        Duration::from_secs(20),
    );
    assert_eq!(fires, ["2026-03-29T01:00:00Z"], "once, at 02:00 BST");
}

#[test]
fn across_the_autumn_overlap_a_daily_run_in_the_repeated_hour_runs_once() {
    // 2026-10-25 in London: 02:00 BST falls back to 01:00 GMT, so 01:30 happens twice
    // (00:30 UTC and 01:30 UTC). From 00:00 UTC, 20 s at 600 times cover until 03:20 UTC.
    let fires = fires_under_faketime(
        "2026-10-25 00:00:00",
        600,
        "30 1 * * *",
        Duration::from_secs(20),
    );
    assert_eq!(fires, ["2026-10-25T00:30:00Z"], "once, at the first 01:30");
}
