//! Database sources as DataFusion tables: the `SELECT` sent has only the columns the plan uses
//! and the watermark range as bound parameters; rows arrive as Arrow batches through a bounded
//! channel, so memory stays bounded whatever the table's size.
//!
//! ```text
//! DbTable::scan(projection) ──▶ DbPartition ──spawn──▶ driver: SELECT <used> ... WHERE <range>
//!       ◀── batches (channel of 2) ◀── BatchSender (counts rows, tracks the cursor's maximum)
//! ```

use crate::invalid;
use crate::invalid::InvalidValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Field, Int16Type, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::ExecutionPlan;
use tokio::sync::mpsc;

use super::{Connector, DbColumn, Dialect, TableName};
use crate::config::spec::Lookback;
use crate::error::{Error, Result};

/// What a database source reads.
#[derive(Debug, Clone)]
pub enum Relation {
    /// A table (only the used columns are selected).
    Table(TableName),
    /// A user's `SELECT`, run as a subquery.
    Query(String),
}

impl Relation {
    /// How messages name it: the table, or `query`.
    pub fn label(&self) -> String {
        match self {
            Relation::Table(t) => t.to_string(),
            Relation::Query(_) => "query".into(),
        }
    }

    /// The `FROM` item.
    pub fn from_sql(&self, d: Dialect) -> String {
        match self {
            Relation::Table(t) => t.quoted(d),
            // The newline ends a trailing `-- comment` of the query before the parenthesis.
            Relation::Query(q) => format!(
                "({}\n) AS {}",
                q.trim().trim_end_matches(';'),
                d.quote("sluice_query")
            ),
        }
    }
}

/// The kind of an incremental cursor column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKind {
    /// An integer column (a sequence, a version number).
    Integer,
    /// A timestamp; `utc` for a zoned one (`timestamptz`), else wall-clock time.
    Timestamp {
        /// Whether values are instants in UTC.
        utc: bool,
    },
    /// A date.
    Date,
}

impl CursorKind {
    /// The kind of a column's Arrow type, if it can be a cursor.
    pub fn of(t: &DataType) -> Option<CursorKind> {
        match t {
            DataType::Int16 | DataType::Int32 | DataType::Int64 => Some(CursorKind::Integer),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                Some(CursorKind::Timestamp { utc: tz.is_some() })
            }
            DataType::Date32 => Some(CursorKind::Date),
            _ => None,
        }
    }
}

/// A cursor value (a watermark, or a bound of a range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CursorValue {
    /// An integer cursor's value.
    Int(i64),
    /// A timestamp without time zone (wall-clock), microseconds since 1970-01-01.
    Micros(i64),
    /// An instant (a zoned timestamp), microseconds since 1970-01-01 UTC.
    MicrosUtc(i64),
    /// A date, days since 1970-01-01.
    Days(i32),
}

const EPOCH_DAY: Option<NaiveDate> = NaiveDate::from_ymd_opt(1970, 1, 1);

impl CursorValue {
    /// The value as text: an integer; `2013-01-01 05:00:00.000000+00:00` (an instant) or
    /// without the offset (wall-clock); `2013-01-01`. This is what the state store keeps, what `plan` shows, and
    /// what drivers bind (each database casts it to the column's type).
    pub fn to_text(self) -> String {
        match self {
            CursorValue::Int(v) => v.to_string(),
            CursorValue::Micros(us) => match DateTime::<Utc>::from_timestamp_micros(us) {
                Some(t) => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
                None => us.to_string(),
            },
            CursorValue::MicrosUtc(us) => match DateTime::<Utc>::from_timestamp_micros(us) {
                Some(t) => t.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string(),
                None => us.to_string(),
            },
            CursorValue::Days(d) => match EPOCH_DAY
                .and_then(|e| e.checked_add_signed(chrono::TimeDelta::days(i64::from(d))))
            {
                Some(date) => date.format("%Y-%m-%d").to_string(),
                None => d.to_string(),
            },
        }
    }

