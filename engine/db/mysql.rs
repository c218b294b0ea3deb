//! MySQL and MariaDB through `mysql_async` (binary protocol): connecting (TLS, timeouts),
//! describing a source's columns from the result metadata, streaming rows, and loading with
//! batched multi-row `INSERT`s into a staging table.
//!
//! Sessions run with `time_zone = '+00:00'`, so `TIMESTAMP` values arrive in UTC and
//! `DATETIME` values are written as UTC wall-clock time.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate, Timelike};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, Int8Builder, RecordBatch,
    StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder, UInt16Builder,
    UInt32Builder, UInt64Builder, UInt8Builder,
};
use datafusion::arrow::datatypes::{self as t, DataType, TimeUnit};
use mysql_async::consts::{ColumnFlags, ColumnType as MyType};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};
use tokio::sync::OwnedSemaphorePermit;

use super::extract::{BatchSender, CursorValue, Extraction, Relation};
use super::sink::{column_list, DbTarget};
use super::values::{format_decimal, parse_decimal};
use super::{Connector, DbColumn, Dialect};
use crate::config::spec::{LoadMode, SslMode};
use crate::error::{Error, Result};
use crate::report::LoadStats;

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
    let sql = format!("SELECT * FROM {}", relation.from_sql(Dialect::Mysql));
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
                let hint = format!("CAST({} AS CHAR)", Dialect::Mysql.quote(&name));
                unsupported.push((name, what, hint));
            }
        }
    }
    if !unsupported.is_empty() {
        return Err(super::unsupported_types(source, c, relation, &unsupported));
    }
    Ok(out)
}

enum Builder {
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Dec(Decimal128Builder, u8, i8),
    Text(StringBuilder),
    Blob(BinaryBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder),
}

fn days_of(y: u16, m: u8, d: u8) -> std::result::Result<i32, String> {
    let date = NaiveDate::from_ymd_opt(i32::from(y), u32::from(m), u32::from(d))
        .ok_or_else(|| format!("{y:04}-{m:02}-{d:02} is not a date (a zero date?)"))?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).ok_or("epoch")?;
    Ok((date - epoch).num_days() as i32)
}

impl Builder {
    fn new(dt: &DataType) -> Builder {
        match dt {
            DataType::Int8 => Builder::I8(Int8Builder::new()),
            DataType::Int16 => Builder::I16(Int16Builder::new()),
            DataType::Int32 => Builder::I32(Int32Builder::new()),
            DataType::Int64 => Builder::I64(Int64Builder::new()),
            DataType::UInt8 => Builder::U8(UInt8Builder::new()),
            DataType::UInt16 => Builder::U16(UInt16Builder::new()),
            DataType::UInt32 => Builder::U32(UInt32Builder::new()),
            DataType::UInt64 => Builder::U64(UInt64Builder::new()),
            DataType::Float32 => Builder::F32(Float32Builder::new()),
            DataType::Float64 => Builder::F64(Float64Builder::new()),
            DataType::Decimal128(p, s) => {
                Builder::Dec(Decimal128Builder::new().with_data_type(dt.clone()), *p, *s)
            }
            DataType::Binary => Builder::Blob(BinaryBuilder::new()),
            DataType::Date32 => Builder::Date(Date32Builder::new()),
            DataType::Timestamp(_, tz) => {
                Builder::Ts(TimestampMicrosecondBuilder::new().with_timezone_opt(tz.clone()))
            }
            DataType::Time64(_) => Builder::Time(Time64MicrosecondBuilder::new()),
            _ => Builder::Text(StringBuilder::new()),
        }
    }

