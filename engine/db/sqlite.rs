//! SQLite through `rusqlite` (the SQLite library compiled in): a file as a source or target.
//!
//! SQLite's columns have a *declared* type but hold any value; Sluice reads by the declared
//! type (the affinity rules of <https://www.sqlite.org/datatype3.html>, section 3.1, with the
//! names below checked first) and converts each value exactly, or stops with the row and column.
//!
//! | declared type                         | Arrow type                 | values accepted          |
//! |---------------------------------------|----------------------------|--------------------------|
//! | `BOOLEAN`, `BOOL`                     | Boolean                    | 0 / 1                    |
//! | `DECIMAL(p,s)`, `NUMERIC(p,s)`, `DECIMAL_TEXT(p,s)` | Decimal128(p,s) | text, integer, real (by its shortest text), exactly |
//! | `TIMESTAMPTZ`                         | Timestamp(µs, UTC)         | ISO 8601 text            |
//! | `DATETIME`, `TIMESTAMP`               | Timestamp(µs)              | ISO 8601 text            |
//! | `DATE`                                | Date32                     | `YYYY-MM-DD`             |
//! | `TIME`                                | Time64(µs)                 | `HH:MM:SS[.f]`           |
//! | contains `INT`                        | Int64                      | integer                  |
//! | contains `CHAR`, `CLOB`, `TEXT`; `JSON`, `UUID` | Utf8             | text (numbers as text)   |
//! | contains `BLOB`                       | Binary                     | blob, text               |
//! | contains `REAL`, `FLOA`, `DOUB`       | Float64                    | real, integer            |

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float64Builder, Int64Builder, RecordBatch, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{self as t, DataType, TimeUnit};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{OpenFlags, OptionalExtension};

use super::extract::{BatchSender, CursorValue, Extraction, Relation};
use super::sink::{column_list, DbTarget};
use super::values::{
    format_days, format_decimal, format_micros, format_time, parse_date, parse_decimal, parse_time,
    parse_timestamp,
};
use super::{Connector, DbColumn, Dialect};
use crate::config::spec::LoadMode;
use crate::error::{Error, Result};
use crate::report::LoadStats;

fn error(c: &Connector, what: &str, e: &rusqlite::Error) -> Error {
    // A busy or locked database may free up; anything else will fail again.
    let transient = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    c.error(what, e, transient)
}

fn open(c: &Connector, read_only: bool) -> Result<rusqlite::Connection> {
    let path = c.sqlite_path();
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = rusqlite::Connection::open_with_flags(path, flags)
        .map_err(|e| error(c, &format!("opening {}", c.shown), &e))?;
    conn.busy_timeout(c.connect_timeout)
        .map_err(|e| error(c, "setting busy_timeout", &e))?;
    Ok(conn)
}

/// The Arrow type of a declared type, or `None`.
fn map_declared(decl: &str) -> Option<DataType> {
    let u = decl.trim().to_ascii_uppercase();
    let base = u.split('(').next().unwrap_or("").trim();
    if let Some(args) = u.split_once('(').map(|(_, a)| a.trim_end_matches(')')) {
        if ["DECIMAL", "NUMERIC", "DECIMAL_TEXT"].contains(&base) {
            let mut it = args.split(',').map(|x| x.trim().parse::<i16>());
            let p = it.next()?.ok()?;
            let s = it.next().unwrap_or(Ok(0)).ok()?;
            if (1..=38).contains(&p) && (0..=p).contains(&s) {
                return Some(DataType::Decimal128(p as u8, s as i8));
            }
            return None;
        }
    }
    Some(match base {
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "TIMESTAMPTZ" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "DATETIME" | "TIMESTAMP" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "DATE" => DataType::Date32,
        "TIME" => DataType::Time64(TimeUnit::Microsecond),
        "JSON" | "UUID" => DataType::Utf8,
        _ if base.contains("INT") => DataType::Int64,
        _ if ["CHAR", "CLOB", "TEXT"].iter().any(|x| base.contains(x)) => DataType::Utf8,
        _ if base.contains("BLOB") => DataType::Binary,
        _ if ["REAL", "FLOA", "DOUB"].iter().any(|x| base.contains(x)) => DataType::Float64,
        _ => return None,
    })
}

