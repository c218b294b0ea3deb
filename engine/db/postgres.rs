//! PostgreSQL through `tokio-postgres`: connecting (TLS, timeouts), describing a source's
//! columns with exact types, reading rows in the binary protocol, and writing rows in the
//! binary `COPY` format.
//!
//! Binary formats follow PostgreSQL's `*_recv`/`*_send` functions (src/backend/utils/adt) and
//! the `COPY` file format of the PostgreSQL manual ("COPY", section "Binary Format").

use crate::invalid;
use crate::invalid::InvalidValue;
use bytes::{BufMut, BytesMut};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use futures::StreamExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, Kind, ToSql, Type};
use tokio_postgres::Client;

use super::columns::{Cell, RowBatcher};
use super::extract::{BatchSender, CursorValue, Extraction, Relation};
use super::kind::{Database, Load};
use super::load::Names;
use super::sink::TargetColumn;
use super::sink::{column_list, DbTarget};
use super::{Connector, DbColumn, Dialect};
use crate::config::spec::{LoadMode, SslMode};
use crate::error::{Error, Result};
use crate::model::FieldType;
use crate::report::LoadStats;
use datafusion::arrow::array::RecordBatch;
use futures::future::BoxFuture;

/// Microseconds from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
pub const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
pub const PG_EPOCH_DAYS: i32 = 10_957;

/// PostgreSQL as a [`Database`].
pub struct Postgres;

/// PostgreSQL's dialect.
const PG: Dialect = &Postgres;

impl Database for Postgres {
    fn field_type(&self, ty: FieldType, _c: &TargetColumn) -> String {
        use FieldType as F;
        match ty {
            F::String => "text".into(),
            F::Int32 => "integer".into(),
            F::Int64 => "bigint".into(),
            F::Float64 => "double precision".into(),
            F::Decimal { precision, scale } => format!("numeric({precision},{scale})"),
            F::Boolean => "boolean".into(),
            F::Date => "date".into(),
            F::Timestamp => "timestamp with time zone".into(),
            F::Time => "time without time zone".into(),
        }
    }

    fn flags_type(&self) -> &'static str {
        "text[]"
    }

    /// The bound text cast to the column's type (`$1::text::timestamptz`), so one binding
    /// works for every cursor type.
    fn placeholder(&self, n: usize, db_type: &str, _v: CursorValue) -> String {
        format!("${n}::text::{db_type}")
    }

    fn runs_upsert(&self, runs: &str) -> String {
        format!(
            "INSERT INTO {runs} (job, target_table, run_id, record) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (job, target_table) DO UPDATE SET run_id = EXCLUDED.run_id, record = EXCLUDED.record"
        )
    }

    super::kind::delegated_driver_fns!();

    fn table_columns<'a>(
        &'a self,
        c: &'a Connector,
        table: &'a super::TableName,
    ) -> BoxFuture<'a, Result<Option<Vec<super::sink::TableColumn>>>> {
        Box::pin(async move {
            let conn = connect(c).await?;
            table_columns(c, &conn.client, table).await
        })
    }

    fn begin<'a>(&'a self, t: &'a DbTarget) -> BoxFuture<'a, Result<Box<dyn Load>>> {
        Box::pin(async move { Ok(Box::new(PgLoad::begin(t).await?) as Box<dyn Load>) })
    }
}

super::kind::async_load!(PgLoad);

/// An open connection; holds one of the connector's slots while alive.
pub struct PgConn {
    /// The client.
    pub client: Client,
    _permit: OwnedSemaphorePermit,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether a PostgreSQL error may go away on retry: the connection broke or could not be
/// made, the server is shutting down or starting (SQLSTATE class 08, 57P01-57P03), or a
/// serialization failure / deadlock (40001, 40P01).
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            code.code().starts_with("08")
                || [
                    &SqlState::ADMIN_SHUTDOWN,
                    &SqlState::CRASH_SHUTDOWN,
                    &SqlState::CANNOT_CONNECT_NOW,
                    &SqlState::T_R_SERIALIZATION_FAILURE,
                    &SqlState::T_R_DEADLOCK_DETECTED,
                ]
                .contains(&code)
        }
        // No SQLSTATE: an I/O error, a refused or timed-out connection.
        None => e.as_db_error().is_none(),
    }
}

pub use crate::pg::message;

/// An [`Error::Connection`] for `e` while doing `what`.
pub fn error(c: &Connector, what: &str, e: &tokio_postgres::Error) -> Error {
    c.error(what, message(e), is_transient(e))
}

