//! `sluice validate`: every mistake in the project (or in the files given, and the jobs
//! that use them), with file, line and a hint.

use std::path::{Path, PathBuf};

use sluice::config::{file_kind, load_file, read_source, Project};
use sluice::diagnostic::{Diagnostic, Diagnostics};
use sluice::error::{Error, EXIT_INVALID, EXIT_OK};

use super::*;
use crate::errln;

pub(crate) async fn validate(explicit: Option<&Path>, paths: &[PathBuf]) -> Result<i32, Error> {
    let mut diags = Diagnostics::default();
    if paths.is_empty() {
        let root = project_root(explicit, None)?;
        let (project, problems) = Project::load_partial(&root);
        diags.extend(problems);
        // Models as contracts: an edit must be versioned against what runs have loaded.
        for model in project.models.values() {
            if let Some(d) = sluice::contract::check_registered(&project, model) {
                diags.push(d);
            }
        }
        // Compile every job whose own files loaded, so expression errors show up even while
        // other files still have problems.
        diags.extend(compile_jobs(&project, |_| true).await);
        if diags.is_empty() {
            outln!(
                "ok: {} model(s), {} mapping(s), {} job(s) valid",
                project.models.len(),
                project.mappings.len(),
                project.jobs.len()
            );
            return Ok(EXIT_OK);
        }
    } else {
        let root = project_root(explicit, paths.first().map(PathBuf::as_path)).ok();
        for p in paths {
            let base = root.clone().unwrap_or_else(|| PathBuf::from("."));
            let Some(src) = read_source(&base, p, &mut diags) else {
                continue;
            };
            match file_kind(&base, p, &src.text) {
                Some(kind) => load_file(kind, &src, &mut diags),
                None => diags.push(
                    Diagnostic::file_level(
                        src.path.clone(),
                        "cannot tell what kind of Sluice file this is",
                    )
                    .with_hint(
                        "models live in mappings/canonical/, mappings in mappings/, jobs in jobs/",
                    ),
                ),
            }
        }
        // Cross-file problems of these files (a missing mapping, say), when the files themselves
        // are fine; then the jobs that use them, compiled.
        if diags.is_empty() {
            if let Some(root) = &root {
                let wanted: Vec<PathBuf> = paths
                    .iter()
                    .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
                    .collect();
                if let Ok(project) = Project::load(root) {
                    let uses = |file: &Path| {
                        let abs = std::fs::canonicalize(root.join(file))
                            .unwrap_or_else(|_| file.to_path_buf());
                        wanted.contains(&abs)
                    };
                    diags.extend(
                        compile_jobs(&project, |j| {
                            let mapping = project.mappings.get(&j.mapping);
                            let model = mapping.and_then(|m| project.models.get(&m.model.name));
                            uses(&j.src.path)
                                || mapping.is_some_and(|m| uses(&m.src.path))
                                || model.is_some_and(|m| uses(&m.file))
                        })
                        .await,
                    );
                }
                if let Err(all) = Project::load(root) {
                    let wanted: Vec<PathBuf> = paths
                        .iter()
                        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
                        .collect();
                    for d in all.0 {
                        let abs = std::fs::canonicalize(root.join(&d.file))
                            .unwrap_or_else(|_| d.file.clone());
                        if wanted.contains(&abs) {
                            diags.push(d);
                        }
                    }
                }
            }
        }
        if diags.is_empty() {
            outln!("ok: {} file(s) valid", paths.len());
            return Ok(EXIT_OK);
        }
    }
    errln(&diags.to_string());
    Ok(EXIT_INVALID)
}

/// The library's compilation of the jobs `wanted` selects, its warnings printed.
async fn compile_jobs(
    project: &Project,
    wanted: impl Fn(&sluice::config::Job) -> bool,
) -> Diagnostics {
    let (diags, warnings) = sluice::validate::compile_jobs(project, wanted).await;
    for w in warnings {
        errln(&w);
    }
    diags
}
