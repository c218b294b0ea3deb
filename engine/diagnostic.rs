//! Config diagnostics: one mistake in one file, with the line it is on and a hint.
//!
//! Every stage that reads what a user wrote (TOML loading, validation, mapping compilation)
//! reports problems as [`Diagnostic`]s and keeps going, so `sluice validate` can print every
//! mistake in one pass instead of making the user fix them one at a time.
//!
//! The rendering follows rustc's layout, because data engineers already read it every day:
//!
//! ```text
//! error: unknown key `partiton_by`
//!   --> jobs/flights.toml:14:1
//!    |
//! 14 | partiton_by = ["origin"]
//!    |
//!    = hint: did you mean `partition_by`?
//! ```

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in, as the user named it (relative to the project root).
    pub file: PathBuf,
    /// 1-based line; 0 when the problem is about the file as a whole (a missing file, say).
    pub line: usize,
    /// 1-based column (in characters); 0 when unknown.
    pub column: usize,
    /// Dotted key path of the offending entry (`target.partition_by`), empty when not applicable.
    pub key: String,
    /// What is wrong, in one sentence without a trailing period.
    pub message: String,
    /// How to fix it, when we can tell.
    pub hint: Option<String>,
    /// The text of the offending line, shown under the location.
    pub source_line: Option<String>,
}

impl Diagnostic {
    /// A diagnostic for the file as a whole (no line).
    pub fn file_level(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.into(),
            line: 0,
            column: 0,
            key: String::new(),
            message: message.into(),
            hint: None,
            source_line: None,
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Sets the dotted key path.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        let file = self.file.display();
        match (self.line, self.column) {
            (0, _) => writeln!(f, "  --> {file}")?,
            (l, 0) => writeln!(f, "  --> {file}:{l}")?,
            (l, c) => writeln!(f, "  --> {file}:{l}:{c}")?,
        }
        if !self.key.is_empty() {
            writeln!(f, "   = key: {}", self.key)?;
        }
        if let Some(text) = &self.source_line {
            let number = self.line.to_string();
            let pad = " ".repeat(number.len());
            writeln!(f, "{pad} |")?;
            writeln!(f, "{number} | {text}")?;
            writeln!(f, "{pad} |")?;
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "   = hint: {hint}")?;
        }
        Ok(())
    }
}

/// A set of diagnostics, reported together. Displayed one after another, then a count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// True when nothing was reported.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds one problem.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// Adds all problems of another set, skipping ones already reported (a mapping compiled
    /// for several jobs reports its mistakes once).
    pub fn extend(&mut self, other: Diagnostics) {
        // A set of what is already here, so that merging many problems stays linear.
        let key = |d: &Diagnostic| (d.file.clone(), d.line, d.key.clone(), d.message.clone());
        let mut seen: std::collections::HashSet<_> = self.0.iter().map(key).collect();
        for d in other.0 {
            if seen.insert(key(&d)) {
                self.0.push(d);
            }
        }
    }

    /// `Ok(value)` when empty, the diagnostics otherwise.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(f, "{n} problem{} found", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for Diagnostics {}

/// A config file's text, kept so byte offsets (TOML spans) can become line and column numbers.
#[derive(Debug, Clone)]
pub struct SourceText {
    /// Path as shown to the user.
    pub path: PathBuf,
    /// Full text of the file.
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceText {
    /// Wraps the text of `path`.
    pub fn new(path: impl Into<PathBuf>, text: String) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceText {
            path: path.into(),
            text,
            line_starts,
        }
    }

    /// Path as shown to the user.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// 1-based (line, column) of a byte offset; column counts characters.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let column = self
            .text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(0)
            + 1;
        (line + 1, column)
    }

    /// Text of a 1-based line without its newline.
    pub fn line_text(&self, line: usize) -> Option<&str> {
        let start = *self.line_starts.get(line.checked_sub(1)?)?;
        let end = self
            .line_starts
            .get(line)
            .copied()
            .unwrap_or(self.text.len());
        self.text
            .get(start..end)
            .map(|s| s.trim_end_matches(['\n', '\r']))
    }

    /// A diagnostic located at `span` (byte range), or at the file when the span is unknown.
    pub fn diagnostic(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, column, source_line) = match span {
            Some(span) => {
                let (line, column) = self.line_col(span.start);
                (line, column, self.line_text(line).map(str::to_owned))
            }
            None => (0, 0, None),
        };
        Diagnostic {
            file: self.path.clone(),
            line,
            column,
            key: key.into(),
            message: message.into(),
            hint: None,
            source_line,
        }
    }
}

/// The closest candidate to `word` by Jaro-Winkler similarity, if it is close enough to be a
/// plausible typo (similarity ≥ 0.8, the threshold cargo and clap use for "did you mean").
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let src = SourceText::new("a.toml", "a = 1\nbé = 2\n\nc = 3".to_string());
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(6), (2, 1));
        // `=` on line 2 comes after a two-byte character: column counts characters.
        assert_eq!(src.line_col(10), (2, 4));
        assert_eq!(src.line_col(src.text.len()), (4, 6));
        assert_eq!(src.line_text(2), Some("bé = 2"));
        assert_eq!(src.line_text(5), None);
    }

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["partition_by", "path", "mode"];
        assert_eq!(did_you_mean("partiton_by", keys), Some("partition_by"));
        assert_eq!(did_you_mean("zzz", keys), None);
    }
}
