//! Reading one TOML file into typed specs while collecting every mistake.
//!
//! serde stops at the first error of a value it deserializes. To report every mistake in a file
//! at once, the top level of each file is walked by hand and each *entry* (a table such as
//! `[target]`, one `[[rule]]`, one field of `[fields]`) is deserialized on its own: a mistake in
//! one entry does not hide mistakes in the others. Spans come from `toml_edit`, which keeps the
//! byte range of every key and value, so each diagnostic names its line.

use std::ops::Range;

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml_edit::{ImDocument, Item, Table, Value};

use crate::diagnostic::{did_you_mean, Diagnostic, Diagnostics, SourceText};

/// Collects diagnostics for one file while its entries are read.
pub struct Reader<'a> {
    /// The file being read.
    pub src: &'a SourceText,
    /// Problems found so far (in this file and possibly others).
    pub diags: &'a mut Diagnostics,
    /// Every `[table]` / `[[array]]` header of the file with its byte offset, in file order;
    /// built on first use so that naming the table of each of many mistakes stays linear.
    headers: std::cell::OnceCell<Vec<(usize, String)>>,
}

impl<'a> Reader<'a> {
    /// Starts reading `src`, reporting into `diags`.
    pub fn new(src: &'a SourceText, diags: &'a mut Diagnostics) -> Self {
        Reader {
            src,
            diags,
            headers: std::cell::OnceCell::new(),
        }
    }

    /// Parses the file; a syntax error becomes one diagnostic and `None`.
    pub fn parse(&mut self) -> Option<Table> {
        match ImDocument::parse(self.src.text.clone()) {
            Ok(doc) => Some(doc.into_table()),
            Err(e) => {
                let d = self
                    .src
                    .diagnostic(
                        e.span(),
                        "",
                        format!("invalid TOML: {}", first_line(e.message())),
                    )
                    .with_hint("see https://toml.io/en/v1.0.0 for the syntax");
                self.diags.push(d);
                None
            }
        }
    }

    /// Reports a problem at `span` under `key`.
    pub fn error(
        &mut self,
        span: Option<Range<usize>>,
        key: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let mut d = self.src.diagnostic(span, key, message);
        d.hint = hint;
        self.diags.push(d);
    }

    /// Reports a problem with a ready diagnostic.
    pub fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Reports an unknown top-level or section key, suggesting the closest known one.
    pub fn unknown_key(&mut self, table: &Table, key: &str, prefix: &str, known: &[&str]) {
        let span = table.key(key).and_then(|k| k.span());
        let hint = match did_you_mean(key, known.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("known keys here: {}", quoted_list(known)),
        };
        self.error(
            span,
            &join_key(prefix, key),
            format!("unknown key `{key}`"),
            Some(hint),
        );
    }

    /// Reports a missing required key of `table` (at the table's header when known).
    pub fn missing_key(&mut self, span: Option<Range<usize>>, prefix: &str, key: &str, hint: &str) {
        self.error(
            span,
            &join_key(prefix, key),
            format!("missing required key `{key}`"),
            Some(hint.to_string()),
        );
    }

    /// Reports each key of `t` (at `path`) that is none of `known` (every key any kind of the
    /// entry accepts, used when its kind cannot be told), with the closest known key
    /// (`fromat`: did you mean `format`?).
    pub fn unknown_keys_of_any_kind(
        &mut self,
        path: &str,
        t: &dyn toml_edit::TableLike,
        known: &[&str],
    ) {
        for (key, _) in t.iter().filter(|(k, _)| !known.contains(k)) {
            let span = t.key(key).and_then(|k| k.span());
            let hint =
                did_you_mean(key, known.iter().copied()).map(|s| format!("did you mean `{s}`?"));
            let message = format!("unknown key `{key}`");
            self.error(span, &format!("{path}.{key}"), message, hint);
        }
    }

