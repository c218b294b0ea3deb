//! Retention: deleting run reports, quarantined rows and history rows older than the
//! project's `[retention]` says. `sluice prune` does it on demand (`--dry-run` only counts);
//! the daemon does it at start and every hour.
//!
//! A run's age is its start, read from its id (`20261130T020000Z-…`). Whatever their age,
//! each job's latest run and latest committed run keep their files, and the history keeps
//! each job's latest run and latest 100 committed runs
//! ([`crate::state::VOLUME_BASELINE_RUNS`]): the target's commit record names the latest
//! committed run (a run missing from the history would be recorded again from that record by
//! the next run's reconciliation), and the volume check's baseline is read from them. Watermarks, the schedule's fires and the
//! registered model versions are never pruned.
//!
//! **Crash points.** Each file is deleted on its own, a Delta quarantine's old runs in one
//! `DELETE` commit, and the history rows in one transaction; killed midway, a later prune
//! deletes the rest. Nothing a run reads is deleted, except an old run's quarantined rows for
//! `sluice replay` of that run — which is what the setting asks for.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::config::interpolate::Redactor;
use crate::config::Project;
pub use crate::config::RetentionPolicy;
use crate::error::Result;
use crate::state::StateStore;

/// What a prune deleted (or, dry, would delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    /// Run report files.
    pub reports: usize,
    /// Runs whose quarantined rows were deleted: a folder quarantine's `<run_id>.parquet`
    /// files, or a Delta quarantine's `run_id` partitions.
    pub quarantined_runs: usize,
    /// Rows of the `runs` table (their `quality` rows go with them).
    pub runs: usize,
    /// Rows of `triggers` and delivered rows of `alert_outbox`.
    pub other_rows: usize,
}

/// The start of run `run_id`, from its id (`YYYYMMDDTHHMMSSZ-xxxxxx`), or `None` for a name
/// that is not a run id (such files are never deleted).
pub fn run_started(run_id: &str) -> Option<DateTime<Utc>> {
    let stamp = run_id.get(..16)?;
    NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// Prunes `project` as its `[retention]` says, as of `now`; with `dry_run` only counts.
///
/// # Errors
/// [`crate::error::Error::State`] when the state store cannot be read or written. A file
/// that cannot be deleted is skipped (and left for the next prune).
pub async fn prune(project: &Project, now: DateTime<Utc>, dry_run: bool) -> Result<Pruned> {
    let policy = &project.settings.retention;
    let mut store = StateStore::of(project)?;
    let keep_files = store.protected_runs(1)?;
    let keep_history = store.protected_runs(crate::state::VOLUME_BASELINE_RUNS)?;
    // A retention longer than the calendar reaches keeps everything.
    let cutoff = |age: Duration| {
        chrono::Duration::from_std(age)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    };
    let mut pruned = Pruned::default();
    if let Some(age) = policy.run_reports {
        let runs = project.path(&project.settings.state_dir).join("runs");
        for dir in subfolders(&runs) {
            pruned.reports += prune_files(&dir, "json", cutoff(age), &keep_files, dry_run);
        }
    }
    if let Some(age) = policy.quarantine {
        let cutoff = cutoff(age);
        let old = |run_id: &str| {
            run_started(run_id).is_some_and(|t| t < cutoff) && !keep_files.contains(run_id)
        };
        pruned.quarantined_runs = prune_quarantines(project, &old, dry_run).await;
    }
    if let Some(age) = policy.history {
        let (runs, other) = store.prune_history(cutoff(age), &keep_history, dry_run)?;
        pruned.runs = runs;
        pruned.other_rows = other;
    }
    Ok(pruned)
}

/// Prunes the runs `old` selects from every job's quarantine; returns how many runs' rows
/// (would) go. A quarantine that cannot be read is logged and left for the next prune.
async fn prune_quarantines(project: &Project, old: &dyn Fn(&str) -> bool, dry_run: bool) -> usize {
    let redactor = Redactor::default();
    let ctx = crate::plan::session(project);
    let mut seen = HashSet::new();
    let mut n = 0;
    for job in project.jobs.values() {
        let location = match crate::plan::quarantine_location(project, job, &redactor, &ctx) {
            Ok(l) => l,
            Err(e) => {
                crate::logging::stderr_line(&format!(
                    "warning: quarantine of job `{}` not pruned: {}",
                    job.name,
                    redactor.redact(&e.to_string())
                ));
                continue;
            }
        };
        if !seen.insert(location.shown(project)) {
            continue;
        }
        match location.prune(old, dry_run).await {
            Ok(k) => n += k,
            Err(e) => crate::logging::stderr_line(&format!(
                "warning: quarantine of job `{}` not pruned: {}",
                job.name,
                redactor.redact(&e.to_string())
            )),
        }
    }
    n
}

fn subfolders(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

/// Deletes the `<run_id>.<extension>` files of `dir` whose run started before `cutoff` and
/// is not in `keep`; returns how many (would) go.
fn prune_files(
    dir: &Path,
    extension: &str,
    cutoff: DateTime<Utc>,
    keep: &HashSet<String>,
    dry_run: bool,
) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some(extension) {
            continue;
        }
        let Some(run_id) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let old = run_started(run_id).is_some_and(|t| t < cutoff);
        if old && !keep.contains(run_id) && (dry_run || std::fs::remove_file(&path).is_ok()) {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_id_gives_its_start_and_other_names_give_none() {
        let t = run_started("20261130T020304Z-abc123").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-30T02:03:04+00:00");
        assert_eq!(run_started("notes"), None);
        assert_eq!(run_started("2026-11-30T02:03:04Z"), None);
    }
}
