//! The tolerant CSV reader: every record of a set of files as text, with its file and line,
//! and malformed records kept as rows instead of stopping the job.
//!
//! ```text
//! file ──decompress──▶ csv crate (flexible, bytes) ──┬─ well-formed record ──▶ text columns
//!                     (a tee keeps the raw bytes)    └─ malformed record ───▶ __malformed (why)
//!                                                                             __raw_record (text)
//! ```
//!
//! A record is **malformed** when its field count differs from the header's (this is also what
//! broken quoting looks like: an unclosed quote swallows the following lines into one record)
//! or when a field is not valid UTF-8. With [`OnMalformed::Quarantine`] such a record becomes a
//! row whose value columns are null and whose `__malformed` column says what is wrong; the
//! mapping turns it into the rule `malformed.<alias>`. With [`OnMalformed::Fail`] the scan
//! stops with the file, line and byte offset (in the decompressed stream).
//!
//! Lines are the csv crate's [`csv::Position::line`] of the record's first byte, so they are
//! exact even when quoted values contain line breaks. Blank lines are skipped. Each partition
//! reads its files one after the other on a blocking thread and sends batches through a
//! bounded channel, so memory stays at a few batches per partition whatever the file sizes.
//!
//! RFC 4180 is the reference format; the reader also accepts LF line ends and a configurable
//! delimiter and quote.

use crate::invalid::InvalidValue;
use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Builder, UInt64Builder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::streaming::PartitionStream;

use crate::config::spec::Compression;
use crate::record_limit::{Cuts, RecordLimit};
pub use crate::store::Location;

/// Hidden column: the file a row came from, as the user wrote it relative to the project.
pub const FILE_COLUMN: &str = "__file";
/// Hidden column: the row's line (CSV/NDJSON) or row index (Parquet), 1-based.
pub const LINE_COLUMN: &str = "__line";
/// Hidden column: why a record is malformed (null for a well-formed record).
pub const MALFORMED_COLUMN: &str = "__malformed";
/// Hidden column: the malformed record's raw text (invalid UTF-8 replaced by U+FFFD).
pub const RAW_RECORD_COLUMN: &str = "__raw_record";
/// Longest raw text kept for a malformed record, in bytes; longer ones are cut and marked.
const RAW_RECORD_LIMIT: usize = 4096;

pub use crate::config::spec::{OnMalformed, QuoteMode};

/// How to read the files of one CSV source.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// Field delimiter byte.
    pub delimiter: u8,
    /// Quote byte.
    pub quote: u8,
    /// Whether each file's first record names the columns.
    pub has_header: bool,
    /// Compression, `Auto` meaning by file extension.
    pub compression: Compression,
    /// Malformed-record policy.
    pub on_malformed: OnMalformed,
    /// How quotes inside unquoted values are read.
    pub quote_mode: QuoteMode,
    /// Rows per batch.
    pub batch_size: usize,
    /// Longest record read whole, in bytes; a longer one is quarantined as malformed with its
    /// first bytes (see [`crate::record_limit`]).
    pub max_record_bytes: usize,
}

/// One file to read: its location and the name shown in the quarantine and errors.
#[derive(Debug, Clone)]
pub struct CsvFile {
    /// The local file or object to open.
    pub location: Location,
    /// Name shown to users (relative to the project, secrets redacted).
    pub shown: String,
    /// Hive partition columns of this file (`year=2024/` → `("year", Some("2024"))`), added
    /// as text columns after the file's own; every file of a table has the same names.
    pub partition_values: Vec<(String, Option<String>)>,
}

/// A malformed record met with [`OnMalformed::Fail`], or an I/O error, with its position.
#[derive(Debug)]
pub struct CsvError {
    /// File as shown to users.
    pub file: String,
    /// 1-based line where the record starts (0 when unknown).
    pub line: u64,
    /// Byte offset of the record in the decompressed stream.
    pub byte: u64,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for CsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} (byte offset {})",
            self.file, self.line, self.message, self.byte
        )
    }
}

impl std::error::Error for CsvError {}

/// Opens `location` and wraps it in the decoder its compression needs. An object is streamed
/// (see [`Location::open_blocking`]), so this must run on a blocking thread.
///
/// # Errors
/// The I/O error of opening the file.
pub fn open_decoded(
    location: &Location,
    compression: Compression,
) -> io::Result<Box<dyn Read + Send>> {
    let file = location.open_blocking()?;
    let ext = location.extension().unwrap_or_default();
    let kind = match compression {
        Compression::Auto => match ext.as_str() {
            "gz" => Compression::Gzip,
            "zst" | "zstd" => Compression::Zstd,
            "bz2" => Compression::Bzip2,
            "xz" => Compression::Xz,
            _ => Compression::None,
        },
        c => c,
    };
    let buffered = io::BufReader::with_capacity(256 * 1024, file);
    Ok(match kind {
        Compression::Auto | Compression::None => Box::new(buffered),
        // Multi-member readers: concatenated .gz files are valid gzip.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(buffered)),
    })
}

