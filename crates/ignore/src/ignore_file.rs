//! Reading a `.dockerignore` file into patterns (moby/patternmatcher `ignorefile.ReadAll`).

use std::fmt;

use crate::error::IgnoreError;
use crate::path_clean::clean;

/// Go's `bufio.Scanner` refuses longer lines, and with it `docker build`.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// One pattern of an ignore file, normalised as Docker does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The pattern, with a leading `!` for an exception.
    pub text: String,
    /// 1-based line in the file.
    pub line: usize,
}

impl Pattern {
    pub fn is_exclusion(&self) -> bool {
        self.text.starts_with('!')
    }
}

impl AsRef<str> for Pattern {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The `.dockerignore` format.
pub struct IgnoreFile;

impl IgnoreFile {
    /// Splits the file into patterns: a UTF-8 BOM is dropped, lines starting with `#`
    /// (in the first column) are comments, lines are trimmed and blank ones skipped;
    /// after an optional `!` the pattern is trimmed again, cleaned (`a/./b` -> `a/b`) and
    /// a leading `/` removed (patterns are relative to the context root anyway).
    /// A lone `!` is kept; [`crate::PatternMatcher`] rejects it.
    pub fn parse(text: &str) -> Result<Vec<Pattern>, IgnoreError> {
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (index, raw_line) in text.split('\n').enumerate() {
            let line_number = index + 1;
            if raw_line.len() > MAX_LINE_BYTES {
                return Err(IgnoreError::LineTooLong {
                    line: line_number,
                    limit: MAX_LINE_BYTES,
                });
            }
            let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (invert, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let mut pattern = String::new();
            if !body.is_empty() {
                let cleaned = clean(body);
                pattern = match cleaned.strip_prefix('/') {
                    Some(relative) if !relative.is_empty() => relative.to_string(),
                    _ => cleaned,
                };
            }
            if invert {
                pattern.insert(0, '!');
            }
            patterns.push(Pattern {
                text: pattern,
                line: line_number,
            });
        }
        Ok(patterns)
    }
}
