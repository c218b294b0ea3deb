//! A Parquet or NDJSON source file with any bytes, compiled and run by the real job path
//! (schema inference, scan, mapping, quarantine, commit) in a scratch project: a corrupt file
//! must be an error or quarantined rows, never a panic (libFuzzer aborts on any panic, even
//! one Sluice would catch and report as a failed run). The first byte picks the format.
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// libFuzzer's panic hook aborts on every panic, even one Sluice catches on purpose
/// (`sluice::logging::catch_quietly`, around library calls known to panic on damaged files):
/// let those through, abort on any other.
fn hook() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !sluice::logging::in_catch_quietly() {
                abort(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    hook();
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let (format, file) = if kind % 2 == 0 {
        ("parquet", "data/f.parquet")
    } else {
        ("json", "data/f.jsonl")
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "sluice.toml", "name = \"fuzz\"\n");
    write(
        root,
        "mappings/canonical/thing.toml",
        "name = \"thing\"\nversion = \"1.0.0\"\n\n[fields.id]\ntype = \"string\"\n",
    );
    write(
        root,
        "mappings/m.toml",
        "model = \"thing@1\"\nfrom = \"src\"\n\n[fields]\nid = \"CAST(src.id AS VARCHAR)\"\n",
    );
    write(
        root,
        "jobs/j.toml",
        &format!("mapping = \"m\"\n\n[sources.src]\nformat = \"{format}\"\npath = \"{file}\"\n\n[target]\nformat = \"parquet\"\ntable = \"t\"\nmode = \"overwrite\"\n"),
    );
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::write(root.join(file), body).unwrap();
    let Ok(project) = sluice::config::Project::load(root) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let Some(job) = project.jobs.get("j") else {
            return;
        };
        let mode = sluice::db::ExtractMode::Incremental;
        if let Ok(compiled) = sluice::plan::compile_for(&project, job, &HashMap::new(), &mode).await {
            let mut quiet = sluice::run::NoProgress;
            let _ = sluice::run::run(
                &project,
                compiled,
                chrono::Utc::now(),
                std::time::Duration::ZERO,
                &mut quiet,
            )
            .await;
        }
    });
});