/// A reader that keeps the bytes it has handed out since `mark`, so the raw text of a record
/// can be recovered after the csv crate parsed it.
struct Tee<R> {
    inner: R,
    kept: Rc<RefCell<Kept>>,
}

#[derive(Default)]
struct Kept {
    /// Absolute offset of `bytes[0]`.
    base: u64,
    bytes: Vec<u8>,
}

impl Kept {
    /// Forgets bytes before `offset` once enough have piled up (amortised O(1) per byte).
    fn release_before(&mut self, offset: u64) {
        let drop = offset.saturating_sub(self.base) as usize;
        if drop > 1 << 20 && drop <= self.bytes.len() {
            self.bytes.drain(..drop);
            self.base = offset;
        }
    }

    /// The bytes `[start, end)`, if still kept.
    fn slice(&self, start: u64, end: u64) -> Option<&[u8]> {
        let s = start.checked_sub(self.base)? as usize;
        let e = end.checked_sub(self.base)? as usize;
        self.bytes.get(s..e.min(self.bytes.len()))
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.kept.borrow_mut().bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// The header of a file (or `column_1..column_n` without one) and up to `sample` well-formed
/// records after it, for schema inference.
///
/// # Errors
/// [`CsvError`] when the file cannot be opened or read, or has no records at all.
pub fn sample(
    file: &CsvFile,
    options: &CsvOptions,
    sample: usize,
) -> Result<(Vec<String>, Vec<csv::ByteRecord>), CsvError> {
    let err = |line: u64, byte: u64, message: String| CsvError {
        file: file.shown.clone(),
        line,
        byte,
        message,
    };
    let input = open_decoded(&file.location, options.compression)
        .map_err(|e| err(0, 0, format!("cannot open: {e}")))?;
    let cuts = Rc::new(RefCell::new(Cuts::default()));
    let limited = RecordLimit::new(
        input,
        options.max_record_bytes,
        options.delimiter,
        options.quote,
        cuts.clone(),
    );
    let mut reader = builder(options).from_reader(limited);
    let mut record = csv::ByteRecord::new();
    let mut header: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    let mut sampled_bytes = 0usize;
    loop {
        let pos = reader.position().clone();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(err(pos.line(), pos.byte(), format!("cannot read: {e}"))),
        }
        // A record cut for its size is no sample of its columns' types.
        let end = reader.position().byte();
        if header.is_some() && cuts.borrow_mut().take_within(pos.byte(), end).is_some() {
            continue;
        }
        if header.is_none() {
            header = Some(if options.has_header {
                record
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).trim().to_string())
                    .collect()
            } else {
                (1..=record.len()).map(|i| format!("column_{i}")).collect()
            });
            if options.has_header {
                continue;
            }
        }
        let width = header.as_ref().map_or(0, Vec::len);
        if record.len() == width && record.iter().all(|f| std::str::from_utf8(f).is_ok()) {
            // A copy sized to the record: the reader's record keeps its buffer at the size of
            // the longest record so far, and `clone` would copy all of it (one 64 KB field
            // made each of 10,000 sampled rows cost 128 KB).
            rows.push(record.iter().collect());
            sampled_bytes += record.as_slice().len();
        }
        if rows.len() >= sample || sampled_bytes >= MAX_SAMPLE_BYTES {
            break;
        }
    }
    let header = header.ok_or_else(|| err(1, 0, "the file is empty".into()))?;
    Ok((header, rows))
}

/// Infers column types from sampled records with arrow-csv's inference (the same rules as
/// DataFusion's CSV reader: integers, floats, booleans, dates, timestamps, else text).
///
/// # Errors
/// A message when arrow-csv rejects the sample.
pub fn infer_types(
    header: &[String],
    rows: &[csv::ByteRecord],
    null_values: &[String],
) -> Result<Schema, InvalidValue> {
    let mut buf = Vec::new();
    {
        let mut w = csv::WriterBuilder::new().from_writer(&mut buf);
        w.write_record(header).map_err(|e| e.to_string())?;
        for r in rows {
            w.write_byte_record(r).map_err(|e| e.to_string())?;
        }
        w.flush().map_err(|e| e.to_string())?;
    }
    let alternatives: Vec<String> = null_values.iter().map(|n| regex::escape(n)).collect();
    let nulls = regex::Regex::new(&format!("^(?:{})$", alternatives.join("|")))
        .map_err(|e| e.to_string())?;
    let (schema, _) = arrow_csv::reader::Format::default()
        .with_header(true)
        .with_null_regex(nulls)
        .infer_schema(io::Cursor::new(buf), None)
        .map_err(|e| e.to_string())?;
    Ok(schema)
}

