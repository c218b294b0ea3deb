//! The daemon in operation: its HTTP server (health, metrics, OpenAPI, the token-protected
//! API), a job that always fails (retried, then paused, other jobs unaffected) and alerts to
//! a webhook that is down, then up (none lost).
//!
//! HTTP calls go through `curl`, as an operator's would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{query, rows, show, Workdir};
use crate::schedule::{reports, schedule_carriers, sigterm, start_daemon, wait_exit, wait_for};

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// Asserts an RFC 9457 problem with `status`.
    fn assert_problem(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let p = self.json();
        assert_eq!(p["status"], status, "{self:?}");
        assert!(
            p["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{self:?}"
        );
    }
}

/// `curl` with `method` on `url`, a bearer token and a body when given.
fn http(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> Answer {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-s", "-i", "-X", method, url]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// `sluice token hash` of `token`.
fn token_hash(w: &Workdir, token: &str) -> String {
    let mut child = w
        .sluice(&["token", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Polls `url` until it answers 200.
fn wait_until_up(url: &str, log: &std::path::Path) {
    wait_for("the HTTP server", log, || {
        http("GET", url, None, None).status == 200
    });
}

const CI_TOKEN: &str = "ci-token-0123456789abcdef";
const SLOW_TOKEN: &str = "slow-token-0123456789abcdef";

#[test]
fn the_daemon_serves_health_metrics_openapi_and_a_token_protected_api() {
    let w = Workdir::project();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let (ci, slow) = (token_hash(&w, CI_TOKEN), token_hash(&w, SLOW_TOKEN));
    assert_eq!(ci.len(), 64, "{ci}");
    let settings = w.read("sluice.toml");
    w.write(
        "sluice.toml",
        &format!(
            "{settings}\n[server]\nlisten = \"127.0.0.1:{port}\"\nmax_body_bytes = 1024\n\
             [server.tokens.ci]\nsha256 = \"{ci}\"\nrequests_per_minute = 1000\n\
             [server.tokens.slow]\nsha256 = \"{slow}\"\nrequests_per_minute = 2\n"
        ),
    );
    let log = w.path().join("daemon-1.log");
    let mut daemon = start_daemon(&w, 1, &[]);
    wait_until_up(&format!("{base}/health"), &log);
    let health = http("GET", &format!("{base}/health"), None, None);
    assert_eq!(health.json()["status"], "ok", "{health:?}");

    // Without a token, or with one not configured: 401, as a problem, naming the scheme.
    let jobs = format!("{base}/api/v1/jobs");
    let anonymous = http("GET", &jobs, None, None);
    anonymous.assert_problem(401);
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    http("GET", &jobs, Some("not-a-configured-token"), None).assert_problem(401);
    let listed = http("GET", &jobs, Some(CI_TOKEN), None);
    assert_eq!(listed.status, 200, "{listed:?}");
    let names: Vec<String> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"carriers".to_string()), "{names:?}");

    // A run through the API, for a logical date: 202 with where to follow it; it runs once,
    // for that date, and commits.
    http(
        "POST",
        &format!("{base}/api/v1/jobs/no_such_job/runs"),
        Some(CI_TOKEN),
        None,
    )
    .assert_problem(404);
    let queued = http(
        "POST",
        &format!("{base}/api/v1/jobs/carriers/runs"),
        Some(CI_TOKEN),
        Some("{\"date\": \"2013-01-05\"}"),
    );
    assert_eq!(queued.status, 202, "{queued:?}");
    let location = queued.header("location").expect("Location").to_string();
    assert_eq!(queued.json()["requested_by"], "ci");
    let mut trigger = Value::Null;
    wait_for("the API-triggered run", &log, || {
        trigger = http("GET", &format!("{base}{location}"), Some(CI_TOKEN), None).json();
        trigger["status"] == "done"
    });
    let run_id = trigger["run_id"].as_str().expect("run_id").to_string();
    let report = http(
        "GET",
        &format!("{base}/api/v1/runs/{run_id}"),
        Some(CI_TOKEN),
        None,
    );
    assert_eq!(report.status, 200, "{report:?}");
    assert_eq!(report.json()["status"], "succeeded");
    assert_eq!(report.json()["rows"]["written"], 16);
    assert_eq!(report.json()["logical_date"], "2013-01-05T00:00:00Z");
    assert_eq!(report.json()["trigger"], "api");
    assert_eq!(
        rows(&query(
            &w.path().join("warehouse/carriers"),
            "SELECT count(*) FROM t"
        )),
        ["16"]
    );
    let history = http(
        "GET",
        &format!("{base}/api/v1/runs?job=carriers"),
        Some(CI_TOKEN),
        None,
    );
    assert_eq!(history.json()[0]["run_id"], run_id.as_str(), "{history:?}");
    http(
        "GET",
        &format!("{base}/api/v1/runs/not-a-run"),
        Some(CI_TOKEN),
        None,
    )
    .assert_problem(404);

    // A body over max_body_bytes: 413; a field this version does not know: 400. Neither runs.
    let runs_url = format!("{base}/api/v1/jobs/carriers/runs");
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(4096));
    http("POST", &runs_url, Some(CI_TOKEN), Some(&big)).assert_problem(413);
    http("POST", &runs_url, Some(CI_TOKEN), Some("{\"dates\": 1}")).assert_problem(400);
    // A var the job does not declare, or a date that is not one: 422.
    let undeclared = "{\"vars\": {\"region\": \"EU\"}}";
    http("POST", &runs_url, Some(CI_TOKEN), Some(undeclared)).assert_problem(422);
    let bad_date = "{\"date\": \"05/01/2013\"}";
    http("POST", &runs_url, Some(CI_TOKEN), Some(bad_date)).assert_problem(422);
    assert_eq!(
        reports(&w, "carriers").len(),
        1,
        "a refused request started a run"
    );

    // Rate limit: the slow token's third request in a minute gets 429 and Retry-After.
    for _ in 0..2 {
        assert_eq!(http("GET", &jobs, Some(SLOW_TOKEN), None).status, 200);
    }
    let limited = http("GET", &jobs, Some(SLOW_TOKEN), None);
    limited.assert_problem(429);
    let retry_after: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{limited:?}");
    // Other tokens are not limited by it.
    assert_eq!(http("GET", &jobs, Some(CI_TOKEN), None).status, 200);

    // Metrics count the run.
    let metrics = http("GET", &format!("{base}/metrics"), None, None);
    assert_eq!(metrics.status, 200);
    for line in [
        "sluice_runs_total{job=\"carriers\",status=\"succeeded\"} 1",
        "sluice_rows_total{job=\"carriers\",kind=\"written\"} 16",
        "sluice_run_duration_seconds_count{job=\"carriers\"} 1",
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "no `{line}` in\n{}",
            metrics.body
        );
    }
    assert!(
        metrics
            .body
            .contains("sluice_scheduler_last_tick_timestamp_seconds "),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("sluice_last_success_timestamp_seconds{job=\"carriers\"} "),
        "{}",
        metrics.body
    );

    // The OpenAPI document describes every endpoint, and every endpoint it describes answers.
    let doc = http("GET", &format!("{base}/openapi.json"), None, None).json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/health",
        "/metrics",
        "/openapi.json",
        "/api/v1/jobs",
        "/api/v1/jobs/{job}/runs",
        "/api/v1/jobs/{job}/resume",
        "/api/v1/triggers/{trigger_id}",
        "/api/v1/runs",
        "/api/v1/runs/{run_id}",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} is not in /openapi.json: {:?}",
            paths.keys()
        );
    }
    let trigger_id = location.rsplit('/').next().unwrap();
    for (path, item) in paths {
        let url = path
            .replace("{job}", "carriers")
            .replace("{trigger_id}", trigger_id)
            .replace("{run_id}", &run_id);
        for method in item.as_object().unwrap().keys() {
            if path.ends_with("/runs") && method == "post" {
                continue; // a second run is not needed to know the route exists
            }
            let a = http(
                &method.to_uppercase(),
                &format!("{base}{url}"),
                Some(CI_TOKEN),
                None,
            );
            assert!(a.status == 200 || a.status == 202, "{method} {path}: {a:?}");
            let documented = item[method]["responses"].as_object().unwrap();
            assert!(
                documented.contains_key(&a.status.to_string()),
                "{method} {path} answered {} but documents {:?}",
                a.status,
                documented.keys()
            );
        }
    }
    assert!(
        doc["components"]["securitySchemes"]["bearer"].is_object(),
        "{doc}"
    );

    sigterm(&daemon);
    let status = wait_exit(&mut daemon, &log);
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
}

