//! The caches beside the store's own records: a remote (registry) cache consulted on a
//! local miss, and the directories of `RUN --mount=type=cache`. A step's key is its
//! lowered op's (`op.rs`).

use std::path::PathBuf;

use rbuild_image::Digest;
use rbuild_store::{CacheRecord, Store};

/// A cache besides the store's own records, e.g. one imported from a registry
/// (`--cache-from`). Consulted on a local miss.
pub trait RemoteCache {
    /// The record for `key`, if this cache has one.
    fn lookup(&self, key: &Digest) -> Option<CacheRecord>;
    /// Brings the layer of `record` into `store`, verified against its digest.
    fn fetch_layer(&self, store: &Store, record: &CacheRecord) -> Result<(), String>;
}

/// No remote cache.
pub struct NoRemoteCache;

impl RemoteCache for NoRemoteCache {
    fn lookup(&self, _key: &Digest) -> Option<CacheRecord> {
        None
    }
    fn fetch_layer(&self, _store: &Store, _record: &CacheRecord) -> Result<(), String> {
        Err("no remote cache".into())
    }
}

/// The directory that holds `RUN --mount=type=cache,id=ID` between builds. A remote cache
/// importing mount contents (`mounts=true`) fills it before the build.
pub fn cache_mount_dir(store: &Store, id: &str) -> Result<PathBuf, String> {
    let root = store
        .state_dir("cache-mounts")
        .map_err(|e| format!("cache mount directory: {e}"))?;
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
