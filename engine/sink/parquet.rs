//! Parquet target: a folder of zstd-compressed Parquet files, optionally Hive-partitioned
//! (`origin=JFK/part.parquet`), published atomically.
//!
//! ```text
//! warehouse/
//!   flights/                          ← published: what readers see
//!   .flights.staging-<run_id>/        ← the next version, built here
//!   .flights.new-<run_id>/            ← DataFusion's writer output for this run
//! ```
//!
//! * **overwrite**: the staging folder holds only this run's files.
//! * **append**: the staging folder first gets hard links to every published file (no data is
//!   copied), then this run's files.
//! * A version with no rows holds one Parquet file with the schema and no rows
//!   ([`EMPTY_FILE`]), so readers see an empty table rather than "no files found".
//!
//! Commit swaps the staging folder and the published folder in one `renameat2(RENAME_EXCHANGE)`,
//! so a reader sees either the old version or the new one, never a mix; then the old version
//! (now under the staging name) is deleted. The first publish of a target is a plain `rename`.
//! Files are written by DataFusion's Parquet writer (parallel row-group encoding), fed from the
//! run's stream through a channel.

use futures::future::BoxFuture;
use std::fs;
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;

use crate::config::spec::LoadMode;
use crate::error::{Error, Result};
use crate::fsutil::{exchange, files_under, sync_dir, sync_tree, Lock};
use crate::sink::staged::StagedWriter;

/// What a committed (or staged) target holds after the run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SinkMetrics {
    /// Rows this run wrote.
    pub rows_written: u64,
    /// Files this run wrote.
    pub files_written: u64,
    /// Files in the published folder after commit (for append: old + new).
    pub files_total: u64,
}

/// A Parquet target being written by one run. See the module docs and [`crate::sink`] for the
/// contract.
pub struct ParquetSink {
    target: PathBuf,
    staging: PathBuf,
    new_dir: PathBuf,
    writer: StagedWriter,
    /// The target's schema, for the empty file of a run that loads no rows.
    schema: SchemaRef,
    lock: Option<Lock>,
    committed: bool,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::target(path, format!("{what}: {e}"))
}

/// Takes a target's lock file (one writer at a time on this machine).
///
/// # Errors
/// [`Error::Target`] naming `shown` when another run holds it, or it cannot be created.
pub(crate) fn target_lock(lock_path: &Path, shown: &str) -> Result<Lock> {
    Lock::try_acquire(lock_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Error::target(
                shown,
                format!(
                    "another run is writing this target (lock {} is held); wait for it to finish",
                    lock_path.display()
                ),
            )
        } else {
            io_err(lock_path, "cannot take the target lock", e)
        }
    })
}

fn sibling(target: &Path, tag: &str, run_id: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "target".into());
    target.with_file_name(format!(".{name}.{tag}-{run_id}"))
}

impl ParquetSink {
    /// Starts a run's write to `target` (see [`crate::sink`] step 1).
    ///
    /// `lock_path` is the target's lock file (under the state folder).
    ///
    /// # Errors
    /// [`Error::Target`] when another run holds the lock, or staging cannot be prepared.
    #[allow(clippy::too_many_arguments)]
    pub fn begin(
        ctx: &SessionContext,
        target: &Path,
        lock_path: &Path,
        run_id: &str,
        mode: LoadMode,
        schema: SchemaRef,
        partition_by: Vec<String>,
        files: &crate::config::spec::ParquetFiles,
    ) -> Result<ParquetSink> {
        let lock = target_lock(lock_path, &target.display().to_string())?;
        let parent = target
            .parent()
            .ok_or_else(|| Error::target(target, "target has no parent folder"))?;
        fs::create_dir_all(parent).map_err(|e| io_err(parent, "cannot create folder", e))?;
        remove_leftovers(target)?;
        let staging = sibling(target, "staging", run_id);
        let new_dir = sibling(target, "new", run_id);
        let writer = StagedWriter::start(ctx, &new_dir, schema.clone(), partition_by, files)?;
        fs::create_dir_all(&staging).map_err(|e| io_err(&staging, "cannot create staging", e))?;
        // From here on, dropping the sink removes staging, whatever fails.
        let sink = ParquetSink {
            target: target.to_path_buf(),
            writer,
            staging,
            new_dir,
            schema: schema.clone(),
            lock: Some(lock),
            committed: false,
        };
        if mode == LoadMode::Append && target.is_dir() {
            for rel in files_under(target).map_err(|e| io_err(target, "cannot list target", e))? {
                // The previous run's commit record is replaced by this run's.
                // So is the empty file of a run that loaded nothing: `finish` writes it
                // again if the table is still empty.
                if rel == Path::new(crate::commit::COMMIT_FILE) || rel == Path::new(EMPTY_FILE) {
                    continue;
                }
                let dst = sink.staging.join(&rel);
                if let Some(p) = dst.parent() {
                    fs::create_dir_all(p).map_err(|e| io_err(p, "cannot create staging", e))?;
                }
                fs::hard_link(target.join(&rel), &dst)
                    .or_else(|_| fs::copy(target.join(&rel), &dst).map(|_| ()))
                    .map_err(|e| io_err(&dst, "cannot stage existing file", e))?;
            }
        }

        Ok(sink)
    }

