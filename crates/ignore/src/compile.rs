//! Turning one cleaned pattern into a matcher, as moby/patternmatcher's `compile` does:
//! plain text is compared exactly, `prefix/**` and `**suffix` by string tests, anything
//! else through a regular expression anchored at both ends.
//!
//! Translation: `*` -> `[^/]*` (does not cross `/`), `?` -> `[^/]`, `**` -> `(.*/)?`
//! (any number of directories, including none; a trailing `**` -> `.*`), `\x` escapes `x`,
//! `[...]` is passed through as a regex class, `.+()|{}$` are literal.

use regex::Regex;

/// How a pattern is matched against a path.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    Exact(String),
    /// `dir/**`: every path starting with the text before `**`.
    Prefix(String),
    /// `**/name` or `**name`: every path ending with the text after `**` (and, for
    /// `**/name`, the path `name` itself). Bytes, because patternmatcher cuts two bytes
    /// off the pattern, which is not a character boundary after a leading BOM.
    Suffix(Vec<u8>),
    Regex(Regex),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

impl Matcher {
    pub(crate) fn is_match(&self, path: &str) -> bool {
        match self {
            Matcher::Exact(text) => path == text,
            Matcher::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Matcher::Suffix(suffix) => {
                let path = path.as_bytes();
                path.ends_with(suffix) || suffix.strip_prefix(b"/").is_some_and(|bare| path == bare)
            }
            Matcher::Regex(re) => re.is_match(path),
        }
    }
}

/// Compiles a cleaned pattern (without its `!`). The error is the regex engine's message.
pub(crate) fn compile(pattern: &str) -> Result<Matcher, String> {
    let (kind, go_regex) = translate(pattern);
    Ok(match kind {
        Kind::Exact => Matcher::Exact(pattern.to_string()),
        // The pattern ends in `**` here; `get` keeps a surprise from becoming a panic.
        Kind::Prefix => Matcher::Prefix(
            pattern
                .get(..pattern.len().saturating_sub(2))
                .unwrap_or(pattern)
                .to_string(),
        ),
        Kind::Suffix => Matcher::Suffix(pattern.as_bytes()[2..].to_vec()),
        Kind::Regex => {
            let rust_regex = go_regex_to_rust(&go_regex);
            Matcher::Regex(Regex::new(&rust_regex).map_err(|err| err.to_string())?)
        }
    })
}

/// The match kind and the Go regular expression patternmatcher would build.
fn translate(pattern: &str) -> (Kind, String) {
    let mut regex = String::from("^");
    let mut kind = Kind::Exact;
    // Go's text/scanner, which patternmatcher reads the pattern with, skips a leading BOM.
    let body = pattern.strip_prefix('\u{FEFF}').unwrap_or(pattern);
    let mut chars = body.chars().peekable();
    let mut index = 0;
    while let Some(ch) = chars.next() {
        match ch {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `**/` is the same as `**`.
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        regex.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    regex.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if index == 0 {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                regex.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                regex.push_str("[^/]");
                kind = Kind::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                regex.push('\\');
                regex.push(ch);
            }
            '\\' => match chars.next() {
                Some(escaped) => {
                    regex.push('\\');
                    regex.push(escaped);
                    kind = Kind::Regex;
                }
                None => regex.push('\\'),
            },
            '[' | ']' => {
                regex.push(ch);
                kind = Kind::Regex;
            }
            _ => regex.push(ch),
        }
        index += 1;
    }
    if kind == Kind::Regex {
        regex.push('$');
    }
    (kind, regex)
}

/// Rewrites the few constructs where Go's regexp syntax and the `regex` crate differ:
/// inside classes `[` is literal in Go but nests in Rust, `&&`/`--`/`~~` are Rust set
/// operators; a `]` outside a class is literal in Go; `\d \s \w` are ASCII in Go; `\<`
/// and `\>` are literals in Go but word boundaries in Rust.
fn go_regex_to_rust(go: &str) -> String {
    let chars: Vec<char> = go.chars().collect();
    let mut out = String::with_capacity(go.len() + 8);
    let mut i = 0;
    let mut in_class = false;
    let mut previous_in_class: Option<char> = None;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        if ch == '\\' {
            let Some(&escaped) = chars.get(i) else {
                out.push('\\');
                continue;
            };
            i += 1;
            push_escape(&mut out, escaped, in_class);
            previous_in_class = Some(escaped);
            continue;
        }
        if !in_class {
            match ch {
                '[' => {
                    in_class = true;
                    previous_in_class = None;
                    out.push('[');
                    if chars.get(i) == Some(&'^') {
                        out.push('^');
                        i += 1;
                    }
                    if chars.get(i) == Some(&']') {
                        out.push_str("\\]");
                        i += 1;
                        previous_in_class = Some(']');
                    }
                }
                ']' => out.push_str("\\]"),
                _ => out.push(ch),
            }
            continue;
        }
        match ch {
            ']' => {
                in_class = false;
                out.push(']');
            }
            '[' => {
                if let Some(len) = posix_class_len(&chars[i - 1..]) {
                    out.extend(&chars[i - 1..i - 1 + len]);
                    i += len - 1;
                } else {
                    out.push_str("\\[");
                }
            }
            '&' | '~' => {
                out.push('\\');
                out.push(ch);
            }
            '-' if previous_in_class == Some('-') => out.push_str("\\-"),
            _ => out.push(ch),
        }
        previous_in_class = Some(ch);
    }
    out
}

