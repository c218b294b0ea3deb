//! The tolerant CSV reader (with the record-size limit) on any bytes: every record is either
//! a row or a malformed record, never a panic. The first two bytes pick the delimiter and
//! quote, the third the header flag and a small `max_record_bytes`.
#![no_main]

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use sluice::config::spec::Compression;
use sluice::csv_reader::{self, CsvFile, CsvOptions, OnMalformed, QuoteMode};

fuzz_target!(|data: &[u8]| {
    let [d, q, flags, body @ ..] = data else {
        return;
    };
    let options = CsvOptions {
        delimiter: [b',', b';', b'\t', b'|'][usize::from(d % 4)],
        quote: [b'"', b'\''][usize::from(q % 2)],
        has_header: flags & 1 == 1,
        compression: Compression::None,
        on_malformed: OnMalformed::Quarantine,
        quote_mode: if flags & 2 == 2 { QuoteMode::Lenient } else { QuoteMode::Strict },
        batch_size: 1 + usize::from(flags >> 4),
        max_record_bytes: 16 + usize::from(flags >> 1) * 8,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.csv");
    std::fs::write(&path, body).unwrap();
    let file = CsvFile {
        path,
        shown: "f.csv".into(),
    };
    let Ok((columns, _)) = csv_reader::sample(&file, &options, 100) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let table = csv_reader::table(
            vec![file],
            columns,
            options,
            None,
            1,
            Arc::new(AtomicU64::new(0)),
        )
        .unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        if ctx.register_table("t", Arc::new(table)).is_ok() {
            if let Ok(df) = ctx.sql("SELECT * FROM t").await {
                let _ = df.collect().await;
            }
        }
    });
});
