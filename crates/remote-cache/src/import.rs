//! `--cache-from`: the cache manifests read once at build start, answering the executor's
//! lookups from memory and pulling only the layers of hits (and of cache mounts to restore).

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::path::Path;

use rbuild_executor::{cache_mount_dir, RemoteCache, RemoteCacheError, RemoteCacheErrorKind};
use rbuild_image::{Descriptor, Digest, Hasher, Reference};
use rbuild_registry::{Client, ErrorKind, SyncWriter};
use rbuild_store::{CacheRecord, RemoteBlob, Store};
use tokio::runtime::Handle;

use crate::format::{
    decode_index, decode_manifest, CacheIndex, MountLayer, CACHE_CONFIG_MEDIA_TYPE,
};

/// What happened while importing, for the caller to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportEvent {
    /// About to read the cache manifest of this ref.
    Reading(String),
    /// Read: how many step records and cache mounts it holds.
    Loaded {
        reference: String,
        records: usize,
        mounts: usize,
    },
    /// The ref has no cache yet.
    Missing(String),
    /// The ref's cache was refused or unreachable; the build goes on without it.
    Ignored { reference: String, reason: String },
}

/// A cache mount restored (or not) before the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountRestore {
    Restored {
        id: String,
        bytes: u64,
    },
    /// The local directory already has contents, which win.
    KeptLocal {
        id: String,
    },
    Failed {
        id: String,
        reason: String,
    },
}

/// The records of one or more registry caches, looked up in memory.
pub struct RegistryCache {
    client: Client,
    handle: Handle,
    records: HashMap<Digest, (CacheRecord, Reference)>,
    mounts: BTreeMap<String, (MountLayer, Reference)>,
}

impl RegistryCache {
    /// Reads the cache manifest of each ref once (earlier refs win for a key both have).
    /// A ref that is missing, unreachable, damaged or not an rbuild cache is skipped with an
    /// [`ImportEvent`]: a cache can only make a build faster, never fail it.
    pub fn import(
        client: &Client,
        handle: &Handle,
        refs: &[Reference],
        on_event: &mut dyn FnMut(ImportEvent),
    ) -> RegistryCache {
        let mut cache = RegistryCache {
            client: client.clone(),
            handle: handle.clone(),
            records: HashMap::new(),
            mounts: BTreeMap::new(),
        };
        for reference in refs {
            on_event(ImportEvent::Reading(reference.to_string()));
            match handle.block_on(read_cache(client, reference)) {
                Ok(Some((_, index))) => {
                    on_event(ImportEvent::Loaded {
                        reference: reference.to_string(),
                        records: index.records.len(),
                        mounts: index.mounts.len(),
                    });
                    for (key, record) in index.records {
                        cache
                            .records
                            .entry(key)
                            .or_insert_with(|| (record, reference.clone()));
                    }
                    for (id, mount) in index.mounts {
                        cache
                            .mounts
                            .entry(id)
                            .or_insert_with(|| (mount, reference.clone()));
                    }
                }
                Ok(None) => on_event(ImportEvent::Missing(reference.to_string())),
                Err(e) => on_event(ImportEvent::Ignored {
                    reference: reference.to_string(),
                    reason: e.message().to_string(),
                }),
            }
        }
        cache
    }

    /// How many step records were imported.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Where each imported layer can be found: an export to another repository of the same
    /// registry mounts it from there instead of uploading it.
    pub fn sources(&self) -> HashMap<Digest, Reference> {
        let records = self
            .records
            .values()
            .map(|(r, from)| (r.layer.digest.clone(), from.clone()));
        let mounts = self
            .mounts
            .values()
            .map(|(m, from)| (m.layer.digest.clone(), from.clone()));
        records.chain(mounts).collect()
    }

