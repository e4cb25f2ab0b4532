//! The one error type of this crate. Every variant names the entry, file or step that failed.

use std::io;

/// Why applying, writing or listing a layer failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error, with what was being done and on which path.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// A layer entry that is refused: it would escape the target, or is malformed.
    #[error("layer entry {entry:?} refused: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    /// A layer entry of a kind this applier does not handle.
    #[error("layer entry {entry:?} unsupported: {reason}")]
    Unsupported { entry: String, reason: String },
    /// A change set that cannot be written (bad path, missing file, symlink parent).
    #[error("change {path:?}: {reason}")]
    Change { path: String, reason: String },
    /// A container id with no host id in the id map used for rootless extraction.
    #[error("layer entry {entry:?}: {kind} {id} is not mapped to a host id by the id map")]
    UnmappedId {
        entry: String,
        kind: &'static str,
        id: u64,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds "what was being done" to an I/O error.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|errno| Error::Io {
            context: context(),
            source: errno.into(),
        })
    }
}

/// Bytes of a path shown in an error (lossy; errors are for humans).
pub(crate) fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