fn builder(options: &CsvOptions) -> csv::ReaderBuilder {
    let mut b = csv::ReaderBuilder::new();
    b.has_headers(false)
        .flexible(true)
        .delimiter(options.delimiter)
        .quote(options.quote)
        .buffer_capacity(256 * 1024);
    b
}

/// The Arrow schema the reader produces: each column as nullable text, then `__file`,
/// `__line` (int64), `__malformed`, `__raw_record`, and `row_column` (uint64, 1-based record
/// number within the file) when given.
pub fn text_schema(columns: &[String], row_column: Option<&str>) -> SchemaRef {
    let mut fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(c, DataType::Utf8, true))
        .collect();
    fields.push(Field::new(FILE_COLUMN, DataType::Utf8, false));
    fields.push(Field::new(LINE_COLUMN, DataType::Int64, false));
    fields.push(Field::new(MALFORMED_COLUMN, DataType::Utf8, true));
    fields.push(Field::new(RAW_RECORD_COLUMN, DataType::Utf8, true));
    if let Some(r) = row_column {
        fields.push(Field::new(r, DataType::UInt64, false));
    }
    Arc::new(Schema::new(fields))
}

/// One partition of a CSV source: a group of files read one after another.
#[derive(Debug)]
pub struct CsvPartition {
    files: Vec<CsvFile>,
    columns: Vec<String>,
    /// What the file reader produces ([`text_schema`]).
    file_schema: SchemaRef,
    /// With the partition columns after it.
    schema: SchemaRef,
    options: CsvOptions,
    with_row_column: bool,
    records: Arc<AtomicU64>,
}

/// A DataFusion table over `files`, read by the tolerant reader in up to `partitions`
/// partitions (files are split round-robin; each partition reads its files in order).
/// `records` counts the data records read (well-formed and malformed), for the run report.
/// The files' partition columns (see [`CsvFile::partition_values`]) come after the reader's
/// columns.
///
/// # Errors
/// A DataFusion error only if the schema is inconsistent (a bug).
pub fn table(
    files: Vec<CsvFile>,
    columns: Vec<String>,
    options: CsvOptions,
    row_column: Option<&str>,
    partitions: usize,
    records: Arc<AtomicU64>,
) -> datafusion::error::Result<StreamingTable> {
    let file_schema = text_schema(&columns, row_column);
    let mut fields: Vec<Field> = file_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    if let Some(first) = files.first() {
        for (key, _) in &first.partition_values {
            fields.push(Field::new(key, DataType::Utf8, true));
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let n = partitions.clamp(1, files.len().max(1));
    let mut groups: Vec<Vec<CsvFile>> = vec![Vec::new(); n];
    for (i, f) in files.into_iter().enumerate() {
        groups[i % n].push(f);
    }
    let parts: Vec<Arc<dyn PartitionStream>> = groups
        .into_iter()
        .map(|files| {
            Arc::new(CsvPartition {
                files,
                columns: columns.clone(),
                file_schema: file_schema.clone(),
                schema: schema.clone(),
                options: options.clone(),
                with_row_column: row_column.is_some(),
                records: records.clone(),
            }) as Arc<dyn PartitionStream>
        })
        .collect();
    StreamingTable::try_new(schema, parts)
}

impl PartitionStream for CsvPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = tokio::sync::mpsc::channel::<datafusion::error::Result<RecordBatch>>(
            crate::producer::CHANNEL_DEPTH,
        );
        let files = self.files.clone();
        let columns = self.columns.clone();
        let schema = self.file_schema.clone();
        let full = self.schema.clone();
        let options = self.options.clone();
        let with_row = self.with_row_column;
        let records = self.records.clone();
        let what = match self.files.first() {
            Some(f) => format!("CSV reader of {}", f.shown),
            None => "CSV reader".to_string(),
        };
        let task = tokio::task::spawn_blocking(move || {
            for file in &files {
                let mut reader = FileReader::new(file, &columns, &schema, &options, with_row);
                let result = reader.run(&records, |batch| {
                    let batch = with_partition_values(batch, &full, &file.partition_values);
                    tx.blocking_send(batch).is_ok()
                });
                match result {
                    Ok(true) => {}
                    // The consumer went away (the query was cancelled or failed).
                    Ok(false) => return,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(DataFusionError::External(Box::new(e))));
                        return;
                    }
                }
            }
        });
        crate::producer::stream(self.schema.clone(), rx, task, what)
    }
}

