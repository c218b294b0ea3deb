//! CSV sources, read by Sluice's tolerant reader ([`crate::csv_reader`]): column types
//! inferred over a sample of every file (whose headers must agree), rows read as text with
//! their file and line, malformed records kept as rows for the quarantine.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;

use super::{null_values, FileFormatReader, FileScan, Rows, DRIVING_ROW_COLUMN};
use crate::config::spec::SourceFormat;
use crate::csv_reader;
use crate::error::Result;

/// The CSV reader.
pub(super) struct Csv;

#[async_trait::async_trait]
impl FileFormatReader for Csv {
    fn format(&self) -> SourceFormat {
        SourceFormat::Csv
    }

    async fn schema(&self, scan: &FileScan<'_>) -> Result<Schema> {
        let options = scan.csv_options();
        let csv_files = scan.csv_files();
        let sample_rows = scan.spec.infer_schema_rows();
        let mut header_of_first: Option<Vec<String>> = None;
        let mut schemas: Vec<Schema> = Vec::new();
        for f in &csv_files {
            // On a blocking thread: an object is streamed from its store.
            let (file, opts) = (f.clone(), options.clone());
            let (header, rows) =
                tokio::task::spawn_blocking(move || csv_reader::sample(&file, &opts, sample_rows))
                    .await
                    .map_err(|e| scan.error(format!("the CSV sampler stopped: {e}")))?
                    .map_err(|e| scan.error(scan.redactor.redact(&e.to_string())))?;
            // Files are read by column position, so their headers must agree.
            if let Some(first) = &header_of_first {
                if *first != header {
                    return Err(scan.error(format!(
                        "{} has columns [{}], but {} has [{}]; files of one source must have the same columns in the same order",
                        f.shown,
                        header.join(", "),
                        csv_files[0].shown,
                        first.join(", ")
                    )));
                }
            }
            let schema = csv_reader::infer_types(&header, &rows, &null_values(scan.spec))
                .map_err(|e| scan.error(format!("{}: cannot infer column types: {e}", f.shown)))?;
            header_of_first = Some(header);
            schemas.push(schema);
        }
        Schema::try_merge(schemas)
            .map_err(|e| scan.error(format!("files disagree on column types: {e}")))
    }

    async fn rows(&self, scan: &FileScan<'_>, schema: &Schema) -> Result<Rows> {
        let counter = Arc::new(AtomicU64::new(0));
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let partitions = scan.ctx.state().config().target_partitions();
        let table = csv_reader::table(
            scan.csv_files(),
            columns,
            scan.csv_options(),
            scan.driving.then_some(DRIVING_ROW_COLUMN),
            partitions,
            counter.clone(),
        )
        .map_err(scan.df_err())?;
        let frame = scan.text_frame(Arc::new(table))?;
        Ok(Rows {
            frame,
            records: Some(counter),
        })
    }
}