    /// Parses a value of `kind` written by a user (`--from 2013-06-01`) or by
    /// [`CursorValue::to_text`]: integers; dates `YYYY-MM-DD`; timestamps as RFC 3339
    /// (`2013-06-01T05:00:00Z`), `YYYY-MM-DD HH:MM:SS[.ffffff]` or a date (midnight).
    ///
    /// # Errors
    /// A message saying what was expected.
    pub fn parse(text: &str, kind: CursorKind) -> std::result::Result<CursorValue, InvalidValue> {
        let t = text.trim();
        let bad = |what: &str| invalid!("`{text}` is not {what}");
        match kind {
            CursorKind::Integer => t
                .parse::<i64>()
                .map(CursorValue::Int)
                .map_err(|_| bad("an integer")),
            CursorKind::Date => NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .and_then(|d| EPOCH_DAY.map(|e| (d - e).num_days()))
                .and_then(|d| i32::try_from(d).ok())
                .map(CursorValue::Days)
                .ok_or_else(|| bad("a date (YYYY-MM-DD)")),
            CursorKind::Timestamp { utc } => {
                let wrap = |us: i64| {
                    if utc {
                        CursorValue::MicrosUtc(us)
                    } else {
                        CursorValue::Micros(us)
                    }
                };
                if let Ok(us) = super::values::parse_timestamp(t) {
                    // Texts with an offset are instants; without one they are read as UTC
                    // (for a zoned cursor) or as wall-clock time (for a plain one).
                    return Ok(wrap(us));
                }
                let naive = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
                    .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f"))
                    .ok()
                    .or_else(|| {
                        NaiveDate::parse_from_str(t, "%Y-%m-%d")
                            .ok()
                            .and_then(|d| d.and_hms_opt(0, 0, 0))
                    });
                naive
                    .map(|n| wrap(n.and_utc().timestamp_micros()))
                    .ok_or_else(|| {
                        bad("a timestamp (2013-06-01T05:00:00Z, 2013-06-01 05:00:00 or 2013-06-01)")
                    })
            }
        }
    }

    /// The value minus a lookback (never below the type's range).
    ///
    /// # Errors
    /// A lookback of the wrong kind (a duration for an integer cursor, say).
    pub fn minus(self, lookback: &Lookback) -> std::result::Result<CursorValue, InvalidValue> {
        match (self, lookback) {
            (CursorValue::Int(v), Lookback::Number(n)) => Ok(CursorValue::Int(v.saturating_sub(*n))),
            (CursorValue::Micros(us), Lookback::Duration(d)) => {
                let d = crate::config::parse_duration(d)?;
                Ok(CursorValue::Micros(
                    us.saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
                ))
            }
            (CursorValue::MicrosUtc(us), Lookback::Duration(d)) => {
                let d = crate::config::parse_duration(d)?;
                Ok(CursorValue::MicrosUtc(
                    us.saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
                ))
            }
            (CursorValue::Days(days), Lookback::Duration(d)) => {
                let d = crate::config::parse_duration(d)?;
                // Whole days, rounded up, so a lookback of "36h" reads two days again.
                let n = d.as_secs().div_ceil(86_400);
                Ok(CursorValue::Days(
                    days.saturating_sub(i32::try_from(n).unwrap_or(i32::MAX)),
                ))
            }
            (CursorValue::Int(_), Lookback::Duration(d)) => Err(invalid!(
                "`lookback = \"{d}\"` is a duration, but the cursor is an integer column: write a number"
            )),
            (_, Lookback::Number(n)) => Err(invalid!(
                "`lookback = {n}` is a number, but the cursor is a time column: write a duration such as \"2h\""
            )),
        }
    }

    /// The largest cursor value in `array` (nulls ignored), or none.
    pub fn max_of(array: &dyn Array) -> Option<CursorValue> {
        use datafusion::arrow::compute::max;
        match array.data_type() {
            DataType::Int16 => {
                max(array.as_primitive::<Int16Type>()).map(|v| CursorValue::Int(v.into()))
            }
            DataType::Int32 => {
                max(array.as_primitive::<Int32Type>()).map(|v| CursorValue::Int(v.into()))
            }
            DataType::Int64 => max(array.as_primitive::<Int64Type>()).map(CursorValue::Int),
            DataType::Timestamp(TimeUnit::Microsecond, None) => {
                max(array.as_primitive::<TimestampMicrosecondType>()).map(CursorValue::Micros)
            }
            DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
                max(array.as_primitive::<TimestampMicrosecondType>()).map(CursorValue::MicrosUtc)
            }
            DataType::Date32 => max(array.as_primitive::<Date32Type>()).map(CursorValue::Days),
            _ => None,
        }
    }
}

