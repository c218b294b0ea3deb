//! A database kind is one module: a unit type implementing [`Database`] (its SQL dialect and
//! its driver's operations) and, for targets, a [`Load`].
//!
//! ```text
//! ConnectionKind ──of──▶ Dialect = &'static dyn Database
//!   dialect:  quote, column types, cursor placeholders, sluice_runs' upsert
//!   driver:   describe ─▶ extract (sources) · table_columns, read_run_record, begin ─▶ Load (targets)
//! Load: write* ─▶ finish ─▶ commit (db/load.rs applies the mode) | abort
//! ```
//!
//! Adding a database kind is a `ConnectionKind` variant, one arm in [`of`], and one module
//! implementing these two traits (plus a `LoadSession` for its commit, see `db/load.rs`).

use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use futures::future::BoxFuture;

use super::extract::{BatchSender, CursorValue, Extraction, Relation};
use super::runs::RunRow;
use super::sink::{ColumnType, DbTarget, TableColumn, TargetColumn};
use super::{Connector, DbColumn, TableName};
use crate::config::spec::ConnectionKind;
use crate::error::Result;
use crate::model::FieldType;
use crate::report::LoadStats;

/// A database kind as the code that writes SQL and drives connections sees it.
pub type Dialect = &'static dyn Database;

/// The kind of a connection: the one place that lists them.
pub fn of(kind: ConnectionKind) -> Dialect {
    match kind {
        ConnectionKind::Postgres => &super::postgres::Postgres,
        ConnectionKind::Mysql => &super::mysql::Mysql,
        ConnectionKind::Sqlite => &super::sqlite::Sqlite,
    }
}

/// One database kind: its SQL dialect (sync methods) and its driver (async, boxed so that
/// kinds are chosen at run time).
pub trait Database: Send + Sync {
    /// The identifier quote character.
    fn quote_char(&self) -> char {
        '"'
    }

    /// `name` as a quoted identifier; a quote character inside is doubled (SQL standard, and
    /// MySQL's rule for backticks).
    fn quote(&self, name: &str) -> String {
        let q = self.quote_char();
        let mut s = String::with_capacity(name.len() + 2);
        s.push(q);
        for c in name.chars() {
            if c == q {
                s.push(q);
            }
            s.push(c);
        }
        s.push(q);
        s
    }

    /// The SQL type of a model field's column (`c` gives its length limit and whether it is
    /// part of the key).
    fn field_type(&self, ty: FieldType, c: &TargetColumn) -> String;

    /// The SQL type of the rule-flags column (`_dq_flags`, a list of rule names).
    fn flags_type(&self) -> &'static str;

    /// The SQL type of scd2's `row_hash` (64 hex digits).
    fn hash_type(&self) -> &'static str {
        "text"
    }

    /// The SQL type of a target column.
    fn sql_type(&self, c: &TargetColumn) -> String {
        match c.ty {
            ColumnType::Field(t) => self.field_type(t, c),
            ColumnType::Flags => self.flags_type().into(),
            ColumnType::Hash => self.hash_type().into(),
        }
    }

    /// Whether a type as the database prints it (`have`) is the expected one (`want`); both
    /// are lower case without spaces or character set.
    fn same_type(&self, want: &str, have: &str) -> bool {
        want == have
    }

    /// A bound cursor parameter (the `n`th, 1-based) compared with a column of `db_type`.
    fn placeholder(&self, n: usize, db_type: &str, v: CursorValue) -> String;

    /// The cursor column (quoted) as compared with a bound of `v`'s type.
    fn cursor_column(&self, column: &str, _v: CursorValue) -> String {
        column.to_string()
    }

    /// The type of `sluice_runs.record` (a JSON document of any length).
    fn record_type(&self) -> &'static str {
        "TEXT"
    }

    /// The upsert of one run row into `runs` (quoted); its parameters are job,
    /// target_table, run_id and record, in that order.
    fn runs_upsert(&self, runs: &str) -> String;

    /// Why `table` cannot be a target of this kind, as (message, hint).
    fn table_name_problem(&self, _table: &TableName) -> Option<(String, String)> {
        None
    }

    /// The connection URL as the driver opens it, relative paths taken from `root`.
    fn resolve_url(&self, url: String, _root: &Path) -> String {
        url
    }

    /// The columns of a table or query with their Arrow types, reading no row.
    ///
    /// # Errors
    /// [`crate::error::Error::Connection`]; [`crate::error::Error::Source`] naming every
    /// column whose type Sluice does not read.
    fn describe<'a>(
        &'a self,
        c: &'a Connector,
        source: &'a str,
        relation: &'a Relation,
    ) -> BoxFuture<'a, Result<Vec<DbColumn>>>;

    /// Streams `sql`'s rows (bound to `params`) as batches of `columns` into `sender`.
    ///
    /// # Errors
    /// [`crate::error::Error::Connection`], or a value that does not convert, with its row and
    /// column.
    fn extract<'a>(
        &'a self,
        ext: &'a Extraction,
        sql: &'a str,
        params: &'a [CursorValue],
        columns: &'a [DbColumn],
        sender: BatchSender,
    ) -> BoxFuture<'a, Result<()>>;

    /// The columns of an existing table, or `None` when it does not exist.
    ///
    /// # Errors
    /// [`crate::error::Error::Connection`].
    fn table_columns<'a>(
        &'a self,
        c: &'a Connector,
        table: &'a TableName,
    ) -> BoxFuture<'a, Result<Option<Vec<TableColumn>>>>;

    /// The `record` of `job` and `key` in `sluice_runs` beside `target`, if both exist.
    ///
    /// # Errors
    /// [`crate::error::Error::Connection`].
    fn read_run_record<'a>(
        &'a self,
        c: &'a Connector,
        target: &'a TableName,
        job: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>>>;

    /// Connects, creates or checks the table, and opens the load's staging.
    ///
    /// # Errors
    /// [`crate::error::Error::Connection`]; [`crate::error::Error::Target`] when the table
    /// differs from the model.
    fn begin<'a>(&'a self, t: &'a DbTarget) -> BoxFuture<'a, Result<Box<dyn Load>>>;
}

