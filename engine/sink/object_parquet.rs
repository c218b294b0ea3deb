//! Parquet targets on object stores (`path = "s3://lake/tables/items"`): `append` only. An
//! object store has no rename, so a folder cannot be swapped for a new version as locally
//! ([`crate::sink::parquet`]); `overwrite` is refused at compile time with a hint to use Delta.
//!
//! ```text
//! s3://lake/tables/items/
//!   part-<run_id>-0.parquet            ← a run's files, run-unique names, each uploaded whole
//!   origin=JFK/part-<run_id>-1.parquet
//!   _sluice_commit.json                ← the commit record of the newest committed run
//!   _sluice_pending/<run_id>           ← marker: run <run_id> of job <its text> is uploading
//!                                          (or was killed)
//! ```
//!
//! A run stages its files in the state folder (as a Delta target does). At the commit it puts
//! the pending marker, uploads each staged file (an object appears only when its upload
//! completes, so a reader never sees a partial file), writes the commit record, then removes
//! the marker. Crash points:
//!
//! | killed                                  | readers see                          | the next run of the job                                  |
//! |-----------------------------------------|--------------------------------------|----------------------------------------------------------|
//! | before the marker (`before_publish`)    | the previous version                 | nothing to clean                                         |
//! | while uploading                         | the previous files plus some of the run's, each whole | deletes the killed run's files (its marker names it), then loads |
//! | after the record (`after_publish`)      | the new version                      | records the run from `_sluice_commit.json`, removes the marker |
//!
//! So every row is loaded once: a killed run's files are deleted before the next run uploads,
//! because its marker says they are not committed. What is not atomic is the moment readers
//! see a multi-file run: its files appear one by one during the upload (a Delta target's
//! commit is atomic; use `format = "delta"` where that matters).

use crate::config::spec::ParquetFiles;
use crate::invalid::InvalidValue;
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

use crate::commit::{CommitRecord, COMMIT_FILE};
use crate::error::{Error, Result};
use crate::fsutil::{files_under, Lock};
use crate::sink::parquet::SinkMetrics;
use crate::sink::staged::StagedWriter;

/// The folder under the target's prefix holding the markers of runs uploading.
const PENDING: &str = "_sluice_pending";

/// A Parquet folder on an object store, loaded by `append`.
#[derive(Debug, Clone)]
pub struct ObjectParquetTarget {
    /// The folder's URL, ending in `/`.
    pub url: Url,
    /// The folder as shown in messages (its URL).
    pub shown: String,
    /// The store holding it, rooted at the bucket.
    pub store: Arc<dyn ObjectStore>,
    /// Partition columns (Hive-style folders).
    pub partition_by: Vec<String>,
    /// How the files are laid out (the defaults unless the planner sets the target's).
    pub files: ParquetFiles,
    /// The job appending (named in its runs' pending markers).
    pub job: String,
}

impl ObjectParquetTarget {
    /// The target of `job` at `resolved` (an object-store URL), its store from `ctx`'s
    /// registry.
    ///
    /// # Errors
    /// The reason, for a config error at `target.path`: a URL that does not parse, or a store
    /// that cannot be set up.
    pub fn of(
        job: &str,
        resolved: &str,
        partition_by: Vec<String>,
        ctx: &SessionContext,
    ) -> std::result::Result<ObjectParquetTarget, InvalidValue> {
        let (url, store) = crate::store::folder_store(resolved, ctx)?;
        Ok(ObjectParquetTarget {
            shown: url.to_string(),
            url,
            store,
            partition_by,
            files: ParquetFiles::default(),
            job: job.to_string(),
        })
    }

