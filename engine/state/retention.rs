//! Pruning the history ([`crate::retention`]).

use std::collections::HashSet;

use rusqlite::params;

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
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run_id FROM (
                     SELECT run_id, ROW_NUMBER() OVER (PARTITION BY job
                         ORDER BY started_at DESC, run_id DESC) AS n FROM runs) WHERE n = 1
                 UNION
                 SELECT run_id FROM (
                     SELECT run_id, ROW_NUMBER() OVER (PARTITION BY job
                         ORDER BY started_at DESC, run_id DESC) AS n FROM runs
                     WHERE status IN ('succeeded', 'succeeded_with_warnings') AND replay_of IS NULL)
                 WHERE n <= ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![committed as i64], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))
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
        let path = self.path.clone();
        let err = |e: rusqlite::Error| crate::error::Error::state(&path, e.to_string());
        // As `started_at` is stored: milliseconds, so text order is time order.
        let cutoff = cutoff.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let tx = self.conn.transaction().map_err(err)?;
        let old: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT run_id FROM runs WHERE started_at < ?1")
                .map_err(err)?;
            let ids = stmt
                .query_map(params![cutoff], |r| r.get::<_, String>(0))
                .map_err(err)?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(err)?;
            ids.into_iter().filter(|id| !keep.contains(id)).collect()
        };
        let mut other = 0;
        for id in &old {
            tx.execute("DELETE FROM quality WHERE run_id = ?1", params![id])
                .map_err(err)?;
            tx.execute("DELETE FROM runs WHERE run_id = ?1", params![id])
                .map_err(err)?;
        }
        other += tx
            .execute(
                "DELETE FROM triggers WHERE requested_at < ?1",
                params![cutoff],
            )
            .map_err(err)?;
        other += tx
            .execute(
                "DELETE FROM alert_outbox WHERE delivered_at IS NOT NULL AND created_at < ?1",
                params![cutoff],
            )
            .map_err(err)?;
        if dry_run {
            tx.rollback().map_err(err)?;
        } else {
            tx.commit().map_err(err)?;
        }
        Ok((old.len(), other))
    }
}