/// A range of the cursor column pushed into the `WHERE` clause.
#[derive(Debug, Clone)]
pub struct CursorRange {
    /// The cursor column.
    pub column: String,
    /// Its database type, to cast the bound text to.
    pub db_type: String,
    /// Lower bound and whether it is included.
    pub lower: Option<(CursorValue, bool)>,
    /// Upper bound and whether it is included.
    pub upper: Option<(CursorValue, bool)>,
    /// Why this range (`watermark 2013-06-01 minus lookback 2h`), for `plan`.
    pub why: String,
}

/// Everything needed to read one database source.
#[derive(Debug)]
pub struct Extraction {
    /// Source name in the job.
    pub source: String,
    /// Where.
    pub connector: Connector,
    /// What.
    pub relation: Relation,
    /// Columns, as described by the database.
    pub columns: Vec<DbColumn>,
    /// The cursor range read by this run, if any.
    pub range: Option<CursorRange>,
    /// The cursor column's index in `columns`, and its kind.
    pub cursor: Option<(usize, CursorKind)>,
    /// The watermark before this run (none on a first run).
    pub previous: Option<CursorValue>,
    /// The largest cursor value read so far.
    pub max_cursor: Mutex<Option<CursorValue>>,
    /// Rows read so far.
    pub rows: Arc<AtomicU64>,
    /// Rows per batch.
    pub batch_size: usize,
    /// The last `SELECT` built (for `plan`).
    pub last_sql: Mutex<Option<String>>,
}

impl Extraction {
    /// The Arrow schema of all columns (every column nullable: databases may hold nulls
    /// wherever a constraint allows, and rules decide).
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| Field::new(&c.name, c.data_type.clone(), true))
                .collect::<Vec<_>>(),
        ))
    }

    /// The `SELECT` of the given columns (indices into `columns`) and its parameters, with
    /// the dialect's placeholders (`$1` or `?`).
    pub fn select(&self, used: &[usize]) -> (String, Vec<CursorValue>) {
        let d = self.connector.dialect();
        let cols = if used.is_empty() {
            "1".to_string()
        } else {
            used.iter()
                .map(|&i| d.quote(&self.columns[i].name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut sql = format!("SELECT {cols} FROM {}", self.relation.from_sql(d));
        let mut params = Vec::new();
        if let Some(r) = &self.range {
            let mut conds = Vec::new();
            let c = d.quote(&r.column);
            for (bound, op_incl, op_excl) in [(&r.lower, ">=", ">"), (&r.upper, "<=", "<")] {
                if let Some((v, inclusive)) = bound {
                    params.push(*v);
                    let p = d.placeholder(params.len(), &r.db_type, *v);
                    let column = d.cursor_column(&c, *v);
                    conds.push(format!(
                        "{column} {} {p}",
                        if *inclusive { op_incl } else { op_excl }
                    ));
                }
            }
            if !conds.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&conds.join(" AND "));
            }
        }
        (sql, params)
    }

    /// What `plan` shows: the last `SELECT` built, with its parameters and why.
    pub fn describe(&self) -> String {
        let used: Vec<usize> = (0..self.columns.len()).collect();
        let sql = self
            .last_sql
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .unwrap_or_else(|| self.select(&used).0);
        let (_, params) = self.select(&used);
        let mut s = sql;
        for (i, p) in params.iter().enumerate() {
            s.push_str(&format!("\n      -- parameter {}: {}", i + 1, p.to_text()));
        }
        if let Some(r) = &self.range {
            s.push_str(&format!("\n      -- {}", r.why));
        }
        s
    }
}

/// A database source as a DataFusion table.
#[derive(Debug)]
pub struct DbTable {
    ext: Arc<Extraction>,
    schema: SchemaRef,
}

impl DbTable {
    /// The table for `ext`.
    pub fn new(ext: Arc<Extraction>) -> DbTable {
        let schema = ext.schema();
        DbTable { ext, schema }
    }
}

