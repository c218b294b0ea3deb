//! `sluice schedule`: the daemon ([`sluice::daemon`]) until SIGTERM or Ctrl-C.

use std::path::Path;
use std::time::Duration;

use sluice::error::{Error, EXIT_OK};

use super::*;

pub(crate) async fn schedule(explicit: Option<&Path>, grace: Duration) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let options = sluice::daemon::DaemonOptions {
        grace,
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

/// `--grace`: a duration as job files write them (`"30s"`, `"5m"`).
pub(crate) fn parse_grace(text: &str) -> Result<Duration, String> {
    sluice::config::parse_duration(text)
}