fn tls_connector(c: &Connector) -> Result<postgres_native_tls::MakeTlsConnector> {
    let mut b = native_tls::TlsConnector::builder();
    match c.sslmode {
        SslMode::VerifyFull => {
            if let Some(ca) = &c.ca_file {
                let pem = std::fs::read(ca)
                    .map_err(|e| c.error(&format!("reading ca_file {}", ca.display()), e, false))?;
                let cert = native_tls::Certificate::from_pem(&pem).map_err(|e| {
                    c.error(
                        &format!("ca_file {} is not a PEM certificate", ca.display()),
                        e,
                        false,
                    )
                })?;
                b.add_root_certificate(cert);
            }
        }
        // libpq's `prefer` and `require` encrypt without checking the certificate.
        _ => {
            b.danger_accept_invalid_certs(true);
            b.danger_accept_invalid_hostnames(true);
        }
    }
    let tls = b.build().map_err(|e| c.error("setting up TLS", e, false))?;
    Ok(postgres_native_tls::MakeTlsConnector::new(tls))
}

/// Opens a connection: waits for a slot of the connector's pool, connects with its TLS mode
/// and timeout, and sets `statement_timeout`.
///
/// # Errors
/// [`Error::Connection`], transient when the server could not be reached.
pub async fn connect(c: &Connector) -> Result<PgConn> {
    connect_with(c, true).await
}

/// [`connect`]; `statement_timeout` is set on the session only when `with_timeout` (a
/// loader's `COPY` lasts as long as the whole extraction, so loads set it per statement).
///
/// # Errors
/// As [`connect`].
pub async fn connect_with(c: &Connector, with_timeout: bool) -> Result<PgConn> {
    let permit = c.slot().await?;
    let mut config: tokio_postgres::Config =
        c.url().parse().map_err(|e: tokio_postgres::Error| {
            c.error("invalid connection URL", message(&e), false)
        })?;
    config.connect_timeout(c.connect_timeout);
    if config.get_application_name().is_none() {
        config.application_name("sluice");
    }
    use tokio_postgres::config::SslMode as PgSsl;
    let (client, task) = match c.sslmode {
        SslMode::Disable => {
            config.ssl_mode(PgSsl::Disable);
            let (client, conn) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| error(c, &format!("connecting to {}", c.shown), &e))?;
            (
                client,
                tokio::spawn(async move {
                    let _ = conn.await;
                }),
            )
        }
        mode => {
            config.ssl_mode(if mode == SslMode::Prefer {
                PgSsl::Prefer
            } else {
                PgSsl::Require
            });
            let (client, conn) = config
                .connect(tls_connector(c)?)
                .await
                .map_err(|e| error(c, &format!("connecting to {}", c.shown), &e))?;
            (
                client,
                tokio::spawn(async move {
                    let _ = conn.await;
                }),
            )
        }
    };
    let conn = PgConn {
        client,
        _permit: permit,
        task,
    };
    if let Some(t) = c.statement_timeout.filter(|_| with_timeout) {
        let ms = t.as_millis().to_string();
        conn.client
            .execute("SELECT set_config('statement_timeout', $1, false)", &[&ms])
            .await
            .map_err(|e| error(c, "setting statement_timeout", &e))?;
    }
    Ok(conn)
}

/// How a column's binary values are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Jsonb,
    Bytea,
    Date,
    Timestamp,
    Time,
    Uuid,
}

/// The Arrow type and decoder of a PostgreSQL type, or `None` when Sluice does not read it.
fn map_type(ty: &Type, typmod: i32) -> Option<(DataType, Wire, String)> {
    let name = ty.name().to_string();
    let t = match *ty {
        Type::BOOL => (DataType::Boolean, Wire::Bool),
        Type::INT2 => (DataType::Int16, Wire::Int2),
        Type::INT4 => (DataType::Int32, Wire::Int4),
        Type::INT8 => (DataType::Int64, Wire::Int8),
        Type::FLOAT4 => (DataType::Float32, Wire::Float4),
        Type::FLOAT8 => (DataType::Float64, Wire::Float8),
        Type::NUMERIC => {
            if typmod < 4 {
                return None;
            }
            let m = typmod - 4;
            let precision = (m >> 16) & 0xffff;
            // PostgreSQL 15+ allows a negative scale: 11 bits, two's complement.
            let scale = ((m & 0x7ff) ^ 1024) - 1024;
            if !(1..=38).contains(&precision) || scale > precision || scale < -38 {
                return None;
            }
            return Some((
                DataType::Decimal128(precision as u8, scale as i8),
                Wire::Numeric,
                format!("numeric({precision},{scale})"),
            ));
        }
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON | Type::XML => {
            (DataType::Utf8, Wire::Text)
        }
        Type::JSONB => (DataType::Utf8, Wire::Jsonb),
        Type::BYTEA => (DataType::Binary, Wire::Bytea),
        Type::DATE => (DataType::Date32, Wire::Date),
        Type::TIMESTAMP => (
            DataType::Timestamp(TimeUnit::Microsecond, None),
            Wire::Timestamp,
        ),
        Type::TIMESTAMPTZ => (
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Wire::Timestamp,
        ),
        Type::TIME => (DataType::Time64(TimeUnit::Microsecond), Wire::Time),
        Type::UUID => (DataType::Utf8, Wire::Uuid),
        _ => match ty.kind() {
            // An enum's binary form is its label.
            Kind::Enum(_) => (DataType::Utf8, Wire::Text),
            Kind::Domain(base) => return map_type(base, typmod),
            _ => return None,
        },
    };
    Some((t.0, t.1, name))
}

