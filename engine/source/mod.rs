//! Sources: the files a job reads, as DataFusion `DataFrame`s with one column per source column.
//!
//! ```text
//! path / glob ──expand──▶ files ──infer schema (all files)──▶ column types
//!   per file: scan ──row_number()──▶ (+ __file, __line) ──┐
//!                                                         ├─ UNION ALL ──▶ typed projection (alias.col)
//!   per file: ...                                         ┘
//! ```
//!
//! CSV columns are scanned as text and converted in a projection, for two reasons: DataFusion 55
//! applies null markers (`NA`) only while inferring types, not while reading, and a value that
//! does not parse must become a *row* failure (`parse.<alias>.<column>`, quarantined with its
//! raw text) rather than abort the whole job. Parquet and JSON columns are used as typed.
//!
//! Each file is scanned as one partition so that `row_number()` follows the file order: for CSV
//! the source line is `row + 1` (the header), which is exact unless quoted values contain line
//! breaks. For Parquet it is the row's position in the file; for NDJSON the line.

use std::path::Path;

use datafusion::arrow::datatypes::{DataType, Field as ArrowField, Schema};
use datafusion::common::{Column, TableReference};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::error::DataFusionError;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{cast, col, lit, try_cast, when, Expr, ScalarUDF};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use datafusion::prelude::{DataFrame, SessionContext};

use crate::csv_reader::{self, CsvFile, CsvOptions};
pub use crate::csv_reader::{FILE_COLUMN, LINE_COLUMN};

mod csv;
mod files;
mod json;
mod parquet;
mod rows;

pub use files::{expand_files, hive_partitions, PartitionValues};

use crate::config::interpolate::Redactor;
use crate::config::spec::{Compression, SourceFormat, SourceSpec};
use crate::error::{Error, Result};
use crate::store::Location;
use serde_spanned::Spanned;

/// Prefix of hidden columns holding a CSV column's raw text.
pub const RAW_PREFIX: &str = "__raw_";
/// Prefix of hidden boolean columns: true when a CSV value did not parse as its column type.
pub const PARSE_FAILED_PREFIX: &str = "__parse_failed_";
/// Name of the per-file row counter of the driving source; the executor sums it to count rows
/// read (so a join that multiplies rows cannot hide it).
pub const DRIVING_ROW_COLUMN: &str = "__sluice_driving_row";

/// A column of a scanned source as mappings see it.
#[derive(Debug, Clone)]
pub struct SourceColumn {
    /// Column name.
    pub name: String,
    /// Type after conversion.
    pub data_type: DataType,
    /// True when values are converted from text and may fail (`parse.<alias>.<name>`).
    pub parsed: bool,
}

/// A source ready to plan with: a DataFrame whose columns are qualified by the alias.
#[derive(Debug, Clone)]
pub struct ScannedSource {
    /// Alias in the mapping.
    pub alias: String,
    /// Source name in the job.
    pub name: String,
    /// Format.
    pub format: SourceFormat,
    /// Files read, relative to the project root when inside it.
    pub files: Vec<String>,
    /// Visible columns, in file order.
    pub columns: Vec<SourceColumn>,
    /// The plan: `alias.<column>` for each column, plus hidden `alias.__file`, `alias.__line`,
    /// and for CSV `alias.__raw_<column>` and `alias.__parse_failed_<column>` (plus
    /// `alias.__malformed` and `alias.__raw_record` for the driving source).
    pub frame: DataFrame,
    /// CSV: records read so far (well-formed and malformed), counted by the reader.
    pub records: Option<Arc<AtomicU64>>,
    /// An incremental file source ([`SourceInput::NewFiles`]): the files read and skipped.
    pub new_files: Option<NewFiles>,
}

/// What an incremental file source read: the files no committed run had read.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFiles {
    /// Files read, as [`file_key`] names them, sorted.
    pub read: Vec<String>,
    /// Files matched but skipped: committed runs read them.
    pub skipped: u64,
}

/// How the files of incremental file sources are named in the state store and the commit
/// record: the path relative to the project root when inside it (so a moved project keeps its
/// record), otherwise absolute; an object's URL. Never redacted: a key must stay the same when
/// a secret changes, or files would be read twice.
pub fn file_key(root: &Path, file: &Location) -> String {
    shown(root, file)
}

