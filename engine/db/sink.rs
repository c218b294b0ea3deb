//! Database targets: the table's expected columns (from the canonical model), the schema check,
//! and the load modes, dispatched to each database's loader.
//!
//! The contract is [`crate::sink`]'s: `begin` (connect, check or create the table, open the
//! staging), `write` (rows to staging only), `finish`, then `commit` (one transaction applies
//! the mode) or `abort` (nothing visible changes). How each database keeps it:
//!
//! | database   | staging                                   | commit                                  |
//! |------------|-------------------------------------------|-----------------------------------------|
//! | PostgreSQL | one transaction: `COPY (FORMAT binary)` into the target (append) or a temporary table | the same transaction commits |
//! | MySQL      | a `<table>__sluice_stage` table, multi-row `INSERT`s | `RENAME TABLE` swap (overwrite) or one transaction |
//! | SQLite     | one transaction, prepared `INSERT`s       | the same transaction commits            |

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::future::BoxFuture;
use sha2::Digest;
use std::sync::Arc;

use super::{Connector, Dialect, TableName};
use crate::config::spec::{LoadMode, OnSchemaChange};
use crate::error::{Error, Result};
use crate::model::{CanonicalModel, FieldType};

/// `scd2`: when a version became current (the run's start).
pub const VALID_FROM: &str = "valid_from";
/// `scd2`: when a version stopped being current; null while current.
pub const VALID_TO: &str = "valid_to";
/// `scd2`: true for the current version of a key.
pub const IS_CURRENT: &str = "is_current";
/// `scd2`: SHA-256 (hex) of the tracked fields, to detect a change.
pub const ROW_HASH: &str = "row_hash";
/// The column names `scd2` adds, which a model must not use.
pub const SCD2_COLUMNS: [&str; 4] = [VALID_FROM, VALID_TO, IS_CURRENT, ROW_HASH];

/// The type of a target column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// A model field's type.
    Field(FieldType),
    /// `_dq_flags`: a list of rule names.
    Flags,
    /// `row_hash`: hex text.
    Hash,
}

/// A column of a database target.
#[derive(Debug, Clone)]
pub struct TargetColumn {
    /// Column name.
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
    /// NOT NULL.
    pub not_null: bool,
    /// Part of the table's primary key.
    pub primary_key: bool,
    /// Longest text (from the model's `max_length`), for MySQL's `VARCHAR`.
    pub max_length: Option<u32>,
}

/// A database target, resolved.
#[derive(Debug, Clone)]
pub struct DbTarget {
    /// Where.
    pub connector: Connector,
    /// The table.
    pub table: TableName,
    /// How rows are loaded.
    pub mode: LoadMode,
    /// Primary key columns (the model's; for `scd2` the table's key adds `valid_from`).
    pub key: Vec<String>,
    /// `merge`/`scd2`: remove or close keys this run did not read.
    pub delete_missing: bool,
    /// `scd2`: fields hashed for change detection.
    pub track: Vec<String>,
    /// What to do when the table differs.
    pub on_schema_change: OnSchemaChange,
    /// The table's columns, in order: the model's fields, `_dq_flags` when a rule flags, and
    /// the `scd2` columns.
    pub columns: Vec<TargetColumn>,
    /// The columns of the rows the run writes (model fields, `_dq_flags`, and for `scd2`
    /// `row_hash`), in order.
    pub staged: Vec<TargetColumn>,
    /// When the run started (`scd2` versions start then).
    pub started: DateTime<Utc>,
}

