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

use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::{DataType, Field as ArrowField, Schema};
use datafusion::common::{Column, TableReference};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{cast, col, lit, try_cast, when, Expr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use datafusion::prelude::{DataFrame, JsonReadOptions, ParquetReadOptions, SessionContext};

use crate::csv_reader::{self, CsvFile, CsvOptions};

use crate::config::interpolate::Redactor;
use crate::config::spec::{Compression, SourceFormat, SourceSpec};
use crate::error::{Error, Result};

/// Hidden column: the file a row came from, as the user wrote it relative to the project.
pub const FILE_COLUMN: &str = "__file";
/// Hidden column: the row's line (CSV/NDJSON) or row index (Parquet), 1-based.
pub const LINE_COLUMN: &str = "__line";
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
}

/// Expands `path` (a file, a folder, or a glob) relative to `root` into sorted files.
///
/// # Errors
/// [`Error::Source`] when nothing matches or the pattern is invalid.
pub fn expand_files(
    root: &Path,
    source: &str,
    template: &str,
    redactor: &Redactor,
) -> Result<Vec<PathBuf>> {
    let resolved = redactor
        .resolve_path(template, root)
        .map_err(|e| Error::source(source, template, e))?;
    let full = root.join(&resolved);
    let mut files: Vec<PathBuf> = if resolved.contains(['*', '?', '[']) {
        glob_files(root, &resolved).map_err(|e| Error::source(source, template, e))?
    } else if full.is_dir() {
        std::fs::read_dir(&full)
            .map_err(|e| Error::source(source, template, format!("cannot list folder: {e}")))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && !is_hidden(p))
            .collect()
    } else if full.is_file() {
        vec![full.clone()]
    } else {
        Vec::new()
    };
    files.sort();
    if files.is_empty() {
        return Err(Error::source(
            source,
            template,
            "no file matches this path (paths are relative to the folder holding sluice.toml)",
        ));
    }
    Ok(files)
}

/// The files under `root` matching the glob `pattern` (relative to `root` unless absolute),
/// skipping hidden files and folders. Symbolic links are followed; a link that loops back
/// to a folder above it is an error, not an endless walk.
fn glob_files(root: &Path, pattern: &str) -> std::result::Result<Vec<PathBuf>, String> {
    // Only the user's part is a pattern; the project root is taken literally.
    let full = if Path::new(pattern).is_absolute() {
        pattern.to_string()
    } else {
        format!(
            "{}/{pattern}",
            glob::Pattern::escape(&root.to_string_lossy())
        )
    };
    let matcher = glob::Pattern::new(&full).map_err(|e| format!("invalid glob: {e}"))?;
    let options = glob::MatchOptions {
        require_literal_separator: true,
        require_literal_leading_dot: true,
        ..Default::default()
    };
    let base = crate::guard::glob_base(pattern);
    let base = root.join(&base);
    // Without `**`, a match is exactly as deep as the pattern.
    let recursive = pattern.contains("**");
    let depth = if recursive {
        usize::MAX
    } else {
        Path::new(&full).components().count() - base.components().count()
    };
    let walk = walkdir::WalkDir::new(&base)
        .follow_links(true)
        .max_depth(depth)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    let mut files = Vec::new();
    for entry in walk {
        let entry = match entry {
            Ok(e) => e,
            // Only a `**` pattern walks into the loop; a fixed-depth one stops above it.
            Err(e) if recursive && e.loop_ancestor().is_some() => {
                return Err(format!(
                    "the folder {} links back to {}, a folder above it (a symbolic link loop); remove the link or narrow the glob",
                    e.path().map(|p| p.display().to_string()).unwrap_or_default(),
                    e.loop_ancestor().map(|p| p.display().to_string()).unwrap_or_default()
                ))
            }
            // An unreadable folder or a dangling link: not a match (as the shell's glob).
            Err(_) => continue,
        };
        let p = entry.path();
        if entry.file_type().is_file() && !is_hidden(p) && matcher.matches_path_with(p, options) {
            files.push(p.to_path_buf());
        }
    }
    Ok(files)
}

