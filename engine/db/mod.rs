//! Databases as sources and targets: PostgreSQL, MySQL/MariaDB and SQLite.
//!
//! ```text
//! [connections.x] ──resolve (secrets, TLS, timeouts)──▶ Connector
//! [sources.s] connection + table|query ──describe──▶ columns with exact Arrow types
//!    ──scan(projection)──▶ SELECT <used columns> FROM ... WHERE <watermark range> ──▶ batches
//! canonical batches ──▶ DbSink: staging (COPY binary / multi-row INSERT / prepared INSERT)
//!    ──commit: one transaction──▶ append | overwrite | merge | scd2
//! ```
//!
//! Drivers: `tokio-postgres` (binary protocol, `COPY ... (FORMAT binary)`), `mysql_async`
//! (binary protocol), and `rusqlite` (the SQLite library compiled in). The choice and the
//! measurements behind it are in `docs/decisions/0005-database-drivers.md`; the type mapping
//! is documented in `docs/reference.md` ("Database sources").
//!
//! Identifiers are always quoted ([`Dialect::quote`]); values are always bound as parameters
//! or sent in the binary COPY stream, never spliced into SQL text.

pub mod columns;
pub mod extract;
pub mod kind;
pub mod load;
pub mod mysql;
pub mod postgres;
pub mod runs;
pub mod sink;
pub mod sqlite;
pub mod values;

pub use kind::{Database, Dialect, Load};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::DataType;

use crate::config::interpolate::Redactor;
use crate::config::spec::{ConnectionKind, ConnectionSpec, SslMode};
use crate::config::{parse_duration, Project};
use crate::error::{Error, Result};

pub use crate::config::TableName;

