//! Date backfills and logical dates: how far a date backfill got (so an interrupted one
//! resumes where it stopped), and whether a job has a committed run for a logical date (for
//! jobs that run `after` it).

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{params, OptionalExtension};

use super::{rfc3339, StateStore};
use crate::error::Result;

/// A logical date as run reports write it (RFC 3339 UTC, whole seconds), so that stored
/// dates compare as text.
fn logical(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl StateStore {
    /// The last date the backfill of `job` over `from..to` committed, if it started before.
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn backfill_done_through(
        &self,
        job: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Option<NaiveDate>> {
        let done: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT done_through FROM backfills WHERE job = ?1 AND from_date = ?2 AND to_date = ?3",
                params![job, from.to_string(), to.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(done
            .flatten()
            .and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok()))
    }

    /// Records that the backfill of `job` over `from..to` committed every date up to `done`
    /// (called after that date's run is recorded, so a crash between the two re-runs the
    /// date, which replaces its own output).
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn backfill_progress(
        &self,
        job: &str,
        from: NaiveDate,
        to: NaiveDate,
        done: Option<NaiveDate>,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO backfills (job, from_date, to_date, done_through, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (job, from_date, to_date)
                 DO UPDATE SET done_through = ?4, updated_at = ?5",
                params![
                    job,
                    from.to_string(),
                    to.to_string(),
                    done.map(|d| d.to_string()),
                    rfc3339(chrono::Utc::now())
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Forgets the backfill of `job` over `from..to` (it finished, or `--restart`).
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn backfill_forget(&self, job: &str, from: NaiveDate, to: NaiveDate) -> Result<()> {
        self.conn
            .execute(
                "DELETE FROM backfills WHERE job = ?1 AND from_date = ?2 AND to_date = ?3",
                params![job, from.to_string(), to.to_string()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The id of the latest committed run of `job` whose logical date is in `start <= t <
    /// end`, if there is one.
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn committed_between(
        &self,
        job: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT run_id FROM runs WHERE job = ?1 AND logical_date >= ?2 AND logical_date < ?3
                   AND status IN ('succeeded', 'succeeded_with_warnings')
                 ORDER BY started_at DESC LIMIT 1",
                params![job, logical(start), logical(end)],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backfill_progress_is_kept_per_range_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let (from, to) = (d("2026-11-01"), d("2026-11-05"));
        assert_eq!(store.backfill_done_through("j", from, to).unwrap(), None);
        store.backfill_progress("j", from, to, None).unwrap();
        assert_eq!(store.backfill_done_through("j", from, to).unwrap(), None);
        store
            .backfill_progress("j", from, to, Some(d("2026-11-02")))
            .unwrap();
        assert_eq!(
            store.backfill_done_through("j", from, to).unwrap(),
            Some(d("2026-11-02"))
        );
        assert_eq!(
            store
                .backfill_done_through("j", from, d("2026-11-06"))
                .unwrap(),
            None,
            "another range is another backfill"
        );
        store.backfill_forget("j", from, to).unwrap();
        assert_eq!(store.backfill_done_through("j", from, to).unwrap(), None);
    }
}
