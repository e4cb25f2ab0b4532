//! The session's errors: each names the flag or thing it is about.

use std::path::PathBuf;

/// Why a session could not build or export.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The request itself is wrong or asks for what cannot work here (named in the text).
    #[error("{0}")]
    Invalid(String),
    #[error("the build context {0:?} is not a directory or a tar archive")]
    ContextNotFound(String),
    #[error("the context {0:?} is a URL; only local directories and tar archives are supported")]
    ContextIsUrl(String),
    #[error("unpacking the build context: {0}")]
    UnpackContext(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to open the Dockerfile {path}: {reason}")]
    Dockerfile { path: PathBuf, reason: String },
    #[error("--secret {0}")]
    Secret(String),
    #[error("--ssh {0}")]
    Ssh(String),
    #[error(transparent)]
    Build(#[from] rbuild_executor::BuildError),
    #[error(transparent)]
    Store(#[from] rbuild_store::StoreError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("{0}")]
    Cache(String),
}

impl SessionError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        SessionError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// `-o type=NAME` with a NAME no exporter has.
    #[error("unknown output type {0:?}; use oci, docker, local or registry")]
    UnknownOutputType(String),
    #[error("output type={kind} needs dest=PATH")]
    MissingDestination { kind: &'static str },
    /// One of BuildKit's exporter attributes (`-o type=…,KEY=VALUE`) that is refused.
    #[error("the output attribute {key:?}: {reason}")]
    Attribute { key: String, reason: String },
    /// Outputs of one build asking for different epochs: rbuild builds one image.
    #[error("the outputs ask for different source-date-epoch values ({0}); rbuild builds one image per build, so give them one value")]
    EpochConflict(String),
    #[error("rewriting the timestamps of layer {layer}: {reason}")]
    Rewrite {
        layer: rbuild_image::Digest,
        reason: String,
    },
    #[error("--push needs at least one -t/--tag (or --destination) naming where to push")]
    NoTagToPush,
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing layer {layer} into {dest}: {reason}")]
    Layer {
        layer: rbuild_image::Digest,
        dest: PathBuf,
        reason: String,
    },
    #[error("writing the archive {path}: {reason}")]
    Archive { path: PathBuf, reason: String },
    #[error("the tag {tag:?}: {reason}")]
    Tag { tag: String, reason: String },
    #[error("pushing {tag}: {source}")]
    Push {
        tag: String,
        #[source]
        source: rbuild_transfer::TransferError,
    },
    #[error(transparent)]
    Store(#[from] rbuild_store::StoreError),
}
