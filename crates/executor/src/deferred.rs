//! Layers written only when something needs them (issue 18).
//!
//! A RUN step on an overlay in a stage no image is made of (a toolchain stage the target
//! only copies files from) does not write its layer: the tar stream is hashed (the diff
//! id, which the file-system key chains on, `step_cache.rs` `result_key`) and the step's
//! changes stay where they are — the overlay upper directory, then the stage rootfs it is
//! merged into. The layer's blob (plain, so its digest is the diff id and the descriptor
//! is the one an eager write gives) is written from there when something reads it:
//! extraction into another stage's rootfs, the image (`FROM` that stage, `--target` it),
//! a later step's materialising after a merge that would change those files.
//!
//! At the end of the build, what was never written is kept in the store
//! (`Store::kept_layer_dir`: the source directory moved there by rename, with its change
//! list), and its cache record names it: a later build hitting the step writes the blob
//! from the kept tree if it needs it, and needs nothing while it only hits. Kept trees are
//! bounded and pruned with the extracted trees (`trees.rs`); a record whose tree went is a
//! miss. Every blob written late is verified against the digest the step recorded, so a
//! source that changed is an error naming the layer, never a different image.
//!
//! When a step's layer is not deferred: a build exporting its cache (`--cache-to` reads
//! every step's layer), the target stage's steps (its layers are the image's), steps not
//! on an overlay (their changes are in the stage rootfs, which the next step writes), and
//! builds without shared trees or whose files container root owns (`Owners::Mapped`,
//! `Owners::Recorded`).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rbuild_image::Digest;
use rbuild_layer::{write_layer, Change, Compression, WriteOptions};
use rbuild_store::CacheRecord;

use crate::context::{lock, BuildContext};
use crate::error::{BuildError, Result};
use crate::progress::{Event, Progress};
use crate::state::StageState;

/// The kept tree's change list (`changes`) and the layer options it was hashed with
/// (`options`), beside `root`.
const CHANGES_FILE: &str = "changes";
const OPTIONS_FILE: &str = "options";

/// Where a layer not written yet can be written from.
pub(crate) enum LayerSource {
    /// This build's directory: `root` (the step's upper directory, or the stage rootfs it
    /// was merged into) has `changes`.
    Build { root: PathBuf, changes: Vec<Change> },
    /// A tree an earlier build kept (`Store::kept_layer_dir`).
    Kept(PathBuf),
}

/// A layer whose blob is not in the store yet.
pub(crate) struct DeferredLayer {
    /// The step's cache record names it (the source is kept at the build's end).
    pub recorded: bool,
    pub diff_id: Digest,
    pub source: LayerSource,
}

/// The deferred layers of a build, by (plain) layer digest.
pub(crate) type DeferredLayers = BTreeMap<Digest, DeferredLayer>;

/// A change list as bytes: per change a kind byte (`U`, `D`, `O`), the path, a NUL (paths
/// hold no NUL).
fn encode_changes(changes: &[Change]) -> Vec<u8> {
    let mut out = Vec::new();
    for change in changes {
        let (kind, path) = match change {
            Change::Upsert(p) => (b'U', p),
            Change::Delete(p) => (b'D', p),
            Change::OpaqueDir(p) => (b'O', p),
        };
        out.push(kind);
        out.extend_from_slice(path.as_os_str().as_bytes());
        out.push(0);
    }
    out
}

/// The change list `encode_changes` wrote; `None` if the bytes are not one (the layer
/// writer refuses `..` and the like itself).
fn decode_changes(bytes: &[u8]) -> Option<Vec<Change>> {
    let mut changes = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let end = rest.iter().position(|&b| b == 0)?;
        let (entry, after) = rest.split_at(end);
        rest = &after[1..];
        let (&kind, path) = entry.split_first()?;
        if path.is_empty() || path.starts_with(b"/") {
            return None;
        }
        let path = PathBuf::from(OsStr::from_bytes(path));
        changes.push(match kind {
            b'U' => Change::Upsert(path),
            b'D' => Change::Delete(path),
            b'O' => Change::OpaqueDir(path),
            _ => return None,
        });
    }
    Some(changes)
}

