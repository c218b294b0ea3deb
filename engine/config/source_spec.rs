//! `[sources.<name>]` of a job, as written: one variant per kind of source, each with only the
//! keys that kind accepts.
//!
//! The kind is picked by the keys themselves: `connection` makes a database source, otherwise
//! `format` names the file format. A key another kind accepts is reported by the reader as
//! belonging to that kind (`delimiter` in a Parquet source: "applies only to CSV sources"), so
//! no check here lists which key goes with which kind. The reference, with examples, is the
//! "Sources" part of `docs/reference.md`.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_spanned::Spanned;

/// One `[sources.<name>]` of a job: where a mapping's source is read from.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// `format = "csv"`: delimited text read by Sluice's tolerant reader.
    Csv(CsvSourceSpec),
    /// `format = "parquet"`.
    Parquet(ParquetSourceSpec),
    /// `format = "json"`: newline-delimited JSON.
    Json(JsonSourceSpec),
    /// `connection = "<name>"`: a table or query of a database.
    Database(DbSourceSpec),
}

/// A CSV source (`format = "csv"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSourceSpec {
    /// Always [`SourceFormat::Csv`]; kept for its position in the file.
    pub format: Spanned<SourceFormat>,
    /// File, directory or glob, relative to the project root, or a URL of an object store;
    /// `${env:NAME}` and `${run.*}`/`${var.*}` parameters allowed.
    pub path: Spanned<String>,
    /// `incremental = { files = "new" }`: read only the files no committed run has read.
    pub incremental: Option<FilesIncrementalSpec>,
    /// Compression of the files (default: from each file's extension).
    pub compression: Option<Compression>,
    /// Field delimiter, one byte (default `,`).
    pub delimiter: Option<Spanned<String>>,
    /// Quote character, one byte (default `"`).
    pub quote: Option<Spanned<String>>,
    /// Whether the first line names the columns (default true).
    pub has_header: Option<bool>,
    /// Values read as null, compared with the whole field (default `[""]`).
    pub null_values: Option<Vec<String>>,
    /// Records read to infer column types (default 10000; at least 1).
    pub infer_schema_rows: Option<Spanned<usize>>,
    /// Declared column types (`{ founded = "int32" }`, type names as in models), used instead
    /// of inferred ones; a value that does not parse fails `parse.<alias>.<column>`.
    pub columns: Option<IndexMap<String, Spanned<String>>>,
    /// What to do with a malformed record (wrong field count, broken quoting, invalid UTF-8):
    /// `quarantine` (default) or `fail`. See [`crate::csv_reader`].
    pub on_malformed: Option<OnMalformed>,
    /// `strict` (RFC 4180, default) or `lenient` (a quote inside an unquoted value is a literal
    /// character). See [`QuoteMode`].
    pub quote_mode: Option<QuoteMode>,
}

/// A Parquet source (`format = "parquet"`): the files carry their own compression and schema.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSourceSpec {
    /// Always [`SourceFormat::Parquet`]; kept for its position in the file.
    pub format: Spanned<SourceFormat>,
    /// As [`CsvSourceSpec::path`].
    pub path: Spanned<String>,
    /// As [`CsvSourceSpec::incremental`].
    pub incremental: Option<FilesIncrementalSpec>,
}

/// A newline-delimited JSON source (`format = "json"`), one object per line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSourceSpec {
    /// Always [`SourceFormat::Json`]; kept for its position in the file.
    pub format: Spanned<SourceFormat>,
    /// As [`CsvSourceSpec::path`].
    pub path: Spanned<String>,
    /// As [`CsvSourceSpec::incremental`].
    pub incremental: Option<FilesIncrementalSpec>,
    /// As [`CsvSourceSpec::compression`].
    pub compression: Option<Compression>,
    /// Records read to infer column types (default 10000; at least 1).
    pub infer_schema_rows: Option<Spanned<usize>>,
}

/// A database source (`connection = "<name>"`): a whole table or a `SELECT`; its column types
/// come from the database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbSourceSpec {
    /// The name of a `[connections.<name>]` of `sluice.toml`.
    pub connection: Spanned<String>,
    /// The table to read, optionally schema-qualified (`public.flights`); exactly one of
    /// `table` and `query`.
    pub table: Option<Spanned<String>>,
    /// A `SELECT` to read instead of a table (run as a subquery).
    pub query: Option<Spanned<String>>,
    /// `incremental = { column = "updated_at", lookback = "2h" }`: read only rows above the
    /// watermark.
    pub incremental: Option<CursorSpec>,
}

/// `incremental = { files = "new" }` of a file source: a run reads the files no committed run
/// of the job has read, and records them as read with the target commit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesIncrementalSpec {
    /// Which files a run reads.
    pub files: Spanned<FileSelection>,
}

