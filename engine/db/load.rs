//! The four load modes, written once for every database kind.
//!
//! ```text
//! staged rows (the target itself for append, a staging table otherwise)
//!   ──apply──▶ prepare (driver) → one staged row per key (merge, scd2)
//!              → append | overwrite | merge | scd2   (statements from the driver's dialect)
//!              → the run's record in sluice_runs → before_publish → COMMIT → after_publish
//! ```
//!
//! A driver implements [`LoadSession`]: how it runs a statement, counts, writes the run's
//! record and commits, plus the SQL text its dialect needs where it differs from the standard
//! forms given here as defaults (the upsert always differs). The order of the statements, the
//! counts a run reports, the duplicate-key refusal and the crash points are here, once.
//!
//! Counts ([`LoadStats`]): `overwrite` deletes the rows the table held and inserts the staged
//! rows; `merge` inserts the staged rows whose key the table lacked and updates those whose
//! non-key values changed (unchanged rows are not rewritten), and with `delete_missing`
//! deletes the rows whose key was not staged; `scd2` closes the current version of a changed
//! key (`valid_to` = the run's start), inserts the new versions, and with `delete_missing`
//! closes the keys not staged.

use chrono::{DateTime, Utc};

use super::runs::RunRow;
use super::sink::{column_list, key_join, DbTarget, IS_CURRENT, ROW_HASH, VALID_FROM, VALID_TO};
use super::Dialect;
use crate::commit::crash_point;
use crate::config::spec::LoadMode;
use crate::error::Result;
use crate::report::LoadStats;

/// The quoted names a load mode's statements are made of.
pub struct Names {
    /// The target table.
    pub target: String,
    /// The staging table.
    pub stage: String,
    /// The staged columns, comma-separated.
    pub cols: String,
    /// The staged columns of the staging table aliased `s` (`s."a", s."b"`).
    pub s_cols: String,
    /// The key columns, comma-separated.
    pub key: String,
    /// The first key column.
    pub first_key: String,
    /// `s.k1 = t.k1 AND ...` over the key.
    pub on: String,
    /// The non-key staged columns (a merge updates these).
    pub non_key: Vec<String>,
    /// scd2's columns: `valid_from`, `valid_to`, `is_current`, `row_hash`.
    pub valid_from: String,
    /// See `valid_from`.
    pub valid_to: String,
    /// See `valid_from`.
    pub is_current: String,
    /// See `valid_from`.
    pub row_hash: String,
}

impl Names {
    /// The names of `t`'s load in dialect `d`, staged in `stage` (already quoted).
    pub fn new(d: Dialect, t: &DbTarget, stage: String) -> Names {
        Names {
            target: t.table.quoted(d),
            stage,
            cols: column_list(d, &t.staged),
            s_cols: t.staged_of(d, "s"),
            key: t.key_list(d),
            first_key: t.key.first().map(|k| d.quote(k)).unwrap_or_default(),
            on: key_join(d, "s", "t", &t.key),
            non_key: t
                .staged
                .iter()
                .filter(|c| !t.key.contains(&c.name))
                .map(|c| d.quote(&c.name))
                .collect(),
            valid_from: d.quote(VALID_FROM),
            valid_to: d.quote(VALID_TO),
            is_current: d.quote(IS_CURRENT),
            row_hash: d.quote(ROW_HASH),
        }
    }
}

/// An overwrite that builds the new table beside the target and swaps it in with one
/// statement (MySQL, whose DDL cannot be rolled back).
pub struct Swap {
    /// Statements that prepare the new table (errors: nothing was published).
    pub prepare: Vec<String>,
    /// Fills the new table from the stage; its affected rows are the rows inserted.
    pub fill: String,
    /// The statement that publishes; a failure leaves it unknown whether it took effect.
    pub publish: String,
    /// Drops what the swap left behind; failures are logged, not returned.
    pub cleanup: String,
}

/// One database load's transaction, as the load modes need it. Statements run in the
/// transaction the driver opened at `begin` (and [`LoadSession::prepare`] may renew).
///
/// The SQL methods return statements in the driver's dialect over [`Names`]; the defaults are
/// standard SQL that PostgreSQL and SQLite accept.
pub(crate) trait LoadSession {
    /// Runs a statement; returns the rows it affected. `started` is bound to the statement's
    /// one parameter ([`LoadSession::started_param`]) when given.
    async fn execute(&mut self, sql: &str, started: Option<&DateTime<Utc>>) -> Result<u64>;

    /// Runs a `SELECT count(*)` and returns the count.
    async fn count(&mut self, sql: &str) -> Result<u64>;

