//! The Parquet writer that stages a run's rows in a local folder: batches go through a bounded
//! channel into DataFusion's Parquet writer (parallel row-group encoding), so memory stays at a
//! few batches and row groups whatever the run's size.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::config::{ConfigNonZeroUsize, TableParquetOptions};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::spec::ParquetFiles;
use crate::error::{Error, Result};

/// A running writer of Parquet files into one folder.
pub struct StagedWriter {
    /// The folder written (for messages).
    dir: PathBuf,
    sender: Option<mpsc::Sender<RecordBatch>>,
    writer: Option<JoinHandle<std::result::Result<u64, DataFusionError>>>,
    rows: u64,
}

impl StagedWriter {
    /// Starts writing files with `schema` into `dir` (created by the writer), Hive-partitioned
    /// by `partition_by` (`origin=JFK/…`) when given, laid out as `files` says (codec, rows
    /// per row group, rows per file).
    ///
    /// # Errors
    /// [`Error::Internal`] when the streaming table cannot be planned (a bug).
    pub fn start(
        ctx: &SessionContext,
        dir: &Path,
        schema: SchemaRef,
        partition_by: Vec<String>,
        files: &ParquetFiles,
    ) -> Result<StagedWriter> {
        let (tx, table) = crate::producer::channel_table(schema)?;
        // The rows per file are a session setting of DataFusion's writer: this write gets a
        // session of its own (sharing the run's runtime, so its memory pool and spill folder).
        // One file at a time, not DataFusion's 4 in parallel: each open file buffers a row
        // group, and on the benchmark's convert job one file took 0.85x the wall time and
        // 0.62x the peak memory of four (docs/performance.md, "Parquet file settings"); row
        // groups are still encoded column by column in parallel.
        let mut state = ctx.state();
        state
            .config_mut()
            .options_mut()
            .execution
            .soft_max_rows_per_output_file =
            ConfigNonZeroUsize::try_new(files.max_rows_per_file)
                .map_err(|e| Error::Internal(format!("rows per file: {e}")))?;
        state
            .config_mut()
            .options_mut()
            .execution
            .minimum_parallel_output_files = ConfigNonZeroUsize::try_new(1)
            .map_err(|e| Error::Internal(format!("files in parallel: {e}")))?;
        let df = SessionContext::new_with_state(state)
            .read_table(Arc::new(table))
            .map_err(|e| Error::Internal(format!("streaming table: {e}")))?;
        let mut options = TableParquetOptions::default();
        options.global.compression = Some(files.compression.clone());
        options.global.max_row_group_size = files.row_group_rows;
        let out = format!("{}/", dir.display());
        let write_options = DataFrameWriteOptions::new().with_partition_by(partition_by);
        let writer = tokio::spawn(async move {
            let result = df.write_parquet(&out, write_options, Some(options)).await?;
            let rows = result
                .first()
                .and_then(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                        .map(|a| a.value(0))
                })
                .unwrap_or(0);
            Ok(rows)
        });
        Ok(StagedWriter {
            dir: dir.to_path_buf(),
            sender: Some(tx),
            writer: Some(writer),
            rows: 0,
        })
    }

    /// Sends one batch to the writer.
    ///
    /// # Errors
    /// [`Error::Target`] with the writer's error when it stopped (disk full, say).
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let n = batch.num_rows() as u64;
        let sent = match &self.sender {
            Some(s) => s.send(batch).await.is_ok(),
            None => false,
        };
        if !sent {
            // The writer stopped early: surface its error.
            return Err(self.finish().await.err().unwrap_or_else(|| {
                Error::target(&self.dir, "the Parquet writer stopped unexpectedly")
            }));
        }
        self.rows += n;
        Ok(())
    }

    /// Closes the input and waits for every file to be complete; returns the rows written,
    /// checked against the rows sent.
    ///
    /// # Errors
    /// [`Error::Target`] when writing failed; [`Error::Internal`] when the counts disagree.
    pub async fn finish(&mut self) -> Result<u64> {
        self.sender.take();
        let written = match self.writer.take() {
            Some(h) => match h.await {
                Ok(Ok(rows)) => rows,
                Ok(Err(e)) => {
                    let why = crate::error::datafusion_message(&e);
                    return Err(Error::target(
                        &self.dir,
                        format!("writing Parquet failed: {why}"),
                    ));
                }
                Err(e) => return Err(Error::Internal(format!("Parquet writer task: {e}"))),
            },
            None => return Ok(self.rows),
        };
        if written != self.rows {
            return Err(Error::Internal(format!(
                "Parquet writer wrote {written} rows, {} were sent",
                self.rows
            )));
        }
        Ok(written)
    }

    /// Stops the writer without waiting for it.
    pub async fn abort(&mut self) {
        self.sender.take();
        if let Some(h) = self.writer.take() {
            h.abort();
            let _ = h.await;
        }
    }
}

impl Drop for StagedWriter {
    fn drop(&mut self) {
        if let Some(h) = self.writer.take() {
            h.abort();
        }
    }
}

/// The name a target's staging folders start with: its lock file's stem (unique per target,
/// and free of the target's secrets).
pub fn stem_of(lock_path: &Path) -> String {
    lock_path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// Removes staging folders that crashed runs of a target left (`<root>/<stem>-<run_id>`).
/// Call with the target's lock held.
pub fn remove_staging_of(root: &Path, stem: &str) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(&format!("{stem}-")) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