/// `incremental = { column = "updated_at", lookback = "2h" }` of a database source.
///
/// A run reads the rows whose `column` is above the watermark (the largest value the last
/// committed run read) minus `lookback`, and moves the watermark only after the target commit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CursorSpec {
    /// The cursor column: a timestamp, date or integer column that grows when a row is
    /// inserted or updated.
    pub column: Spanned<String>,
    /// How far below the watermark to read again, for rows committed late: a duration (`"2h"`,
    /// `"30m"`, `"1d"`) for a timestamp or date cursor, a number for an integer cursor.
    pub lookback: Option<Spanned<Lookback>>,
}

impl SourceSpec {
    /// The format: a file format, or [`SourceFormat::Database`].
    pub fn format(&self) -> SourceFormat {
        match self {
            SourceSpec::Csv(_) => SourceFormat::Csv,
            SourceSpec::Parquet(_) => SourceFormat::Parquet,
            SourceSpec::Json(_) => SourceFormat::Json,
            SourceSpec::Database(_) => SourceFormat::Database,
        }
    }

    /// The path of a file source as written (`None` for a database source).
    pub fn path(&self) -> Option<&Spanned<String>> {
        match self {
            SourceSpec::Csv(s) => Some(&s.path),
            SourceSpec::Parquet(s) => Some(&s.path),
            SourceSpec::Json(s) => Some(&s.path),
            SourceSpec::Database(_) => None,
        }
    }

    /// The path of a file source, for parameter substitution (`None` for a database source).
    pub fn path_mut(&mut self) -> Option<&mut Spanned<String>> {
        match self {
            SourceSpec::Csv(s) => Some(&mut s.path),
            SourceSpec::Parquet(s) => Some(&mut s.path),
            SourceSpec::Json(s) => Some(&mut s.path),
            SourceSpec::Database(_) => None,
        }
    }

    /// The path template as written (empty for a database source).
    pub fn path_template(&self) -> &str {
        self.path().map_or("", |p| p.get_ref().as_str())
    }

    /// The CSV settings, for a CSV source.
    pub fn csv(&self) -> Option<&CsvSourceSpec> {
        match self {
            SourceSpec::Csv(s) => Some(s),
            _ => None,
        }
    }

    /// The database source, for one.
    pub fn database(&self) -> Option<&DbSourceSpec> {
        match self {
            SourceSpec::Database(s) => Some(s),
            _ => None,
        }
    }

    /// `incremental.files` of an incremental file source.
    pub fn new_files(&self) -> Option<&Spanned<FileSelection>> {
        let inc = match self {
            SourceSpec::Csv(s) => s.incremental.as_ref(),
            SourceSpec::Parquet(s) => s.incremental.as_ref(),
            SourceSpec::Json(s) => s.incremental.as_ref(),
            SourceSpec::Database(_) => None,
        };
        inc.map(|i| &i.files)
    }

    /// The cursor of an incremental database source.
    pub fn cursor(&self) -> Option<&CursorSpec> {
        self.database().and_then(|d| d.incremental.as_ref())
    }

    /// Where `incremental` is written, when the source is incremental (for errors about it).
    pub fn incremental_span(&self) -> Option<std::ops::Range<usize>> {
        self.new_files()
            .map(Spanned::span)
            .or_else(|| self.cursor().map(|c| c.column.span()))
    }

    /// The compression setting of a CSV or JSON source (`None`: from each file's extension).
    pub fn compression(&self) -> Option<Compression> {
        match self {
            SourceSpec::Csv(s) => s.compression,
            SourceSpec::Json(s) => s.compression,
            SourceSpec::Parquet(_) | SourceSpec::Database(_) => None,
        }
    }

    /// Records read to infer column types (CSV and JSON; default 10000).
    pub fn infer_schema_rows(&self) -> usize {
        let n = match self {
            SourceSpec::Csv(s) => s.infer_schema_rows.as_ref(),
            SourceSpec::Json(s) => s.infer_schema_rows.as_ref(),
            SourceSpec::Parquet(_) | SourceSpec::Database(_) => None,
        };
        n.map_or(10_000, |n| *n.get_ref())
    }
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
    /// A database table or query (set by `connection`, never written as `format`).
    #[serde(skip_deserializing)]
    Database,
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

/// `incremental.files` of a file source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileSelection {
    /// The files no committed run of the job has read, by their path (local, relative to the
    /// project) or URL; a file rewritten under a name already read is not read again.
    New,
}

/// The `lookback` of an incremental source, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Lookback {
    /// An amount of the cursor's units (integer cursors).
    Number(i64),
    /// A duration in `humantime` syntax (`"2h"`, `"90min"`, `"1day"`), for time cursors.
    Duration(String),
}

/// What to do with a malformed CSV record (`on_malformed` in a job's source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMalformed {
    /// Quarantine the record with its file, line and raw text; keep reading (the default).
    #[default]
    Quarantine,
    /// Stop the run with the file, line and byte offset.
    Fail,
}

/// How quotes are read (`quote_mode` in a job's source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuoteMode {
    /// RFC 4180: a quote inside an unquoted value makes the record malformed (the default).
    #[default]
    Strict,
    /// A quote inside an unquoted value is a literal character (`5'10"`), as PostgreSQL's
    /// and DuckDB's readers can accept; quoted values still follow RFC 4180.
    Lenient,
}
