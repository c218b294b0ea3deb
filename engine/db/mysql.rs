//! MySQL and MariaDB through `mysql_async` (binary protocol): connecting (TLS, timeouts),
//! describing a source's columns from the result metadata, streaming rows, and loading with
//! batched multi-row `INSERT`s into a staging table.
//!
//! Sessions run with `time_zone = '+00:00'`, so `TIMESTAMP` values arrive in UTC and
//! `DATETIME` values are written as UTC wall-clock time.

use chrono::{Datelike, NaiveDate, Timelike};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{self as t, DataType, TimeUnit};
use mysql_async::consts::{ColumnFlags, ColumnType as MyType};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};
use tokio::sync::OwnedSemaphorePermit;

use super::columns::{Cell, RowBatcher};
use super::extract::{BatchSender, CursorValue, Extraction, Relation};
use super::kind::{Database, Load};
use super::load::Names;
use super::sink::TargetColumn;
use super::sink::{column_list, DbTarget};
use super::values::format_decimal;
use super::{Connector, DbColumn, Dialect};
use crate::config::spec::{LoadMode, SslMode};
use crate::error::{Error, Result};
use crate::model::FieldType;
use crate::report::LoadStats;
use futures::future::BoxFuture;

/// MySQL and MariaDB as a [`Database`].
pub struct Mysql;

/// MySQL's dialect.
const MY: Dialect = &Mysql;

/// Character set and collation of MySQL text columns: exact comparison.
const MYSQL_TEXT: &str = "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin";

impl Database for Mysql {
    fn quote_char(&self) -> char {
        '`'
    }

    fn field_type(&self, ty: FieldType, c: &TargetColumn) -> String {
        use FieldType as F;
        match ty {
            // A key or a bounded text needs a length in MySQL; 255 characters fit an index.
            // Binary collation: two keys equal only when their text is (the default
            // collations ignore case and trailing spaces, and would merge `abc` and `ABC`).
            F::String => match c.max_length {
                Some(n) if n <= 16_383 => format!("varchar({n}) {MYSQL_TEXT}"),
                _ if c.primary_key => format!("varchar(255) {MYSQL_TEXT}"),
                _ => format!("longtext {MYSQL_TEXT}"),
            },
            F::Int32 => "int".into(),
            F::Int64 => "bigint".into(),
            F::Float64 => "double".into(),
            F::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            F::Boolean => "tinyint(1)".into(),
            F::Date => "date".into(),
            // UTC wall-clock time with microseconds (TIMESTAMP would stop at 2038).
            F::Timestamp => "datetime(6)".into(),
            F::Time => "time(6)".into(),
        }
    }

    fn flags_type(&self) -> &'static str {
        "json"
    }

    fn hash_type(&self) -> &'static str {
        "char(64)"
    }

    /// MariaDB prints `int(11)`, `bigint(20)`; `json` is `longtext`.
    fn same_type(&self, want: &str, have: &str) -> bool {
        let strip = |s: &str| match s.split_once('(') {
            Some((base, _)) if ["int", "bigint"].contains(&base) => base.to_string(),
            _ => s.to_string(),
        };
        strip(want) == strip(have) || (want == "json" && have == "longtext")
    }

    /// MySQL compares a DATETIME with a bound date-time as a DATETIME; integers bind as
    /// integers.
    fn placeholder(&self, _n: usize, _db_type: &str, _v: CursorValue) -> String {
        "?".into()
    }

    /// `LONGTEXT`: MySQL's `TEXT` holds 64 KiB.
    fn record_type(&self) -> &'static str {
        "LONGTEXT"
    }

    fn runs_upsert(&self, runs: &str) -> String {
        format!(
            "INSERT INTO {runs} (job, target_table, run_id, record) VALUES (?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE run_id = VALUES(run_id), record = VALUES(record)"
        )
    }

    /// A name whose work tables (`<table>__sluice_stage`, `__sluice_next`, `__sluice_old`)
    /// would pass MySQL's 64-character limit.
    fn table_name_problem(&self, table: &super::TableName) -> Option<(String, String)> {
        table_name_problem(table)
    }

    super::kind::delegated_driver_fns!();

    fn table_columns<'a>(
        &'a self,
        c: &'a Connector,
        table: &'a super::TableName,
    ) -> BoxFuture<'a, Result<Option<Vec<super::sink::TableColumn>>>> {
        Box::pin(async move {
            let mut my = connect(c).await?;
            table_columns(c, &mut my.conn, table).await
        })
    }

    fn begin<'a>(&'a self, t: &'a DbTarget) -> BoxFuture<'a, Result<Box<dyn Load>>> {
        Box::pin(async move { Ok(Box::new(MyLoad::begin(t).await?) as Box<dyn Load>) })
    }
}

super::kind::async_load!(MyLoad);

