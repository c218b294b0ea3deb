//! Throughput of Sluice's tolerant CSV reader against DataFusion's own CSV reader on clean
//! files, both producing every column as text (what the mapping compiler needs).
//!
//!     cargo bench --bench csv_reader [-- ROUNDS]     (default 5 rounds)
//!
//! Inputs: the bundled flights.csv.gz (336,776 rows, 19 columns), gzipped as shipped and
//! decompressed into a temporary file. Each round runs both readers on both inputs,
//! alternating, so machine noise hits both alike; the table shows the median per reader and
//! the tolerant/DataFusion time ratio (1.10 = 10% slower). A third line, `csv crate`, is the
//! floor: the csv crate alone reading every record, building no arrays; `csv+limit` is that
//! floor read through the record-size limit (`max_record_bytes`), whose cost is the difference.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::prelude::{CsvReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use sluice::config::spec::Compression;
use sluice::csv_reader::{self, CsvFile, CsvOptions, OnMalformed, QuoteMode};

fn session() -> SessionContext {
    SessionContext::new_with_config(
        SessionConfig::new()
            .with_target_partitions(1)
            .set_bool("datafusion.optimizer.repartition_file_scans", false),
    )
}

async fn count(df: datafusion::prelude::DataFrame) -> u64 {
    let mut s = df.execute_stream().await.expect("stream");
    let mut n = 0;
    while let Some(b) = s.next().await {
        n += b.expect("batch").num_rows() as u64;
    }
    n
}

async fn datafusion_reader(path: &Path, columns: &[String]) -> u64 {
    let schema = Schema::new(
        columns
            .iter()
            .map(|c| Field::new(c, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    );
    let gz = path.extension().is_some_and(|e| e == "gz");
    let options = CsvReadOptions::new()
        .schema(&schema)
        .file_extension("")
        .file_compression_type(if gz {
            FileCompressionType::GZIP
        } else {
            FileCompressionType::UNCOMPRESSED
        });
    let ctx = session();
    let df = ctx
        .read_csv(path.to_string_lossy().to_string(), options)
        .await
        .expect("read_csv");
    count(df).await
}

async fn tolerant_reader(path: &Path, columns: &[String]) -> u64 {
    let ctx = session();
    let table = csv_reader::table(
        vec![CsvFile {
            location: csv_reader::Location::Local(path.to_path_buf()),
            shown: "flights.csv".into(),
            partition_values: Vec::new(),
        }],
        columns.to_vec(),
        CsvOptions {
            delimiter: b',',
            quote: b'"',
            has_header: true,
            compression: Compression::Auto,
            on_malformed: OnMalformed::Quarantine,
            quote_mode: QuoteMode::Strict,
            batch_size: 8192,
            max_record_bytes: sluice::record_limit::DEFAULT_MAX_RECORD_BYTES,
        },
        None,
        1,
        Arc::new(AtomicU64::new(0)),
    )
    .expect("table");
    count(ctx.read_table(Arc::new(table)).expect("read_table")).await
}

/// The floor: the csv crate alone reading every record (no Arrow arrays, no checks).
fn csv_crate_only(path: &Path) -> u64 {
    let input = csv_reader::open_decoded(
        &csv_reader::Location::Local(path.to_path_buf()),
        Compression::Auto,
    )
    .expect("open");
    let mut r = csv::ReaderBuilder::new()
        .buffer_capacity(256 * 1024)
        .from_reader(input);
    let mut rec = csv::ByteRecord::new();
    let mut n = 0;
    while r.read_byte_record(&mut rec).expect("record") {
        n += 1;
    }
    n
}

/// The floor read through the record-size limit (`RecordLimit`, default 16 MiB): its cost is
/// this line minus the floor.
fn csv_crate_limited(path: &Path) -> u64 {
    let input = csv_reader::open_decoded(
        &csv_reader::Location::Local(path.to_path_buf()),
        Compression::Auto,
    )
    .expect("open");
    let cuts = std::rc::Rc::new(std::cell::RefCell::new(
        sluice::record_limit::Cuts::default(),
    ));
    let limited = sluice::record_limit::RecordLimit::new(
        input,
        sluice::record_limit::DEFAULT_MAX_RECORD_BYTES,
        b',',
        b'"',
        cuts,
    );
    let mut r = csv::ReaderBuilder::new()
        .buffer_capacity(256 * 1024)
        .from_reader(limited);
    let mut rec = csv::ByteRecord::new();
    let mut n = 0;
    while r.read_byte_record(&mut rec).expect("record") {
        n += 1;
    }
    n
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let gz = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/nycflights13/flights.csv.gz");
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("flights.csv");
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&gz).expect("sample"))
        .read_to_end(&mut text)
        .expect("gunzip");
    std::fs::File::create(&plain)
        .and_then(|mut f| f.write_all(&text))
        .expect("write");
    let (header, _) = csv_reader::sample(
        &CsvFile {
            location: csv_reader::Location::Local(plain.clone()),
            shown: "flights.csv".into(),
            partition_values: Vec::new(),
        },
        &CsvOptions {
            delimiter: b',',
            quote: b'"',
            has_header: true,
            compression: Compression::None,
            on_malformed: OnMalformed::Quarantine,
            quote_mode: QuoteMode::Strict,
            batch_size: 8192,
            max_record_bytes: sluice::record_limit::DEFAULT_MAX_RECORD_BYTES,
        },
        1,
    )
    .expect("header");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // For profiling: `PROFILE_TOLERANT=1` runs only the tolerant reader on the plain file.
    if std::env::var_os("PROFILE_TOLERANT").is_some() {
        for _ in 0..rounds {
            rt.block_on(tolerant_reader(&plain, &header));
        }
        return;
    }
    println!(
        "{:<14} {:<10} {:>10} {:>12} {:>12}",
        "input", "reader", "rows", "median_s", "rows_per_s"
    );
    for (label, path) in [("flights.csv", &plain), ("flights.csv.gz", &gz)] {
        let mut df_times = Vec::new();
        let mut tol_times = Vec::new();
        let mut floor_times = Vec::new();
        let mut limited_times = Vec::new();
        let mut rows = (0, 0);
        for _ in 0..rounds {
            let t = Instant::now();
            rows.0 = rt.block_on(datafusion_reader(path, &header));
            df_times.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            rows.1 = rt.block_on(tolerant_reader(path, &header));
            tol_times.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            assert_eq!(csv_crate_only(path), rows.1);
            floor_times.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            assert_eq!(csv_crate_limited(path), rows.1);
            limited_times.push(t.elapsed().as_secs_f64());
        }
        assert_eq!(rows.0, rows.1, "both readers see every row");
        let (d, s) = (median(&mut df_times), median(&mut tol_times));
        println!(
            "{:<14} {:<10} {:>10} {:>12.3} {:>12.0}",
            label,
            "datafusion",
            rows.0,
            d,
            rows.0 as f64 / d
        );
        println!(
            "{:<14} {:<10} {:>10} {:>12.3} {:>12.0}",
            label,
            "tolerant",
            rows.1,
            s,
            rows.1 as f64 / s
        );
        let f = median(&mut floor_times);
        println!(
            "{:<14} {:<10} {:>10} {:>12.3} {:>12.0}",
            label,
            "csv crate",
            rows.1,
            f,
            rows.1 as f64 / f
        );
        let l = median(&mut limited_times);
        println!(
            "{:<14} {:<10} {:>10} {:>12.3} {:>12.0}",
            label,
            "csv+limit",
            rows.1,
            l,
            rows.1 as f64 / l
        );
        println!("{:<14} tolerant/datafusion time ratio: {:.3}", label, s / d);
    }
}
