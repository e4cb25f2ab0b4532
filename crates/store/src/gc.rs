//! Garbage collection and verification.
//!
//! `gc` holds the index lock (no tag changes meanwhile) and the gc lock exclusively (no blob
//! commit meanwhile), computes what `index.json` reaches, then lists blobs, *then* reads live
//! leases, and deletes blobs neither reachable nor leased. Blob commits record their lease and
//! rename under the shared gc lock, so a blob is either leased before gc reads the leases or
//! written after gc finished; it is never deleted in between.

use std::collections::HashSet;
use std::fs::File;
use std::time::{Duration, SystemTime};

use rbuild_image::{media_types, Descriptor, Digest, Hasher};

use crate::error::{IoContext, Result, StoreError};
use crate::{lease, lock, Store};

/// How long gc leaves an unlocked blob or lease temp file: its writer locks it right after
/// creating it, so a few seconds would do; this is generous for a slow or stopped machine.
const LOCKED_TEMP_GRACE: Duration = Duration::from_secs(30);

/// What gc may remove besides unreachable blobs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Unlocked temp files younger than this are kept: a writer that has just created its file
    /// may not have locked it yet.
    pub temp_grace: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            temp_grace: Duration::from_secs(10 * 60),
        }
    }
}

/// What gc removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed_blobs: Vec<Digest>,
    /// Remote blob records nothing named any more (`remote.rs`).
    pub removed_remote_records: Vec<Digest>,
    pub removed_temp_files: usize,
    /// Bytes freed, blobs and temp files together.
    pub freed_bytes: u64,
}

/// What fsck found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsckReport {
    pub blobs_checked: usize,
    /// Blobs whose content no longer hashes to their name: (name, actual content digest).
    pub corrupt: Vec<(Digest, Digest)>,
    /// Blobs the index reaches that are missing.
    pub missing: Vec<Digest>,
    /// Layers the index reaches whose bytes are still in a registry (recorded remote,
    /// fetched by their first reader): not missing.
    pub remote: Vec<Digest>,
    /// Files under `blobs/sha256` whose names are not digests.
    pub stray_files: Vec<String>,
}

impl FsckReport {
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty()
    }
}

impl Store {
    /// Blobs reachable from `index.json` (manifests, nested indexes, configs, layers), plus the
    /// digests of reachable blobs that are missing and of those recorded remote. With
    /// `strict`, a manifest or index that cannot be read is an error: gc must not delete the
    /// layers of an image it failed to read.
    fn reachable(&self, index: &rbuild_image::Index, strict: bool) -> Result<Reachable> {
        let mut seen = HashSet::new();
        let mut missing = Vec::new();
        let mut remote = Vec::new();
        let mut stack: Vec<Descriptor> = index.manifests.clone();
        while let Some(desc) = stack.pop() {
            if !seen.insert(desc.digest.clone()) {
                continue;
            }
            if !self.has_blob(&desc.digest) {
                // Only layers are ever recorded remote: they have no children to follow.
                if self.has_blob_or_remote(&desc.digest) {
                    remote.push(desc.digest.clone());
                } else {
                    missing.push(desc.digest.clone());
                }
                continue;
            }
            let children = if media_types::is_index(&desc.media_type) {
                self.read_index(&desc.digest).map(|idx| idx.manifests)
            } else if media_types::is_manifest(&desc.media_type) {
                self.read_manifest(&desc.digest)
                    .map(|m| std::iter::once(m.config).chain(m.layers).collect())
            } else {
                Ok(Vec::new())
            };
            match children {
                Ok(children) => stack.extend(children),
                Err(err) if strict => {
                    return Err(StoreError::Invalid(format!(
                        "gc stopped, nothing was deleted: cannot read {} (run fsck): {err}",
                        desc.digest
                    )))
                }
                Err(_) => {} // fsck reports the blob as corrupt when it rehashes it
            }
        }
        Ok(Reachable {
            seen,
            missing,
            remote,
        })
    }

    /// Collects garbage with default options.
    pub fn gc(&self) -> Result<GcReport> {
        self.gc_with(&GcOptions::default())
    }