/// A type name for an unsupported column, with the cast that would read it.
fn cast_hint(ty: &Type, typmod: i32, column: &str) -> (String, String) {
    let q = PG.quote(column);
    if *ty == Type::NUMERIC {
        let what = if typmod < 4 {
            "numeric without precision and scale".to_string()
        } else {
            "numeric with more than 38 digits".to_string()
        };
        (what, format!("{q}::numeric(38,10)"))
    } else {
        let name = match ty.kind() {
            Kind::Array(inner) => format!("{}[]", inner.name()),
            _ => ty.name().to_string(),
        };
        (name, format!("{q}::text"))
    }
}

/// The columns of a table or query with their Arrow types (from the prepared statement's row
/// description, no row is read).
///
/// # Errors
/// [`Error::Connection`] when the database cannot be reached or rejects the relation;
/// [`Error::Source`] naming the first column whose type Sluice does not read.
pub async fn describe(c: &Connector, source: &str, relation: &Relation) -> Result<Vec<DbColumn>> {
    let conn = connect(c).await?;
    let sql = format!("SELECT * FROM {}", relation.from_sql(PG));
    let stmt = conn
        .client
        .prepare(&sql)
        .await
        .map_err(|e| error(c, &format!("describing source `{source}`"), &e))?;
    let mut out = Vec::new();
    let mut unsupported = Vec::new();
    for col in stmt.columns() {
        let typmod = col.type_modifier();
        match map_type(col.type_(), typmod) {
            Some((data_type, _, db_type)) => out.push(DbColumn {
                name: col.name().to_string(),
                db_type,
                data_type,
            }),
            None => {
                let (what, hint) = cast_hint(col.type_(), typmod, col.name());
                unsupported.push((col.name().to_string(), what, hint));
            }
        }
    }
    if !unsupported.is_empty() {
        return Err(super::unsupported_types(source, c, relation, &unsupported));
    }
    Ok(out)
}

/// A column's raw binary value.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn be<const N: usize>(raw: &[u8]) -> std::result::Result<[u8; N], String> {
    raw.try_into()
        .map_err(|_| format!("expected {N} bytes, got {}", raw.len()))
}

/// Decodes one value in PostgreSQL's binary form (`*_send`) as its wire type says; `scale`
/// is the column's decimal scale (for `numeric`).
///
/// # Errors
/// A value of the wrong length, infinite dates and timestamps, timestamps beyond what
/// microseconds since 1970 hold, text that is not UTF-8.
fn cell(wire: Wire, scale: i8, raw: Option<&[u8]>) -> std::result::Result<Cell<'_>, String> {
    let Some(raw) = raw else {
        return Ok(Cell::Null);
    };
    Ok(match wire {
        Wire::Bool => Cell::Bool(be::<1>(raw)?[0] != 0),
        Wire::Int2 => Cell::Int(i16::from_be_bytes(be(raw)?).into()),
        Wire::Int4 => Cell::Int(i32::from_be_bytes(be(raw)?).into()),
        Wire::Int8 => Cell::Int(i64::from_be_bytes(be(raw)?).into()),
        Wire::Float4 => Cell::Float(f32::from_be_bytes(be(raw)?).into()),
        Wire::Float8 => Cell::Float(f64::from_be_bytes(be(raw)?)),
        Wire::Numeric => Cell::Decimal(decode_numeric(raw, scale)?),
        // jsonb's binary form is a version byte (1) and the text.
        Wire::Jsonb => Cell::Text(utf8(raw.get(1..).unwrap_or_default())?.into()),
        Wire::Uuid => Cell::Text(
            uuid::Uuid::from_slice(raw)
                .map_err(|e| e.to_string())?
                .hyphenated()
                .to_string()
                .into(),
        ),
        Wire::Text => Cell::Text(utf8(raw)?.into()),
        Wire::Bytea => Cell::Bytes(raw),
        Wire::Date => {
            let d = i32::from_be_bytes(be(raw)?);
            if d == i32::MAX || d == i32::MIN {
                return Err("the date is infinity, which a date column cannot hold".into());
            }
            Cell::Days(d + PG_EPOCH_DAYS)
        }
        Wire::Timestamp => {
            let t = i64::from_be_bytes(be(raw)?);
            if t == i64::MAX || t == i64::MIN {
                return Err(
                    "the timestamp is infinity, which a timestamp column cannot hold".into(),
                );
            }
            Cell::Micros(t.checked_add(PG_EPOCH_MICROS).ok_or(
                "the timestamp is beyond the year 294246, out of the range of microseconds since 1970",
            )?)
        }
        Wire::Time => Cell::TimeMicros(i64::from_be_bytes(be(raw)?)),
    })
}