/// `file` relative to the project root, for messages (secrets redacted: a path may come from
/// `${env:...}`).
fn shown_file(root: &Path, file: &Location) -> String {
    Redactor::process().redact(&shown(root, file))
}

fn compression_of(spec: Option<Compression>, file: &Location) -> FileCompressionType {
    let ext = file.extension().unwrap_or_default();
    match spec.unwrap_or_default() {
        Compression::Auto => match ext.as_str() {
            "gz" => FileCompressionType::GZIP,
            "zst" | "zstd" => FileCompressionType::ZSTD,
            "bz2" => FileCompressionType::BZIP2,
            "xz" => FileCompressionType::XZ,
            _ => FileCompressionType::UNCOMPRESSED,
        },
        Compression::None => FileCompressionType::UNCOMPRESSED,
        Compression::Gzip => FileCompressionType::GZIP,
        Compression::Zstd => FileCompressionType::ZSTD,
        Compression::Bzip2 => FileCompressionType::BZIP2,
        Compression::Xz => FileCompressionType::XZ,
    }
}

/// The reader's options for a source: its CSV settings, or CSV's defaults for rows of another
/// format given as text (replay, tests).
fn csv_options(spec: &SourceSpec, batch_size: usize, max_record_bytes: usize) -> CsvOptions {
    let csv = spec.csv();
    let byte = |v: Option<&Spanned<String>>, default: u8| {
        v.and_then(|v| v.get_ref().as_bytes().first().copied())
            .unwrap_or(default)
    };
    CsvOptions {
        delimiter: byte(csv.and_then(|c| c.delimiter.as_ref()), b','),
        quote: byte(csv.and_then(|c| c.quote.as_ref()), b'"'),
        has_header: csv.and_then(|c| c.has_header).unwrap_or(true),
        compression: spec.compression().unwrap_or_default(),
        on_malformed: csv.and_then(|c| c.on_malformed).unwrap_or_default(),
        quote_mode: csv.and_then(|c| c.quote_mode).unwrap_or_default(),
        batch_size,
        max_record_bytes,
    }
}

/// The CSV null markers of a source (default, and for other formats: the empty field).
pub fn null_values(spec: &SourceSpec) -> Vec<String> {
    spec.csv()
        .and_then(|c| c.null_values.clone())
        .unwrap_or_else(|| vec![String::new()])
}

fn shown(root: &Path, file: &Location) -> String {
    match file {
        Location::Local(file) => file
            .strip_prefix(root)
            .unwrap_or(file)
            .to_string_lossy()
            .to_string(),
        Location::Object { url, .. } => url.to_string(),
    }
}

/// Scans a source for use under `alias`. `driving` marks the mapping's `from` source, whose
/// rows are counted and whose raw values go to the quarantine.
///
/// Only schema inference reads data here (the first `infer_schema_rows` records).
///
/// # Errors
/// [`Error::Source`] for missing files or unreadable headers, naming the source and path.
pub async fn scan(
    ctx: &SessionContext,
    root: &Path,
    name: &str,
    alias: &str,
    spec: &SourceSpec,
    driving: bool,
    redactor: &Redactor,
) -> Result<ScannedSource> {
    scan_input(
        ctx,
        root,
        name,
        alias,
        spec,
        driving,
        redactor,
        &SourceInput::Files,
    )
    .await
}

/// One row given instead of a source's files: its origin and its values by column name
/// (strings as read; numbers and booleans are written as text; `_raw` holds the text of a
/// record that was malformed).
#[derive(Debug, Clone)]
pub struct InlineRow {
    /// File the row came from (shown in the quarantine).
    pub file: String,
    /// Its line there.
    pub line: i64,
    /// Values by column name.
    pub values: serde_json::Map<String, serde_json::Value>,
}

/// Where a source's rows come from.
#[derive(Debug, Clone, Default)]
pub enum SourceInput {
    /// The files the job names (the normal case).
    #[default]
    Files,
    /// Column types from the files, rows given (`sluice replay`: quarantined rows).
    Replay(Vec<InlineRow>),
    /// Column types inferred from the given rows, no file read (`sluice test`).
    Inline(Vec<InlineRow>),
    /// The files the job names, less those committed runs read (by [`file_key`]): an
    /// incremental file source. With no new file, no row is read, and the column types come
    /// from the last file matched.
    NewFiles(Arc<std::collections::BTreeSet<String>>),
}