/// `batch` with one constant text column per partition value, as `schema` says.
fn with_partition_values(
    batch: RecordBatch,
    schema: &SchemaRef,
    values: &[(String, Option<String>)],
) -> datafusion::error::Result<RecordBatch> {
    if values.is_empty() {
        return Ok(batch);
    }
    let n = batch.num_rows();
    let mut columns = batch.columns().to_vec();
    for (_, v) in values {
        columns.push(Arc::new(datafusion::arrow::array::StringArray::from(vec![
            v.as_deref();
            n
        ])));
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Reads one file into batches.
struct FileReader<'a> {
    file: &'a CsvFile,
    columns: &'a [String],
    schema: &'a SchemaRef,
    options: &'a CsvOptions,
    with_row: bool,
    /// The file name repeated `batch_size` times, sliced for each batch (no copy per batch).
    file_column: Option<ArrayRef>,
}

/// One text column of a batch: the values' bytes and offsets, made into a `StringArray` at
/// the end (arrow validates the UTF-8 of the whole buffer once).
struct TextColumn {
    values: Vec<u8>,
    offsets: Vec<i32>,
    nulls: datafusion::arrow::array::NullBufferBuilder,
}

impl TextColumn {
    fn with_capacity(rows: usize, bytes: usize) -> TextColumn {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        TextColumn {
            values: Vec::with_capacity(bytes),
            offsets,
            nulls: datafusion::arrow::array::NullBufferBuilder::new(rows),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.values.extend_from_slice(bytes);
        // A batch's text stays far below 2 GiB (batch_size rows of one column); `finish`
        // refuses offsets that do not fit.
        self.offsets
            .push(i32::try_from(self.values.len()).unwrap_or(i32::MAX));
        self.nulls.append_non_null();
    }

    fn push_null(&mut self) {
        let end = self.offsets.last().copied().unwrap_or(0);
        self.offsets.push(end);
        self.nulls.append_null();
    }

    fn finish(mut self) -> Result<ArrayRef, String> {
        if self.values.len() >= i32::MAX as usize {
            return Err(
                "a batch holds more than 2 GiB of text in one column; lower batch_size".into(),
            );
        }
        let offsets = datafusion::arrow::buffer::OffsetBuffer::new(self.offsets.into());
        let array = datafusion::arrow::array::StringArray::try_new(
            offsets,
            self.values.into(),
            self.nulls.finish(),
        )
        .map_err(|e| e.to_string())?;
        Ok(Arc::new(array))
    }
}

/// Text sampled for type inference per file, at most: 64 MiB (10,000 rows of 6 KiB).
const MAX_SAMPLE_BYTES: usize = 64 << 20;

/// Text bytes one batch may hold in one column before it is sent, whatever `batch_size` says:
/// far below Arrow's 2 GiB limit of a `Utf8` array (32-bit offsets), and a bound on memory.
const MAX_BATCH_TEXT_BYTES: usize = 256 << 20;

/// Column builders for one batch.
struct Batch {
    values: Vec<TextColumn>,
    line: Int64Builder,
    /// Malformed rows of the batch: (row, why, raw text). Usually empty, so the two columns
    /// are built at the end instead of appending a null per row.
    malformed: Vec<(usize, String, String)>,
    row: UInt64Builder,
    len: usize,
}

impl Batch {
    /// The largest text size of one column so far, in bytes.
    fn text_bytes(&self) -> usize {
        self.values
            .iter()
            .map(|v| v.values.len())
            .max()
            .unwrap_or(0)
    }

    /// Builders for `capacity` rows; `bytes[i]` is the text size column `i` had in the
    /// previous batch (so its buffer rarely grows), or 0.
    fn new(columns: usize, capacity: usize, bytes: &[usize]) -> Batch {
        Batch {
            values: (0..columns)
                .map(|i| {
                    let hint = bytes.get(i).copied().unwrap_or(0);
                    TextColumn::with_capacity(capacity, (hint + hint / 8).max(capacity * 8))
                })
                .collect(),
            line: Int64Builder::with_capacity(capacity),
            malformed: Vec::new(),
            row: UInt64Builder::with_capacity(capacity),
            len: 0,
        }
    }
}

impl FileReader<'_> {
    fn new<'a>(
        file: &'a CsvFile,
        columns: &'a [String],
        schema: &'a SchemaRef,
        options: &'a CsvOptions,
        with_row: bool,
    ) -> FileReader<'a> {
        FileReader {
            file,
            columns,
            schema,
            options,
            with_row,
            file_column: None,
        }
    }

    /// Rows per batch: the source's `batch_size`, lowered so that the file-name column (the
    /// name repeated once per row) stays within [`MAX_BATCH_TEXT_BYTES`] however long the
    /// path is.
    fn batch_rows(&self) -> usize {
        let per_row = self.file.shown.len().max(1);
        self.options
            .batch_size
            .clamp(1, (MAX_BATCH_TEXT_BYTES / per_row).max(1))
    }

    fn error(&self, line: u64, byte: u64, message: String) -> CsvError {
        CsvError {
            file: self.file.shown.clone(),
            line,
            byte,
            message,
        }
    }

    /// Reads the file, handing each full batch to `send`; returns `Ok(false)` as soon as
    /// `send` does (the consumer is gone).
    fn run(
        &mut self,
        records: &AtomicU64,
        mut send: impl FnMut(RecordBatch) -> bool,
    ) -> Result<bool, CsvError> {
        let input = open_decoded(&self.file.location, self.options.compression)
            .map_err(|e| self.error(0, 0, format!("cannot open: {e}")))?;
        let kept = Rc::new(RefCell::new(Kept::default()));
        let cuts = Rc::new(RefCell::new(Cuts::default()));
        let tee = Tee {
            inner: RecordLimit::new(
                input,
                self.options.max_record_bytes,
                self.options.delimiter,
                self.options.quote,
                cuts.clone(),
            ),
            kept: kept.clone(),
        };
        // Line feeds inside records cut for their size, which the csv crate never saw.
        let mut line_shift: u64 = 0;
        let mut reader = builder(self.options).from_reader(tee);
        let mut record = csv::ByteRecord::new();
        let width = self.columns.len();
        let batch_size = self.batch_rows();
        let mut batch = Batch::new(width, batch_size, &[]);
        let mut first = true;
        let mut row_number: u64 = 0;
        loop {
            let (before_line, before_byte) = {
                let p = reader.position();
                (p.line(), p.byte())
            };
            match reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    let (line, byte) = e
                        .position()
                        .map_or((before_line, before_byte), |p| (p.line(), p.byte()));
                    return Err(self.error(line + line_shift, byte, format!("cannot read: {e}")));
                }
            }
            let (line, start) = record
                .position()
                .map_or((before_line, before_byte), |p| (p.line(), p.byte()));
            let end = reader.position().byte();
            let (line, start) = skip_blank_lines(&kept.borrow(), line + line_shift, start, end);
            let cut = cuts.borrow_mut().take_within(start, end.max(start + 1));
            if let Some(c) = &cut {
                line_shift += c.lines;
            }
            if first {
                first = false;
                if self.options.has_header {
                    self.check_header(&record, line, start)?;
                    kept.borrow_mut().release_before(end);
                    continue;
                }
            }
            row_number += 1;
            let text = well_formed_text(&record, width);
            let raw_of = || {
                let kept = kept.borrow();
                trim_line_end(kept.slice(start, end).unwrap_or_default()).to_vec()
            };
            let problem = match cut {
                Some(c) => Some(format!(
                    "the record is {} bytes, above max_record_bytes = {} (its first bytes are kept as its raw text)",
                    c.bytes, self.options.max_record_bytes
                )),
                None => {
                    let kept = kept.borrow();
                    let raw = trim_line_end(kept.slice(start, end).unwrap_or_default());
                    let last = reader.position().line().saturating_sub(1) + line_shift;
                    self.problem_of(&record, raw, text, line, last)
                }
            };
            match (problem, text) {
                (None, true) => {
                    // UTF-8 and field boundaries were checked above.
                    for (b, f) in batch.values.iter_mut().zip(record.iter()) {
                        b.push(f);
                    }
                }
                (None, false) => {
                    return Err(self.error(
                        line,
                        start,
                        "internal error: a record passed its checks without text".into(),
                    ))
                }
                (Some(p), _) => {
                    if self.options.on_malformed == OnMalformed::Fail {
                        return Err(self.error(line, start, format!(
                            "malformed record: {p}; set on_malformed = \"quarantine\" on this source to quarantine such records and load the rest"
                        )));
                    }
                    for b in &mut batch.values {
                        b.push_null();
                    }
                    batch
                        .malformed
                        .push((batch.len, p, raw_record_text(&raw_of())));
                }
            }
            batch.line.append_value(line as i64);
            batch.row.append_value(row_number);
            batch.len += 1;
            kept.borrow_mut().release_before(end);
            if batch.len >= batch_size || batch.text_bytes() >= MAX_BATCH_TEXT_BYTES {
                let sizes: Vec<usize> = batch.values.iter().map(|v| v.values.len()).collect();
                let full = std::mem::replace(&mut batch, Batch::new(width, batch_size, &sizes));
                records.fetch_add(full.len as u64, Ordering::Relaxed);
                if !send(self.finish(full)?) {
                    return Ok(false);
                }
            }
        }
        if batch.len > 0 {
            records.fetch_add(batch.len as u64, Ordering::Relaxed);
            if !send(self.finish(batch)?) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// What is wrong with a record, if anything: a quote scan of its raw bytes when its
    /// text passed the fast check (and it has a quote at all), else the slow path
    /// ([`record_problem`]). `last` is the line the record ends on: an unclosed quote
    /// swallows the following lines into one record.
    fn problem_of(
        &self,
        record: &csv::ByteRecord,
        raw: &[u8],
        text_ok: bool,
        line: u64,
        last: u64,
    ) -> Option<String> {
        let problem = if !text_ok {
            record_problem(record, raw, self.columns, self.options)
        } else if memchr::memchr(self.options.quote, raw).is_none() {
            None
        } else {
            check_quoting(raw, self.options)
        }?;
        Some(if last > line {
            format!("{problem} (the record runs from line {line} to line {last})")
        } else {
            problem
        })
    }

    /// Later files of a source must have the header of the first (columns are by position).
    fn check_header(&self, record: &csv::ByteRecord, line: u64, byte: u64) -> Result<(), CsvError> {
        let names: Vec<String> = record
            .iter()
            .map(|f| String::from_utf8_lossy(f).trim().to_string())
            .collect();
        if names != self.columns {
            return Err(self.error(
                line,
                byte,
                format!(
                    "header has columns [{}], but the source's first file has [{}]; files of one source must have the same columns in the same order",
                    names.join(", "),
                    self.columns.join(", ")
                ),
            ));
        }
        Ok(())
    }

    fn finish(&mut self, mut b: Batch) -> Result<RecordBatch, CsvError> {
        let n = b.len;
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(b.values.len() + 5);
        for v in b.values.drain(..) {
            arrays.push(
                v.finish()
                    .map_err(|e| self.error(0, 0, format!("internal error: {e}")))?,
            );
        }
        let shown = self.file.shown.as_str();
        let size = self.batch_rows().max(n);
        let files = self
            .file_column
            .get_or_insert_with(|| {
                Arc::new(datafusion::arrow::array::StringArray::from_iter_values(
                    std::iter::repeat_n(shown, size),
                ))
            })
            .slice(0, n);
        arrays.push(files);
        arrays.push(Arc::new(b.line.finish()));
        let (mut why, mut raw) = (vec![None; n], vec![None; n]);
        for (row, w, r) in b.malformed.drain(..) {
            why[row] = Some(w);
            raw[row] = Some(r);
        }
        arrays.push(Arc::new(datafusion::arrow::array::StringArray::from(why)));
        arrays.push(Arc::new(datafusion::arrow::array::StringArray::from(raw)));
        if self.with_row {
            arrays.push(Arc::new(b.row.finish()));
        }
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| self.error(0, 0, format!("internal error building a batch: {e}")))
    }
}