    /// Deserializes one entry; on failure reports a diagnostic (with a did-you-mean hint for
    /// unknown keys) and returns `None`.
    pub fn entry<T: DeserializeOwned>(&mut self, key_path: &str, item: &Item) -> Option<T> {
        let fallback_span = item.span();
        // serde stops at the first unknown key; report every one of this entry at once.
        if let Some(fields) = struct_fields::<T>() {
            let keys: Vec<(String, Option<Range<usize>>)> = match item {
                Item::Table(t) => t
                    .iter()
                    .map(|(k, _)| (k.to_string(), Reader::key_span(t, k)))
                    .collect(),
                Item::Value(Value::InlineTable(t)) => t
                    .iter()
                    .map(|(k, v)| (k.to_string(), t.key(k).and_then(|k| k.span()).or(v.span())))
                    .collect(),
                _ => Vec::new(),
            };
            let unknown: Vec<_> = keys
                .into_iter()
                .filter(|(k, _)| !fields.contains(&k.as_str()))
                .collect();
            if !unknown.is_empty() {
                for (k, span) in unknown {
                    let hint = match did_you_mean(&k, fields.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("known keys here: {}", quoted_list(fields)),
                    };
                    let key = span
                        .as_ref()
                        .and_then(|s| self.table_header_before(s.start))
                        .filter(|h| h.starts_with(key_path))
                        .unwrap_or_else(|| key_path.to_string());
                    self.error(span, &key, format!("unknown key `{k}`"), Some(hint));
                }
                return None;
            }
        }
        let mut value = item_to_value(item.clone())?;
        // serde stops at the first mistake; an unknown key deeper down (`[checks.row_count]`
        // has two) is reported, taken out, and the entry read again to find the next one.
        let mut reported = false;
        loop {
            let e = match T::deserialize(value.clone().into_deserializer()) {
                Ok(v) if !reported => return Some(v),
                Ok(_) => return None,
                Err(e) => e,
            };
            let span = e.span().or(fallback_span.clone());
            let (message, hint) = explain_serde_error(e.message());
            // Name the innermost table the mistake is in (`checks.quarantine_ratio`), not
            // just the entry (`checks`).
            let key = span
                .as_ref()
                .and_then(|s| self.table_header_before(s.start))
                .filter(|h| h.starts_with(key_path))
                .unwrap_or_else(|| key_path.to_string());
            self.error(span.clone(), &key, message, hint);
            reported = true;
            let unknown = first_line(e.message())
                .strip_prefix("unknown field ")
                .and_then(|rest| backticked(rest).into_iter().next());
            match (unknown, e.span()) {
                (Some(name), Some(at)) if remove_key_at(&mut value, &name, &at) => continue,
                _ => return None,
            }
        }
    }

    /// The `[table.header]` (or `[[array]]`) in force at byte `offset`, if any.
    fn table_header_before(&self, offset: usize) -> Option<String> {
        let headers = self.headers.get_or_init(|| {
            let mut at = 0;
            let mut out = Vec::new();
            for line in self.src.text.split_inclusive('\n') {
                let t = line.trim();
                let inner = t
                    .strip_prefix("[[")
                    .and_then(|r| r.strip_suffix("]]"))
                    .or_else(|| t.strip_prefix('[').and_then(|r| r.split(']').next()));
                if let Some(inner) = inner {
                    out.push((at, inner.trim().replace([' ', '"'], "")));
                }
                at += line.len();
            }
            out
        });
        // The last header that starts before `offset`.
        let n = headers.partition_point(|(start, _)| *start < offset);
        n.checked_sub(1)
            .and_then(|i| headers.get(i))
            .map(|(_, h)| h.clone())
    }

    /// Span of the key `key` in `table`, falling back to its value's span.
    pub fn key_span(table: &Table, key: &str) -> Option<Range<usize>> {
        table
            .key(key)
            .and_then(|k| k.span())
            .or_else(|| table.get(key).and_then(Item::span))
    }
}

/// The keys a struct type `T` accepts, read from the field list serde passes to
/// `deserialize_struct` (`None` for types that are not plain structs, such as maps, strings or
/// `Spanned` wrappers).
pub(crate) fn struct_fields<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    use serde::de::{self, Visitor};

    struct Probe<'a>(&'a mut Option<&'static [&'static str]>);

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            // serde_spanned's wrapper is a struct of private fields; look through it no
            // further (its inner type is checked by serde as usual).
            if !name.starts_with("$__") {
                *self.0 = Some(fields);
            }
            Err(de::Error::custom("probed"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields = None;
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// Converts any item into a value that `serde` can read, keeping spans of the leaves.
fn item_to_value(item: Item) -> Option<Value> {
    match item {
        Item::None => None,
        Item::Value(v) => Some(v),
        Item::Table(t) => Some(Value::InlineTable(t.into_inline_table())),
        Item::ArrayOfTables(a) => Some(Value::Array(a.into_array())),
    }
}

/// Removes the key `name` whose key is written at `at` from the tables inside `value`;
/// false when there is no such key (then nothing is removed).
fn remove_key_at(value: &mut Value, name: &str, at: &Range<usize>) -> bool {
    match value {
        Value::InlineTable(t) => {
            let here = t.key(name).and_then(|k| k.span()).as_ref() == Some(at);
            if here {
                return t.remove(name).is_some();
            }
            t.iter_mut().any(|(_, v)| remove_key_at(v, name, at))
        }
        Value::Array(a) => a.iter_mut().any(|v| remove_key_at(v, name, at)),
        _ => false,
    }
}

/// Joins a dotted key path.
pub fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim()
}

/// Turns serde's messages into ours: `unknown field `x`, expected one of `a`, `b`` becomes
/// "unknown key `x`" with a did-you-mean hint computed from the expected list.
fn explain_serde_error(message: &str) -> (String, Option<String>) {
    let message = first_line(message);
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let names = backticked(rest);
        if let Some((unknown, expected)) = names.split_first() {
            let hint = match did_you_mean(unknown, expected.iter().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "known keys here: {}",
                    quoted_list(&expected.iter().map(String::as_str).collect::<Vec<_>>())
                ),
            };
            return (format!("unknown key `{unknown}`"), Some(hint));
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let names = backticked(rest);
        if let Some((unknown, expected)) = names.split_first() {
            let hint = match did_you_mean(unknown, expected.iter().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "expected one of {}",
                    quoted_list(&expected.iter().map(String::as_str).collect::<Vec<_>>())
                ),
            };
            return (format!("unknown value `{unknown}`"), Some(hint));
        }
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return (format!("missing required key {rest}"), None);
    }
    if message.starts_with("invalid type") {
        return (
            message.replace("invalid type", "wrong type"),
            Some("check the value's TOML type: quotes make a string, [..] an array".into()),
        );
    }
    (message.to_string(), None)
}