/// [`scan`] with rows from `input` instead of (or as well as) the files.
///
/// The flow: the files (unless the rows are given inline) → the column types (from the
/// format's reader, or the given rows) with declared CSV types applied → the rows with their
/// file and line → the typed view under `alias`.
///
/// # Errors
/// As [`scan`].
#[allow(clippy::too_many_arguments)]
pub async fn scan_input(
    ctx: &SessionContext,
    root: &Path,
    name: &str,
    alias: &str,
    spec: &SourceSpec,
    driving: bool,
    redactor: &Redactor,
    input: &SourceInput,
) -> Result<ScannedSource> {
    let template = spec.path_template();
    if spec.database().is_some() && matches!(input, SourceInput::Replay(_)) {
        return Err(Error::source(
            name,
            template,
            "replaying the quarantine of a database source is not supported: fix the mapping and re-read the rows with `sluice backfill` (or `sluice run --full-refresh`)",
        ));
    }
    let files = match input {
        SourceInput::Inline(_) => Vec::new(),
        _ => expand_files(ctx, root, name, template, redactor).await?,
    };
    let (files, new_files) = match input {
        SourceInput::NewFiles(read) => {
            let (files, new) = unread_files(root, files, read);
            (files, Some(new))
        }
        _ => (files, None),
    };
    let partitions = hive_partitions(root, &files);
    let scan = FileScan {
        ctx,
        root,
        name,
        spec,
        driving,
        redactor,
        template,
        files,
        partitions,
    };
    let (format, schema, rows) = match input {
        SourceInput::Files | SourceInput::NewFiles(_) => {
            let reader = reader(spec.format()).ok_or_else(|| {
                Error::Internal(format!("source `{name}` reads a database, not files"))
            })?;
            let schema = with_declared_types(reader.schema(&scan).await?, spec, reader.format());
            let rows = reader.rows(&scan, &schema).await?;
            (reader.format(), scan.with_partition_columns(schema)?, rows)
        }
        // Given rows are text, read like CSV whatever the job's format.
        SourceInput::Replay(given) | SourceInput::Inline(given) => {
            let schema = match input {
                SourceInput::Inline(_) => rows::inline_schema(&scan, given)?,
                _ => replay_schema(&scan, alias).await?,
            };
            let schema = with_declared_types(schema, spec, SourceFormat::Csv);
            let rows = rows::rows_frame(&scan, given, &schema)?;
            (SourceFormat::Csv, schema, rows)
        }
    };
    let (mut frame, columns) = typed_view(&scan, rows.frame, &schema, format)?;
    let mut files: Vec<String> = scan.files.iter().map(|f| scan.shown(f)).collect();
    if new_files.as_ref().is_some_and(|n| n.read.is_empty()) {
        // Nothing new: the last file gave the column types; none of its rows is read.
        frame = frame.filter(lit(false)).map_err(scan.df_err())?;
        files.clear();
    }
    let frame = frame.alias(alias).map_err(scan.df_err())?;
    Ok(ScannedSource {
        alias: alias.to_string(),
        name: name.to_string(),
        format,
        files,
        columns,
        frame,
        records: rows.records,
        new_files,
    })
}

/// The files of `matched` no committed run read (`read` holds their [`file_key`]s). When
/// every file was read, the last one is returned for its column types, with an empty
/// [`NewFiles::read`].
fn unread_files(
    root: &Path,
    matched: Vec<Location>,
    read: &std::collections::BTreeSet<String>,
) -> (Vec<Location>, NewFiles) {
    let total = matched.len();
    let (new, old): (Vec<Location>, Vec<Location>) = matched
        .into_iter()
        .partition(|f| !read.contains(&file_key(root, f)));
    let found = NewFiles {
        read: new.iter().map(|f| file_key(root, f)).collect(),
        skipped: (total - new.len()) as u64,
    };
    match (new.is_empty(), old.last()) {
        (true, Some(last)) => (vec![last.clone()], found),
        _ => (new, found),
    }
}