/// Whether a MySQL error may go away on retry: I/O (a dropped or refused connection), a
/// closed connection, or the server codes for a killed connection (1927), a shutdown (1053),
/// a lock wait timeout (1205), a deadlock (1213) or too many connections (1040).
pub fn is_transient(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Io(_) => true,
        mysql_async::Error::Driver(d) => matches!(
            d,
            mysql_async::DriverError::ConnectionClosed | mysql_async::DriverError::PoolDisconnected
        ),
        mysql_async::Error::Server(s) => [1040, 1053, 1205, 1213, 1927].contains(&s.code),
        _ => false,
    }
}

/// An [`Error::Connection`] for `e` while doing `what`.
pub fn error(c: &Connector, what: &str, e: &mysql_async::Error) -> Error {
    c.error(what, e, is_transient(e))
}

/// An open connection holding one of the connector's slots.
pub struct MyConn {
    /// The connection.
    pub conn: Conn,
    _permit: OwnedSemaphorePermit,
    /// True for MariaDB.
    pub mariadb: bool,
}

impl MyConn {
    /// `sql` with the binary collation made NO PAD, so `abc` and `abc ` are different keys:
    /// `utf8mb4_nopad_bin` on MariaDB, `utf8mb4_0900_bin` on MySQL 8 (older MySQL has none).
    pub fn no_pad(&self, sql: &str) -> String {
        let collation = if self.mariadb {
            "utf8mb4_nopad_bin"
        } else if self.conn.server_version().0 >= 8 {
            "utf8mb4_0900_bin"
        } else {
            return sql.to_string();
        };
        sql.replace("COLLATE utf8mb4_bin", &format!("COLLATE {collation}"))
    }
}

/// Connects with the connector's TLS mode and timeout, and sets the session's time zone to
/// UTC and its statement timeout.
///
/// # Errors
/// [`Error::Connection`].
pub async fn connect(c: &Connector) -> Result<MyConn> {
    let permit = c.slot().await?;
    let opts = mysql_async::Opts::from_url(c.url())
        .map_err(|e| c.error("invalid connection URL", e, false))?;
    let mut builder = mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false);
    let ssl = match c.sslmode {
        SslMode::Disable | SslMode::Prefer => None,
        SslMode::Require => Some(
            mysql_async::SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ),
        SslMode::VerifyFull => {
            let mut o = mysql_async::SslOpts::default();
            if let Some(ca) = &c.ca_file {
                o = o.with_root_certs(vec![ca.clone().into()]);
            }
            Some(o)
        }
    };
    builder = builder.ssl_opts(ssl);
    let conn = tokio::time::timeout(c.connect_timeout, Conn::new(builder))
        .await
        .map_err(|_| {
            c.error(
                "connecting",
                format!("no answer within {:?} (connect_timeout)", c.connect_timeout),
                true,
            )
        })?
        .map_err(|e| error(c, &format!("connecting to {}", c.shown), &e))?;
    let mut my = MyConn {
        conn,
        _permit: permit,
        mariadb: false,
    };
    let version: Option<String> = my
        .conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| error(c, &format!("connecting to {}", c.shown), &e))?;
    my.mariadb = version.is_some_and(|v| v.to_ascii_lowercase().contains("mariadb"));
    my.conn
        // UTC times, and errors instead of silent truncation (a key cut to the column's
        // length could merge two keys).
        .query_drop("SET time_zone = '+00:00', sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')")
        .await
        .map_err(|e| error(c, "setting the session time zone", &e))?;
    if let Some(t) = c.statement_timeout {
        let (sql, value) = if my.mariadb {
            (
                "SET SESSION max_statement_time = ?",
                Value::Double(t.as_secs_f64()),
            )
        } else {
            (
                "SET SESSION max_execution_time = ?",
                Value::UInt(t.as_millis() as u64),
            )
        };
        my.conn
            .exec_drop(sql, vec![value])
            .await
            .map_err(|e| error(c, "setting the statement timeout", &e))?;
    }
    Ok(my)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Int,
    UInt,
    Float,
    Double,
    Decimal,
    Text,
    Blob,
    Date,
    DateTime,
    Time,
}

