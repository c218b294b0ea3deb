//! Rows given instead of a source's files: the quarantined rows `sluice replay` loads again
//! (column types from the files) and the rows of a mapping test (`sluice test`, column types
//! inferred from the rows). Both are text, read as a tolerant CSV scan would read them.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;

use super::{FileScan, InlineRow, Rows, DRIVING_ROW_COLUMN};
use crate::csv_reader::{self, CsvOptions};
use crate::error::{Error, Result};

/// The column types of `rows`: every key any row has, in first-seen order, inferred from the
/// text as for a CSV file.
///
/// # Errors
/// [`Error::Source`] when the types cannot be inferred.
pub(super) fn inline_schema(scan: &FileScan<'_>, rows: &[InlineRow]) -> Result<Schema> {
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
    csv_reader::infer_types(&header, &records, &super::null_values(scan.spec))
        .map_err(|e| Error::source(scan.name, "inline rows", e))
}

/// The frame of `rows` with `schema`'s columns (as text), their file and line, and the
/// malformed-record columns; a lookup source leaves malformed rows out.
///
/// # Errors
/// [`Error::Source`] when the rows do not fit the columns.
pub(super) fn rows_frame(scan: &FileScan<'_>, rows: &[InlineRow], schema: &Schema) -> Result<Rows> {
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let batch = inline_batch(
        rows,
        &columns,
        scan.driving.then_some(DRIVING_ROW_COLUMN),
        &scan.csv_options(),
    )
    .map_err(|e| scan.error(e))?;
    let table = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])
        .map_err(scan.df_err())?;
    let frame = scan.text_frame(Arc::new(table))?;
    Ok(Rows {
        frame,
        records: Some(Arc::new(AtomicU64::new(rows.len() as u64))),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::spec::Compression;
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
