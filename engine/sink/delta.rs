//! Delta Lake target (`format = "delta"`): a table of Parquet files plus a transaction log
//! (`_delta_log/00000000000000000007.json`, …), local or on an object store, written with the
//! `deltalake` crate. The protocol: <https://github.com/delta-io/delta/blob/master/PROTOCOL.md>.
//!
//! ```text
//! run's valid rows ──▶ local staging (<state>/staging/<target>-<run_id>/, zstd Parquet)
//!                                  │  after the dataset checks passed
//!                                  ▼
//!             one deltalake operation reading the staged files:
//!               append / overwrite [replace_where]  → WriteBuilder
//!               merge by the model's primary key    → MergeBuilder
//!                                  │
//!                                  ▼
//!             data files uploaded, then ONE commit: _delta_log/<version>.json written
//!             put-if-absent (S3: If-None-Match), with this run's commit record in
//!             commitInfo["sluice.commit"]
//! ```
//!
//! Crash points: before the commit file is written, the table is at its previous version (the
//! data files of an unfinished commit are not in the log, so no reader sees them; `VACUUM`
//! removes them); after it, the run is committed and the next run's recovery finds its record
//! in the log. Two writers racing for one version: the loser's commit is refused by the store,
//! deltalake checks the winner's commit for conflicts and retries, or fails with a conflict
//! (then nothing of the losing run is committed).

use crate::invalid::InvalidValue;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Column;
use datafusion::logical_expr::Expr;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use deltalake::kernel::transaction::{CommitProperties, TransactionError};
use deltalake::logstore::{default_logstore, logstore_factories, LogStore, LogStoreFactory};
use deltalake::logstore::{ObjectStoreRef, StorageConfig};
use deltalake::operations::write::{SchemaMode, WriteBuilder};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use object_store::ObjectStore;
use url::Url;

use crate::commit::CommitRecord;
use crate::config::interpolate::Redactor;
use crate::config::spec::{DeltaTargetSpec, LoadMode, OnSchemaChange, ParquetFiles};
use crate::config::{Job, Project};
use crate::error::{Error, Result};
use crate::fsutil::Lock;
use crate::sink::parquet::SinkMetrics;
use crate::sink::staged::StagedWriter;

/// The `commitInfo` key holding the run's [`CommitRecord`] (JSON).
pub const COMMIT_KEY: &str = "sluice.commit";

/// A Delta target resolved for one run.
#[derive(Debug, Clone)]
pub struct DeltaTarget {
    /// The table's root: `file:///abs/folder/` or `s3://bucket/prefix/`.
    pub url: Url,
    /// The table as shown in messages (relative folder or URL).
    pub shown: String,
    /// The store holding the table, rooted at the bucket (or `/` for local tables).
    pub store: Arc<dyn ObjectStore>,
    /// Load mode: append, overwrite or merge.
    pub mode: LoadMode,
    /// The model's primary key (merge).
    pub key: Vec<String>,
    /// Partition columns (Hive-style folders).
    pub partition_by: Vec<String>,
    /// Merge: delete the table's rows whose key this run did not read.
    pub delete_missing: bool,
    /// Overwrite: replace only the rows matching this SQL predicate.
    pub replace_where: Option<String>,
    /// Table properties set when the table is created.
    pub properties: BTreeMap<String, String>,
    /// `on_schema_change = "add_columns"`: new model fields are added to the table.
    pub add_columns: bool,
}