    /// The object at `rel` under the folder.
    fn object(&self, rel: &str) -> ObjectPath {
        let prefix = crate::store::object_path(&self.url);
        let prefix = prefix.as_ref().trim_end_matches('/');
        if prefix.is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{prefix}/{rel}"))
        }
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::target(&self.shown, format!("{what}: {e}"))
    }

    /// The commit record of the newest committed run, if any.
    ///
    /// # Errors
    /// [`Error::Target`] when the store cannot be read, [`Error::State`] when the record is
    /// not one Sluice wrote.
    pub async fn last_record(&self) -> Result<Option<CommitRecord>> {
        let bytes = match self.store.get(&self.object(COMMIT_FILE)).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| self.error("cannot read the commit record", e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error("cannot read the commit record", e)),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::state(
                format!("{}{COMMIT_FILE}", self.shown),
                format!("not a Sluice commit record: {e}"),
            )
        })
    }

    /// Deletes what runs of the job killed while uploading left: for each pending marker of
    /// the job (its text is the job's name), the files of its run unless `committed(run_id)`
    /// says the run committed, then the marker. Markers of other jobs appending to the same
    /// folder are left to them. Call with the job's lock held, after its state store is
    /// reconciled with [`last_record`](Self::last_record).
    ///
    /// # Errors
    /// [`Error::Target`] when the store cannot be listed, a marker read or an object deleted;
    /// `committed`'s error (an unreadable state store: nothing is deleted on a guess).
    pub async fn remove_uncommitted(
        &self,
        committed: impl Fn(&str) -> Result<bool>,
    ) -> Result<u64> {
        let mut ours = Vec::new();
        for marker in self.list(PENDING).await? {
            let owner = match self.store.get(&marker).await {
                Ok(r) => r
                    .bytes()
                    .await
                    .map_err(|e| self.error("cannot read a marker", e))?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(self.error("cannot read a marker", e)),
            };
            if owner.as_ref() == self.job.as_bytes() {
                if let Some(run_id) = marker.filename().map(str::to_string) {
                    ours.push((marker, run_id));
                }
            }
        }
        if ours.is_empty() {
            return Ok(0);
        }
        let files = self.list("").await?;
        let mut removed = 0;
        for (marker, run_id) in ours {
            if !committed(&run_id)? {
                let part = format!("part-{run_id}-");
                for file in files
                    .iter()
                    .filter(|f| f.filename().is_some_and(|n| n.starts_with(&part)))
                {
                    self.delete(file).await?;
                    removed += 1;
                }
            }
            self.delete(&marker).await?;
        }
        Ok(removed)
    }

    /// The objects under `rel` of the folder (all of them for `""`).
    async fn list(&self, rel: &str) -> Result<Vec<ObjectPath>> {
        let prefix = if rel.is_empty() {
            crate::store::object_path(&self.url)
        } else {
            self.object(rel)
        };
        self.store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| self.error("cannot list the folder", e))
    }

    async fn delete(&self, path: &ObjectPath) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(&format!("cannot delete {path}"), e)),
        }
    }

    async fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(&self.object(rel), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.error(&format!("cannot write {rel}"), e))
    }

    /// Uploads the local file `from` as `rel`, streaming it in parts (a large file is a
    /// multipart upload); the object appears only once complete.
    async fn upload(&self, from: &Path, rel: &str) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut file = tokio::fs::File::open(from)
            .await
            .map_err(|e| self.error(&format!("cannot open staged {}", from.display()), e))?;
        let mut out = object_store::buffered::BufWriter::new(self.store.clone(), self.object(rel));
        let copied = tokio::io::copy(&mut file, &mut out).await;
        match copied {
            Ok(_) => out
                .shutdown()
                .await
                .map_err(|e| self.error(&format!("cannot upload {rel}"), e)),
            Err(e) => {
                let _ = out.abort().await;
                Err(self.error(&format!("cannot upload {rel}"), e))
            }
        }
    }
}

/// One run's append to an [`ObjectParquetTarget`]. See the module docs.
pub struct ObjectParquetSink {
    target: ObjectParquetTarget,
    staging: PathBuf,
    writer: StagedWriter,
    schema: SchemaRef,
    run_id: String,
    _lock: Lock,
}

impl ObjectParquetSink {
    /// Takes the target's lock, deletes what killed runs left (see
    /// [`ObjectParquetTarget::remove_uncommitted`]) and starts staging in
    /// `<staging_root>/<lock stem>-<run_id>`.
    ///
    /// # Errors
    /// [`Error::Target`] when the lock is held or the store cannot be cleaned.
    pub async fn begin(
        ctx: &SessionContext,
        target: ObjectParquetTarget,
        lock_path: &Path,
        staging_root: &Path,
        run_id: &str,
        schema: SchemaRef,
        committed: impl Fn(&str) -> Result<bool>,
    ) -> Result<ObjectParquetSink> {
        let lock = crate::sink::parquet::target_lock(lock_path, &target.shown)?;
        let stem = crate::sink::staged::stem_of(lock_path);
        crate::sink::staged::remove_staging_of(staging_root, &stem);
        let removed = target.remove_uncommitted(committed).await?;
        if removed > 0 {
            crate::logging::stderr_line(&format!(
                "note: deleted {removed} file(s) of {} that a run killed while uploading had left (never committed)",
                target.shown
            ));
        }
        let staging = staging_root.join(format!("{stem}-{run_id}"));
        let parts = target.partition_by.clone();
        let writer = StagedWriter::start(ctx, &staging, schema.clone(), parts, &target.files)?;
        Ok(ObjectParquetSink {
            target,
            staging,
            writer,
            schema,
            run_id: run_id.to_string(),
            _lock: lock,
        })
    }