/// Every `backticked` word of a serde message, in order.
fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, w)| w.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Target {
        path: String,
        #[serde(default)]
        partition_by: Vec<String>,
    }

    #[test]
    fn unknown_nested_key_gets_line_and_suggestion() {
        let src = SourceText::new(
            "job.toml",
            "a = 1\n\n[target]\npath = \"x\"\npartiton_by = [\"y\"]\n".to_string(),
        );
        let mut diags = Diagnostics::default();
        let mut r = Reader::new(&src, &mut diags);
        let table = r.parse().expect("valid toml");
        let got: Option<Target> = r.entry("target", &table["target"]);
        assert!(got.is_none());
        assert_eq!(diags.len(), 1);
        let d = &diags.0[0];
        assert_eq!(d.line, 5, "{d}");
        assert_eq!(d.message, "unknown key `partiton_by`");
        assert_eq!(d.hint.as_deref(), Some("did you mean `partition_by`?"));
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Checks {
        quarantine_ratio: Option<Ratio>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Ratio {
        warn_above: Option<f64>,
    }

    #[test]
    fn unknown_key_in_a_nested_table_names_that_table() {
        let src = SourceText::new(
            "job.toml",
            "[checks.quarantine_ratio]\nwarn_above = 0.1\nonwer = \"me\"\n".to_string(),
        );
        let mut diags = Diagnostics::default();
        let mut r = Reader::new(&src, &mut diags);
        let table = r.parse().expect("valid toml");
        let got: Option<Checks> = r.entry("checks", &table["checks"]);
        assert!(got.is_none());
        assert_eq!(diags.0[0].line, 3, "{}", diags.0[0]);
        assert_eq!(diags.0[0].key, "checks.quarantine_ratio", "{}", diags.0[0]);
    }

    #[test]
    fn every_unknown_key_of_a_nested_table_is_reported() {
        let src = SourceText::new(
            "job.toml",
            "[checks.quarantine_ratio]\nwarn_abve = 0.1\nonwer = \"me\"\n".to_string(),
        );
        let mut diags = Diagnostics::default();
        let mut r = Reader::new(&src, &mut diags);
        let table = r.parse().expect("valid toml");
        let got: Option<Checks> = r.entry("checks", &table["checks"]);
        assert!(got.is_none());
        let lines: Vec<usize> = diags.0.iter().map(|d| d.line).collect();
        assert_eq!(lines, [2, 3], "{diags}");
        assert_eq!(
            diags.0[0].hint.as_deref(),
            Some("did you mean `warn_above`?")
        );
    }

    #[test]
    fn wrong_type_names_line() {
        let src = SourceText::new("job.toml", "[target]\npath = 3\n".to_string());
        let mut diags = Diagnostics::default();
        let mut r = Reader::new(&src, &mut diags);
        let table = r.parse().expect("valid toml");
        let got: Option<Target> = r.entry("target", &table["target"]);
        assert!(got.is_none());
        assert_eq!(diags.0[0].line, 2, "{}", diags.0[0]);
        assert!(diags.0[0].message.contains("wrong type"), "{}", diags.0[0]);
    }

    #[test]
    fn syntax_error_is_one_diagnostic_with_line() {
        let src = SourceText::new("x.toml", "a = 1\nb = \n".to_string());
        let mut diags = Diagnostics::default();
        assert!(Reader::new(&src, &mut diags).parse().is_none());
        assert_eq!(diags.0[0].line, 2, "{}", diags.0[0]);
    }
}