impl DeltaTarget {
    /// The Delta target `t` of `job`: the table's URL (`table` under the warehouse, a local
    /// `path`, or an object-store URL) with its store from `ctx`'s registry, and the load
    /// settings. `key` is the model's primary key (for merge).
    ///
    /// # Errors
    /// [`Error::Config`] at `target.path` when it cannot be resolved or its store set up.
    pub fn of(
        project: &Project,
        job: &Job,
        t: &DeltaTargetSpec,
        key: Vec<String>,
        ctx: &SessionContext,
        redactor: &Redactor,
    ) -> Result<DeltaTarget> {
        let path_error = |p: &serde_spanned::Spanned<String>, why: String| {
            Error::config(job.src.diagnostic(Some(p.span()), "target.path", why))
        };
        let (url, shown, store) = match (&t.table, &t.path) {
            (Some(name), _) => local_table(
                project,
                &project.path(project.settings.warehouse.join(name.get_ref())),
            )
            .map_err(|e| Error::target(name.get_ref(), e))?,
            (None, Some(p)) => {
                let resolved = redactor
                    .resolve_path(p.get_ref(), &project.root)
                    .map_err(|e| path_error(p, e.into()))?;
                locate(project, &resolved, ctx, redactor).map_err(|e| path_error(p, e.into()))?
            }
            (None, None) => return Err(Error::Internal("target without table or path".into())),
        };
        Ok(DeltaTarget {
            url,
            shown,
            store,
            mode: t.mode,
            key,
            partition_by: t.partition_by.iter().map(|p| p.get_ref().clone()).collect(),
            delete_missing: t.delete_missing,
            replace_where: t.replace_where.as_ref().map(|p| p.get_ref().clone()),
            properties: t.properties.clone(),
            add_columns: t.on_schema_change == OnSchemaChange::AddColumns,
        })
    }

    /// A table at `resolved` (a folder relative to the project, or an object-store URL, with
    /// `${...}` already resolved) that runs only append to, partitioned by `partition_by`:
    /// the quarantine's table.
    ///
    /// # Errors
    /// Why the URL or its store cannot be set up.
    pub fn append_only(
        project: &Project,
        resolved: &str,
        partition_by: Vec<String>,
        ctx: &SessionContext,
        redactor: &Redactor,
    ) -> std::result::Result<DeltaTarget, InvalidValue> {
        let (url, shown, store) = locate(project, resolved, ctx, redactor)?;
        Ok(DeltaTarget {
            url,
            shown,
            store,
            mode: LoadMode::Append,
            key: Vec::new(),
            partition_by,
            delete_missing: false,
            replace_where: None,
            properties: BTreeMap::new(),
            add_columns: false,
        })
    }

    /// The table handle (not loaded).
    pub fn handle(&self) -> Result<DeltaTable> {
        register_log_stores();
        DeltaTableBuilder::from_url(self.url.clone())
            .and_then(|b| {
                b.with_storage_backend(self.store.clone(), self.url.clone())
                    .build()
            })
            .map_err(|e| self.error(&e))
    }

    /// The table at its latest version, or `None` when there is no table there yet.
    ///
    /// # Errors
    /// [`Error::Target`] when the log cannot be read (permissions, network, damage).
    pub async fn open(&self) -> Result<Option<DeltaTable>> {
        if let Some(dir) = self.local_dir() {
            // The kernel refuses a folder that does not exist, rather than "no table yet".
            if !dir.join("_delta_log").is_dir() {
                return Ok(None);
            }
        }
        let mut table = self.handle()?;
        match table.load().await {
            Ok(()) => Ok(Some(table)),
            Err(DeltaTableError::NotATable(_)) => Ok(None),
            Err(e) => Err(self.error(&e)),
        }
    }