/// A load in progress into one table: rows are staged by `write`, and nothing is visible to
/// readers until `commit` succeeds.
pub trait Load: Send {
    /// Stages a batch of rows in the target's staged columns.
    ///
    /// # Errors
    /// [`crate::error::Error::Connection`].
    fn write<'a>(&'a mut self, batch: &'a RecordBatch) -> BoxFuture<'a, Result<()>>;

    /// Ends the staging; returns the rows staged.
    ///
    /// # Errors
    /// [`crate::error::Error::Connection`].
    fn finish(&mut self) -> BoxFuture<'_, Result<u64>>;

    /// Applies the load mode and commits with `run`'s record (`db/load.rs`).
    ///
    /// # Errors
    /// [`crate::error::Error::Connection`] or [`crate::error::Error::Target`]; the table is
    /// then as before unless the error says the outcome is unknown.
    fn commit<'a>(
        self: Box<Self>,
        t: &'a DbTarget,
        run: &'a RunRow,
    ) -> BoxFuture<'a, Result<LoadStats>>;

    /// Abandons the load; the table is as before.
    fn abort(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// The driver methods of a [`Database`] impl that hand over to the module's own `describe`,
/// `extract` and `read_run_record` (async functions with the trait's parameters); used
/// inside `impl Database for ...` of each kind's module.
macro_rules! delegated_driver_fns {
    () => {
        fn describe<'a>(
            &'a self,
            c: &'a $crate::db::Connector,
            source: &'a str,
            relation: &'a $crate::db::extract::Relation,
        ) -> futures::future::BoxFuture<'a, $crate::error::Result<Vec<$crate::db::DbColumn>>> {
            Box::pin(describe(c, source, relation))
        }

        fn extract<'a>(
            &'a self,
            ext: &'a $crate::db::extract::Extraction,
            sql: &'a str,
            params: &'a [$crate::db::extract::CursorValue],
            columns: &'a [$crate::db::DbColumn],
            sender: $crate::db::extract::BatchSender,
        ) -> futures::future::BoxFuture<'a, $crate::error::Result<()>> {
            Box::pin(extract(ext, sql, params, columns, sender))
        }

        fn read_run_record<'a>(
            &'a self,
            c: &'a $crate::db::Connector,
            target: &'a $crate::db::TableName,
            job: &'a str,
            key: &'a str,
        ) -> futures::future::BoxFuture<'a, $crate::error::Result<Option<String>>> {
            Box::pin(read_run_record(c, target, job, key))
        }
    };
}
pub(crate) use delegated_driver_fns;

/// `impl Load for $load`, for a load type whose own `write`, `finish`, `commit` and `abort`
/// are async functions with the trait's parameters.
macro_rules! async_load {
    ($load:ty) => {
        impl $crate::db::Load for $load {
            fn write<'a>(
                &'a mut self,
                batch: &'a datafusion::arrow::array::RecordBatch,
            ) -> futures::future::BoxFuture<'a, $crate::error::Result<()>> {
                Box::pin(<$load>::write(self, batch))
            }

            fn finish(&mut self) -> futures::future::BoxFuture<'_, $crate::error::Result<u64>> {
                Box::pin(<$load>::finish(self))
            }

            fn commit<'a>(
                self: Box<Self>,
                t: &'a $crate::db::sink::DbTarget,
                run: &'a $crate::db::runs::RunRow,
            ) -> futures::future::BoxFuture<'a, $crate::error::Result<$crate::report::LoadStats>>
            {
                Box::pin(<$load>::commit(*self, t, run))
            }

            fn abort(self: Box<Self>) -> futures::future::BoxFuture<'static, ()> {
                Box::pin(<$load>::abort(*self))
            }
        }
    };
}
pub(crate) use async_load;