/// Checks the frame of a Parquet file before a reader trusts it: the `PAR1` magic at both
/// ends and a footer length that fits in the file (format: `PAR1`, row groups, footer,
/// 4-byte little-endian footer length, `PAR1`; see the Apache Parquet file format spec). The
/// parquet crate panics on some impossible lengths instead of returning an error.
///
/// # Errors
/// What is wrong, for the source error.
fn check_parquet_frame(path: &Path) -> std::result::Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    const MAGIC: &[u8; 4] = b"PAR1";
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = f.metadata().map_err(|e| format!("cannot read: {e}"))?.len();
    if len < 12 {
        return Err(format!(
            "it has {len} bytes, fewer than the 12 of an empty Parquet file"
        ));
    }
    let mut head = [0u8; 4];
    let mut tail = [0u8; 8];
    f.read_exact(&mut head)
        .and_then(|()| f.seek(SeekFrom::End(-8)).map(|_| ()))
        .and_then(|()| f.read_exact(&mut tail))
        .map_err(|e| format!("cannot read: {e}"))?;
    if &head != MAGIC || &tail[4..] != MAGIC {
        return Err("it does not start and end with the Parquet magic bytes `PAR1`".into());
    }
    let footer = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if footer > len - 12 {
        return Err(format!(
            "its footer length, {footer} bytes, does not fit in the file's {len} bytes (the file is cut short or damaged)"
        ));
    }
    // The footer and the Arrow schema embedded in it: arrow-ipc 59 panics on some damaged
    // `ARROW:schema` values instead of returning an error (found by the fuzzer).
    use datafusion::parquet::arrow::parquet_to_arrow_schema;
    use datafusion::parquet::file::metadata::ParquetMetaDataReader;
    crate::logging::catch_quietly(|| {
        let meta = ParquetMetaDataReader::new()
            .parse_and_finish(&f)
            .map_err(|e| format!("its footer cannot be read: {e}"))?;
        let m = meta.file_metadata();
        parquet_to_arrow_schema(m.schema_descr(), m.key_value_metadata())
            .map(|_| ())
            .map_err(|e| format!("its schema cannot be read: {e}"))
    })
    .map_err(|panic| {
        format!("its embedded Arrow schema (`ARROW:schema` metadata) is damaged: {panic}")
    })?
}

/// `file` relative to the project root, for messages (secrets redacted: a path may come from
/// `${env:...}`).
fn shown_file(root: &Path, file: &Path) -> String {
    Redactor::process().redact(
        &file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string(),
    )
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') || n.starts_with('_'))
}