    /// Stages one batch of valid canonical rows (step 2).
    ///
    /// # Errors
    /// [`Error::Target`] when the writer failed (disk full, say); its message is returned.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.writer.write(batch).await
    }

    /// Finishes writing: every staged file is complete and durable, nothing is published yet.
    /// Call before evaluating dataset checks, then [`commit`](Self::commit) or
    /// [`abort`](Self::abort).
    ///
    /// # Errors
    /// [`Error::Target`] when writing or syncing failed.
    pub async fn finish(&mut self) -> Result<SinkMetrics> {
        let rows = self.writer.finish().await?;
        if !self.staging.is_dir() {
            return Err(Error::target(
                &self.target,
                format!(
                    "staging folder {} disappeared during the run",
                    self.staging.display()
                ),
            ));
        }
        let mut new_files = 0;
        if self.new_dir.is_dir() {
            for rel in files_under(&self.new_dir)
                .map_err(|e| io_err(&self.new_dir, "cannot list output", e))?
            {
                let dst = self.staging.join(&rel);
                if let Some(p) = dst.parent() {
                    fs::create_dir_all(p).map_err(|e| io_err(p, "cannot create staging", e))?;
                }
                fs::rename(self.new_dir.join(&rel), &dst)
                    .map_err(|e| io_err(&dst, "cannot stage file", e))?;
                new_files += 1;
            }
            let _ = fs::remove_dir_all(&self.new_dir);
        }
        let staged = files_under(&self.staging)
            .map_err(|e| io_err(&self.staging, "cannot list staging", e))?;
        let mut total = staged.len() as u64;
        if !staged
            .iter()
            .any(|f| f.extension().is_some_and(|x| x == "parquet"))
        {
            // A run that loads no rows still publishes a readable table: one Parquet file
            // with the model's schema and no rows (readers fail on a folder without files).
            write_empty(&self.staging.join(EMPTY_FILE), &self.schema)?;
            new_files += 1;
            total += 1;
        }
        sync_tree(&self.staging).map_err(|e| io_err(&self.staging, "cannot sync staging", e))?;
        Ok(SinkMetrics {
            rows_written: rows,
            files_written: new_files,
            files_total: total,
        })
    }

    /// Publishes the staged version atomically (step 3), with `record` inside it (see
    /// [`crate::commit`]). Call after [`finish`](Self::finish).
    ///
    /// # Errors
    /// [`Error::Target`] when the record cannot be written or the exchange fails; the previous
    /// version is then still published.
    pub fn commit(mut self, record: &crate::commit::CommitRecord) -> Result<()> {
        crate::commit::write_record(&self.staging, record)?;
        crate::commit::crash_point("before_publish");
        let parent = self
            .target
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        if self.target.exists() {
            match exchange(&self.staging, &self.target) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                    // Fallback: two renames; between them the target is briefly absent (never
                    // partial). A crash in between leaves the old version at `<staging>.old`,
                    // which the next run's `begin` restores.
                    let old = PathBuf::from(format!("{}.old", self.staging.display()));
                    fs::rename(&self.target, &old)
                        .map_err(|e| io_err(&self.target, "cannot move old version aside", e))?;
                    if let Err(e) = fs::rename(&self.staging, &self.target) {
                        // Put the old version back before reporting.
                        let _ = fs::rename(&old, &self.target);
                        return Err(io_err(&self.target, "cannot publish", e));
                    }
                    self.committed = true;
                    let _ = fs::remove_dir_all(&old);
                    self.synced(&parent);
                    crate::commit::crash_point("after_publish");
                    return Ok(());
                }
                Err(e) => return Err(io_err(&self.target, "cannot publish (rename exchange)", e)),
            }
        } else {
            fs::rename(&self.staging, &self.target)
                .map_err(|e| io_err(&self.target, "cannot publish", e))?;
        }
        // Published: from here on nothing may report failure, or a retry would load twice.
        self.committed = true;
        self.synced(&parent);
        crate::commit::crash_point("after_publish");
        // The old version now sits under the staging name.
        let _ = fs::remove_dir_all(&self.staging);
        self.lock.take();
        Ok(())
    }

    /// Flushes the rename to disk; a failure is logged, not returned (the new version is
    /// already visible, and may only be lost to a power cut, not to a process crash).
    fn synced(&self, parent: &Path) {
        if let Err(e) = sync_dir(parent) {
            tracing::warn!(folder = %parent.display(), error = %e, "published, but syncing the folder failed");
        }
    }

    /// Discards everything staged (step 4). The published version is untouched.
    pub async fn abort(mut self) {
        self.writer.abort().await;
        self.cleanup();
    }

    fn cleanup(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
        let _ = fs::remove_dir_all(&self.new_dir);
        self.lock.take();
    }
}

