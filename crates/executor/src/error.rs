//! The build's error type: every failure names the Dockerfile line or the thing that failed.

use std::path::PathBuf;

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
    /// An I/O operation on a path failed: `{doing} {path}: {source}` (`{path}: {source}`
    /// when `doing` is empty).
    #[error("{doing}{}{}: {source}", if doing.is_empty() { "" } else { " " }, path.display())]
    Io {
        doing: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A system call or program not about one path failed (starting a helper program, a
    /// pipe): `{doing}: {source}`.
    #[error("{doing}: {source}")]
    System {
        doing: String,
        #[source]
        source: std::io::Error,
    },
    /// Fetching an ADD source (a download or a git checkout) failed. Both fields are
    /// redacted: a URL's credentials never reach an error.
    #[error("{message}")]
    Fetch { url: String, message: String },
    /// Reading what a step changed (walking its root or its overlay upper directory)
    /// failed; the I/O error names the path.
    #[error("{0}")]
    Snapshot(#[source] std::io::Error),
    /// A COPY/ADD or bind-mount source the build cannot use: `"{path}" {problem}`.
    #[error("{path:?} {problem}")]
    Source {
        /// The source as the Dockerfile names it.
        path: String,
        problem: SourceProblem,
    },
    /// A git source (`ADD https://h/r.git?…#…`) whose fragment or query BuildKit refuses;
    /// the URL is redacted.
    #[error("{url}: {reason}")]
    GitSource {
        url: String,
        reason: crate::downloads::GitQueryError,
    },
    /// The restricted isolation could not lay a stage out in the builder's `/` or record
    /// its owners (`in_place`).
    #[error(transparent)]
    InPlace(#[from] crate::in_place::InPlaceError),
    /// A `--chmod` value that is not a mode.
    #[error(transparent)]
    Chmod(#[from] crate::chmod::ChmodError),
    /// A base image could not be had: its registry's or the store's error is the source,
    /// its kind kept (`BaseImageError`).
    #[error(transparent)]
    BaseImage(#[from] crate::base::BaseImageError),
    /// The container-root worker (rootless builds with subordinate ids) failed a task.
    #[error("{doing}{}{source}", if doing.is_empty() { "" } else { ": " })]
    ContainerRoot {
        doing: String,
        #[source]
        source: rbuild_rootfs::RootfsError,
    },
    /// Extracting, linking or writing layer files failed.
    #[error("{doing}{}{source}", if doing.is_empty() { "" } else { ": " })]
    Layer {
        doing: String,
        #[source]
        source: rbuild_layer::Error,
    },
    /// The sandbox could not read what a step needs from its root (users, groups).
    #[error("{doing}{}{source}", if doing.is_empty() { "" } else { ": " })]
    Sandbox {
        doing: String,
        #[source]
        source: rbuild_sandbox::SandboxError,
    },
    /// A path could not be resolved inside a root filesystem.
    #[error("{doing}: {source}")]
    InRoot {
        doing: String,
        #[source]
        source: rbuild_inroot::Error,
    },
    /// A failure with what was being done around it: `{doing}: {source}`.
    #[error("{doing}: {source}")]
    Context {
        doing: String,
        #[source]
        source: Box<BuildError>,
    },
    /// A stage stopped before its next step because a stage running beside it failed.
    #[error("stopped: another stage failed")]
    Cancelled,
}

/// Why a COPY/ADD source cannot be used (BuildKit's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceProblem {
    #[error("is outside the build context")]
    OutsideContext,
    #[error("is excluded by .dockerignore")]
    Excluded,
    /// A symlink in the context leading to an excluded path (relative to the context).
    #[error("leads to {0:?}, which is excluded by .dockerignore")]
    LeadsToExcluded(String),
    #[error("not found in the build context")]
    NotInContext,
    /// Not found in another stage's or an image's root filesystem.
    #[error("not found")]
    NotFound,
}

impl BuildError {
    pub(crate) fn other(message: impl Into<String>) -> Self {
        BuildError::Other(message.into())
    }

    /// An I/O error on `path` while `doing` it (`reading`, `creating directory`).
    pub(crate) fn io(
        doing: impl Into<String>,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let (doing, path) = (doing.into(), path.into());
        move |source| BuildError::Io {
            doing,
            path,
            source,
        }
    }

    /// An I/O error not about one path, while `doing` something.
    pub(crate) fn system(doing: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let doing = doing.into();
        move |source| BuildError::System { doing, source }
    }

    /// This error with what was being done around it.
    pub(crate) fn context(self, doing: impl Into<String>) -> Self {
        BuildError::Context {
            doing: doing.into(),
            source: Box::new(self),
        }
    }

    /// A container-root task's error, with what was being done (empty: the task's message
    /// alone).
    pub(crate) fn container_root(
        doing: impl Into<String>,
    ) -> impl FnOnce(rbuild_rootfs::RootfsError) -> Self {
        let doing = doing.into();
        move |source| BuildError::ContainerRoot { doing, source }
    }

    /// A layer crate error, with what was being done (empty: its message alone).
    pub(crate) fn layer(doing: impl Into<String>) -> impl FnOnce(rbuild_layer::Error) -> Self {
        let doing = doing.into();
        move |source| BuildError::Layer { doing, source }
    }

    /// A store error, with what the build was doing.
    pub(crate) fn store(doing: impl Into<String>) -> impl FnOnce(rbuild_store::StoreError) -> Self {
        let doing = doing.into();
        move |source| BuildError::Store { doing, source }
    }
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;