/// The Arrow type of a column's metadata, or `None` with a type name for the message.
fn map_column(col: &mysql_async::Column) -> std::result::Result<(DataType, Wire, String), String> {
    let unsigned = col.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    let binary = col.character_set() == 63;
    let int = |s: DataType, u: DataType, name: &str| {
        if unsigned {
            (u, Wire::UInt, format!("{name} unsigned"))
        } else {
            (s, Wire::Int, name.to_string())
        }
    };
    Ok(match col.column_type() {
        MyType::MYSQL_TYPE_TINY => int(DataType::Int8, DataType::UInt8, "tinyint"),
        MyType::MYSQL_TYPE_SHORT => int(DataType::Int16, DataType::UInt16, "smallint"),
        MyType::MYSQL_TYPE_YEAR => (DataType::Int16, Wire::Int, "year".into()),
        MyType::MYSQL_TYPE_INT24 | MyType::MYSQL_TYPE_LONG => {
            int(DataType::Int32, DataType::UInt32, "int")
        }
        MyType::MYSQL_TYPE_LONGLONG => int(DataType::Int64, DataType::UInt64, "bigint"),
        MyType::MYSQL_TYPE_FLOAT => (DataType::Float32, Wire::Float, "float".into()),
        MyType::MYSQL_TYPE_DOUBLE => (DataType::Float64, Wire::Double, "double".into()),
        MyType::MYSQL_TYPE_NEWDECIMAL | MyType::MYSQL_TYPE_DECIMAL => {
            let scale = col.decimals();
            // column_length = precision + 1 for the point (when scale > 0) + 1 for the sign
            // (when signed); see MySQL's my_decimal_length_to_precision.
            let precision =
                col.column_length() as i64 - i64::from(scale > 0) - i64::from(!unsigned);
            if !(1..=38).contains(&precision) || i64::from(scale) > precision {
                return Err(format!("decimal({precision},{scale})"));
            }
            (
                DataType::Decimal128(precision as u8, scale as i8),
                Wire::Decimal,
                format!("decimal({precision},{scale})"),
            )
        }
        MyType::MYSQL_TYPE_DATE | MyType::MYSQL_TYPE_NEWDATE => {
            (DataType::Date32, Wire::Date, "date".into())
        }
        MyType::MYSQL_TYPE_DATETIME | MyType::MYSQL_TYPE_DATETIME2 => (
            DataType::Timestamp(TimeUnit::Microsecond, None),
            Wire::DateTime,
            "datetime".into(),
        ),
        MyType::MYSQL_TYPE_TIMESTAMP | MyType::MYSQL_TYPE_TIMESTAMP2 => (
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Wire::DateTime,
            "timestamp".into(),
        ),
        MyType::MYSQL_TYPE_TIME | MyType::MYSQL_TYPE_TIME2 => (
            DataType::Time64(TimeUnit::Microsecond),
            Wire::Time,
            "time".into(),
        ),
        MyType::MYSQL_TYPE_JSON => (DataType::Utf8, Wire::Text, "json".into()),
        MyType::MYSQL_TYPE_VARCHAR
        | MyType::MYSQL_TYPE_VAR_STRING
        | MyType::MYSQL_TYPE_STRING
        | MyType::MYSQL_TYPE_ENUM
        | MyType::MYSQL_TYPE_SET
        | MyType::MYSQL_TYPE_TINY_BLOB
        | MyType::MYSQL_TYPE_MEDIUM_BLOB
        | MyType::MYSQL_TYPE_LONG_BLOB
        | MyType::MYSQL_TYPE_BLOB => {
            if binary {
                (DataType::Binary, Wire::Blob, "blob".into())
            } else {
                (DataType::Utf8, Wire::Text, "text".into())
            }
        }
        other => {
            return Err(format!("{other:?}")
                .replace("MYSQL_TYPE_", "")
                .to_lowercase())
        }
    })
}

/// The columns of a table or query, from the prepared statement's metadata.
///
/// # Errors
/// [`Error::Connection`]; [`Error::Source`] for an unsupported column type.
pub async fn describe(c: &Connector, source: &str, relation: &Relation) -> Result<Vec<DbColumn>> {
    let mut my = connect(c).await?;
    let sql = format!("SELECT * FROM {}", relation.from_sql(MY));
    let stmt = my
        .conn
        .prep(sql.as_str())
        .await
        .map_err(|e| error(c, &format!("describing source `{source}`"), &e))?;
    let mut out = Vec::new();
    let mut unsupported = Vec::new();
    for col in stmt.columns().iter() {
        let name = col.name_str().to_string();
        match map_column(col) {
            Ok((data_type, _, db_type)) => out.push(DbColumn {
                name,
                db_type,
                data_type,
            }),
            Err(what) => {
                let hint = format!("CAST({} AS CHAR)", MY.quote(&name));
                unsupported.push((name, what, hint));
            }
        }
    }
    if !unsupported.is_empty() {
        return Err(super::unsupported_types(source, c, relation, &unsupported));
    }
    Ok(out)
}

fn days_of(y: u16, m: u8, d: u8) -> std::result::Result<i32, String> {
    let date = NaiveDate::from_ymd_opt(i32::from(y), u32::from(m), u32::from(d))
        .ok_or_else(|| format!("{y:04}-{m:02}-{d:02} is not a date (a zero date?)"))?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).ok_or("epoch")?;
    Ok((date - epoch).num_days() as i32)
}

