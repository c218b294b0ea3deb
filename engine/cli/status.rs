//! `sluice status` (every job: schedule, last run, next run, health) and `sluice runs` (the
//! run history), read from the config and the state store.

use std::path::Path;

use sluice::error::{Error, EXIT_OK};

use super::*;

pub(crate) fn status(explicit: Option<&Path>, json: bool) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let (project, diags) = Project::load_partial(&root);
    if !diags.is_empty() {
        errln(&format!(
            "warning: some files have problems; the jobs whose files are invalid are not listed:\n{}",
            diags.to_string().trim_end()
        ));
    }
    let store = sluice::state::StateStore::of(&project)?;
    let statuses = sluice::status::job_statuses(&project, &store, chrono::Utc::now())?;
    if json {
        print_value(&statuses)?;
    } else {
        out!("{}\n", sluice::status::status_table(&statuses));
    }
    Ok(EXIT_OK)
}

pub(crate) fn runs(
    explicit: Option<&Path>,
    job: Option<&str>,
    last: usize,
    json: bool,
) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let (project, diags) = Project::load_partial(&root);
    let store = sluice::state::StateStore::of(&project)?;
    let runs = match job {
        Some(name) => {
            // A job that no longer loads still has its history.
            let name = match project.job(name) {
                Ok(j) => j.name.clone(),
                Err(_) if !diags.is_empty() => name.to_string(),
                Err(d) => return Err(Error::config(*d)),
            };
            store.runs(&name, last, false)?
        }
        None => store.all_runs(last)?,
    };
    if json {
        print_value(&runs)?;
    } else if runs.is_empty() {
        outln!("no runs recorded yet");
    } else {
        out!("{}\n", sluice::status::runs_table(&runs));
    }
    Ok(EXIT_OK)
}

fn print_value(v: &impl serde::Serialize) -> Result<(), Error> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Error::Internal(e.to_string()))?;
    outln!("{s}");
    Ok(())
}
