//! The quarantine: rejected rows with every reason, append-only, kept per run.
//!
//! Two forms (`[quarantine] format`), with one schema:
//!
//! - `parquet` (the default): a local folder, `<quarantine folder>/<run_id>.parquet`, written
//!   to a hidden staging name and published by rename, so a reader never sees a partial file.
//! - `delta`: a Delta table (local or on an object store) partitioned by `run_id`; each run
//!   with rejected rows appends one commit (see [`delta`]), so a reader sees all of a run's
//!   rows or none.
//!
//! Schema:
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

pub mod delta;

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
use crate::sink::delta::DeltaTarget;

/// Where a job's quarantine is kept: `[quarantine] path` and `format`, resolved.
#[derive(Debug, Clone)]
pub enum QuarantineLocation {
    /// A local folder holding `<run_id>.parquet` per run.
    Folder(PathBuf),
    /// A Delta table partitioned by `run_id`, local or on an object store.
    Delta(Box<DeltaTarget>),
}

impl QuarantineLocation {
    /// The location as shown in messages: a folder relative to the project, or a URL.
    pub fn shown(&self, project: &crate::config::Project) -> String {
        match self {
            QuarantineLocation::Folder(dir) => project.shown(dir),
            QuarantineLocation::Delta(t) => t.shown.clone(),
        }
    }

    /// The local folder the quarantine is written into, when it is local (the path guard
    /// keeps sources out of it).
    pub fn local_dir(&self) -> Option<PathBuf> {
        match self {
            QuarantineLocation::Folder(dir) => Some(dir.clone()),
            QuarantineLocation::Delta(t) => t.local_dir(),
        }
    }

    /// The quarantined rows of run `run` (every run's with `None`) as a DataFrame of
    /// [`schema`]'s columns, read through `ctx`; `None` when there are none.
    ///
    /// # Errors
    /// [`Error::Target`] when the folder or table cannot be read.
    pub async fn read(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        run: Option<&str>,
    ) -> Result<Option<datafusion::prelude::DataFrame>> {
        use datafusion::prelude::ParquetReadOptions;
        let dir = match self {
            QuarantineLocation::Folder(dir) => dir,
            QuarantineLocation::Delta(t) => return delta::read(t, ctx, run).await,
        };
        let path = match run {
            Some(r) => dir.join(format!("{r}.parquet")),
            None if has_run_files(dir) => dir.join(""),
            None => return Ok(None),
        };
        if run.is_some() && !path.is_file() {
            return Ok(None);
        }
        ctx.read_parquet(
            path.to_string_lossy().to_string(),
            ParquetReadOptions::default(),
        )
        .await
        .map(Some)
        .map_err(|e| Error::target(&path, format!("cannot read the quarantine: {e}")))
    }

    /// Deletes the quarantined rows of the runs `old` selects (by run id); with `dry_run` only
    /// counts them. Returns how many runs' rows (would) go. A folder's file that cannot be
    /// deleted is skipped and left for the next prune.
    ///
    /// # Errors
    /// [`Error::Target`] when a Delta table cannot be read or its delete commit fails.
    pub async fn prune(&self, old: &dyn Fn(&str) -> bool, dry_run: bool) -> Result<usize> {
        match self {
            QuarantineLocation::Folder(dir) => Ok(run_files(dir)
                .filter(|(run_id, _)| old(run_id))
                .filter(|(_, path)| dry_run || std::fs::remove_file(path).is_ok())
                .count()),
            QuarantineLocation::Delta(t) => delta::prune(t, old, dry_run).await,
        }
    }
}

/// The `<run_id>.parquet` files of `dir` with their run ids (staging files are hidden and
/// end in `.staging`, so they are not among them).
fn run_files(dir: &Path) -> impl Iterator<Item = (String, PathBuf)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("parquet"))
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?.to_string();
            (!stem.starts_with('.')).then_some((stem, p))
        })
}

/// Whether `dir` holds a run's `<run_id>.parquet`.
pub fn has_run_files(dir: &Path) -> bool {
    run_files(dir).next().is_some()
}

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

/// Writes one run's quarantine (see the module docs): rows go to a local staging file, which
/// [`commit`](Self::commit) publishes by rename (folder) or appends in one commit (Delta).
pub struct QuarantineWriter {
    location: QuarantineLocation,
    staging_dir: PathBuf,
    staging: PathBuf,
    run_id: String,
    job: String,
    writer: Option<AsyncArrowWriter<tokio::fs::File>>,
    rows: u64,
}

