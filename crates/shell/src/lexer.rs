//! The public entry points and their configuration.

use std::collections::BTreeSet;

use crate::env::Env;
use crate::error::ExpandError;
use crate::word;

/// BuildKit's shell lexer (`shell.Lex`): expands variables and removes quotes in one
/// Dockerfile word. Cheap to copy; holds configuration only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    /// The Dockerfile escape character: `\` (default) or `` ` `` (`# escape=`` ` ``).
    pub escape: char,
    /// Keep quote characters in the output (quotes still group and protect text).
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Treat `'` and `"` as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written (`$X`, `${X:-w}`), for a first
    /// expansion pass whose result is expanded again later.
    pub skip_unset_env: bool,
}

/// The result of [`Lexer::process_word_with_matches`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    pub result: String,
    /// Names that were looked up and set (possibly to the empty string).
    pub matched: BTreeSet<String>,
    /// Names that were looked up and are unset.
    pub unmatched: BTreeSet<String>,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    pub fn with_raw_quotes(mut self, raw_quotes: bool) -> Lexer {
        self.raw_quotes = raw_quotes;
        self
    }

    pub fn with_raw_escapes(mut self, raw_escapes: bool) -> Lexer {
        self.raw_escapes = raw_escapes;
        self
    }

    pub fn with_skip_process_quotes(mut self, skip_process_quotes: bool) -> Lexer {
        self.skip_process_quotes = skip_process_quotes;
        self
    }

    pub fn with_skip_unset_env(mut self, skip_unset_env: bool) -> Lexer {
        self.skip_unset_env = skip_unset_env;
        self
    }

    /// Expansion and quote removal of one word, without field splitting: `a "b  c"` stays
    /// one string `a b  c`.
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, ExpandError> {
        Ok(self.process_word_with_matches(word, env)?.result)
    }

    /// Expansion, then splitting of unquoted text (literal or expanded) on whitespace,
    /// then quote removal: `a${X}"b c"` with `X=" 1 2"` gives `["a", "1", "2b c"]`.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        word::process(self, word, env)
            .map(|processed| processed.words)
            .map_err(|fail| error_for(word, fail))
    }

    /// Like [`Lexer::process_word`], also reporting which variables were referenced.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn Env,
    ) -> Result<Expansion, ExpandError> {
        let processed = word::process(self, word, env).map_err(|fail| error_for(word, fail))?;
        Ok(Expansion {
            result: processed.result,
            matched: processed.matched,
            unmatched: processed.unmatched,
        })
    }
}

fn error_for(word: &str, fail: word::Fail) -> ExpandError {
    ExpandError {
        word: word.to_string(),
        offset: fail.offset,
        kind: fail.kind,
    }
}