    /// The commit record of the newest commit of `job` among the table's last 20 commits.
    ///
    /// # Errors
    /// [`Error::Target`] when the log cannot be read.
    pub async fn last_record(&self, job: &str) -> Result<Option<CommitRecord>> {
        use futures::TryStreamExt;
        let Some(table) = self.open().await? else {
            return Ok(None);
        };
        let mut history = table.history(Some(20));
        while let Some(info) = history.try_next().await.map_err(|e| self.error(&e))? {
            let record = info
                .info
                .get(COMMIT_KEY)
                .and_then(|v| serde_json::from_value::<CommitRecord>(v.clone()).ok());
            if let Some(r) = record.filter(|r| r.job == job) {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// The table's folder, for a local table.
    pub fn local_dir(&self) -> Option<PathBuf> {
        (self.url.scheme() == "file")
            .then(|| self.url.to_file_path().ok())
            .flatten()
    }

    /// `e` as a target error naming the table, with a hint when another writer won a race.
    pub fn error(&self, e: &DeltaTableError) -> Error {
        let conflict = matches!(
            e,
            DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_)
                    | TransactionError::MaxCommitAttempts(_)
            }
        );
        let hint = if conflict {
            "; another writer changed the table while this run was committing, and this run committed nothing: run it again"
        } else {
            ""
        };
        Error::target(&self.shown, format!("Delta table: {e}{hint}"))
    }
}

/// The table at `resolved` (a folder relative to the project, or an object-store URL): its
/// root URL, as shown, and its store from `ctx`'s registry.
fn locate(
    project: &Project,
    resolved: &str,
    ctx: &SessionContext,
    redactor: &Redactor,
) -> std::result::Result<(Url, String, Arc<dyn ObjectStore>), InvalidValue> {
    if !crate::store::is_url(resolved) {
        return local_table(project, &project.path(resolved)).map_err(InvalidValue::from);
    }
    let (url, store) =
        crate::store::folder_store(resolved, ctx).map_err(|e| redactor.redact(&e.0))?;
    Ok((url.clone(), url.to_string(), store))
}

/// A local table's `file://` URL (the folder need not exist yet), as shown, and the local
/// store.
fn local_table(
    project: &Project,
    dir: &Path,
) -> std::result::Result<(Url, String, Arc<dyn ObjectStore>), String> {
    let url = Url::from_directory_path(dir)
        .map_err(|()| format!("{} is not an absolute folder", dir.display()))?;
    Ok((
        url,
        project.shown(dir),
        Arc::new(object_store::local::LocalFileSystem::new()),
    ))
}

/// Log stores that commit with put-if-absent (`PutMode::Create`; on S3 `If-None-Match: *`,
/// which AWS S3, MinIO, R2 and moto honour) for object-store tables; deltalake registers
/// only `file://` and `memory://` itself.
fn register_log_stores() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for scheme in ["s3://", "gs://", "az://"] {
            if let Ok(url) = Url::parse(scheme) {
                logstore_factories().insert(url, Arc::new(PutIfAbsent));
            }
        }
    });
}

struct PutIfAbsent;

impl LogStoreFactory for PutIfAbsent {
    fn with_options(
        &self,
        prefixed: ObjectStoreRef,
        root: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(prefixed, root, location, options))
    }
}

/// A Delta target being written by one run (the contract of [`crate::sink`]).
pub struct DeltaSink {
    target: DeltaTarget,
    staging: PathBuf,
    writer: StagedWriter,
    schema: SchemaRef,
    rows: u64,
    _lock: Lock,
}

