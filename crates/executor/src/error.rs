//! The build's error type: every failure names the Dockerfile line or the thing that failed.

use std::path::Path;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A syntax, flag or expansion error: `file:line:col: message` with the line shown.
    #[error("{0}")]
    Dockerfile(#[from] rbuild_dockerfile::Error),
    /// An instruction that could not be carried out.
    #[error("{file}:{line}: {instruction}\n  {message}")]
    Step {
        file: String,
        line: usize,
        instruction: String,
        message: String,
    },
    /// A failure outside any one instruction (store, working directories, base images).
    #[error("{0}")]
    Other(String),
    /// A stage stopped before its next step because a stage running beside it failed.
    #[error("stopped: another stage failed")]
    Cancelled,
}

impl BuildError {
    pub(crate) fn other(message: impl Into<String>) -> Self {
        BuildError::Other(message.into())
    }
}

/// An error message that names the path an I/O operation failed on.
pub(crate) fn io_msg(what: &str, path: &Path, err: &std::io::Error) -> String {
    format!("{what} {}: {err}", path.display())
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;
