//! Reading the quarantine back: `sluice quarantine JOB [--run RUN_ID]`.
//!
//! The quarantine is a folder of Parquet files, one per run, or a Delta table (see
//! [`crate::quarantine`]); this module queries it with DataFusion and returns text tables:
//! rows per run, rows per failed rule, and sample rows with their file, line and reasons.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::quarantine::QuarantineLocation;

/// What `sluice quarantine` prints.
#[derive(Debug, Clone)]
pub struct QuarantineSummary {
    /// The run summarised (the given one, or the latest); `None` when the folder is empty.
    pub run_id: Option<String>,
    /// Text: one table of runs, one of rules, one of samples.
    pub text: String,
}

/// Summarises the quarantine at `location` (shown as `shown`) for `run` (default: the latest
/// run), with up to `samples` sample rows. `ctx` reads it (with the project's object stores).
///
/// # Errors
/// [`Error::Usage`] for an unknown run id; [`Error::Engine`] or [`Error::Target`] when the
/// quarantine cannot be read.
pub async fn quarantine_summary(
    job: &str,
    location: &QuarantineLocation,
    shown: &str,
    ctx: &SessionContext,
    run: Option<&str>,
    samples: usize,
) -> Result<QuarantineSummary> {
    let Some(rows) = location.read(ctx, None).await? else {
        let what = match location {
            QuarantineLocation::Folder(_) => "folder",
            QuarantineLocation::Delta(_) => "Delta table",
        };
        return Ok(QuarantineSummary {
            run_id: None,
            text: format!("no quarantined rows for job `{job}` ({what} {shown})\n"),
        });
    };
    let err = |e: datafusion::error::DataFusionError| Error::Engine {
        job: job.to_string(),
        message: format!("reading the quarantine: {e}"),
    };
    ctx.register_table("q", rows.into_view()).map_err(err)?;
    let sql = |q: String| {
        let ctx = ctx.clone();
        async move {
            let batches: Vec<RecordBatch> = ctx.sql(&q).await?.collect().await?;
            Ok::<_, datafusion::error::DataFusionError>(batches)
        }
    };
    let runs = sql(
        "SELECT run_id, min(quarantined_at) AS started_at, count(*) AS rows \
         FROM q GROUP BY run_id ORDER BY run_id"
            .into(),
    )
    .await
    .map_err(err)?;
    let run_ids: Vec<String> = crate::inspect::strings(&runs, 0);
    let run_id = match run {
        Some(r) if run_ids.iter().any(|x| x == r) => r.to_string(),
        Some(r) => {
            return Err(Error::Usage {
                message: format!("job `{job}` has no quarantined rows from run `{r}`"),
                hint: Some(format!(
                    "runs with quarantined rows: {}",
                    run_ids.join(", ")
                )),
            })
        }
        None => run_ids.last().cloned().unwrap_or_default(),
    };
    let quoted = run_id.replace('\'', "''");
    let rules = sql(format!(
        "SELECT get_field(r, 'rule') AS rule, count(*) AS rows \
         FROM (SELECT unnest(failed_rules) AS r FROM q WHERE run_id = '{quoted}') \
         GROUP BY 1 ORDER BY 2 DESC, 1"
    ))
    .await
    .map_err(err)?;
    let sample = sql(format!(
        "SELECT source_file, source_line, string_agg(get_field(r, 'reason'), '; ') AS reasons, \
                source_values \
         FROM (SELECT source_file, source_line, source_values, unnest(failed_rules) AS r \
               FROM q WHERE run_id = '{quoted}') \
         GROUP BY source_file, source_line, source_values \
         ORDER BY source_file, source_line LIMIT {samples}"
    ))
    .await
    .map_err(err)?;
    let table = |b: &[RecordBatch]| {
        pretty_format_batches(b)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    let text = format!(
        "quarantine of job `{job}`: {}\n\nruns:\n{}\n\nrules failed in run {run_id}:\n{}\n\nsample rows of run {run_id} (first {samples} by file and line):\n{}\n",
        shown,
        table(&runs),
        table(&rules),
        table(&sample)
    );
    Ok(QuarantineSummary {
        run_id: Some(run_id),
        text,
    })
}

/// Column `i` of every batch as strings.
fn strings(batches: &[RecordBatch], i: usize) -> Vec<String> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let opts = FormatOptions::default();
    let mut out = Vec::new();
    for b in batches {
        if let Ok(f) = ArrayFormatter::try_new(b.column(i).as_ref(), &opts) {
            out.extend((0..b.num_rows()).map(|r| f.value(r).to_string()));
        }
    }
    out
}

/// The text of `sluice quality JOB`: the last `last` runs of a job (oldest first) and, per row
/// rule and dataset check, the value of each run and the latest status.
///
/// Rules show rows failed; checks show their measured value (rows, a fraction, hours...).
/// Read from the state store (see [`crate::state`]).
///
/// # Errors
/// [`Error::State`] when the store cannot be read.
pub fn quality_trend(store: &crate::state::StateStore, job: &str, last: usize) -> Result<String> {
    use comfy_table::{presets::UTF8_BORDERS_ONLY, Cell, Table};
    use std::fmt::Write as _;
    let mut runs = store.runs(job, last.max(1), false)?;
    runs.reverse();
    let mut out = String::new();
    if runs.is_empty() {
        let _ = writeln!(out, "no runs of job `{job}` recorded yet");
        return Ok(out);
    }
    let ids: Vec<String> = runs.iter().map(|r| r.run_id.clone()).collect();
    let records = store.quality(job, &ids)?;
    let _ = writeln!(out, "job {job}: last {} run(s), oldest first", runs.len());
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header(vec!["#", "run", "status", "rows loaded"]);
    for (i, r) in runs.iter().enumerate() {
        table.add_row(vec![
            Cell::new(i + 1),
            Cell::new(&r.run_id),
            Cell::new(&r.status),
            Cell::new(r.rows_written),
        ]);
    }
    let _ = writeln!(out, "{table}\n");
    // One row per rule/check, in the order first seen (newest run's order wins).
    let mut names: Vec<(String, String)> = Vec::new();
    for r in records.iter().rev() {
        let key = (r.kind.clone(), r.name.clone());
        if !names.contains(&key) {
            names.push(key);
        }
    }
    names.reverse();
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    let mut header = vec!["kind".to_string(), "name".to_string()];
    header.extend((1..=runs.len()).map(|i| format!("#{i}")));
    header.push("latest".into());
    table.set_header(header);
    for (kind, name) in &names {
        let mut row = vec![kind.clone(), name.clone()];
        let mut latest = String::from("-");
        for id in &ids {
            let rec = records
                .iter()
                .find(|r| &r.run_id == id && &r.kind == kind && &r.name == name);
            row.push(match rec {
                None => "-".into(),
                Some(r) => {
                    latest = r.status.clone();
                    match (r.kind.as_str(), r.rows_failed, r.measured) {
                        ("rule", Some(n), _) => n.to_string(),
                        (_, _, Some(m)) if m.fract() == 0.0 && m.abs() < 1e15 => {
                            format!("{m:.0}")
                        }
                        (_, _, Some(m)) => format!("{m:.4}"),
                        _ => "-".into(),
                    }
                }
            });
        }
        row.push(latest);
        table.add_row(row);
    }
    let _ = writeln!(
        out,
        "rules: rows failed per run; checks: the measured value per run\n{table}"
    );
    Ok(out)
}
