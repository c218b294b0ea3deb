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

use std::borrow::Cow;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{self as t, DataType, TimeUnit};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{OpenFlags, OptionalExtension};

use super::columns::{Cell, RowBatcher};
use super::extract::{BatchSender, CursorValue, Extraction, Relation};
use super::kind::{Database, Load};
use super::load::Names;
use super::sink::TargetColumn;
use super::sink::{column_list, DbTarget};
use super::values::{
    format_days, format_decimal, format_micros, format_time, parse_date, parse_time,
    parse_timestamp,
};
use super::{Connector, DbColumn, Dialect};
use crate::config::spec::LoadMode;
use crate::error::{Error, Result};
use crate::model::FieldType;
use crate::report::LoadStats;
use futures::future::BoxFuture;

/// SQLite as a [`Database`].
pub struct Sqlite;

/// SQLite's dialect.
const LITE: Dialect = &Sqlite;

impl Database for Sqlite {
    /// Declared so that each type reads back as itself (the module's table).
    fn field_type(&self, ty: FieldType, _c: &TargetColumn) -> String {
        use FieldType as F;
        match ty {
            F::String => "TEXT".into(),
            F::Int32 | F::Int64 => "INTEGER".into(),
            F::Float64 => "REAL".into(),
            // The TEXT in the name gives the column text affinity, so SQLite keeps the exact
            // digits instead of a float.
            F::Decimal { precision, scale } => format!("DECIMAL_TEXT({precision},{scale})"),
            F::Boolean => "BOOLEAN".into(),
            F::Date => "DATE".into(),
            F::Timestamp => "TIMESTAMPTZ".into(),
            F::Time => "TIME".into(),
        }
    }

    fn flags_type(&self) -> &'static str {
        "TEXT"
    }

    fn hash_type(&self) -> &'static str {
        "TEXT"
    }

    /// Times compare as instants (`unixepoch(?, 'subsec')`) and dates as dates, whatever
    /// ISO 8601 spelling the column's text uses.
    fn placeholder(&self, _n: usize, _db_type: &str, v: CursorValue) -> String {
        match v {
            CursorValue::Micros(_) | CursorValue::MicrosUtc(_) => "unixepoch(?, 'subsec')".into(),
            CursorValue::Days(_) => "date(?)".into(),
            CursorValue::Int(_) => "?".into(),
        }
    }

    /// SQLite keeps times as text in any ISO 8601 spelling: compare instants.
    fn cursor_column(&self, column: &str, v: CursorValue) -> String {
        match v {
            CursorValue::Micros(_) | CursorValue::MicrosUtc(_) => {
                format!("unixepoch({column}, 'subsec')")
            }
            CursorValue::Days(_) => format!("date({column})"),
            CursorValue::Int(_) => column.to_string(),
        }
    }

    fn runs_upsert(&self, runs: &str) -> String {
        format!(
            "INSERT OR REPLACE INTO {runs} (job, target_table, run_id, record) VALUES (?1, ?2, ?3, ?4)"
        )
    }

    /// `sqlite://path` or `path`, relative to the project root.
    fn resolve_url(&self, url: String, root: &std::path::Path) -> String {
        let path = url.strip_prefix("sqlite://").unwrap_or(&url);
        root.join(path).to_string_lossy().to_string()
    }

    super::kind::delegated_driver_fns!();

    /// `None` too when the file does not exist (opening it read-only would fail).
    fn table_columns<'a>(
        &'a self,
        c: &'a Connector,
        table: &'a super::TableName,
    ) -> BoxFuture<'a, Result<Option<Vec<super::sink::TableColumn>>>> {
        Box::pin(async move {
            if !c.sqlite_path().exists() {
                return Ok(None);
            }
            let conn = open(c, true)?;
            table_columns(c, &conn, table)
        })
    }

    fn begin<'a>(&'a self, t: &'a DbTarget) -> BoxFuture<'a, Result<Box<dyn Load>>> {
        Box::pin(async move { Ok(Box::new(SqliteLoad::begin(t)?) as Box<dyn Load>) })
    }
}

impl Load for SqliteLoad {
    fn write<'a>(&'a mut self, batch: &'a RecordBatch) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { SqliteLoad::write(self, batch) })
    }

    fn finish(&mut self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move { SqliteLoad::finish(self) })
    }

    fn commit<'a>(
        self: Box<Self>,
        t: &'a DbTarget,
        run: &'a super::runs::RunRow,
    ) -> BoxFuture<'a, Result<LoadStats>> {
        Box::pin(SqliteLoad::commit(*self, t, run))
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { SqliteLoad::abort(*self) })
    }
}

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
    let sql = format!("SELECT * FROM {}", relation.from_sql(LITE));
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

