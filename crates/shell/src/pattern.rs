//! Shell patterns of `${V#p}`, `${V%p}` and `${V/p/r}`, translated to regular expressions
//! the way BuildKit does: `*` is any string, `?` any one character, `\` escapes only `*`,
//! `?` and `\` (and is dropped before `}` and `/`, which had to be escaped to get past the
//! `${...}` syntax). Everything else, `[` included, is a literal: BuildKit implements no
//! bracket expressions, so `${V#[ab]}` removes the literal text `[ab]`.

use regex::{Regex, RegexBuilder};

use crate::chars::{is_digit, is_letter};
use crate::scanner::Scanner;

/// Why a pattern was rejected (the text after "invalid pattern (...) in substitution: ").
pub(crate) type PatternError = String;

/// Regex text for a shell pattern. `greedy` picks `.*` over `.*?` for `*`; `anchored`
/// matches only at the start of the value.
fn pattern_to_regex_source(
    pattern: &str,
    greedy: bool,
    anchored: bool,
) -> Result<String, PatternError> {
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut scanner = Scanner::new(pattern);
    while let Some(tok) = scanner.next() {
        match tok {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => {
                if matches!(scanner.peek(), Some('}') | Some('/')) {
                    continue;
                }
                match scanner.next() {
                    Some(escaped @ ('*' | '?' | '\\')) => {
                        out.push('\\');
                        out.push(escaped);
                    }
                    Some(other) => return Err(format!("invalid escape '\\{other}'")),
                    None => return Err("invalid escape '\\' at end of pattern".to_string()),
                }
            }
            '[' | ']' | '{' | '}' | '.' | '+' | '(' | ')' | '|' | '^' | '$' => {
                out.push('\\');
                out.push(tok);
            }
            _ => out.push(tok),
        }
    }
    Ok(out)
}

pub(crate) fn pattern_to_regex(
    pattern: &str,
    greedy: bool,
    anchored: bool,
) -> Result<Regex, PatternError> {
    let source = pattern_to_regex_source(pattern, greedy, anchored)?;
    RegexBuilder::new(&source)
        .build()
        .map_err(|err| err.to_string())
}

/// `${V#p}` (shortest) and `${V##p}` (longest): drop the matching prefix.
pub(crate) fn trim_prefix(
    pattern: &str,
    value: &str,
    greedy: bool,
) -> Result<String, PatternError> {
    let re = pattern_to_regex(pattern, greedy, true)?;
    Ok(match re.find(value) {
        Some(found) => value[found.end()..].to_string(),
        None => value.to_string(),
    })
}

/// `${V%p}` and `${V%%p}`. A regex cannot find the shortest rightmost match directly, so
/// (as BuildKit) reverse value and pattern and trim a prefix.
pub(crate) fn trim_suffix(
    pattern: &str,
    value: &str,
    greedy: bool,
) -> Result<String, PatternError> {
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reverse_string(value), greedy)?;
    Ok(reverse_string(&trimmed))
}

fn reverse_string(text: &str) -> String {
    text.chars().rev().collect()
}

/// Reverses a pattern but keeps each `\x` escape pair in order (`a\*c` -> `c\*a`).
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let Some(last) = chars.len().checked_sub(1) else {
        return String::new();
    };
    let mut out = vec!['\0'; chars.len()];
    let mut i = 0;
    while i <= last {
        let tok = chars[i];
        let out_idx = last - i;
        if tok == '\\' && i != last {
            out[out_idx - 1] = tok;
            out[out_idx] = chars[i + 1];
            i += 2;
        } else {
            out[out_idx] = tok;
            i += 1;
        }
    }
    out.into_iter().collect()
}

/// `${V/p/r}`: the replacement is inserted literally.
pub(crate) fn replace_first(re: &Regex, value: &str, replacement: &str) -> String {
    match re.find(value) {
        Some(found) => {
            let mut out = String::with_capacity(value.len() + replacement.len());
            out.push_str(&value[..found.start()]);
            out.push_str(replacement);
            out.push_str(&value[found.end()..]);
            out
        }
        None => value.to_string(),
    }
}