/// The column types a replay of quarantined rows reads them with: the files' own (for CSV,
/// as the reader infers them; otherwise as the typed scan reads them).
async fn replay_schema(scan: &FileScan<'_>, alias: &str) -> Result<Schema> {
    if scan.spec.format() == SourceFormat::Csv {
        return csv::Csv.schema(scan).await;
    }
    let typed = Box::pin(scan_input(
        scan.ctx,
        scan.root,
        scan.name,
        alias,
        scan.spec,
        scan.driving,
        scan.redactor,
        &SourceInput::Files,
    ))
    .await?;
    Ok(Schema::new(
        typed
            .columns
            .iter()
            .map(|c| ArrowField::new(&c.name, c.data_type.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// A file format's reader: the column types over every file, and every file's rows.
///
/// Adding a file format is one module implementing this and one arm in [`reader`].
#[async_trait::async_trait]
trait FileFormatReader: Send + Sync {
    /// The format this reader reads.
    fn format(&self) -> SourceFormat;

    /// The column types over every file of `scan` (for text formats: inferred from a
    /// sample).
    async fn schema(&self, scan: &FileScan<'_>) -> Result<Schema>;

    /// Every file's rows with `schema`'s columns, [`FILE_COLUMN`], [`LINE_COLUMN`] and, for
    /// the driving source, [`DRIVING_ROW_COLUMN`] (CSV: also the malformed-record columns).
    async fn rows(&self, scan: &FileScan<'_>, schema: &Schema) -> Result<Rows>;
}

/// The reader of a file format; `None` for a database source, which has no files.
fn reader(format: SourceFormat) -> Option<&'static dyn FileFormatReader> {
    match format {
        SourceFormat::Csv => Some(&csv::Csv),
        SourceFormat::Parquet => Some(&parquet::Parquet),
        SourceFormat::Json => Some(&json::Json),
        SourceFormat::Database => None,
    }
}

/// A source's rows before the typed view.
struct Rows {
    /// The rows, unqualified columns.
    frame: DataFrame,
    /// Records read so far, when the reader counts them (CSV, given rows).
    records: Option<Arc<AtomicU64>>,
}

/// One scan of one source's files: what every reader needs.
struct FileScan<'a> {
    ctx: &'a SessionContext,
    root: &'a Path,
    /// Source name in the job.
    name: &'a str,
    spec: &'a SourceSpec,
    /// The mapping's `from` source (its rows are counted and kept for the quarantine).
    driving: bool,
    redactor: &'a Redactor,
    /// The path as written, for errors.
    template: &'a str,
    /// The files, sorted (none for inline rows).
    files: Vec<Location>,
    /// Each file's Hive partition values (see [`hive_partitions`]).
    partitions: Vec<PartitionValues>,
}

impl FileScan<'_> {
    /// A source error of this source.
    fn error(&self, message: impl Into<String>) -> Error {
        Error::source(self.name, self.template, message)
    }

    /// A DataFusion error reading this source, as a source error (secrets redacted).
    fn df_err(&self) -> impl Fn(DataFusionError) -> Error + '_ {
        move |e| self.error(self.redactor.redact(&e.to_string()))
    }

    /// `file` as shown in rows and reports: relative to the project, secrets redacted.
    fn shown(&self, file: &Location) -> String {
        self.redactor.redact(&shown(self.root, file))
    }

    /// `file` as shown in error messages.
    fn shown_file(&self, file: &Location) -> String {
        shown_file(self.root, file)
    }

    /// The files as paths DataFusion reads.
    fn paths(&self) -> Vec<String> {
        self.files.iter().map(Location::to_data_fusion).collect()
    }

    /// `schema` (the files' columns) with the partition columns (text) after them.
    ///
    /// # Errors
    /// [`Error::Source`] when a partition folder's key is also a column of the files.
    fn with_partition_columns(&self, schema: Schema) -> Result<Schema> {
        let Some(first) = self.partitions.first().filter(|p| !p.is_empty()) else {
            return Ok(schema);
        };
        let mut fields: Vec<ArrowField> =
            schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        for (key, _) in first {
            if schema.field_with_name(key).is_ok() {
                return Err(self.error(format!(
                    "`{key}` is both a column of the files and a partition folder (`{key}=…/`); rename one of them"
                )));
            }
            fields.push(ArrowField::new(key, DataType::Utf8, true));
        }
        Ok(Schema::new(fields))
    }

    /// The files as the tolerant CSV reader takes them.
    fn csv_files(&self) -> Vec<CsvFile> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| CsvFile {
                partition_values: self.partitions.get(i).cloned().unwrap_or_default(),
                location: f.clone(),
                shown: self.shown(f),
            })
            .collect()
    }

    /// A table of text rows (the CSV reader's, or rows given) as a frame; a lookup source
    /// leaves malformed records out: they have no values to match.
    fn text_frame(&self, table: Arc<dyn datafusion::catalog::TableProvider>) -> Result<DataFrame> {
        let frame = self.ctx.read_table(table).map_err(self.df_err())?;
        if self.driving {
            return Ok(frame);
        }
        frame
            .filter(col(csv_reader::MALFORMED_COLUMN).is_null())
            .map_err(self.df_err())
    }

    /// The source's CSV options, with the session's batch size and record limit.
    fn csv_options(&self) -> CsvOptions {
        let batch_size = self.ctx.state().config().batch_size();
        let max_record_bytes = crate::record_limit::MaxRecordBytes::of(self.ctx);
        csv_options(self.spec, batch_size, max_record_bytes)
    }
}

/// Declared column types (`columns` of a CSV source) replace inferred ones. A declared column
/// the files do not have is the compiler's to report, at its key
/// (`plan::unknown_declared_columns`).
fn with_declared_types(inferred: Schema, spec: &SourceSpec, format: SourceFormat) -> Schema {
    let declared = spec.csv().and_then(|c| c.columns.as_ref());
    let (Some(declared), SourceFormat::Csv) = (declared, format) else {
        return inferred;
    };
    let fields: Vec<ArrowField> = inferred
        .fields()
        .iter()
        .map(|f| {
            match declared
                .get(f.name())
                .and_then(|t| crate::model::FieldType::parse(t.get_ref()).ok())
            {
                Some(t) => ArrowField::new(f.name(), t.to_arrow(), true),
                None => f.as_ref().clone(),
            }
        })
        .collect();
    Schema::new(fields)
}

/// Each file's frame numbered by `row_number()` (one partition per file keeps file order),
/// with `schema`'s columns, the file as shown, the line, and for the driving source the row
/// counter; then UNION ALL.
///
/// # Errors
/// [`Error::Source`] when the frames cannot be combined, or there is no file.
fn numbered_union(
    scan: &FileScan<'_>,
    schema: &Schema,
    frames: Vec<(DataFrame, &Location)>,
) -> Result<DataFrame> {
    let row_col = if scan.driving {
        DRIVING_ROW_COLUMN
    } else {
        "__row"
    };
    let mut union: Option<DataFrame> = None;
    for (i, (df, file)) in frames.into_iter().enumerate() {
        let df = df
            .window(vec![row_number().alias(row_col)])
            .map_err(scan.df_err())?;
        let mut exprs: Vec<Expr> = schema
            .fields()
            .iter()
            .map(|c| ident_col(c.name()))
            .collect();
        for (key, value) in scan.partitions.get(i).into_iter().flatten() {
            exprs.push(lit(datafusion::common::ScalarValue::Utf8(value.clone())).alias(key));
        }
        exprs.push(lit(scan.shown(file)).alias(FILE_COLUMN));
        exprs.push(cast(col(row_col), DataType::Int64).alias(LINE_COLUMN));
        if scan.driving {
            exprs.push(col(row_col));
        }
        let df = df.select(exprs).map_err(scan.df_err())?;
        union = Some(match union {
            None => df,
            Some(u) => u.union(df).map_err(scan.df_err())?,
        });
    }
    union.ok_or_else(|| scan.error("no files"))
}

/// `text` converted to `target`, NULL where it does not convert: `try_cast`, except decimals,
/// which [`crate::functions::ParseDecimal`] reads the same way without the cast's per-value
/// allocations (the TPC-H lineitem CSV-to-Parquet job, four decimal columns, took 0.82× the
/// CPU time: `docs/performance.md`).
fn parse_text(text: Expr, target: &DataType) -> Expr {
    match target {
        DataType::Decimal128(precision, scale) if *scale >= 0 => {
            let udf = ScalarUDF::from(crate::functions::ParseDecimal::new());
            udf.call(vec![
                text,
                lit(i64::from(*precision)),
                lit(i64::from(*scale)),
            ])
        }
        _ => try_cast(text, target.clone()),
    }
}

/// The typed view of a source's rows: each column under its name (CSV text: null markers
/// applied, then converted to the column's type, with its raw text and a parse-failure flag
/// beside it), then the hidden columns.
///
/// # Errors
/// [`Error::Source`] when the projection does not plan.
fn typed_view(
    scan: &FileScan<'_>,
    frame: DataFrame,
    schema: &Schema,
    format: SourceFormat,
) -> Result<(DataFrame, Vec<SourceColumn>)> {
    let is_text = format == SourceFormat::Csv;
    let nulls = null_values(scan.spec);
    let mut exprs = Vec::new();
    let mut columns = Vec::new();
    for f in schema.fields() {
        let raw = ident_col(f.name());
        if !is_text {
            exprs.push(raw.alias(f.name()));
            columns.push(SourceColumn {
                name: f.name().clone(),
                data_type: f.data_type().clone(),
                parsed: false,
            });
            continue;
        }
        let cleaned = if nulls.is_empty() {
            raw.clone()
        } else {
            when(
                raw.clone()
                    .in_list(nulls.iter().map(|n| lit(n.clone())).collect(), false),
                lit(datafusion::common::ScalarValue::Utf8(None)),
            )
            .otherwise(raw.clone())
            .map_err(scan.df_err())?
        };
        let target = match f.data_type() {
            DataType::Null => DataType::Utf8,
            t => t.clone(),
        };
        let parsed = target != DataType::Utf8;
        let typed = if parsed {
            parse_text(cleaned.clone(), &target)
        } else {
            cleaned.clone()
        };
        exprs.push(typed.clone().alias(f.name()));
        let failed = cleaned.is_not_null().and(typed.is_null());
        // Raw text: the driving row's values for the quarantine, and a lookup source's
        // values only for `parse.*` reasons, so only where the value did not parse (a lookup's
        // rows are a join's build side, held in memory). Unused ones are pruned by the
        // optimizer.
        let kept = if parsed && !scan.driving {
            when(failed.clone(), raw.clone())
                .otherwise(lit(datafusion::common::ScalarValue::Utf8(None)))
                .map_err(scan.df_err())?
        } else {
            raw.clone()
        };
        exprs.push(kept.alias(format!("{RAW_PREFIX}{}", f.name())));
        if parsed {
            exprs.push(failed.alias(format!("{PARSE_FAILED_PREFIX}{}", f.name())));
        }
        columns.push(SourceColumn {
            name: f.name().clone(),
            data_type: target,
            parsed,
        });
    }
    exprs.push(col(FILE_COLUMN));
    exprs.push(col(LINE_COLUMN));
    if is_text && scan.driving {
        exprs.push(col(csv_reader::MALFORMED_COLUMN));
        exprs.push(col(csv_reader::RAW_RECORD_COLUMN));
    }
    if scan.driving {
        exprs.push(col(DRIVING_ROW_COLUMN));
    }
    let frame = frame.select(exprs).map_err(scan.df_err())?;
    Ok((frame, columns))
}

/// A column reference by exact name (no parsing of dots or case folding).
pub fn ident_col(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

/// A column reference qualified by a table alias.
pub fn qualified_col(alias: &str, name: &str) -> Expr {
    Expr::Column(Column::new(Some(TableReference::bare(alias)), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_format_is_read_by_its_own_reader_and_none_falls_back() {
        // Every variant, by an exhaustive match: a new format does not compile here until
        // this test names it.
        let all = |f: SourceFormat| match f {
            SourceFormat::Csv
            | SourceFormat::Parquet
            | SourceFormat::Json
            | SourceFormat::Database => [
                SourceFormat::Csv,
                SourceFormat::Parquet,
                SourceFormat::Json,
                SourceFormat::Database,
            ],
        };
        for format in all(SourceFormat::Csv) {
            match reader(format) {
                Some(r) => assert_eq!(r.format(), format, "{format:?} is read by {:?}", r.format()),
                None => assert_eq!(format, SourceFormat::Database, "{format:?} has no reader"),
            }
        }
    }
}
