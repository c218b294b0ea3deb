//! Pruning the history ([`crate::retention`]).

use std::collections::HashSet;

use rusqlite::params;

use super::{rfc3339, StateStore};
use crate::error::Result;

impl StateStore {
    /// The runs retention never deletes: each job's latest run and latest committed run (the
    /// one its target's commit record names).
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn protected_runs(&self) -> Result<HashSet<String>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT (SELECT run_id FROM runs r WHERE r.job = j.job
                         ORDER BY started_at DESC, run_id DESC LIMIT 1),
                        (SELECT run_id FROM runs r WHERE r.job = j.job
                           AND status IN ('succeeded', 'succeeded_with_warnings')
                         ORDER BY started_at DESC, run_id DESC LIMIT 1)
                 FROM (SELECT DISTINCT job FROM runs) j",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut keep = HashSet::new();
        for row in rows {
            let (latest, committed) = row.map_err(|e| self.err(e))?;
            keep.extend(latest);
            keep.extend(committed);
        }
        Ok(keep)
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
        let cutoff = rfc3339(cutoff);
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
