//! Reading `[target]` of a job into a [`TargetSpec`] variant, then checking the values each
//! kind of target holds.
//!
//! As for sources (`job_sources.rs`): the kind comes first (`connection` → database, else
//! `format`), then the entry is read as that kind's struct, which denies every key the kind
//! does not accept. A key that another kind accepts is reported here as belonging to it, from
//! the kinds' own field lists, every one at once with the entry's other mistakes.

use super::*;
use crate::config::reader::struct_fields;

/// One kind of target and the keys its struct accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Parquet,
    Delta,
    Database,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Parquet, Kind::Delta, Kind::Database];

    /// The keys the kind's struct accepts. Every kind has an arm, so a new one does not
    /// compile until it has its keys here.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Parquet => struct_fields::<ParquetTargetSpec>(),
            Kind::Delta => struct_fields::<DeltaTargetSpec>(),
            Kind::Database => struct_fields::<DbTargetSpec>(),
        }
        .unwrap_or_default()
    }

    fn of(format: TargetFormat) -> Kind {
        match format {
            TargetFormat::Parquet => Kind::Parquet,
            TargetFormat::Delta => Kind::Delta,
        }
    }
}

/// Reads `[target]` (`item`) as the variant its keys pick, reporting each mistake, then checks
/// its values; `None` when it cannot be read (a job file with any mistake is not loaded).
pub(super) fn read_target(r: &mut Reader<'_>, root: &Table, item: &Item) -> Option<TargetSpec> {
    let Some(t) = item.as_table_like() else {
        r.error(
            item.span(),
            "target",
            "`target` must be a table",
            Some("write a [target] section with `format`, `table` and `mode`".into()),
        );
        return None;
    };
    let kind = if t.contains_key("connection") {
        Kind::Database
    } else if let Some(f) = t.get("format") {
        Kind::of(r.entry::<TargetFormat>("target.format", f)?)
    } else {
        report_unknown_keys(r, t);
        r.missing_key(
            Reader::key_span(root, "target"),
            "target",
            "format",
            "add `format = \"parquet\"` for a warehouse table, or `connection = \"<name>\"` for a database table",
        );
        return None;
    };
    let mut item = item.clone();
    take_foreign_keys(r, &mut item, kind);
    let mut spec = match kind {
        Kind::Parquet => r.entry("target", &item).map(TargetSpec::Parquet),
        Kind::Delta => r.entry("target", &item).map(TargetSpec::Delta),
        Kind::Database => r.entry("target", &item).map(TargetSpec::Database),
    }?;
    check_target(r, root, &spec);
    if let TargetSpec::Parquet(t) = &mut spec {
        t.files = read_files(r, t)?;
    }
    Some(spec)
}

/// The file layout `t`'s `compression`, `compression_level`, `row_group_size` and
/// `max_rows_per_file` give, or `None` with an error at each value at fault. A folder
/// partitioned by `partition_by` gets one file per partition value, so it takes no
/// `max_rows_per_file`.
fn read_files(r: &mut Reader<'_>, t: &ParquetTargetSpec) -> Option<ParquetFiles> {
    let (codec, level) = (&t.compression, &t.compression_level);
    let (row_group, per_file) = (&t.row_group_size, &t.max_rows_per_file);
    if let (Some(n), false) = (per_file, t.partition_by.is_empty()) {
        r.error(
            Some(n.span()),
            "target.max_rows_per_file",
            "`max_rows_per_file` applies to targets without `partition_by`",
            Some("a partitioned folder gets one file per partition value: remove `max_rows_per_file`, or `partition_by`".into()),
        );
        return None;
    }
    let codec_value = codec.as_ref().map(|c| *c.get_ref()).unwrap_or_default();
    let compression = match codec_value.with_level(level.as_ref().map(|l| *l.get_ref())) {
        Ok(c) => Some(c),
        Err(e) => {
            let span = level.as_ref().map(Spanned::span);
            let hint = "leave `compression_level` out for the codec's default".to_string();
            r.error(span, "target.compression_level", e, Some(hint));
            None
        }
    };
    let mut rows = |key: &str, v: &Option<Spanned<u64>>, default: usize| match v {
        None => Some(default),
        Some(n) if *n.get_ref() >= 1 => Some(usize::try_from(*n.get_ref()).unwrap_or(usize::MAX)),
        Some(n) => {
            let message = format!("`{key}` must be at least 1 (rows)");
            r.error(Some(n.span()), &format!("target.{key}"), message, None);
            None
        }
    };
    let row_group_rows = rows("row_group_size", row_group, DEFAULT_ROW_GROUP_ROWS);
    let max_rows_per_file = rows("max_rows_per_file", per_file, DEFAULT_MAX_ROWS_PER_FILE);
    Some(ParquetFiles {
        compression: compression?,
        row_group_rows: row_group_rows?,
        max_rows_per_file: max_rows_per_file?,
    })
}

