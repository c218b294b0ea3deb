//! The two databases a state store lives in, behind one small interface: the embedded SQLite
//! file (the default) and PostgreSQL (`[state] url`, for several daemons sharing one store).
//!
//! The store's statements are written once, in the SQL both accept (`INSERT ... ON CONFLICT`,
//! no engine-specific functions), with `?N` parameters; for PostgreSQL they become `$N`, and
//! the schema's `INTEGER`/`REAL` columns become `BIGINT`/`DOUBLE PRECISION`. Values cross
//! the interface as [`Value`]s; the contract is [`Backend`].
//!
//! PostgreSQL is reached with `tokio-postgres` on a thread of its own (with its own
//! single-threaded runtime), so that the store's synchronous interface can be called from any
//! context, the daemon's async tasks included, without blocking a runtime inside another.

use std::sync::mpsc;

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type};

/// A value passed to or read from the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(String),
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(v.into())
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Real(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// The parameters of a statement: `vals![a, b]`.
macro_rules! vals {
    ($($v:expr),* $(,)?) => { &[$($crate::state::sql::Value::from($v)),*][..] };
}
pub(crate) use vals;

/// A value read from a row, converted to a Rust type.
pub trait FromValue: Sized {
    /// `v` as `Self`, or why not.
    fn from_value(v: &Value) -> Result<Self, String>;
}

impl FromValue for String {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            Value::Int(i) => Ok(i.to_string()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}
impl FromValue for i64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Int(i) => Ok(*i),
            Value::Real(f) => Ok(*f as i64),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}
impl FromValue for u64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        i64::from_value(v).map(|i| i.max(0) as u64)
    }
}
impl FromValue for u32 {
    fn from_value(v: &Value) -> Result<Self, String> {
        i64::from_value(v).map(|i| i.clamp(0, u32::MAX.into()) as u32)
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Real(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One row of a result.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(Vec<Value>);

impl Row {
    /// Column `i` as `T`.
    ///
    /// # Errors
    /// The column is missing or of another type.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, String> {
        let v = self
            .0
            .get(i)
            .ok_or_else(|| format!("no column {i} in the result"))?;
        T::from_value(v).map_err(|e| format!("column {i}: {e}"))
    }
}

/// A database a state store can live in: the contract the store's statements rely on. Each
/// kind of database is one implementation ([`Sqlite`], [`Postgres`]).
///
/// - Statements use `?N` parameters and the SQL both kinds accept; an implementation rewrites
///   what its database spells otherwise.
/// - Statements run in order on one connection (one session), so `BEGIN` ... `COMMIT` sent
///   as statements make a transaction.
/// - The schema is written for SQLite; [`Backend::apply`] runs it as its database needs.
pub trait Backend: Send {
    /// Runs `sql` with `params`; the number of rows changed.
    ///
    /// # Errors
    /// The database's message.
    fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, String>;

    /// The rows `sql` with `params` selects.
    ///
    /// # Errors
    /// The database's message.
    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, String>;

    /// Runs statements separated by `;`, without parameters.
    ///
    /// # Errors
    /// The database's message.
    fn batch(&self, sql: &str) -> Result<(), String>;

    /// The statement that opens a write transaction.
    fn begin(&self) -> &'static str;

    /// True when several daemons may share the store (what one finds `running` may be
    /// another's run in progress).
    fn shared(&self) -> bool;

    /// Before the first migration transaction: whatever keeps the schema version.
    ///
    /// # Errors
    /// The database's message.
    fn prepare_versions(&self) -> Result<(), String>;

    /// Inside a migration transaction: the schema version, with other migrators locked out
    /// until the transaction ends.
    ///
    /// # Errors
    /// The database's message.
    fn version(&self) -> Result<i64, String>;

    /// Inside a migration transaction: runs `ddl` (written for SQLite) and records `version`.
    ///
    /// # Errors
    /// The database's message.
    fn apply(&self, ddl: &str, version: i64) -> Result<(), String>;
}

/// An open connection to the store's database.
pub struct Db(Box<dyn Backend>);

impl Db {
    /// The store in a SQLite connection.
    pub fn sqlite(conn: rusqlite::Connection) -> Db {
        Db(Box::new(Sqlite(conn)))
    }

    /// The store in a PostgreSQL database.
    pub fn postgres(p: Postgres) -> Db {
        Db(Box::new(p))
    }

    /// See [`Backend::execute`].
    ///
    /// # Errors
    /// The database's message.
    pub fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, String> {
        self.0.execute(sql, params)
    }

    /// See [`Backend::query`].
    ///
    /// # Errors
    /// The database's message.
    pub fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, String> {
        self.0.query(sql, params)
    }

    /// The first row `sql` selects, if any.
    ///
    /// # Errors
    /// The database's message.
    pub fn query_opt(&self, sql: &str, params: &[Value]) -> Result<Option<Row>, String> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// See [`Backend::batch`].
    ///
    /// # Errors
    /// The database's message.
    pub fn batch(&self, sql: &str) -> Result<(), String> {
        self.0.batch(sql)
    }

    /// See [`Backend::shared`].
    pub fn shared(&self) -> bool {
        self.0.shared()
    }

    /// The database's schema bookkeeping (see [`Backend`]).
    pub fn backend(&self) -> &dyn Backend {
        self.0.as_ref()
    }

    /// Runs `f` in a transaction: committed when it returns `Ok`, rolled back otherwise.
    /// SQLite's is `IMMEDIATE` (it takes the write lock at once, so two writers wait rather
    /// than fail midway).
    ///
    /// # Errors
    /// `f`'s error, or the database's.
    pub fn transaction<T>(&self, f: impl FnOnce(&Db) -> Result<T, String>) -> Result<T, String> {
        self.in_transaction(true, f)
    }

    /// Runs `f` in a transaction that is always rolled back: what `f` would change, counted
    /// and not kept (a dry run).
    ///
    /// # Errors
    /// `f`'s error, or the database's.
    pub fn rehearse<T>(&self, f: impl FnOnce(&Db) -> Result<T, String>) -> Result<T, String> {
        self.in_transaction(false, f)
    }

    fn in_transaction<T>(
        &self,
        commit: bool,
        f: impl FnOnce(&Db) -> Result<T, String>,
    ) -> Result<T, String> {
        self.batch(self.0.begin())?;
        match f(self) {
            Ok(v) => match self.batch(if commit { "COMMIT" } else { "ROLLBACK" }) {
                Ok(()) => Ok(v),
                Err(e) => {
                    // Never leave the connection inside a transaction.
                    let _ = self.batch("ROLLBACK");
                    Err(e)
                }
            },
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// The SQLite file (the default store): `PRAGMA user_version` counts the migrations.
pub struct Sqlite(pub rusqlite::Connection);

impl Backend for Sqlite {
    fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, String> {
        self.0
            .execute(
                sql,
                rusqlite::params_from_iter(params.iter().map(to_sqlite)),
            )
            .map(|n| n as u64)
            .map_err(|e| e.to_string())
    }

    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, String> {
        let mut stmt = self.0.prepare(sql).map_err(|e| e.to_string())?;
        let n = stmt.column_count();
        let rows = stmt
            .query_map(
                rusqlite::params_from_iter(params.iter().map(to_sqlite)),
                |r| {
                    (0..n)
                        .map(|i| r.get::<_, rusqlite::types::Value>(i).map(from_sqlite))
                        .collect::<rusqlite::Result<Vec<Value>>>()
                        .map(Row)
                },
            )
            .map_err(|e| e.to_string())?;
        rows.collect::<rusqlite::Result<Vec<Row>>>()
            .map_err(|e| e.to_string())
    }

    fn batch(&self, sql: &str) -> Result<(), String> {
        self.0.execute_batch(sql).map_err(|e| e.to_string())
    }

    fn begin(&self) -> &'static str {
        "BEGIN IMMEDIATE"
    }

    fn shared(&self) -> bool {
        false
    }

    fn prepare_versions(&self) -> Result<(), String> {
        Ok(())
    }

    fn version(&self) -> Result<i64, String> {
        // `BEGIN IMMEDIATE` already holds the write lock.
        self.query("PRAGMA user_version", &[])?
            .first()
            .map_or(Ok(0), |r| r.get(0))
    }

    fn apply(&self, ddl: &str, version: i64) -> Result<(), String> {
        self.batch(ddl)?;
        self.batch(&format!("PRAGMA user_version = {version}"))
    }
}

impl Backend for Postgres {
    fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, String> {
        match self.call(Request::Execute(dollar(sql), params.to_vec()))? {
            Reply::Changed(n) => Ok(n),
            _ => Err("unexpected reply".into()),
        }
    }

    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, String> {
        match self.call(Request::Query(dollar(sql), params.to_vec()))? {
            Reply::Rows(rows) => Ok(rows),
            _ => Err("unexpected reply".into()),
        }
    }

    fn batch(&self, sql: &str) -> Result<(), String> {
        self.call(Request::Batch(sql.to_string())).map(drop)
    }

    fn begin(&self) -> &'static str {
        "BEGIN"
    }

    fn shared(&self) -> bool {
        true
    }

    fn prepare_versions(&self) -> Result<(), String> {
        // Daemons opening one new store at once: `CREATE TABLE IF NOT EXISTS` is not safe
        // against itself in PostgreSQL, so creating the version table waits for a lock.
        // A role allowed only to read and write the tables must not need CREATE once they exist.
        let exists = self
            .query(
                "SELECT CAST(to_regclass('sluice_schema') IS NOT NULL AS INTEGER)",
                &[],
            )?
            .first()
            .map_or(Ok(0), |r| r.get::<i64>(0))?;
        if exists == 1 {
            return Ok(());
        }
        self.batch("SELECT pg_advisory_lock(20932, 0)")?;
        let created =
            self.batch("CREATE TABLE IF NOT EXISTS sluice_schema (version BIGINT NOT NULL)");
        self.batch("SELECT pg_advisory_unlock(20932, 0)")?;
        created
    }

    fn version(&self) -> Result<i64, String> {
        self.batch("LOCK TABLE sluice_schema IN EXCLUSIVE MODE")?;
        let max: Option<i64> = self
            .query("SELECT max(version) FROM sluice_schema", &[])?
            .first()
            .map_or(Ok(None), |r| r.get(0))?;
        Ok(max.unwrap_or(0))
    }

    fn apply(&self, ddl: &str, version: i64) -> Result<(), String> {
        self.batch(&postgres_ddl(ddl))?;
        self.execute("DELETE FROM sluice_schema", &[])?;
        self.execute(
            "INSERT INTO sluice_schema (version) VALUES (?1)",
            &[Value::Int(version)],
        )
        .map(drop)
    }
}

/// A schema statement written for SQLite, as PostgreSQL takes it: `INTEGER` columns become
/// `BIGINT`, `REAL` ones `DOUBLE PRECISION` (the store reads and writes 64-bit values).
fn postgres_ddl(sql: &str) -> String {
    sql.replace("INTEGER", "BIGINT")
        .replace(" REAL", " DOUBLE PRECISION")
}

/// `?N` parameters as PostgreSQL writes them (`$N`).
fn dollar(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

fn to_sqlite(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as S;
    match v {
        Value::Null => S::Null,
        Value::Int(i) => S::Integer(*i),
        Value::Real(f) => S::Real(*f),
        Value::Text(s) => S::Text(s.clone()),
    }
}

fn from_sqlite(v: rusqlite::types::Value) -> Value {
    use rusqlite::types::Value as S;
    match v {
        S::Null => Value::Null,
        S::Integer(i) => Value::Int(i),
        S::Real(f) => Value::Real(f),
        S::Text(s) => Value::Text(s),
        S::Blob(b) => Value::Text(String::from_utf8_lossy(&b).into_owned()),
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::INT8 => (*f as i64).to_sql(ty, out),
                Type::INT4 => (*f as i32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => f.to_string().to_sql(ty, out),
                _ => f.to_sql(ty, out),
            },
            Value::Text(s) => s.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// What the connection thread is asked.
enum Request {
    Execute(String, Vec<Value>),
    Query(String, Vec<Value>),
    Batch(String),
}

enum Reply {
    Changed(u64),
    Rows(Vec<Row>),
    Done,
}

type Envelope = (Request, mpsc::Sender<Result<Reply, String>>);

/// A PostgreSQL connection on a thread of its own; it closes when this is dropped.
pub struct Postgres {
    requests: mpsc::Sender<Envelope>,
}

impl Postgres {
    /// Connects to `url` (a `postgres://` URL) as database sources do: TLS when the server
    /// offers it (libpq's `prefer`, the certificate not verified), a 10-second connect
    /// timeout.
    ///
    /// # Errors
    /// The connection's message (with no secret: the caller redacts it).
    pub fn connect(url: &str) -> Result<Postgres, String> {
        let url = url.to_string();
        let (requests, inbox) = mpsc::channel::<Envelope>();
        let (ready_tx, ready) = mpsc::channel();
        std::thread::Builder::new()
            .name("sluice-state-pg".into())
            .spawn(move || serve(url, inbox, ready_tx))
            .map_err(|e| format!("cannot start the state store's connection thread: {e}"))?;
        ready
            .recv()
            .map_err(|_| "the state store's connection thread stopped".to_string())??;
        Ok(Postgres { requests })
    }

    fn call(&self, request: Request) -> Result<Reply, String> {
        let (reply, answer) = mpsc::channel();
        self.requests
            .send((request, reply))
            .map_err(|_| "the connection to the state store is closed".to_string())?;
        answer
            .recv()
            .map_err(|_| "the connection to the state store is closed".to_string())?
    }
}

/// The connection thread: connects, then answers requests until its sender is dropped.
fn serve(url: String, inbox: mpsc::Receiver<Envelope>, ready: mpsc::Sender<Result<(), String>>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let connect = || {
        runtime.block_on(crate::pg::connect_prefer(
            &url,
            std::time::Duration::from_secs(10),
            "sluice-state",
        ))
    };
    let mut client = match connect() {
        Ok(c) => {
            let _ = ready.send(Ok(()));
            c
        }
        Err(e) => {
            let _ = ready.send(Err(e.0));
            return;
        }
    };
    // A connection lost (a server restart, a failover) is opened again for the next request
    // outside a transaction; inside one, every request fails until the transaction ends, so
    // no statement of a half-lost transaction is ever committed on its own.
    let mut in_transaction = false;
    while let Ok((request, reply)) = inbox.recv() {
        let (begins, ends) = match &request {
            Request::Batch(s) => (s == "BEGIN", s == "COMMIT" || s == "ROLLBACK"),
            _ => (false, false),
        };
        if client.is_closed() {
            if in_transaction {
                in_transaction = !ends;
                let _ = reply.send(Err(
                    "the connection to the state store was lost during a transaction; nothing of it was committed".into(),
                ));
                continue;
            }
            match connect() {
                Ok(c) => client = c,
                Err(e) => {
                    let _ = reply.send(Err(e.0));
                    continue;
                }
            }
        }
        let answer = runtime.block_on(answer(&client, request));
        if begins && answer.is_ok() {
            in_transaction = true;
        }
        if ends {
            in_transaction = false;
        }
        let _ = reply.send(answer);
    }
}

async fn answer(client: &tokio_postgres::Client, request: Request) -> Result<Reply, String> {
    let message = |e: tokio_postgres::Error| crate::pg::message(&e);
    match request {
        Request::Execute(sql, params) => {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
            client
                .execute(&sql, &refs)
                .await
                .map(Reply::Changed)
                .map_err(message)
        }
        Request::Query(sql, params) => {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
            let rows = client.query(&sql, &refs).await.map_err(message)?;
            rows.iter()
                .map(pg_row)
                .collect::<Result<_, _>>()
                .map(Reply::Rows)
        }
        Request::Batch(sql) => client
            .batch_execute(&sql)
            .await
            .map(|_| Reply::Done)
            .map_err(message),
    }
}

fn pg_row(row: &tokio_postgres::Row) -> Result<Row, String> {
    let get = |i: usize| -> Result<Value, tokio_postgres::Error> {
        Ok(match *row.columns()[i].type_() {
            Type::INT8 => row.get::<_, Option<i64>>(i).map_or(Value::Null, Value::Int),
            Type::INT4 => row
                .get::<_, Option<i32>>(i)
                .map_or(Value::Null, |v| Value::Int(v.into())),
            Type::INT2 => row
                .get::<_, Option<i16>>(i)
                .map_or(Value::Null, |v| Value::Int(v.into())),
            Type::FLOAT8 => row
                .get::<_, Option<f64>>(i)
                .map_or(Value::Null, Value::Real),
            Type::FLOAT4 => row
                .get::<_, Option<f32>>(i)
                .map_or(Value::Null, |v| Value::Real(v.into())),
            Type::BOOL => row
                .get::<_, Option<bool>>(i)
                .map_or(Value::Null, |v| Value::Int(v.into())),
            _ => row
                .try_get::<_, Option<String>>(i)?
                .map_or(Value::Null, Value::Text),
        })
    };
    (0..row.len())
        .map(|i| get(i).map_err(|e| format!("column {i}: {e}")))
        .collect::<Result<_, _>>()
        .map(Row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_types_are_rewritten_for_postgres() {
        assert_eq!(
            dollar("SELECT a FROM t WHERE b = ?1 AND c = ?12 AND d = '?'"),
            "SELECT a FROM t WHERE b = $1 AND c = $12 AND d = '?'"
        );
        assert_eq!(
            postgres_ddl("n INTEGER NOT NULL, m REAL, label TEXT"),
            "n BIGINT NOT NULL, m DOUBLE PRECISION, label TEXT"
        );
    }

    #[test]
    fn a_sqlite_transaction_rolls_back_on_error_and_values_round_trip() {
        let db = Db::sqlite(rusqlite::Connection::open_in_memory().unwrap());
        db.batch("CREATE TABLE t (a TEXT PRIMARY KEY, n INTEGER, f REAL)")
            .unwrap();
        let failed: Result<(), String> = db.transaction(|db| {
            db.execute("INSERT INTO t VALUES (?1, ?2, ?3)", vals!["x", 1i64, 0.5])?;
            Err("stop".into())
        });
        assert_eq!(failed, Err("stop".into()));
        assert!(db.query("SELECT a FROM t", &[]).unwrap().is_empty());
        db.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3)",
            vals!["y", Some(7u64), Option::<f64>::None],
        )
        .unwrap();
        let row = db.query_opt("SELECT a, n, f FROM t", &[]).unwrap().unwrap();
        assert_eq!(row.get::<String>(0).unwrap(), "y");
        assert_eq!(row.get::<u64>(1).unwrap(), 7);
        assert_eq!(row.get::<Option<f64>>(2).unwrap(), None);
    }
}
