//! Heredoc detection, as BuildKit's `heredocsFromLine` / `ParseHeredoc` do it.
//!
//! BuildKit runs its shell lexer over the line with an empty environment and "leave unset
//! variables as written", so no expansion ever happens here: the lexer only splits words and
//! (optionally) removes quotes. This module reproduces exactly that tokenising subset. Real
//! word expansion lives in `rbuild-shell`.

use super::node::Heredoc;

/// The subset of BuildKit's `shell.Lex` used by the heredoc helpers: escape `\`, empty
/// environment, `SkipUnsetEnv` on.
struct Tokenizer {
    chars: Vec<char>,
    pos: usize,
    raw_quotes: bool,
    raw_escapes: bool,
}

#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.buf.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }
    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(std::mem::take(&mut self.buf));
        }
        self.words
    }
}

const ESCAPE: char = '\\';

impl Tokenizer {
    fn new(s: &str, raw_quotes: bool, raw_escapes: bool) -> Tokenizer {
        Tokenizer {
            chars: s.chars().collect(),
            pos: 0,
            raw_quotes,
            raw_escapes,
        }
    }
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn words(mut self) -> Result<Vec<String>, String> {
        let raw = self.raw_escapes;
        let source: String = self.chars.iter().collect();
        self.process_stop_on(None, raw)
            .map(|(_, w)| w)
            .map_err(|e| format!("failed to process {}: {e}", super::quote::go_quote(&source)))
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn process_stop_on_inner(
        &mut self,
        stop: Option<char>,
    ) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            let special = match ch {
                '$' => Some(self.process_dollar()?),
                '<' => Some(self.process_possible_heredoc()),
                '\'' => Some(self.process_single_quote()?),
                '"' => Some(self.process_double_quote()?),
                _ => None,
            };
            if let Some(tmp) = special {
                result.push_str(&tmp);
                if ch == '$' {
                    words.add_string(&tmp);
                } else {
                    words.add_raw_string(&tmp);
                }
                continue;
            }
            let mut ch = self.next().unwrap_or_default();
            if ch == ESCAPE {
                if self.raw_escapes {
                    words.add_raw_char(ch);
                    result.push(ch);
                }
                match self.next() {
                    None => break,
                    Some(c) => ch = c,
                }
                words.add_raw_char(ch);
            } else {
                words.add_char(ch);
            }
            result.push(ch);
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let open = self.next().unwrap_or('\'');
        if self.raw_quotes {
            result.push(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => {
                    if self.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let open = self.next().unwrap_or('"');
        if self.raw_quotes {
            result.push(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.next();
                    if self.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == ESCAPE {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == ESCAPE => {
                                ch = c;
                                self.next();
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    /// `$name` / `${...}` with every variable unset and kept as written.
    fn process_dollar(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            return Ok(format!("${name}"));
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.process_name();
        let Some(mut ch) = self.next() else {
            return Err("unsupported modifier () in substitution".into());
        };
        let mut chs = ch.to_string();
        let mut null_is_unset = false;
        match ch {
            '}' => Ok(format!("${{{name}}}")),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                if ch == ':' {
                    null_is_unset = true;
                    ch = self.next().unwrap_or_default();
                    if ch != '\0' {
                        chs.push(ch);
                    }
                }
                let raw = ch == '#' || ch == '%';
                if null_is_unset && raw {
                    return Err(format!("unsupported modifier ({chs}) in substitution"));
                }
                match self.process_stop_on(Some('}'), raw) {
                    Ok((word, _)) => Ok(format!("${{{name}{chs}{word}}}")),
                    Err(e) => {
                        if self.peek().is_none() {
                            Err("syntax error: missing '}'".into())
                        } else {
                            Err(e)
                        }
                    }
                }
            }
            '/' => {
                if self.peek() == Some('/') {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((p, _)) => p,
                    Err(_) if self.peek().is_none() => {
                        return Err("syntax error: missing '/' in ${}".into())
                    }
                    Err(e) => return Err(e),
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((r, _)) => r,
                    Err(_) if self.peek().is_none() => {
                        return Err("syntax error: missing '}'".into())
                    }
                    Err(e) => return Err(e),
                };
                Ok(format!("${{{name}/{pattern}/{replacement}}}"))
            }
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }

    fn process_possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.next();
        let mut out = String::from("<<");
        while let Some(c) = self.peek().filter(|c| matches!(c, ' ' | '\t' | '\r')) {
            out.push(c);
            self.next();
        }
        out
    }
}

/// `^(\d*)<<(-?)\s*([^<]*)$` -> (digits, chomp, rest).
fn match_heredoc(src: &str) -> Option<(&str, bool, &str)> {
    let digits_end = src.find(|c: char| !c.is_ascii_digit()).unwrap_or(src.len());
    let after = src[digits_end..].strip_prefix("<<")?;
    let (chomp, after) = match after.strip_prefix('-') {
        Some(a) => (true, a),
        None => (false, after),
    };
    let rest = after.trim_start_matches(['\t', '\n', '\u{c}', '\r', ' ']);
    if rest.contains('<') {
        return None;
    }
    Some((&src[..digits_end], chomp, rest))
}

/// BuildKit's `ParseHeredoc`: is `src` (one word) a heredoc opener? An error only when the
/// delimiter cannot be tokenised (an unterminated quote).
pub fn parse_heredoc(src: &str) -> Result<Option<Heredoc>, String> {
    let Some((digits, chomp, rest)) = match_heredoc(src) else {
        return Ok(None);
    };
    if rest.is_empty() {
        return Ok(None);
    }
    let words = Tokenizer::new(rest, false, false).words()?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw_words = Tokenizer::new(rest, true, false).words()?;
    if raw_words.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let count_quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let expand = count_quotes(&words[0]) == count_quotes(&raw_words[0]);
    Ok(Some(Heredoc {
        name: words[0].clone(),
        // Go ignores the parse error (an overflowing number gives 0).
        file_descriptor: digits.parse().unwrap_or(0),
        expand,
        chomp,
        content: String::new(),
    }))
}

/// [`parse_heredoc`] ignoring errors (BuildKit's `MustParseHeredoc`).
pub fn must_parse_heredoc(src: &str) -> Option<Heredoc> {
    parse_heredoc(src).ok().flatten()
}

/// BuildKit's `heredocsFromLine`: every heredoc opener on a logical line, in order.
pub fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    // A line that cannot be tokenised has no heredocs (BuildKit ignores this error).
    let words = Tokenizer::new(line, true, true).words().unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(line: &str) -> Vec<(String, bool, bool, u32)> {
        heredocs_from_line(line)
            .unwrap()
            .into_iter()
            .map(|h| (h.name, h.expand, h.chomp, h.file_descriptor))
            .collect()
    }

    #[test]
    fn heredoc_forms() {
        assert_eq!(names("RUN <<EOF"), vec![("EOF".into(), true, false, 0)]);
        assert_eq!(names("RUN <<-EOF"), vec![("EOF".into(), true, true, 0)]);
        assert_eq!(names("RUN <<- EOF"), vec![]);
        assert_eq!(names("RUN << -EOF"), vec![("-EOF".into(), true, false, 0)]);
        assert_eq!(names("RUN <<'EOF'"), vec![("EOF".into(), false, false, 0)]);
        assert_eq!(names("RUN 4<<EOF"), vec![("EOF".into(), true, false, 4)]);
        assert_eq!(names("RUN <<EOF <<EOF2").len(), 2);
        assert_eq!(names("RUN '<<EOF'"), vec![]);
        assert_eq!(names("RUN \"<<EOF\""), vec![]);
        assert_eq!(names("RUN <<eo\\'f"), vec![("eo'f".into(), true, false, 0)]);
        assert_eq!(
            names("RUN <<'e'o\\'f"),
            vec![("eo'f".into(), false, false, 0)]
        );
        assert_eq!(
            names("RUN <<  EOF  > foo"),
            vec![("EOF".into(), true, false, 0)]
        );
        assert_eq!(names("RUN <<$EOF"), vec![("$EOF".into(), true, false, 0)]);
        assert_eq!(
            names("RUN <<'one two'"),
            vec![("one two".into(), false, false, 0)]
        );
    }

    #[test]
    fn unterminated_quote_in_line_gives_no_heredoc() {
        assert_eq!(names("RUN <<\"EOF"), vec![]);
    }
}