/// A webhook receiver on `port`: records each POSTed JSON body, answers 200.
fn webhook_receiver(port: u16) -> Arc<Mutex<Vec<Value>>> {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the webhook port");
    let received = Arc::new(Mutex::new(Vec::new()));
    let bodies = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                if let Ok(v) = serde_json::from_slice(&body) {
                    bodies.lock().unwrap().push(v);
                }
            }
            let mut stream = stream;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    received
}

#[test]
fn a_job_that_always_fails_is_retried_then_paused_and_its_alerts_reach_a_webhook_that_comes_up_late(
) {
    let w = Workdir::project_with_databases();
    for job in ["flights", "airports", "flights_to_postgres"] {
        std::fs::remove_file(w.path().join(format!("jobs/{job}.toml"))).unwrap();
    }
    let (closed, hook) = (free_port(), free_port());
    let settings = w.read("sluice.toml");
    w.write(
        "sluice.toml",
        &format!(
            "{settings}\n[connections.down_pg]\nkind = \"postgres\"\n\
             url = \"postgres://postgres@127.0.0.1:{closed}/test\"\nconnect_timeout = \"1s\"\n\
             [alerts]\nwebhook = \"http://127.0.0.1:{hook}/hooks/sluice\"\n"
        ),
    );
    // `down` reads a database nothing listens for: every attempt fails for a transient reason.
    let job = w.read("jobs/flights_from_postgres.toml");
    let job = job.replace("connection = \"source_pg\"", "connection = \"down_pg\"");
    let job = job[..job.find("[retry]").unwrap()].to_string();
    w.write(
        "jobs/down.toml",
        &format!(
            "schedule = {{ cron = \"*/2 * * * * *\", misfire = \"skip\", pause_after_failures = 2 }}\n\
             {job}\n[retry]\nattempts = 2\nbackoff = \"100ms\"\nmax_backoff = \"200ms\"\n"
        ),
    );
    std::fs::remove_file(w.path().join("jobs/flights_from_postgres.toml")).unwrap();
    schedule_carriers(&w, "");

    let log = w.path().join("daemon-1.log");
    let mut daemon = start_daemon(&w, 1, &[]);
    wait_for("the job to be paused", &log, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("job down: paused after 2 failed fires")
    });
    let paused_at = Instant::now();
    // Other jobs keep running while `down` is paused, and `down` is not run again.
    let carriers_then = reports(&w, "carriers").len();
    wait_for("two more runs of another job", &log, || {
        reports(&w, "carriers").len() >= carriers_then + 2
    });
    assert!(paused_at.elapsed() >= Duration::from_secs(2));
    let down_runs = reports(&w, "down");
    assert_eq!(
        down_runs.len(),
        4,
        "two fires of two attempts each (one retry):\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    for r in &down_runs {
        assert_eq!(r["status"], "failed", "{r}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("job down: attempt 1 of 2 failed"), "{text}");
    assert!(text.contains("skipped: the job is paused"), "{text}");

    // The webhook was down all along; now it comes up and gets every alert.
    let received = webhook_receiver(hook);
    wait_for("the alerts to be delivered", &log, || {
        let got = received.lock().unwrap();
        got.iter().any(|a| a["event"] == "circuit_opened")
            && got.iter().filter(|a| a["event"] == "run_failed").count() >= 4
    });
    let got = received.lock().unwrap().clone();
    let opened = got.iter().find(|a| a["event"] == "circuit_opened").unwrap();
    assert_eq!(opened["job"], "down");
    assert_eq!(opened["failures"], 2);
    let failed_runs: std::collections::BTreeSet<&str> = got
        .iter()
        .filter(|a| a["event"] == "run_failed")
        .map(|a| a["run_id"].as_str().unwrap())
        .collect();
    let reported: std::collections::BTreeSet<&str> = down_runs
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(failed_runs, reported, "one alert per failed run, none lost");
    assert!(
        got.iter().all(|a| a["job"] == "down"),
        "no alert for the healthy job: {got:?}"
    );

    // `sluice status` says so; `sluice resume` lifts the pause.
    let status = w.run(&["status", "--json"]);
    let jobs: Value = serde_json::from_slice(&status.stdout).unwrap();
    let down = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "down")
        .unwrap();
    assert_eq!(down["health"], "paused", "{}", show(&status));
    let resumed = w.run(&["resume", "down"]);
    assert!(
        String::from_utf8_lossy(&resumed.stdout).contains("job down resumed"),
        "{}",
        show(&resumed)
    );
    wait_for("a fire of the resumed job", &log, || {
        reports(&w, "down").len() > 4
    });

    sigterm(&daemon);
    assert_eq!(wait_exit(&mut daemon, &log).code(), Some(0));
}