fn utf8(bytes: &[u8]) -> std::result::Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| e.to_string())
}

const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;

/// Decodes PostgreSQL's binary `numeric` (`numeric_recv`: ndigits, weight, sign, dscale as
/// 16-bit integers, then base-10000 digits, the first worth 10000^weight) into an integer
/// scaled by 10^`scale`.
///
/// # Errors
/// NaN or infinity, a value with more fractional digits than `scale` allows, or more than 38
/// digits.
pub fn decode_numeric(raw: &[u8], scale: i8) -> std::result::Result<i128, InvalidValue> {
    let word = |i: usize| -> std::result::Result<u16, String> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".to_string())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i32;
    let sign = word(2)?;
    if sign == NUMERIC_NAN || (sign != 0 && sign != NUMERIC_NEG) {
        return Err("NaN or infinity cannot be stored in a decimal column".into());
    }
    // The digits as decimal text and a power of ten, read exactly by `parse_decimal`.
    let mut text = String::with_capacity(ndigits * 4 + 8);
    if sign == NUMERIC_NEG {
        text.push('-');
    }
    for i in 0..ndigits {
        text.push_str(&format!("{:04}", word(4 + i)?));
    }
    if ndigits == 0 {
        text.push('0');
    }
    let exp10 = 4 * (weight - ndigits as i32 + 1);
    text.push_str(&format!("e{exp10}"));
    super::values::parse_decimal(&text, 38, scale).map_err(|_| {
        invalid!("the value does not fit decimal(38,{scale}) (more than {scale} digits after the point, or more than 38 digits)")
    })
}

/// Encodes an integer scaled by 10^`scale` as PostgreSQL's binary `numeric` (the inverse of
/// [`decode_numeric`]), with `dscale = scale` and no leading or trailing zero digit groups.
pub fn encode_numeric(buf: &mut BytesMut, value: i128, scale: i8) {
    let neg = value < 0;
    let scale = i32::from(scale.max(0));
    // Decimal digits of |value|, split at the point; both sides padded to whole base-10000
    // groups (the integer part on the left, the fraction on the right).
    let text = value.unsigned_abs().to_string();
    let text = format!("{text:0>width$}", width = scale as usize + 1);
    let (int_text, frac_text) = text.split_at(text.len() - scale as usize);
    let int_pad = (4 - int_text.len() % 4) % 4;
    let frac_pad = (4 - frac_text.len() % 4) % 4;
    let padded: String = "0".repeat(int_pad) + int_text + frac_text + &"0".repeat(frac_pad);
    let mut digits: Vec<u16> = padded
        .as_bytes()
        .chunks(4)
        .map(|c| c.iter().fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0')))
        .collect();
    let int_groups = (int_text.len() + int_pad) / 4;
    // The first group is worth 10000^(int_groups - 1).
    let mut weight = int_groups as i32 - 1;
    while digits.first() == Some(&0) {
        digits.remove(0);
        weight -= 1;
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    buf.put_i32(8 + 2 * digits.len() as i32);
    buf.put_u16(digits.len() as u16);
    buf.put_i16(weight as i16);
    buf.put_u16(if neg && !digits.is_empty() {
        NUMERIC_NEG
    } else {
        0
    });
    buf.put_u16(scale as u16);
    for d in digits {
        buf.put_u16(d);
    }
}

/// Reads `sql` with `params` (bound as text, cast in SQL) and sends the rows as batches.
///
/// # Errors
/// [`Error::Connection`] (transient when the connection broke) or a decoding error naming the
/// column.
pub async fn extract(
    ext: &Extraction,
    sql: &str,
    params: &[CursorValue],
    columns: &[DbColumn],
    sender: BatchSender,
) -> Result<()> {
    let c = &ext.connector;
    let conn = connect(c).await?;
    let what = format!("reading source `{}`", ext.source);
    let stmt = conn
        .client
        .prepare(sql)
        .await
        .map_err(|e| error(c, &what, &e))?;
    let mut wires = Vec::with_capacity(columns.len());
    for (col, desc) in stmt.columns().iter().zip(columns) {
        let (_, wire, _) = map_type(col.type_(), col.type_modifier()).ok_or_else(|| {
            Error::Internal(format!(
                "column `{}` changed type since planning",
                desc.name
            ))
        })?;
        let scale = match desc.data_type {
            DataType::Decimal128(_, s) => s,
            _ => 0,
        };
        wires.push((wire, scale));
    }
    let texts: Vec<String> = params.iter().map(|p| p.to_text()).collect();
    let args: Vec<&(dyn ToSql + Sync)> = texts.iter().map(|t| t as &(dyn ToSql + Sync)).collect();
    let rows = conn
        .client
        .query_raw(&stmt, args)
        .await
        .map_err(|e| error(c, &what, &e))?;
    futures::pin_mut!(rows);
    let mut batcher = RowBatcher::new(columns, &ext.source, ext.batch_size);
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| error(c, &what, &e))?;
        for (i, (wire, scale)) in wires.iter().enumerate() {
            let raw: Option<Raw> = row.try_get(i).map_err(|e| error(c, &what, &e))?;
            batcher.push(i, cell(*wire, *scale, raw.map(|r| r.0)))?;
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

/// The columns of an existing table (name, `format_type`, NOT NULL), or none when the table
/// does not exist.
///
/// # Errors
/// [`Error::Connection`].
pub async fn table_columns(
    c: &Connector,
    client: &Client,
    table: &super::TableName,
) -> Result<Option<Vec<super::sink::TableColumn>>> {
    let name = table.quoted(PG);
    let what = format!("looking up table {table}");
    let exists: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&name])
        .await
        .map_err(|e| error(c, &what, &e))?
        .get(0);
    if exists.is_none() {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
             EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary \
                     AND a.attnum = ANY(i.indkey)) \
             FROM pg_attribute a WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 \
             AND NOT a.attisdropped ORDER BY a.attnum",
            &[&name],
        )
        .await
        .map_err(|e| error(c, &what, &e))?;
    Ok(Some(
        rows.iter()
            .map(|r| super::sink::TableColumn {
                name: r.get(0),
                db_type: r.get(1),
                not_null: r.get(2),
                primary_key: r.get(3),
            })
            .collect(),
    ))
}