/// Decodes one MySQL value for a column of Arrow type `dt` (as [`describe`] chose it).
///
/// # Errors
/// A value of another kind than the column's (a text where an integer is due), a zero date,
/// a `TIME` that is negative or over 24 hours, text that is not UTF-8.
fn cell<'a>(dt: &DataType, v: &'a Option<Value>) -> std::result::Result<Cell<'a>, String> {
    let v = match v {
        None | Some(Value::NULL) => return Ok(Cell::Null),
        Some(v) => v,
    };
    let utf8 = |x: &'a [u8]| std::str::from_utf8(x).map_err(|e| format!("not UTF-8 text: {e}"));
    Ok(match (dt, v) {
        (_, Value::Int(i)) if dt.is_integer() => Cell::Int(i128::from(*i)),
        (_, Value::UInt(u)) if dt.is_integer() => Cell::Int(i128::from(*u)),
        (_, Value::Bytes(b)) if dt.is_integer() => Cell::Int(
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.trim().parse::<i128>().ok())
                .ok_or_else(|| format!("{v:?} is not an integer"))?,
        ),
        (_, other) if dt.is_integer() => return Err(format!("{other:?} is not an integer")),
        (DataType::Float32 | DataType::Float64, Value::Float(f)) => Cell::Float(f64::from(*f)),
        (DataType::Float32 | DataType::Float64, Value::Double(f)) => Cell::Float(*f),
        (DataType::Float32, other) => return Err(format!("{other:?} is not a float")),
        (DataType::Float64, other) => return Err(format!("{other:?} is not a double")),
        (DataType::Decimal128(..), Value::Bytes(x)) => Cell::DecimalText(utf8(x)?.into()),
        (DataType::Decimal128(..), other) => return Err(format!("{other:?} is not a decimal")),
        (DataType::Binary, Value::Bytes(x)) => Cell::Bytes(x),
        (DataType::Binary, other) => return Err(format!("{other:?} is not a blob")),
        (DataType::Date32, Value::Date(y, m, d, ..)) => Cell::Days(days_of(*y, *m, *d)?),
        (DataType::Date32, other) => return Err(format!("{other:?} is not a date")),
        (DataType::Timestamp(..), Value::Date(y, m, d, h, mi, s, us)) => {
            let days = i64::from(days_of(*y, *m, *d)?);
            let secs = days * 86_400 + i64::from(*h) * 3600 + i64::from(*mi) * 60 + i64::from(*s);
            Cell::Micros(secs * 1_000_000 + i64::from(*us))
        }
        (DataType::Timestamp(..), other) => return Err(format!("{other:?} is not a datetime")),
        (DataType::Time64(_), Value::Time(false, 0, h, m, s, us)) => Cell::TimeMicros(
            (i64::from(*h) * 3600 + i64::from(*m) * 60 + i64::from(*s)) * 1_000_000
                + i64::from(*us),
        ),
        (DataType::Time64(_), other) => {
            return Err(format!(
                "{other:?} is not a time of day (MySQL TIME may be negative or over 24 hours)"
            ))
        }
        (_, Value::Bytes(x)) => Cell::Text(utf8(x)?.into()),
        (_, other) => return Err(format!("{other:?} is not text")),
    })
}

/// A UTC timestamp as MySQL's DATETIME value (microseconds kept).
fn datetime_value(dt: &chrono::DateTime<chrono::Utc>) -> Value {
    Value::Date(
        dt.year() as u16,
        dt.month() as u8,
        dt.day() as u8,
        dt.hour() as u8,
        dt.minute() as u8,
        dt.second() as u8,
        dt.timestamp_subsec_micros(),
    )
}

/// A cursor bound as a typed MySQL value (dates and times as `Date`, compared as such).
fn cursor_param(v: CursorValue) -> Value {
    let date_time = |us: i64| match chrono::DateTime::<chrono::Utc>::from_timestamp_micros(us) {
        Some(dt) => datetime_value(&dt),
        None => Value::NULL,
    };
    match v {
        CursorValue::Int(i) => Value::Int(i),
        CursorValue::Micros(us) | CursorValue::MicrosUtc(us) => date_time(us),
        CursorValue::Days(d) => date_time(i64::from(d) * 86_400_000_000),
    }
}

/// Streams `sql`'s rows as batches.
///
/// # Errors
/// [`Error::Connection`] or a conversion error naming the row and column.
pub async fn extract(
    ext: &Extraction,
    sql: &str,
    params: &[CursorValue],
    columns: &[DbColumn],
    sender: BatchSender,
) -> Result<()> {
    let c = &ext.connector;
    let mut my = connect(c).await?;
    let what = format!("reading source `{}`", ext.source);
    let params: Vec<Value> = params.iter().map(|p| cursor_param(*p)).collect();
    let params = if params.is_empty() {
        mysql_async::Params::Empty
    } else {
        mysql_async::Params::Positional(params)
    };
    let mut result = my
        .conn
        .exec_iter(sql, params)
        .await
        .map_err(|e| error(c, &what, &e))?;
    let mut batcher = RowBatcher::new(columns, &ext.source, ext.batch_size);
    while let Some(row) = result.next().await.map_err(|e| error(c, &what, &e))? {
        for (i, (col, v)) in columns.iter().zip(row.unwrap_raw()).enumerate() {
            batcher.push(i, cell(&col.data_type, &v))?;
        }
        if let Some((arrays, n)) = batcher.end_row() {
            if !sender.send(arrays, n).await? {
                return Ok(());
            }
        }
    }
    if let Some((arrays, n)) = batcher.finish() {
        sender.send(arrays, n).await?;
    }
    Ok(())
}