/// Reports each key of a target whose kind is not known (no `format`, no `connection`) that no
/// kind accepts, with the closest key any kind accepts (`fromat`: did you mean `format`?).
fn report_unknown_keys(r: &mut Reader<'_>, t: &dyn toml_edit::TableLike) {
    let known: Vec<&str> = Kind::ALL
        .iter()
        .flat_map(|k| k.keys().iter().copied())
        .collect();
    r.unknown_keys_of_any_kind("target", t, &known);
}

/// Reports each key of `item` that `kind` does not accept but another kind does, and takes it
/// out so that reading the entry finds its other mistakes. Keys no kind accepts stay, for the
/// reader's did-you-mean.
fn take_foreign_keys(r: &mut Reader<'_>, item: &mut Item, kind: Kind) {
    let Some(t) = item.as_table_like_mut() else {
        return;
    };
    let written: Vec<String> = t.iter().map(|(k, _)| k.to_string()).collect();
    for key in written {
        if kind.keys().contains(&key.as_str()) {
            continue;
        }
        let owners: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| k.keys().contains(&key.as_str()))
            .collect();
        if owners.is_empty() {
            continue;
        }
        let span = t.key(&key).and_then(|k| k.span());
        let (message, hint) = other_kind_message(&key, t.get(&key), kind, &owners);
        r.error(span, &format!("target.{key}"), message, Some(hint));
        t.remove(&key);
    }
}

/// "`key` applies only to <owners> targets", with what to do instead for a target of `kind`.
fn other_kind_message(
    key: &str,
    value: Option<&Item>,
    kind: Kind,
    owners: &[Kind],
) -> (String, String) {
    if kind == Kind::Database && key == "format" {
        let written = value.and_then(Item::as_str).unwrap_or("...");
        return (
            format!("`format = \"{written}\"` and `connection` both given"),
            "a database target has no file format: remove `format`".into(),
        );
    }
    let named = match owners {
        [Kind::Parquet, Kind::Delta] => "Parquet targets (`format = \"parquet\"` or `\"delta\"`)",
        [Kind::Parquet] => "Parquet folders (`format = \"parquet\"`)",
        [Kind::Delta, Kind::Database] => "database and Delta targets",
        [Kind::Delta] => "Delta targets",
        [Kind::Database] => "database targets",
        _ => "other targets",
    };
    let hint = match (kind, owners) {
        (Kind::Database, _) if matches!(key, "path" | "partition_by") => {
            format!("remove `{key}`; a database target names its `table`")
        }
        (Kind::Database, _) => format!("remove `{key}`"),
        (Kind::Delta, [Kind::Parquet]) => {
            format!("remove `{key}`: delta-rs writes a Delta table's files with its own settings")
        }
        (_, [Kind::Delta]) => format!("remove `{key}`, or set `format = \"delta\"`"),
        _ => format!("remove `{key}`"),
    };
    (format!("`{key}` applies only to {named}"), hint)
}