impl TableName {
    /// The quoted name (`"public"."flights"`).
    pub fn quoted(&self, d: Dialect) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", d.quote(s), d.quote(&self.name)),
            None => d.quote(&self.name),
        }
    }

    /// A sibling table in the same schema (`"public"."flights__sluice_stage"`).
    pub fn sibling(&self, suffix: &str) -> TableName {
        TableName {
            schema: self.schema.clone(),
            name: format!("{}{suffix}", self.name),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A connection resolved for use: secrets read, paths absolute, durations parsed. Its `Debug`
/// output never shows the URL.
#[derive(Clone)]
pub struct Connector {
    /// Name in `sluice.toml`.
    pub name: String,
    /// Database kind.
    pub kind: ConnectionKind,
    /// The URL with secrets resolved. Never printed: use [`Connector::shown`].
    url: String,
    /// The URL as written (secrets as `${...}` references), for messages.
    pub shown: String,
    /// TLS mode.
    pub sslmode: SslMode,
    /// CA certificate file (absolute).
    pub ca_file: Option<PathBuf>,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest a statement may run; none for no limit.
    pub statement_timeout: Option<Duration>,
    /// Connections one run may open at a time.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// The pool's size (for messages).
    pub pool_size: u32,
    /// Hides secrets in messages.
    pub redactor: Redactor,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default pool size.
pub const DEFAULT_POOL_SIZE: u32 = 4;

impl Connector {
    /// Resolves connection `name` of `project`, registering its secrets with `redactor`.
    ///
    /// # Errors
    /// [`Error::Source`]-like messages naming the connection: unknown name, an unset
    /// `${env:...}`, an unreadable `${file:...}`.
    pub fn resolve(project: &Project, name: &str, redactor: &Redactor) -> Result<Connector> {
        let spec: &ConnectionSpec =
            project
                .settings
                .connections
                .get(name)
                .ok_or_else(|| Error::Connection {
                    connection: name.to_string(),
                    message: "no such connection in sluice.toml".into(),
                    transient: false,
                })?;
        let err = |message: String| Error::Connection {
            connection: name.to_string(),
            message,
            transient: false,
        };
        let url = redactor
            .resolve(spec.url.get_ref(), &project.root)
            .map_err(|e| err(e.into()))?;
        let duration = |v: &Option<serde_spanned::Spanned<String>>| -> Result<Option<Duration>> {
            v.as_ref()
                .map(|d| parse_duration(d.get_ref()).map_err(|e| err(e.into())))
                .transpose()
        };
        let url = kind::of(spec.kind).resolve_url(url, &project.root);
        Ok(Connector {
            name: name.to_string(),
            kind: spec.kind,
            url,
            shown: spec.url.get_ref().clone(),
            sslmode: spec.sslmode.unwrap_or_default(),
            ca_file: spec
                .ca_file
                .as_ref()
                .map(|p| project.root.join(p.get_ref())),
            connect_timeout: duration(&spec.connect_timeout)?.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            statement_timeout: duration(&spec.statement_timeout)?,
            slots: Arc::new(tokio::sync::Semaphore::new(
                spec.pool_size.unwrap_or(DEFAULT_POOL_SIZE) as usize,
            )),
            pool_size: spec.pool_size.unwrap_or(DEFAULT_POOL_SIZE),
            redactor: redactor.clone(),
        })
    }

    /// [`Connector::resolve`], once per name per run: every source and the target of a run
    /// share one pool of `pool_size` slots per connection.
    ///
    /// # Errors
    /// As [`Connector::resolve`].
    pub fn shared(
        project: &Project,
        name: &str,
        redactor: &Redactor,
        cache: &mut std::collections::HashMap<String, Connector>,
    ) -> Result<Connector> {
        if let Some(c) = cache.get(name) {
            return Ok(c.clone());
        }
        let c = Connector::resolve(project, name, redactor)?;
        cache.insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// A connector to a URL given in code (tests, benchmarks); the URL is shown as written.
    pub fn from_url(kind: ConnectionKind, url: &str) -> Connector {
        Connector {
            name: "adhoc".into(),
            kind,
            url: url.to_string(),
            shown: url.to_string(),
            sslmode: SslMode::Prefer,
            ca_file: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_timeout: None,
            slots: Arc::new(tokio::sync::Semaphore::new(DEFAULT_POOL_SIZE as usize)),
            pool_size: DEFAULT_POOL_SIZE,
            redactor: Redactor::default(),
        }
    }

    /// Waits for one of the connection's `pool_size` slots, at most `connect_timeout`.
    ///
    /// # Errors
    /// [`Error::Connection`] when every slot stayed taken (the run needs more connections
    /// at once than `pool_size` allows: one per source being read, plus one for a target).
    pub async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        match tokio::time::timeout(self.connect_timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(e)) => Err(self.error("waiting for a connection slot", e, false)),
            Err(_) => Err(self.error(
                "waiting for a connection slot",
                format!(
                    "all {} connections of the pool stayed in use for {:?} (connect_timeout); a run needs one per source it reads at once plus one for a target: raise `pool_size`",
                    self.pool_size, self.connect_timeout
                ),
                false,
            )),
        }
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        kind::of(self.kind)
    }

    /// The resolved URL, for drivers only.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The SQLite file (for SQLite connections).
    pub fn sqlite_path(&self) -> &Path {
        Path::new(&self.url)
    }

    /// An error about this connection, redacted; `transient` when retrying may succeed.
    pub fn error(&self, what: &str, e: impl std::fmt::Display, transient: bool) -> Error {
        Error::Connection {
            connection: self.name.clone(),
            message: self.redactor.redact(&format!("{what}: {e}")),
            transient,
        }
    }
}

/// A column of a database source as the database describes it.
#[derive(Debug, Clone)]
pub struct DbColumn {
    /// Column name.
    pub name: String,
    /// The database's type name (`numeric(12,2)`, `timestamp with time zone`), for messages
    /// and for casting watermark parameters.
    pub db_type: String,
    /// The Arrow type values arrive as.
    pub data_type: DataType,
}

/// Tells the user every column whose type Sluice does not read (`(column, type, cast)`), and
/// how to read them anyway.
pub fn unsupported_types(
    source: &str,
    c: &Connector,
    relation: &extract::Relation,
    columns: &[(String, String, String)],
) -> Error {
    let listed: Vec<String> = columns
        .iter()
        .map(|(col, what, _)| format!("column `{col}` has type {what}"))
        .collect();
    let casts: Vec<String> = columns
        .iter()
        .map(|(col, _, cast)| format!("{cast} AS {col}"))
        .collect();
    let whole = match relation {
        extract::Relation::Table(_) => {
            " (a `table` source reads every column, for the quarantine, even those the mapping does not use)"
        }
        extract::Relation::Query(_) => "",
    };
    Error::Source {
        source_name: source.to_string(),
        path: format!("{}:{}", c.name, relation.label()),
        message: format!(
            "{}: Sluice does not convert these types (it would lose information or guess){whole}; read the columns you need through `query = 'SELECT ..., {} FROM ...'` with supported types (the type table is in docs/reference.md, \"Databases\")",
            listed.join(", "),
            casts.join(", ")
        ),
    }
}

/// Which rows of its incremental sources a run reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ExtractMode {
    /// Rows above the watermark (minus the lookback); everything on the first run.
    #[default]
    Incremental,
    /// Every row (`sluice run --full-refresh`).
    FullRefresh,
    /// Rows with `from <= cursor < to` (`sluice backfill`); the watermark does not move.
    Backfill {
        /// Inclusive lower bound, as written.
        from: String,
        /// Exclusive upper bound, as written.
        to: String,
    },
}

/// Describes a database source, works out the cursor range of this run, and returns it as a
/// [`crate::source::ScannedSource`] (typed columns plus the hidden `__file`, `__line` and,
/// when driving, row-counter columns) with its [`extract::Extraction`].
///
/// # Errors
/// [`Error::Connection`] when the database cannot be reached; [`Error::Source`] for an
/// unsupported column type, a cursor column that does not exist or is not a time or integer,
/// or a bad backfill bound.
#[allow(clippy::too_many_arguments)]
pub async fn scan(
    ctx: &datafusion::prelude::SessionContext,
    project: &Project,
    job: &str,
    name: &str,
    alias: &str,
    spec: &crate::config::spec::DbSourceSpec,
    driving: bool,
    redactor: &Redactor,
    mode: &ExtractMode,
    connectors: &mut std::collections::HashMap<String, Connector>,
) -> Result<(crate::source::ScannedSource, Arc<extract::Extraction>)> {
    use crate::source::{ident_col, DRIVING_ROW_COLUMN, FILE_COLUMN, LINE_COLUMN};
    use datafusion::functions_window::expr_fn::row_number;
    use datafusion::logical_expr::{cast, col, lit};
    use extract::Relation;

    let conn_name = spec.connection.get_ref().clone();
    let connector = Connector::shared(project, &conn_name, redactor, connectors)?;
    let relation = match (&spec.table, &spec.query) {
        (Some(t), _) => Relation::Table(
            TableName::parse(t.get_ref()).map_err(|e| Error::source(name, t.get_ref(), e))?,
        ),
        (None, Some(q)) => Relation::Query(q.get_ref().clone()),
        (None, None) => return Err(Error::Internal(format!("source `{name}` reads nothing"))),
    };
    let shown = match &relation {
        Relation::Table(t) => format!("{conn_name}:{t}"),
        Relation::Query(_) => format!("{conn_name}:query"),
    };
    let columns = connector
        .dialect()
        .describe(&connector, name, &relation)
        .await?;
    let src_err = |m: String| Error::source(name, &shown, m);

    let (cursor, range, previous) = match &spec.incremental {
        Some(inc) => {
            let planned = plan_cursor(project, job, name, inc, &columns, mode, &src_err)?;
            (Some(planned.cursor), Some(planned.range), planned.previous)
        }
        None => (None, None, None),
    };

    let ext = Arc::new(extract::Extraction {
        source: name.to_string(),
        connector,
        relation,
        columns,
        range,
        cursor,
        previous,
        max_cursor: std::sync::Mutex::new(None),
        rows: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        batch_size: ctx.state().config().batch_size(),
        last_sql: std::sync::Mutex::new(None),
    });
    let err = |e: datafusion::error::DataFusionError| Error::source(name, &shown, e.to_string());
    let row_col = "__sluice_row";
    let df = ctx
        .read_table(Arc::new(extract::DbTable::new(ext.clone())))
        .map_err(err)?
        .window(vec![row_number().alias(row_col)])
        .map_err(err)?;
    let mut exprs: Vec<datafusion::logical_expr::Expr> =
        ext.columns.iter().map(|c| ident_col(&c.name)).collect();
    exprs.push(lit(redactor.redact(&shown)).alias(FILE_COLUMN));
    exprs.push(cast(col(row_col), DataType::Int64).alias(LINE_COLUMN));
    if driving {
        exprs.push(col(row_col).alias(DRIVING_ROW_COLUMN));
    }
    let frame = df.select(exprs).map_err(err)?.alias(alias).map_err(err)?;
    let scanned = crate::source::ScannedSource {
        alias: alias.to_string(),
        name: name.to_string(),
        format: crate::config::spec::SourceFormat::Database,
        new_files: None,
        files: vec![redactor.redact(&shown)],
        columns: ext
            .columns
            .iter()
            .map(|c| crate::source::SourceColumn {
                name: c.name.clone(),
                data_type: c.data_type.clone(),
                parsed: false,
            })
            .collect(),
        frame,
        records: Some(ext.rows.clone()),
    };
    Ok((scanned, ext))
}

/// An incremental source's cursor and the range this run reads.
struct PlannedCursor {
    /// The cursor column's position and kind.
    cursor: (usize, extract::CursorKind),
    /// The range of cursor values this run reads, and why.
    range: extract::CursorRange,
    /// The stored watermark, if any (the run's new one must not move below it).
    previous: Option<extract::CursorValue>,
}

/// Plans the cursor of an incremental source: the column must exist and be a timestamp,
/// date or integer; the lookback must fit its kind; the stored watermark must be a value of
/// this column. The range is every row (first run, `--full-refresh`), `from <= c < to` for a
/// backfill, or above the watermark minus the lookback.
///
/// # Errors
/// [`Error::Source`] for each of those mismatches, or an unreadable state store.
#[allow(clippy::too_many_arguments)]
fn plan_cursor(
    project: &Project,
    job: &str,
    name: &str,
    inc: &crate::config::spec::CursorSpec,
    columns: &[DbColumn],
    mode: &ExtractMode,
    src_err: &(dyn Fn(String) -> Error + Sync),
) -> Result<PlannedCursor> {
    use extract::{CursorKind, CursorValue};
    let column = inc.column.get_ref();
    let idx = columns
        .iter()
        .position(|c| &c.name == column)
        .ok_or_else(|| {
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            src_err(format!(
                "the incremental column `{column}` is not a column of the source (columns: {})",
                names.join(", ")
            ))
        })?;
    let kind = CursorKind::of(&columns[idx].data_type).ok_or_else(|| {
        src_err(format!(
            "the incremental column `{column}` is {}, but a cursor must be a timestamp, date or integer column",
            columns[idx].db_type
        ))
    })?;
    // A lookback of the wrong kind is an error now, not on the run after the first.
    if let Some(lb) = &inc.lookback {
        let zero = match kind {
            CursorKind::Integer => CursorValue::Int(0),
            CursorKind::Timestamp { .. } => CursorValue::Micros(0),
            CursorKind::Date => CursorValue::Days(0),
        };
        zero.minus(lb.get_ref()).map_err(|e| src_err(e.into()))?;
    }
    let store = crate::state::StateStore::of(project)?;
    let stored = store.watermark(job, name)?;
    if let (Some(w), false) = (&stored, *mode == ExtractMode::FullRefresh) {
        if &w.cursor_column != column {
            return Err(src_err(format!(
                "the stored watermark ({}, run {}) is a value of column `{}`, but the incremental column is now `{column}`; run once with --full-refresh to start over",
                w.value, w.run_id, w.cursor_column
            )));
        }
    }
    let previous = stored
        .as_ref()
        .and_then(|w| CursorValue::parse(&w.value, kind).ok());
    let (lower, upper, why) = cursor_bounds(inc, column, kind, stored.as_ref(), mode, src_err)?;
    let range = extract::CursorRange {
        column: column.clone(),
        db_type: columns[idx].db_type.clone(),
        lower,
        upper,
        why,
    };
    Ok(PlannedCursor {
        cursor: (idx, kind),
        range,
        previous,
    })
}

/// A cursor bound: the value and whether it is included.
type Bound = Option<(extract::CursorValue, bool)>;

/// The lower and upper bounds this run reads, and why (shown by `sluice plan`).
fn cursor_bounds(
    inc: &crate::config::spec::CursorSpec,
    column: &str,
    kind: extract::CursorKind,
    stored: Option<&crate::state::StoredWatermark>,
    mode: &ExtractMode,
    src_err: &(dyn Fn(String) -> Error + Sync),
) -> Result<(Bound, Bound, String)> {
    use extract::CursorValue;
    match (mode, stored) {
        (ExtractMode::FullRefresh, _) => Ok((
            None,
            None,
            "--full-refresh: every row is read; the watermark is set from them".into(),
        )),
        (ExtractMode::Backfill { from, to }, _) => {
            let from_v =
                CursorValue::parse(from, kind).map_err(|e| src_err(format!("--from: {e}")))?;
            let to_v = CursorValue::parse(to, kind).map_err(|e| src_err(format!("--to: {e}")))?;
            if to_v <= from_v {
                return Err(src_err(format!(
                    "--to ({to}) must be after --from ({from}): a backfill reads from <= {column} < to"
                )));
            }
            Ok((
                Some((from_v, true)),
                Some((to_v, false)),
                format!("backfill {from} <= {column} < {to}; the watermark does not move"),
            ))
        }
        (ExtractMode::Incremental, None) => Ok((
            None,
            None,
            "no watermark yet (first run): every row is read".into(),
        )),
        (ExtractMode::Incremental, Some(w)) => {
            let wv = CursorValue::parse(&w.value, kind).map_err(|e| {
                src_err(format!(
                    "the stored watermark does not fit the column any more ({e}); run with --full-refresh"
                ))
            })?;
            let (lower, why) = match &inc.lookback {
                Some(lb) => {
                    let v = wv.minus(lb.get_ref()).map_err(|e| src_err(e.into()))?;
                    let lb_text = match lb.get_ref() {
                        crate::config::spec::Lookback::Number(n) => n.to_string(),
                        crate::config::spec::Lookback::Duration(d) => d.clone(),
                    };
                    (
                        v,
                        format!(
                            "watermark {} (run {}) minus lookback {lb_text}",
                            wv.to_text(),
                            w.run_id
                        ),
                    )
                }
                None => (wv, format!("watermark {} (run {})", wv.to_text(), w.run_id)),
            };
            Ok((Some((lower, false)), None, why))
        }
    }
}