    /// Writes the run's record into `sluice_runs` (decision 0006).
    async fn record(&mut self, run: &RunRow) -> Result<()>;

    /// Commits. A failure means it is unknown whether the rows were committed when the
    /// connection broke during the commit; the driver's error says so.
    async fn commit(&mut self) -> Result<()>;

    /// Before the mode's statements: for example, commit the staging and open the transaction
    /// that applies the mode, or set a statement timeout. Nothing by default.
    async fn prepare(&mut self, _mode: LoadMode) -> Result<()> {
        Ok(())
    }

    /// Runs [`Swap::publish`]; only a driver whose [`LoadSession::swap`] gives one needs it.
    async fn publish(&mut self, sql: &str) -> Result<()> {
        self.execute(sql, None).await.map(drop)
    }

    /// The marker of the statement's one parameter, the run's start time as a timestamp.
    fn started_param(&self) -> &'static str;

    /// `INSERT ... SELECT` from the stage that inserts new keys and updates changed rows
    /// (and only those); its affected rows feed [`LoadSession::updated_rows`].
    fn upsert(&self, n: &Names) -> String;

    /// Runs the upsert of `rows` staged rows; returns the rows it inserted and updated. By
    /// default, from the staged keys the target had before the upsert (counted in a statement
    /// of their own) and the upsert's affected rows ([`LoadSession::updated_rows`]); a dialect
    /// whose upsert can report both exactly overrides this.
    async fn upsert_counts(&mut self, n: &Names, rows: u64) -> Result<(u64, u64)> {
        let matched = self
            .count(&format!(
                "SELECT count(*) FROM {} s WHERE EXISTS (SELECT 1 FROM {} t WHERE {})",
                n.stage, n.target, n.on
            ))
            .await?;
        let affected = self.execute(&self.upsert(n), None).await?;
        let inserted = rows.saturating_sub(matched);
        Ok((inserted, self.updated_rows(affected, inserted)))
    }

    /// Rows a merge updated, from the upsert's affected rows and the rows it inserted.
    fn updated_rows(&self, affected: u64, inserted: u64) -> u64 {
        affected.saturating_sub(inserted)
    }

    /// The overwrite by swapping tables, when the dialect cannot empty the target inside the
    /// transaction; `None` to delete and insert in the transaction.
    fn swap(&self, _n: &Names) -> Option<Swap> {
        None
    }

    /// Empties the target inside the transaction.
    fn clear(&self, n: &Names) -> String {
        format!("DELETE FROM {}", n.target)
    }

    /// Deletes the target rows whose key was not staged.
    fn delete_missing(&self, n: &Names) -> String {
        format!(
            "DELETE FROM {} AS t WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE {})",
            n.target, n.stage, n.on
        )
    }

    /// scd2: closes the current version of each staged key whose row hash changed.
    fn close_changed(&self, n: &Names) -> String {
        let (s, on, h) = (&n.stage, &n.on, &n.row_hash);
        self.close_current(
            n,
            &format!("EXISTS (SELECT 1 FROM {s} s WHERE {on} AND s.{h} <> t.{h})"),
        )
    }

    /// scd2 with `delete_missing`: closes the current version of each key not staged.
    fn close_missing(&self, n: &Names) -> String {
        let (s, on) = (&n.stage, &n.on);
        self.close_current(n, &format!("NOT EXISTS (SELECT 1 FROM {s} s WHERE {on})"))
    }

    /// scd2: `UPDATE` closing the current versions (target aliased `t`) where `condition`.
    fn close_current(&self, n: &Names, condition: &str) -> String {
        format!(
            "UPDATE {t} AS t SET {vt} = {p}, {cur} = {f} WHERE t.{cur} = {tr} AND {condition}",
            t = n.target,
            vt = n.valid_to,
            p = self.started_param(),
            cur = n.is_current,
            f = self.bool(false),
            tr = self.bool(true)
        )
    }

    /// scd2: inserts a current version for each staged key with none (new or just closed).
    fn insert_versions(&self, n: &Names) -> String {
        format!(
            "INSERT INTO {t} ({cols}, {vf}, {vt}, {cur}) SELECT {s_cols}, {p}, NULL, {tr} \
             FROM {s} s WHERE NOT EXISTS (SELECT 1 FROM {t} t WHERE t.{cur} = {tr} AND {on})",
            t = n.target,
            cols = n.cols,
            vf = n.valid_from,
            vt = n.valid_to,
            cur = n.is_current,
            s_cols = n.s_cols,
            p = self.started_param(),
            tr = self.bool(true),
            s = n.stage,
            on = n.on
        )
    }