/// Creates `sluice_runs` beside `target` when it is missing, outside the load's transaction:
/// a role that may only write an existing table (a DBA created `sluice_runs`) never needs
/// CREATE, and two first loads into one schema at once do not block each other (the loser's
/// "already exists" is ignored).
///
/// # Errors
/// [`Error::Connection`].
async fn ensure_runs_table(
    c: &Connector,
    client: &Client,
    target: &super::TableName,
) -> Result<()> {
    let d = PG;
    let runs = super::runs::runs_table(target);
    let what = format!("creating {runs}");
    let exists: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&runs.quoted(d)])
        .await
        .map_err(|e| error(c, &what, &e))?
        .get(0);
    if exists.is_some() {
        return Ok(());
    }
    let mut statements = Vec::new();
    if let Some(schema) = &target.schema {
        statements.push(format!("CREATE SCHEMA IF NOT EXISTS {}", d.quote(schema)));
    }
    statements.push(super::runs::create_sql(d, target));
    for sql in statements {
        if let Err(e) = client.batch_execute(&sql).await {
            let raced = matches!(
                e.code(),
                Some(c) if [&SqlState::DUPLICATE_TABLE, &SqlState::DUPLICATE_SCHEMA, &SqlState::UNIQUE_VIOLATION].contains(&c)
            );
            if !raced {
                return Err(error(c, &what, &e));
            }
        }
    }
    Ok(())
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
    let conn = connect(c).await?;
    let runs = super::runs::runs_table(target);
    let what = format!("reading {runs}");
    let exists: Option<String> = conn
        .client
        .query_one("SELECT to_regclass($1)::text", &[&runs.quoted(PG)])
        .await
        .map_err(|e| error(c, &what, &e))?
        .get(0);
    if exists.is_none() {
        return Ok(None);
    }
    let row = conn
        .client
        .query_opt(
            &format!(
                "SELECT record FROM {} WHERE job = $1 AND target_table = $2",
                runs.quoted(PG)
            ),
            &[&job, &key],
        )
        .await
        .map_err(|e| error(c, &what, &e))?;
    Ok(row.map(|r| r.get(0)))
}

/// A PostgreSQL load's transaction, for the load modes ([`super::load`]).
struct PgSession<'a> {
    client: &'a Client,
    t: &'a DbTarget,
    /// "committing <table>", for errors.
    what: String,
}

impl PgSession<'_> {
    fn err(&self, e: tokio_postgres::Error) -> Error {
        error(&self.t.connector, &self.what, &e)
    }
}