/// The ```bash blocks of docs/operations.md that start with `# api example`.
fn api_examples() -> Vec<String> {
    let md = std::fs::read_to_string(crate::common::repo().join("docs/operations.md")).unwrap();
    let mut out = Vec::new();
    let mut rest = md.as_str();
    while let Some(start) = rest.find("```bash\n") {
        let body = &rest[start + "```bash\n".len()..];
        let end = body.find("\n```").expect("an unclosed ```bash block");
        if body.starts_with("# api example") {
            out.push(body[..end].to_string());
        }
        rest = &body[end..];
    }
    out
}

#[test]
fn the_curl_examples_of_the_operations_guide_work_against_a_daemon() {
    let examples = api_examples();
    assert!(examples.len() >= 5, "{examples:?}");
    let w = Workdir::project();
    let port = free_port();
    let hash = token_hash(&w, CI_TOKEN);
    let settings = w.read("sluice.toml");
    w.write(
        "sluice.toml",
        &format!("{settings}\n[server]\nlisten = \"127.0.0.1:{port}\"\n[server.tokens.docs]\nsha256 = \"{hash}\"\n"),
    );
    let log = w.path().join("daemon-1.log");
    let mut daemon = start_daemon(&w, 1, &[]);
    let url = format!("http://127.0.0.1:{port}");
    wait_until_up(&format!("{url}/health"), &log);
    for example in &examples {
        let out = std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", example])
            .env("SLUICE_URL", &url)
            .env("SLUICE_TOKEN", CI_TOKEN)
            .output()
            .unwrap();
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "example failed:\n{example}\n{}\ndaemon log:\n{}",
            show(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    // The run example ran the job once, through the daemon.
    assert_eq!(reports(&w, "airports").len(), 1);
    sigterm(&daemon);
    assert_eq!(wait_exit(&mut daemon, &log).code(), Some(0));
}

/// `sluice ARGS` with the clock starting at `at` (libfaketime).
fn run_at(w: &Workdir, at: &str, args: &[&str], code: i32) {
    let out = crate::schedule::faked_clock(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice")),
        &format!("@{at}"),
    )
    .args(args)
    .current_dir(w.path())
    .output()
    .expect("run sluice");
    assert_eq!(out.status.code(), Some(code), "{}", show(&out));
}

fn files(dir: &std::path::Path, extension: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == extension))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn prune_deletes_what_retention_says_and_keeps_each_jobs_latest_runs() {
    let w = Workdir::project();
    // `broken` reads a file that does not exist: its runs fail.
    let carriers = w.read("jobs/carriers.toml");
    w.write(
        "jobs/broken.toml",
        &carriers
            .replace("airlines.csv.gz", "airlines_missing.csv.gz")
            .replace("table = \"carriers\"", "table = \"broken\""),
    );
    // Old runs: two of `airports` (each quarantines 3 rows), one of `carriers` (its only one),
    // two failed ones of `broken`; then a run of `airports` now.
    run_at(&w, "2026-01-10 12:00:00", &["run", "airports"], 0);
    run_at(&w, "2026-01-11 12:00:00", &["run", "airports"], 0);
    run_at(&w, "2026-01-10 13:00:00", &["run", "carriers"], 0);
    run_at(&w, "2026-01-12 13:00:00", &["run", "broken"], 1);
    run_at(&w, "2026-01-13 13:00:00", &["run", "broken"], 1);
    let now = w.run(&["run", "airports"]);
    assert_eq!(now.status.code(), Some(0), "{}", show(&now));
    let reports_dir = |job: &str| w.path().join(".sluice/runs").join(job);
    let quarantine = w.path().join("warehouse/_quarantine/airports");
    assert_eq!(files(&reports_dir("airports"), "json"), 3);
    assert_eq!(files(&quarantine, "parquet"), 3);

    let no_policy = w.run(&["prune"]);
    assert_eq!(no_policy.status.code(), Some(2), "{}", show(&no_policy));
    let settings = w.read("sluice.toml");
    w.write(
        "sluice.toml",
        &format!("{settings}\n[retention]\nrun_reports = \"30d\"\nquarantine = \"30d\"\nhistory = \"30d\"\n"),
    );
    // Files: the two old `airports` runs and the older `broken` run. History: only the older
    // `broken` run — committed runs are the volume check's baseline, and each job's latest
    // run stays.
    let expected = "3 run report(s), 2 run(s) of quarantined rows, 1 run(s)";
    let dry = w.run(&["prune", "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains(&format!("would delete {expected}")),
        "{}",
        show(&dry)
    );
    assert_eq!(
        files(&reports_dir("airports"), "json"),
        3,
        "a dry run deletes nothing"
    );

    let pruned = w.run(&["prune"]);
    assert!(
        String::from_utf8_lossy(&pruned.stdout).contains(&format!("deleted {expected}")),
        "{}",
        show(&pruned)
    );
    assert_eq!(files(&reports_dir("airports"), "json"), 1);
    assert_eq!(files(&quarantine, "parquet"), 1);
    assert_eq!(files(&reports_dir("broken"), "json"), 1);
    // `carriers`' only run is old, but it is the job's latest: kept, report and history.
    assert_eq!(files(&reports_dir("carriers"), "json"), 1);
    let runs = w.run(&["runs", "--json"]);
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    let count = |job: &str| {
        runs.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["job"] == job)
            .count()
    };
    assert_eq!(
        (count("airports"), count("carriers"), count("broken")),
        (3, 1, 1),
        "{runs}"
    );

    // The next run neither re-records a pruned run nor misses its own.
    let again = w.run(&["run", "carriers"]);
    assert_eq!(again.status.code(), Some(0), "{}", show(&again));
    let runs = w.run(&["runs", "carriers", "--json"]);
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs}");
}

