//! The expansion state machine: one pass over a word that produces both the expanded
//! text (`process_word`) and its field-split form (`process_words`), following BuildKit's
//! `shellWord` step by step so that odd inputs give the same answer as `docker build`.

use std::collections::BTreeSet;

use crate::chars::{is_digit, is_letter, is_space};
use crate::env::Env;
use crate::error::ExpandErrorKind;
use crate::pattern;
use crate::scanner::Scanner;
use crate::Lexer;

/// A failure inside the word, before it is tied to the whole word.
pub(crate) struct Fail {
    pub(crate) offset: usize,
    pub(crate) kind: ExpandErrorKind,
}

pub(crate) struct Processed {
    pub(crate) result: String,
    pub(crate) words: Vec<String>,
    pub(crate) matched: BTreeSet<String>,
    pub(crate) unmatched: BTreeSet<String>,
}

pub(crate) fn process(lexer: &Lexer, word: &str, env: &dyn Env) -> Result<Processed, Fail> {
    let mut state = ShellWord {
        lexer,
        env,
        scanner: Scanner::new(word),
        raw_escapes: lexer.raw_escapes,
        words_buffer: String::new(),
        depth: 0,
        matched: BTreeSet::new(),
        unmatched: BTreeSet::new(),
    };
    let (result, words) = state.process_until(None, lexer.raw_escapes)?;
    Ok(Processed {
        result,
        words,
        matched: state.matched,
        unmatched: state.unmatched,
    })
}

struct ShellWord<'a> {
    lexer: &'a Lexer,
    env: &'a dyn Env,
    scanner: Scanner<'a>,
    /// Whether escape characters are kept in the output; switched on while reading the
    /// pattern of `#`, `%` and `/` so the pattern code can see the escapes.
    raw_escapes: bool,
    /// The field-splitting buffer. BuildKit shares one buffer between a word and the
    /// `${...}` words nested in it and clears it when a nested word starts, so text that
    /// precedes `${V:-w}` in the same field is dropped from `process_words`' output
    /// (`1${X:-0}` gives the field `0`). Kept shared here for the same results.
    words_buffer: String,
    /// Current nesting of `${...}` inside `${...}`, bounded so hostile input cannot
    /// exhaust the stack (Go's growable stacks make BuildKit unbounded here).
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// Field-splitting state of one `process_until` call; the text of the current field lives
/// in `ShellWord::words_buffer`.
#[derive(Default)]
struct Fields {
    words: Vec<String>,
    in_word: bool,
}

impl Fields {
    /// Adds a character that is subject to splitting (unquoted, from an expansion).
    fn add_char(&mut self, buf: &mut String, ch: char) {
        if is_space(ch) {
            if self.in_word && !buf.is_empty() {
                self.words.push(std::mem::take(buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(buf, ch);
        }
    }

    fn add_raw_char(&mut self, buf: &mut String, ch: char) {
        buf.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, buf: &mut String, text: &str) {
        for ch in text.chars() {
            self.add_char(buf, ch);
        }
    }

    fn add_raw_string(&mut self, buf: &mut String, text: &str) {
        buf.push_str(text);
        self.in_word = true;
    }

    fn finish(mut self, buf: &mut String) -> Vec<String> {
        if !buf.is_empty() {
            self.words.push(std::mem::take(buf));
        }
        self.words
    }
}

impl ShellWord<'_> {
    /// Processes up to the end of input (`stop` = None) or up to and including `stop`.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), Fail> {
        let saved_raw_escapes = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let outcome = self.process_until_inner(stop);
        self.raw_escapes = saved_raw_escapes;
        outcome
    }

    fn process_until_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), Fail> {
        let mut result = String::new();
        self.words_buffer.clear();
        let mut fields = Fields::default();
        let handles_quotes = !self.lexer.skip_process_quotes;

        while let Some(ch) = self.scanner.peek() {
            if stop == Some(ch) {
                self.scanner.next();
                return Ok((result, fields.finish(&mut self.words_buffer)));
            }
            let special = match ch {
                '$' => Some(self.dollar()?),
                '<' => Some(self.possible_heredoc()),
                '\'' if handles_quotes => Some(self.single_quote()?),
                '"' if handles_quotes => Some(self.double_quote()?),
                _ => None,
            };
            if let Some(text) = special {
                result.push_str(&text);
                self.bounded(result.len())?;
                if ch == '$' {
                    fields.add_string(&mut self.words_buffer, &text);
                } else {
                    fields.add_raw_string(&mut self.words_buffer, &text);
                }
                continue;
            }
            self.scanner.next();
            if ch == self.lexer.escape {
                if self.raw_escapes {
                    fields.add_raw_char(&mut self.words_buffer, ch);
                    result.push(ch);
                }
                // The escape character escapes the next one; at the very end it vanishes.
                let Some(escaped) = self.scanner.next() else {
                    break;
                };
                fields.add_raw_char(&mut self.words_buffer, escaped);
                result.push(escaped);
            } else {
                fields.add_char(&mut self.words_buffer, ch);
                result.push(ch);
            }
        }
        if let Some(stop) = stop {
            let kind = if stop == '/' {
                ExpandErrorKind::MissingSlash
            } else {
                ExpandErrorKind::MissingBrace
            };
            return Err(Fail {
                offset: self.scanner.offset(),
                kind,
            });
        }
        Ok((result, fields.finish(&mut self.words_buffer)))
    }