impl DeltaSink {
    /// Takes the target's lock, removes what crashed runs left in staging, checks the table's
    /// columns against the model's (unless `add_columns`), and starts staging.
    ///
    /// # Errors
    /// [`Error::Target`] when another run holds the lock, the table cannot be read, or its
    /// columns differ from the model's.
    pub async fn begin(
        ctx: &SessionContext,
        target: DeltaTarget,
        lock_path: &Path,
        staging_root: &Path,
        run_id: &str,
        schema: SchemaRef,
    ) -> Result<DeltaSink> {
        let lock = crate::sink::parquet::target_lock(lock_path, &target.shown)?;
        let stem = crate::sink::staged::stem_of(lock_path);
        crate::sink::staged::remove_staging_of(staging_root, &stem);
        if let Some(table) = target.open().await? {
            check_columns(&target, &table, &schema)?;
        }
        let staging = staging_root.join(format!("{stem}-{run_id}"));
        // Staging only: delta-rs writes the rows into the table's files with its own settings.
        let writer = StagedWriter::start(
            ctx,
            &staging,
            schema.clone(),
            Vec::new(),
            &ParquetFiles::default(),
        )?;
        Ok(DeltaSink {
            target,
            staging,
            writer,
            schema,
            rows: 0,
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

    /// Completes the staged files; nothing is committed yet.
    ///
    /// # Errors
    /// [`Error::Target`] when writing failed.
    pub async fn finish(&mut self) -> Result<SinkMetrics> {
        self.rows = self.writer.finish().await?;
        Ok(SinkMetrics {
            rows_written: self.rows,
            files_written: 0,
            files_total: 0,
        })
    }

    /// Loads the staged rows into the table in one Delta commit carrying `record`.
    ///
    /// # Errors
    /// [`Error::Target`] when the operation or its commit fails (the table then stays at its
    /// previous version), with a hint on a conflict with another writer.
    pub async fn commit(mut self, record: &CommitRecord) -> Result<()> {
        let record_json = serde_json::to_value(record)
            .map_err(|e| Error::Internal(format!("commit record: {e}")))?;
        let props =
            CommitProperties::default().with_metadata([(COMMIT_KEY.to_string(), record_json)]);
        let session = deltalake::delta_datafusion::DeltaSessionContext::default().into_inner();
        let input = if self.rows == 0 {
            session.read_batch(RecordBatch::new_empty(self.schema.clone()))
        } else {
            session
                .read_parquet(
                    format!("{}/", self.staging.display()),
                    ParquetReadOptions::default(),
                )
                .await
        }
        .map_err(|e| Error::target(&self.target.shown, format!("reading the staged rows: {e}")))?;
        crate::commit::crash_point("before_publish");
        let result = write_table(&self.target, input, &session, props).await;
        let _ = std::fs::remove_dir_all(&self.staging);
        self.rows = 0;
        if result.is_ok() {
            crate::commit::crash_point("after_publish");
        }
        result
    }

    /// Discards the staged rows; the table is untouched.
    pub async fn abort(mut self) {
        self.writer.abort().await;
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

impl crate::sink::Sink for DeltaSink {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<()>> {
        Box::pin(DeltaSink::write(self, batch))
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<SinkMetrics>> {
        Box::pin(DeltaSink::finish(self))
    }

    fn commit<'a>(
        self: Box<Self>,
        record: &'a CommitRecord,
    ) -> BoxFuture<'a, Result<Option<crate::report::LoadStats>>> {
        Box::pin(async move { DeltaSink::commit(*self, record).await.map(|()| None) })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(DeltaSink::abort(*self))
    }
}

impl Drop for DeltaSink {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

/// Loads `input` into `t`'s table as its mode says (append, overwrite [replace_where],
/// merge), in one commit carrying `props`; creates the table (and a local table's folder)
/// when there is none yet.
///
/// # Errors
/// [`Error::Target`] when the operation or its commit fails; the table then stays at its
/// previous version.
pub async fn write_table(
    t: &DeltaTarget,
    input: datafusion::prelude::DataFrame,
    session: &SessionContext,
    props: CommitProperties,
) -> Result<()> {
    if let Some(dir) = t.local_dir() {
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::target(&t.shown, format!("cannot create the table's folder: {e}"))
        })?;
    }
    let handle = match t.open().await? {
        Some(table) if t.mode == LoadMode::Merge => {
            return merge(t, table, input, session, props).await
        }
        Some(table) => table,
        None => t.handle()?,
    };
    let save = if t.mode == LoadMode::Overwrite {
        SaveMode::Overwrite
    } else {
        SaveMode::Append
    };
    let snapshot = handle.snapshot().ok().map(|s| s.snapshot().clone());
    let mut b = WriteBuilder::new(handle.log_store(), snapshot)
        .with_input_plan(input.into_unoptimized_plan())
        .with_session_state(Arc::new(session.state()))
        .with_save_mode(save)
        .with_commit_properties(props)
        .with_configuration(
            t.properties
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone()))),
        );
    if !t.partition_by.is_empty() {
        b = b.with_partition_columns(t.partition_by.clone());
    }
    if let Some(p) = &t.replace_where {
        b = b.with_replace_where(p.clone());
    }
    if t.add_columns {
        b = b.with_schema_mode(SchemaMode::Merge);
    }
    b.await.map(|_| ()).map_err(|e| t.error(&e))
}