/// The record's line and first byte after the blank lines the csv crate skipped before it
/// (it reports a record from the first of them).
fn skip_blank_lines(kept: &Kept, line: u64, start: u64, end: u64) -> (u64, u64) {
    let raw = kept.slice(start, end).unwrap_or_default();
    let blank = raw
        .iter()
        .take_while(|b| **b == b'\n' || **b == b'\r')
        .count();
    let lines = raw[..blank].iter().filter(|b| **b == b'\n').count();
    (line + lines as u64, start + blank as u64)
}

/// The fast check of a record: the expected number of fields, valid UTF-8 (one check for the
/// whole record), and every field starting on a character boundary.
fn well_formed_text(record: &csv::ByteRecord, width: usize) -> bool {
    if record.len() != width {
        return false;
    }
    let bytes = record.as_slice();
    if bytes.is_ascii() {
        return true;
    }
    std::str::from_utf8(bytes).is_ok_and(|all| {
        let mut at = 0;
        record.iter().all(|f| {
            at += f.len();
            all.is_char_boundary(at)
        })
    })
}

/// A malformed record's raw text as the quarantine keeps it: lossy UTF-8, cut after
/// [`RAW_RECORD_LIMIT`] bytes with [`TRUNCATED_MARK`] and the full length.
fn raw_record_text(raw: &[u8]) -> String {
    if raw.len() > RAW_RECORD_LIMIT {
        format!(
            "{}{TRUNCATED_MARK}{} bytes]",
            String::from_utf8_lossy(&raw[..RAW_RECORD_LIMIT]),
            raw.len()
        )
    } else {
        String::from_utf8_lossy(raw).into_owned()
    }
}