    /// A boolean literal (`1`/`0` unless the dialect has `true`/`false`).
    fn bool(&self, v: bool) -> &'static str {
        if v {
            "1"
        } else {
            "0"
        }
    }
}

/// Applies `t`'s load mode from the staged `rows`, writes `run`'s record and commits, with
/// the crash points `before_publish` and `after_publish` around the publishing statement.
///
/// # Errors
/// The driver's errors ([`crate::error::Error::Connection`], unknown-outcome errors from the
/// commit); [`crate::error::Error::Target`] when a merge or scd2 stages two rows of one key.
/// Until the publishing statement succeeds the table is as before.
pub(crate) async fn apply<S: LoadSession>(
    s: &mut S,
    n: &Names,
    t: &DbTarget,
    run: &RunRow,
    rows: u64,
) -> Result<LoadStats> {
    s.prepare(t.mode).await?;
    if matches!(t.mode, LoadMode::Merge | LoadMode::Scd2) {
        let dups = s
            .count(&format!(
                "SELECT count(*) FROM (SELECT 1 FROM {} GROUP BY {} HAVING count(*) > 1) d",
                n.stage, n.key
            ))
            .await?;
        if dups > 0 {
            return Err(super::sink::duplicate_keys(t, dups));
        }
    }
    let stats = match t.mode {
        LoadMode::Append => LoadStats {
            inserted: rows,
            ..LoadStats::default()
        },
        LoadMode::Overwrite => match s.swap(n) {
            Some(swap) => return swap_in(s, n, run, swap).await,
            None => overwrite(s, n).await?,
        },
        LoadMode::Merge => merge(s, n, t, rows).await?,
        LoadMode::Scd2 => scd2(s, n, t).await?,
    };
    s.record(run).await?;
    crash_point("before_publish");
    s.commit().await?;
    crash_point("after_publish");
    Ok(stats)
}

async fn overwrite<S: LoadSession>(s: &mut S, n: &Names) -> Result<LoadStats> {
    let deleted = s
        .count(&format!("SELECT count(*) FROM {}", n.target))
        .await?;
    s.execute(&s.clear(n), None).await?;
    let inserted = s.execute(&insert_staged(&n.target, n), None).await?;
    Ok(LoadStats {
        inserted,
        deleted,
        ..LoadStats::default()
    })
}

/// `INSERT INTO into (cols) SELECT cols FROM stage`.
fn insert_staged(into: &str, n: &Names) -> String {
    format!(
        "INSERT INTO {into} ({cols}) SELECT {cols} FROM {}",
        n.stage,
        cols = n.cols
    )
}

/// The overwrite by swap: the new table is filled, then published by one statement; the
/// run's record follows it (an overwrite loaded twice leaves the same table).
async fn swap_in<S: LoadSession>(
    s: &mut S,
    n: &Names,
    run: &RunRow,
    swap: Swap,
) -> Result<LoadStats> {
    let deleted = s
        .count(&format!("SELECT count(*) FROM {}", n.target))
        .await?;
    for sql in &swap.prepare {
        s.execute(sql, None).await?;
    }
    let inserted = s.execute(&swap.fill, None).await?;
    crash_point("before_publish");
    s.publish(&swap.publish).await?;
    crash_point("after_publish");
    s.record(run).await?;
    s.commit().await?;
    if let Err(e) = s.execute(&swap.cleanup, None).await {
        tracing::warn!("after the overwrite of {}: {e}", n.target);
    }
    Ok(LoadStats {
        inserted,
        deleted,
        ..LoadStats::default()
    })
}

async fn merge<S: LoadSession>(s: &mut S, n: &Names, t: &DbTarget, rows: u64) -> Result<LoadStats> {
    let (inserted, updated) = s.upsert_counts(n, rows).await?;
    let mut stats = LoadStats {
        inserted,
        updated,
        deleted: 0,
    };
    if t.delete_missing {
        stats.deleted = s.execute(&s.delete_missing(n), None).await?;
    }
    Ok(stats)
}

async fn scd2<S: LoadSession>(s: &mut S, n: &Names, t: &DbTarget) -> Result<LoadStats> {
    let started = Some(&t.started);
    let mut stats = LoadStats {
        updated: s.execute(&s.close_changed(n), started).await?,
        ..LoadStats::default()
    };
    if t.delete_missing {
        stats.deleted = s.execute(&s.close_missing(n), started).await?;
    }
    stats.inserted = s.execute(&s.insert_versions(n), started).await?;
    Ok(stats)
}