impl BuildContext<'_> {
    /// The options of a plain layer (what a lazily stored layer is written with).
    pub(crate) fn plain_write_options(&self) -> WriteOptions {
        WriteOptions {
            compression: Compression::None,
            level: None,
            ..self.write_options.clone()
        }
    }

    /// What decides a plain layer's bytes besides its files, as kept beside a kept tree: a
    /// later build writes from the tree only with the same.
    fn options_tag(&self) -> String {
        format!("{:?}", self.plain_write_options())
    }

    /// Whether an overlay step of `st` may leave its layer unwritten (see the module).
    pub(crate) fn may_defer_layer(&self, st: &StageState) -> bool {
        self.request.defer_unshipped_layers
            && st.index != self.target_stage
            && self.trees.is_some()
            && matches!(
                self.owners,
                crate::fsops::Owners::Root | crate::fsops::Owners::Ranged(_)
            )
    }

    /// A local cache hit whose layer was never written: its kept tree serves when the
    /// blob is needed, if it was hashed with this build's options. `false`: a miss.
    pub(crate) fn take_kept_hit(&self, record: &CacheRecord) -> bool {
        let dir = self.store.kept_layer_dir(&record.layer.digest);
        let same_options = std::fs::read(dir.join(OPTIONS_FILE))
            .is_ok_and(|tag| tag == self.options_tag().as_bytes());
        if !same_options {
            return false;
        }
        lock(&self.shared.deferred)
            .entry(record.layer.digest.clone())
            .or_insert_with(|| DeferredLayer {
                recorded: true,
                diff_id: record.diff_id.clone(),
                source: LayerSource::Kept(dir),
            });
        true
    }

    /// Writes the blobs of the deferred layers among `digests` (those not deferred are in
    /// the store already).
    pub(crate) fn write_deferred<'d>(
        &self,
        digests: impl IntoIterator<Item = &'d Digest>,
    ) -> Result<()> {
        // Held while writing: a stage needing the same layer waits for its blob.
        let mut deferred = lock(&self.shared.deferred);
        for digest in digests {
            if let Some(layer) = deferred.remove(digest) {
                self.write_deferred_layer(digest, layer)?;
            }
        }
        Ok(())
    }

    /// Writes every deferred layer whose changes are in `root`: something is about to
    /// change it.
    pub(crate) fn write_deferred_at(&self, root: &Path) -> Result<()> {
        let mut deferred = lock(&self.shared.deferred);
        let at_root: Vec<Digest> = deferred
            .iter()
            .filter(|(_, l)| matches!(&l.source, LayerSource::Build { root: r, .. } if r == root))
            .map(|(digest, _)| digest.clone())
            .collect();
        for digest in at_root {
            if let Some(layer) = deferred.remove(&digest) {
                self.write_deferred_layer(&digest, layer)?;
            }
        }
        Ok(())
    }

    /// The deferred layers whose changes were in `upper` have them in `rootfs` now (moved
    /// by `merge_upper`, which keeps every moved entry's metadata).
    pub(crate) fn deferred_moved(&self, upper: &Path, rootfs: &Path) {
        for layer in lock(&self.shared.deferred).values_mut() {
            if let LayerSource::Build { root, .. } = &mut layer.source {
                if root == upper {
                    *root = rootfs.to_path_buf();
                }
            }
        }
    }

    /// Drops the deferred layers whose changes were in `root`, which is gone: their blobs
    /// are missing (a build needing one fails naming it) and their records are misses.
    pub(crate) fn forget_deferred_at(&self, root: &Path) {
        lock(&self.shared.deferred)
            .retain(|_, l| !matches!(&l.source, LayerSource::Build { root: r, .. } if r == root));
    }

    /// Records a deferred layer's source for the step that made it.
    pub(crate) fn defer_layer(&self, digest: Digest, diff_id: Digest, source: LayerSource) {
        lock(&self.shared.deferred)
            .entry(digest)
            .or_insert(DeferredLayer {
                recorded: false,
                diff_id,
                source,
            });
    }

    /// Stores the cache record of a step whose layer is deferred as a record of a layer
    /// not written yet (the source is then kept at the build's end). `None` when the layer
    /// is not deferred (the caller records it as usual).
    pub(crate) fn record_deferred(&self, record: &CacheRecord) -> Option<rbuild_store::Result<()>> {
        let mut deferred = lock(&self.shared.deferred);
        let layer = deferred.get_mut(&record.layer.digest)?;
        layer.recorded = true;
        Some(self.store.cache_put_unwritten(record))
    }

    fn write_deferred_layer(&self, digest: &Digest, layer: DeferredLayer) -> Result<()> {
        let _t = crate::phases::Phase::Write.timer();
        // A damaged kept tree would fail every build hitting its step: `rbuild prune`
        // removes it (the step then runs again).
        let hint = match &layer.source {
            LayerSource::Kept(_) => " (`rbuild prune` removes the kept files)",
            LayerSource::Build { .. } => "",
        };
        let fail = |e: String| {
            BuildError::other(format!(
                "writing layer {digest} from the files its step left: {e}{hint}"
            ))
        };
        let (root, changes) = match &layer.source {
            LayerSource::Build { root, changes } => (root.clone(), changes.clone()),
            LayerSource::Kept(dir) => {
                let bytes = std::fs::read(dir.join(CHANGES_FILE))
                    .map_err(|e| fail(format!("reading {}: {e}", dir.display())))?;
                let changes = decode_changes(&bytes).ok_or_else(|| {
                    fail(format!(
                        "{} holds no change list",
                        dir.join(CHANGES_FILE).display()
                    ))
                })?;
                (dir.join("root"), changes)
            }
        };
        // The layer writer hashes what it writes: the store takes its digest.
        let mut writer = self
            .store
            .blob_writer_hashed_by_caller()
            .map_err(|e| fail(e.to_string()))?;
        let written = write_layer(&root, &changes, &mut writer, &self.plain_write_options())
            .map_err(|e| fail(e.to_string()))?;
        if written.diff_id != layer.diff_id || written.digest != *digest {
            return Err(fail(format!(
                "its files in {} changed since (diff id {} instead of {})",
                root.display(),
                written.diff_id,
                layer.diff_id
            )));
        }
        writer
            .commit(Some(digest))
            .map_err(|e| fail(e.to_string()))?;
        // The step's record already names this digest: with the blob there it is a plain
        // hit again (and its layer live for gc), nothing to record anew.
        self.store
            .mark_lazy_layer(&layer.diff_id)
            .map_err(|e| fail(e.to_string()))?;
        Ok(())
    }

    /// At the end of a build: keeps the source of every layer still not written in the
    /// store, so that its cache record stays a hit. A source that cannot be kept only
    /// costs the cache (its record reads as a miss): a warning. A build exporting its
    /// cache records writes every layer they name instead (a kept hit's included).
    pub(crate) fn finish_deferred(&self, progress: &mut dyn Progress) -> Result<()> {
        if !self.request.defer_unshipped_layers {
            let digests: Vec<Digest> = lock(&self.shared.deferred).keys().cloned().collect();
            return self.write_deferred(&digests);
        }
        let Some(trees) = &self.trees else {
            return Ok(());
        };
        let deferred = std::mem::take(&mut *lock(&self.shared.deferred));
        let options = self.options_tag();
        for (digest, layer) in deferred {
            let LayerSource::Build { root, changes } = &layer.source else {
                continue;
            };
            if !layer.recorded {
                continue;
            }
            let dest = self.store.kept_layer_dir(&digest);
            let extra: [(&str, &[u8]); 2] = [
                (CHANGES_FILE, &encode_changes(changes)),
                (OPTIONS_FILE, options.as_bytes()),
            ];
            if let Err(e) = trees.keep(root, &extra, &dest) {
                progress.event(&Event::Warning {
                    message: format!(
                        "keeping the files of layer {digest} for the build cache in {}: {e}",
                        dest.display()
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_list_reads_back_as_written_and_damage_is_refused() {
        let changes = vec![
            Change::Upsert("usr/bin/tool".into()),
            Change::Delete("etc/a b".into()),
            Change::OpaqueDir(PathBuf::from(OsStr::from_bytes(b"var/\xff"))),
        ];
        let bytes = encode_changes(&changes);
        assert_eq!(decode_changes(&bytes), Some(changes));
        assert_eq!(decode_changes(b""), Some(vec![]));
        assert_eq!(decode_changes(b"Uno-terminator"), None);
        assert_eq!(decode_changes(b"X/etc\0"), None);
        assert_eq!(decode_changes(b"U/etc/passwd\0"), None);
        assert_eq!(decode_changes(b"U\0"), None);
    }
}