/// What is wrong with a record, if anything: a field count different from the header's, a
/// field that is not UTF-8, or (looking at its raw bytes) quoting that breaks RFC 4180.
pub fn record_problem(
    record: &csv::ByteRecord,
    raw: &[u8],
    columns: &[String],
    options: &CsvOptions,
) -> Option<String> {
    let width = columns.len();
    if record.len() != width {
        return Some(format!(
            "expected {width} fields, found {}{}",
            record.len(),
            if record.len() > width {
                ""
            } else {
                " (an unclosed quote or a missing delimiter?)"
            }
        ));
    }
    if let Some(i) = record.iter().position(|f| std::str::from_utf8(f).is_err()) {
        return Some(format!(
            "field {} ({}) is not valid UTF-8",
            i + 1,
            columns[i]
        ));
    }
    // The csv crate accepts stray quotes; RFC 4180 does not.
    if raw.contains(&options.quote) {
        return check_quoting(raw, options);
    }
    None
}

/// Marks raw text cut at [`RAW_RECORD_LIMIT`] bytes in the quarantine.
pub const TRUNCATED_MARK: &str = "…[truncated; the record has ";

/// Checks a record's raw bytes against RFC 4180 quoting: a quoted field starts with the quote,
/// doubles the quotes inside, and ends with a quote followed by a delimiter or the record's
/// end; an unquoted field has no quote ([`QuoteMode::Lenient`]: may hold quotes, read as
/// literal characters). Returns what is wrong, if anything.
fn check_quoting(raw: &[u8], options: &CsvOptions) -> Option<String> {
    let (delimiter, quote) = (options.delimiter, options.quote);
    let mut i = 0;
    let n = raw.len();
    let mut field = 1;
    loop {
        // At the start of a field.
        if i < n && raw[i] == quote {
            i += 1;
            loop {
                match raw[i..].iter().position(|b| *b == quote) {
                    None => return Some(format!("field {field} has an unclosed quote")),
                    Some(k) => {
                        i += k + 1;
                        if i < n && raw[i] == quote {
                            i += 1; // an escaped quote
                            continue;
                        }
                        break;
                    }
                }
            }
            if i < n && raw[i] != delimiter {
                return Some(format!(
                    "field {field} has text after its closing quote (quotes inside a quoted value must be doubled)"
                ));
            }
        } else {
            let end = raw[i..]
                .iter()
                .position(|b| *b == delimiter)
                .map_or(n, |k| i + k);
            if options.quote_mode == QuoteMode::Strict && raw[i..end].contains(&quote) {
                return Some(format!(
                    "field {field} has a quote inside an unquoted value (set quote_mode = \"lenient\" on the source to read it as a literal quote)"
                ));
            }
            i = end;
        }
        if i >= n {
            return None;
        }
        i += 1; // the delimiter
        field += 1;
    }
}