#[async_trait]
impl TableProvider for DbTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.ext.columns.len()).collect(),
        };
        // The cursor is always read, to move the watermark.
        let mut used = wanted.clone();
        if let Some((c, _)) = self.ext.cursor {
            if !used.contains(&c) {
                used.push(c);
            }
        }
        let (sql, params) = self.ext.select(&used);
        if let Ok(mut last) = self.ext.last_sql.lock() {
            *last = Some(sql.clone());
        }
        let out_schema = Arc::new(self.schema.project(&wanted)?);
        let partition = DbPartition {
            ext: self.ext.clone(),
            sql,
            params,
            used,
            n_out: wanted.len(),
            schema: out_schema.clone(),
        };
        Ok(Arc::new(StreamingTableExec::try_new(
            out_schema,
            vec![Arc::new(partition)],
            None,
            vec![],
            false,
            None,
        )?))
    }
}

/// One `SELECT` as a stream of batches.
#[derive(Debug)]
struct DbPartition {
    ext: Arc<Extraction>,
    sql: String,
    params: Vec<CursorValue>,
    /// Columns selected (indices into `ext.columns`): the wanted ones, then maybe the cursor.
    used: Vec<usize>,
    /// How many of `used` are emitted.
    n_out: usize,
    schema: SchemaRef,
}

impl PartitionStream for DbPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) =
            mpsc::channel::<datafusion::error::Result<RecordBatch>>(crate::producer::CHANNEL_DEPTH);
        let ext = self.ext.clone();
        let sql = self.sql.clone();
        let params = self.params.clone();
        let used = self.used.clone();
        let cursor_pos = ext
            .cursor
            .and_then(|(c, _)| used.iter().position(|&u| u == c));
        let sender = BatchSender {
            tx: tx.clone(),
            ext: ext.clone(),
            cursor_pos,
            n_out: self.n_out,
            out_schema: self.schema.clone(),
        };
        let what = format!("reader of source `{}`", ext.source);
        let task = tokio::spawn(async move {
            let columns: Vec<DbColumn> = used.iter().map(|&i| ext.columns[i].clone()).collect();
            let result = ext
                .connector
                .dialect()
                .extract(&ext, &sql, &params, &columns, sender)
                .await;
            if let Err(e) = result {
                let _ = tx.send(Err(DataFusionError::External(Box::new(e)))).await;
            }
        });
        crate::producer::stream(self.schema.clone(), rx, task, what)
    }
}

/// The error for a value of result row `row_no` (1-based) that does not convert to its
/// column's Arrow type.
pub fn value_error(source: &str, row_no: u64, column: &DbColumn, why: &str) -> Error {
    Error::source(
        source,
        "",
        format!(
            "row {row_no} of the result, column `{}` ({}): {why}",
            column.name, column.db_type
        ),
    )
}

/// Where a driver sends the batches it builds (every selected column, in `used` order):
/// counts rows, tracks the cursor's maximum, drops the cursor if the plan did not ask for it.
pub struct BatchSender {
    tx: mpsc::Sender<datafusion::error::Result<RecordBatch>>,
    ext: Arc<Extraction>,
    cursor_pos: Option<usize>,
    n_out: usize,
    out_schema: SchemaRef,
}

impl BatchSender {
    fn prepare(&self, columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
        self.ext.rows.fetch_add(rows as u64, Ordering::Relaxed);
        if let Some(p) = self.cursor_pos {
            if let Some(m) = CursorValue::max_of(columns[p].as_ref()) {
                if let Ok(mut cur) = self.ext.max_cursor.lock() {
                    if cur.is_none_or(|c| m > c) {
                        *cur = Some(m);
                    }
                }
            }
        }
        let mut columns = columns;
        columns.truncate(self.n_out);
        RecordBatch::try_new_with_options(
            self.out_schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| Error::Internal(format!("building a batch of `{}`: {e}", self.ext.source)))
    }

    /// Sends one batch; false when the reader went away (the run stopped).
    ///
    /// # Errors
    /// The columns do not fit the schema (a bug).
    pub async fn send(&self, columns: Vec<ArrayRef>, rows: usize) -> Result<bool> {
        let batch = self.prepare(columns, rows)?;
        Ok(self.tx.send(Ok(batch)).await.is_ok())
    }

    /// [`BatchSender::send`] from a blocking thread.
    ///
    /// # Errors
    /// As [`BatchSender::send`].
    pub fn blocking_send(&self, columns: Vec<ArrayRef>, rows: usize) -> Result<bool> {
        let batch = self.prepare(columns, rows)?;
        Ok(self.tx.blocking_send(Ok(batch)).is_ok())
    }
}
