//! `sluice schedule`: the daemon ([`sluice::daemon`]) until SIGTERM or Ctrl-C; `sluice resume`
//! and `sluice token hash`, which serve it.

use std::path::Path;
use std::time::Duration;

use sluice::error::{Error, EXIT_OK};

use super::*;

pub(crate) async fn schedule(
    explicit: Option<&Path>,
    grace: Duration,
    listen: Option<String>,
) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let options = sluice::daemon::DaemonOptions {
        grace,
        listen,
        ..Default::default()
    };
    sluice::daemon::run(&root, &options, shutdown_signal()).await?;
    Ok(EXIT_OK)
}

/// Completes at the first SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        // Without a SIGTERM handler, Ctrl-C still stops the daemon.
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `sluice resume JOB`: closes the job's circuit in the state store; a running daemon runs
/// its next fire.
pub(crate) fn resume(explicit: Option<&Path>, job: &str) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let (project, _) = Project::load_partial(&root);
    let store = sluice::state::StateStore::of(&project)?;
    let circuit = store.circuit(job)?;
    if store.close_circuit(job)? {
        let last = circuit.and_then(|c| c.last_error).unwrap_or_default();
        outln!("job {job} resumed; its next fire runs (it was paused after: {last})");
    } else {
        outln!("job {job} was not paused");
    }
    Ok(EXIT_OK)
}

/// `sluice token hash`: the SHA-256 of the token on standard input (surrounding whitespace
/// removed), in hex.
pub(crate) fn token_hash() -> Result<i32, Error> {
    use std::io::Read;
    let mut token = String::new();
    std::io::stdin()
        .read_to_string(&mut token)
        .map_err(|e| Error::Usage {
            message: format!("cannot read the token from standard input: {e}"),
            hint: Some("sluice token hash < token.txt".into()),
        })?;
    // The server trims the token it is sent the same way.
    let token = token.trim();
    if token.len() < 16 {
        return Err(Error::Usage {
            message: format!(
                "the token on standard input has {} characters; at least 16 are needed",
                token.len()
            ),
            hint: Some("make one with `openssl rand -hex 32 > token.txt`".into()),
        });
    }
    outln!("{}", sluice::server::token_hash(token));
    Ok(EXIT_OK)
}

/// `sluice prune [--dry-run]`: applies `[retention]` now.
pub(crate) async fn prune(explicit: Option<&Path>, dry_run: bool) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let project = load(&root)?;
    if !project.settings.retention.is_set() {
        return Err(Error::Usage {
            message: "sluice.toml has no [retention]: everything is kept".into(),
            hint: Some("add `[retention]` with `run_reports`, `quarantine` and `history` durations, such as `history = \"365d\"`".into()),
        });
    }
    let p = sluice::retention::prune(&project, chrono::Utc::now(), dry_run).await?;
    outln!(
        "{} {} run report(s), {} run(s) of quarantined rows, {} run(s) and {} other row(s) of history",
        if dry_run { "would delete" } else { "deleted" },
        p.reports,
        p.quarantined_runs,
        p.runs,
        p.other_rows
    );
    Ok(EXIT_OK)
}