    /// Fills each imported cache mount's directory whose local copy is missing or empty
    /// (local contents are newer or equal, so they win). Extraction goes through
    /// `apply_layer`, which refuses paths leaving the directory, into a fresh directory that
    /// is renamed into place only when complete.
    pub fn restore_mounts(&self, store: &Store) -> Vec<MountRestore> {
        let mut out = Vec::new();
        for (id, (mount, from)) in &self.mounts {
            let result = cache_mount_dir(store, id)
                .map_err(|e| e.to_string())
                .and_then(|dir| {
                    if is_non_empty_dir(&dir) {
                        return Ok(None);
                    }
                    self.pull_verified(store, from, &mount.layer, &mount.diff_id)
                        .map_err(|e| e.to_string())?;
                    extract_into(store, &mount.layer.digest, &dir).map(Some)
                });
            out.push(match result {
                Ok(Some(bytes)) => MountRestore::Restored {
                    id: id.clone(),
                    bytes,
                },
                Ok(None) => MountRestore::KeptLocal { id: id.clone() },
                Err(reason) => MountRestore::Failed {
                    id: id.clone(),
                    reason,
                },
            });
        }
        out
    }

    /// Pulls `layer` from `from` into the store (digest verified while streaming) unless it
    /// is there, then checks its uncompressed digest is `diff_id`. The registry's error
    /// kind is kept (not found, unauthorized, unreachable, digest mismatch).
    fn pull_verified(
        &self,
        store: &Store,
        from: &Reference,
        layer: &Descriptor,
        diff_id: &Digest,
    ) -> Result<(), RemoteCacheError> {
        let local = |e: rbuild_store::StoreError| {
            RemoteCacheError::new(
                RemoteCacheErrorKind::Store,
                format!("layer {}: {e}", layer.digest),
            )
        };
        if !store.has_blob(&layer.digest) {
            self.handle.block_on(async {
                // `pull_blob` verifies the digest of every byte it writes: the store
                // takes it without hashing them again.
                let writer = store.blob_writer_hashed_by_caller().map_err(local)?;
                let mut sink = SyncWriter(writer);
                self.client
                    .pull_blob(
                        from.registry(),
                        from.repository(),
                        &layer.digest,
                        layer.size,
                        &mut sink,
                    )
                    .await
                    .map_err(|e| RemoteCacheError::new(remote_kind(e.kind()), e.to_string()))?;
                sink.into_inner()
                    .commit(Some(&layer.digest))
                    .map_err(local)?;
                Ok::<(), RemoteCacheError>(())
            })?;
        }
        let got = uncompressed_digest(store, &layer.digest)
            .map_err(|e| RemoteCacheError::new(RemoteCacheErrorKind::Store, e))?;
        if &got != diff_id {
            return Err(RemoteCacheError::new(
                RemoteCacheErrorKind::Untrusted,
                format!(
                    "layer {} from {from} uncompresses to {got}, but the cache says {diff_id}",
                    layer.digest
                ),
            ));
        }
        Ok(())
    }
}

impl RemoteCache for RegistryCache {
    fn lookup(&self, key: &Digest) -> Option<CacheRecord> {
        self.records.get(key).map(|(r, _)| r.clone())
    }

    fn fetch_layer(&self, store: &Store, record: &CacheRecord) -> Result<(), RemoteCacheError> {
        let (_, from) = self.records.get(&record.key).ok_or_else(|| {
            RemoteCacheError::new(
                RemoteCacheErrorKind::NotFound,
                format!("no imported cache record for {}", record.key),
            )
        })?;
        self.pull_verified(store, from, &record.layer, &record.diff_id)
    }

    fn remote_blob(&self, record: &CacheRecord) -> Option<RemoteBlob> {
        let (imported, from) = self.records.get(&record.key)?;
        // Only the layer this cache imported for the key: the store verifies it against
        // this descriptor and diff id when it fetches it.
        (imported.layer.digest == record.layer.digest).then(|| RemoteBlob {
            registry: from.registry().to_string(),
            repository: from.repository().to_string(),
            descriptor: imported.layer.clone(),
            diff_id: imported.diff_id.clone(),
        })
    }
}

/// The executor's kind of a registry client error.
fn remote_kind(kind: ErrorKind) -> RemoteCacheErrorKind {
    match kind {
        ErrorKind::NotFound => RemoteCacheErrorKind::NotFound,
        ErrorKind::Unauthorized => RemoteCacheErrorKind::Unauthorized,
        ErrorKind::DigestMismatch | ErrorKind::UnsupportedMediaType => {
            RemoteCacheErrorKind::Untrusted
        }
        ErrorKind::Io => RemoteCacheErrorKind::Store,
        _ => RemoteCacheErrorKind::Unreachable,
    }
}

