//! `sluice plan`: a compiled job described for a person: target (and a database table's
//! state), sources with their column types (and a database source's SELECT), the canonical
//! schema with each field's expression and cast, the row rules, the dataset checks, then the
//! optimized logical plan and the physical plan.

use std::fmt::Write;

use super::*;

/// Text of the compiled plan for `sluice plan`: fields, rules, logical and physical plans.
///
/// # Errors
/// When the physical plan cannot be created.
pub async fn describe(compiled: &CompiledJob, project_root: &Path) -> Result<String> {
    let mut s = String::new();
    let job = &compiled.job;
    let m = &compiled.model;
    let _ = writeln!(s, "job:      {}", job.name);
    let _ = writeln!(s, "mapping:  {}", compiled.mapping.name);
    let _ = writeln!(s, "model:    {} {}", m.name, m.version);
    let to_err = |e: DataFusionError| Error::engine(&job.name, &compiled.redactor, &e);
    // Planning the physical plan builds each database source's SELECT (with the columns the
    // plan uses), shown below.
    let physical = compiled
        .frame
        .clone()
        .create_physical_plan()
        .await
        .map_err(to_err)?;
    describe_target(&mut s, compiled, project_root).await;
    describe_sources(&mut s, compiled);
    describe_schema(&mut s, compiled);
    describe_rules_and_checks(&mut s, compiled);
    let logical = compiled
        .frame
        .clone()
        .into_optimized_plan()
        .map_err(to_err)?;
    let _ = writeln!(
        s,
        "\nlogical plan (optimized):\n{}",
        logical.display_indent()
    );
    let _ = writeln!(
        s,
        "\nphysical plan:\n{}",
        datafusion::physical_plan::displayable(physical.as_ref()).indent(false)
    );
    Ok(compiled.redactor.redact(&s))
}