/// The columns of a table or query, by declared type.
///
/// # Errors
/// [`Error::Connection`]; [`Error::Source`] for a column without a usable declared type.
pub async fn describe(c: &Connector, source: &str, relation: &Relation) -> Result<Vec<DbColumn>> {
    let conn = open(c, true)?;
    let sql = format!("SELECT * FROM {}", relation.from_sql(Dialect::Sqlite));
    let stmt = conn
        .prepare(&sql)
        .map_err(|e| error(c, &format!("describing source `{source}`"), &e))?;
    let mut out = Vec::new();
    for col in stmt.columns() {
        let decl = col.decl_type().unwrap_or("");
        match map_declared(decl) {
            Some(data_type) => out.push(DbColumn {
                name: col.name().to_string(),
                db_type: decl.to_string(),
                data_type,
            }),
            None => {
                let what = if decl.is_empty() {
                    "no declared type (an expression)".to_string()
                } else {
                    format!("declared type {decl}")
                };
                return Err(Error::source(
                    source,
                    "",
                    format!(
                        "column `{}` has {what}, so the type of its values cannot be known (SQLite types values, not expressions); select table columns, whose declared types map as the table in docs/reference.md shows",
                        col.name()
                    ),
                ));
            }
        }
    }
    Ok(out)
}

enum Builder {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Dec(Decimal128Builder, u8, i8),
    Text(StringBuilder),
    Blob(BinaryBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder),
}

impl Builder {
    fn new(dt: &DataType, cap: usize) -> Builder {
        match dt {
            DataType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(cap)),
            DataType::Int64 => Builder::Int(Int64Builder::with_capacity(cap)),
            DataType::Float64 => Builder::Float(Float64Builder::with_capacity(cap)),
            DataType::Decimal128(p, s) => Builder::Dec(
                Decimal128Builder::with_capacity(cap).with_data_type(dt.clone()),
                *p,
                *s,
            ),
            DataType::Binary => Builder::Blob(BinaryBuilder::new()),
            DataType::Date32 => Builder::Date(Date32Builder::with_capacity(cap)),
            DataType::Timestamp(_, tz) => Builder::Ts(
                TimestampMicrosecondBuilder::with_capacity(cap).with_timezone_opt(tz.clone()),
            ),
            DataType::Time64(_) => Builder::Time(Time64MicrosecondBuilder::with_capacity(cap)),
            _ => Builder::Text(StringBuilder::new()),
        }
    }

    fn push(&mut self, v: ValueRef<'_>) -> std::result::Result<(), String> {
        let text = |v: ValueRef<'_>| -> std::result::Result<String, String> {
            match v {
                ValueRef::Text(b) => std::str::from_utf8(b)
                    .map(str::to_string)
                    .map_err(|e| e.to_string()),
                ValueRef::Integer(i) => Ok(i.to_string()),
                ValueRef::Real(f) => Ok(f.to_string()),
                ValueRef::Blob(_) => Err("a blob where text was expected".into()),
                ValueRef::Null => Ok(String::new()),
            }
        };
        if v == ValueRef::Null {
            match self {
                Builder::Bool(b) => b.append_null(),
                Builder::Int(b) => b.append_null(),
                Builder::Float(b) => b.append_null(),
                Builder::Dec(b, ..) => b.append_null(),
                Builder::Text(b) => b.append_null(),
                Builder::Blob(b) => b.append_null(),
                Builder::Date(b) => b.append_null(),
                Builder::Ts(b) => b.append_null(),
                Builder::Time(b) => b.append_null(),
            }
            return Ok(());
        }
        match self {
            Builder::Bool(b) => match v {
                ValueRef::Integer(0) => b.append_value(false),
                ValueRef::Integer(1) => b.append_value(true),
                other => return Err(format!("{other:?} is not a boolean (0 or 1)")),
            },
            Builder::Int(b) => match v {
                ValueRef::Integer(i) => b.append_value(i),
                other => return Err(format!("{other:?} is not an integer")),
            },
            Builder::Float(b) => match v {
                ValueRef::Real(f) => b.append_value(f),
                ValueRef::Integer(i) => b.append_value(i as f64),
                other => return Err(format!("{other:?} is not a number")),
            },
            Builder::Dec(b, p, s) => b.append_value(parse_decimal(&text(v)?, *p, *s)?),
            Builder::Text(b) => b.append_value(text(v)?),
            Builder::Blob(b) => match v {
                ValueRef::Blob(x) | ValueRef::Text(x) => b.append_value(x),
                other => return Err(format!("{other:?} is not a blob")),
            },
            Builder::Date(b) => b.append_value(parse_date(&text(v)?)?),
            Builder::Ts(b) => b.append_value(parse_timestamp(&text(v)?)?),
            Builder::Time(b) => b.append_value(parse_time(&text(v)?)?),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Dec(b, ..) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Blob(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Ts(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
        }
    }
}