impl crate::sink::Sink for ParquetSink {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<()>> {
        Box::pin(ParquetSink::write(self, batch))
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<SinkMetrics>> {
        Box::pin(ParquetSink::finish(self))
    }

    fn commit<'a>(
        self: Box<Self>,
        record: &'a crate::commit::CommitRecord,
    ) -> BoxFuture<'a, Result<Option<crate::report::LoadStats>>> {
        Box::pin(async move { ParquetSink::commit(*self, record).map(|()| None) })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(ParquetSink::abort(*self))
    }
}

impl Drop for ParquetSink {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// The file a run that loads no rows publishes, so the target is a readable, empty table.
pub const EMPTY_FILE: &str = "empty.parquet";

/// Writes a Parquet file with `schema` and no rows (no row group) at `path`.
pub(crate) fn write_empty(path: &Path, schema: &SchemaRef) -> Result<()> {
    let failed = |e: datafusion::parquet::errors::ParquetError| {
        Error::target(path, format!("cannot write an empty Parquet file: {e}"))
    };
    let file = fs::File::create(path).map_err(|e| io_err(path, "cannot create", e))?;
    let writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)
        .map_err(failed)?;
    writer.close().map_err(failed)?;
    Ok(())
}

/// Removes staging left by crashed runs of `target`, restoring an old version that a crashed
/// fallback commit moved aside. Called with the target's lock held.
fn remove_leftovers(target: &Path) -> Result<()> {
    let Some(parent) = target.parent() else {
        return Ok(());
    };
    let Some(name) = target.file_name().map(|n| n.to_string_lossy().to_string()) else {
        return Ok(());
    };
    let Ok(entries) = fs::read_dir(parent) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let file_name = e.file_name().to_string_lossy().to_string();
        let ours = file_name.starts_with(&format!(".{name}.staging-"))
            || file_name.starts_with(&format!(".{name}.new-"));
        if !ours {
            continue;
        }
        if file_name.ends_with(".old") && !target.exists() {
            fs::rename(e.path(), target)
                .map_err(|err| io_err(target, "cannot restore the previous version", err))?;
            continue;
        }
        let _ = fs::remove_dir_all(e.path());
    }
    Ok(())
}
