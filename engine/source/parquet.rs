//! Parquet sources: the column types from the files' footers, and each file's rows numbered
//! by their position in the file.

use std::path::Path;

use datafusion::arrow::datatypes::Schema;
use datafusion::prelude::{DataFrame, ParquetReadOptions};

use super::{numbered_union, FileFormatReader, FileScan, Rows};
use crate::config::spec::SourceFormat;
use crate::error::Result;
use crate::store::Location;

/// The Parquet reader.
pub(super) struct Parquet;

#[async_trait::async_trait]
impl FileFormatReader for Parquet {
    fn format(&self) -> SourceFormat {
        SourceFormat::Parquet
    }

    async fn schema(&self, scan: &FileScan<'_>) -> Result<Schema> {
        for f in &scan.files {
            check_location(f).await.map_err(|why| {
                scan.error(format!(
                    "{} is not a valid Parquet file: {why}",
                    scan.shown_file(f)
                ))
            })?;
        }
        let frame = scan
            .ctx
            .read_parquet(
                scan.paths(),
                ParquetReadOptions::default().file_extension(""),
            )
            .await
            .map_err(scan.df_err())?;
        Ok(frame.schema().as_arrow().clone())
    }

    async fn rows(&self, scan: &FileScan<'_>, schema: &Schema) -> Result<Rows> {
        let mut frames: Vec<(DataFrame, &Location)> = Vec::new();
        for f in &scan.files {
            let options = ParquetReadOptions::default()
                .file_extension("")
                .schema(schema);
            let df = scan
                .ctx
                .read_parquet(f.to_data_fusion(), options)
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

/// [`check_parquet_frame`] of a local file, or of an object's first and last bytes.
async fn check_location(file: &Location) -> std::result::Result<(), String> {
    match file {
        Location::Local(path) => check_parquet_frame(path),
        Location::Object { url, store } => {
            use object_store::ObjectStoreExt;
            let path = crate::store::object_path(url);
            let len = store
                .head(&path)
                .await
                .map_err(|e| format!("cannot read: {e}"))?
                .size;
            if len < 12 {
                return Err(format!(
                    "it has {len} bytes, fewer than the 12 of an empty Parquet file"
                ));
            }
            let get = |r: std::ops::Range<u64>| {
                let (store, path) = (store.clone(), path.clone());
                async move {
                    store
                        .get_range(&path, r)
                        .await
                        .map_err(|e| format!("cannot read: {e}"))
                }
            };
            let head = get(0..4).await?;
            let tail = get(len - 8..len).await?;
            check_magic_and_footer(&head, &tail, len)?;
            let footer = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
            let meta = get(len - 8 - footer..len - 8).await?;
            check_footer(|| {
                datafusion::parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&meta)
            })
        }
    }
}

/// The magic bytes at both ends, and a footer length that fits in a file of `len` bytes.
fn check_magic_and_footer(head: &[u8], tail: &[u8], len: u64) -> std::result::Result<(), String> {
    const MAGIC: &[u8; 4] = b"PAR1";
    if head != MAGIC || &tail[4..] != MAGIC {
        return Err("it does not start and end with the Parquet magic bytes `PAR1`".into());
    }
    let footer = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if footer > len - 12 {
        return Err(format!(
            "its footer length, {footer} bytes, does not fit in the file's {len} bytes (the file is cut short or damaged)"
        ));
    }
    Ok(())
}

/// Decodes a footer (with `read`) and the Arrow schema embedded in it, catching the panics
/// arrow-ipc 59 has on some damaged `ARROW:schema` values (found by the fuzzer).
fn check_footer(
    read: impl FnOnce() -> datafusion::parquet::errors::Result<
        datafusion::parquet::file::metadata::ParquetMetaData,
    >,
) -> std::result::Result<(), String> {
    use datafusion::parquet::arrow::parquet_to_arrow_schema;
    crate::logging::catch_quietly(|| {
        let meta = read().map_err(|e| format!("its footer cannot be read: {e}"))?;
        let m = meta.file_metadata();
        parquet_to_arrow_schema(m.schema_descr(), m.key_value_metadata())
            .map(|_| ())
            .map_err(|e| format!("its schema cannot be read: {e}"))
    })
    .map_err(|panic| {
        format!("its embedded Arrow schema (`ARROW:schema` metadata) is damaged: {panic}")
    })?
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
    check_magic_and_footer(&head, &tail, len)?;
    check_footer(|| {
        datafusion::parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&f)
    })
}