/// Why a ref's cache could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// Something else is under the tag: an image, an index, another tool's cache.
    Foreign(String),
    /// An rbuild cache that is damaged (unparsable, inconsistent, digest mismatch).
    Untrusted(String),
    /// The registry could not be read (network, auth, server errors).
    Unreachable(String),
}

impl ReadError {
    pub(crate) fn message(&self) -> &str {
        match self {
            ReadError::Foreign(m) | ReadError::Untrusted(m) | ReadError::Unreachable(m) => m,
        }
    }
}

fn registry_error(e: rbuild_registry::RegistryError) -> ReadError {
    match e.kind() {
        ErrorKind::DigestMismatch | ErrorKind::UnsupportedMediaType | ErrorKind::NotFound => {
            ReadError::Untrusted(e.to_string())
        }
        _ => ReadError::Unreachable(e.to_string()),
    }
}

/// The cache at `reference`: `None` when the tag does not exist, an error when it exists
/// but cannot be trusted (not ours, damaged, config digest wrong) or cannot be read.
pub(crate) async fn read_cache(
    client: &Client,
    reference: &Reference,
) -> Result<Option<(Digest, CacheIndex)>, ReadError> {
    let raw = match client.get_manifest(reference).await {
        Ok(raw) => raw,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(registry_error(e)),
    };
    if !is_rbuild_cache(&raw) {
        return Err(ReadError::Foreign(format!(
            "not an rbuild cache (a {} whose config is not {CACHE_CONFIG_MEDIA_TYPE})",
            raw.media_type
        )));
    }
    let manifest = decode_manifest(&raw.bytes).map_err(ReadError::Untrusted)?;
    let mut config = Vec::new();
    client
        .pull_blob(
            reference.registry(),
            reference.repository(),
            &manifest.config.digest,
            manifest.config.size,
            &mut config,
        )
        .await
        .map_err(registry_error)?;
    let index = decode_index(&manifest, &config).map_err(ReadError::Untrusted)?;
    Ok(Some((raw.digest, index)))
}

/// Whether the manifest says it is ours (its config's media type), however damaged the rest.
fn is_rbuild_cache(raw: &rbuild_registry::RawManifest) -> bool {
    !raw.is_index()
        && serde_json::from_slice::<serde_json::Value>(&raw.bytes)
            .is_ok_and(|v| v["config"]["mediaType"].as_str() == Some(CACHE_CONFIG_MEDIA_TYPE))
}

fn is_non_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

fn uncompressed_digest(store: &Store, digest: &Digest) -> Result<Digest, String> {
    let blob = store
        .open_blob(digest)
        .map_err(|e| format!("layer {digest}: {e}"))?;
    let mut reader = rbuild_layer::compression::decompressing_reader(blob)
        .map_err(|e| format!("layer {digest}: {e}"))?;
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| format!("layer {digest} does not decompress: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

/// Extracts the layer into a new directory beside `dir`, then renames it to `dir`
/// (replacing an empty one). Returns the bytes of file content written.
fn extract_into(store: &Store, digest: &Digest, dir: &Path) -> Result<u64, String> {
    let parent = dir
        .parent()
        .ok_or_else(|| format!("{} has no parent", dir.display()))?;
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".import-")
        .tempdir_in(parent)
        .map_err(|e| format!("{}: {e}", parent.display()))?;
    let blob = store
        .open_blob(digest)
        .map_err(|e| format!("layer {digest}: {e}"))?;
    let options = rbuild_layer::ApplyOptions {
        ownership: if running_as_root() {
            rbuild_layer::Ownership::Preserve
        } else {
            rbuild_layer::Ownership::Ignore
        },
        ..Default::default()
    };
    let stats = rbuild_layer::apply_layer(blob, staging.path(), &options)
        .map_err(|e| format!("extracting layer {digest}: {e}"))?;
    // The staging directory is private (0700); a cache mount's directory is 0755 as the
    // executor makes it, so a RUN as another user can use it.
    std::fs::set_permissions(
        staging.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| format!("{}: {e}", staging.path().display()))?;
    // An empty directory left by an earlier build is replaced; a non-empty one was checked
    // for before, and a concurrent build filling it meanwhile wins (rename fails).
    let _ = std::fs::remove_dir(dir);
    let staged = staging.keep();
    if let Err(e) = std::fs::rename(&staged, dir) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(format!("moving the cache into {}: {e}", dir.display()));
    }
    Ok(stats.bytes)
}

fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}
