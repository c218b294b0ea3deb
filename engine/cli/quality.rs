//! `sluice quality JOB`: per rule and check, the values of the last runs.

use std::path::Path;

use sluice::error::{Error, EXIT_OK};

use super::*;

pub(crate) fn quality(explicit: Option<&Path>, job: &str, last: usize) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let project = load_for_job(&root, job)?;
    let job = project.job(job).map_err(|d| Error::config(*d))?;
    let store = sluice::state::StateStore::of(&project)?;
    out!(
        "{}",
        sluice::inspect::quality_trend(&store, &job.name, last)?
    );
    Ok(EXIT_OK)
}