/// Length of a `[:name:]` POSIX class at the start of `chars`.
fn posix_class_len(chars: &[char]) -> Option<usize> {
    if chars.get(1) != Some(&':') {
        return None;
    }
    let close = chars.windows(2).skip(2).position(|w| w == [':', ']'])? + 2;
    let name = &chars[2..close];
    if name.is_empty() || !name.iter().all(|c| c.is_ascii_alphabetic() || *c == '^') {
        return None;
    }
    Some(close + 2)
}

fn push_escape(out: &mut String, escaped: char, in_class: bool) {
    let ascii_class = match escaped {
        'd' => Some(("0-9", false)),
        'D' => Some(("0-9", true)),
        's' => Some(("\\t\\n\\x0C\\r ", false)),
        'S' => Some(("\\t\\n\\x0C\\r ", true)),
        'w' => Some(("0-9A-Za-z_", false)),
        'W' => Some(("0-9A-Za-z_", true)),
        _ => None,
    };
    match (ascii_class, in_class) {
        (Some((set, false)), true) => out.push_str(set),
        (Some((set, negated)), _) => {
            out.push('[');
            if negated {
                out.push('^');
            }
            out.push_str(set);
            out.push(']');
        }
        (None, _) if escaped == '<' || escaped == '>' => out.push(escaped),
        (None, _) => {
            out.push('\\');
            out.push(escaped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// patternmatcher_test.go `compileTests` (the `/` separator column).
    #[test]
    fn compiles_like_patternmatcher() {
        let cases = [
            ("*", Kind::Regex, "^[^/]*$"),
            ("file*", Kind::Regex, "^file[^/]*$"),
            ("*file", Kind::Regex, "^[^/]*file$"),
            ("a*/b", Kind::Regex, "^a[^/]*/b$"),
            ("**", Kind::Suffix, ""),
            ("**/**", Kind::Regex, "^(.*/)?.*$"),
            ("dir/**", Kind::Prefix, ""),
            ("**/dir", Kind::Suffix, ""),
            ("**/dir2/*", Kind::Regex, "^(.*/)?dir2/[^/]*$"),
            ("**/dir2/**", Kind::Regex, "^(.*/)?dir2/.*$"),
            ("**file", Kind::Suffix, ""),
            ("**/file*txt", Kind::Regex, "^(.*/)?file[^/]*txt$"),
            ("**/**/*.txt", Kind::Regex, "^(.*/)?(.*/)?[^/]*\\.txt$"),
            ("a[b-d]e", Kind::Regex, "^a[b-d]e$"),
            (".*", Kind::Regex, "^\\.[^/]*$"),
            ("abc.def", Kind::Exact, ""),
            ("abc?def", Kind::Regex, "^abc[^/]def$"),
            ("**/foo/bar", Kind::Suffix, ""),
            ("a(b)c/def", Kind::Exact, ""),
            ("a.|)$(}+{bc", Kind::Exact, ""),
            (
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                Kind::Exact,
                "",
            ),
        ];
        for (pattern, kind, regex) in cases {
            let (actual_kind, actual_regex) = translate(pattern);
            assert_eq!(actual_kind, kind, "{pattern:?}");
            if kind == Kind::Regex {
                assert_eq!(actual_regex, regex, "{pattern:?}");
            }
            assert!(compile(pattern).is_ok(), "{pattern:?}");
        }
    }

    #[test]
    fn go_class_syntax_is_rewritten_for_rust() {
        assert_eq!(go_regex_to_rust("^[[]$"), "^[\\[]$");
        assert_eq!(go_regex_to_rust("^[]a]$"), "^[\\]a]$");
        assert_eq!(go_regex_to_rust("^[a&&b]$"), "^[a\\&\\&b]$");
        assert_eq!(go_regex_to_rust("^[!--]$"), "^[!-\\-]$");
        assert_eq!(go_regex_to_rust("^[[:alpha:]]$"), "^[[:alpha:]]$");
        assert_eq!(go_regex_to_rust("^a]$"), "^a\\]$");
        assert_eq!(go_regex_to_rust("^\\d[\\d]$"), "^[0-9][0-9]$");
        assert_eq!(go_regex_to_rust("^\\<$"), "^<$");
        let re = Regex::new(&go_regex_to_rust("^[a[^/]*]$")).unwrap();
        assert!(re.is_match("a]") && re.is_match("[]") && re.is_match("/////]"));
    }

    #[test]
    fn matchers_behave() {
        assert!(compile("dir/**").unwrap().is_match("dir/x"));
        assert!(!compile("abc/**").unwrap().is_match("abc"));
        assert!(compile("**/foo").unwrap().is_match("foo"));
        assert!(compile("**/foo").unwrap().is_match("a/b/foo"));
        assert!(!compile("**/.foo").unwrap().is_match("bar.foo"));
        assert!(compile("[Local-Only]").is_err(), "reversed range l-O");
        // Go skips a leading BOM when reading the pattern, then cuts two bytes off it.
        let bom = compile("\u{FEFF}**").unwrap();
        assert!(!bom.is_match("a") && !bom.is_match("\u{FEFF}"));
    }
}