/// One Arrow value as a MySQL parameter: decimals as exact text, timestamps as UTC
/// date-times, booleans as 0/1, lists as a JSON array.
fn to_value(a: &dyn Array, row: usize) -> Result<Value> {
    if a.is_null(row) {
        return Ok(Value::NULL);
    }
    Ok(match a.data_type() {
        DataType::Utf8 => Value::Bytes(a.as_string::<i32>().value(row).as_bytes().to_vec()),
        DataType::Utf8View => Value::Bytes(a.as_string_view().value(row).as_bytes().to_vec()),
        DataType::Int32 => Value::Int(a.as_primitive::<t::Int32Type>().value(row).into()),
        DataType::Int64 => Value::Int(a.as_primitive::<t::Int64Type>().value(row)),
        DataType::Float64 => Value::Double(a.as_primitive::<t::Float64Type>().value(row)),
        DataType::Decimal128(_, s) => Value::Bytes(
            format_decimal(a.as_primitive::<t::Decimal128Type>().value(row), *s).into_bytes(),
        ),
        DataType::Boolean => Value::Int(i64::from(a.as_boolean().value(row))),
        DataType::Date32 => {
            let days = a.as_primitive::<t::Date32Type>().value(row);
            let d = NaiveDate::from_ymd_opt(1970, 1, 1)
                .and_then(|e| e.checked_add_signed(chrono::TimeDelta::days(i64::from(days))))
                .ok_or_else(|| Error::Internal(format!("date {days} out of range")))?;
            Value::Date(d.year() as u16, d.month() as u8, d.day() as u8, 0, 0, 0, 0)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let us = a.as_primitive::<t::TimestampMicrosecondType>().value(row);
            let dt = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(us)
                .ok_or_else(|| Error::Internal(format!("timestamp {us} out of range")))?;
            datetime_value(&dt)
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            let us = a.as_primitive::<t::Time64MicrosecondType>().value(row);
            let secs = us / 1_000_000;
            Value::Time(
                false,
                0,
                (secs / 3600) as u8,
                ((secs / 60) % 60) as u8,
                (secs % 60) as u8,
                (us % 1_000_000) as u32,
            )
        }
        DataType::List(_) => {
            let list = a.as_list::<i32>().value(row);
            let items: Vec<serde_json::Value> = list
                .as_string::<i32>()
                .iter()
                .map(|v| serde_json::Value::String(v.unwrap_or_default().to_string()))
                .collect();
            Value::Bytes(serde_json::Value::Array(items).to_string().into_bytes())
        }
        other => {
            return Err(Error::Internal(format!(
                "no MySQL conversion for Arrow type {other}"
            )))
        }
    })
}

async fn table_columns(
    c: &Connector,
    conn: &mut Conn,
    table: &super::TableName,
) -> Result<Option<Vec<super::sink::TableColumn>>> {
    let rows: Vec<(String, String, String, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (table.schema.clone(), table.name.clone()),
        )
        .await
        .map_err(|e| error(c, "looking up the table", &e))?;
    Ok((!rows.is_empty()).then(|| {
        rows.into_iter()
            .map(|(name, db_type, nullable, key)| super::sink::TableColumn {
                name,
                db_type,
                not_null: nullable == "NO",
                primary_key: key == "PRI",
            })
            .collect()
    }))
}

/// The `record` of `job` and `key` in `sluice_runs` beside `target`, if the table and the row
/// exist.
///
/// # Errors
/// [`Error::Connection`].
pub async fn read_run_record(
    c: &Connector,
    target: &super::TableName,
    job: &str,
    key: &str,
) -> Result<Option<String>> {
    let mut my = connect(c).await?;
    let runs = super::runs::runs_table(target);
    if table_columns(c, &mut my.conn, &runs).await?.is_none() {
        return Ok(None);
    }
    my.conn
        .exec_first(
            format!(
                "SELECT record FROM {} WHERE job = ? AND target_table = ?",
                runs.quoted(MY)
            ),
            (job.to_string(), key.to_string()),
        )
        .await
        .map_err(|e| error(c, &format!("reading {runs}"), &e))
}

/// Rows per multi-row `INSERT` (bounded by MySQL's 65,535 placeholders per statement).
fn rows_per_insert(columns: usize) -> usize {
    (65_535 / columns.max(1)).clamp(1, 2_000)
}

/// A MySQL load. DDL commits implicitly in MySQL, so rows are staged in a real table
/// (`<table>__sluice_stage`, dropped at the next `begin` if a crash left it) except for
/// `append`, which inserts into the target inside one transaction.
pub struct MyLoad {
    my: MyConn,
    connector: Connector,
    into: String,
    columns: String,
    n_columns: usize,
    rows: u64,
    pending: Vec<Value>,
    pending_rows: usize,
    stage: super::TableName,
    lock: String,
    /// The target table this run created (DDL commits at once on MySQL): dropped again if the
    /// run does not commit, so a failed first run leaves no empty table behind.
    created: Option<super::TableName>,
}