    /// Everything up to the next `'` is literal; a single quote cannot be escaped inside.
    fn single_quote(&mut self) -> Result<String, Fail> {
        let offset = self.scanner.offset();
        let mut result = String::new();
        let opening = self.scanner.next();
        if self.lexer.raw_quotes {
            result.extend(opening);
        }
        loop {
            match self.scanner.next() {
                None => {
                    return Err(Fail {
                        offset,
                        kind: ExpandErrorKind::UnterminatedSingleQuote,
                    })
                }
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    /// Inside double quotes `$` expands and the escape character escapes only `"`, `$`
    /// and itself; before any other character it is kept.
    fn double_quote(&mut self) -> Result<String, Fail> {
        let offset = self.scanner.offset();
        let mut result = String::new();
        let opening = self.scanner.next();
        if self.lexer.raw_quotes {
            result.extend(opening);
        }
        loop {
            match self.scanner.peek() {
                None => {
                    return Err(Fail {
                        offset,
                        kind: ExpandErrorKind::UnterminatedDoubleQuote,
                    })
                }
                Some('"') => {
                    self.scanner.next();
                    if self.lexer.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    result.push_str(&value);
                    self.bounded(result.len())?;
                }
                Some(mut ch) => {
                    self.scanner.next();
                    if ch == self.lexer.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.scanner.peek() {
                            // A trailing escape vanishes; the loop then reports the
                            // missing closing quote.
                            None => continue,
                            Some(next)
                                if next == '"' || next == '$' || next == self.lexer.escape =>
                            {
                                self.scanner.next();
                                ch = next;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    /// `<<` (with the blanks after it) is passed through as one piece so that heredoc
    /// markers such as `<< EOF` stay one field.
    fn possible_heredoc(&mut self) -> String {
        self.scanner.next();
        if self.scanner.peek() != Some('<') {
            return "<".to_string();
        }
        self.scanner.next();
        let mut result = "<<".to_string();
        while let Some(ch @ ('\t' | '\r' | ' ')) = self.scanner.peek() {
            result.push(ch);
            self.scanner.next();
        }
        result
    }

    fn dollar(&mut self) -> Result<String, Fail> {
        if self.depth >= MAX_NESTING {
            return Err(Fail {
                offset: self.scanner.offset(),
                kind: ExpandErrorKind::NestedTooDeeply { limit: MAX_NESTING },
            });
        }
        self.depth += 1;
        let outcome = self.dollar_inner();
        self.depth -= 1;
        outcome
    }

    fn dollar_inner(&mut self) -> Result<String, Fail> {
        let offset = self.scanner.offset();
        let fail = |kind| Fail { offset, kind };
        self.scanner.next();

        if self.scanner.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }

        self.scanner.next();
        match self.scanner.peek() {
            None => return Err(fail(ExpandErrorKind::MissingBrace)),
            Some('{' | '}' | ':') => return Err(fail(ExpandErrorKind::BadSubstitution)),
            Some(_) => {}
        }
        let name = self.name();
        let Some(modifier) = self.scanner.next() else {
            return Err(fail(ExpandErrorKind::MissingBrace));
        };
        match modifier {
            '}' => Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => self.operator(offset, name, modifier),
            '/' => self.substitute(offset, name),
            other => Err(fail(ExpandErrorKind::UnsupportedModifier(
                other.to_string(),
            ))),
        }
    }

    /// `${name<op>word}` for the operators `-` `+` `?` `#` `%` with or without a leading `:`.
    fn operator(&mut self, offset: usize, name: String, first: char) -> Result<String, Fail> {
        let fail = |kind| Fail { offset, kind };
        let null_is_unset = first == ':';
        let mut modifier = first.to_string();
        let op = if null_is_unset {
            let op = self.scanner.next();
            // At the end of input the word below fails with "missing '}'".
            modifier.push(op.unwrap_or(char::REPLACEMENT_CHARACTER));
            op
        } else {
            Some(first)
        };
        let is_pattern = matches!(op, Some('#' | '%'));
        if null_is_unset && is_pattern {
            return Err(fail(ExpandErrorKind::UnsupportedModifier(modifier)));
        }
        let word = self.nested_word('}', is_pattern, offset)?;

        let value = self.lookup(&name);
        if self.lexer.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{modifier}{word}}}"));
        }
        let is_null = |value: &Option<String>| match value {
            None => true,
            Some(value) => null_is_unset && value.is_empty(),
        };
        match op {
            Some('-') => Ok(if is_null(&value) {
                word
            } else {
                value.unwrap_or_default()
            }),
            Some('+') => Ok(if is_null(&value) { String::new() } else { word }),
            Some('?') => {
                let default_message = match &value {
                    None => "is not allowed to be unset",
                    Some(v) if null_is_unset && v.is_empty() => "is not allowed to be empty",
                    Some(v) => return Ok(v.clone()),
                };
                let message = if word.is_empty() {
                    default_message.to_string()
                } else {
                    word
                };
                Err(fail(ExpandErrorKind::Required { name, message }))
            }
            Some(op @ ('#' | '%')) => {
                let value = value.unwrap_or_default();
                let (greedy, pattern) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let trimmed = if op == '%' {
                    pattern::trim_suffix(pattern, &value, greedy)
                } else {
                    pattern::trim_prefix(pattern, &value, greedy)
                };
                trimmed.map_err(|reason| {
                    fail(ExpandErrorKind::InvalidPattern {
                        pattern: pattern.to_string(),
                        reason,
                    })
                })
            }
            _ => Err(fail(ExpandErrorKind::UnsupportedModifier(modifier))),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`.
    fn substitute(&mut self, offset: usize, name: String) -> Result<String, Fail> {
        let replace_all = self.scanner.peek() == Some('/');
        if replace_all {
            self.scanner.next();
        }
        let pattern = self.nested_word('/', true, offset)?;
        let replacement = self.nested_word('}', true, offset)?;

        let value = self.lookup(&name);
        if self.lexer.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
        }
        // An unset variable is substituted as empty; the pattern is still checked.
        let value = value.unwrap_or_default();
        let re = pattern::pattern_to_regex(&pattern, true, false).map_err(|reason| Fail {
            offset,
            kind: ExpandErrorKind::InvalidPattern {
                pattern: pattern.clone(),
                reason,
            },
        })?;
        let replaced = if replace_all {
            pattern::replace_all_within(&re, &value, &replacement, self.lexer.max_word_bytes)
        } else {
            Some(pattern::replace_first(&re, &value, &replacement))
        };
        match replaced {
            Some(text) => {
                self.bounded(text.len())?;
                Ok(text)
            }
            None => Err(self.too_long()),
        }
    }

    /// Fails once a word being built is longer than the lexer's bound: without it, words
    /// that double a variable (`ARG a1=${a0}${a0}`, `a2=${a1}${a1}`, …) grow exponentially.
    fn bounded(&self, len: usize) -> Result<(), Fail> {
        if len > self.lexer.max_word_bytes {
            return Err(self.too_long());
        }
        Ok(())
    }

    fn too_long(&self) -> Fail {
        Fail {
            offset: self.scanner.offset(),
            kind: ExpandErrorKind::WordTooLong {
                limit: self.lexer.max_word_bytes,
            },
        }
    }

    /// The word inside `${...}` up to `stop`. Any failure that leaves the input exhausted
    /// is reported as the missing terminator of the substitution starting at `offset`.
    fn nested_word(
        &mut self,
        stop: char,
        raw_escapes: bool,
        offset: usize,
    ) -> Result<String, Fail> {
        match self.process_until(Some(stop), raw_escapes) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.scanner.peek().is_none() => Err(Fail {
                offset,
                kind: if stop == '/' {
                    ExpandErrorKind::MissingSlash
                } else {
                    ExpandErrorKind::MissingBrace
                },
            }),
            Err(err) => Err(err),
        }
    }

    /// A parameter name: a run of digits (positional), one special character, or
    /// letters/digits/underscores.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.scanner.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(digit) = self.scanner.peek().filter(|&c| is_digit(c)) {
                    name.push(digit);
                    self.scanner.next();
                }
                return name;
            }
            if name.is_empty() && is_special_parameter(ch) {
                self.scanner.next();
                return ch.to_string();
            }
            if !is_letter(ch) && !is_digit(ch) && ch != '_' {
                break;
            }
            name.push(ch);
            self.scanner.next();
        }
        name
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        match self.env.get(name) {
            Some(value) => {
                self.matched.insert(name.to_string());
                Some(value.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }
}

/// Deepest `${...}` nesting accepted; far beyond any real Dockerfile.
const MAX_NESTING: usize = 200;

/// POSIX special parameters; they are looked up like names and, never being set in a
/// build, expand to nothing.
fn is_special_parameter(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}
