"""The benchmark's two jobs written by hand for DuckDB and Polars, as their users would write
them: the same columns, types, rules and zstd Parquet output as the Sluice jobs in project/.

    python3 peers.py TOOL JOB DATA_DIR OUT_DIR      TOOL: duckdb | polars, JOB: convert | etl

Writes OUT_DIR/target.parquet and, for etl, OUT_DIR/quarantine.parquet (the failing rows
with the names of the rules they failed).
"""

import os
import sys

LINEITEM_TYPES = {
    "l_orderkey": "BIGINT", "l_partkey": "BIGINT", "l_suppkey": "BIGINT",
    "l_linenumber": "INTEGER", "l_quantity": "DECIMAL(15,2)", "l_extendedprice": "DECIMAL(15,2)",
    "l_discount": "DECIMAL(15,2)", "l_tax": "DECIMAL(15,2)", "l_returnflag": "VARCHAR",
    "l_linestatus": "VARCHAR", "l_shipdate": "DATE", "l_commitdate": "DATE",
    "l_receiptdate": "DATE", "l_shipinstruct": "VARCHAR", "l_shipmode": "VARCHAR",
    "l_comment": "VARCHAR",
}
ORDERS_TYPES = {
    "o_orderkey": "BIGINT", "o_custkey": "BIGINT", "o_orderstatus": "VARCHAR",
    "o_totalprice": "DECIMAL(15,2)", "o_orderdate": "DATE", "o_orderpriority": "VARCHAR",
    "o_clerk": "VARCHAR", "o_shippriority": "INTEGER", "o_comment": "VARCHAR",
}
CONVERT_NAMES = [
    ("l_orderkey", "order_key"), ("l_partkey", "part_key"), ("l_suppkey", "supp_key"),
    ("l_linenumber", "line_number"), ("l_quantity", "quantity"),
    ("l_extendedprice", "extended_price"), ("l_discount", "discount"), ("l_tax", "tax"),
    ("l_returnflag", "return_flag"), ("l_linestatus", "line_status"),
    ("l_shipdate", "ship_date"), ("l_commitdate", "commit_date"),
    ("l_receiptdate", "receipt_date"), ("l_shipinstruct", "ship_instruct"),
    ("l_shipmode", "ship_mode"), ("l_comment", "comment"),
]
ORDER_LINE = [
    "order_key", "line_number", "customer_key", "order_date", "part_key", "supp_key",
    "quantity", "extended_price", "discount", "tax", "net_amount", "return_flag",
    "line_status", "ship_date", "commit_date", "receipt_date", "ship_mode",
]


def duckdb_job(job, data, out):
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")

    def csv(name, types):
        cols = ", ".join(f"'{k}': '{v}'" for k, v in types.items())
        return f"read_csv('{data}/{name}', header = true, columns = {{{cols}}})"

    parquet = "(FORMAT parquet, COMPRESSION zstd)"
    if job == "convert":
        select = ", ".join(f"{a} AS {b}" for a, b in CONVERT_NAMES)
        con.execute(
            f"COPY (SELECT {select} FROM {csv('lineitem.csv', LINEITEM_TYPES)}) "
            f"TO '{out}/target.parquet' {parquet}"
        )
        return
    con.execute(f"""
        CREATE TEMP TABLE lines AS
        WITH j AS (
          SELECT l_orderkey AS order_key, l_linenumber AS line_number, o_custkey AS customer_key,
                 o_orderdate AS order_date, l_partkey AS part_key, l_suppkey AS supp_key,
                 l_quantity AS quantity, l_extendedprice AS extended_price,
                 l_discount AS discount, l_tax AS tax,
                 CAST(round(l_extendedprice * (1 - l_discount) * (1 + l_tax), 2) AS DECIMAL(15,2)) AS net_amount,
                 l_returnflag AS return_flag, l_linestatus AS line_status,
                 l_shipdate AS ship_date, l_commitdate AS commit_date,
                 l_receiptdate AS receipt_date, l_shipmode AS ship_mode
          FROM {csv('lineitem_dirty.csv', LINEITEM_TYPES)}
          JOIN {csv('orders.csv', ORDERS_TYPES)} ON o_orderkey = l_orderkey)
        SELECT *, list_filter([
            CASE WHEN quantity < 1 THEN 'order_line.quantity.min' END,
            CASE WHEN quantity > 50 THEN 'order_line.quantity.max' END,
            CASE WHEN return_flag NOT IN ('A', 'N', 'R') THEN 'order_line.return_flag.enum' END,
            CASE WHEN NOT ship_date <= receipt_date THEN 'shipped_before_received' END,
            CASE WHEN NOT order_date <= ship_date THEN 'ordered_before_shipped' END
          ], lambda x: x IS NOT NULL) AS failed_rules
        FROM j""")
    cols = ", ".join(ORDER_LINE)
    con.execute(f"COPY (SELECT {cols} FROM lines WHERE len(failed_rules) = 0) TO '{out}/target.parquet' {parquet}")
    con.execute(f"COPY (SELECT * FROM lines WHERE len(failed_rules) > 0) TO '{out}/quarantine.parquet' {parquet}")