#[test]
fn a_second_daemon_on_the_same_project_refuses_to_start_and_changes_nothing() {
    let w = Workdir::project();
    schedule_carriers(&w, "");
    let log = w.path().join("daemon-1.log");
    let mut first = start_daemon(&w, 1, &[]);
    wait_for("the first daemon's first run", &log, || {
        !reports(&w, "carriers").is_empty()
    });
    let second = w.run(&["schedule"]);
    assert_eq!(second.status.code(), Some(2), "{}", show(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another `sluice schedule` is running"),
        "{}",
        show(&second)
    );
    // The first one goes on running its fires.
    let before = reports(&w, "carriers").len();
    wait_for("a later run of the first daemon", &log, || {
        reports(&w, "carriers").len() > before
    });
    sigterm(&first);
    assert_eq!(wait_exit(&mut first, &log).code(), Some(0));
    assert!(!std::fs::read_to_string(&log).unwrap().contains("abandoned"));
}

#[test]
fn fires_that_find_the_job_locked_by_another_run_are_skipped_and_do_not_pause_it() {
    let w = Workdir::project();
    schedule_carriers(&w, ", pause_after_failures = 1");
    // This process holds the job lock, as a long `sluice run carriers` by hand would.
    let lock_path = w.path().join(".sluice/locks/job-carriers.lock");
    std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap();
    lock.try_lock().expect("take the job lock");

    let log = w.path().join("daemon-1.log");
    let mut daemon = start_daemon(&w, 1, &[]);
    wait_for("two fires held off by the lock", &log, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("another run of job `carriers` is in progress")
            .count()
            >= 2
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("paused"),
        "a held lock paused the job:\n{text}"
    );
    assert!(reports(&w, "carriers").is_empty(), "{text}");

    // The other run ends: the next fire runs and commits.
    drop(lock);
    wait_for("a run once the lock is free", &log, || {
        !reports(&w, "carriers").is_empty()
    });
    sigterm(&daemon);
    assert_eq!(wait_exit(&mut daemon, &log).code(), Some(0));
    let status = w.run(&["status", "--json"]);
    let jobs: Value = serde_json::from_slice(&status.stdout).unwrap();
    let carriers = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "carriers")
        .unwrap();
    assert_eq!(carriers["health"], "ok", "{}", show(&status));
}

