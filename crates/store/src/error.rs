//! Store errors. Each names the file or object involved and what was being done, so a
//! "No space left on device" says which write in which store ran out of space.

use std::io;
use std::path::{Path, PathBuf};

use rbuild_image::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("digest mismatch for {what}: expected {expected}, content hashes to {actual} ({size} bytes)")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
        size: u64,
    },
    #[error("blob {digest} is not in the store at {}", store.display())]
    BlobNotFound { digest: Digest, store: PathBuf },
    #[error("{what}: invalid JSON: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("no such image: {0}")]
    ImageNotFound(String),
    #[error("{input:?} is ambiguous: it matches images {matches}")]
    Ambiguous { input: String, matches: String },
    #[error(transparent)]
    Reference(#[from] rbuild_image::reference::ReferenceError),
    #[error(
        "fetching blob {} from {}/{}: {}",
        .0.digest, .0.registry, .0.repository, .0.message
    )]
    RemoteFetch(Box<RemoteFetchFailure>),
    #[error("{0}")]
    Invalid(String),
}

/// Why a remote blob (`remote.rs`) could not be fetched, and from where (boxed: it keeps
/// `StoreError` small).
#[derive(Debug)]
pub struct RemoteFetchFailure {
    pub registry: String,
    pub repository: String,
    pub digest: Digest,
    pub message: String,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches the operation and path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}