/// `${V//p/r}`: BuildKit uses Go's `Regexp.ReplaceAllString`, so the replacement is a Go
/// template (`$0`/`${0}` is the match, `$$` a dollar, other `$name` empty) and an empty
/// match right after a previous match is not replaced. Both are reproduced here.
#[cfg(test)]
pub(crate) fn replace_all(re: &Regex, value: &str, replacement: &str) -> String {
    replace_all_within(re, value, replacement, usize::MAX).unwrap_or_default()
}

/// [`replace_all`], giving up (`None`) as soon as the result would exceed `max_bytes`: a
/// long replacement for every character of a long value multiplies their lengths.
pub(crate) fn replace_all_within(
    re: &Regex,
    value: &str,
    replacement: &str,
    max_bytes: usize,
) -> Option<String> {
    let mut out = String::with_capacity(value.len().min(max_bytes));
    let mut last_match_end = 0;
    let mut search_pos = 0;
    while search_pos <= value.len() {
        let Some(found) = re.find_at(value, search_pos) else {
            break;
        };
        out.push_str(&value[last_match_end..found.start()]);
        if (found.end() > last_match_end || found.start() == 0)
            && !expand_go_template(replacement, found.as_str(), &mut out, max_bytes)
        {
            return None;
        }
        last_match_end = found.end();
        let width = value[search_pos..].chars().next().map_or(0, char::len_utf8);
        if search_pos + width > found.end() {
            search_pos += width;
        } else if search_pos + 1 > found.end() {
            // Only reachable at the end of the value, where `width` is 0.
            search_pos += 1;
        } else {
            search_pos = found.end();
        }
    }
    out.push_str(&value[last_match_end..]);
    (out.len() <= max_bytes).then_some(out)
}

/// Go's `Regexp.Expand` for a regex whose only group is the whole match. Returns false
/// (leaving `out` partial) once `out` exceeds `max_bytes`: each `$0` repeats the match.
fn expand_go_template(
    template: &str,
    whole_match: &str,
    out: &mut String,
    max_bytes: usize,
) -> bool {
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        if out.len() > max_bytes {
            return false;
        }
        out.push_str(&rest[..dollar]);
        rest = &rest[dollar + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        match parse_template_reference(rest) {
            Some((name, after)) => {
                if group_number(name) == Some(0) {
                    out.push_str(whole_match);
                }
                rest = after;
            }
            // Malformed reference: Go keeps the `$` as text.
            None => out.push('$'),
        }
    }
    out.push_str(rest);
    out.len() <= max_bytes
}

/// `name` or `{name}` at the start of `text` (name: letters, digits, `_`; non-empty).
/// Returns the name and the text after the reference.
fn parse_template_reference(text: &str) -> Option<(&str, &str)> {
    let (braced, body) = match text.strip_prefix('{') {
        Some(body) => (true, body),
        None => (false, text),
    };
    let name_len: usize = body
        .chars()
        .take_while(|&ch| is_letter(ch) || is_digit(ch) || ch == '_')
        .map(char::len_utf8)
        .sum();
    if name_len == 0 {
        return None;
    }
    let (name, after) = body.split_at(name_len);
    if braced {
        let after = after.strip_prefix('}')?;
        return Some((name, after));
    }
    Some((name, after))
}

