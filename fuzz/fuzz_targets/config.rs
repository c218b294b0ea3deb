//! The config loader on any text, as each of the four file kinds: it must report problems,
//! never panic, and print every diagnostic (line and column from the spans).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::config::{load_file, FileKind};
use sluice::diagnostic::{Diagnostics, SourceText};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, text)) = data.split_first() else {
        return;
    };
    let kind = match kind % 4 {
        0 => FileKind::Project,
        1 => FileKind::Model,
        2 => FileKind::Mapping,
        _ => FileKind::Job,
    };
    let src = SourceText::new("fuzz.toml", String::from_utf8_lossy(text).into_owned());
    let mut diags = Diagnostics::default();
    load_file(kind, &src, &mut diags);
    let _ = diags.to_string();
});
