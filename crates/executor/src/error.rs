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
    /// The store failed while the build was `doing` something (storing the image, tagging,
    /// recording a cache hit); the store's own error says which file or object.
    #[error("{doing}: {source}")]
    Store {
        doing: String,
        #[source]
        source: rbuild_store::StoreError,
    },
    /// A layer of the registry cache could not be brought into the store; `source.kind`
    /// says why (not found, unauthorized, unreachable, not the content the cache claimed).
    #[error(
        "layer {layer} of the registry cache: {source} (build with --no-cache, or without \
         --cache-from, to run the steps instead)"
    )]
    RemoteCacheLayer {
        layer: rbuild_image::Digest,
        #[source]
        source: crate::cache::RemoteCacheError,
    },
    /// A failure outside any one instruction (working directories, base images).
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

    /// A store error, with what the build was doing.
    pub(crate) fn store(doing: impl Into<String>) -> impl FnOnce(rbuild_store::StoreError) -> Self {
        let doing = doing.into();
        move |source| BuildError::Store { doing, source }
    }
}

/// An error message that names the path an I/O operation failed on.
pub(crate) fn io_msg(what: &str, path: &Path, err: &std::io::Error) -> String {
    format!("{what} {}: {err}", path.display())
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;
