//! The public entry points and their configuration.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::env::Env;
use crate::error::{ExpandError, ExpandErrorKind};
use crate::word;

/// The longest expanded word by default. BuildKit has no bound (a Dockerfile doubling an
/// ARG forty times makes it allocate until the machine runs out); a Dockerfile word longer
/// than this has no use (Linux refuses a single environment string over 128 KiB anyway),
/// and a heredoc body is one word, so this is also the largest expanded heredoc.
pub const MAX_WORD_BYTES: usize = 1 << 20;

/// How much expanded text a group of expansions (one Dockerfile, see
/// `rbuild_dockerfile::Dockerfile::lexer`) may produce in total, so that many words each
/// under [`MAX_WORD_BYTES`] cannot add up to an unbounded amount of memory and work.
#[derive(Debug)]
pub struct ExpansionBudget {
    limit: u64,
    used: AtomicU64,
}

impl ExpansionBudget {
    pub fn new(limit: u64) -> Arc<ExpansionBudget> {
        Arc::new(ExpansionBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes produced so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Counts `bytes` more; false once the total is over the limit.
    fn charge(&self, bytes: usize) -> bool {
        let before = self.used.fetch_add(bytes as u64, Ordering::Relaxed);
        before.saturating_add(bytes as u64) <= self.limit
    }
}

/// Budgets are compared by identity: two lexers are equal when they share one.
impl PartialEq for ExpansionBudget {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for ExpansionBudget {}

/// BuildKit's shell lexer (`shell.Lex`): expands variables and removes quotes in one
/// Dockerfile word. Cheap to clone; holds configuration and, optionally, a shared budget.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The longest word an expansion may produce ([`MAX_WORD_BYTES`] by default).
    pub max_word_bytes: usize,
    /// Shared with other lexers to bound their total output; `None` for no total bound.
    pub budget: Option<Arc<ExpansionBudget>>,
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
            max_word_bytes: MAX_WORD_BYTES,
            budget: None,
        }
    }

    pub fn with_max_word_bytes(mut self, max_word_bytes: usize) -> Lexer {
        self.max_word_bytes = max_word_bytes;
        self
    }

    pub fn with_budget(mut self, budget: Arc<ExpansionBudget>) -> Lexer {
        self.budget = Some(budget);
        self
    }

    /// Charges `bytes` of output to the budget, if any.
    fn charge(&self, word: &str, bytes: usize) -> Result<(), ExpandError> {
        match &self.budget {
            Some(budget) if !budget.charge(bytes) => Err(ExpandError {
                word: word.to_string(),
                offset: 0,
                kind: ExpandErrorKind::BudgetExhausted {
                    limit: budget.limit(),
                },
            }),
            _ => Ok(()),
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
        let words = word::process(self, word, env)
            .map(|processed| processed.words)
            .map_err(|fail| error_for(word, fail))?;
        self.charge(word, words.iter().map(String::len).sum())?;
        Ok(words)
    }

    /// Like [`Lexer::process_word`], also reporting which variables were referenced.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn Env,
    ) -> Result<Expansion, ExpandError> {
        let processed = word::process(self, word, env).map_err(|fail| error_for(word, fail))?;
        self.charge(word, processed.result.len())?;
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