/// MySQL's limit on identifiers and `GET_LOCK` names, in characters.
const MAX_NAME: usize = 64;

/// The longest suffix of the work tables a load creates beside the target.
const LONGEST_SUFFIX: &str = "__sluice_stage";

/// Why `table` cannot be a MySQL target (message, hint): its work tables' names
/// (`<table>__sluice_stage`, `__sluice_next`, `__sluice_old`) would pass the 64-character limit.
fn table_name_problem(table: &super::TableName) -> Option<(String, String)> {
    let room = MAX_NAME - LONGEST_SUFFIX.len();
    (table.name.chars().count() > room).then(|| {
        (
            format!(
                "table name `{}` has {} characters; on MySQL a target's name may have at most {room}, so that its work table `{}{LONGEST_SUFFIX}` fits MySQL's limit of {MAX_NAME}",
                table.name,
                table.name.chars().count(),
                table.name
            ),
            "choose a shorter table name".into(),
        )
    })
}

/// The `GET_LOCK` name of a target: `sluice:<schema.table>`, or its first characters and a
/// hash when that passes MySQL's 64-character limit (an error on MySQL 5.7+, a silently
/// shared lock on older servers).
fn lock_name(table: &super::TableName) -> String {
    use sha2::Digest;
    let full = format!("sluice:{table}");
    if full.chars().count() <= MAX_NAME {
        return full;
    }
    let hash = sha2::Sha256::digest(full.as_bytes());
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let head: String = full.chars().take(MAX_NAME - hex.len() - 1).collect();
    format!("{head}~{hex}")
}

impl MyLoad {
    /// Takes the target's named lock, creates or checks the table, and prepares staging.
    ///
    /// # Errors
    /// [`Error::Connection`]; [`Error::Target`] when the table differs from the model or
    /// another run holds the lock.
    pub async fn begin(t: &DbTarget) -> Result<MyLoad> {
        let c = &t.connector;
        let d = MY;
        let mut my = connect(c).await?;
        let what = format!("loading {}", t.table);
        let err = |e: mysql_async::Error| error(c, &what, &e);
        let lock = lock_name(&t.table);
        let got: Option<i64> = my
            .conn
            .exec_first("SELECT GET_LOCK(?, 30)", (lock.clone(),))
            .await
            .map_err(err)?;
        if got != Some(1) {
            return Err(Error::Target {
                path: t.shown().into(),
                message: "another run is loading this table (its lock was held for 30 s); wait for it to finish".into(),
            });
        }
        let created = match table_columns(c, &mut my.conn, &t.table).await? {
            None => {
                my.conn
                    .query_drop(my.no_pad(&t.create_sql(d)))
                    .await
                    .map_err(err)?;
                Some(t.table.clone())
            }
            Some(actual) => {
                for sql in t.schema_changes(d, &actual)? {
                    my.conn.query_drop(my.no_pad(&sql)).await.map_err(err)?;
                }
                None
            }
        };
        // DDL commits implicitly on MySQL: create the run table (when missing: a role that may
        // only write needs no CREATE) before the load's transaction.
        let runs = super::runs::runs_table(&t.table);
        if table_columns(c, &mut my.conn, &runs).await?.is_none() {
            my.conn
                .query_drop(super::runs::create_sql(d, &t.table))
                .await
                .map_err(err)?;
        }
        let stage = t.table.sibling("__sluice_stage");
        my.conn
            .query_drop(format!("DROP TABLE IF EXISTS {}", stage.quoted(d)))
            .await
            .map_err(err)?;
        let into = if t.mode == LoadMode::Append {
            t.table.quoted(d)
        } else {
            let cols = t.staging_columns(d);
            let sql = my.no_pad(&format!(
                "CREATE TABLE {} ({}) ENGINE = InnoDB",
                stage.quoted(d),
                cols
            ));
            my.conn.query_drop(sql).await.map_err(err)?;
            stage.quoted(d)
        };
        my.conn.query_drop("START TRANSACTION").await.map_err(err)?;
        Ok(MyLoad {
            my,
            connector: c.clone(),
            into,
            columns: column_list(d, &t.staged),
            n_columns: t.staged.len(),
            rows: 0,
            pending: Vec::new(),
            pending_rows: 0,
            stage,
            lock,
            created,
        })
    }