impl QuarantineWriter {
    /// Prepares run `run_id`'s quarantine of `job` at `location`. A folder stages beside its
    /// files (so the publish is a rename); a Delta table stages under
    /// `<staging_root>/_quarantine-<job>/`. Nothing is created until the first row.
    pub fn new(
        location: &QuarantineLocation,
        staging_root: &Path,
        job: &str,
        run_id: &str,
    ) -> QuarantineWriter {
        let staging_dir = match location {
            QuarantineLocation::Folder(dir) => dir.clone(),
            QuarantineLocation::Delta(_) => staging_root.join(format!("_quarantine-{job}")),
        };
        QuarantineWriter {
            location: location.clone(),
            staging: staging_dir.join(format!(".{run_id}.parquet.staging")),
            staging_dir,
            run_id: run_id.to_string(),
            job: job.to_string(),
            writer: None,
            rows: 0,
        }
    }

    /// Removes staging files that crashed runs left (they are never published). Call only
    /// while holding the job's target lock, so no live run's staging file is touched; a
    /// quarantine belongs to one job.
    pub fn sweep_crashed(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.staging_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with('.') && name.ends_with(".parquet.staging") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Where this run's rows are published, as shown: a folder's `<run_id>.parquet` file,
    /// or the Delta table.
    pub fn shown(&self, project: &crate::config::Project) -> String {
        match &self.location {
            QuarantineLocation::Folder(dir) => {
                project.shown(&dir.join(format!("{}.parquet", self.run_id)))
            }
            QuarantineLocation::Delta(t) => t.shown.clone(),
        }
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
            self.writer = Some(create(&self.staging_dir, &self.staging).await?);
        }
        if let Some(w) = self.writer.as_mut() {
            w.write(batch)
                .await
                .map_err(|e| Error::target(&self.staging, format!("writing quarantine: {e}")))?;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes and publishes the run's rows; returns whether there were any (no row rejected:
    /// nothing is written).
    ///
    /// # Errors
    /// [`Error::Target`] on I/O failure or a failed Delta commit; the staging file is removed
    /// and nothing is published.
    pub async fn commit(mut self) -> Result<bool> {
        let Some(w) = self.writer.take() else {
            return Ok(false);
        };
        let result = async {
            w.close()
                .await
                .map_err(|e| Error::target(&self.staging, format!("closing quarantine: {e}")))?;
            std::fs::File::open(&self.staging)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::target(&self.staging, format!("syncing quarantine: {e}")))?;
            match &self.location {
                QuarantineLocation::Folder(dir) => publish_file(&self.staging, dir, &self.run_id),
                QuarantineLocation::Delta(t) => {
                    delta::append(t, &self.staging, &self.job, &self.run_id).await
                }
            }
        }
        .await;
        let _ = std::fs::remove_file(&self.staging);
        result.map(|()| true)
    }

    /// Drops what was written.
    pub fn abort(mut self) {
        self.writer.take();
        let _ = std::fs::remove_file(&self.staging);
    }
}

/// Creates the staging file `staging` (and its folder `dir`) with its Parquet writer.
async fn create(dir: &Path, staging: &Path) -> Result<AsyncArrowWriter<tokio::fs::File>> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| Error::target(dir, format!("cannot create quarantine folder: {e}")))?;
    let file = tokio::fs::File::create(staging)
        .await
        .map_err(|e| Error::target(staging, format!("cannot create quarantine file: {e}")))?;
    let level = ZstdLevel::try_new(3).map_err(|e| Error::Internal(e.to_string()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        // Bounds memory when a broken mapping rejects every row.
        .set_max_row_group_row_count(Some(64 * 1024))
        .build();
    AsyncArrowWriter::try_new(file, schema(), Some(props))
        .map_err(|e| Error::target(staging, e.to_string()))
}

/// Publishes the staged file as `<dir>/<run_id>.parquet`, durably.
fn publish_file(staging: &Path, dir: &Path, run_id: &str) -> Result<()> {
    let final_path = dir.join(format!("{run_id}.parquet"));
    std::fs::rename(staging, &final_path)
        .map_err(|e| Error::target(&final_path, format!("publishing quarantine: {e}")))?;
    crate::fsutil::sync_dir(dir).map_err(|e| Error::target(dir, e.to_string()))
}
