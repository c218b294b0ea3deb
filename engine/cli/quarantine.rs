//! `sluice quarantine JOB`: a job's rejected rows per run and rule, with samples.

use std::path::Path;

use sluice::error::{Error, EXIT_OK};

use super::*;

pub(crate) async fn quarantine(
    explicit: Option<&Path>,
    job: &str,
    run: Option<&str>,
    samples: usize,
) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let project = load_for_job(&root, job)?;
    let job = project.job(job).map_err(|d| Error::config(*d))?;
    let redactor = sluice::config::interpolate::Redactor::default();
    let ctx = sluice::plan::session(&project);
    let location = sluice::plan::quarantine_location(&project, job, &redactor, &ctx)?;
    let shown = location.shown(&project);
    let summary =
        sluice::inspect::quarantine_summary(&job.name, &location, &shown, &ctx, run, samples)
            .await?;
    let text = summary
        .text
        .replace(&format!("{}/", project.root.display()), "");
    out!("{}", redactor.redact(&text));
    Ok(EXIT_OK)
}