fn trim_line_end(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && (b[end - 1] == b'\n' || b[end - 1] == b'\r') {
        end -= 1;
    }
    &b[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn options() -> CsvOptions {
        CsvOptions {
            delimiter: b',',
            quote: b'"',
            has_header: true,
            compression: Compression::None,
            on_malformed: OnMalformed::Quarantine,
            quote_mode: QuoteMode::Strict,
            batch_size: 2,
            max_record_bytes: crate::record_limit::DEFAULT_MAX_RECORD_BYTES,
        }
    }

    async fn read(text: &[u8], options: CsvOptions) -> datafusion::error::Result<Vec<RecordBatch>> {
        let dir = tempfile::tempdir().map_err(|e| DataFusionError::External(Box::new(e)))?;
        let path = dir.path().join("x.csv");
        std::fs::write(&path, text).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let file = CsvFile {
            location: Location::Local(path),
            shown: "x.csv".into(),
            partition_values: Vec::new(),
        };
        let (header, _) =
            sample(&file, &options, 10).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let records = Arc::new(AtomicU64::new(0));
        let part = CsvPartition {
            files: vec![file],
            file_schema: text_schema(&header, Some("__row")),
            schema: text_schema(&header, Some("__row")),
            columns: header,
            options,
            with_row_column: true,
            records,
        };
        let ctx = datafusion::prelude::SessionContext::new();
        let mut s = part.execute(ctx.task_ctx());
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            out.push(b?);
        }
        Ok(out)
    }

    fn column(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
        let mut out = Vec::new();
        for b in batches {
            let i = b.schema().index_of(name).unwrap();
            let a = datafusion::arrow::compute::cast(b.column(i), &DataType::Utf8).unwrap();
            let a = a
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
                .unwrap();
            out.extend(a.iter().map(|v| v.map(str::to_string)));
        }
        out
    }

    #[tokio::test]
    async fn malformed_records_become_rows_with_line_and_raw_text() {
        let text = b"a,b\n1,x\n4,z,extra\n5,\xff\n\n6,\"multi\nline\"\n7,\"say \"hi\"\"\n8,w\n2,\"broken\n3,y\n";
        let batches = read(text, options()).await.unwrap();
        let lines: Vec<Option<String>> = ["2", "3", "4", "6", "8", "9", "10"]
            .map(|s| Some(s.to_string()))
            .to_vec();
        assert_eq!(column(&batches, "__line"), lines);
        let a = column(&batches, "a");
        let good = |v: &str| Some(v.to_string());
        assert_eq!(
            a,
            vec![good("1"), None, None, good("6"), None, good("8"), None]
        );
        assert_eq!(column(&batches, "b")[3].as_deref(), Some("multi\nline"));
        let why = column(&batches, MALFORMED_COLUMN);
        assert!(why[1]
            .as_deref()
            .unwrap()
            .starts_with("expected 2 fields, found 3"));
        assert!(why[2].as_deref().unwrap().contains("not valid UTF-8"));
        assert!(why[4]
            .as_deref()
            .unwrap()
            .contains("text after its closing quote"));
        assert!(why[6].as_deref().unwrap().contains("unclosed quote"));
        let raw = column(&batches, RAW_RECORD_COLUMN);
        assert_eq!(raw[1].as_deref(), Some("4,z,extra"));
        assert_eq!(raw[2].as_deref(), Some("5,\u{fffd}"));
        assert_eq!(raw[4].as_deref(), Some("7,\"say \"hi\"\""));
        assert_eq!(raw[6].as_deref(), Some("2,\"broken\n3,y"));
        assert_eq!(column(&batches, "__row").len(), 7);
    }

    #[tokio::test]
    async fn non_ascii_text_is_read_whole() {
        let batches = read("a,b\n1,Zürich\n2,\"Åre, Jämtland\"\n".as_bytes(), options())
            .await
            .unwrap();
        assert_eq!(
            column(&batches, "b"),
            vec![
                Some("Zürich".to_string()),
                Some("Åre, Jämtland".to_string())
            ]
        );
        assert_eq!(column(&batches, MALFORMED_COLUMN), vec![None, None]);
    }

    #[test]
    fn rfc4180_quoting() {
        let strict = options();
        let check = |raw: &[u8]| check_quoting(raw, &strict);
        assert_eq!(check(b"1,\"a,b\",\"x\"\"y\""), None);
        assert_eq!(check(b"\"\""), None);
        assert!(check(b"1,a\"b").unwrap().contains("field 2"));
        assert!(check(b"\"a\"b,1").unwrap().contains("field 1"));
        assert!(check(b"1,\"ab").unwrap().contains("unclosed"));
        // Lenient: a quote inside an unquoted value is a character; quoted values are RFC 4180.
        let lenient = CsvOptions {
            quote_mode: QuoteMode::Lenient,
            ..options()
        };
        assert_eq!(check_quoting(b"1,5'10\",a\"b", &lenient), None);
        assert!(check_quoting(b"\"a\"b,1", &lenient).is_some());
        assert!(check_quoting(b"1,\"ab", &lenient).is_some());
    }

    #[tokio::test]
    async fn fail_mode_names_file_line_and_byte() {
        let mut o = options();
        o.on_malformed = OnMalformed::Fail;
        let e = read(b"a,b\n1,x\n2,y,z\n", o).await.unwrap_err().to_string();
        assert!(
            e.contains("x.csv:3: malformed record: expected 2 fields, found 3"),
            "{e}"
        );
        assert!(e.contains("byte offset 8"), "{e}");
    }
}
