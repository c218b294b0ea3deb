//! Date backfills and logical dates: how far a date backfill got (so an interrupted one
//! resumes where it stopped), and whether a job has a committed run for a logical date (for
//! jobs that run `after` it).

use chrono::{DateTime, NaiveDate, Utc};

use super::sql::vals;
use super::{rfc3339, StateStore};
use crate::error::Result;

/// A logical date as run reports write it (RFC 3339 UTC, whole seconds), so that stored
/// dates compare as text.
fn logical(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl StateStore {
    /// The last date the backfill of `job` with `vars` (as JSON) over `from..to` committed, if
    /// it started before. Another set of vars is another backfill.
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn backfill_done_through(
        &self,
        job: &str,
        vars: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Option<NaiveDate>> {
        let done: Option<Option<String>> = self.one(
            "SELECT done_through FROM backfills
             WHERE job = ?1 AND vars = ?2 AND from_date = ?3 AND to_date = ?4",
            vals![job, vars, from.to_string(), to.to_string()],
        )?;
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
        vars: &str,
        from: NaiveDate,
        to: NaiveDate,
        done: Option<NaiveDate>,
    ) -> Result<()> {
        self.db
            .execute(
                "INSERT INTO backfills (job, vars, from_date, to_date, done_through, updated_at)
                 VALUES (?1, ?6, ?2, ?3, ?4, ?5)
                 ON CONFLICT (job, vars, from_date, to_date)
                 DO UPDATE SET done_through = excluded.done_through, updated_at = excluded.updated_at",
                vals![
                    job,
                    from.to_string(),
                    to.to_string(),
                    done.map(|d| d.to_string()),
                    rfc3339(chrono::Utc::now()),
                    vars
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Forgets the backfill of `job` over `from..to` (it finished, or `--restart`).
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn backfill_forget(
        &self,
        job: &str,
        vars: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<()> {
        self.db
            .execute(
                "DELETE FROM backfills WHERE job = ?1 AND vars = ?2 AND from_date = ?3 AND to_date = ?4",
                vals![job, vars, from.to_string(), to.to_string()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The latest logical date `job` has a committed run for (RFC 3339 UTC), if any.
    ///
    /// # Errors
    /// [`crate::error::Error::State`] on a database error.
    pub fn latest_committed_date(&self, job: &str) -> Result<Option<String>> {
        self.one(
            "SELECT max(logical_date) FROM runs WHERE job = ?1
               AND status IN ('succeeded', 'succeeded_with_warnings')",
            vals![job],
        )
        .map(Option::flatten)
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
        self.one(
            "SELECT run_id FROM runs WHERE job = ?1 AND logical_date >= ?2 AND logical_date < ?3
               AND status IN ('succeeded', 'succeeded_with_warnings')
             ORDER BY started_at DESC LIMIT 1",
            vals![job, logical(start), logical(end)],
        )
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
        assert_eq!(
            store.backfill_done_through("j", "{}", from, to).unwrap(),
            None
        );
        store.backfill_progress("j", "{}", from, to, None).unwrap();
        assert_eq!(
            store.backfill_done_through("j", "{}", from, to).unwrap(),
            None
        );
        store
            .backfill_progress("j", "{}", from, to, Some(d("2026-11-02")))
            .unwrap();
        assert_eq!(
            store.backfill_done_through("j", "{}", from, to).unwrap(),
            Some(d("2026-11-02"))
        );
        assert_eq!(
            store
                .backfill_done_through("j", "{}", from, d("2026-11-06"))
                .unwrap(),
            None,
            "another range is another backfill"
        );
        assert_eq!(
            store
                .backfill_done_through("j", r#"{"region":"US"}"#, from, to)
                .unwrap(),
            None,
            "other vars are another backfill"
        );
        store.backfill_forget("j", "{}", from, to).unwrap();
        assert_eq!(
            store.backfill_done_through("j", "{}", from, to).unwrap(),
            None
        );
    }
}