fn cursor_param(v: CursorValue) -> Value {
    match v {
        CursorValue::Int(i) => Value::Integer(i),
        other => Value::Text(other.to_text()),
    }
}

/// Reads `sql` on a blocking thread and sends the rows as batches.
///
/// # Errors
/// [`Error::Connection`], or [`Error::Source`] naming the row and column of a value that does
/// not convert.
pub async fn extract(
    ext: &Extraction,
    sql: &str,
    params: &[CursorValue],
    columns: &[DbColumn],
    sender: BatchSender,
) -> Result<()> {
    let c = ext.connector.clone();
    let sql = sql.to_string();
    let params: Vec<Value> = params.iter().map(|p| cursor_param(*p)).collect();
    let columns = columns.to_vec();
    let source = ext.source.clone();
    let batch = ext.batch_size.max(1);
    let permit = c.slot().await?;
    tokio::task::spawn_blocking(move || -> Result<()> {
        let _permit = permit;
        let conn = open(&c, true)?;
        let what = format!("reading source `{source}`");
        let mut stmt = conn.prepare(&sql).map_err(|e| error(&c, &what, &e))?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(|e| error(&c, &what, &e))?;
        let new = || -> Vec<Builder> {
            columns
                .iter()
                .map(|col| Builder::new(&col.data_type, batch))
                .collect()
        };
        let mut builders = new();
        let mut n = 0;
        let mut row_no = 0u64;
        while let Some(row) = rows.next().map_err(|e| error(&c, &what, &e))? {
            row_no += 1;
            for (i, b) in builders.iter_mut().enumerate() {
                let v = row.get_ref(i).map_err(|e| error(&c, &what, &e))?;
                b.push(v)
                    .map_err(|m| super::extract::value_error(&source, row_no, &columns[i], &m))?;
            }
            n += 1;
            if n == batch {
                let arrays = builders.iter_mut().map(Builder::finish).collect();
                if !sender.blocking_send(arrays, n)? {
                    return Ok(());
                }
                n = 0;
            }
        }
        if n > 0 || row_no == 0 {
            let arrays = builders.iter_mut().map(Builder::finish).collect();
            sender.blocking_send(arrays, n)?;
        }
        Ok(())
    })
    .await
    .map_err(|e| Error::Internal(format!("SQLite reader thread: {e}")))?
}

/// A SQLite load: one `BEGIN IMMEDIATE` transaction from `begin` to `commit`.
pub struct SqliteLoad {
    conn: rusqlite::Connection,
    connector: Connector,
    insert_sql: String,
    rows: u64,
}

const STAGE: &str = "sluice_stage";

