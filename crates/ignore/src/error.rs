//! Errors of ignore-file reading and pattern compilation.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IgnoreError {
    /// A line longer than Docker's reader accepts (Go's `bufio.Scanner` limit).
    #[error("line {line} of the ignore file is longer than {limit} bytes")]
    LineTooLong { line: usize, limit: usize },
    /// `!` with nothing after it.
    #[error("pattern {index} (line {line:?}): illegal exclusion pattern: \"!\"")]
    IllegalExclusion { index: usize, line: Option<usize> },
    /// Malformed glob syntax (bad `[...]` class, trailing `\`).
    #[error("pattern {index} (line {line:?}) {pattern:?}: syntax error in pattern: {reason}")]
    BadPattern {
        index: usize,
        line: Option<usize>,
        pattern: String,
        reason: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl IgnoreError {
    /// Attaches the ignore-file line number to a pattern error.
    pub(crate) fn at_line(self, line_of: impl Fn(usize) -> Option<usize>) -> Self {
        match self {
            IgnoreError::IllegalExclusion { index, .. } => IgnoreError::IllegalExclusion {
                index,
                line: line_of(index),
            },
            IgnoreError::BadPattern {
                index,
                pattern,
                reason,
                ..
            } => IgnoreError::BadPattern {
                index,
                line: line_of(index),
                pattern,
                reason,
            },
            other => other,
        }
    }
}
