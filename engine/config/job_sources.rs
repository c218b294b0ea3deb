//! Reading `[sources.<name>]` of a job into a [`SourceSpec`] variant, then checking the
//! values each kind of source holds.
//!
//! The kind comes first (`connection` → database, else `format`), then the entry is read as
//! that kind's struct, which denies every key the kind does not accept. A key that another
//! kind accepts is reported here as belonging to it, from the kinds' own field lists (so a key
//! added to one struct needs no check here); every such key of an entry is reported at once,
//! with the entry's other mistakes.

use super::*;
use crate::config::reader::struct_fields;

/// One kind of source: the format it reads, how messages name it, and the keys it accepts at
/// the top of its entry and inside its `incremental`.
struct Kind {
    format: SourceFormat,
    label: &'static str,
    keys: &'static [&'static str],
    incremental: &'static [&'static str],
}

/// The kind of source that reads `format`, with the keys its struct accepts. Every variant has
/// an arm, so a new format does not compile until it has its keys here.
fn kind(format: SourceFormat) -> Kind {
    let keys = |k: Option<&'static [&'static str]>| k.unwrap_or_default();
    let files = keys(struct_fields::<FilesIncrementalSpec>());
    let (label, keys, incremental) = match format {
        SourceFormat::Csv => ("CSV", keys(struct_fields::<CsvSourceSpec>()), files),
        SourceFormat::Parquet => ("Parquet", keys(struct_fields::<ParquetSourceSpec>()), files),
        SourceFormat::Json => ("JSON", keys(struct_fields::<JsonSourceSpec>()), files),
        SourceFormat::Database => (
            "database",
            keys(struct_fields::<DbSourceSpec>()),
            keys(struct_fields::<CursorSpec>()),
        ),
    };
    Kind {
        format,
        label,
        keys,
        incremental,
    }
}

/// Every kind, in the order messages list them.
fn kinds() -> Vec<Kind> {
    [
        SourceFormat::Csv,
        SourceFormat::Parquet,
        SourceFormat::Json,
        SourceFormat::Database,
    ]
    .into_iter()
    .map(kind)
    .collect()
}

/// Reads every `[sources.<name>]` of `table`, reporting each mistake; an entry with one is left
/// out.
pub(super) fn read_sources(r: &mut Reader<'_>, table: &Table) -> BTreeMap<String, SourceSpec> {
    let mut out = BTreeMap::new();
    let Some(item) = table.get("sources") else {
        return out;
    };
    let Some(sub) = item.as_table_like() else {
        r.error(
            Reader::key_span(table, "sources"),
            "sources",
            "`sources` must be a table",
            Some("write `[sources.<name>]` sections".into()),
        );
        return out;
    };
    for (name, entry) in sub.iter() {
        if let Some(s) = read_source(r, table, name, entry) {
            check_source(r, name, &s);
            out.insert(name.to_string(), s);
        }
    }
    out
}

/// Reads one source entry as the variant its keys pick.
fn read_source(r: &mut Reader<'_>, root: &Table, name: &str, item: &Item) -> Option<SourceSpec> {
    let path = format!("sources.{name}");
    let Some(t) = item.as_table_like() else {
        r.error(
            item.span(),
            &path,
            format!("`{path}` must be a table"),
            Some(
                "write `[sources.<name>]` with `format` and `path`, or `connection` and `table`"
                    .into(),
            ),
        );
        return None;
    };
    let format = if t.contains_key("connection") {
        SourceFormat::Database
    } else if let Some(f) = t.get("format") {
        r.entry::<SourceFormat>(&format!("{path}.format"), f)?
    } else {
        report_unknown_keys(r, &path, t);
        r.missing_key(
            key_path_span_in(root, &path),
            &path,
            "format",
            "a file source needs `format` and `path`; a database source needs `connection` and `table` or `query`",
        );
        return None;
    };
    let mut item = item.clone();
    report_other_kinds_keys(r, &path, &mut item, &kind(format), &kinds());
    match format {
        SourceFormat::Csv => r.entry(&path, &item).map(SourceSpec::Csv),
        SourceFormat::Parquet => r.entry(&path, &item).map(SourceSpec::Parquet),
        SourceFormat::Json => r.entry(&path, &item).map(SourceSpec::Json),
        SourceFormat::Database => r.entry(&path, &item).map(SourceSpec::Database),
    }
}

