//! Reason templates: the text a quarantined row carries for each rule it failed, with
//! `{name}` placeholders quoting the row's values (`value '{origin}' is not an airport`).

use crate::invalid;
use crate::invalid::InvalidValue;
use std::fmt;

use serde::Serialize;

/// A reason with `{name}` placeholders that quote values of the failing row.
///
/// Placeholders name canonical fields (`{origin}`) or source columns (`{flights.dest}`);
/// `{{` and `}}` write literal braces. A null value is shown as `NULL`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonTemplate {
    parts: Vec<ReasonPart>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
enum ReasonPart {
    Text(String),
    Value(String),
}

impl ReasonTemplate {
    /// Parses a template.
    ///
    /// # Errors
    /// A message for an unclosed `{` or an empty placeholder.
    pub fn parse(s: &str) -> std::result::Result<ReasonTemplate, InvalidValue> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(invalid!("unclosed `{{` in reason {s:?}")),
                        }
                    }
                    let name = name.trim().to_string();
                    if name.is_empty() {
                        return Err(invalid!("empty `{{}}` in reason {s:?}"));
                    }
                    if !text.is_empty() {
                        parts.push(ReasonPart::Text(std::mem::take(&mut text)));
                    }
                    parts.push(ReasonPart::Value(name));
                }
                '}' => return Err(invalid!("unmatched `}}` in reason {s:?}")),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(ReasonPart::Text(text));
        }
        Ok(ReasonTemplate { parts })
    }

    /// A template without placeholders.
    pub fn literal(s: String) -> ReasonTemplate {
        ReasonTemplate {
            parts: vec![ReasonPart::Text(s)],
        }
    }

    /// `before{field}after`, with `before` and `after` taken literally (no placeholders).
    pub fn with_value(before: &str, field: &str, after: String) -> ReasonTemplate {
        let mut parts = Vec::new();
        if !before.is_empty() {
            parts.push(ReasonPart::Text(before.to_string()));
        }
        parts.push(ReasonPart::Value(field.to_string()));
        if !after.is_empty() {
            parts.push(ReasonPart::Text(after));
        }
        ReasonTemplate { parts }
    }

    /// The names the template quotes.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            ReasonPart::Value(v) => Some(v.as_str()),
            ReasonPart::Text(_) => None,
        })
    }

    /// Fills the placeholders with `value(name)`.
    pub fn render(&self, mut value: impl FnMut(&str) -> String) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                ReasonPart::Text(t) => out.push_str(t),
                ReasonPart::Value(v) => out.push_str(&value(v)),
            }
        }
        out
    }
}

impl fmt::Display for ReasonTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.parts {
            match p {
                ReasonPart::Text(t) => f.write_str(&t.replace('{', "{{").replace('}', "}}"))?,
                ReasonPart::Value(v) => write!(f, "{{{v}}}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_templates_quote_values_and_escape_braces() {
        let t = ReasonTemplate::parse("origin {origin} equals {flights.dest} {{x}}").unwrap();
        let got = t.render(|n| format!("<{n}>"));
        assert_eq!(got, "origin <origin> equals <flights.dest> {x}");
        assert_eq!(
            t.placeholders().collect::<Vec<_>>(),
            vec!["origin", "flights.dest"]
        );
        assert!(ReasonTemplate::parse("bad {x").is_err());
        assert!(ReasonTemplate::parse("bad {}").is_err());
        assert!(ReasonTemplate::parse("bad }").is_err());
    }
}
