//! The located error every layer of the frontend reports with:
//!
//! ```text
//! Dockerfile:7:6: unknown flag: --frm
//!    7 | COPY --frm=a x y
//!      |      ^
//! ```

use std::fmt;

/// An error in a Dockerfile, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The file name the caller gave (e.g. `Dockerfile`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    pub message: String,
    /// The offending physical line, shown under the message.
    pub source_line: Option<String>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(src) = &self.source_line {
            let gutter = self.line.to_string().len().max(4);
            write!(f, "\n{:>gutter$} | {}", self.line, src)?;
            write!(f, "\n{:gutter$} | {:>col$}", "", "^", col = self.column)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// The text being parsed, to turn a line (and the text at fault) into an [`Error`].
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub file: &'a str,
    lines: Vec<&'a str>,
}

impl<'a> Source<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Source<'a> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Source {
            file,
            lines: text.lines().collect(),
        }
    }

    /// The physical line `line` (1-based), if it exists.
    pub fn line(&self, line: usize) -> Option<&'a str> {
        line.checked_sub(1).and_then(|i| self.lines.get(i)).copied()
    }

    /// An error on `line`, pointing at the first occurrence of `needle` on that line or of
    /// any of the following lines of the instruction (else at its first non-blank
    /// character).
    pub fn error(
        &self,
        start_line: usize,
        end_line: usize,
        needle: Option<&str>,
        message: impl Into<String>,
    ) -> Error {
        let start_line = start_line.max(1);
        let mut at = None;
        if let Some(needle) = needle.filter(|n| !n.is_empty()) {
            for l in start_line..=end_line.max(start_line) {
                if let Some(i) = self.line(l).and_then(|text| text.find(needle)) {
                    at = Some((l, i));
                    break;
                }
            }
        }
        let (line, byte) = at.unwrap_or_else(|| {
            let text = self.line(start_line).unwrap_or("");
            (start_line, text.len() - text.trim_start().len())
        });
        let text = self.line(line).unwrap_or("");
        let column = text.get(..byte).map_or(0, |p| p.chars().count()) + 1;
        Error {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
            source_line: self.line(line).map(|s| s.replace('\t', " ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_line_and_caret() {
        let text = "FROM a\n\n\n\n\n\nCOPY --frm=a x y\n";
        let err = Source::new("Dockerfile", text).error(7, 7, Some("--frm"), "unknown flag: --frm");
        assert_eq!(
            err.to_string(),
            "Dockerfile:7:6: unknown flag: --frm\n   7 | COPY --frm=a x y\n     |      ^"
        );
    }

    #[test]
    fn points_at_first_non_blank_without_needle() {
        let err =
            Source::new("Df", "  ENV PATH\n").error(1, 1, None, "ENV must have two arguments");
        assert_eq!((err.line, err.column), (1, 3));
    }
}
