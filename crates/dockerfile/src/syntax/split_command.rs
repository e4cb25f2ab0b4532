//! BuildKit's `split_command.go`: a logical line -> keyword, `--flags`, rest.

/// `[\t\v\f\r ]`: the separator class of BuildKit's `reWhitespace`.
pub(crate) fn is_re_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// `reWhitespace.Split(s, n)` with `n == -1` (all) or a positive limit.
pub(crate) fn split_re_whitespace(s: &str, limit: Option<usize>) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if limit.is_some_and(|n| out.len() + 1 >= n) {
            out.push(rest);
            return out;
        }
        match rest.find(is_re_whitespace) {
            Some(start) => {
                out.push(&rest[..start]);
                let after = &rest[start..];
                let len = after.len() - after.trim_start_matches(is_re_whitespace).len();
                rest = &after[len..];
            }
            None => {
                out.push(rest);
                return out;
            }
        }
    }
}

/// Splits a logical line into (keyword, flags, rest).
pub(crate) fn split_command(line: &str, escape: char) -> (String, Vec<String>, String) {
    let parts = split_re_whitespace(line.trim(), Some(2));
    let cmd = parts[0].to_string();
    if parts.len() < 2 {
        return (cmd, Vec::new(), String::new());
    }
    let (rest, flags) = extract_builder_flags(parts[1], escape);
    (cmd, flags, rest.trim().to_string())
}

/// Go's `unicode.IsSpace` applied to a single byte taken as a rune (BuildKit walks the
/// flags byte by byte, so 0x85 and 0xA0 count as blanks even inside UTF-8 sequences).
fn is_space_byte(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0)
}

/// Leading words starting with `--` are flags (quotes removed, the escape character escapes
/// the next byte); a bare `--` ends them. Faithful to BuildKit's byte-wise loop, including
/// that each byte of a non-ASCII character becomes its own (Latin-1) character in a flag.
fn extract_builder_flags(line: &str, escape: char) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let bytes = line.as_bytes();
    // A non-ASCII escape can't be the token (only \ and ` are allowed), so a byte compare works.
    let esc = escape as u32 as u8;
    let rest_from = |pos: usize| String::from_utf8_lossy(&bytes[pos..]).into_owned();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word: Vec<char> = Vec::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= bytes.len() {
        let mut ch = if pos < bytes.len() { bytes[pos] } else { 0 };
        if phase == Phase::Spaces {
            if pos == bytes.len() {
                break;
            }
            if is_space_byte(ch) {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == bytes.len() || bytes[pos + 1] != b'-' {
                return (rest_from(pos), words);
            }
            phase = Phase::Word;
        }
        if pos == bytes.len() {
            let w: String = word.iter().collect();
            if w != "--" && (blank_ok || !w.is_empty()) {
                words.push(w);
            }
            break;
        }
        if phase == Phase::Word {
            if is_space_byte(ch) {
                let w: String = word.iter().collect();
                phase = Phase::Spaces;
                if w == "--" {
                    return (rest_from(pos), words);
                }
                if blank_ok || !w.is_empty() {
                    words.push(w);
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            if ch == esc {
                if pos + 1 == bytes.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                ch = bytes[pos];
            }
            word.push(char::from(ch));
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        if ch == esc {
            if pos + 1 == bytes.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            ch = bytes[pos];
        }
        word.push(char::from(ch));
        pos += 1;
    }
    (String::new(), words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_keyword_flags_rest() {
        let (cmd, flags, rest) = split_command("  COPY --from=a --chown=\"1 2\" x   y ", '\\');
        assert_eq!(cmd, "COPY");
        assert_eq!(flags, vec!["--from=a", "--chown=1 2"]);
        assert_eq!(rest, "x   y");
    }

    #[test]
    fn double_dash_ends_flags() {
        let (_, flags, rest) = split_command("COPY -- --foo /tmp/", '\\');
        assert!(flags.is_empty());
        assert_eq!(rest, "--foo /tmp/");
    }

    #[test]
    fn flags_only() {
        let (_, flags, rest) = split_command("RUN --a --b", '\\');
        assert_eq!(flags, vec!["--a", "--b"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn whitespace_split_with_limit() {
        assert_eq!(split_re_whitespace("a \t b c", Some(2)), vec!["a", "b c"]);
        assert_eq!(split_re_whitespace("a  b ", None), vec!["a", "b", ""]);
    }
}
