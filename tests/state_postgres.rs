//! The state store on PostgreSQL (`[state] url`): runs, watermarks and fires recorded there,
//! and two daemons sharing it run each scheduled fire exactly once. Uses the local server
//! (127.0.0.1:5432, trust authentication); each test has a database of its own.

use std::process::Command;

use crate::common::{show, Workdir};
use crate::databases::psql_in as psql;
use crate::schedule::{reports, schedule_carriers, sigterm, start_daemon, wait_exit, wait_for};

/// A fresh database on the local server, dropped with the value.
struct Database {
    name: String,
}

impl Database {
    fn new(prefix: &str) -> Database {
        let name = format!("{prefix}_{}", std::process::id());
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        psql("postgres", &format!("CREATE DATABASE {name}"));
        Database { name }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    /// The single value `sql` selects.
    fn value(&self, sql: &str) -> String {
        psql(&self.name, sql).trim().to_string()
    }

    /// Runs so far of `job` (0 before the daemon created the tables).
    fn runs_of(&self, job: &str) -> u32 {
        Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                &self.name,
                "-qAtc",
            ])
            .arg(format!("SELECT count(*) FROM runs WHERE job = '{job}'"))
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// The sample project with its state store in `db`.
fn project_on(db: &Database) -> Workdir {
    let w = Workdir::project();
    let toml = w.read("sluice.toml");
    w.write(
        "sluice.toml",
        &format!("{toml}\n[state]\nurl = \"{}\"\n", db.url()),
    );
    w
}

#[test]
fn runs_are_recorded_in_the_postgres_store_and_nothing_in_the_state_folder() {
    let db = Database::new("sluice_state_runs");
    let w = project_on(&db);
    for _ in 0..2 {
        let o = w.run(&["run", "carriers"]);
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    }
    assert_eq!(
        db.value("SELECT count(*) || ' ' || sum(rows_written) FROM runs WHERE job = 'carriers' AND status = 'succeeded'"),
        "2 32"
    );
    assert_eq!(db.value("SELECT max(version) FROM sluice_schema"), "5");
    assert_eq!(
        db.value("SELECT DISTINCT trigger || ' ' || length(config_hash) FROM runs"),
        "manual 64"
    );
    assert!(
        !w.path().join(".sluice/state.db").exists(),
        "the SQLite store was created too"
    );
    // What reads the store reads the database: the history, the status.
    let runs = w.run(&["runs", "carriers", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs}");
    let status = w.run(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", show(&status));
    assert!(String::from_utf8_lossy(&status.stdout).contains("carriers"));
}

#[test]
fn a_state_url_with_a_plain_password_or_an_unreachable_server_is_a_clear_error() {
    let w = Workdir::project();
    let toml = w.read("sluice.toml");
    w.write(
        "sluice.toml",
        &format!("{toml}\n[state]\nurl = \"postgres://sluice:hunter2@127.0.0.1:5432/x\"\n"),
    );
    let o = w.run(&["validate"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("password written in plain text"),
        "{}",
        show(&o)
    );
    assert!(
        !show(&o).contains("hunter2"),
        "the password was shown: {}",
        show(&o)
    );
    // Nothing listens on port 1: the run fails before touching the target, naming the store
    // as written, without the secret.
    w.write(
        "sluice.toml",
        &format!("{toml}\n[state]\nurl = \"postgres://sluice:${{env:STATE_PW}}@127.0.0.1:1/x\"\n"),
    );
    let o = w
        .sluice(&["run", "carriers"])
        .env("STATE_PW", "s3cr3t-pw")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let text = show(&o);
    assert!(text.contains("${env:STATE_PW}@127.0.0.1:1"), "{text}");
    assert!(!text.contains("s3cr3t-pw"), "{text}");
    assert!(!w.path().join("warehouse/carriers").exists());
}

#[test]
fn two_daemons_sharing_a_postgres_store_run_each_fire_exactly_once() {
    let db = Database::new("sluice_state_two");
    // Two copies of the project (two machines' checkouts), one store.
    let a = project_on(&db);
    let b = project_on(&db);
    schedule_carriers(&a, "");
    schedule_carriers(&b, "");
    let mut da = start_daemon(&a, 1, &[]);
    let mut db_daemon = start_daemon(&b, 1, &[]);
    let log_a = a.path().join("daemon-1.log");
    let runs = || db.runs_of("carriers");
    wait_for("eight scheduled runs in the shared store", &log_a, || {
        runs() >= 8
    });
    sigterm(&da);
    sigterm(&db_daemon);
    let log_b = b.path().join("daemon-1.log");
    let exits = (
        wait_exit(&mut da, &log_a).code(),
        wait_exit(&mut db_daemon, &log_b).code(),
    );
    let logs = format!(
        "{}\n--- b\n{}",
        std::fs::read_to_string(&log_a).unwrap(),
        std::fs::read_to_string(&log_b).unwrap()
    );
    assert_eq!(exits, (Some(0), Some(0)), "{logs}");

    // Every fire ran once: as many runs as distinct logical dates, all succeeded, and the
    // reports the two daemons wrote are exactly the runs the store holds.
    assert_eq!(
        db.value("SELECT count(*) = count(DISTINCT logical_date) FROM runs WHERE job = 'carriers'"),
        "t",
        "a fire ran twice:\n{logs}"
    );
    assert_eq!(
        db.value("SELECT count(*) FROM runs WHERE job = 'carriers' AND status <> 'succeeded'"),
        "0",
        "{logs}"
    );
    let written = reports(&a, "carriers").len() + reports(&b, "carriers").len();
    assert_eq!(written as u32, runs(), "{logs}");
    // Both daemons tried every fire; the one that lost a claim said so and ran nothing.
    assert!(logs.contains("taken already (by another daemon)"), "{logs}");
}

#[test]
fn a_daemon_whose_store_connections_are_cut_opens_them_again_and_keeps_running_fires() {
    let db = Database::new("sluice_state_cut");
    let w = project_on(&db);
    schedule_carriers(&w, "");
    let log = w.path().join("daemon-1.log");
    let mut daemon = start_daemon(&w, 1, &[]);
    let runs = || db.runs_of("carriers");
    wait_for("two runs", &log, || runs() >= 2);
    // As a server restart or a failover would: every connection of the store is closed.
    let cut = db.value(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        db.name
    ));
    assert_ne!(cut, "0", "no connection was cut");
    let before = runs();
    wait_for("two more runs after the cut", &log, || runs() >= before + 2);
    sigterm(&daemon);
    assert_eq!(wait_exit(&mut daemon, &log).code(), Some(0));
    assert_eq!(
        db.value("SELECT count(*) FROM runs WHERE status <> 'succeeded'"),
        "0",
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
}

#[test]
fn a_run_whose_job_lock_connection_drops_does_not_commit() {
    let db = Database::new("sluice_state_lock");
    let w = project_on(&db);
    // The run waits 3 s before its commit, so the cut comes before it whatever the load.
    let run = w
        .sluice(&["run", "flights"])
        .env("SLUICE_PAUSE_AT", "before_commit:3000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the run holds its job lock in the store, every connection of the store is cut:
    // the lock goes with its connection, so another daemon could take the job.
    let locked = || {
        Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", &db.name, "-qAtc"])
            // pg_locks is the whole server's: this database's lock only (other tests run
            // daemons on theirs).
            .arg("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 20931 AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "1")
            .unwrap_or(false)
    };
    let start = std::time::Instant::now();
    while !locked() {
        assert!(
            start.elapsed().as_secs() < 60,
            "the run never took its lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    db.value(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        db.name
    ));
    let o = run.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(show(&o).contains("was lost"), "{}", show(&o));
    let published = w.path().join("warehouse/flights/_sluice_commit.json");
    assert!(!published.exists(), "the run committed without its lock");
}
