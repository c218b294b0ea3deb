//! The quarantine: rejected rows with every reason, append-only, one Parquet file per run.
//!
//! Layout: `<quarantine folder>/<run_id>.parquet`, written to a hidden staging name and
//! published by rename, so a reader never sees a partial file. Schema:
//!
//! | column          | type                                   | meaning |
//! |-----------------|----------------------------------------|---------|
//! | `run_id`        | string                                 | the run that rejected the row |
//! | `job`           | string                                 | job name |
//! | `quarantined_at`| timestamp (µs, UTC)                    | when the run started |
//! | `source_file`   | string                                 | file of the driving source row |
//! | `source_line`   | int64                                  | line (CSV: header is line 1; NDJSON) or row index (Parquet) |
//! | `source_values` | string (JSON object)                   | the driving row's values as read (CSV: raw text) |
//! | `failed_rules`  | list<struct<rule: string, reason: string>> | every rule the row failed |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int64Array, ListBuilder, StringArray, StringBuilder, StructBuilder,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};

fn rule_fields() -> Fields {
    Fields::from(vec![
        Field::new("rule", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
    ])
}

/// Arrow schema of quarantine files.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("job", DataType::Utf8, false),
        Field::new(
            "quarantined_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("source_file", DataType::Utf8, true),
        Field::new("source_line", DataType::Int64, true),
        Field::new("source_values", DataType::Utf8, false),
        Field::new(
            "failed_rules",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(rule_fields()),
                true,
            ))),
            false,
        ),
    ]))
}

/// One rejected row, ready to append.
#[derive(Debug, Clone)]
pub struct RejectedRow {
    /// Source file.
    pub source_file: Option<String>,
    /// Source line.
    pub source_line: Option<i64>,
    /// JSON object of source values.
    pub source_values: String,
    /// (rule, reason) for every failed rule.
    pub failed: Vec<(String, String)>,
}

/// Builds a quarantine batch.
///
/// # Errors
/// Only on an Arrow invariant violation (a bug).
pub fn batch(
    run_id: &str,
    job: &str,
    started_micros: i64,
    rows: &[RejectedRow],
) -> Result<RecordBatch> {
    let n = rows.len();
    let mut rules = ListBuilder::new(StructBuilder::from_fields(rule_fields(), n));
    for r in rows {
        let values = rules.values();
        for (rule, reason) in &r.failed {
            values
                .field_builder::<StringBuilder>(0)
                .ok_or_else(|| Error::Internal("quarantine rule builder".into()))?
                .append_value(rule);
            values
                .field_builder::<StringBuilder>(1)
                .ok_or_else(|| Error::Internal("quarantine reason builder".into()))?
                .append_value(reason);
            values.append(true);
        }
        rules.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![run_id; n])),
        Arc::new(StringArray::from(vec![job; n])),
        Arc::new(TimestampMicrosecondArray::from(vec![started_micros; n]).with_timezone("UTC")),
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| r.source_file.as_deref())
                .collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.source_line).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| r.source_values.as_str())
                .collect::<Vec<_>>(),
        )),
        Arc::new(rules.finish()),
    ];
    RecordBatch::try_new(schema(), columns)
        .map_err(|e| Error::Internal(format!("quarantine batch: {e}")))
}

/// Writes one run's quarantine file; see the module docs.
pub struct QuarantineWriter {
    dir: PathBuf,
    staging: PathBuf,
    final_path: PathBuf,
    writer: Option<AsyncArrowWriter<tokio::fs::File>>,
    rows: u64,
}

impl QuarantineWriter {
    /// Prepares `<dir>/<run_id>.parquet`. Nothing is created until the first row.
    pub fn new(dir: &Path, run_id: &str) -> QuarantineWriter {
        QuarantineWriter {
            dir: dir.to_path_buf(),
            staging: dir.join(format!(".{run_id}.parquet.staging")),
            final_path: dir.join(format!("{run_id}.parquet")),
            writer: None,
            rows: 0,
        }
    }

    /// Removes staging files that crashed runs left (they are never published). Call only
    /// while holding the job's target lock, so no live run's staging file is touched; a
    /// quarantine folder belongs to one job.
    pub fn sweep_crashed(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with('.') && name.ends_with(".parquet.staging") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Final file path (exists only after [`commit`](Self::commit) with rows).
    pub fn path(&self) -> &Path {
        &self.final_path
    }

    /// Rows appended so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends a batch built by [`batch`].
    ///
    /// # Errors
    /// [`Error::Target`] on I/O failure.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.writer.is_none() {
            tokio::fs::create_dir_all(&self.dir).await.map_err(|e| {
                Error::target(&self.dir, format!("cannot create quarantine folder: {e}"))
            })?;
            let file = tokio::fs::File::create(&self.staging).await.map_err(|e| {
                Error::target(&self.staging, format!("cannot create quarantine file: {e}"))
            })?;
            let level = ZstdLevel::try_new(3).map_err(|e| Error::Internal(e.to_string()))?;
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(level))
                // Bounds memory when a broken mapping rejects every row.
                .set_max_row_group_row_count(Some(64 * 1024))
                .build();
            self.writer = Some(
                AsyncArrowWriter::try_new(file, schema(), Some(props))
                    .map_err(|e| Error::target(&self.staging, e.to_string()))?,
            );
        }
        if let Some(w) = self.writer.as_mut() {
            w.write(batch)
                .await
                .map_err(|e| Error::target(&self.staging, format!("writing quarantine: {e}")))?;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes and publishes the file (no file when no row was rejected).
    ///
    /// # Errors
    /// [`Error::Target`] on I/O failure; the staging file is removed.
    pub async fn commit(mut self) -> Result<Option<PathBuf>> {
        let Some(w) = self.writer.take() else {
            return Ok(None);
        };
        let result = async {
            w.close()
                .await
                .map_err(|e| Error::target(&self.staging, format!("closing quarantine: {e}")))?;
            std::fs::File::open(&self.staging)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::target(&self.staging, format!("syncing quarantine: {e}")))?;
            std::fs::rename(&self.staging, &self.final_path).map_err(|e| {
                Error::target(&self.final_path, format!("publishing quarantine: {e}"))
            })?;
            crate::fsutil::sync_dir(&self.dir)
                .map_err(|e| Error::target(&self.dir, e.to_string()))?;
            Ok(Some(self.final_path.clone()))
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&self.staging);
        }
        result
    }

    /// Drops what was written.
    pub fn abort(mut self) {
        self.writer.take();
        let _ = std::fs::remove_file(&self.staging);
    }
}
