//! Pruning the history ([`crate::retention`]).

use std::collections::HashSet;

use super::sql::{vals, Db};
use super::StateStore;
use crate::error::Result;

/// Committed runs of each job the volume check reads as its baseline (and retention keeps).
pub const VOLUME_BASELINE_RUNS: usize = 100;

impl StateStore {
    /// The runs retention never deletes: each job's latest run, and its latest `committed`
    /// committed runs that are not replays. The history keeps [`VOLUME_BASELINE_RUNS`] of
    /// them (the latest one is what its target's commit record names, and they are the
    /// volume check's baseline); files keep one.
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn protected_runs(&self, committed: usize) -> Result<HashSet<String>> {
        let ids: Vec<String> = self.rows(
            "SELECT run_id FROM (
                     SELECT run_id, ROW_NUMBER() OVER (PARTITION BY job
                         ORDER BY started_at DESC, run_id DESC) AS n FROM runs) AS latest
                 WHERE n = 1
                 UNION
                 SELECT run_id FROM (
                     SELECT run_id, ROW_NUMBER() OVER (PARTITION BY job
                         ORDER BY started_at DESC, run_id DESC) AS n FROM runs
                     WHERE status IN ('succeeded', 'succeeded_with_warnings') AND replay_of IS NULL)
                     AS committed
                 WHERE n <= ?1",
            vals![committed as i64],
            |r| r.get(0),
        )?;
        Ok(ids.into_iter().collect())
    }

    /// Deletes (or, with `dry_run`, counts) runs that started before `cutoff` and are not in
    /// `keep`, with their quality rows, plus API triggers asked for and delivered alerts
    /// created before `cutoff`, in one transaction. Returns (runs, other rows).
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error (nothing is deleted then).
    pub fn prune_history(
        &mut self,
        cutoff: chrono::DateTime<chrono::Utc>,
        keep: &HashSet<String>,
        dry_run: bool,
    ) -> Result<(usize, usize)> {
        // As `started_at` is stored: milliseconds, so text order is time order.
        let cutoff = cutoff.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let prune = |db: &Db| -> std::result::Result<(usize, usize), String> {
            let old: Vec<String> = db
                .query(
                    "SELECT run_id FROM runs WHERE started_at < ?1",
                    vals![&cutoff],
                )?
                .iter()
                .map(|r| r.get::<String>(0))
                .collect::<std::result::Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|id| !keep.contains(id))
                .collect();
            for id in &old {
                db.execute("DELETE FROM quality WHERE run_id = ?1", vals![id])?;
                db.execute("DELETE FROM runs WHERE run_id = ?1", vals![id])?;
            }
            let mut other = db.execute(
                "DELETE FROM triggers WHERE requested_at < ?1",
                vals![&cutoff],
            )?;
            other += db.execute(
                "DELETE FROM alert_outbox WHERE delivered_at IS NOT NULL AND created_at < ?1",
                vals![&cutoff],
            )?;
            Ok((old.len(), other as usize))
        };
        let pruned = if dry_run {
            self.db.rehearse(prune)
        } else {
            self.db.transaction(prune)
        };
        pruned.map_err(|e| self.err(e))
    }
}
