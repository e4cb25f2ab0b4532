//! The error returned when a word cannot be expanded.

use std::fmt;

/// Why an expansion failed. The `Display` texts follow BuildKit's messages so users who
/// know `docker build` recognise them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpandErrorKind {
    /// `${` without its closing `}`.
    MissingBrace,
    /// `${}`, `${{x}`, `${:x}`.
    BadSubstitution,
    /// `${V/pattern` or `${V//` without the `/` that ends the pattern.
    MissingSlash,
    /// An operator that BuildKit does not implement, such as `${V:=w}`, `${V=w}`, `${V:#p}`.
    UnsupportedModifier(String),
    /// `${V?msg}` / `${V:?msg}` on an unset (or empty, for `:?`) variable.
    Required {
        name: String,
        message: String,
    },
    UnterminatedSingleQuote,
    UnterminatedDoubleQuote,
    /// The pattern of `${V#p}`, `${V%p}` or `${V/p/r}` is not a valid shell pattern.
    InvalidPattern {
        pattern: String,
        reason: String,
    },
    /// More nested `${...}` than the lexer accepts (a guard against stack exhaustion).
    NestedTooDeeply {
        limit: usize,
    },
    /// The expanded word is longer than the lexer's bound ([`crate::MAX_WORD_BYTES`] by
    /// default).
    WordTooLong {
        limit: usize,
    },
    /// The expansions sharing an [`crate::ExpansionBudget`] (one Dockerfile's) have
    /// produced more text than it allows.
    BudgetExhausted {
        limit: u64,
    },
}

impl fmt::Display for ExpandErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingBrace => f.write_str("syntax error: missing '}'"),
            Self::BadSubstitution => f.write_str("syntax error: bad substitution"),
            Self::MissingSlash => f.write_str("syntax error: missing '/' in ${}"),
            Self::UnsupportedModifier(modifier) => {
                write!(f, "unsupported modifier ({modifier}) in substitution")
            }
            Self::Required { name, message } => write!(f, "{name}: {message}"),
            Self::UnterminatedSingleQuote => {
                f.write_str("unexpected end of statement while looking for matching single-quote")
            }
            Self::UnterminatedDoubleQuote => {
                f.write_str("unexpected end of statement while looking for matching double-quote")
            }
            Self::InvalidPattern { pattern, reason } => {
                write!(f, "invalid pattern ({pattern}) in substitution: {reason}")
            }
            Self::NestedTooDeeply { limit } => {
                write!(f, "substitutions nested more than {limit} deep")
            }
            Self::WordTooLong { limit } => {
                write!(
                    f,
                    "the expanded word is longer than the limit of {limit} bytes"
                )
            }
            Self::BudgetExhausted { limit } => write!(
                f,
                "variable expansion produced more than the limit of {limit} bytes in total"
            ),
        }
    }
}

/// A word that could not be expanded: the word, the byte offset in it of the construct
/// that failed (the `$` of a substitution or the opening quote), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {kind} (at byte {offset})")]
pub struct ExpandError {
    pub word: String,
    pub offset: usize,
    pub kind: ExpandErrorKind,
}
