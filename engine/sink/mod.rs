//! Targets ("sinks" in code): where canonical rows are loaded, staged and committed atomically.
//!
//! Every sink follows the same contract, from DESIGN.md's "nothing half-written":
//!
//! 1. `begin` — called once per run, before any row. Takes the target's lock (one writer at a
//!    time), clears what an earlier crashed run left in staging, and prepares a staging area.
//!    Nothing a reader can see changes.
//! 2. `write` — called for each batch of valid canonical rows, in any number. Rows go to
//!    staging only.
//! 3. `commit` — called at most once, after every row is written **and** the dataset checks
//!    passed. Publishes the staged state in one atomic step; after it returns `Ok`, readers see
//!    the new state, and before it, the previous one.
//! 4. `abort` — called instead of `commit` on any failure (and implied by dropping the sink);
//!    removes staging. The published state is untouched.
//!
//! A crash or `kill -9` at any moment leaves the previously published state intact: at worst a
//! staging folder remains, which the next `begin` removes.

pub mod delta;
pub mod object_parquet;
pub mod parquet;
pub mod staged;

use datafusion::arrow::array::RecordBatch;
use futures::future::BoxFuture;

use crate::commit::CommitRecord;
use crate::error::Result;
use crate::report::LoadStats;
pub use parquet::SinkMetrics;

/// The contract above, which every target implements (a Parquet folder, a Parquet folder on
/// an object store, a Delta table, a database table). The run holds a `Box<dyn Sink>` and
/// never asks which target it is.
pub trait Sink: Send {
    /// Stages a batch of valid canonical rows.
    ///
    /// # Errors
    /// The staging could not be written (disk, network, database).
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<()>>;

    /// Ends the staging (flushes files, ends a `COPY`); returns what was staged.
    ///
    /// # Errors
    /// As [`Sink::write`].
    fn finish(&mut self) -> BoxFuture<'_, Result<SinkMetrics>>;

    /// Publishes the staged rows with `record` in one atomic step; returns a database
    /// target's insert/update/delete counts (`None` for file targets, which only add or
    /// replace).
    ///
    /// # Errors
    /// Nothing was published, or (said in the error) the outcome is unknown.
    fn commit<'a>(
        self: Box<Self>,
        record: &'a CommitRecord,
    ) -> BoxFuture<'a, Result<Option<LoadStats>>>;

    /// Removes the staging; the published state is untouched.
    fn abort(self: Box<Self>) -> BoxFuture<'static, ()>;
}
