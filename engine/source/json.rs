//! NDJSON sources: the column types inferred over every file's first records, and each
//! file's rows numbered by line.

use datafusion::arrow::datatypes::Schema;
use datafusion::prelude::{DataFrame, JsonReadOptions};

use super::{compression_of, numbered_union, FileFormatReader, FileScan, Rows};
use crate::config::spec::SourceFormat;
use crate::error::Result;
use crate::store::Location;

/// The NDJSON reader (one JSON object per line).
pub(super) struct Json;

impl Json {
    /// The options that read `file`: its compression, and `schema` when known.
    fn options<'a>(
        scan: &FileScan<'_>,
        file: &Location,
        schema: Option<&'a Schema>,
    ) -> JsonReadOptions<'a> {
        let options = JsonReadOptions::default()
            .file_extension("")
            .file_compression_type(compression_of(scan.spec.compression(), file))
            .schema_infer_max_records(scan.spec.infer_schema_rows());
        match schema {
            Some(s) => options.schema(s),
            None => options,
        }
    }
}

#[async_trait::async_trait]
impl FileFormatReader for Json {
    fn format(&self) -> SourceFormat {
        SourceFormat::Json
    }

    async fn schema(&self, scan: &FileScan<'_>) -> Result<Schema> {
        let mut schemas = Vec::new();
        for f in &scan.files {
            let df = scan
                .ctx
                .read_json(f.to_data_fusion(), Json::options(scan, f, None))
                .await
                .map_err(scan.df_err())?;
            schemas.push(df.schema().as_arrow().clone());
        }
        Schema::try_merge(schemas)
            .map_err(|e| scan.error(format!("files disagree on column types: {e}")))
    }

    async fn rows(&self, scan: &FileScan<'_>, schema: &Schema) -> Result<Rows> {
        let mut frames: Vec<(DataFrame, &Location)> = Vec::new();
        for f in &scan.files {
            let df = scan
                .ctx
                .read_json(f.to_data_fusion(), Json::options(scan, f, Some(schema)))
                .await
                .map_err(scan.df_err())?;
            frames.push((df, f));
        }
        Ok(Rows {
            frame: numbered_union(scan, schema, frames)?,
            records: None,
        })
    }
}
