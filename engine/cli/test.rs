//! `sluice test`: the mappings' `[[test]]` blocks on their inline rows.

use std::path::Path;

use sluice::error::{Error, EXIT_OK, EXIT_RUN_FAILED};

use super::*;

pub(crate) async fn test(
    explicit: Option<&Path>,
    mappings: &[String],
    junit: Option<&Path>,
) -> Result<i32, Error> {
    let root = project_root(explicit, None)?;
    let project = load(&root)?;
    let outcomes = sluice::mapping_test::run_tests(&project, mappings).await?;
    for o in &outcomes {
        let ms = o.duration.as_secs_f64() * 1000.0;
        if o.passed() {
            outln!("ok    {} › {} ({ms:.0} ms)", o.mapping, o.name);
        } else {
            outln!("FAIL  {} › {} ({ms:.0} ms)", o.mapping, o.name);
            for f in &o.failures {
                outln!("      {f}");
            }
        }
    }
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    if outcomes.is_empty() {
        outln!("no [[test]] blocks found; see docs/reference.md#mapping-tests");
    } else {
        outln!(
            "\n{} test(s): {} passed, {failed} failed",
            outcomes.len(),
            outcomes.len() - failed
        );
    }
    if let Some(path) = junit {
        std::fs::write(path, sluice::mapping_test::junit_xml(&outcomes)).map_err(|e| {
            Error::Usage {
                message: format!("cannot write {}: {e}", path.display()),
                hint: None,
            }
        })?;
    }
    Ok(if failed == 0 {
        EXIT_OK
    } else {
        EXIT_RUN_FAILED
    })
}