/// Decodes one SQLite value for a column of Arrow type `dt` (from its declared type, see the
/// module's table).
///
/// # Errors
/// A value that the declared type does not accept (a text in an integer column, a blob where
/// text is due, a boolean other than 0 or 1), or text that does not parse as the type.
fn cell<'a>(dt: &DataType, v: ValueRef<'a>) -> std::result::Result<Cell<'a>, String> {
    let text = |v: ValueRef<'a>| -> std::result::Result<Cow<'a, str>, String> {
        match v {
            ValueRef::Text(b) => std::str::from_utf8(b)
                .map(Cow::Borrowed)
                .map_err(|e| e.to_string()),
            ValueRef::Integer(i) => Ok(i.to_string().into()),
            ValueRef::Real(f) => Ok(f.to_string().into()),
            ValueRef::Blob(_) => Err("a blob where text was expected".into()),
            ValueRef::Null => Ok("".into()),
        }
    };
    Ok(match (dt, v) {
        (_, ValueRef::Null) => Cell::Null,
        (DataType::Boolean, ValueRef::Integer(0)) => Cell::Bool(false),
        (DataType::Boolean, ValueRef::Integer(1)) => Cell::Bool(true),
        (DataType::Boolean, other) => return Err(format!("{other:?} is not a boolean (0 or 1)")),
        (DataType::Int64, ValueRef::Integer(i)) => Cell::Int(i.into()),
        (DataType::Int64, other) => return Err(format!("{other:?} is not an integer")),
        (DataType::Float64, ValueRef::Real(f)) => Cell::Float(f),
        (DataType::Float64, ValueRef::Integer(i)) => Cell::Float(i as f64),
        (DataType::Float64, other) => return Err(format!("{other:?} is not a number")),
        (DataType::Decimal128(..), v) => Cell::DecimalText(text(v)?),
        (DataType::Binary, ValueRef::Blob(x) | ValueRef::Text(x)) => Cell::Bytes(x),
        (DataType::Binary, other) => return Err(format!("{other:?} is not a blob")),
        (DataType::Date32, v) => Cell::Days(parse_date(&text(v)?)?),
        (DataType::Timestamp(..), v) => Cell::Micros(parse_timestamp(&text(v)?)?),
        (DataType::Time64(_), v) => Cell::TimeMicros(parse_time(&text(v)?)?),
        (_, v) => Cell::Text(text(v)?),
    })
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
    let batch = ext.batch_size;
    let permit = c.slot().await?;
    tokio::task::spawn_blocking(move || -> Result<()> {
        let _permit = permit;
        let conn = open(&c, true)?;
        let what = format!("reading source `{source}`");
        let mut stmt = conn.prepare(&sql).map_err(|e| error(&c, &what, &e))?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(|e| error(&c, &what, &e))?;
        let mut batcher = RowBatcher::new(&columns, &source, batch);
        while let Some(row) = rows.next().map_err(|e| error(&c, &what, &e))? {
            for (i, col) in columns.iter().enumerate() {
                let v = row.get_ref(i).map_err(|e| error(&c, &what, &e))?;
                batcher.push(i, cell(&col.data_type, v))?;
            }
            if let Some((arrays, n)) = batcher.end_row() {
                if !sender.blocking_send(arrays, n)? {
                    return Ok(());
                }
            }
        }
        if let Some((arrays, n)) = batcher.finish() {
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
    let d = LITE;
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
        runs.quoted(LITE)
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
        let d = LITE;
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

    /// Applies the mode and commits ([`super::load::apply`]).
    ///
    /// # Errors
    /// [`Error::Connection`], or [`Error::Target`] for duplicate keys in a merge.
    pub async fn commit(self, t: &DbTarget, run: &super::runs::RunRow) -> Result<LoadStats> {
        let d = LITE;
        let names = Names::new(d, t, format!("temp.{}", d.quote(STAGE)));
        let mut session = SqliteSession { conn: self.conn, t };
        super::load::apply(&mut session, &names, t, run, self.rows).await
    }

    /// Rolls back.
    pub fn abort(self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }
}

/// A SQLite load's transaction (`BEGIN IMMEDIATE`), for the load modes ([`super::load`]);
/// the standard statements serve, only the upsert is SQLite's own.
struct SqliteSession<'a> {
    conn: rusqlite::Connection,
    t: &'a DbTarget,
}

impl SqliteSession<'_> {
    fn err(&self, e: rusqlite::Error) -> Error {
        error(
            &self.t.connector,
            &format!("committing {}", self.t.table),
            &e,
        )
    }
}

impl super::load::LoadSession for SqliteSession<'_> {
    async fn execute(
        &mut self,
        sql: &str,
        started: Option<&chrono::DateTime<chrono::Utc>>,
    ) -> Result<u64> {
        let done = match started {
            Some(t) => {
                let text = format!("{}+00:00", format_micros(t.timestamp_micros()));
                self.conn.execute(sql, [text])
            }
            None => self.conn.execute(sql, []),
        };
        done.map(|n| n as u64).map_err(|e| self.err(e))
    }

    async fn count(&mut self, sql: &str) -> Result<u64> {
        self.conn
            .query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    async fn record(&mut self, run: &super::runs::RunRow) -> Result<()> {
        let sql = super::runs::upsert_sql(LITE, &self.t.table);
        self.conn
            .execute(
                &sql,
                rusqlite::params![run.job, run.target, run.run_id, run.record],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    async fn commit(&mut self) -> Result<()> {
        self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))
    }

    fn started_param(&self) -> &'static str {
        "?1"
    }

    /// `ON CONFLICT (key) DO UPDATE ... WHERE NOT (old IS new ...)`: an unchanged row is
    /// neither rewritten nor counted. (`WHERE true` resolves the parsing ambiguity of an
    /// upsert on `INSERT ... SELECT`, per SQLite's documentation of UPSERT.)
    fn upsert(&self, n: &Names) -> String {
        let action = if n.non_key.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!(
                "DO UPDATE SET {} WHERE NOT ({})",
                n.non_key
                    .iter()
                    .map(|q| format!("{q} = excluded.{q}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                n.non_key
                    .iter()
                    .map(|q| format!("{}.{q} IS excluded.{q}", n.target))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            )
        };
        format!(
            "INSERT INTO {t} ({cols}) SELECT {cols} FROM {s} WHERE true ON CONFLICT ({key}) {action}",
            t = n.target,
            cols = n.cols,
            s = n.stage,
            key = n.key
        )
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