impl DbTarget {
    /// Describes the target of a job loading `model` (with `_dq_flags` when `with_flags`).
    pub fn new(
        connector: Connector,
        table: TableName,
        mode: LoadMode,
        model: &CanonicalModel,
        with_flags: bool,
        spec: &crate::config::spec::DbTargetSpec,
        started: DateTime<Utc>,
    ) -> DbTarget {
        let scd2 = mode == LoadMode::Scd2;
        let mut staged: Vec<TargetColumn> = model
            .fields
            .iter()
            .map(|f| TargetColumn {
                name: f.name.clone(),
                ty: ColumnType::Field(f.data_type),
                not_null: f.required,
                primary_key: f.primary_key,
                max_length: f.max_length,
            })
            .collect();
        if with_flags {
            staged.push(TargetColumn {
                name: crate::quality::DQ_FLAGS_COLUMN.into(),
                ty: ColumnType::Flags,
                not_null: true,
                primary_key: false,
                max_length: None,
            });
        }
        let mut columns = staged.clone();
        if scd2 {
            let hash = TargetColumn {
                name: ROW_HASH.into(),
                ty: ColumnType::Hash,
                not_null: true,
                primary_key: false,
                max_length: Some(64),
            };
            staged.push(hash.clone());
            let ts = |name: &str, not_null: bool, pk: bool| TargetColumn {
                name: name.into(),
                ty: ColumnType::Field(FieldType::Timestamp),
                not_null,
                primary_key: pk,
                max_length: None,
            };
            columns.push(ts(VALID_FROM, true, true));
            columns.push(ts(VALID_TO, false, false));
            columns.push(TargetColumn {
                name: IS_CURRENT.into(),
                ty: ColumnType::Field(FieldType::Boolean),
                not_null: true,
                primary_key: false,
                max_length: None,
            });
            columns.push(hash);
        }
        let key: Vec<String> = model.primary_key().iter().map(|s| s.to_string()).collect();
        let track = match &spec.track {
            Some(t) => t.get_ref().clone(),
            None => model
                .fields
                .iter()
                .filter(|f| !f.primary_key)
                .map(|f| f.name.clone())
                .collect(),
        };
        DbTarget {
            connector,
            table,
            mode,
            key,
            delete_missing: spec.delete_missing,
            track,
            on_schema_change: spec.on_schema_change,
            columns,
            staged,
            started,
        }
    }

    /// The table's primary key columns (`scd2`: the model's key and `valid_from`).
    pub fn table_key(&self) -> Vec<String> {
        self.columns
            .iter()
            .filter(|c| c.primary_key)
            .map(|c| c.name.clone())
            .collect()
    }

    /// The table as shown in messages: `connection:schema.table`.
    pub fn shown(&self) -> String {
        format!("{}:{}", self.connector.name, self.table)
    }