/// Upserts `input` by the key: matched rows updated, new keys inserted, and with
/// `delete_missing` the table's rows whose key is not in `input` deleted.
async fn merge(
    t: &DeltaTarget,
    table: DeltaTable,
    input: datafusion::prelude::DataFrame,
    session: &SessionContext,
    props: CommitProperties,
) -> Result<()> {
    let q = |rel: &str, c: &str| Expr::Column(Column::new(Some(rel), c));
    let on = t
        .key
        .iter()
        .map(|k| q("t", k).eq(q("s", k)))
        .reduce(Expr::and)
        .ok_or_else(|| Error::target(&t.shown, "merge needs the model's primary key"))?;
    let columns: Vec<String> = input
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut b = table
        .merge(input, on)
        .with_source_alias("s")
        .with_target_alias("t")
        .with_session_state(Arc::new(session.state()))
        .with_commit_properties(props)
        .with_merge_schema(t.add_columns)
        // Only rows whose values changed are rewritten (a merge that changes nothing makes no
        // commit).
        .when_matched_update(|u| {
            let changed = columns
                .iter()
                .map(|c| {
                    datafusion::logical_expr::binary_expr(
                        q("t", c),
                        datafusion::logical_expr::Operator::IsDistinctFrom,
                        q("s", c),
                    )
                })
                .reduce(Expr::or);
            let u = match changed {
                Some(p) => u.predicate(p),
                None => u,
            };
            columns
                .iter()
                .fold(u, |u, c| u.update(c.as_str(), q("s", c)))
        })
        .and_then(|b| {
            b.when_not_matched_insert(|i| {
                columns.iter().fold(i, |i, c| i.set(c.as_str(), q("s", c)))
            })
        })
        .map_err(|e| t.error(&e))?;
    if t.delete_missing {
        b = b
            .when_not_matched_by_source_delete(|d| d)
            .map_err(|e| t.error(&e))?;
    }
    b.await.map(|_| ()).map_err(|e| t.error(&e))
}

/// The table's columns must be the model's (same names), unless new ones may be added.
fn check_columns(target: &DeltaTarget, table: &DeltaTable, schema: &SchemaRef) -> Result<()> {
    let Ok(state) = table.snapshot() else {
        return Ok(());
    };
    let table_columns: Vec<String> = state
        .schema()
        .fields()
        .map(|f| f.name().to_string())
        .collect();
    let model: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let missing: Vec<&String> = model
        .iter()
        .filter(|c| !table_columns.contains(c))
        .collect();
    let extra: Vec<&String> = table_columns
        .iter()
        .filter(|c| !model.contains(c))
        .collect();
    if !extra.is_empty() || (!missing.is_empty() && !target.add_columns) {
        let list = |v: &[&String]| {
            v.iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!("the table lacks the model's {}", list(&missing)));
        }
        if !extra.is_empty() {
            parts.push(format!(
                "the table has {}, which the model does not",
                list(&extra)
            ));
        }
        return Err(Error::target(
            &target.shown,
            format!(
                "the Delta table's columns differ from the model's: {}. Nothing was read or written{}",
                parts.join("; "),
                if extra.is_empty() {
                    "; set `on_schema_change = \"add_columns\"` to add the new fields to the table"
                } else {
                    "; a column is never dropped from a Delta table by a load: add it back to the model (a new model version), or load a new table"
                }
            ),
        ));
    }
    Ok(())
}
