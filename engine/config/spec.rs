//! The typed shape of each entry a user writes, exactly as written (before cross-file checks).
//!
//! Every struct denies unknown keys, so a misspelled key is an error with a suggestion rather
//! than a silently ignored setting. The reference of every key, with examples, is
//! `docs/reference.md`; a test checks that its examples load.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_spanned::Spanned;

use crate::model::Literal;

/// One `[fields.<name>]` entry of a canonical model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Type name, see [`crate::model::FieldType`].
    #[serde(rename = "type")]
    pub data_type: Spanned<String>,
    /// A null value is a row failure.
    #[serde(default)]
    pub required: bool,
    /// Part of the primary key (implies `required`).
    #[serde(default)]
    pub primary_key: bool,
    /// Accepted values.
    #[serde(rename = "enum")]
    pub allowed: Option<Spanned<Vec<Literal>>>,
    /// Inclusive lower bound.
    pub min: Option<Spanned<Literal>>,
    /// Inclusive upper bound.
    pub max: Option<Spanned<Literal>>,
    /// Regular expression the value must match (Rust `regex` syntax).
    pub pattern: Option<Spanned<String>>,
    /// Largest length in characters.
    pub max_length: Option<u32>,
    /// Values that mean missing, turned into null before casting.
    #[serde(default)]
    pub missing_values: Vec<String>,
    /// Free text.
    pub description: Option<String>,
}

/// Join type of a mapping's `[[join]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JoinKind {
    /// Keep every row of the left side; unmatched right columns are null (the default, so a
    /// lookup miss is a quality issue rather than a silently lost row).
    #[default]
    Left,
    /// Keep only rows with a match on both sides.
    Inner,
}

/// One `[[join]]` of a mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    /// Source name the job binds to a concrete file set.
    pub source: Spanned<String>,
    /// Alias used in expressions; defaults to the source name. Needed when joining one source
    /// twice (origin and destination airports).
    #[serde(rename = "as")]
    pub alias: Option<Spanned<String>>,
    /// `left` (default) or `inner`.
    #[serde(rename = "type", default)]
    pub kind: JoinKind,
    /// Join condition, a SQL boolean expression over the aliases joined so far.
    pub on: Spanned<String>,
}

/// What a null result of a rule's check means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NullPolicy {
    /// A check that evaluates to null passes (SQL `CHECK` constraint semantics; the default).
    #[default]
    Pass,
    /// A check that evaluates to null fails.
    Fail,
}

/// One `[[rule]]` of a mapping: a business rule on the canonical row.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Rule name, unique in the mapping (snake_case); shown in the quarantine.
    pub name: Spanned<String>,
    /// SQL boolean expression; a row passes when it is true.
    pub check: Spanned<String>,
    /// Reason template; `{field}` or `{alias.column}` quotes a value of the failing row.
    pub reason: Option<Spanned<String>>,
    /// What a null check result means.
    #[serde(default)]
    pub nulls: NullPolicy,
}

/// Source file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// Delimited text, RFC 4180 quoting.
    Csv,
    /// Apache Parquet.
    Parquet,
    /// Newline-delimited JSON, one object per line.
    Json,
}

/// Compression of source files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// From the file extension: `.gz` gzip, `.zst` zstd, `.bz2` bzip2, `.xz` xz, else none.
    #[default]
    Auto,
    /// Not compressed.
    None,
    /// gzip.
    Gzip,
    /// Zstandard.
    Zstd,
    /// bzip2.
    Bzip2,
    /// xz.
    Xz,
}

/// One `[sources.<name>]` of a job: where a mapping's source is read from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// File format.
    pub format: Spanned<SourceFormat>,
    /// File, directory or glob, relative to the project root; `${env:NAME}` allowed.
    pub path: Spanned<String>,
    /// Compression (CSV and JSON).
    pub compression: Option<Compression>,
    /// CSV: field delimiter, one byte (default `,`).
    pub delimiter: Option<Spanned<String>>,
    /// CSV: quote character, one byte (default `"`).
    pub quote: Option<Spanned<String>>,
    /// CSV: whether the first line names the columns (default true).
    pub has_header: Option<bool>,
    /// CSV: values read as null, compared with the whole field (default `[""]`).
    pub null_values: Option<Vec<String>>,
    /// CSV/JSON: records read to infer column types (default 10000).
    pub infer_schema_rows: Option<usize>,
    /// CSV: declared column types (`{ founded = "int32" }`, type names as in models), used
    /// instead of inferred ones; a value that does not parse fails `parse.<alias>.<column>`.
    pub columns: Option<IndexMap<String, Spanned<String>>>,
}

/// Load mode of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    /// Add this run's rows to what is there.
    Append,
    /// Replace the target's contents with this run's rows.
    Overwrite,
}

/// Target format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetFormat {
    /// Apache Parquet files, zstd-compressed.
    Parquet,
}

/// The `[target]` of a job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Output format.
    pub format: TargetFormat,
    /// Table name under the project's warehouse folder (`warehouse/<table>`).
    pub table: Option<Spanned<String>>,
    /// Explicit folder instead of `table`; `${env:NAME}` allowed.
    pub path: Option<Spanned<String>>,
    /// `append` or `overwrite`.
    pub mode: LoadMode,
    /// Canonical fields that become Hive-style folders (`origin=JFK/`).
    #[serde(default)]
    pub partition_by: Vec<Spanned<String>>,
}

/// The `[quarantine]` of a job.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QuarantineSpec {
    /// Folder of the quarantine table (default `<warehouse>/_quarantine/<job>`).
    pub path: Option<Spanned<String>>,
}

/// `[checks.row_count]`: bounds on the number of rows loaded into the target.
#[derive(Debug, Clone, Deserialize, Default, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RowCountSpec {
    /// Fail when fewer rows would be loaded.
    pub fail_below: Option<u64>,
    /// Warn when fewer rows would be loaded.
    pub warn_below: Option<u64>,
    /// Fail when more rows would be loaded.
    pub fail_above: Option<u64>,
    /// Warn when more rows would be loaded.
    pub warn_above: Option<u64>,
}

/// `[checks.quarantine_ratio]`: quarantined rows / rows read, a fraction in 0..=1.
#[derive(Debug, Clone, Deserialize, Default, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineRatioSpec {
    /// Fail above this fraction.
    pub fail_above: Option<f64>,
    /// Warn above this fraction.
    pub warn_above: Option<f64>,
}

/// `[checks]` of a job.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChecksSpec {
    /// Row count bounds.
    pub row_count: Option<RowCountSpec>,
    /// Quarantine ratio thresholds.
    pub quarantine_ratio: Option<QuarantineRatioSpec>,
}

/// `[defaults]` of the project file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSpec {
    /// Rows per Arrow record batch (default 8192).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Parallel partitions DataFusion plans with; 0 = number of CPU cores (default).
    #[serde(default)]
    pub target_partitions: usize,
}

impl Default for DefaultsSpec {
    fn default() -> Self {
        DefaultsSpec {
            batch_size: default_batch_size(),
            target_partitions: 0,
        }
    }
}

fn default_batch_size() -> usize {
    8192
}

/// Kind of a named connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionKind {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
    /// SQLite file.
    Sqlite,
}

/// One `[connections.<name>]` of the project file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSpec {
    /// Database kind.
    pub kind: ConnectionKind,
    /// Connection URL; secrets only through `${env:NAME}` or `${file:PATH}`.
    pub url: Spanned<String>,
}

/// Map of named entries in declaration order.
pub type Entries<T> = IndexMap<String, T>;