    /// Removes blobs not reachable from `index.json` and not leased by a live process, dead
    /// writers' temp files, and dead processes' lease files.
    pub fn gc_with(&self, options: &GcOptions) -> Result<GcReport> {
        let _index_lock = lock::exclusive(&self.index_lock)?;
        let _gc_lock = lock::exclusive(&self.gc_lock)?;
        let index = {
            // Read without the shared lock: we hold the exclusive one.
            let path = self.layout.join("index.json");
            let bytes = std::fs::read(&path).at("read", &path)?;
            rbuild_image::Index::from_slice(&bytes).map_err(|source| crate::StoreError::Json {
                what: path.display().to_string(),
                source,
            })?
        };
        let mut reachable = self.reachable(&index, true)?.seen;
        // Layers of build-cache records are live until the cache drops the record.
        reachable.extend(self.cache_roots()?);
        let mut candidates = Vec::new();
        for entry in std::fs::read_dir(&self.blobs).at("list blobs in", &self.blobs)? {
            let entry = entry.at("list blobs in", &self.blobs)?;
            let name = entry.file_name();
            let Some(digest) = name
                .to_str()
                .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok())
            else {
                continue; // not ours to judge; fsck reports it
            };
            if !reachable.contains(&digest) {
                candidates.push((digest, entry.path()));
            }
        }
        let leased = lease::live_leased_digests(&self.leases)?;
        let mut report = GcReport::default();
        for (digest, path) in candidates {
            if leased.contains(&digest) {
                continue;
            }
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&path).at("remove unreachable blob", &path)?;
            report.freed_bytes += size;
            report.removed_blobs.push(digest);
        }
        report.removed_remote_records =
            self.remove_unreferenced_remote_records(&reachable, &leased)?;
        self.remove_dead_temp_files(options, &mut report)?;
        self.remove_dangling_layer_records()?;
        Ok(report)
    }

    fn remove_dead_temp_files(&self, options: &GcOptions, report: &mut GcReport) -> Result<()> {
        let now = SystemTime::now();
        for entry in std::fs::read_dir(&self.tmp).at("list temp files in", &self.tmp)? {
            let entry = entry.at("list temp files in", &self.tmp)?;
            let path = entry.path();
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            if !meta.is_file() || lock::is_held_elsewhere(&file) {
                continue;
            }
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            // Blob and lease writers lock their temp file right after creating it: unlocked
            // for longer than that moment, it belongs to a dead process (a killed build's
            // layer, possibly gigabytes). Other temp files are never locked: the full grace.
            let name = entry.file_name();
            let locked_kind = ["blob-", "lease-"]
                .iter()
                .any(|p| name.to_string_lossy().starts_with(p));
            let grace = if locked_kind {
                options.temp_grace.min(LOCKED_TEMP_GRACE)
            } else {
                options.temp_grace
            };
            if age < grace {
                continue;
            }
            std::fs::remove_file(&path).at("remove stale temp file", &path)?;
            report.removed_temp_files += 1;
            report.freed_bytes += meta.len();
        }
        Ok(())
    }

    /// Rehashes every blob and checks that everything the index reaches is present.
    pub fn fsck(&self) -> Result<FsckReport> {
        let index = self.index()?;
        let mut report = FsckReport::default();
        for entry in std::fs::read_dir(&self.blobs).at("list blobs in", &self.blobs)? {
            let entry = entry.at("list blobs in", &self.blobs)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(digest) = format!("sha256:{name}").parse::<Digest>() else {
                report.stray_files.push(name);
                continue;
            };
            let path = entry.path();
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // gc'd meanwhile
                Err(e) => return Err(e).at("open blob", &path),
            };
            let mut hasher = HashWriter(Hasher::new());
            std::io::copy(&mut file, &mut hasher).at("read blob", &path)?;
            let actual = hasher.0.finish();
            report.blobs_checked += 1;
            if actual != digest {
                report.corrupt.push((digest, actual));
            }
        }
        let reachable = self.reachable(&index, false)?;
        report.missing = reachable.missing;
        report.remote = reachable.remote;
        report.remote.sort();
        Ok(report)
    }
}

/// What `index.json` reaches (see `Store::reachable`).
struct Reachable {
    seen: HashSet<Digest>,
    missing: Vec<Digest>,
    remote: Vec<Digest>,
}

struct HashWriter(Hasher);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