/// Checks the values of a target that its type does not: where it is, which load modes its
/// kind supports, and the keys that apply to some modes only.
fn check_target(r: &mut Reader<'_>, root: &Table, t: &TargetSpec) {
    let span = |key: &str| key_path_span_in(root, &format!("target.{key}"));
    match t {
        TargetSpec::Database(d) => {
            if let Err(e) = TableName::parse(d.table.get_ref()) {
                r.error(Some(d.table.span()), "target.table", e, None);
            }
            if d.track.is_some() && d.mode != LoadMode::Scd2 {
                r.error(
                    d.track.as_ref().map(Spanned::span),
                    "target.track",
                    "`track` applies to `scd2` loads",
                    Some("remove `track`, or set `mode = \"scd2\"`".into()),
                );
            }
        }
        TargetSpec::Parquet(p) => {
            check_location(r, root, p.table.as_ref(), p.path.as_ref());
        }
        TargetSpec::Delta(d) => {
            check_location(r, root, d.table.as_ref(), d.path.as_ref());
            check_replace_where(r, d);
        }
    }
    let mode = t.mode();
    let supported = match t {
        TargetSpec::Parquet(_) => matches!(mode, LoadMode::Append | LoadMode::Overwrite),
        TargetSpec::Delta(_) => mode != LoadMode::Scd2,
        TargetSpec::Database(_) => true,
    };
    if !supported {
        r.error(
            span("mode"),
            "target.mode",
            format!(
                "`mode = \"{}\"` needs a {} target",
                json_name(&mode),
                if mode == LoadMode::Merge { "Delta or database" } else { "database" }
            ),
            Some("Parquet targets support `append` and `overwrite`; Delta targets also `merge`; for scd2 load a database table (`connection = \"<name>\"`)".into()),
        );
    }
    let delete_missing = match t {
        TargetSpec::Delta(d) => d.delete_missing,
        TargetSpec::Database(d) => d.delete_missing,
        TargetSpec::Parquet(_) => false,
    };
    if delete_missing && !matches!(mode, LoadMode::Merge | LoadMode::Scd2) {
        r.error(
            span("delete_missing"),
            "target.delete_missing",
            "`delete_missing` applies to `merge` and `scd2` loads",
            Some("`overwrite` already replaces every row; remove `delete_missing`".into()),
        );
    }
}

/// A file target names exactly one of `table` (a snake_case folder under the warehouse) and
/// `path`.
fn check_location(
    r: &mut Reader<'_>,
    root: &Table,
    table: Option<&Spanned<String>>,
    path: Option<&Spanned<String>>,
) {
    match (table, path) {
        (None, None) => r.missing_key(
            Reader::key_span(root, "target"),
            "target",
            "table",
            "add `table = \"<name>\"` (a folder under the warehouse) or `path = \"...\"`",
        ),
        (Some(tb), Some(_)) => r.error(
            Some(tb.span()),
            "target.table",
            "`table` and `path` both given",
            Some("keep one: `table` for the warehouse folder, `path` for any other folder".into()),
        ),
        (Some(tb), None) if !is_identifier(tb.get_ref()) => r.error(
            Some(tb.span()),
            "target.table",
            format!("table name `{}` is not snake_case", tb.get_ref()),
            None,
        ),
        _ => {}
    }
}

/// `replace_where` goes with `overwrite`, and is a predicate.
fn check_replace_where(r: &mut Reader<'_>, d: &DeltaTargetSpec) {
    let Some(p) = &d.replace_where else {
        return;
    };
    if d.mode != LoadMode::Overwrite {
        r.error(
            Some(p.span()),
            "target.replace_where",
            "`replace_where` applies to Delta targets with `mode = \"overwrite\"`",
            Some("set `mode = \"overwrite\"`, or remove it".into()),
        );
    } else if p.get_ref().trim().is_empty() {
        r.error(
            Some(p.span()),
            "target.replace_where",
            "`replace_where` is empty",
            Some(
                "write a predicate over partition columns, e.g. `flight_date = '2024-01-15'`"
                    .into(),
            ),
        );
    }
}
