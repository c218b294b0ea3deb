//! Sluice: a declarative ETL/batch engine on Apache DataFusion.
//!
//! ```text
//! TOML files ──config──▶ Project ──plan::compile──▶ CompiledJob (DataFusion LogicalPlan)
//!            (every error at once,   (pure: schema lookups only)
//!             with file and line)
//! CompiledJob ──run::run──▶ valid rows ──▶ sink (staged, committed atomically)
//!                      └──▶ rejected rows + reasons ──▶ quarantine
//!                      └──▶ dataset checks ──▶ run report (state folder)
//! ```
//!
//! The library is the product; `engine/main.rs` is a thin command line over it.

pub mod alerts;
pub mod backfill;
pub mod checks;
pub mod commit;
pub mod config;
pub mod contract;
pub mod csv_reader;
pub mod daemon;
pub mod db;
pub mod diagnostic;
pub mod error;
pub mod fsutil;
pub mod functions;
pub mod inspect;
pub mod invalid;
pub mod logging;
pub mod mapping_test;
pub mod metrics;
pub mod model;
pub mod pg;
pub mod plan;
pub mod producer;
pub mod quality;
pub mod quarantine;
pub mod reason;
pub mod record_limit;
pub mod recovery;
pub mod replay;
pub mod report;
pub mod request;
pub mod retention;
pub mod row_errors;
pub mod run;
pub mod server;
pub mod sink;
pub mod source;
pub mod state;
pub mod status;
pub mod store;
pub mod validate;
