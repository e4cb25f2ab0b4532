//! The build cache's records: what a build step with a given cache key produced.
//!
//! The store does not know how keys are computed (that is the executor's job); it keeps
//! `key → record` durably, treats the layers records name as live for gc, and bounds their
//! size. Layout:
//!
//! ```text
//! <root>/cache/records/<key hex>.json   one record; its mtime is the last use
//! <root>/cache/explain/<hex>.json       the inputs of a step's last key, for explaining misses
//! ```
//!
//! Records are written with the shared gc lock held, and gc reads them with the exclusive
//! one, so a record is either seen by gc (its layer kept) or written after gc finished.
//! A record whose layer has gone is dropped on lookup: a miss, never a broken hit.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rbuild_image::{Descriptor, Digest};
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, StoreError};
use crate::{fsutil, lock, Store};

/// What a cached step made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheRecord {
    /// The step's cache key.
    pub key: Digest,
    /// The layer blob (compressed), as it appears in a manifest.
    pub layer: Descriptor,
    /// The layer's uncompressed digest (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// When the step ran (RFC 3339), reused as the history entry's `created` so a fully
    /// cached rebuild gives the same image.
    pub created: String,
}

/// The named inputs a step's key was computed from, kept per step position so that a miss
/// can say which input changed since the last build.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInputs {
    pub inputs: BTreeMap<String, String>,
}

/// Limits for [`Store::prune_cache`].
#[derive(Debug, Clone, Default)]
pub struct CachePrunePolicy {
    /// Keep at most this many bytes of cache-only layers, dropping the least recently used
    /// records first.
    pub keep_bytes: Option<u64>,
    /// Drop records not used for this long.
    pub unused_for: Option<Duration>,
    /// Drop every record.
    pub all: bool,
}

/// What [`Store::prune_cache`] dropped (blobs are freed by the gc that follows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CachePruneReport {
    pub removed_records: usize,
    pub kept_records: usize,
}

/// Size of the cache: records and the bytes of the distinct layers they name (shared with
/// images or not, as Docker counts build cache).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheUsage {
    pub records: usize,
    pub bytes: u64,
}

struct RecordFile {
    path: PathBuf,
    record: CacheRecord,
    last_used: SystemTime,
}

impl Store {
    fn cache_records_dir(&self) -> Result<PathBuf> {
        let dir = self.state_dir("cache")?.join("records");
        std::fs::create_dir_all(&dir).at("create cache directory", &dir)?;
        Ok(dir)
    }

    fn cache_explain_dir(&self) -> Result<PathBuf> {
        let dir = self.state_dir("cache")?.join("explain");
        std::fs::create_dir_all(&dir).at("create cache directory", &dir)?;
        Ok(dir)
    }