    async fn flush(&mut self) -> Result<()> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        let one = format!("({})", vec!["?"; self.n_columns].join(", "));
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            self.into,
            self.columns,
            vec![one.as_str(); self.pending_rows].join(", ")
        );
        let values = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        self.my
            .conn
            .exec_drop(sql, mysql_async::Params::Positional(values))
            .await
            .map_err(|e| error(&self.connector, "inserting rows", &e))
    }

    /// Adds a batch to the pending multi-row `INSERT`s.
    ///
    /// # Errors
    /// [`Error::Connection`].
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let per = rows_per_insert(self.n_columns);
        for row in 0..batch.num_rows() {
            for a in batch.columns() {
                self.pending.push(to_value(a.as_ref(), row)?);
            }
            self.pending_rows += 1;
            if self.pending_rows == per {
                self.flush().await?;
            }
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Sends what is pending and commits the staging transaction (for `append`, the target's
    /// rows stay uncommitted until [`MyLoad::commit`]).
    ///
    /// # Errors
    /// [`Error::Connection`].
    pub async fn finish(&mut self) -> Result<u64> {
        self.flush().await?;
        Ok(self.rows)
    }

    /// Applies the mode and commits ([`super::load::apply`]); the staging table is dropped
    /// and the target's lock released either way.
    ///
    /// # Errors
    /// [`Error::Connection`] or [`Error::Target`] (duplicate keys); the table is as before.
    pub async fn commit(mut self, t: &DbTarget, run: &super::runs::RunRow) -> Result<LoadStats> {
        let d = MY;
        let names = Names::new(d, t, self.stage.quoted(d));
        let mut session = MySession {
            conn: &mut self.my.conn,
            t,
        };
        let result = super::load::apply(&mut session, &names, t, run, self.rows).await;
        let conn = &mut self.my.conn;
        // After a failure, roll back before the DROP: MySQL commits the open transaction
        // before any DDL, which would publish what the failed statements left (the rows an
        // append staged in the target, half of a merge or scd2). After a commit it does nothing.
        let _ = conn.query_drop("ROLLBACK").await;
        let _ = conn
            .query_drop(format!("DROP TABLE IF EXISTS {}", names.stage))
            .await;
        let _ = conn
            .exec_drop("SELECT RELEASE_LOCK(?)", (self.lock.clone(),))
            .await;
        result
    }

    /// Rolls back and drops the staging table.
    pub async fn abort(mut self) {
        let d = MY;
        let _ = self.my.conn.query_drop("ROLLBACK").await;
        let _ = self
            .my
            .conn
            .query_drop(format!("DROP TABLE IF EXISTS {}", self.stage.quoted(d)))
            .await;
        if let Some(t) = &self.created {
            let _ = self
                .my
                .conn
                .query_drop(format!("DROP TABLE IF EXISTS {}", t.quoted(d)))
                .await;
        }
        let _ = self
            .my
            .conn
            .exec_drop("SELECT RELEASE_LOCK(?)", (self.lock.clone(),))
            .await;
    }
}

/// scd2 on MySQL: `UPDATE` closing the current versions of the target (`t`) joined to the
/// stage (`s`) by `join` on the key, where `condition`.
fn close_joined(n: &Names, join: &str, condition: &str) -> String {
    format!(
        "UPDATE {t} t {join} {s} s ON {on} SET t.{vt} = ?, t.{cur} = 0 \
         WHERE t.{cur} = 1 AND {condition}",
        t = n.target,
        s = n.stage,
        on = n.on,
        vt = n.valid_to,
        cur = n.is_current
    )
}

/// A MySQL/MariaDB load's transaction, for the load modes ([`super::load`]). The staged rows
/// are committed before the mode applies (the staging table is a real table); `overwrite`
/// swaps tables with one atomic `RENAME`, which MySQL cannot roll back, so its record follows
/// the swap.
struct MySession<'a> {
    conn: &'a mut Conn,
    t: &'a DbTarget,
}

impl MySession<'_> {
    /// A statement failed before anything was published.
    fn err(&self, e: mysql_async::Error) -> Error {
        error(
            &self.t.connector,
            &format!("committing {}", self.t.table),
            &e,
        )
    }

    /// The connection failed during the COMMIT (or the RENAME) itself.
    fn unknown(&self, e: mysql_async::Error) -> Error {
        super::postgres::commit_unknown(&self.t.connector, &self.t.shown(), &e.to_string())
    }
}

