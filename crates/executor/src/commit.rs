//! Turning a step's change set into a layer blob in the store.

use std::path::Path;

use rbuild_image::{Descriptor, Digest};
use rbuild_layer::{write_layer, write_layer_with_times, Change, Compression, WriteOptions};
use rbuild_store::Store;

use crate::context::BuildContext;
use crate::fsops::Owners;
use crate::snapshot::Index;
use crate::state::StageState;

/// Why a step's change set could not be stored as a layer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    /// The before/after comparison of the rootfs failed.
    #[error("{0}")]
    Snapshot(#[source] Box<crate::error::BuildError>),
    #[error("starting a layer blob: {0}")]
    Start(#[source] rbuild_store::StoreError),
    #[error("writing the layer: {0}")]
    Write(#[from] rbuild_layer::Error),
    /// Written by container root's worker.
    #[error("writing the layer: {0}")]
    WriteAsRoot(#[source] rbuild_rootfs::RootfsError),
    #[error("storing the layer: {0}")]
    Store(#[source] rbuild_store::StoreError),
}

/// A layer that is now in the store.
pub(crate) struct CommittedLayer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
    /// The written entries' times with a fraction of a second, when this process may set
    /// times (`precise_times.rs`); empty otherwise.
    pub times: Vec<rbuild_layer::PreciseMtime>,
}

/// Writes the layer for `changes` under `root` into the store. The blob is renamed into
/// place only once complete and verified, so a failure leaves nothing behind.
pub(crate) fn commit_layer(
    store: &Store,
    owners: &Owners,
    root: &Path,
    changes: &[Change],
    options: &WriteOptions,
    ships: bool,
    keep_times: bool,
) -> Result<CommittedLayer, CommitError> {
    let _t = crate::phases::Phase::Write.timer();
    // Restricted isolation: owners and device nodes come from the build's table.
    let with_recorded;
    let options = match owners {
        Owners::Recorded(in_place) => {
            with_recorded = WriteOptions {
                recorded: Some(std::sync::Arc::new(in_place.recorded_inodes())),
                ..options.clone()
            };
            &with_recorded
        }
        _ => options,
    };
    // Lazy layers: a layer that may never leave the machine is stored plain (its digest is
    // its diff id, one hashing pass) and compressed only if it does (`Store::ship_layer`):
    // a discarded stage's layers are never compressed. A layer known to ship (the target
    // stage's) is compressed in the same pass as it is written, as before: storing it plain
    // first and compressing it afterwards wrote and read it once more (measured on a 1 GB
    // layer: 5.7 s more, with no later step for the compression to overlap).
    let lazy = !ships && options.compression != Compression::None;
    let plain = WriteOptions {
        compression: Compression::None,
        level: None,
        ..options.clone()
    };
    let options = if lazy { &plain } else { options };
    // The layer writer hashes what it writes (its digest names the blob), so the store
    // does not hash it again; a layer written by container root's worker, in another
    // process, is hashed here as it arrives.
    let writer = match owners {
        Owners::Mapped(_) => store.blob_writer(),
        _ => store.blob_writer_hashed_by_caller(),
    };
    let mut writer = writer.map_err(CommitError::Start)?;
    // Rootless with subordinate ids, container root reads the files: the image's other
    // users may keep some private, and it sees their owners as the container's ids.
    let (info, times) = match owners {
        Owners::Mapped(container_root) => (
            container_root
                .write_layer(root, changes, &mut writer, options)
                .map_err(CommitError::WriteAsRoot)?,
            Vec::new(),
        ),
        // The writer's own reading of each entry gives the times (no second walk).
        _ if keep_times => write_layer_with_times(root, changes, &mut writer, options)?,
        _ => (
            write_layer(root, changes, &mut writer, options)?,
            Vec::new(),
        ),
    };
    let blob = writer
        .commit(Some(&info.digest))
        .map_err(CommitError::Store)?;
    if lazy {
        store
            .mark_lazy_layer(&info.diff_id)
            .map_err(CommitError::Store)?;
    }
    Ok(CommittedLayer {
        descriptor: Descriptor::new(info.media_type, blob.digest, blob.size),
        diff_id: info.diff_id,
        times,
    })
}

impl BuildContext<'_> {
    /// Whether this build keeps the times its steps leave (`precise_times.rs`).
    fn keeps_precise_times(&self) -> bool {
        crate::precise_times::keeps_times(&self.owners, self.df.stages.len())
    }

    /// Stores what changed since `before` as the stage's next layer; returns its size.
    pub(crate) fn commit(&self, st: &mut StageState, before: &Index) -> Result<u64, CommitError> {
        let changes = before
            .changes(&st.rootfs)
            .map_err(|e| CommitError::Snapshot(Box::new(e)))?;
        let rootfs = st.rootfs.clone();
        self.commit_changes(st, &rootfs, &changes)
    }

    /// Stores `changes` (read from `source_root`) as the stage's next layer; returns its
    /// size.
    pub(crate) fn commit_changes(
        &self,
        st: &mut StageState,
        source_root: &std::path::Path,
        changes: &[rbuild_layer::Change],
    ) -> Result<u64, CommitError> {
        let ships = st.index == self.target_stage && self.request.target_ships;
        let layer = commit_layer(
            self.store,
            &self.owners,
            source_root,
            changes,
            &self.write_options,
            ships,
            self.keeps_precise_times(),
        )?;
        Ok(self.add_layer(st, changes, layer))
    }

    /// Stores an overlay step's `changes` (read from its upper directory `upper`) as the
    /// stage's next layer; in a stage no image is made of, only hashes the layer and
    /// leaves its blob to be written when something needs it (`deferred.rs`). Returns its
    /// size.
    pub(crate) fn commit_overlay_changes(
        &self,
        st: &mut StageState,
        upper: &Path,
        changes: &[Change],
    ) -> Result<u64, CommitError> {
        if !self.may_defer_layer(st) {
            return self.commit_changes(st, upper, changes);
        }
        let (info, times) = {
            let _t = crate::phases::Phase::Write.timer();
            let options = self.plain_write_options();
            if self.keeps_precise_times() {
                write_layer_with_times(upper, changes, std::io::sink(), &options)?
            } else {
                (
                    write_layer(upper, changes, std::io::sink(), &options)?,
                    Vec::new(),
                )
            }
        };
        // The same layer stored already (by another build): nothing to defer.
        if !self
            .store
            .protect(&info.digest)
            .map_err(CommitError::Store)?
        {
            self.defer_layer(
                info.digest.clone(),
                info.diff_id.clone(),
                crate::deferred::LayerSource::Build {
                    root: upper.to_path_buf(),
                    changes: changes.to_vec(),
                },
            );
        }
        let layer = CommittedLayer {
            descriptor: Descriptor::new(info.media_type, info.digest, info.size),
            diff_id: info.diff_id,
            times,
        };
        Ok(self.add_layer(st, changes, layer))
    }

    /// Adds `layer`, made of `changes`, to the stage; returns its size.
    fn add_layer(&self, st: &mut StageState, changes: &[Change], layer: CommittedLayer) -> u64 {
        crate::context::lock(&self.shared.made_here).insert(layer.descriptor.digest.clone());
        if self.keeps_precise_times() {
            let times = crate::precise_times::PreciseTimes::from_written(layer.times, changes);
            if !times.is_empty() {
                // The same layer made twice: either step's times are the step's.
                crate::context::lock(&self.shared.precise_times)
                    .entry(layer.descriptor.digest.clone())
                    .or_insert_with(|| std::sync::Arc::new(times));
            }
        }
        let size = layer.descriptor.size;
        st.layers.push(layer.descriptor);
        st.config.rootfs.diff_ids.push(layer.diff_id);
        size
    }
}

impl BuildContext<'_> {
    /// The blobs the image's manifest lists for `layers` (diff ids `diff_ids`): each lazy
    /// layer a step made is compressed with the build's compression (once: the store
    /// remembers it), everything else stays as it is. The manifest is thus the one a build
    /// compressing every layer as it was written would give.
    pub(crate) fn ship_layers(
        &self,
        layers: &[Descriptor],
        diff_ids: &[Digest],
    ) -> crate::error::Result<Vec<Descriptor>> {
        if layers.len() != diff_ids.len() {
            return Err(crate::error::BuildError::other(format!(
                "the image has {} layers but {} diff ids",
                layers.len(),
                diff_ids.len()
            )));
        }
        // No write timer here: most often nothing is left to compress, and the compression
        // a shipped plain layer needs is counted in the compress phase.
        layers
            .iter()
            .zip(diff_ids)
            .map(|(layer, diff_id)| {
                self.store
                    .ship_layer(layer, diff_id, &self.write_options)
                    .map_err(crate::error::BuildError::store(format!(
                        "compressing layer {diff_id} for the image"
                    )))
            })
            .collect()
    }
}