    /// The record for `key` whose layer is still present, with the layer protected from gc
    /// for the life of this `Store`; marks the record used. A record that is unreadable or
    /// whose layer is gone is removed and reported as a miss.
    pub fn cache_lookup(&self, key: &Digest) -> Result<Option<CacheRecord>> {
        let path = self
            .cache_records_dir()?
            .join(format!("{}.json", key.hex()));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).at("read cache record", &path),
        };
        let record: CacheRecord = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(_) => {
                let _ = std::fs::remove_file(&path);
                return Ok(None);
            }
        };
        if &record.key != key {
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        let mut record = record;
        if !self.protect(&record.layer.digest)? {
            // A lazy layer's plain blob may be gone while a compressed copy is kept (an
            // image holds it): the step is still cached, on that copy.
            match self.any_compressed_layer(&record.diff_id)? {
                Some(compressed) => record.layer = compressed,
                // A layer never written (a discarded stage's step, issue 18): the step is
                // cached while a build keeps the tree it can be written from.
                None if self.kept_layer_dir(&record.layer.digest).is_dir() => {}
                None => {
                    let _ = std::fs::remove_file(&path);
                    return Ok(None);
                }
            }
        }
        touch(&path);
        Ok(Some(record))
    }

    /// Where a build keeps the tree a layer it never wrote can be written from, by the
    /// layer's (plain) digest: `<root>/trees/kept-<hex>`. The executor makes and removes it
    /// under its trees lock (bounded and pruned with the extracted trees); the store only
    /// treats a cache record naming such a layer as a hit while the directory is there.
    pub fn kept_layer_dir(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("trees")
            .join(format!("kept-{}", digest.hex()))
    }

    /// Stores `record` whose layer is not written yet: its blob is written from a kept
    /// tree ([`Store::kept_layer_dir`]) when something needs it, and then recorded again
    /// with [`Store::cache_put`]. Until the tree is kept (or once it is removed),
    /// [`Store::cache_lookup`] reads the record as a miss and drops it.
    pub fn cache_put_unwritten(&self, record: &CacheRecord) -> Result<()> {
        let _gc = lock::shared(&self.gc_lock)?;
        self.write_cache_record(record)
    }

    /// Writes `record` under its key (replacing one there); the caller holds the gc lock
    /// shared.
    fn write_cache_record(&self, record: &CacheRecord) -> Result<()> {
        let dir = self.cache_records_dir()?;
        let bytes = serde_json::to_vec(record).map_err(|source| StoreError::Json {
            what: format!("cache record {}", record.key),
            source,
        })?;
        fsutil::replace_file(
            self,
            &dir.join(format!("{}.json", record.key.hex())),
            &bytes,
        )
    }

    /// Stores `record` (replacing one with the same key). Its layer must be in the store
    /// (on disk or recorded remote).
    /// Not fsynced (a step pays for no fsync here): a power cut may lose the record or
    /// leave it empty, which later reads as a miss.
    pub fn cache_put(&self, record: &CacheRecord) -> Result<()> {
        // Shared gc lock: gc (exclusive) either sees this record or runs after it exists.
        let _gc = lock::shared(&self.gc_lock)?;
        if !self.has_blob_or_remote(&record.layer.digest) {
            return Err(StoreError::BlobNotFound {
                digest: record.layer.digest.clone(),
                store: self.root.clone(),
            });
        }
        self.lease_digest(&record.layer.digest)?;
        self.write_cache_record(record)
    }

    /// The inputs last recorded for the step at `position` (any stable name for "this step
    /// of this Dockerfile"), if any.
    pub fn cache_last_inputs(&self, position: &str) -> Option<KeyInputs> {
        let path = self
            .cache_explain_dir()
            .ok()?
            .join(format!("{}.json", Digest::of(position.as_bytes()).hex()));
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Records the inputs of the step at `position` for the next build's explanations.
    pub fn cache_record_inputs(&self, position: &str, inputs: &KeyInputs) -> Result<()> {
        let path = self
            .cache_explain_dir()?
            .join(format!("{}.json", Digest::of(position.as_bytes()).hex()));
        let bytes = serde_json::to_vec(inputs).map_err(|source| StoreError::Json {
            what: "cache inputs".into(),
            source,
        })?;
        fsutil::replace_file(self, &path, &bytes)
    }

    fn cache_record_files(&self) -> Result<Vec<RecordFile>> {
        let dir = self.cache_records_dir()?;
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).at("list cache records in", &dir)? {
            let entry = entry.at("list cache records in", &dir)?;
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok(record) = serde_json::from_slice::<CacheRecord>(&bytes) else {
                // Damage, or a record a power cut emptied (records are not fsynced).
                let _ = std::fs::remove_file(&path);
                continue;
            };
            let last_used = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            out.push(RecordFile {
                path,
                record,
                last_used,
            });
        }
        Ok(out)
    }

    /// Layers cache records keep alive (gc's extra roots). Call with the gc lock held
    /// exclusively.
    pub(crate) fn cache_roots(&self) -> Result<HashSet<Digest>> {
        Ok(self
            .cache_record_files()?
            .into_iter()
            .map(|f| f.record.layer.digest)
            .collect())
    }

    /// How much the cache holds: its records and the bytes of the layers they name.
    pub fn cache_usage(&self) -> Result<CacheUsage> {
        let files = self.cache_record_files()?;
        let mut seen = HashSet::new();
        let mut bytes = 0;
        for f in &files {
            let d = &f.record.layer.digest;
            if seen.insert(d.clone()) {
                bytes += self.blob_size(d).unwrap_or(0);
            }
        }
        Ok(CacheUsage {
            records: files.len(),
            bytes,
        })
    }

    /// Drops cache records by `policy` (oldest use first), then collects the blobs nothing
    /// keeps any more. Returns what was dropped and the gc's report.
    pub fn prune_cache(
        &self,
        policy: &CachePrunePolicy,
    ) -> Result<(CachePruneReport, crate::GcReport)> {
        let report = {
            let _gc = lock::exclusive(&self.gc_lock)?;
            let mut files = self.cache_record_files()?;
            files.sort_by_key(|f| f.last_used);
            let now = SystemTime::now();
            // How many records share each layer: its bytes go when the last one does.
            let mut sharers: BTreeMap<Digest, usize> = BTreeMap::new();
            for f in &files {
                *sharers.entry(f.record.layer.digest.clone()).or_default() += 1;
            }
            let mut total: u64 = sharers.keys().map(|d| self.blob_size(d).unwrap_or(0)).sum();
            let mut report = CachePruneReport::default();
            for f in files {
                let too_old = policy.unused_for.is_some_and(|limit| {
                    now.duration_since(f.last_used).unwrap_or_default() >= limit
                });
                let too_big = policy.keep_bytes.is_some_and(|keep| total > keep);
                if policy.all || too_old || too_big {
                    remove_record(&f.path)?;
                    report.removed_records += 1;
                    let d = &f.record.layer.digest;
                    // Cannot fail: every record's layer was counted into `sharers` above.
                    let n = sharers.get_mut(d).expect("counted above");
                    *n -= 1;
                    if *n == 0 {
                        total = total.saturating_sub(self.blob_size(d).unwrap_or(0));
                    }
                } else {
                    report.kept_records += 1;
                }
            }
            report
        };
        let gc = self.gc()?;
        Ok((report, gc))
    }

    /// Keeps the cache under `keep_bytes`, pruning only when it is over (cheap otherwise).
    pub fn bound_cache(&self, keep_bytes: u64) -> Result<Option<CachePruneReport>> {
        if self.cache_usage()?.bytes <= keep_bytes {
            return Ok(None);
        }
        let (report, _) = self.prune_cache(&CachePrunePolicy {
            keep_bytes: Some(keep_bytes),
            ..Default::default()
        })?;
        Ok(Some(report))
    }
}

fn remove_record(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).at("remove cache record", path),
    }
}

/// Marks a record used. Best effort: a failure only makes it look older to the pruner.
fn touch(path: &Path) {
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// The default bound of the cache: 10% of the store's filesystem, at most 20 GiB, at least
/// 512 MiB (BuildKit's default keeps 10% of the disk).
pub fn default_cache_bound(store_root: &Path) -> u64 {
    const MIN: u64 = 512 << 20;
    const MAX: u64 = 20 << 30;
    match rustix::fs::statvfs(store_root) {
        Ok(st) => (st.f_blocks.saturating_mul(st.f_frsize) / 10).clamp(MIN, MAX),
        Err(_) => MIN,
    }
}