    fn push(&mut self, v: Option<Value>) -> std::result::Result<(), String> {
        let v = match v {
            None | Some(Value::NULL) => {
                self.null();
                return Ok(());
            }
            Some(v) => v,
        };
        let int = |v: &Value| -> std::result::Result<i128, String> {
            match v {
                Value::Int(i) => Ok(i128::from(*i)),
                Value::UInt(u) => Ok(i128::from(*u)),
                Value::Bytes(b) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.trim().parse::<i128>().ok())
                    .ok_or_else(|| format!("{v:?} is not an integer")),
                other => Err(format!("{other:?} is not an integer")),
            }
        };
        // The integer, checked against the column's width.
        fn fit<T: TryFrom<i128>>(n: i128) -> std::result::Result<T, String> {
            T::try_from(n).map_err(|_| format!("{n} is out of range"))
        }
        match self {
            Builder::I8(b) => b.append_value(fit(int(&v)?)?),
            Builder::I16(b) => b.append_value(fit(int(&v)?)?),
            Builder::I32(b) => b.append_value(fit(int(&v)?)?),
            Builder::I64(b) => b.append_value(fit(int(&v)?)?),
            Builder::U8(b) => b.append_value(fit(int(&v)?)?),
            Builder::U16(b) => b.append_value(fit(int(&v)?)?),
            Builder::U32(b) => b.append_value(fit(int(&v)?)?),
            Builder::U64(b) => b.append_value(fit(int(&v)?)?),
            Builder::F32(b) => match v {
                Value::Float(f) => b.append_value(f),
                Value::Double(f) => b.append_value(f as f32),
                other => return Err(format!("{other:?} is not a float")),
            },
            Builder::F64(b) => match v {
                Value::Double(f) => b.append_value(f),
                Value::Float(f) => b.append_value(f64::from(f)),
                other => return Err(format!("{other:?} is not a double")),
            },
            Builder::Dec(b, p, s) => match v {
                Value::Bytes(x) => b.append_value(parse_decimal(
                    std::str::from_utf8(&x).map_err(|e| e.to_string())?,
                    *p,
                    *s,
                )?),
                other => return Err(format!("{other:?} is not a decimal")),
            },
            Builder::Text(b) => match v {
                Value::Bytes(x) => b.append_value(
                    std::str::from_utf8(&x).map_err(|e| format!("not UTF-8 text: {e}"))?,
                ),
                other => return Err(format!("{other:?} is not text")),
            },
            Builder::Blob(b) => match v {
                Value::Bytes(x) => b.append_value(x),
                other => return Err(format!("{other:?} is not a blob")),
            },
            Builder::Date(b) => match v {
                Value::Date(y, m, d, ..) => b.append_value(days_of(y, m, d)?),
                other => return Err(format!("{other:?} is not a date")),
            },
            Builder::Ts(b) => match v {
                Value::Date(y, m, d, h, mi, s, us) => {
                    let days = i64::from(days_of(y, m, d)?);
                    let secs =
                        days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s);
                    b.append_value(secs * 1_000_000 + i64::from(us))
                }
                other => return Err(format!("{other:?} is not a datetime")),
            },
            Builder::Time(b) => match v {
                Value::Time(false, 0, h, m, s, us) => b.append_value(
                    (i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s)) * 1_000_000
                        + i64::from(us),
                ),
                other => {
                    return Err(format!(
                    "{other:?} is not a time of day (MySQL TIME may be negative or over 24 hours)"
                ))
                }
            },
        }
        Ok(())
    }

    fn null(&mut self) {
        match self {
            Builder::I8(b) => b.append_null(),
            Builder::I16(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::U8(b) => b.append_null(),
            Builder::U16(b) => b.append_null(),
            Builder::U32(b) => b.append_null(),
            Builder::U64(b) => b.append_null(),
            Builder::F32(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::Dec(b, ..) => b.append_null(),
            Builder::Text(b) => b.append_null(),
            Builder::Blob(b) => b.append_null(),
            Builder::Date(b) => b.append_null(),
            Builder::Ts(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::I8(b) => Arc::new(b.finish()),
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::U8(b) => Arc::new(b.finish()),
            Builder::U16(b) => Arc::new(b.finish()),
            Builder::U32(b) => Arc::new(b.finish()),
            Builder::U64(b) => Arc::new(b.finish()),
            Builder::F32(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Dec(b, ..) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Blob(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Ts(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
        }
    }
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
    let batch = ext.batch_size.max(1);
    let new = || -> Vec<Builder> {
        columns
            .iter()
            .map(|col| Builder::new(&col.data_type))
            .collect()
    };
    let mut builders = new();
    let mut n = 0;
    let mut row_no = 0u64;
    while let Some(row) = result.next().await.map_err(|e| error(c, &what, &e))? {
        row_no += 1;
        for (i, (b, v)) in builders.iter_mut().zip(row.unwrap_raw()).enumerate() {
            b.push(v)
                .map_err(|m| super::extract::value_error(&ext.source, row_no, &columns[i], &m))?;
        }
        n += 1;
        if n == batch {
            let arrays = builders.iter_mut().map(Builder::finish).collect();
            if !sender.send(arrays, n).await? {
                return Ok(());
            }
            n = 0;
        }
    }
    if n > 0 || row_no == 0 {
        let arrays = builders.iter_mut().map(Builder::finish).collect();
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
                runs.quoted(Dialect::Mysql)
            ),
            (job.to_string(), key.to_string()),
        )
        .await
        .map_err(|e| error(c, &format!("reading {runs}"), &e))
}

/// The columns of a table (name, `COLUMN_TYPE`, NOT NULL), or `None` when it does not exist.
///
/// # Errors
/// [`Error::Connection`].
pub async fn inspect_columns(
    c: &Connector,
    table: &super::TableName,
) -> Result<Option<Vec<super::sink::TableColumn>>> {
    let mut my = connect(c).await?;
    table_columns(c, &mut my.conn, table).await
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
pub fn table_name_problem(
    kind: crate::config::spec::ConnectionKind,
    table: &super::TableName,
) -> Option<(String, String)> {
    let room = MAX_NAME - LONGEST_SUFFIX.len();
    (kind == crate::config::spec::ConnectionKind::Mysql && table.name.chars().count() > room).then(
        || {
            (
                format!(
                    "table name `{}` has {} characters; on MySQL a target's name may have at most {room}, so that its work table `{}{LONGEST_SUFFIX}` fits MySQL's limit of {MAX_NAME}",
                    table.name,
                    table.name.chars().count(),
                    table.name
                ),
                "choose a shorter table name".into(),
            )
        },
    )
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
        let d = Dialect::Mysql;
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

    /// Applies the mode and commits.
    ///
    /// # Errors
    /// [`Error::Connection`] or [`Error::Target`] (duplicate keys); the table is as before.
    pub async fn commit(mut self, t: &DbTarget, run: &super::runs::RunRow) -> Result<LoadStats> {
        let d = Dialect::Mysql;
        let sql = CommitSql {
            c: &self.connector,
            t,
            target: t.table.quoted(d),
            stage: self.stage.quoted(d),
            cols: self.columns.clone(),
            on: super::sink::key_join(d, "s", "t", &t.key),
            record_sql: super::runs::upsert_sql(d, &t.table),
            record_params: (
                run.job.clone(),
                run.target.clone(),
                run.run_id.clone(),
                run.record.clone(),
            ),
        };
        let conn = &mut self.my.conn;
        if t.mode != LoadMode::Append {
            // The staged rows are in; make them durable before the swap.
            conn.query_drop("COMMIT").await.map_err(|e| sql.err(e))?;
        }
        if matches!(t.mode, LoadMode::Merge | LoadMode::Scd2) {
            sql.refuse_duplicate_keys(conn).await?;
        }
        let stats = match t.mode {
            LoadMode::Append => {
                sql.record_and_commit(conn).await?;
                LoadStats {
                    inserted: self.rows,
                    ..Default::default()
                }
            }
            LoadMode::Overwrite => sql.overwrite(conn).await?,
            LoadMode::Merge => sql.merge(conn, self.rows).await?,
            LoadMode::Scd2 => sql.scd2(conn).await?,
        };
        let _ = conn
            .query_drop(format!("DROP TABLE IF EXISTS {}", sql.stage))
            .await;
        let _ = conn
            .exec_drop("SELECT RELEASE_LOCK(?)", (self.lock.clone(),))
            .await;
        Ok(stats)
    }

    /// Rolls back and drops the staging table.
    pub async fn abort(mut self) {
        let d = Dialect::Mysql;
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

/// The statements of one MySQL/MariaDB commit, per load mode. Each mode ends with the run's
/// record in the same transaction as its changes (overwrite: right after the atomic
/// `RENAME`, which MySQL cannot roll back).
struct CommitSql<'a> {
    c: &'a Connector,
    t: &'a DbTarget,
    /// The target table, quoted.
    target: String,
    /// The staging table, quoted.
    stage: String,
    /// The staged columns, quoted, comma-separated.
    cols: String,
    /// `s.k = t.k AND ...` over the model's key.
    on: String,
    record_sql: String,
    record_params: (String, String, String, String),
}

impl CommitSql<'_> {
    /// A statement failed before anything was published.
    fn err(&self, e: mysql_async::Error) -> Error {
        error(self.c, &format!("committing {}", self.t.table), &e)
    }

    /// The connection failed during the COMMIT (or the RENAME) itself.
    fn unknown(&self, e: mysql_async::Error) -> Error {
        super::postgres::commit_unknown(self.c, &self.t.shown(), &e.to_string())
    }

    /// Writes the run's record (the load's facts, by run id).
    async fn record(&self, conn: &mut Conn) -> Result<()> {
        conn.exec_drop(&self.record_sql, self.record_params.clone())
            .await
            .map_err(|e| self.err(e))
    }

    /// Writes the run's record and commits the transaction, between the crash points.
    async fn record_and_commit(&self, conn: &mut Conn) -> Result<()> {
        self.record(conn).await?;
        crate::commit::crash_point("before_publish");
        conn.query_drop("COMMIT")
            .await
            .map_err(|e| self.unknown(e))?;
        crate::commit::crash_point("after_publish");
        Ok(())
    }

    /// Merge and SCD2 need one staged row per key.
    async fn refuse_duplicate_keys(&self, conn: &mut Conn) -> Result<()> {
        let key = self.t.key_list(Dialect::Mysql);
        let stage = &self.stage;
        let dups: Option<i64> = conn
            .query_first(format!(
                "SELECT count(*) FROM (SELECT 1 FROM {stage} GROUP BY {key} HAVING count(*) > 1) d"
            ))
            .await
            .map_err(|e| self.err(e))?;
        if let Some(n) = dups.filter(|n| *n > 0) {
            let _ = conn
                .query_drop(format!("DROP TABLE IF EXISTS {stage}"))
                .await;
            return Err(super::sink::duplicate_keys(self.t, n as u64));
        }
        Ok(())
    }

    /// A new table built like the target, filled from the stage, swapped in by one atomic
    /// `RENAME`.
    async fn overwrite(&self, conn: &mut Conn) -> Result<LoadStats> {
        let d = Dialect::Mysql;
        let (target, stage, cols) = (&self.target, &self.stage, &self.cols);
        let before: Option<i64> = conn
            .query_first(format!("SELECT count(*) FROM {target}"))
            .await
            .map_err(|e| self.err(e))?;
        let next = self.t.table.sibling("__sluice_next").quoted(d);
        let old = self.t.table.sibling("__sluice_old").quoted(d);
        for statement in [
            format!("DROP TABLE IF EXISTS {next}, {old}"),
            format!("CREATE TABLE {next} LIKE {target}"),
            format!("INSERT INTO {next} ({cols}) SELECT {cols} FROM {stage}"),
        ] {
            conn.query_drop(statement).await.map_err(|e| self.err(e))?;
        }
        let inserted = conn.affected_rows();
        conn.query_drop(format!(
            "RENAME TABLE {target} TO {old}, {next} TO {target}"
        ))
        .await
        .map_err(|e| self.unknown(e))?;
        // RENAME is not transactional: the record follows it (an overwrite loaded twice
        // leaves the same table).
        self.record(conn).await?;
        conn.query_drop(format!("DROP TABLE IF EXISTS {old}"))
            .await
            .map_err(|e| self.err(e))?;
        Ok(LoadStats {
            inserted,
            deleted: before.unwrap_or(0) as u64,
            ..Default::default()
        })
    }

    /// Upsert by key (`ON DUPLICATE KEY UPDATE`); with `delete_missing`, target rows whose
    /// key was not staged are deleted.
    async fn merge(&self, conn: &mut Conn, rows: u64) -> Result<LoadStats> {
        let d = Dialect::Mysql;
        let (target, stage, cols, on) = (&self.target, &self.stage, &self.cols, &self.on);
        let mut stats = LoadStats::default();
        let matched: Option<i64> = conn
            .query_first(format!(
                "SELECT count(*) FROM {stage} s JOIN {target} t ON {on}"
            ))
            .await
            .map_err(|e| self.err(e))?;
        let non_key: Vec<String> = self
            .t
            .staged
            .iter()
            .filter(|col| !self.t.key.contains(&col.name))
            .map(|col| d.quote(&col.name))
            .collect();
        let first_key = d.quote(&self.t.key[0]);
        let update = if non_key.is_empty() {
            format!("{first_key} = {first_key}")
        } else {
            non_key
                .iter()
                .map(|q| format!("{q} = VALUES({q})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        conn.query_drop("START TRANSACTION")
            .await
            .map_err(|e| self.err(e))?;
        conn.query_drop(format!(
            "INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage} ON DUPLICATE KEY UPDATE {update}"
        ))
        .await
        .map_err(|e| self.err(e))?;
        // Affected rows: 1 per insert, 2 per changed row, 0 per unchanged row.
        let affected = conn.affected_rows();
        stats.inserted = rows.saturating_sub(matched.unwrap_or(0) as u64);
        stats.updated = affected.saturating_sub(stats.inserted) / 2;
        if self.t.delete_missing {
            conn.query_drop(format!(
                "DELETE t FROM {target} t LEFT JOIN {stage} s ON {on} WHERE s.{first_key} IS NULL"
            ))
            .await
            .map_err(|e| self.err(e))?;
            stats.deleted = conn.affected_rows();
        }
        self.record_and_commit(conn).await?;
        Ok(stats)
    }

    /// Type 2 history: the current version of a changed key is closed (`valid_to` = run
    /// start), a new version inserted; with `delete_missing`, keys not staged are closed.
    async fn scd2(&self, conn: &mut Conn) -> Result<LoadStats> {
        let d = Dialect::Mysql;
        let (target, stage, cols, on) = (&self.target, &self.stage, &self.cols, &self.on);
        let mut stats = LoadStats::default();
        let started = datetime_value(&self.t.started);
        let (vf, vt, cur, hash) = (
            d.quote(super::sink::VALID_FROM),
            d.quote(super::sink::VALID_TO),
            d.quote(super::sink::IS_CURRENT),
            d.quote(super::sink::ROW_HASH),
        );
        let first_key = d.quote(&self.t.key[0]);
        conn.query_drop("START TRANSACTION")
            .await
            .map_err(|e| self.err(e))?;
        conn.exec_drop(
            format!(
                "UPDATE {target} t JOIN {stage} s ON {on} SET t.{vt} = ?, t.{cur} = 0 \
                 WHERE t.{cur} = 1 AND t.{hash} <> s.{hash}"
            ),
            vec![started.clone()],
        )
        .await
        .map_err(|e| self.err(e))?;
        stats.updated = conn.affected_rows();
        if self.t.delete_missing {
            conn.exec_drop(
                format!(
                    "UPDATE {target} t LEFT JOIN {stage} s ON {on} SET t.{vt} = ?, t.{cur} = 0 \
                     WHERE t.{cur} = 1 AND s.{first_key} IS NULL"
                ),
                vec![started.clone()],
            )
            .await
            .map_err(|e| self.err(e))?;
            stats.deleted = conn.affected_rows();
        }
        let s_cols = self.t.staged_of(d, "s");
        conn.exec_drop(
            format!(
                "INSERT INTO {target} ({cols}, {vf}, {vt}, {cur}) SELECT {s_cols}, ?, NULL, 1 \
                 FROM {stage} s LEFT JOIN {target} t ON {on} AND t.{cur} = 1 WHERE t.{first_key} IS NULL"
            ),
            vec![started],
        )
        .await
        .map_err(|e| self.err(e))?;
        stats.inserted = conn.affected_rows();
        self.record_and_commit(conn).await?;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::super::TableName;
    use crate::config::spec::ConnectionKind;

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
        assert!(super::table_name_problem(ConnectionKind::Mysql, &fits).is_none());
        assert!(super::table_name_problem(ConnectionKind::Mysql, &too_long).is_some());
        assert!(super::table_name_problem(ConnectionKind::Postgres, &too_long).is_none());
    }
}
