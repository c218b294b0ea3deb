//! `[target]` of a job, as written: one variant per kind of target, each with only the keys
//! that kind accepts.
//!
//! The kind is picked by the keys themselves, as for sources: `connection` makes a database
//! target, otherwise `format` names the file format (`parquet` or `delta`). A key that another
//! kind accepts is reported by the reader as belonging to that kind (`track` in a Parquet
//! target: "applies only to database targets"), so no check lists which key goes with which
//! kind. The reference, with examples, is the "Targets" part of `docs/reference.md`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::spec::{json_name, LoadMode, OnSchemaChange, TargetFormat};
use crate::invalid;
use crate::invalid::InvalidValue;

/// The `[target]` of a job: where its valid rows are loaded.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// `format = "parquet"`: a folder of Parquet files, published atomically.
    Parquet(ParquetTargetSpec),
    /// `format = "delta"`: a Delta Lake table, one Delta commit per run.
    Delta(DeltaTargetSpec),
    /// `connection = "<name>"`: a database table, loaded in one transaction.
    Database(DbTargetSpec),
}

/// A Parquet folder (`format = "parquet"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetTargetSpec {
    /// Always [`TargetFormat::Parquet`]; kept for its position in the file.
    pub format: Spanned<TargetFormat>,
    /// Table name under the project's warehouse folder (`warehouse/<table>`); exactly one of
    /// `table` and `path` is given.
    pub table: Option<Spanned<String>>,
    /// An explicit folder instead of `table`, relative to the project, or an object-store URL;
    /// `${env:NAME}` and `${run.*}`/`${var.*}` allowed.
    pub path: Option<Spanned<String>>,
    /// `append` or `overwrite`.
    pub mode: LoadMode,
    /// Canonical fields that become Hive-style folders (`origin=JFK/`).
    #[serde(default)]
    pub partition_by: Vec<Spanned<String>>,
    /// Parquet compression codec of the files written (default `zstd`).
    pub compression: Option<Spanned<ParquetCodec>>,
    /// The codec's level: zstd 1–22 (default 3), gzip 0–10 (default 6), brotli 0–11
    /// (default 1); the other codecs have none.
    pub compression_level: Option<Spanned<i64>>,
    /// Rows per row group (default 131,072): a row group is buffered until complete.
    pub row_group_size: Option<Spanned<u64>>,
    /// Rows after which the writer starts a new file (default 50,000,000; a soft limit,
    /// checked between batches). Not with `partition_by`: DataFusion's writer makes one file
    /// per partition value.
    pub max_rows_per_file: Option<Spanned<u64>>,
    /// The file layout the keys above give, set when the target is read and checked.
    #[serde(skip)]
    pub files: ParquetFiles,
}

/// A Delta Lake table (`format = "delta"`), local or on an object store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaTargetSpec {
    /// Always [`TargetFormat::Delta`]; kept for its position in the file.
    pub format: Spanned<TargetFormat>,
    /// As [`ParquetTargetSpec::table`].
    pub table: Option<Spanned<String>>,
    /// As [`ParquetTargetSpec::path`].
    pub path: Option<Spanned<String>>,
    /// `append`, `overwrite` or `merge`.
    pub mode: LoadMode,
    /// As [`ParquetTargetSpec::partition_by`]: the table's partition columns.
    #[serde(default)]
    pub partition_by: Vec<Spanned<String>>,
    /// `merge`: also delete the rows whose key this run did not read. Only sound when the run
    /// reads the whole source, so not allowed with an incremental source.
    #[serde(default)]
    pub delete_missing: bool,
    /// `add_columns`: add the model's new nullable columns to the table's schema; `fail`
    /// (default) stops a run whose model differs from the table.
    #[serde(default)]
    pub on_schema_change: OnSchemaChange,
    /// `overwrite`: replace only the rows matching this SQL predicate (usually over partition
    /// columns, `flight_date = '${run.date}'`); every row the run writes must match it.
    pub replace_where: Option<Spanned<String>>,
    /// Table properties set when the table is created (`delta.appendOnly`,
    /// `delta.logRetentionDuration`, …).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// A database table (`connection = "<name>"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbTargetSpec {
    /// The name of a `[connections.<name>]` of `sluice.toml`.
    pub connection: Spanned<String>,
    /// The table, optionally schema-qualified (`analytics.flights`).
    pub table: Spanned<String>,
    /// `append`, `overwrite`, `merge` or `scd2`.
    pub mode: LoadMode,
    /// `merge` and `scd2`: also remove (merge) or close (scd2) the rows whose key this run did
    /// not read. Only sound when the run reads the whole source.
    #[serde(default)]
    pub delete_missing: bool,
    /// `scd2`: the fields whose change makes a new version (default: every field that is not
    /// part of the primary key).
    pub track: Option<Spanned<Vec<String>>>,
    /// What to do when the table exists with other columns than the model's: `fail`
    /// (default) or `add_columns` (add the model's new nullable columns).
    #[serde(default)]
    pub on_schema_change: OnSchemaChange,
}