/// `curl` of `url` with `extra` arguments: the HTTP status, or `None` when no answer came.
fn curl_status(url: &str, extra: &[&str]) -> Option<u16> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .ok()
        .filter(|code| *code != 0)
}

#[test]
fn with_tls_cert_and_key_the_daemon_serves_https_only() {
    let w = Workdir::project();
    // A self-signed certificate for 127.0.0.1, as a user's own CA would issue one.
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(w.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", show(&made));
    let port = free_port();
    let toml = w.read("sluice.toml");
    w.write(
        "sluice.toml",
        &format!("{toml}\n[server]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n"),
    );
    let log = w.path().join("daemon-1.log");
    let mut daemon = start_daemon(&w, 1, &[]);
    let https = format!("https://127.0.0.1:{port}/health");
    let ca = w.path().join("cert.pem");
    let ca = ca.to_str().unwrap();
    wait_for("the HTTPS server", &log, || {
        curl_status(&https, &["--cacert", ca]) == Some(200)
    });
    // The certificate is checked by the client: without the CA it is refused; plain HTTP on
    // the port gets no HTTP answer.
    assert_eq!(
        curl_status(&https, &[]),
        None,
        "an unverified certificate was accepted"
    );
    assert_eq!(
        curl_status(&format!("http://127.0.0.1:{port}/health"), &[]),
        None,
        "plain HTTP was served"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("https://127.0.0.1:{port}")),
        "{text}"
    );
    sigterm(&daemon);
    assert_eq!(wait_exit(&mut daemon, &log).code(), Some(0));

    // Half a pair is a config error at its line.
    w.write(
        "sluice.toml",
        &format!("{toml}\n[server]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"cert.pem\"\n"),
    );
    let o = w.run(&["validate"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        show(&o).contains("needs both `tls_cert` and `tls_key`"),
        "{}",
        show(&o)
    );
}
