//! Control characters from untrusted text (Dockerfiles, registries' replies, what RUN
//! steps print) are shown escaped, never sent to the terminal: an escape sequence in a
//! Dockerfile or a registry's error could otherwise move the cursor, rewrite earlier lines
//! or retitle the terminal. Newlines and tabs are kept: messages span lines on purpose.

use std::fmt::Write as _;
use std::io::{self, Write};

/// Whether `ch` is shown escaped: C0 controls but newline and tab, DEL, and C1 controls.
fn is_escaped(ch: char) -> bool {
    (ch.is_control() && ch != '\n' && ch != '\t') || ch == '\u{7f}'
}

/// `text` with every control character but newline and tab written as `\xNN` (`\u{NN}`
/// for C1 controls), so `ESC[31m` prints as `\x1b[31m`.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(is_escaped) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for ch in text.chars() {
        push_char(&mut out, ch);
    }
    out
}

fn push_char(out: &mut String, ch: char) {
    if !is_escaped(ch) {
        out.push(ch);
    } else if (ch as u32) < 0x80 {
        let _ = write!(out, "\\x{:02x}", ch as u32);
    } else {
        let _ = write!(out, "\\u{{{:x}}}", ch as u32);
    }
}

/// A writer that escapes control characters in what passes through it (for the plain
/// progress output, which carries RUN output and instruction text). Bytes are decoded as
/// UTF-8 as they come; an incomplete sequence at the end of one write waits for the next.
pub struct EscapingWriter<W: Write> {
    inner: W,
    pending: Vec<u8>,
}

impl<W: Write> EscapingWriter<W> {
    pub fn new(inner: W) -> Self {
        EscapingWriter {
            inner,
            pending: Vec::new(),
        }
    }
}

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        let mut out = String::with_capacity(self.pending.len());
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.push_str(&escape_controls(text));
                    rest = &[];
                    break;
                }
                Err(err) => {
                    let (valid, after) = rest.split_at(err.valid_up_to());
                    out.push_str(&escape_controls(&String::from_utf8_lossy(valid)));
                    match err.error_len() {
                        // An invalid byte: shown escaped, decoding goes on after it.
                        Some(len) => {
                            for byte in &after[..len] {
                                let _ = write!(out, "\\x{byte:02x}");
                            }
                            rest = &after[len..];
                        }
                        // A sequence cut by the end of this write: kept for the next one.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let kept = rest.to_vec();
        self.pending = kept;
        self.inner.write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_newlines_and_tabs_kept() {
        assert_eq!(
            escape_controls("a\x1b[31mred\x07\r\n\tb\u{7f}\u{9b}2J é"),
            "a\\x1b[31mred\\x07\\x0d\n\tb\\x7f\\u{9b}2J é"
        );
        assert_eq!(escape_controls("plain text\n"), "plain text\n");
    }

    #[test]
    fn the_writer_escapes_across_split_writes() {
        let mut w = EscapingWriter::new(Vec::new());
        let text = "x\x1b]0;title\x07 é\u{9b}y\n".as_bytes();
        // Every split point, including inside the two-byte characters.
        for split in 0..text.len() {
            w.inner.clear();
            w.write_all(&text[..split]).unwrap();
            w.write_all(&text[split..]).unwrap();
            assert_eq!(
                String::from_utf8(w.inner.clone()).unwrap(),
                "x\\x1b]0;title\\x07 é\\u{9b}y\n",
                "split at {split}"
            );
        }
        w.inner.clear();
        w.write_all(b"bad \xff byte\n").unwrap();
        assert_eq!(w.inner, b"bad \\xff byte\n");
    }
}
