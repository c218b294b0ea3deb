//! Integration tests: one binary (link time matters with DataFusion), one module per area.
//!
//! Tests that run `sluice` copy the project's files (sluice.toml, mappings, jobs, samples) into
//! a scratch folder and run the real binary there, showing its stdout and stderr on failure.

mod common;

mod config_errors;
mod crash_safety;
mod databases;
mod docs_reference;
mod incremental_files;
mod memory_limit;
mod object_store;
mod operations;
mod plan_golden;
mod quality;
mod run_flights;
mod run_params;
mod schedule;
mod sources;
mod state_postgres;