fn table_columns(
    c: &Connector,
    conn: &rusqlite::Connection,
    table: &super::TableName,
) -> Result<Option<Vec<super::sink::TableColumn>>> {
    let d = Dialect::Sqlite;
    let pragma = match &table.schema {
        Some(s) => format!("PRAGMA {}.table_info({})", d.quote(s), d.quote(&table.name)),
        None => format!("PRAGMA table_info({})", d.quote(&table.name)),
    };
    let mut stmt = conn
        .prepare(&pragma)
        .map_err(|e| error(c, "looking up the table", &e))?;
    let cols: Vec<super::sink::TableColumn> = stmt
        .query_map([], |r| {
            Ok(super::sink::TableColumn {
                name: r.get(1)?,
                db_type: r.get(2)?,
                not_null: r.get::<_, i64>(3)? != 0,
                primary_key: r.get::<_, i64>(5)? > 0,
            })
        })
        .map_err(|e| error(c, "looking up the table", &e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| error(c, "looking up the table", &e))?;
    Ok((!cols.is_empty()).then_some(cols))
}

/// The columns of a table (name, declared type, NOT NULL), or `None` when it does not exist.
///
/// # Errors
/// [`Error::Connection`].
pub fn inspect_columns(
    c: &Connector,
    table: &super::TableName,
) -> Result<Option<Vec<super::sink::TableColumn>>> {
    let conn = open(c, true)?;
    table_columns(c, &conn, table)
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
    if !c.sqlite_path().exists() {
        return Ok(None);
    }
    let conn = open(c, true)?;
    let runs = super::runs::runs_table(target);
    if table_columns(c, &conn, &runs)?.is_none() {
        return Ok(None);
    }
    let sql = format!(
        "SELECT record FROM {} WHERE job = ?1 AND target_table = ?2",
        runs.quoted(Dialect::Sqlite)
    );
    conn.query_row(&sql, rusqlite::params![job, key], |r| r.get(0))
        .optional()
        .map_err(|e| error(c, "reading sluice_runs", &e))
}

impl SqliteLoad {
    /// Opens the file (created when absent), starts the transaction, creates or checks the
    /// table, and prepares the staging.
    ///
    /// # Errors
    /// [`Error::Connection`]; [`Error::Target`] when the table differs from the model.
    pub fn begin(t: &DbTarget) -> Result<SqliteLoad> {
        let c = &t.connector;
        let d = Dialect::Sqlite;
        let conn = open(c, false)?;
        let what = format!("loading {}", t.table);
        let err = |e: rusqlite::Error| error(c, &what, &e);
        conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
        conn.execute_batch(&super::runs::create_sql(d, &t.table))
            .map_err(err)?;
        match table_columns(c, &conn, &t.table)? {
            None => conn.execute_batch(&t.create_sql(d)).map_err(err)?,
            Some(actual) => {
                for sql in t.schema_changes(d, &actual)? {
                    conn.execute_batch(&sql).map_err(err)?;
                }
            }
        }
        let into = if t.mode == LoadMode::Append {
            t.table.quoted(d)
        } else {
            let cols = t.staging_columns(d);
            conn.execute_batch(&format!(
                "DROP TABLE IF EXISTS temp.{stage}; CREATE TEMP TABLE {stage} ({})",
                cols,
                stage = d.quote(STAGE)
            ))
            .map_err(err)?;
            d.quote(STAGE)
        };
        let marks = vec!["?"; t.staged.len()].join(", ");
        let insert_sql = format!(
            "INSERT INTO {into} ({}) VALUES ({marks})",
            column_list(d, &t.staged)
        );
        Ok(SqliteLoad {
            conn,
            connector: c.clone(),
            insert_sql,
            rows: 0,
        })
    }

    /// Inserts a batch with the prepared statement.
    ///
    /// # Errors
    /// [`Error::Connection`].
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let c = &self.connector;
        let mut stmt = self
            .conn
            .prepare_cached(&self.insert_sql)
            .map_err(|e| error(c, "preparing INSERT", &e))?;
        let mut values: Vec<Value> = Vec::with_capacity(batch.num_columns());
        for row in 0..batch.num_rows() {
            values.clear();
            for a in batch.columns() {
                values.push(to_value(a.as_ref(), row)?);
            }
            stmt.execute(rusqlite::params_from_iter(values.iter()))
                .map_err(|e| error(c, "inserting rows", &e))?;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows staged.
    ///
    /// # Errors
    /// None today; kept for the common contract.
    pub fn finish(&mut self) -> Result<u64> {
        Ok(self.rows)
    }

    /// Applies the mode and commits.
    ///
    /// # Errors
    /// [`Error::Connection`], or [`Error::Target`] for duplicate keys in a merge.
    pub fn commit(self, t: &DbTarget, run: &super::runs::RunRow) -> Result<LoadStats> {
        let c = &self.connector;
        let d = Dialect::Sqlite;
        let conn = &self.conn;
        let what = format!("committing {}", t.table);
        let err = |e: rusqlite::Error| error(c, &what, &e);
        let target = t.table.quoted(d);
        let stage = format!("temp.{}", d.quote(STAGE));
        let cols = column_list(d, &t.staged);
        let count = |sql: &str| -> Result<u64> {
            conn.query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(err)
        };
        let mut stats = LoadStats::default();
        if matches!(t.mode, LoadMode::Merge | LoadMode::Scd2) {
            let key = t.key_list(d);
            let dups = count(&format!(
                "SELECT count(*) FROM (SELECT 1 FROM {stage} GROUP BY {key} HAVING count(*) > 1)"
            ))?;
            if dups > 0 {
                return Err(super::sink::duplicate_keys(t, dups));
            }
        }
        let on = super::sink::key_join(d, "s", "t", &t.key);
        match t.mode {
            LoadMode::Append => stats.inserted = self.rows,
            LoadMode::Overwrite => {
                stats.deleted = conn
                    .execute(&format!("DELETE FROM {target}"), [])
                    .map_err(err)? as u64;
                stats.inserted = conn
                    .execute(
                        &format!("INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage}"),
                        [],
                    )
                    .map_err(err)? as u64;
            }
            LoadMode::Merge => {
                let matched = count(&format!(
                    "SELECT count(*) FROM {stage} s WHERE EXISTS (SELECT 1 FROM {target} t WHERE {on})"
                ))?;
                let non_key: Vec<String> = t
                    .staged
                    .iter()
                    .filter(|c| !t.key.contains(&c.name))
                    .map(|c| d.quote(&c.name))
                    .collect();
                let action = if non_key.is_empty() {
                    "DO NOTHING".to_string()
                } else {
                    format!(
                        "DO UPDATE SET {} WHERE NOT ({})",
                        non_key
                            .iter()
                            .map(|q| format!("{q} = excluded.{q}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        non_key
                            .iter()
                            .map(|q| format!("{target}.{q} IS excluded.{q}"))
                            .collect::<Vec<_>>()
                            .join(" AND ")
                    )
                };
                let key = t.key_list(d);
                let changed = conn
                    .execute(
                        &format!(
                            "INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage} WHERE true \
                             ON CONFLICT ({key}) {action}"
                        ),
                        [],
                    )
                    .map_err(err)? as u64;
                stats.inserted = self.rows.saturating_sub(matched);
                stats.updated = changed.saturating_sub(stats.inserted);
                if t.delete_missing {
                    stats.deleted = conn
                        .execute(
                            &format!(
                                "DELETE FROM {target} AS t WHERE NOT EXISTS (SELECT 1 FROM {stage} s WHERE {on})"
                            ),
                            [],
                        )
                        .map_err(err)? as u64;
                }
            }
            LoadMode::Scd2 => {
                let started = format!("{}+00:00", format_micros(t.started.timestamp_micros()));
                let (vt, cur, hash) = (
                    d.quote(super::sink::VALID_TO),
                    d.quote(super::sink::IS_CURRENT),
                    d.quote(super::sink::ROW_HASH),
                );
                let vf = d.quote(super::sink::VALID_FROM);
                stats.updated = conn
                    .execute(
                        &format!(
                            "UPDATE {target} AS t SET {vt} = ?1, {cur} = 0 WHERE t.{cur} = 1 \
                             AND EXISTS (SELECT 1 FROM {stage} s WHERE {on} AND s.{hash} <> t.{hash})"
                        ),
                        [&started],
                    )
                    .map_err(err)? as u64;
                if t.delete_missing {
                    stats.deleted = conn
                        .execute(
                            &format!(
                                "UPDATE {target} AS t SET {vt} = ?1, {cur} = 0 WHERE t.{cur} = 1 \
                                 AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE {on})"
                            ),
                            [&started],
                        )
                        .map_err(err)? as u64;
                }
                let s_cols = t.staged_of(d, "s");
                stats.inserted = conn
                    .execute(
                        &format!(
                            "INSERT INTO {target} ({cols}, {vf}, {vt}, {cur}) \
                             SELECT {}, ?1, NULL, 1 FROM {stage} s \
                             WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE t.{cur} = 1 AND {on})",
                            s_cols
                        ),
                        [&started],
                    )
                    .map_err(err)? as u64;
            }
        }
        // The run's record commits with its rows (decision 0006).
        conn.execute(
            &super::runs::upsert_sql(d, &t.table),
            rusqlite::params![run.job, run.target, run.run_id, run.record],
        )
        .map_err(err)?;
        crate::commit::crash_point("before_publish");
        conn.execute_batch("COMMIT").map_err(err)?;
        crate::commit::crash_point("after_publish");
        Ok(stats)
    }

    /// Rolls back.
    pub fn abort(self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }
}

/// One Arrow value as a SQLite value: decimals as exact text, times as ISO 8601 text
/// (timestamps with `+00:00`), booleans as 0/1, lists as a JSON array.
///
/// # Errors
/// [`Error::Internal`] for a type the model cannot produce.
pub fn to_value(a: &dyn Array, row: usize) -> Result<Value> {
    if a.is_null(row) {
        return Ok(Value::Null);
    }
    Ok(match a.data_type() {
        DataType::Utf8 => Value::Text(a.as_string::<i32>().value(row).to_string()),
        DataType::Utf8View => Value::Text(a.as_string_view().value(row).to_string()),
        DataType::Int32 => Value::Integer(a.as_primitive::<t::Int32Type>().value(row).into()),
        DataType::Int64 => Value::Integer(a.as_primitive::<t::Int64Type>().value(row)),
        DataType::Float64 => Value::Real(a.as_primitive::<t::Float64Type>().value(row)),
        DataType::Decimal128(_, s) => Value::Text(format_decimal(
            a.as_primitive::<t::Decimal128Type>().value(row),
            *s,
        )),
        DataType::Boolean => Value::Integer(i64::from(a.as_boolean().value(row))),
        DataType::Date32 => Value::Text(format_days(a.as_primitive::<t::Date32Type>().value(row))),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Value::Text(format!(
            "{}+00:00",
            format_micros(a.as_primitive::<t::TimestampMicrosecondType>().value(row))
        )),
        DataType::Time64(TimeUnit::Microsecond) => Value::Text(format_time(
            a.as_primitive::<t::Time64MicrosecondType>().value(row),
        )),
        DataType::List(_) => {
            let list = a.as_list::<i32>().value(row);
            let items: Vec<serde_json::Value> = list
                .as_string::<i32>()
                .iter()
                .map(|v| serde_json::Value::String(v.unwrap_or_default().to_string()))
                .collect();
            Value::Text(serde_json::Value::Array(items).to_string())
        }
        other => {
            return Err(Error::Internal(format!(
                "no SQLite conversion for Arrow type {other}"
            )))
        }
    })
}