    /// Stages one batch.
    ///
    /// # Errors
    /// [`Error::Target`] when the staging writer failed.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.writer.write(batch).await
    }

    /// Completes the staged files; nothing is uploaded yet.
    ///
    /// # Errors
    /// [`Error::Target`] when writing failed.
    pub async fn finish(&mut self) -> Result<SinkMetrics> {
        let rows = self.writer.finish().await?;
        let files = self.staged_files()?.len() as u64;
        Ok(SinkMetrics {
            rows_written: rows,
            files_written: files,
            files_total: files,
        })
    }

    /// The staged Parquet files, relative to staging, sorted.
    fn staged_files(&self) -> Result<Vec<PathBuf>> {
        let mut files = match files_under(&self.staging) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::target(&self.staging, format!("cannot list: {e}"))),
        };
        files.retain(|f| f.extension().is_some_and(|x| x == "parquet"));
        files.sort();
        Ok(files)
    }

    /// Uploads the staged files under run-unique names and writes `record`: the commit. A
    /// run with no rows uploads one empty file when the folder has none yet, so readers see
    /// an empty table.
    ///
    /// # Errors
    /// [`Error::Target`] when an upload fails: the marker stays, and the next run deletes
    /// the files uploaded so far.
    pub async fn commit(self, record: &CommitRecord) -> Result<()> {
        let t = &self.target;
        let mut files = self.staged_files()?;
        let prefix = crate::store::object_path(&t.url);
        if files.is_empty() && !t.list("").await?.iter().any(|p| is_data_file(&prefix, p)) {
            let empty = PathBuf::from(crate::sink::parquet::EMPTY_FILE);
            crate::sink::parquet::write_empty(&self.staging.join(&empty), &self.schema)?;
            files.push(empty);
        }
        crate::commit::crash_point("before_publish");
        t.put(
            &format!("{PENDING}/{}", self.run_id),
            t.job.as_bytes().to_vec(),
        )
        .await?;
        for (n, rel) in files.iter().enumerate() {
            let folder = rel
                .parent()
                .map(|p| p.to_string_lossy().to_string())
                .filter(|p| !p.is_empty());
            let name = format!("part-{}-{n}.parquet", self.run_id);
            let to = match folder {
                Some(f) => format!("{f}/{name}"),
                None => name,
            };
            t.upload(&self.staging.join(rel), &to).await?;
            if n == 0 {
                crate::commit::crash_point("mid_publish");
            }
        }
        let json = serde_json::to_vec_pretty(record).map_err(|e| Error::Internal(e.to_string()))?;
        t.put(COMMIT_FILE, json).await?;
        crate::commit::crash_point("after_publish");
        // Committed: a marker left by a failure here is removed by the next run (the run is
        // committed by then, so its files stay).
        let _ = t
            .delete(&t.object(&format!("{PENDING}/{}", self.run_id)))
            .await;
        let _ = std::fs::remove_dir_all(&self.staging);
        Ok(())
    }

    /// Discards the staged files; the folder is untouched.
    pub async fn abort(mut self) {
        self.writer.abort().await;
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

impl crate::sink::Sink for ObjectParquetSink {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<()>> {
        Box::pin(ObjectParquetSink::write(self, batch))
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<SinkMetrics>> {
        Box::pin(ObjectParquetSink::finish(self))
    }

    fn commit<'a>(
        self: Box<Self>,
        record: &'a CommitRecord,
    ) -> BoxFuture<'a, Result<Option<crate::report::LoadStats>>> {
        Box::pin(async move {
            ObjectParquetSink::commit(*self, record)
                .await
                .map(|()| None)
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(ObjectParquetSink::abort(*self))
    }
}

impl Drop for ObjectParquetSink {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

/// A Parquet file of the table under `prefix` (not the record, a marker or another object
/// in a hidden `_`/`.` folder below the table's).
fn is_data_file(prefix: &ObjectPath, p: &ObjectPath) -> bool {
    let Some(below) = p.prefix_match(prefix) else {
        return false;
    };
    let parts: Vec<String> = below.map(|s| s.as_ref().to_string()).collect();
    parts.last().is_some_and(|n| n.ends_with(".parquet"))
        && !parts
            .iter()
            .any(|s| s.starts_with('_') || s.starts_with('.'))
}
