//! Parser directives (`# syntax=`, `# escape=`, `# check=`), BuildKit's `DirectiveParser`:
//! only recognised before any other line, each at most once.

use serde::Serialize;

/// A parser directive found at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// Lower-cased name: `syntax`, `escape` or `check`.
    pub name: String,
    pub value: String,
    /// 1-based line.
    pub line: usize,
}

const VALID: [&str; 3] = ["syntax", "escape", "check"];

#[derive(Debug, Default)]
pub(crate) struct DirectiveParser {
    line: usize,
    done: bool,
    seen: Vec<String>,
}

impl DirectiveParser {
    /// Looks at one physical line (newline removed). Returns the directive if the line is
    /// one; any other line ends the directive section for good.
    pub(crate) fn parse_line(&mut self, line: &str) -> Result<Option<Directive>, String> {
        self.line += 1;
        if self.done {
            return Ok(None);
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(None);
        };
        let Some((key, value)) = match_directive(rest.trim_start()) else {
            self.done = true;
            return Ok(None);
        };
        let key = key.to_lowercase();
        if !VALID.contains(&key.as_str()) {
            self.done = true;
            return Ok(None);
        }
        if self.seen.contains(&key) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        self.seen.push(key.clone());
        Ok(Some(Directive {
            name: key,
            value: value.to_string(),
            line: self.line,
        }))
    }
}

/// `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` by hand. `\s` in Go's RE2 is ASCII white space
/// (`[\t\n\f\r ]`).
fn match_directive(s: &str) -> Option<(&str, &str)> {
    let is_re_space = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let mut chars = s.char_indices();
    let (_, first) = chars.next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let key_end = s
        .char_indices()
        .find(|&(_, c)| !c.is_ascii_alphanumeric())
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let key = &s[..key_end];
    let after_key = s[key_end..].trim_start_matches(is_re_space);
    let after_eq = after_key.strip_prefix('=')?;
    let value = after_eq
        .trim_start_matches(is_re_space)
        .trim_end_matches(is_re_space);
    if !value.is_empty() {
        return Some((key, value));
    }
    // Only blanks after `=`: the lazy `(.+?)` still takes the last blank.
    let last = after_eq.char_indices().last()?.0;
    Some((key, &after_eq[last..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_directive_regex() {
        assert_eq!(match_directive("escape=`"), Some(("escape", "`")));
        assert_eq!(
            match_directive("syntax = docker/dockerfile:1  "),
            Some(("syntax", "docker/dockerfile:1"))
        );
        assert_eq!(match_directive("escape ="), None);
        assert_eq!(match_directive("escape=  "), Some(("escape", " ")));
        assert_eq!(match_directive("1escape=x"), None);
        assert_eq!(match_directive("just a comment"), None);
    }

    #[test]
    fn repeated_directive_is_an_error() {
        let mut p = DirectiveParser::default();
        assert!(p.parse_line("# escape=`").unwrap().is_some());
        assert_eq!(
            p.parse_line("#ESCAPE=\\").unwrap_err(),
            "only one escape parser directive can be used"
        );
    }

    #[test]
    fn unknown_directive_ends_section() {
        let mut p = DirectiveParser::default();
        assert!(p.parse_line("# foo=bar").unwrap().is_none());
        assert!(p.parse_line("# escape=`").unwrap().is_none());
    }
}
