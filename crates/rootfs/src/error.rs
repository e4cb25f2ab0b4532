//! The one error type of this crate.

/// Why work on a root filesystem failed.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The container-root worker could not be started (no subordinate ids, user namespaces
    /// refused, ...).
    #[error(transparent)]
    Start(#[from] rbuild_sandbox::SandboxError),
    /// Talking to the worker failed (it died, or the socket broke).
    #[error("{context} the container-root worker: {source}")]
    Channel {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The worker answered something this end did not ask for.
    #[error("the container-root worker answered {0}")]
    Protocol(String),
    /// The worker ran the task and it failed; the message is the worker's.
    #[error("{0}")]
    Task(String),
    /// An owner the build's id map does not cover.
    #[error(
        "chown of {path} to {uid}:{gid}: the id is outside this user's subordinate ranges \
         (container ids 0..={max} are mapped)"
    )]
    Unmapped {
        path: String,
        uid: u32,
        gid: u32,
        max: u64,
    },
    /// Local I/O on this end (a memfd, a pipe, storing a layer).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl RootfsError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RootfsError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = RootfsError> = std::result::Result<T, E>;