/// The target, its load mode and partitions, the quarantine, and a database table's state.
async fn describe_target(s: &mut String, compiled: &CompiledJob, project_root: &Path) {
    let job = &compiled.job;
    let _ = writeln!(
        s,
        "target:   {} ({}, {}{})",
        compiled.target_shown,
        match compiled.target.database() {
            Some(t) => json_name(&t.connector.kind),
            None => "parquet".to_string(),
        },
        json_name(&job.target.mode()),
        if job.target.partition_by().is_empty() {
            String::new()
        } else {
            format!(
                ", partition_by = [{}]",
                job.target
                    .partition_by()
                    .iter()
                    .map(|p| p.get_ref().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let _ = match &compiled.quarantine {
        crate::quarantine::QuarantineLocation::Folder(dir) => writeln!(
            s,
            "quarantine: {}",
            dir.strip_prefix(project_root).unwrap_or(dir).display()
        ),
        crate::quarantine::QuarantineLocation::Delta(t) => writeln!(
            s,
            "quarantine: {} (Delta table, one commit per run with rejected rows)",
            t.shown
        ),
    };
    if let Some(t) = compiled.target.database() {
        let d = t.connector.dialect();
        match crate::db::sink::inspect(t).await {
            Ok(None) => {
                let _ = writeln!(s, "  the table does not exist; the first run creates it:");
                for line in t.create_sql(d).lines() {
                    let _ = writeln!(s, "    {line}");
                }
            }
            Ok(Some(diffs)) if diffs.is_empty() => {
                let _ = writeln!(s, "  the table exists and matches the model");
            }
            Ok(Some(diffs)) => {
                let _ = writeln!(
                    s,
                    "  the table differs from the model (on_schema_change = \"{}\"):",
                    json_name(&t.on_schema_change)
                );
                for x in &diffs {
                    let _ = writeln!(
                        s,
                        "    - {x}{}",
                        if x.addable()
                            && t.on_schema_change == crate::config::spec::OnSchemaChange::AddColumns
                        {
                            " (will be added)"
                        } else {
                            ""
                        }
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(s, "  the table could not be inspected: {e}");
            }
        }
    }
}

/// Each source: alias, format, files, and its columns with their types.
fn describe_sources(s: &mut String, compiled: &CompiledJob) {
    let _ = writeln!(s, "\nsources:");
    let mut extractions = compiled.extractions.iter();
    for src in &compiled.sources {
        let _ = writeln!(
            s,
            "  {} (source `{}`, {}): {}",
            src.alias,
            src.name,
            json_name(&src.format),
            src.files.join(", ")
        );
        if let Some(n) = &src.new_files {
            let _ = writeln!(
                s,
                "    incremental files: {} new, {} read by earlier runs (skipped)",
                n.read.len(),
                n.skipped
            );
        }
        if src.format == SourceFormat::Database {
            if let Some(ext) = extractions.next() {
                let _ = writeln!(s, "    sql: {}", ext.describe());
                for (c, db) in src.columns.iter().zip(&ext.columns) {
                    let _ = writeln!(
                        s,
                        "    {:<16} {:<28} {}",
                        c.name,
                        c.data_type.to_string(),
                        db.db_type
                    );
                }
                continue;
            }
        }
        for c in &src.columns {
            let _ = writeln!(
                s,
                "    {:<16} {}{}",
                c.name,
                c.data_type,
                if c.parsed { "  (parsed from text)" } else { "" }
            );
        }
    }
}

/// The canonical schema: each field's type, expression and cast.
fn describe_schema(s: &mut String, compiled: &CompiledJob) {
    let m = &compiled.model;
    let _ = writeln!(s, "\ncanonical schema ({} {}):", m.name, m.version);
    for (f, fp) in m.fields.iter().zip(&compiled.fields) {
        let cast = match &fp.cast {
            CastClass::Same => String::new(),
            CastClass::Widen => format!("  [widened from {}]", fp.expr_type),
            CastClass::Parse => format!(
                "  [parsed from {}; failures → cast.{}]",
                fp.expr_type, f.name
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "  {:<28} {:<14} {}{}\n      = {}{}",
            f.name,
            f.data_type.to_string(),
            if f.required { "required" } else { "nullable" },
            if f.primary_key { ", primary key" } else { "" },
            fp.sql.split_whitespace().collect::<Vec<_>>().join(" "),
            cast
        );
    }
}

/// The row rules with their actions, and the dataset checks with their thresholds.
fn describe_rules_and_checks(s: &mut String, compiled: &CompiledJob) {
    let job = &compiled.job;
    let _ = writeln!(s, "\nrow rules ({}):", compiled.rules.len());
    for r in &compiled.rules {
        let _ = writeln!(
            s,
            "  {:<44} {:<10} {}",
            r.name,
            json_name(&r.action),
            r.description
        );
    }
    let _ = writeln!(s, "\ndataset checks:");
    if let Some(rc) = &job.checks.row_count {
        let _ = writeln!(s, "  row_count        {}", thresholds(rc));
    }
    if let Some(q) = &job.checks.quarantine_ratio {
        let _ = writeln!(s, "  quarantine_ratio {}", thresholds(q));
    }
    for (field, t) in &job.checks.null_ratio {
        let _ = writeln!(s, "  null_ratio.{field} {}", thresholds(t));
    }
    if let Some(u) = &job.checks.unique {
        let _ = writeln!(s, "  unique           {}", thresholds(u));
    }
    if let Some(f) = &job.checks.freshness {
        let _ = writeln!(s, "  freshness        {}", thresholds(f));
    }
    if let Some(v) = &job.checks.volume {
        let _ = writeln!(s, "  volume           {}", thresholds(v));
    }
    for q in &job.checks.sql {
        let _ = writeln!(
            s,
            "  sql.{}  {} {}",
            q.name,
            q.expr.get_ref(),
            thresholds(&q.thresholds())
        );
    }
}