    /// `CREATE TABLE` for the target in `d`'s types, with NOT NULL and the primary key.
    pub fn create_sql(&self, d: Dialect) -> String {
        let mut cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                format!(
                    "{} {}{}",
                    d.quote(&c.name),
                    d.sql_type(c),
                    if c.not_null { " NOT NULL" } else { "" }
                )
            })
            .collect();
        let key = self.table_key();
        if !key.is_empty() {
            cols.push(format!(
                "PRIMARY KEY ({})",
                key.iter()
                    .map(|k| d.quote(k))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        format!(
            "CREATE TABLE {} (\n  {}\n)",
            self.table.quoted(d),
            cols.join(",\n  ")
        )
    }

    /// The statements that bring an existing table to the model: the `ADD COLUMN`s of
    /// `on_schema_change = "add_columns"`, or none when it matches.
    ///
    /// # Errors
    /// [`Error::Target`] listing every difference the setting does not allow.
    pub fn schema_changes(&self, d: Dialect, actual: &[TableColumn]) -> Result<Vec<String>> {
        let diffs = self.differences(d, actual);
        if diffs.is_empty() {
            return Ok(Vec::new());
        }
        if self.on_schema_change != OnSchemaChange::AddColumns
            || !diffs.iter().all(Difference::addable)
        {
            return Err(schema_mismatch(self, &diffs));
        }
        Ok(diffs
            .iter()
            .filter_map(|x| match x {
                Difference::Missing(col) => Some(format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    self.table.quoted(d),
                    d.quote(&col.name),
                    d.sql_type(col)
                )),
                _ => None,
            })
            .collect())
    }

    /// The model key, quoted and comma-separated (`"id", "day"`).
    pub fn key_list(&self, d: Dialect) -> String {
        self.key
            .iter()
            .map(|k| d.quote(k))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The staged columns qualified by `alias` (`s."id", s."name"`).
    pub fn staged_of(&self, d: Dialect, alias: &str) -> String {
        self.staged
            .iter()
            .map(|c| format!("{alias}.{}", d.quote(&c.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The column definitions of a staging table (`"id" bigint, "name" text, ...`): the
    /// staged columns, without constraints.
    pub fn staging_columns(&self, d: Dialect) -> String {
        self.staged
            .iter()
            .map(|col| format!("{} {}", d.quote(&col.name), d.sql_type(col)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The batches' schema after [`DbTarget::stage_batch`].
    pub fn staged_schema(&self, input: &SchemaRef) -> SchemaRef {
        if self.mode != LoadMode::Scd2 {
            return input.clone();
        }
        let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(ROW_HASH, DataType::Utf8, false)));
        Arc::new(Schema::new(fields))
    }

    /// The rows as staged: for `scd2`, with `row_hash` added (SHA-256 over the tracked fields'
    /// values as text, each preceded by its length, null as `-1`, so no two different rows
    /// share a text).
    ///
    /// # Errors
    /// A tracked field missing from the batch (a bug; validation checks names).
    pub fn stage_batch(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if self.mode != LoadMode::Scd2 {
            return Ok(batch.clone());
        }
        let options = FormatOptions::default();
        let arrays: Vec<ArrayRef> = self
            .track
            .iter()
            .map(|name| {
                batch
                    .column_by_name(name)
                    .cloned()
                    .ok_or_else(|| Error::Internal(format!("tracked field `{name}` missing")))
            })
            .collect::<Result<_>>()?;
        let formatters: Vec<(&ArrayRef, ArrayFormatter)> = arrays
            .iter()
            .map(|a| {
                ArrayFormatter::try_new(a.as_ref(), &options)
                    .map(|f| (a, f))
                    .map_err(|e| Error::Internal(e.to_string()))
            })
            .collect::<Result<_>>()?;
        let mut hashes = Vec::with_capacity(batch.num_rows());
        let mut text = String::new();
        for row in 0..batch.num_rows() {
            let mut h = sha2::Sha256::new();
            for (array, f) in &formatters {
                if array.is_null(row) {
                    h.update(b"-1;");
                } else {
                    text.clear();
                    use std::fmt::Write;
                    let _ = write!(text, "{}", f.value(row));
                    h.update(format!("{};", text.len()).as_bytes());
                    h.update(text.as_bytes());
                }
            }
            hashes.push(hex(&h.finalize()));
        }
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(StringArray::from(hashes)));
        RecordBatch::try_new(self.staged_schema(&batch.schema()), columns)
            .map_err(|e| Error::Internal(format!("adding row_hash: {e}")))
    }

    /// Differences between the table's columns (name, type as the database prints it, NOT
    /// NULL) and the expected ones, as lines for `plan` and errors; empty when they match.
    /// Extra nullable columns of the table are allowed (they stay null).
    pub fn differences(&self, d: Dialect, actual: &[TableColumn]) -> Vec<Difference> {
        let mut out = Vec::new();
        for c in &self.columns {
            match actual.iter().find(|a| a.name == c.name) {
                None => out.push(Difference::Missing(c.clone())),
                Some(TableColumn {
                    db_type: t,
                    not_null,
                    ..
                }) => {
                    let want = d.sql_type(c);
                    if !same_type(d, &want, t) {
                        out.push(Difference::Type {
                            column: c.name.clone(),
                            table: t.clone(),
                            model: want,
                        });
                    } else if *not_null != c.not_null && !c.primary_key {
                        out.push(Difference::Nullability {
                            column: c.name.clone(),
                            table_not_null: *not_null,
                        });
                    }
                }
            }
        }
        for a in actual {
            if a.not_null && !self.columns.iter().any(|c| c.name == a.name) {
                out.push(Difference::ExtraNotNull {
                    column: a.name.clone(),
                    table: a.db_type.clone(),
                });
            }
        }
        // Merge and scd2 find rows by the key; without it as the table's primary key a merge
        // would add a second row per key (MySQL) or fail (PostgreSQL, SQLite).
        if matches!(self.mode, LoadMode::Merge | LoadMode::Scd2) {
            let mut have: Vec<String> = actual
                .iter()
                .filter(|a| a.primary_key)
                .map(|a| a.name.clone())
                .collect();
            let mut want = self.table_key();
            have.sort();
            want.sort();
            if have != want {
                out.push(Difference::Key {
                    table: have,
                    model: self.table_key(),
                });
            }
        }
        out
    }
}

/// A column of an existing table, as the database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    /// Name.
    pub name: String,
    /// Type as the database prints it.
    pub db_type: String,
    /// NOT NULL.
    pub not_null: bool,
    /// Part of the primary key.
    pub primary_key: bool,
}

/// One difference between a database table and the model.
#[derive(Debug, Clone)]
pub enum Difference {
    /// The table lacks a column.
    Missing(TargetColumn),
    /// A column's type differs.
    Type {
        /// Column.
        column: String,
        /// As the table has it.
        table: String,
        /// As the model wants it.
        model: String,
    },
    /// NOT NULL differs.
    Nullability {
        /// Column.
        column: String,
        /// Whether the table's column is NOT NULL.
        table_not_null: bool,
    },
    /// The table's primary key is not the one `merge`/`scd2` match rows by.
    Key {
        /// The table's primary key columns.
        table: Vec<String>,
        /// The key the load needs.
        model: Vec<String>,
    },
    /// The table has a NOT NULL column the model does not fill.
    ExtraNotNull {
        /// Column.
        column: String,
        /// Its type.
        table: String,
    },
}

impl Difference {
    /// True when `on_schema_change = "add_columns"` fixes it.
    pub fn addable(&self) -> bool {
        matches!(self, Difference::Missing(c) if !c.not_null)
    }
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Missing(c) => write!(
                f,
                "column `{}` is in the model but not in the table{}",
                c.name,
                if c.not_null { " (required)" } else { "" }
            ),
            Difference::Type {
                column,
                table,
                model,
            } => write!(f, "column `{column}` is {table} in the table, {model} in the model"),
            Difference::Nullability {
                column,
                table_not_null,
            } => write!(
                f,
                "column `{column}` is {} in the table, {} in the model",
                if *table_not_null { "NOT NULL" } else { "nullable" },
                if *table_not_null { "nullable" } else { "required" }
            ),
            Difference::Key { table, model } => write!(
                f,
                "the table's primary key is ({}), but this load matches rows by ({})",
                table.join(", "),
                model.join(", ")
            ),
            Difference::ExtraNotNull { column, table } => write!(
                f,
                "column `{column}` ({table} NOT NULL) is in the table but not in the model, so rows could not be inserted"
            ),
        }
    }
}

/// The error stopping a run on a table that differs from the model.
pub fn schema_mismatch(target: &DbTarget, diffs: &[Difference]) -> Error {
    let addable = diffs.iter().all(Difference::addable);
    let hint = if addable && target.on_schema_change == OnSchemaChange::Fail {
        "the model adds nullable columns: set `on_schema_change = \"add_columns\"` in [target] to add them, or migrate the table"
    } else {
        "migrate the table to the model (see `sluice plan` for the expected CREATE TABLE), or load another table"
    };
    Error::Target {
        path: target.shown().into(),
        message: format!(
            "the table differs from model: {}; {hint}",
            diffs
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// Whether the type a database prints (`format_type`, `COLUMN_TYPE`, the declared type) is the
/// expected one, compared in lower case without spaces or character set (a MySQL
/// `COLUMN_TYPE` does not show the character set or collation), then by the dialect.
fn same_type(d: Dialect, want: &str, have: &str) -> bool {
    let norm = |s: &str| {
        let s = s.to_ascii_lowercase();
        let s = s.split(" character set").next().unwrap_or(&s).to_string();
        s.replace(' ', "")
    };
    d.same_type(&norm(want), &norm(have))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The differences between the target table and the model, or `None` when the table does
/// not exist (for `sluice plan`; nothing is changed).
///
/// # Errors
/// [`Error::Connection`].
pub async fn inspect(target: &DbTarget) -> Result<Option<Vec<Difference>>> {
    let c = &target.connector;
    let d = c.dialect();
    let actual = d.table_columns(c, &target.table).await?;
    Ok(actual.map(|a| target.differences(d, &a)))
}

/// A load in progress into a database table, as a [`crate::sink::Sink`].
pub struct DbSink {
    load: Box<dyn super::Load>,
    target: Box<DbTarget>,
}

impl DbSink {
    /// Connects, checks (or creates) the table and opens the staging.
    ///
    /// # Errors
    /// [`Error::Connection`], or [`Error::Target`] when the table differs from the model.
    pub async fn begin(target: &DbTarget) -> Result<DbSink> {
        Ok(DbSink {
            load: target.connector.dialect().begin(target).await?,
            target: Box::new(target.clone()),
        })
    }

    /// Stages a batch of canonical rows.
    ///
    /// # Errors
    /// [`Error::Connection`] when the database fails.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let staged = self.target.stage_batch(batch)?;
        self.load.write(&staged).await
    }

    /// Applies the load mode and commits, in one transaction with `record` (written to
    /// `sluice_runs`, see [`super::runs`]).
    ///
    /// # Errors
    /// [`Error::Connection`] or [`Error::Target`]; the table is then as before.
    pub async fn commit(
        self,
        record: &crate::commit::CommitRecord,
    ) -> Result<crate::report::LoadStats> {
        let run = super::runs::RunRow::new(record, &self.target.table)?;
        self.load.commit(&self.target, &run).await
    }
}

impl crate::sink::Sink for DbSink {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { DbSink::write(self, &batch).await })
    }

    /// The rows staged (the database counts them; no files).
    fn finish(&mut self) -> BoxFuture<'_, Result<crate::sink::SinkMetrics>> {
        Box::pin(async move {
            Ok(crate::sink::SinkMetrics {
                rows_written: self.load.finish().await?,
                ..Default::default()
            })
        })
    }

    fn commit<'a>(
        self: Box<Self>,
        record: &'a crate::commit::CommitRecord,
    ) -> BoxFuture<'a, Result<Option<crate::report::LoadStats>>> {
        Box::pin(async move { DbSink::commit(*self, record).await.map(Some) })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.load.abort()
    }
}

/// `a.k1 = b.k1 AND a.k2 = b.k2` over `key`.
pub fn key_join(d: Dialect, a: &str, b: &str, key: &[String]) -> String {
    key.iter()
        .map(|k| {
            let q = d.quote(k);
            format!("{a}.{q} = {b}.{q}")
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Quoted, comma-separated column names.
pub fn column_list(d: Dialect, columns: &[TargetColumn]) -> String {
    columns
        .iter()
        .map(|c| d.quote(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The error for staged rows sharing a key (a merge or scd2 cannot apply two versions of one
/// key at once).
pub fn duplicate_keys(target: &DbTarget, n: u64) -> Error {
    Error::Target {
        path: target.shown().into(),
        message: format!(
            "{n} key{} of ({}) appear more than once among this run's rows, so `{}` cannot tell which row is the new one; add a `unique` rule on the key to the mapping (duplicates then go to the quarantine)",
            if n == 1 { "" } else { "s" },
            target.key.join(", "),
            crate::config::spec::json_name(&target.mode)
        ),
    }
}