impl super::load::LoadSession for MySession<'_> {
    async fn execute(
        &mut self,
        sql: &str,
        started: Option<&chrono::DateTime<chrono::Utc>>,
    ) -> Result<u64> {
        let done = match started {
            Some(t) => self.conn.exec_drop(sql, vec![datetime_value(t)]).await,
            None => self.conn.query_drop(sql).await,
        };
        done.map_err(|e| self.err(e))?;
        Ok(self.conn.affected_rows())
    }

    async fn count(&mut self, sql: &str) -> Result<u64> {
        let n: Option<i64> = self.conn.query_first(sql).await.map_err(|e| self.err(e))?;
        Ok(n.unwrap_or(0) as u64)
    }

    async fn record(&mut self, run: &super::runs::RunRow) -> Result<()> {
        let sql = super::runs::upsert_sql(MY, &self.t.table);
        let params = (
            run.job.clone(),
            run.target.clone(),
            run.run_id.clone(),
            run.record.clone(),
        );
        self.conn
            .exec_drop(sql, params)
            .await
            .map_err(|e| self.err(e))
    }

    async fn commit(&mut self) -> Result<()> {
        self.conn
            .query_drop("COMMIT")
            .await
            .map_err(|e| self.unknown(e))
    }

    /// The staged rows are in; make them durable before the mode applies, in a transaction
    /// of its own.
    async fn prepare(&mut self, mode: LoadMode) -> Result<()> {
        if mode != LoadMode::Append {
            for sql in ["COMMIT", "START TRANSACTION"] {
                self.conn.query_drop(sql).await.map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    async fn publish(&mut self, sql: &str) -> Result<()> {
        self.conn.query_drop(sql).await.map_err(|e| self.unknown(e))
    }

    fn started_param(&self) -> &'static str {
        "?"
    }

    /// `ON DUPLICATE KEY UPDATE`: affected rows are 1 per insert, 2 per changed row, 0 per
    /// unchanged row (see [`LoadSession::updated_rows`](super::load::LoadSession::updated_rows)).
    fn upsert(&self, n: &Names) -> String {
        let update = if n.non_key.is_empty() {
            format!("{k} = {k}", k = n.first_key)
        } else {
            n.non_key
                .iter()
                .map(|q| format!("{q} = VALUES({q})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "INSERT INTO {t} ({cols}) SELECT {cols} FROM {s} ON DUPLICATE KEY UPDATE {update}",
            t = n.target,
            cols = n.cols,
            s = n.stage
        )
    }

    fn updated_rows(&self, affected: u64, inserted: u64) -> u64 {
        affected.saturating_sub(inserted) / 2
    }

    /// A new table built like the target, filled from the stage, swapped in by one atomic
    /// `RENAME`.
    fn swap(&self, n: &Names) -> Option<super::load::Swap> {
        let d = MY;
        let next = self.t.table.sibling("__sluice_next").quoted(d);
        let old = self.t.table.sibling("__sluice_old").quoted(d);
        let target = &n.target;
        Some(super::load::Swap {
            prepare: vec![
                format!("DROP TABLE IF EXISTS {next}, {old}"),
                format!("CREATE TABLE {next} LIKE {target}"),
            ],
            fill: format!(
                "INSERT INTO {next} ({cols}) SELECT {cols} FROM {s}",
                cols = n.cols,
                s = n.stage
            ),
            publish: format!("RENAME TABLE {target} TO {old}, {next} TO {target}"),
            cleanup: format!("DROP TABLE IF EXISTS {old}"),
        })
    }

    // The scd2 and delete statements join the stage instead of the standard `EXISTS`
    // subqueries: MariaDB before 11.1 does not turn a subquery in an UPDATE or DELETE into a
    // semi-join, and the staging table has no index.

    fn delete_missing(&self, n: &Names) -> String {
        format!(
            "DELETE t FROM {} t LEFT JOIN {} s ON {} WHERE s.{} IS NULL",
            n.target, n.stage, n.on, n.first_key
        )
    }

    fn close_changed(&self, n: &Names) -> String {
        let h = &n.row_hash;
        close_joined(n, "JOIN", &format!("t.{h} <> s.{h}"))
    }

    fn close_missing(&self, n: &Names) -> String {
        close_joined(n, "LEFT JOIN", &format!("s.{} IS NULL", n.first_key))
    }

    fn insert_versions(&self, n: &Names) -> String {
        format!(
            "INSERT INTO {t} ({cols}, {vf}, {vt}, {cur}) SELECT {s_cols}, ?, NULL, 1 \
             FROM {s} s LEFT JOIN {t} t ON {on} AND t.{cur} = 1 WHERE t.{k} IS NULL",
            t = n.target,
            cols = n.cols,
            vf = n.valid_from,
            vt = n.valid_to,
            cur = n.is_current,
            s_cols = n.s_cols,
            s = n.stage,
            on = n.on,
            k = n.first_key
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::TableName;
    use crate::db::Database;

    #[test]
    fn long_lock_names_are_cut_with_a_hash() {
        let t = |n: &str| TableName::parse(n).unwrap();
        assert_eq!(super::lock_name(&t("db.flights")), "sluice:db.flights");
        let long = t(&format!("{}.{}", "s".repeat(40), "t".repeat(40)));
        let other = t(&format!("{}.{}", "s".repeat(40), "u".repeat(40)));
        assert_eq!(super::lock_name(&long).chars().count(), 64);
        assert_ne!(super::lock_name(&long), super::lock_name(&other));
    }

    #[test]
    fn table_names_whose_work_tables_would_not_fit_are_refused() {
        let fits = TableName::parse(&"t".repeat(50)).unwrap();
        let too_long = TableName::parse(&"t".repeat(51)).unwrap();
        assert!(super::Mysql.table_name_problem(&fits).is_none());
        assert!(super::Mysql.table_name_problem(&too_long).is_some());
        assert!(super::super::postgres::Postgres
            .table_name_problem(&too_long)
            .is_none());
    }
}