/// Reports each key of an entry whose kind is not known (no `format`, no `connection`) that no
/// kind accepts, with the closest key any kind accepts (`fromat`: did you mean `format`?).
fn report_unknown_keys(r: &mut Reader<'_>, path: &str, t: &dyn toml_edit::TableLike) {
    let known: Vec<&str> = kinds()
        .iter()
        .flat_map(|k| k.keys.iter().copied())
        .collect();
    r.unknown_keys_of_any_kind(path, t, &known);
}

/// Reports each key of `item` (and of its `incremental`) that `kind` does not accept but
/// another kind does, and takes it out so that reading the entry finds its other mistakes.
/// Keys no kind accepts stay, for the reader's did-you-mean.
fn report_other_kinds_keys(
    r: &mut Reader<'_>,
    path: &str,
    item: &mut Item,
    kind: &Kind,
    kinds: &[Kind],
) {
    let Some(t) = item.as_table_like_mut() else {
        return;
    };
    let here = Level { path, kind, kinds };
    here.take_foreign_keys(r, t, "", |k| k.keys);
    let Some(inc) = t.get_mut("incremental").and_then(Item::as_table_like_mut) else {
        return;
    };
    here.take_foreign_keys(r, inc, "incremental.", |k| k.incremental);
    // `incremental` held only keys of another kind: reported once, not again as missing its
    // own keys.
    if inc.is_empty() {
        t.remove("incremental");
    }
}

/// The entry being read, for [`Level::take_foreign_keys`].
struct Level<'a> {
    path: &'a str,
    kind: &'a Kind,
    kinds: &'a [Kind],
}

impl Level<'_> {
    /// In one table of the entry (its top, or its `incremental`, whose keys `keys` gives for
    /// each kind and `prefix` names), reports and removes each key of another kind.
    fn take_foreign_keys(
        &self,
        r: &mut Reader<'_>,
        t: &mut dyn toml_edit::TableLike,
        prefix: &str,
        keys: fn(&Kind) -> &'static [&'static str],
    ) {
        let written: Vec<String> = t.iter().map(|(k, _)| k.to_string()).collect();
        for key in written {
            if keys(self.kind).contains(&key.as_str()) {
                continue;
            }
            let owners: Vec<&Kind> = self
                .kinds
                .iter()
                .filter(|k| keys(k).contains(&key.as_str()))
                .collect();
            if !owners.is_empty() {
                let span = t.key(&key).and_then(|k| k.span());
                let full = format!("{prefix}{key}");
                report_other_kind(r, self, &full, span, &owners);
                t.remove(&key);
            }
        }
    }
}

/// "`key` applies only to <owners> sources", with what to do instead for a source of the
/// entry's kind.
fn report_other_kind(
    r: &mut Reader<'_>,
    entry: &Level<'_>,
    key: &str,
    span: Option<Range<usize>>,
    owners: &[&Kind],
) {
    let (path, kind) = (entry.path, entry.kind);
    let is_file = |k: &Kind| k.format != SourceFormat::Database;
    let file_kinds = entry.kinds.iter().filter(|k| is_file(k)).count();
    let named = if owners.iter().filter(|k| is_file(k)).count() == file_kinds {
        "file".to_string()
    } else {
        owners
            .iter()
            .map(|k| k.label)
            .collect::<Vec<_>>()
            .join(" and ")
    };
    let incremental = key.starts_with("incremental.");
    let hint = match (kind.format, owners.first().map(|k| k.format)) {
        (SourceFormat::Database, _) if incremental => {
            "a database source reads new rows by a cursor column: `incremental = { column = \"updated_at\" }`".to_string()
        }
        (SourceFormat::Database, _) => format!(
            "remove `{key}`: a database source gives `table` or `query`, and its column types come from the database"
        ),
        (_, Some(SourceFormat::Database)) if incremental => {
            "a file source reads the files no committed run has read with `incremental = { files = \"new\" }`".to_string()
        }
        (_, Some(SourceFormat::Database)) => {
            "add `connection = \"<name>\"` (a [connections.<name>] of sluice.toml), or remove it".to_string()
        }
        (SourceFormat::Parquet, _) if owners.len() > 1 => {
            format!("remove `{key}`: Parquet files carry their own compression and schema")
        }
        (_, Some(owner)) => format!(
            "remove it, or set `format = \"{}\"`",
            json_name(&owner)
        ),
        (_, None) => format!("remove `{key}`"),
    };
    r.error(
        span,
        &format!("{path}.{key}"),
        format!("`{key}` applies only to {named} sources"),
        Some(hint),
    );
}

