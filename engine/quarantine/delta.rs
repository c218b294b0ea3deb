//! The quarantine as a Delta table (`[quarantine] format = "delta"`), local or on an object
//! store, partitioned by `run_id`, in the schema of [`super::schema`].
//!
//! ```text
//! rejected rows ──▶ local staging file (<state>/staging/_quarantine-<job>/.<run_id>.parquet.staging)
//!                        │ when the pass is over (whatever the dataset checks say)
//!                        ▼
//!        one Delta commit appending the run's rows, commitInfo["sluice.quarantine"] =
//!        {"job": …, "run_id": …}
//! ```
//!
//! Crash points: at `quarantine_before_commit` the table is at its previous version (the
//! staging file is removed by the job's next run); after `quarantine_after_commit` the run's
//! rows are in the table while the target is not yet committed — as with a folder quarantine,
//! such a run's rows stay readable, and `sluice replay` refuses a run that did not commit.
//! Appends of different runs never conflict (Delta's conflict checker lets blind appends
//! through), and retention removes old runs with one `DELETE` commit on the partition column.
//! That commit removes the runs' files from the table's current version; Sluice does not run
//! `VACUUM`, so the files stay in storage (and in older versions, for time travel) until the
//! table's owner vacuums it.

use std::collections::BTreeSet;
use std::path::Path;

use datafusion::prelude::{col, lit, DataFrame, ParquetReadOptions, SessionContext};
use deltalake::kernel::transaction::CommitProperties;

use crate::error::{Error, Result};
use crate::sink::delta::DeltaTarget;

/// The `commitInfo` key of a quarantine commit: `{"job": …, "run_id": …}` for an append,
/// `{"pruned_runs": […]}` for a retention delete.
pub const QUARANTINE_KEY: &str = "sluice.quarantine";

/// The column the table is partitioned by.
pub const PARTITION_COLUMN: &str = "run_id";

/// Appends the rows staged in `staged` (a Parquet file of [`super::schema`]) to the table as
/// one commit of run `run_id` of `job`.
///
/// # Errors
/// [`Error::Target`] when the staged file cannot be read or the commit fails; the table is
/// then at its previous version.
pub async fn append(t: &DeltaTarget, staged: &Path, job: &str, run_id: &str) -> Result<()> {
    let session = deltalake::delta_datafusion::DeltaSessionContext::default().into_inner();
    let input = session
        .read_parquet(
            staged.to_string_lossy().to_string(),
            ParquetReadOptions::default().file_extension(".staging"),
        )
        .await
        .map_err(|e| Error::target(staged, format!("reading the staged quarantine: {e}")))?;
    let props = CommitProperties::default().with_metadata([(
        QUARANTINE_KEY.to_string(),
        serde_json::json!({ "job": job, "run_id": run_id }),
    )]);
    crate::commit::crash_point("quarantine_before_commit");
    crate::sink::delta::write_table(t, input, &session, props).await?;
    crate::commit::crash_point("quarantine_after_commit");
    Ok(())
}

/// The runs with rows in `table`, from the log's file list (each file's `run_id` partition
/// value): no data file is read.
fn runs(t: &DeltaTarget, table: &deltalake::DeltaTable) -> Result<BTreeSet<String>> {
    let state = table.snapshot().map_err(|e| t.error(&e))?;
    Ok(state
        .log_data()
        .iter()
        .filter_map(|f| f.partition_values_map().remove(PARTITION_COLUMN).flatten())
        .collect())
}

/// The table's rows of run `run` (all with `None`) in [`super::schema`]'s column order, or
/// `None` when there is no table or no such row (known from the log, before any data file
/// is read).
///
/// # Errors
/// [`Error::Target`] when the table cannot be read.
pub async fn read(
    t: &DeltaTarget,
    ctx: &SessionContext,
    run: Option<&str>,
) -> Result<Option<DataFrame>> {
    let Some(table) = t.open().await? else {
        return Ok(None);
    };
    let runs = runs(t, &table)?;
    if run.map_or(runs.is_empty(), |r| !runs.contains(r)) {
        return Ok(None);
    }
    let err = |e: datafusion::error::DataFusionError| {
        Error::target(&t.shown, format!("cannot read the quarantine table: {e}"))
    };
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| t.error(&e))?;
    let provider = table.table_provider().await.map_err(err)?;
    let mut frame = ctx.read_table(provider).map_err(err)?;
    if let Some(r) = run {
        frame = frame
            .filter(col(PARTITION_COLUMN).eq(lit(r)))
            .map_err(err)?;
    }
    // A scan puts the partition column last; the quarantine's readers expect its schema.
    let names: Vec<String> = super::schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    frame.select_columns(&names).map(Some).map_err(err)
}

/// Deletes the rows of the runs `old` selects in one commit (none when no run is old);
/// with `dry_run` only counts them. Returns how many runs' rows (would) go. The runs are read
/// from the log's file list, not from the data files.
///
/// # Errors
/// [`Error::Target`] when the log cannot be read or the delete commit fails (nothing is
/// deleted then; the next prune tries again).
pub async fn prune(t: &DeltaTarget, old: &dyn Fn(&str) -> bool, dry_run: bool) -> Result<usize> {
    let Some(table) = t.open().await? else {
        return Ok(0);
    };
    let doomed: Vec<String> = runs(t, &table)?.into_iter().filter(|r| old(r)).collect();
    if doomed.is_empty() || dry_run {
        return Ok(doomed.len());
    }
    let predicate = col(PARTITION_COLUMN).in_list(doomed.iter().map(lit).collect(), false);
    let props = CommitProperties::default().with_metadata([(
        QUARANTINE_KEY.to_string(),
        serde_json::json!({ "pruned_runs": doomed }),
    )]);
    table
        .delete()
        .with_predicate(predicate)
        .with_commit_properties(props)
        .await
        .map_err(|e| {
            Error::target(
                &t.shown,
                format!("Delta table: deleting old runs' quarantined rows: {e}; nothing was deleted, and the next prune tries again"),
            )
        })?;
    Ok(doomed.len())
}
