//! The caches beside the store's own records: a remote (registry) cache consulted on a
//! local miss, and the directories of `RUN --mount=type=cache`. A step's key is its
//! lowered op's (`op.rs`).

use std::path::PathBuf;

use rbuild_image::Digest;
use rbuild_store::{CacheRecord, RemoteBlob, Store};

/// A cache besides the store's own records, e.g. one imported from a registry
/// (`--cache-from`). Consulted on a local miss.
pub trait RemoteCache {
    /// The record for `key`, if this cache has one.
    fn lookup(&self, key: &Digest) -> Option<CacheRecord>;
    /// Brings the layer of `record` into `store`, verified against its digest.
    fn fetch_layer(&self, store: &Store, record: &CacheRecord) -> Result<(), RemoteCacheError>;
    /// Where the layer of `record` can be fetched later, for the store to record it remote
    /// instead of fetching it now (`Store::record_remote_blob`); `None` when this cache
    /// cannot say: the layer is fetched.
    fn remote_blob(&self, _record: &CacheRecord) -> Option<RemoteBlob> {
        None
    }
}

/// Why a remote cache could not bring a layer into the store.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RemoteCacheError {
    pub kind: RemoteCacheErrorKind,
    pub message: String,
}

/// What kind of failure a [`RemoteCacheError`] is (the registry client's kinds, grouped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteCacheErrorKind {
    /// The registry does not have the blob (or the cache has no record of it).
    NotFound,
    /// The registry refused the credentials (or had none).
    Unauthorized,
    /// The registry could not be reached or answered out of protocol.
    Unreachable,
    /// What came is not what the cache claimed (digest, size or diff id mismatch).
    Untrusted,
    /// The local store could not take the layer.
    Store,
    /// There is no remote cache.
    Unavailable,
}

impl RemoteCacheError {
    pub fn new(kind: RemoteCacheErrorKind, message: impl Into<String>) -> Self {
        RemoteCacheError {
            kind,
            message: message.into(),
        }
    }
}

/// No remote cache.
pub struct NoRemoteCache;

impl RemoteCache for NoRemoteCache {
    fn lookup(&self, _key: &Digest) -> Option<CacheRecord> {
        None
    }
    fn fetch_layer(&self, _store: &Store, _record: &CacheRecord) -> Result<(), RemoteCacheError> {
        Err(RemoteCacheError::new(
            RemoteCacheErrorKind::Unavailable,
            "no remote cache",
        ))
    }
}

/// The directory that holds `RUN --mount=type=cache,id=ID` between builds. A remote cache
/// importing mount contents (`mounts=true`) fills it before the build.
pub fn cache_mount_dir(store: &Store, id: &str) -> Result<PathBuf, crate::BuildError> {
    let root = store
        .state_dir("cache-mounts")
        .map_err(crate::BuildError::store("cache mount directory"))?;
    Ok(root.join(cache_dir_name(id)))
}

/// A file-system-safe, unique name for a cache id.
fn cache_dir_name(id: &str) -> String {
    let digest = Digest::of(id.as_bytes());
    let readable: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("{readable}-{}", &digest.hex()[..16])
}
