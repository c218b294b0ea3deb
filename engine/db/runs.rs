//! The commit record of database targets: table `sluice_runs`, in the target table's schema,
//! written in the load's own transaction (decision 0006).
//!
//! ```text
//! sluice_runs (job, target_table) → run_id, record (the run's CommitRecord as JSON)
//! ```
//!
//! One row per job and target table: the latest committed run. The loader upserts it just
//! before `COMMIT`, so the row commits or rolls back with the rows loaded; the next run of the
//! job reads it ([`read`]) and records that run in the state store if the store missed it.
//! MySQL's `overwrite` publishes with `RENAME TABLE`, which no transaction covers: its row is
//! written right after the rename (an overwrite loaded twice leaves the same table).

use super::{Connector, Dialect, TableName};
use crate::commit::CommitRecord;
use crate::error::{Error, Result};

/// Name of the table, created beside each database target.
pub const RUNS_TABLE: &str = "sluice_runs";

/// What one load writes into `sluice_runs`.
#[derive(Debug, Clone)]
pub struct RunRow {
    /// Job name.
    pub job: String,
    /// The target table as the job names it (`schema.table`).
    pub target: String,
    /// Run id.
    pub run_id: String,
    /// The [`CommitRecord`] as JSON.
    pub record: String,
}

impl RunRow {
    /// The row for `record`, a load into `target`.
    ///
    /// # Errors
    /// [`Error::Internal`] if the record cannot be serialized (a bug).
    pub fn new(record: &CommitRecord, target: &TableName) -> Result<RunRow> {
        Ok(RunRow {
            job: record.job.clone(),
            target: target.to_string(),
            run_id: record.run_id.clone(),
            record: serde_json::to_string(record).map_err(|e| Error::Internal(e.to_string()))?,
        })
    }
}

/// `sluice_runs` in `target`'s schema.
pub fn runs_table(target: &TableName) -> TableName {
    TableName {
        schema: target.schema.clone(),
        name: RUNS_TABLE.into(),
    }
}

/// `CREATE TABLE IF NOT EXISTS` for `sluice_runs` beside `target`; the record's type is the
/// dialect's ([`super::Database::record_type`]: a record lists the files an incremental file
/// source read, which can be thousands).
pub fn create_sql(d: Dialect, target: &TableName) -> String {
    let text = d.record_type();
    format!(
        "CREATE TABLE IF NOT EXISTS {} (job VARCHAR(255) NOT NULL, target_table VARCHAR(255) NOT NULL, \
         run_id VARCHAR(64) NOT NULL, record {text} NOT NULL, PRIMARY KEY (job, target_table))",
        runs_table(target).quoted(d)
    )
}

/// The upsert of one [`RunRow`]: parameters job, target_table, run_id, record.
pub fn upsert_sql(d: Dialect, target: &TableName) -> String {
    d.runs_upsert(&runs_table(target).quoted(d))
}

/// The record of the latest committed load of `job` into `target`, if any.
///
/// # Errors
/// [`Error::Connection`] when the database cannot be reached; [`Error::State`] when the
/// stored record is not one Sluice wrote.
pub async fn read(c: &Connector, target: &TableName, job: &str) -> Result<Option<CommitRecord>> {
    let key = target.to_string();
    let json = c.dialect().read_run_record(c, target, job, &key).await?;
    json.map(|j| {
        serde_json::from_str(&j).map_err(|e| {
            Error::state(
                format!("{}:{}", c.name, runs_table(target)),
                format!("row of job `{job}` is not a Sluice commit record: {e}"),
            )
        })
    })
    .transpose()
}
