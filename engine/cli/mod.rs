//! The commands: one module each, parsing nothing (clap did), calling the library and
//! printing. Shared here: finding and loading the project, reporting an error, printing a
//! run report.

pub(crate) mod model;
pub(crate) mod plan;
pub(crate) mod quality;
pub(crate) mod quarantine;
pub(crate) mod run;
pub(crate) mod schedule;
pub(crate) mod status;
pub(crate) mod test;
pub(crate) mod validate;

use std::path::{Path, PathBuf};

use sluice::config::Project;
use sluice::error::Error;
use sluice::report::RunReport;

use crate::errln;

/// Prints `e` on standard error, with every secret the process resolved redacted (see
/// [`errln`]).
pub(crate) fn report_error(e: &Error) {
    let text = match e {
        Error::Config(d) => d.to_string(),
        Error::Usage { message, hint } => match hint {
            Some(h) => format!("error: {message}\n   = hint: {h}"),
            None => format!("error: {message}"),
        },
        other => format!("error: {other}"),
    };
    errln(&text);
}

pub(crate) fn project_root(explicit: Option<&Path>, near: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(p) = explicit {
        if p.join(sluice::config::PROJECT_FILE).is_file() {
            return Ok(std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
        }
        return Err(Error::Usage {
            message: format!("{} has no sluice.toml", p.display()),
            hint: Some("pass the folder that holds sluice.toml to --project".into()),
        });
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let start = near.map(Path::to_path_buf).unwrap_or(cwd);
    Project::find_root(&start).ok_or_else(|| Error::Usage {
        message: format!(
            "no sluice.toml in {} or any folder above it",
            start.display()
        ),
        hint: Some("run sluice inside a project, or pass --project DIR".into()),
    })
}

pub(crate) fn load(root: &Path) -> Result<Project, Error> {
    Project::load(root).map_err(Error::Config)
}

/// Loads the project to run `job`; problems only in files the job does not use are printed
/// as warnings (see [`Project::load_for_job`]).
pub(crate) fn load_for_job(root: &Path, job: &str) -> Result<Project, Error> {
    let (project, others) = Project::load_for_job(root, job).map_err(Error::Config)?;
    if !others.is_empty() {
        errln(&format!(
            "warning: files that job `{job}` does not use have problems; running it anyway:\n{}",
            others.to_string().trim_end()
        ));
    }
    Ok(project)
}

pub(crate) fn print_json(report: &RunReport) -> Result<(), Error> {
    let s = serde_json::to_string_pretty(report).map_err(|e| Error::Internal(e.to_string()))?;
    outln!("{s}");
    Ok(())
}

pub(crate) fn print_summary(r: &RunReport, project: &Project) {
    use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
    outln!(
        "run {}  job {}  model {} {}  status {}",
        r.run_id,
        r.job,
        r.model,
        r.model_version,
        serde_json::to_value(r.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    );
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    let mut header = vec!["rows read", "written", "quarantined"];
    let mut row = vec![
        r.rows.read.to_string(),
        r.rows.written.to_string(),
        r.rows.quarantined.to_string(),
    ];
    // Drop and flag actions only show when a rule used them.
    if r.rows.dropped > 0 {
        header.push("dropped");
        row.push(r.rows.dropped.to_string());
    }
    if r.rows.flagged > 0 {
        header.push("flagged");
        row.push(r.rows.flagged.to_string());
    }
    if let Some(l) = &r.load {
        for (name, n) in [
            ("inserted", l.inserted),
            ("updated", l.updated),
            ("deleted", l.deleted),
        ] {
            header.push(name);
            row.push(n.to_string());
        }
    }
    header.push("duration");
    row.push(format!("{:.2} s", r.duration_ms as f64 / 1000.0));
    t.set_header(header);
    t.add_row(row);
    outln!("{t}");
    for f in &r.new_files {
        outln!(
            "source {}: {} new file(s) read, {} read by earlier runs skipped{}",
            f.source,
            f.read.len(),
            f.skipped,
            match (f.recorded, f.read.is_empty()) {
                (_, true) => "; nothing new to load",
                (true, false) => "; recorded as read",
                (false, false) => "; not recorded (the next run reads them again)",
            }
        );
    }
    if let Some(s) = &r.spill {
        outln!(
            "spilled    {} to disk in {} file(s): the run reached its memory_limit",
            bytesize::ByteSize(s.bytes).display().iec(),
            s.files
        );
    }
    for w in &r.watermarks {
        outln!(
            "source {}: read {}; watermark {} {}",
            w.source,
            w.range,
            if w.moved { "moved to" } else { "stays at" },
            w.value.as_deref().unwrap_or("(none)")
        );
    }
    if r.error.is_none() {
        if r.rows.produced > r.rows.read {
            outln!(
                "warning: joins produced {} rows from {} source rows: a join key matched more than one row; check that lookup keys are unique",
                r.rows.produced, r.rows.read
            );
        } else if r.rows.produced < r.rows.read {
            outln!(
                "warning: inner joins dropped {} of {} source rows (they are neither loaded nor quarantined); use `type = \"left\"` and a rule to quarantine them instead",
                r.rows.read - r.rows.produced,
                r.rows.read
            );
        }
    }
    let failing: Vec<_> = r.rules.iter().filter(|x| x.failed_rows > 0).collect();
    if !failing.is_empty() {
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY);
        t.set_header(vec!["rule", "rows failed", "example reason"]);
        for x in failing {
            t.add_row(vec![
                x.rule.clone(),
                x.failed_rows.to_string(),
                x.samples.first().cloned().unwrap_or_default(),
            ]);
        }
        outln!("{t}");
    }
    if !r.checks.is_empty() {
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY);
        t.set_header(vec!["check", "status", "detail"]);
        for c in &r.checks {
            t.add_row(vec![
                c.check.clone(),
                c.status.to_string(),
                c.message.clone(),
            ]);
        }
        outln!("{t}");
    }
    for o in &r.outputs {
        if o.kind == "quarantine" && o.rows == 0 {
            // No row rejected: no quarantine file is written, so there is no path to show.
            outln!("{:<10} no rows rejected", o.kind);
            continue;
        }
        outln!(
            "{:<10} {}  {} row{}{}",
            o.kind,
            o.path,
            o.rows,
            if o.rows == 1 { "" } else { "s" },
            if o.committed { "" } else { "  (not committed)" }
        );
    }
    if let Some(e) = &r.error {
        errln(&format!("error ({}): {}", e.class, e.message));
    }
    let report = sluice::report::report_path(project, &r.job, &r.run_id);
    outln!(
        "report     {}",
        report
            .strip_prefix(&project.root)
            .unwrap_or(&report)
            .display()
    );
}
