//! A character cursor over the word, with the two behaviours of Go's `text/scanner` that
//! BuildKit relies on: `peek`/`next` by Unicode scalar, and a byte-order mark at the very
//! start of the input being skipped.

pub(crate) struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let pos = if text.starts_with('\u{FEFF}') { 3 } else { 0 };
        Scanner { text, pos }
    }

    pub(crate) fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    pub(crate) fn next(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }

    /// Byte offset of the next character.
    pub(crate) fn offset(&self) -> usize {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_scalars_and_skips_leading_bom() {
        let mut s = Scanner::new("\u{FEFF}a한");
        assert_eq!(s.offset(), 3);
        assert_eq!(s.next(), Some('a'));
        assert_eq!(s.peek(), Some('한'));
        assert_eq!(s.next(), Some('한'));
        assert_eq!(s.next(), None);
        assert_eq!(s.offset(), 7);
        let mut inner = Scanner::new("a\u{FEFF}");
        inner.next();
        assert_eq!(
            inner.next(),
            Some('\u{FEFF}'),
            "only a leading BOM is skipped"
        );
    }
}