/// A Parquet compression codec (`compression` of a file target), as the Parquet format
/// defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParquetCodec {
    /// Zstandard, levels 1–22.
    #[default]
    Zstd,
    /// Snappy: fast, larger files.
    Snappy,
    /// gzip (DEFLATE), levels 0–10.
    Gzip,
    /// LZ4 (the format's `LZ4_RAW`).
    Lz4,
    /// Brotli, levels 0–11.
    Brotli,
    /// No compression.
    None,
}

/// How a file target's Parquet files are laid out: checked when the job is read, used by the
/// writer as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetFiles {
    /// The codec and level in DataFusion's notation (`zstd(3)`, `snappy`, `uncompressed`).
    pub compression: String,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// Rows after which a new file is started (a soft limit, checked between batches).
    pub max_rows_per_file: usize,
}

/// Rows per row group unless the target says otherwise: readers handle this size well, and a
/// row group is buffered until complete (DataFusion's default is 1M rows).
pub const DEFAULT_ROW_GROUP_ROWS: usize = 128 * 1024;

/// The zstd level unless the target says otherwise.
pub const DEFAULT_ZSTD_LEVEL: i64 = 3;

/// Rows per file unless the target says otherwise (DataFusion's default).
pub const DEFAULT_MAX_ROWS_PER_FILE: usize = 50_000_000;

impl Default for ParquetFiles {
    fn default() -> Self {
        ParquetFiles {
            compression: format!("zstd({DEFAULT_ZSTD_LEVEL})"),
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            max_rows_per_file: DEFAULT_MAX_ROWS_PER_FILE,
        }
    }
}

impl ParquetCodec {
    /// `codec` at `level` (the codec's default when `None`) in DataFusion's notation.
    ///
    /// # Errors
    /// A level outside the codec's range, or a level for a codec that has none; the ranges
    /// are the `parquet` crate's (`ZstdLevel`, `GzipLevel`, `BrotliLevel`).
    pub fn with_level(self, level: Option<i64>) -> Result<String, InvalidValue> {
        use datafusion::parquet::basic::{BrotliLevel, GzipLevel, ZstdLevel};
        let name = match self {
            ParquetCodec::Zstd => "zstd",
            ParquetCodec::Gzip => "gzip",
            ParquetCodec::Brotli => "brotli",
            ParquetCodec::Snappy => "snappy",
            ParquetCodec::Lz4 => "lz4_raw",
            ParquetCodec::None => "uncompressed",
        };
        let (level, range) = match (self, level) {
            (ParquetCodec::Zstd, l) => (l.unwrap_or(DEFAULT_ZSTD_LEVEL), "1 to 22"),
            (ParquetCodec::Gzip, l) => (l.unwrap_or(6), "0 to 10"),
            (ParquetCodec::Brotli, l) => (l.unwrap_or(1), "0 to 11"),
            (_, None) => return Ok(name.to_string()),
            (_, Some(_)) => {
                return Err(invalid!("`{}` has no compression level", json_name(&self)))
            }
        };
        let valid = match (self, i32::try_from(level), u32::try_from(level)) {
            (ParquetCodec::Zstd, Ok(l), _) => ZstdLevel::try_new(l).is_ok(),
            (ParquetCodec::Gzip, _, Ok(l)) => GzipLevel::try_new(l).is_ok(),
            (ParquetCodec::Brotli, _, Ok(l)) => BrotliLevel::try_new(l).is_ok(),
            _ => false,
        };
        if !valid {
            return Err(invalid!(
                "{level} is not a {} level: write {range}",
                json_name(&self)
            ));
        }
        Ok(format!("{name}({level})"))
    }
}