impl super::load::LoadSession for PgSession<'_> {
    async fn execute(
        &mut self,
        sql: &str,
        started: Option<&chrono::DateTime<chrono::Utc>>,
    ) -> Result<u64> {
        let started = started.map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string());
        let params: Vec<&(dyn ToSql + Sync)> =
            started.iter().map(|s| s as &(dyn ToSql + Sync)).collect();
        self.client
            .execute(sql, &params)
            .await
            .map_err(|e| self.err(e))
    }

    async fn count(&mut self, sql: &str) -> Result<u64> {
        let row = self
            .client
            .query_one(sql, &[])
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn record(&mut self, run: &super::runs::RunRow) -> Result<()> {
        let sql = super::runs::upsert_sql(PG, &self.t.table);
        self.client
            .execute(&sql, &[&run.job, &run.target, &run.run_id, &run.record])
            .await
            .map(drop)
            .map_err(|e| self.err(e))
    }

    async fn commit(&mut self) -> Result<()> {
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| commit_unknown(&self.t.connector, &self.t.shown(), &message(&e)))
    }

    /// Each statement applying the mode gets the connection's `statement_timeout`.
    async fn prepare(&mut self, _mode: LoadMode) -> Result<()> {
        if let Some(limit) = self.t.connector.statement_timeout {
            let ms = limit.as_millis().to_string();
            self.client
                .execute("SELECT set_config('statement_timeout', $1, true)", &[&ms])
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn started_param(&self) -> &'static str {
        "$1::text::timestamptz"
    }

    /// Exact counts from the upsert itself: a row it inserted has `xmax = 0`.
    async fn upsert_counts(&mut self, n: &Names, _rows: u64) -> Result<(u64, u64)> {
        let sql = format!(
            "WITH up AS ({} RETURNING (xmax = 0) AS inserted) \
             SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up",
            self.upsert(n)
        );
        let row = self
            .client
            .query_one(&sql, &[])
            .await
            .map_err(|e| self.err(e))?;
        Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
    }

    /// `INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE (old) IS DISTINCT FROM (new)`: an
    /// unchanged row is neither rewritten nor counted.
    fn upsert(&self, n: &Names) -> String {
        let action = if n.non_key.is_empty() {
            "DO NOTHING".to_string()
        } else {
            let list = |prefix: &str| -> String {
                n.non_key
                    .iter()
                    .map(|q| format!("{prefix}.{q}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let set: Vec<String> = n
                .non_key
                .iter()
                .map(|q| format!("{q} = EXCLUDED.{q}"))
                .collect();
            format!(
                "DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})",
                set.join(", "),
                list(&n.target),
                list("EXCLUDED")
            )
        };
        format!(
            "INSERT INTO {t} ({cols}) SELECT {cols} FROM {s} ON CONFLICT ({key}) {action}",
            t = n.target,
            cols = n.cols,
            s = n.stage,
            key = n.key
        )
    }

    fn clear(&self, n: &Names) -> String {
        format!("TRUNCATE {}", n.target)
    }

    fn bool(&self, v: bool) -> &'static str {
        if v {
            "true"
        } else {
            "false"
        }
    }
}

/// The error for a connection lost during `COMMIT`: the server may or may not have committed,
/// so it is not retried (a retry could load the rows twice).
pub fn commit_unknown(c: &Connector, target: &str, e: &str) -> Error {
    c.error(
        &format!("committing {target}"),
        format!("{e}; the connection failed during COMMIT, so whether this run's rows were committed is unknown (the watermark did not move): check the table before running the job again"),
        false,
    )
}

/// A PostgreSQL load: one transaction from `begin` to `commit`.
pub struct PgLoad {
    conn: PgConn,
    connector: Connector,
    copy: Option<std::pin::Pin<Box<tokio_postgres::CopyInSink<bytes::Bytes>>>>,
    buf: BytesMut,
    /// Rows staged.
    rows: u64,
}

const STAGE: &str = "sluice_stage";
/// Bytes buffered before a `COPY` data message is sent.
const COPY_CHUNK: usize = 1 << 20;

impl PgLoad {
    /// Opens the transaction, creates the table when absent (or checks it), and starts
    /// `COPY ... FROM STDIN (FORMAT binary)` into the target (append) or a temporary
    /// staging table (the other modes).
    ///
    /// # Errors
    /// [`Error::Connection`]; [`Error::Target`] when the table differs from the model.
    pub async fn begin(t: &DbTarget) -> Result<PgLoad> {
        let c = &t.connector;
        let conn = connect_with(c, false).await?;
        let d = PG;
        let what = format!("loading {}", t.table);
        let err = |e: tokio_postgres::Error| error(c, &what, &e);
        ensure_runs_table(c, &conn.client, &t.table).await?;
        conn.client.batch_execute("BEGIN").await.map_err(err)?;
        // One writer per table at a time: a second run waits here, inside its transaction.
        let lock_key = format!("sluice:{}", t.table.quoted(d));
        conn.client
            .execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock_key])
            .await
            .map_err(err)?;
        match table_columns(c, &conn.client, &t.table).await? {
            None => {
                if let Some(schema) = &t.table.schema {
                    conn.client
                        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", d.quote(schema)))
                        .await
                        .map_err(err)?;
                }
                conn.client
                    .batch_execute(&t.create_sql(d))
                    .await
                    .map_err(err)?;
            }
            Some(actual) => {
                for sql in t.schema_changes(d, &actual)? {
                    conn.client.batch_execute(&sql).await.map_err(err)?;
                }
            }
        }
        let into = if t.mode == LoadMode::Append {
            t.table.quoted(d)
        } else {
            let cols = t.staging_columns(d);
            conn.client
                .batch_execute(&format!(
                    "CREATE TEMPORARY TABLE {} ({}) ON COMMIT DROP",
                    d.quote(STAGE),
                    cols
                ))
                .await
                .map_err(err)?;
            d.quote(STAGE)
        };
        let copy_sql = format!(
            "COPY {into} ({}) FROM STDIN (FORMAT binary)",
            column_list(d, &t.staged)
        );
        let sink = conn
            .client
            .copy_in::<_, bytes::Bytes>(copy_sql.as_str())
            .await
            .map_err(err)?;
        let mut buf = BytesMut::with_capacity(COPY_CHUNK + (64 << 10));
        // Header: signature, flags, header extension length.
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0);
        buf.put_i32(0);
        Ok(PgLoad {
            conn,
            connector: c.clone(),
            copy: Some(Box::pin(sink)),
            buf,
            rows: 0,
        })
    }

    async fn flush(&mut self, c: &Connector) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        if let Some(copy) = self.copy.as_mut() {
            use futures::SinkExt;
            copy.send(chunk)
                .await
                .map_err(|e| error(c, "sending rows (COPY)", &e))?;
        }
        Ok(())
    }

    /// Encodes a batch in the binary COPY format and sends it in chunks of about 1 MiB.
    ///
    /// # Errors
    /// [`Error::Connection`]; [`Error::Internal`] for a column type the encoder lacks.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        encode_copy_rows(&mut self.buf, batch)?;
        self.rows += batch.num_rows() as u64;
        if self.buf.len() >= COPY_CHUNK {
            let c = self.conn_connector();
            self.flush(&c).await?;
        }
        Ok(())
    }

    fn conn_connector(&self) -> Connector {
        // Only the name and redactor are used for messages.
        self.connector.clone()
    }

    /// Sends the trailer and ends the COPY; returns the rows the server received.
    ///
    /// # Errors
    /// [`Error::Connection`].
    pub async fn finish(&mut self) -> Result<u64> {
        self.buf.put_i16(-1);
        let c = self.conn_connector();
        self.flush(&c).await?;
        if let Some(mut copy) = self.copy.take() {
            let n = copy
                .as_mut()
                .finish()
                .await
                .map_err(|e| error(&c, "ending COPY", &e))?;
            return Ok(n);
        }
        Ok(self.rows)
    }

    /// Applies the mode from the staging table and commits ([`super::load::apply`]).
    ///
    /// # Errors
    /// [`Error::Connection`], or [`Error::Target`] for duplicate keys in a merge.
    pub async fn commit(self, t: &DbTarget, run: &super::runs::RunRow) -> Result<LoadStats> {
        let d = PG;
        let names = Names::new(d, t, d.quote(STAGE));
        let mut session = PgSession {
            client: &self.conn.client,
            t,
            what: format!("committing {}", t.table),
        };
        super::load::apply(&mut session, &names, t, run, self.rows).await
    }

    /// Rolls back (closing the connection would too).
    pub async fn abort(mut self) {
        drop(self.copy.take());
        let _ = self.conn.client.batch_execute("ROLLBACK").await;
    }
}

