//! The syntax check Docker applies to every pattern: Go's `filepath.Match(pattern, ".")`
//! fails exactly when some `*`-separated chunk of the pattern is malformed (an unclosed
//! or empty `[...]`, a range with a missing end, a trailing `\`).

/// Returns a description of the first syntax error, if any.
pub(crate) fn check(pattern: &str) -> Result<(), &'static str> {
    let mut rest = pattern.as_bytes();
    while !rest.is_empty() {
        let (chunk, after) = next_chunk(rest);
        check_chunk(chunk)?;
        rest = after;
    }
    Ok(())
}

/// Go's `scanChunk`: skip leading `*`s, then take up to the next `*` outside `[...]`.
fn next_chunk(pattern: &[u8]) -> (&[u8], &[u8]) {
    let start = pattern.iter().take_while(|&&b| b == b'*').count();
    let pattern = &pattern[start..];
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            // An escaped character is skipped (a trailing `\` is left for check_chunk).
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    pattern.split_at(i)
}

/// Go's `matchChunk` walked in its "already failed" mode, where only syntax is checked.
fn check_chunk(mut chunk: &[u8]) -> Result<(), &'static str> {
    while let Some(&first) = chunk.first() {
        match first {
            b'[' => {
                chunk = &chunk[1..];
                if chunk.first() == Some(&b'^') {
                    chunk = &chunk[1..];
                }
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&b']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    chunk = class_char(chunk)?;
                    if chunk[0] == b'-' {
                        chunk = class_char(&chunk[1..])?;
                    }
                    ranges += 1;
                }
            }
            b'\\' => {
                chunk = &chunk[1..];
                if chunk.is_empty() {
                    return Err("trailing backslash");
                }
                chunk = &chunk[1..];
            }
            _ => chunk = &chunk[1..],
        }
    }
    Ok(())
}

/// Go's `getEsc`: one (possibly escaped) character of a class; something must follow it.
fn class_char(chunk: &[u8]) -> Result<&[u8], &'static str> {
    match chunk.first() {
        None => return Err("unterminated character class"),
        Some(b'-') | Some(b']') => return Err("misplaced '-' or ']' in character class"),
        _ => {}
    }
    let mut chunk = chunk;
    if chunk[0] == b'\\' {
        chunk = &chunk[1..];
        if chunk.is_empty() {
            return Err("unterminated character class");
        }
    }
    let width = utf8_width(chunk[0]).min(chunk.len());
    if std::str::from_utf8(&chunk[..width]).is_err() {
        return Err("invalid UTF-8 in character class");
    }
    let rest = &chunk[width..];
    if rest.is_empty() {
        return Err("unterminated character class");
    }
    Ok(rest)
}

fn utf8_width(first: u8) -> usize {
    match first {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_patterns() {
        for pattern in [
            "abc",
            "*",
            "a*/b",
            "ab[c]",
            "ab[^b-d]",
            "[\\]a]",
            "[\\-]",
            "[x\\-]",
            "[a-ζ]*",
            "a\\*b",
            "**/x",
            "[Local-Only]",
            "[*]",
        ] {
            assert_eq!(check(pattern), Ok(()), "{pattern:?}");
        }
    }

    #[test]
    fn rejects_malformed_patterns() {
        for pattern in [
            "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "x*[", "a\\",
        ] {
            assert!(check(pattern).is_err(), "{pattern:?}");
        }
    }
}
