//! `sluice model diff OLD NEW`: the changes between two versions of a model, classified.

use std::path::Path;

use sluice::error::{Error, EXIT_INVALID, EXIT_OK};

use crate::errln;

pub(crate) fn model_diff(old: &Path, new: &Path, json: bool) -> Result<i32, Error> {
    let read = |p: &Path| -> Result<sluice::model::CanonicalModel, Error> {
        let text = std::fs::read_to_string(p).map_err(|e| Error::Usage {
            message: format!("cannot read {}: {e}", p.display()),
            hint: None,
        })?;
        sluice::config::parse_model(&sluice::diagnostic::SourceText::new(p, text))
            .map_err(Error::Config)
    };
    let diff = sluice::contract::diff(&read(old)?, &read(new)?);
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&diff).map_err(|e| Error::Internal(e.to_string()))?
        );
    } else {
        outln!("{}", diff.to_string().trim_end());
    }
    Ok(match diff.check_version() {
        Ok(()) => EXIT_OK,
        Err(e) => {
            if json {
                errln(&format!("error: {e}"));
            }
            EXIT_INVALID
        }
    })
}