/// Appends `batch`'s rows to `buf` in the binary COPY format: per row the field count, then
/// per field its length (-1 for null) and its value as PostgreSQL's `*_send` writes it.
///
/// # Errors
/// [`Error::Internal`] for a column type with no encoder (the target's types are fixed by the
/// model, so this is a bug).
pub fn encode_copy_rows(buf: &mut BytesMut, batch: &RecordBatch) -> Result<()> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes as t;
    enum Col<'a> {
        Utf8(&'a datafusion::arrow::array::StringArray),
        Utf8View(&'a datafusion::arrow::array::StringViewArray),
        I32(&'a datafusion::arrow::array::Int32Array),
        I64(&'a datafusion::arrow::array::Int64Array),
        F64(&'a datafusion::arrow::array::Float64Array),
        Dec(&'a datafusion::arrow::array::Decimal128Array, i8),
        Bool(&'a datafusion::arrow::array::BooleanArray),
        Date(&'a datafusion::arrow::array::Date32Array),
        Ts(&'a datafusion::arrow::array::TimestampMicrosecondArray),
        Time(&'a datafusion::arrow::array::Time64MicrosecondArray),
        List(&'a datafusion::arrow::array::ListArray),
    }
    let mut cols = Vec::with_capacity(batch.num_columns());
    for a in batch.columns() {
        cols.push(match a.data_type() {
            DataType::Utf8 => Col::Utf8(a.as_string::<i32>()),
            DataType::Utf8View => Col::Utf8View(a.as_string_view()),
            DataType::Int32 => Col::I32(a.as_primitive::<t::Int32Type>()),
            DataType::Int64 => Col::I64(a.as_primitive::<t::Int64Type>()),
            DataType::Float64 => Col::F64(a.as_primitive::<t::Float64Type>()),
            DataType::Decimal128(_, s) => Col::Dec(a.as_primitive::<t::Decimal128Type>(), *s),
            DataType::Boolean => Col::Bool(a.as_boolean()),
            DataType::Date32 => Col::Date(a.as_primitive::<t::Date32Type>()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Col::Ts(a.as_primitive::<t::TimestampMicrosecondType>())
            }
            DataType::Time64(TimeUnit::Microsecond) => {
                Col::Time(a.as_primitive::<t::Time64MicrosecondType>())
            }
            DataType::List(_) => Col::List(a.as_list::<i32>()),
            other => {
                return Err(Error::Internal(format!(
                    "no COPY encoder for Arrow type {other}"
                )))
            }
        });
    }
    let n_fields = cols.len() as i16;
    for row in 0..batch.num_rows() {
        buf.put_i16(n_fields);
        for col in &cols {
            let valid = match col {
                Col::Utf8(a) => a.is_valid(row),
                Col::Utf8View(a) => a.is_valid(row),
                Col::I32(a) => a.is_valid(row),
                Col::I64(a) => a.is_valid(row),
                Col::F64(a) => a.is_valid(row),
                Col::Dec(a, _) => a.is_valid(row),
                Col::Bool(a) => a.is_valid(row),
                Col::Date(a) => a.is_valid(row),
                Col::Ts(a) => a.is_valid(row),
                Col::Time(a) => a.is_valid(row),
                Col::List(a) => a.is_valid(row),
            };
            if !valid {
                buf.put_i32(-1);
                continue;
            }
            match col {
                Col::Utf8(a) => {
                    let v = a.value(row).as_bytes();
                    buf.put_i32(v.len() as i32);
                    buf.put_slice(v);
                }
                Col::Utf8View(a) => {
                    let v = a.value(row).as_bytes();
                    buf.put_i32(v.len() as i32);
                    buf.put_slice(v);
                }
                Col::I32(a) => {
                    buf.put_i32(4);
                    buf.put_i32(a.value(row));
                }
                Col::I64(a) => {
                    buf.put_i32(8);
                    buf.put_i64(a.value(row));
                }
                Col::F64(a) => {
                    buf.put_i32(8);
                    buf.put_f64(a.value(row));
                }
                Col::Dec(a, s) => encode_numeric(buf, a.value(row), *s),
                Col::Bool(a) => {
                    buf.put_i32(1);
                    buf.put_u8(u8::from(a.value(row)));
                }
                Col::Date(a) => {
                    buf.put_i32(4);
                    buf.put_i32(a.value(row) - PG_EPOCH_DAYS);
                }
                Col::Ts(a) => {
                    buf.put_i32(8);
                    buf.put_i64(a.value(row) - PG_EPOCH_MICROS);
                }
                Col::Time(a) => {
                    buf.put_i32(8);
                    buf.put_i64(a.value(row));
                }
                Col::List(a) => {
                    // A one-dimensional text[]: ndim, has-null flag, element type (text, oid
                    // 25), then the dimension's length and lower bound, then the elements.
                    let values = a.value(row);
                    let values = values.as_string::<i32>();
                    let start = buf.len();
                    buf.put_i32(0);
                    buf.put_i32(1);
                    buf.put_i32(0);
                    buf.put_u32(Type::TEXT.oid());
                    buf.put_i32(values.len() as i32);
                    buf.put_i32(1);
                    for v in values.iter() {
                        let v = v.unwrap_or_default().as_bytes();
                        buf.put_i32(v.len() as i32);
                        buf.put_slice(v);
                    }
                    let len = (buf.len() - start - 4) as i32;
                    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: i128, scale: i8) -> i128 {
        let mut b = BytesMut::new();
        encode_numeric(&mut b, v, scale);
        decode_numeric(&b[4..], scale).unwrap()
    }

    #[test]
    fn numeric_binary_roundtrips() {
        for (v, s) in [
            (0i128, 2i8),
            (1, 0),
            (-1, 0),
            (12345, 2),
            (-10000, 4),
            (100000000, 0),
            (123456789012345678901234567890123456, 10),
            (-99999999999999999999999999999999999999, 38),
            (5, 5),
            (10, 1),
        ] {
            assert_eq!(roundtrip(v, s), v, "{v} scale {s}");
        }
    }

    #[test]
    fn numeric_decoding_matches_postgres_bytes() {
        // SELECT numeric_send(123.45::numeric(10,2)): ndigits 2, weight 0, sign 0, dscale 2,
        // digits 123, 4500.
        let raw = [0, 2, 0, 0, 0, 0, 0, 2, 0, 123, 0x11, 0x94];
        assert_eq!(decode_numeric(&raw, 2).unwrap(), 12345);
        // The same value read into a scale of 1 would lose a digit.
        assert!(decode_numeric(&raw, 1).is_err());
        // NaN.
        assert!(decode_numeric(&[0, 0, 0, 0, 0xC0, 0, 0, 0], 2).is_err());
    }
}