impl TargetSpec {
    /// The load mode as written.
    pub fn mode(&self) -> LoadMode {
        match self {
            TargetSpec::Parquet(t) => t.mode,
            TargetSpec::Delta(t) => t.mode,
            TargetSpec::Database(t) => t.mode,
        }
    }

    /// Replaces the load mode (a request that runs the job another way: `--full-refresh`
    /// replaces an append, a replay appends).
    pub fn set_mode(&mut self, mode: LoadMode) {
        match self {
            TargetSpec::Parquet(t) => t.mode = mode,
            TargetSpec::Delta(t) => t.mode = mode,
            TargetSpec::Database(t) => t.mode = mode,
        }
    }

    /// True for a database target (`connection` given).
    pub fn is_database(&self) -> bool {
        matches!(self, TargetSpec::Database(_))
    }

    /// The database target, when the job loads one.
    pub fn database(&self) -> Option<&DbTargetSpec> {
        match self {
            TargetSpec::Database(t) => Some(t),
            _ => None,
        }
    }

    /// `table` as written: a folder under the warehouse (file targets) or a database table.
    pub fn table(&self) -> Option<&Spanned<String>> {
        match self {
            TargetSpec::Parquet(t) => t.table.as_ref(),
            TargetSpec::Delta(t) => t.table.as_ref(),
            TargetSpec::Database(t) => Some(&t.table),
        }
    }

    /// `path` as written (file targets only).
    pub fn path(&self) -> Option<&Spanned<String>> {
        match self {
            TargetSpec::Parquet(t) => t.path.as_ref(),
            TargetSpec::Delta(t) => t.path.as_ref(),
            TargetSpec::Database(_) => None,
        }
    }

    /// `path`, to replace its parameters.
    pub fn path_mut(&mut self) -> Option<&mut Spanned<String>> {
        match self {
            TargetSpec::Parquet(t) => t.path.as_mut(),
            TargetSpec::Delta(t) => t.path.as_mut(),
            TargetSpec::Database(_) => None,
        }
    }

    /// The partition columns as written (empty for a database target).
    pub fn partition_by(&self) -> &[Spanned<String>] {
        match self {
            TargetSpec::Parquet(t) => &t.partition_by,
            TargetSpec::Delta(t) => &t.partition_by,
            TargetSpec::Database(_) => &[],
        }
    }

    /// The partition columns' names.
    pub fn partition_columns(&self) -> Vec<String> {
        self.partition_by()
            .iter()
            .map(|p| p.get_ref().clone())
            .collect()
    }

    /// A Delta target's `replace_where` predicate.
    pub fn replace_where(&self) -> Option<&Spanned<String>> {
        match self {
            TargetSpec::Delta(t) => t.replace_where.as_ref(),
            _ => None,
        }
    }

    /// `replace_where`, to replace its parameters.
    pub fn replace_where_mut(&mut self) -> Option<&mut Spanned<String>> {
        match self {
            TargetSpec::Delta(t) => t.replace_where.as_mut(),
            _ => None,
        }
    }
}
