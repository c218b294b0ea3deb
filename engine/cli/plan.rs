//! `sluice plan JOB`: the compiled job, described.

use std::path::Path;

use sluice::error::{Error, EXIT_OK};

use super::*;

pub(crate) async fn plan(
    explicit: Option<&Path>,
    job: &str,
    args: &super::run::ParamArgs,
) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let project = load_for_job(&root, job)?;
    let job = project.job(job).map_err(|d| Error::config(*d))?;
    let params = args.params(job)?;
    let (project, job) = sluice::config::params::apply(&project, job, &params)
        .map_err(|d| Error::Config(sluice::diagnostic::Diagnostics(d)))?;
    let compiled = sluice::plan::compile(&project, &job).await?;
    out!(
        "{}",
        sluice::plan::describe(&compiled, &project.root).await?
    );
    Ok(EXIT_OK)
}