def polars_job(job, data, out):
    import polars as pl

    dec = pl.Decimal(15, 2)
    types = {"DECIMAL(15,2)": dec, "BIGINT": pl.Int64, "INTEGER": pl.Int32,
             "VARCHAR": pl.String, "DATE": pl.Date}

    def scan(name, spec):
        return pl.scan_csv(f"{data}/{name}", schema={k: types[v] for k, v in spec.items()})

    lines = scan("lineitem.csv" if job == "convert" else "lineitem_dirty.csv", LINEITEM_TYPES)
    if job == "convert":
        lines.rename(dict(CONVERT_NAMES)).sink_parquet(f"{out}/target.parquet", compression="zstd")
        return
    orders = scan("orders.csv", ORDERS_TYPES)
    c = pl.col

    def wide(name):
        return c(name).cast(pl.Decimal(38, 6))

    j = lines.join(orders, left_on="l_orderkey", right_on="o_orderkey", how="inner").select(
        c("l_orderkey").alias("order_key"), c("l_linenumber").alias("line_number"),
        c("o_custkey").alias("customer_key"), c("o_orderdate").alias("order_date"),
        c("l_partkey").alias("part_key"), c("l_suppkey").alias("supp_key"),
        c("l_quantity").alias("quantity"), c("l_extendedprice").alias("extended_price"),
        c("l_discount").alias("discount"), c("l_tax").alias("tax"),
        # Polars keeps a product at its operands' scale, so they are widened first to keep
        # it exact (as SQL's DECIMAL arithmetic does).
        (wide("l_extendedprice") * (1 - wide("l_discount")) * (1 + wide("l_tax")))
        .round(2, mode="half_away_from_zero").cast(dec).alias("net_amount"),
        c("l_returnflag").alias("return_flag"), c("l_linestatus").alias("line_status"),
        c("l_shipdate").alias("ship_date"), c("l_commitdate").alias("commit_date"),
        c("l_receiptdate").alias("receipt_date"), c("l_shipmode").alias("ship_mode"),
    )
    rules = [
        ("order_line.quantity.min", c("quantity") < 1),
        ("order_line.quantity.max", c("quantity") > 50),
        ("order_line.return_flag.enum", ~c("return_flag").is_in(["A", "N", "R"])),
        ("shipped_before_received", ~(c("ship_date") <= c("receipt_date"))),
        ("ordered_before_shipped", ~(c("order_date") <= c("ship_date"))),
    ]
    failed = pl.concat_list(
        [pl.when(cond).then(pl.lit(name)).otherwise(None) for name, cond in rules]
    ).list.drop_nulls().alias("failed_rules")
    df = j.with_columns(failed).collect()
    bad = df["failed_rules"].list.len() > 0
    df.filter(~bad).drop("failed_rules").write_parquet(f"{out}/target.parquet", compression="zstd")
    df.filter(bad).write_parquet(f"{out}/quarantine.parquet", compression="zstd")


if __name__ == "__main__":
    tool, job, data, out = sys.argv[1:5]
    os.makedirs(out, exist_ok=True)
    {"duckdb": duckdb_job, "polars": polars_job}[tool](job, data, out)