/// The group number a template name refers to, as Go parses it (ASCII digits, no leading
/// zero, below 10^8).
fn group_number(name: &str) -> Option<u64> {
    if name.len() > 1 && name.starts_with('0') {
        return None;
    }
    let mut num: u64 = 0;
    for byte in name.bytes() {
        if !byte.is_ascii_digit() || num >= 100_000_000 {
            return None;
        }
        num = num * 10 + u64::from(byte - b'0');
    }
    Some(num)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_like_buildkit() {
        // The cases of BuildKit's TestConvertShellPatternToRegex.
        let cases = [
            ("*", "^.*"),
            ("?", "^."),
            ("\\*", "^\\*"),
            (
                "(()[]{\\}^$.\\*\\?|\\\\",
                "^\\(\\(\\)\\[\\]\\{\\}\\^\\$\\.\\*\\?\\|\\\\",
            ),
        ];
        for (pattern, expected) in cases {
            assert_eq!(
                pattern_to_regex_source(pattern, true, true).unwrap(),
                expected
            );
        }
        assert_eq!(pattern_to_regex_source("a*", false, false).unwrap(), "a.*?");
        for invalid in ["\\", "\\x", "\\\\\\"] {
            assert!(
                pattern_to_regex(invalid, true, true).is_err(),
                "{invalid:?}"
            );
        }
        assert_eq!(
            pattern_to_regex("\\x", true, true).unwrap_err(),
            "invalid escape '\\x'"
        );
    }

    #[test]
    fn reverses_like_buildkit() {
        assert_eq!(reverse_string("54321"), "12345");
        assert_eq!(reverse_string("🖖🚀👽"), "👽🚀🖖");
        let cases = [
            ("a\\*c", "c\\*a"),
            ("\\\\\\ab", "b\\a\\\\"),
            ("ab\\", "\\ba"),
            ("👽\\🚀🖖", "🖖\\🚀👽"),
            ("\\\\b", "b\\\\"),
            ("", ""),
        ];
        for (pattern, expected) in cases {
            assert_eq!(reverse_pattern(pattern), expected, "{pattern:?}");
        }
    }

    #[test]
    fn trims_shortest_and_longest() {
        assert_eq!(trim_prefix("*x", "axbxc", false).unwrap(), "bxc");
        assert_eq!(trim_prefix("*x", "axbxc", true).unwrap(), "c");
        assert_eq!(trim_suffix("x*", "axbxc", false).unwrap(), "axb");
        assert_eq!(trim_suffix("x*", "axbxc", true).unwrap(), "a");
        assert_eq!(trim_prefix("z", "axbxc", true).unwrap(), "axbxc");
        assert_eq!(
            trim_prefix("[ab]", "[ab]c", true).unwrap(),
            "c",
            "brackets are literal"
        );
    }

    #[test]
    fn replace_all_follows_go_empty_match_rules() {
        let empty = pattern_to_regex("", true, false).unwrap();
        assert_eq!(replace_all(&empty, "ab", "-"), "-a-b-");
        let star = pattern_to_regex("*", true, false).unwrap();
        assert_eq!(replace_all(&star, "ab", "-"), "-");
        let x = pattern_to_regex("x", true, false).unwrap();
        assert_eq!(replace_all(&x, "axbx", "y"), "ayby");
        assert_eq!(replace_first(&x, "axbx", "y"), "aybx");
    }

    #[test]
    fn replace_all_expands_go_templates() {
        let x = pattern_to_regex("x?", true, false).unwrap();
        assert_eq!(replace_all(&x, "axyb", "[$0]"), "a[xy]b");
        assert_eq!(replace_all(&x, "axyb", "[${0}]"), "a[xy]b");
        assert_eq!(replace_all(&x, "axyb", "$$"), "a$b");
        assert_eq!(replace_all(&x, "axyb", "$1|$name|${x}"), "a||b");
        assert_eq!(replace_all(&x, "axyb", "$"), "a$b");
        assert_eq!(replace_all(&x, "axyb", "${0"), "a${0b");
        assert_eq!(
            replace_all(&x, "axyb", "$00"),
            "ab",
            "leading zero is a name, not group 0"
        );
        // The first-match form inserts the replacement literally.
        assert_eq!(replace_first(&x, "axyb", "$0"), "a$0b");
    }
}