/// Checks the values of a source that its type does not: one-byte delimiters, known column
/// types, a table name, a lookback.
fn check_source(r: &mut Reader<'_>, name: &str, s: &SourceSpec) {
    let path = format!("sources.{name}");
    if let Some(p) = s.path().filter(|p| p.get_ref().trim().is_empty()) {
        r.error(
            Some(p.span()),
            &format!("{path}.path"),
            "`path` is empty",
            None,
        );
    }
    match s {
        SourceSpec::Csv(c) => {
            check_csv(r, &path, c);
            check_infer_rows(r, &path, c.infer_schema_rows.as_ref());
        }
        SourceSpec::Json(j) => check_infer_rows(r, &path, j.infer_schema_rows.as_ref()),
        SourceSpec::Parquet(_) => {}
        SourceSpec::Database(d) => check_db_source(r, &path, d),
    }
}

fn check_infer_rows(r: &mut Reader<'_>, path: &str, n: Option<&Spanned<usize>>) {
    if let Some(n) = n.filter(|n| *n.get_ref() == 0) {
        r.error(
            Some(n.span()),
            &format!("{path}.infer_schema_rows"),
            "`infer_schema_rows` must be at least 1",
            None,
        );
    }
}

fn check_csv(r: &mut Reader<'_>, path: &str, s: &CsvSourceSpec) {
    for (key, v) in [("delimiter", &s.delimiter), ("quote", &s.quote)] {
        if let Some(v) = v.as_ref().filter(|v| v.get_ref().len() != 1) {
            r.error(
                Some(v.span()),
                &format!("{path}.{key}"),
                format!(
                    "`{key}` must be exactly one ASCII character, got {:?}",
                    v.get_ref()
                ),
                Some("for tab-separated files write \"\\t\"".into()),
            );
        }
    }
    for (column, t) in s.columns.iter().flatten() {
        if let Err(e) = FieldType::parse(t.get_ref()) {
            let hint = type_hint(t.get_ref());
            r.error(
                Some(t.span()),
                &format!("{path}.columns.{column}"),
                e,
                Some(hint),
            );
        }
    }
}

fn check_db_source(r: &mut Reader<'_>, path: &str, s: &DbSourceSpec) {
    match (&s.table, &s.query) {
        (None, None) => r.missing_key(
            Some(s.connection.span()),
            path,
            "table",
            "add `table = \"<schema>.<table>\"` or `query = \"SELECT ...\"`",
        ),
        (Some(t), Some(_)) => r.error(
            Some(t.span()),
            &format!("{path}.table"),
            "`table` and `query` both given",
            Some("keep one: `table` reads a whole table (only the columns the mapping uses), `query` any SELECT".into()),
        ),
        (Some(t), None) => {
            if let Err(e) = TableName::parse(t.get_ref()) {
                r.error(Some(t.span()), &format!("{path}.table"), e, None);
            }
        }
        (None, Some(q)) => {
            if q.get_ref().trim().is_empty() {
                r.error(Some(q.span()), &format!("{path}.query"), "`query` is empty", None);
            }
        }
    }
    if let Some(lb) = s.incremental.as_ref().and_then(|i| i.lookback.as_ref()) {
        check_lookback(r, path, lb);
    }
}

fn check_lookback(r: &mut Reader<'_>, path: &str, lb: &Spanned<Lookback>) {
    let key = format!("{path}.incremental.lookback");
    match lb.get_ref() {
        Lookback::Number(n) if *n < 0 => r.error(
            Some(lb.span()),
            &key,
            format!("`lookback` is negative ({n})"),
            Some("a lookback reads rows below the watermark again; write 0 or more".into()),
        ),
        Lookback::Duration(d) => {
            if let Err(e) = parse_duration(d) {
                r.error(
                    Some(lb.span()),
                    &key,
                    e,
                    Some(format!(
                        "{DURATION_HINT}; for an integer cursor write a number"
                    )),
                );
            }
        }
        Lookback::Number(_) => {}
    }
}