fn compression_of(spec: Option<Compression>, file: &Path) -> FileCompressionType {
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    match spec.unwrap_or_default() {
        Compression::Auto => match ext {
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

fn csv_options(spec: &SourceSpec, batch_size: usize, max_record_bytes: usize) -> CsvOptions {
    CsvOptions {
        delimiter: spec
            .delimiter
            .as_ref()
            .and_then(|d| d.get_ref().as_bytes().first().copied())
            .unwrap_or(b','),
        quote: spec
            .quote
            .as_ref()
            .and_then(|q| q.get_ref().as_bytes().first().copied())
            .unwrap_or(b'"'),
        has_header: spec.has_header.unwrap_or(true),
        compression: spec.compression.unwrap_or_default(),
        on_malformed: spec.on_malformed.unwrap_or_default(),
        quote_mode: spec.quote_mode.unwrap_or_default(),
        batch_size,
        max_record_bytes,
    }
}

/// The CSV null markers of a source (default: the empty field).
pub fn null_values(spec: &SourceSpec) -> Vec<String> {
    spec.null_values
        .clone()
        .unwrap_or_else(|| vec![String::new()])
}

fn shown(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .to_string_lossy()
        .to_string()
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
}

fn inline_text(v: Option<&serde_json::Value>) -> Option<String> {
    match v {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    }
}

/// The batch a tolerant CSV scan would produce for `rows` (columns in `columns` order): a
/// row with `_raw` is parsed again with the source's CSV options, and stays malformed if it
/// still does not fit.
fn inline_batch(
    rows: &[InlineRow],
    columns: &[String],
    row_column: Option<&str>,
    options: &CsvOptions,
) -> std::result::Result<datafusion::arrow::record_batch::RecordBatch, String> {
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, UInt64Array};
    let mut values: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(rows.len()); columns.len()];
    let mut malformed = Vec::with_capacity(rows.len());
    let mut raw_text = Vec::with_capacity(rows.len());
    for r in rows {
        let mut fields: Option<Vec<Option<String>>> = None;
        let mut why = None;
        if let Some(raw) = inline_text(r.values.get("_raw")) {
            // Parse the record again, with every check the reader makes.
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .delimiter(options.delimiter)
                .quote(options.quote)
                .from_reader(raw.as_bytes());
            let mut record = csv::ByteRecord::new();
            let mut extra = csv::ByteRecord::new();
            let problem = if raw.contains(csv_reader::TRUNCATED_MARK) {
                Some("the record was too long to keep whole".to_string())
            } else if raw.contains('\u{fffd}') {
                // The quarantine keeps text; bytes that were not UTF-8 became U+FFFD.
                Some("the record held bytes that are not UTF-8 (shown as \u{fffd})".to_string())
            } else {
                match (
                    reader.read_byte_record(&mut record),
                    reader.read_byte_record(&mut extra),
                ) {
                    (Ok(true), Ok(false)) => {
                        csv_reader::record_problem(&record, raw.as_bytes(), columns, options)
                    }
                    (Ok(true), Ok(true)) => Some("the text holds more than one record".into()),
                    _ => Some("the record is empty or unreadable".into()),
                }
            };
            match problem {
                None => {
                    fields = Some(
                        record
                            .iter()
                            .map(|f| Some(String::from_utf8_lossy(f).into_owned()))
                            .collect(),
                    );
                    raw_text.push(None);
                }
                Some(p) => {
                    why = Some(format!("still malformed: {p}"));
                    raw_text.push(Some(raw));
                }
            }
        } else {
            fields = Some(
                columns
                    .iter()
                    .map(|c| inline_text(r.values.get(c)))
                    .collect(),
            );
            raw_text.push(None);
        }
        match fields {
            Some(f) => {
                for (col, v) in values.iter_mut().zip(f) {
                    col.push(v);
                }
            }
            None => {
                for col in values.iter_mut() {
                    col.push(None);
                }
            }
        }
        malformed.push(why);
    }
    let mut arrays: Vec<ArrayRef> = values
        .into_iter()
        .map(|v| Arc::new(StringArray::from(v)) as ArrayRef)
        .collect();
    arrays.push(Arc::new(StringArray::from(
        rows.iter().map(|r| r.file.as_str()).collect::<Vec<_>>(),
    )));
    arrays.push(Arc::new(Int64Array::from(
        rows.iter().map(|r| r.line).collect::<Vec<_>>(),
    )));
    arrays.push(Arc::new(StringArray::from(malformed)));
    arrays.push(Arc::new(StringArray::from(raw_text)));
    if row_column.is_some() {
        arrays.push(Arc::new(UInt64Array::from_iter_values(
            1..=rows.len() as u64,
        )));
    }
    datafusion::arrow::record_batch::RecordBatch::try_new(
        csv_reader::text_schema(columns, row_column),
        arrays,
    )
    .map_err(|e| e.to_string())
}

/// [`scan`] with rows from `input` instead of (or as well as) the files.
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
    let batch_size = ctx.state().config().batch_size();
    let max_record_bytes = crate::record_limit::MaxRecordBytes::of(ctx);
    let partitions = ctx.state().config().target_partitions();
    let template = spec.path_template();
    if spec.is_database() && matches!(input, SourceInput::Replay(_)) {
        return Err(Error::source(
            name,
            template,
            "replaying the quarantine of a database source is not supported: fix the mapping and re-read the rows with `sluice backfill` (or `sluice run --full-refresh`)",
        ));
    }
    let files = match input {
        SourceInput::Inline(_) => Vec::new(),
        _ => expand_files(root, name, template, redactor)?,
    };
    // Inline rows are text, read like CSV whatever the job's format.
    let format = match input {
        SourceInput::Files => spec.file_format(),
        _ => SourceFormat::Csv,
    };
    let err = |e: datafusion::error::DataFusionError| {
        Error::source(name, template, redactor.redact(&e.to_string()))
    };
    let paths: Vec<String> = files
        .iter()
        .map(|f| f.to_string_lossy().to_string())
        .collect();
    let csv_files: Vec<CsvFile> = files
        .iter()
        .map(|f| CsvFile {
            path: f.clone(),
            shown: redactor.redact(&shown(root, f)),
        })
        .collect();
    let mut csv_header: Option<Vec<String>> = None;

    // 1. Column types, inferred over every file (or the inline rows).
    let inferred: Schema = match (input, format) {
        (SourceInput::Inline(rows), _) => {
            let mut header: Vec<String> = Vec::new();
            for r in rows {
                for k in r.values.keys() {
                    if !header.contains(k) {
                        header.push(k.clone());
                    }
                }
            }
            let records: Vec<csv::ByteRecord> = rows
                .iter()
                .map(|r| {
                    let texts: Vec<String> = header
                        .iter()
                        .map(|c| inline_text(r.values.get(c)).unwrap_or_default())
                        .collect();
                    csv::ByteRecord::from(texts)
                })
                .collect();
            csv_reader::infer_types(&header, &records, &null_values(spec))
                .map_err(|e| Error::source(name, "inline rows", e))?
        }
        (SourceInput::Replay(_), _) if spec.file_format() != SourceFormat::Csv => {
            let typed = Box::pin(scan(ctx, root, name, alias, spec, driving, redactor)).await?;
            Schema::new(
                typed
                    .columns
                    .iter()
                    .map(|c| ArrowField::new(&c.name, c.data_type.clone(), true))
                    .collect::<Vec<_>>(),
            )
        }
        (_, SourceFormat::Csv) => {
            let options = csv_options(spec, batch_size, max_record_bytes);
            let mut schemas: Vec<Schema> = Vec::new();
            for f in &csv_files {
                let (header, rows) =
                    csv_reader::sample(f, &options, spec.infer_schema_rows.unwrap_or(10_000))
                        .map_err(|e| {
                            Error::source(name, template, redactor.redact(&e.to_string()))
                        })?;
                // Files are read by column position, so their headers must agree.
                if let Some(first) = &csv_header {
                    if *first != header {
                        return Err(Error::source(
                            name,
                            template,
                            format!(
                                "{} has columns [{}], but {} has [{}]; files of one source must have the same columns in the same order",
                                f.shown,
                                header.join(", "),
                                csv_files[0].shown,
                                first.join(", ")
                            ),
                        ));
                    }
                }
                let schema =
                    csv_reader::infer_types(&header, &rows, &null_values(spec)).map_err(|e| {
                        Error::source(
                            name,
                            template,
                            format!("{}: cannot infer column types: {e}", f.shown),
                        )
                    })?;
                csv_header = Some(header);
                schemas.push(schema);
            }
            Schema::try_merge(schemas).map_err(|e| {
                Error::source(
                    name,
                    template,
                    format!("files disagree on column types: {e}"),
                )
            })?
        }
        (_, SourceFormat::Database) => {
            return Err(Error::Internal(format!(
                "source `{name}` reads a database, not files"
            )))
        }
        (_, SourceFormat::Parquet) => {
            for f in &files {
                check_parquet_frame(f).map_err(|why| {
                    Error::source(
                        name,
                        template,
                        format!("{} is not a valid Parquet file: {why}", shown_file(root, f)),
                    )
                })?;
            }
            ctx.read_parquet(
                paths.clone(),
                ParquetReadOptions::default().file_extension(""),
            )
            .await
            .map_err(err)?
            .schema()
            .as_arrow()
            .clone()
        }
        (_, SourceFormat::Json) => {
            let mut schemas = Vec::new();
            for f in &files {
                let df = ctx
                    .read_json(
                        f.to_string_lossy().to_string(),
                        JsonReadOptions::default()
                            .file_extension("")
                            .file_compression_type(compression_of(spec.compression, f))
                            .schema_infer_max_records(spec.infer_schema_rows.unwrap_or(10_000)),
                    )
                    .await
                    .map_err(err)?;
                schemas.push(df.schema().as_arrow().clone());
            }
            Schema::try_merge(schemas).map_err(|e| {
                Error::source(
                    name,
                    template,
                    format!("files disagree on column types: {e}"),
                )
            })?
        }
    };

    // Declared column types replace inferred ones.
    let inferred = match (&spec.columns, format) {
        // A declared column the files do not have is the compiler's to report, at its key
        // (`plan::unknown_declared_columns`).
        (Some(declared), SourceFormat::Csv) => Schema::new(
            inferred
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
                .collect::<Vec<_>>(),
        ),
        _ => inferred,
    };

    // 2. CSV: one table read by the tolerant reader. Parquet and JSON: one frame per file with
    //    its row number, then UNION ALL.
    let row_col = if driving { DRIVING_ROW_COLUMN } else { "__row" };
    let mut records = None;
    let frame = if let SourceInput::Replay(rows) | SourceInput::Inline(rows) = input {
        let columns: Vec<String> = inferred.fields().iter().map(|f| f.name().clone()).collect();
        let batch = inline_batch(
            rows,
            &columns,
            driving.then_some(DRIVING_ROW_COLUMN),
            &csv_options(spec, batch_size, max_record_bytes),
        )
        .map_err(|e| Error::source(name, template, e))?;
        records = Some(Arc::new(AtomicU64::new(rows.len() as u64)));
        let table = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])
            .map_err(err)?;
        let df = ctx.read_table(Arc::new(table)).map_err(err)?;
        if driving {
            df
        } else {
            df.filter(col(csv_reader::MALFORMED_COLUMN).is_null())
                .map_err(err)?
        }
    } else if format == SourceFormat::Csv {
        let counter = Arc::new(AtomicU64::new(0));
        let columns: Vec<String> = inferred.fields().iter().map(|f| f.name().clone()).collect();
        let table = csv_reader::table(
            csv_files.clone(),
            columns,
            csv_options(spec, batch_size, max_record_bytes),
            driving.then_some(DRIVING_ROW_COLUMN),
            partitions,
            counter.clone(),
        )
        .map_err(err)?;
        records = Some(counter);
        let df = ctx.read_table(Arc::new(table)).map_err(err)?;
        if driving {
            df
        } else {
            // A malformed lookup record has no values to match; leave it out.
            df.filter(col(csv_reader::MALFORMED_COLUMN).is_null())
                .map_err(err)?
        }
    } else {
        let mut union: Option<DataFrame> = None;
        for f in &files {
            let p = f.to_string_lossy().to_string();
            let df = match format {
                SourceFormat::Parquet => ctx
                    .read_parquet(
                        p,
                        ParquetReadOptions::default()
                            .file_extension("")
                            .schema(&inferred),
                    )
                    .await
                    .map_err(err)?,
                _ => ctx
                    .read_json(
                        p,
                        JsonReadOptions::default()
                            .file_extension("")
                            .file_compression_type(compression_of(spec.compression, f))
                            .schema(&inferred),
                    )
                    .await
                    .map_err(err)?,
            };
            let df = df.window(vec![row_number().alias(row_col)]).map_err(err)?;
            let mut exprs: Vec<Expr> = inferred
                .fields()
                .iter()
                .map(|c| ident_col(c.name()))
                .collect();
            exprs.push(lit(redactor.redact(&shown(root, f))).alias(FILE_COLUMN));
            exprs.push(cast(col(row_col), DataType::Int64).alias(LINE_COLUMN));
            if driving {
                exprs.push(col(row_col));
            }
            let df = df.select(exprs).map_err(err)?;
            union = Some(match union {
                None => df,
                Some(u) => u.union(df).map_err(err)?,
            });
        }
        union.ok_or_else(|| Error::source(name, template, "no files"))?
    };

    // 3. Typed view, qualified by the alias.
    let nulls = null_values(spec);
    let mut exprs = Vec::new();
    let mut columns = Vec::new();
    for f in inferred.fields() {
        let raw = ident_col(f.name());
        if format == SourceFormat::Csv {
            let cleaned = if nulls.is_empty() {
                raw.clone()
            } else {
                when(
                    raw.clone()
                        .in_list(nulls.iter().map(|n| lit(n.clone())).collect(), false),
                    lit(datafusion::common::ScalarValue::Utf8(None)),
                )
                .otherwise(raw.clone())
                .map_err(err)?
            };
            let target = match f.data_type() {
                DataType::Null => DataType::Utf8,
                t => t.clone(),
            };
            let parsed = target != DataType::Utf8;
            let typed = if parsed {
                try_cast(cleaned.clone(), target.clone())
            } else {
                cleaned.clone()
            };
            exprs.push(typed.clone().alias(f.name()));
            // Raw text: the driving row's values for the quarantine, and every source's values
            // for `parse.*` reasons. Unused ones are pruned by the optimizer.
            exprs.push(raw.clone().alias(format!("{RAW_PREFIX}{}", f.name())));
            if parsed {
                exprs.push(
                    cleaned
                        .is_not_null()
                        .and(typed.is_null())
                        .alias(format!("{PARSE_FAILED_PREFIX}{}", f.name())),
                );
            }
            columns.push(SourceColumn {
                name: f.name().clone(),
                data_type: target,
                parsed,
            });
        } else {
            exprs.push(raw.alias(f.name()));
            columns.push(SourceColumn {
                name: f.name().clone(),
                data_type: f.data_type().clone(),
                parsed: false,
            });
        }
    }
    exprs.push(col(FILE_COLUMN));
    exprs.push(col(LINE_COLUMN));
    if format == SourceFormat::Csv && driving {
        exprs.push(col(csv_reader::MALFORMED_COLUMN));
        exprs.push(col(csv_reader::RAW_RECORD_COLUMN));
    }
    if driving {
        exprs.push(col(DRIVING_ROW_COLUMN));
    }
    let frame = frame
        .select(exprs)
        .map_err(err)?
        .alias(alias)
        .map_err(err)?;
    Ok(ScannedSource {
        alias: alias.to_string(),
        name: name.to_string(),
        format,
        files: files
            .iter()
            .map(|f| redactor.redact(&shown(root, f)))
            .collect(),
        columns,
        frame,
        records,
    })
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
    use datafusion::arrow::array::{Array, AsArray};

    fn row(raw: &str) -> InlineRow {
        let mut values = serde_json::Map::new();
        values.insert("_raw".into(), serde_json::Value::String(raw.into()));
        InlineRow {
            file: "f.csv".into(),
            line: 7,
            values,
        }
    }

    #[test]
    fn replayed_raw_records_get_every_reader_check() {
        let options = CsvOptions {
            delimiter: b',',
            quote: b'"',
            has_header: true,
            compression: Compression::None,
            on_malformed: csv_reader::OnMalformed::Quarantine,
            quote_mode: csv_reader::QuoteMode::Strict,
            batch_size: 10,
            max_record_bytes: crate::record_limit::DEFAULT_MAX_RECORD_BYTES,
        };
        let columns = vec!["a".to_string(), "b".to_string()];
        let rows = [
            row("1,fixed"),
            row("1,\u{fffd}x"),
            row("1,\"a\"b"),
            row("1,2,3"),
            row("1,x\n2,y"),
        ];
        let b = inline_batch(&rows, &columns, None, &options).unwrap();
        let why = b.column(4).as_string::<i32>();
        assert!(why.is_null(0), "a record that now fits loads");
        assert_eq!(b.column(1).as_string::<i32>().value(0), "fixed");
        assert!(why.value(1).contains("not UTF-8"));
        assert!(why.value(2).contains("closing quote"));
        assert!(why.value(3).contains("expected 2 fields"));
        assert!(why.value(4).contains("more than one record"));
        assert_eq!(
            b.column(3)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0),
            7
        );
    }
}
