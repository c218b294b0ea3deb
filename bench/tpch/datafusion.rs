//! The benchmark's two jobs hand-written on DataFusion 55, the engine Sluice compiles to: the
//! floor for "Sluice adds nothing". Same columns, types, rules and zstd Parquet output as the
//! Sluice jobs in `bench/tpch/project/`; run by `bench/tpch/run.sh`.
//!
//! ```text
//! cargo build --release --example tpch_datafusion --features bench-peers
//! target/release/examples/tpch_datafusion JOB DATA_DIR OUT_DIR     JOB: convert | etl
//! ```
//!
//! Writes `OUT_DIR/target.parquet` and, for `etl`, `OUT_DIR/quarantine.parquet` (the failing
//! rows with the names of the rules they failed, comma-separated). Not part of Sluice: a
//! DataFusion user's script, kept plain on purpose.

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::config::TableParquetOptions;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::error::Result;
use datafusion::prelude::{CsvReadOptions, SessionContext};

fn lineitem_schema() -> Schema {
    let money = DataType::Decimal128(15, 2);
    Schema::new(vec![
        Field::new("l_orderkey", DataType::Int64, true),
        Field::new("l_partkey", DataType::Int64, true),
        Field::new("l_suppkey", DataType::Int64, true),
        Field::new("l_linenumber", DataType::Int32, true),
        Field::new("l_quantity", money.clone(), true),
        Field::new("l_extendedprice", money.clone(), true),
        Field::new("l_discount", money.clone(), true),
        Field::new("l_tax", money, true),
        Field::new("l_returnflag", DataType::Utf8, true),
        Field::new("l_linestatus", DataType::Utf8, true),
        Field::new("l_shipdate", DataType::Date32, true),
        Field::new("l_commitdate", DataType::Date32, true),
        Field::new("l_receiptdate", DataType::Date32, true),
        Field::new("l_shipinstruct", DataType::Utf8, true),
        Field::new("l_shipmode", DataType::Utf8, true),
        Field::new("l_comment", DataType::Utf8, true),
    ])
}

fn orders_schema() -> Schema {
    Schema::new(vec![
        Field::new("o_orderkey", DataType::Int64, true),
        Field::new("o_custkey", DataType::Int64, true),
        Field::new("o_orderstatus", DataType::Utf8, true),
        Field::new("o_totalprice", DataType::Decimal128(15, 2), true),
        Field::new("o_orderdate", DataType::Date32, true),
        Field::new("o_orderpriority", DataType::Utf8, true),
        Field::new("o_clerk", DataType::Utf8, true),
        Field::new("o_shippriority", DataType::Int32, true),
        Field::new("o_comment", DataType::Utf8, true),
    ])
}

const CONVERT: &str = "SELECT l_orderkey AS order_key, l_partkey AS part_key, \
    l_suppkey AS supp_key, l_linenumber AS line_number, l_quantity AS quantity, \
    l_extendedprice AS extended_price, l_discount AS discount, l_tax AS tax, \
    l_returnflag AS return_flag, l_linestatus AS line_status, l_shipdate AS ship_date, \
    l_commitdate AS commit_date, l_receiptdate AS receipt_date, \
    l_shipinstruct AS ship_instruct, l_shipmode AS ship_mode, l_comment AS comment \
    FROM lineitem";

const ETL: &str = "SELECT *, concat_ws(',', \
      CASE WHEN quantity < 1 THEN 'order_line.quantity.min' END, \
      CASE WHEN quantity > 50 THEN 'order_line.quantity.max' END, \
      CASE WHEN return_flag NOT IN ('A', 'N', 'R') THEN 'order_line.return_flag.enum' END, \
      CASE WHEN NOT ship_date <= receipt_date THEN 'shipped_before_received' END, \
      CASE WHEN NOT order_date <= ship_date THEN 'ordered_before_shipped' END) AS failed_rules \
    FROM (SELECT l_orderkey AS order_key, l_linenumber AS line_number, \
      o_custkey AS customer_key, o_orderdate AS order_date, l_partkey AS part_key, \
      l_suppkey AS supp_key, l_quantity AS quantity, l_extendedprice AS extended_price, \
      l_discount AS discount, l_tax AS tax, \
      CAST(round(l_extendedprice * (1 - l_discount) * (1 + l_tax), 2) AS DECIMAL(15,2)) AS net_amount, \
      l_returnflag AS return_flag, l_linestatus AS line_status, l_shipdate AS ship_date, \
      l_commitdate AS commit_date, l_receiptdate AS receipt_date, l_shipmode AS ship_mode \
      FROM lineitem JOIN orders ON o_orderkey = l_orderkey)";

const ORDER_LINE: &str = "order_key, line_number, customer_key, order_date, part_key, \
    supp_key, quantity, extended_price, discount, tax, net_amount, return_flag, line_status, \
    ship_date, commit_date, receipt_date, ship_mode";

async fn write(ctx: &SessionContext, sql: &str, path: &str) -> Result<()> {
    let mut zstd = TableParquetOptions::default();
    zstd.global.compression = Some("zstd(3)".into());
    ctx.sql(sql)
        .await?
        .write_parquet(
            path,
            DataFrameWriteOptions::new().with_single_file_output(true),
            Some(zstd),
        )
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, job, data, out] = args.as_slice() else {
        eprintln!("usage: tpch_datafusion convert|etl DATA_DIR OUT_DIR");
        std::process::exit(2);
    };
    std::fs::create_dir_all(out)?;
    let ctx = SessionContext::new();
    let lineitem = if job == "convert" {
        "lineitem.csv"
    } else {
        "lineitem_dirty.csv"
    };
    let schema = lineitem_schema();
    let options = CsvReadOptions::new().has_header(true).schema(&schema);
    ctx.register_csv("lineitem", &format!("{data}/{lineitem}"), options)
        .await?;
    if job == "convert" {
        return write(&ctx, CONVERT, &format!("{out}/target.parquet")).await;
    }
    let schema = orders_schema();
    let options = CsvReadOptions::new().has_header(true).schema(&schema);
    ctx.register_csv("orders", &format!("{data}/orders.csv"), options)
        .await?;
    // Computed once, then split: valid rows to the target, the others to the quarantine.
    let lines = ctx.sql(ETL).await?.cache().await?;
    ctx.register_table("lines", lines.into_view())?;
    write(
        &ctx,
        &format!("SELECT {ORDER_LINE} FROM lines WHERE failed_rules = ''"),
        &format!("{out}/target.parquet"),
    )
    .await?;
    write(
        &ctx,
        "SELECT * FROM lines WHERE failed_rules <> ''",
        &format!("{out}/quarantine.parquet"),
    )
    .await
}
