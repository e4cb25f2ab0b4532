//! Turning a step's change set into a layer blob in the store.

use std::path::Path;

use rbuild_image::{Descriptor, Digest};
use rbuild_layer::{write_layer, Change, WriteOptions};
use rbuild_store::Store;

use crate::fsops::Owners;

/// A layer that is now in the store.
pub(crate) struct CommittedLayer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
}

/// Writes the layer for `changes` under `root` into the store. The blob is renamed into
/// place only once complete and verified, so a failure leaves nothing behind.
pub(crate) fn commit_layer(
    store: &Store,
    root: &Path,
    changes: &[Change],
    options: &WriteOptions,
) -> Result<CommittedLayer, String> {
    let _t = crate::phases::Phase::Write.timer();
    let mut writer = store
        .blob_writer()
        .map_err(|e| format!("starting a layer blob: {e}"))?;
    // Rootless with subordinate ids, container root reads the files: the image's other
    // users may keep some private, and it sees their owners as the container's ids.
    let info = match crate::fsops::owners() {
        Owners::Mapped(container_root) => container_root
            .write_layer(root, changes, &mut writer, options)
            .map_err(|e| e.to_string()),
        _ => write_layer(root, changes, &mut writer, options).map_err(|e| e.to_string()),
    }
    .map_err(|e| format!("writing the layer: {e}"))?;
    let blob = writer
        .commit(Some(&info.digest))
        .map_err(|e| format!("storing the layer: {e}"))?;
    Ok(CommittedLayer {
        descriptor: Descriptor::new(info.media_type, blob.digest, blob.size),
        diff_id: info.diff_id,
    })
}
