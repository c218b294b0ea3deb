//! Targets ("sinks" in code): where canonical rows are loaded, staged and committed atomically.
//!
//! Every sink follows the same contract, from DESIGN.md's "nothing half-written":
//!
//! 1. `begin` — called once per run, before any row. Takes the target's lock (one writer at a
//!    time), clears what an earlier crashed run left in staging, and prepares a staging area.
//!    Nothing a reader can see changes.
//! 2. `write` — called for each batch of valid canonical rows, in any number. Rows go to
//!    staging only.
//! 3. `commit` — called at most once, after every row is written **and** the dataset checks
//!    passed. Publishes the staged state in one atomic step; after it returns `Ok`, readers see
//!    the new state, and before it, the previous one.
//! 4. `abort` — called instead of `commit` on any failure (and implied by dropping the sink);
//!    removes staging. The published state is untouched.
//!
//! A crash or `kill -9` at any moment leaves the previously published state intact: at worst a
//! staging folder remains, which the next `begin` removes.

pub mod delta;
pub mod object_parquet;
pub mod parquet;
pub mod staged;
