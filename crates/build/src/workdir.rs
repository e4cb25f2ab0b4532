//! Per-build scratch space: one directory under the store's `build` state directory, holding
//! every stage's root filesystem, removed when the build ends (success or error).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rbuild_image::Descriptor;
use rbuild_layer::{apply_layer, ApplyOptions, Ownership};
use rbuild_store::Store;

use crate::error::{io_msg, BuildError, Result};
use crate::fsops::Owners;

/// The build's scratch directory; removed on drop.
pub(crate) struct BuildDir {
    path: PathBuf,
    counter: u64,
    /// Rootless with subordinate ids, rootfs files belong to ids the user cannot remove:
    /// container root removes them.
    owners: Owners,
}

impl BuildDir {
    pub(crate) fn create(store: &Store) -> Result<BuildDir> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let parent = store
            .state_dir("build")
            .map_err(|e| BuildError::other(format!("creating the build state directory: {e}")))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            nanos
        );
        let path = parent.join(name);
        std::fs::create_dir(&path)
            .map_err(|e| BuildError::other(io_msg("creating build directory", &path, &e)))?;
        Ok(BuildDir {
            path,
            counter: 0,
            owners: crate::fsops::owners(),
        })
    }

    /// A new empty directory inside the build directory (`<label>-<n>`).
    pub(crate) fn new_dir(&mut self, label: &str) -> Result<PathBuf> {
        self.counter += 1;
        let path = self.path.join(format!("{label}-{}", self.counter));
        std::fs::create_dir(&path)
            .map_err(|e| BuildError::other(io_msg("creating directory", &path, &e)))?;
        Ok(path)
    }
}

impl Drop for BuildDir {
    fn drop(&mut self) {
        // remove_dir_all never follows symlinks, so a rootfs cannot make this escape.
        if let Owners::Mapped(root) = &self.owners {
            let _ = root.remove_all(&self.path);
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// How this process extracts layers itself (ADD's local archives, and every layer when no
/// container-root helper is in use). As root, owners are preserved. Rootless, chown is not
/// permitted, so files stay owned by the user, who is container root in the sandbox's
/// user namespace (and the layer writer records the user's ids as 0:0).
pub(crate) fn layer_apply_options() -> ApplyOptions {
    if crate::fsops::running_as_root() {
        ApplyOptions::default()
    } else {
        ApplyOptions {
            ownership: Ownership::Ignore,
            ..ApplyOptions::default()
        }
    }
}

/// Applies `layers` (bottom first) from the store onto `dir`. Rootless with subordinate
/// ids, container root in the build's user namespace extracts them, so the image's owners
/// (and setuid bits, which a chown would clear) survive as the mapped host ids.
pub(crate) fn apply_layers(store: &Store, layers: &[Descriptor], dir: &Path) -> Result<()> {
    let owners = crate::fsops::owners();
    let options = layer_apply_options();
    for layer in layers {
        let blob = store
            .open_blob(&layer.digest)
            .map_err(|e| BuildError::other(format!("opening layer {}: {e}", layer.digest)))?;
        let applied = match &owners {
            Owners::Mapped(root) => root.apply_layer(&blob, dir),
            _ => apply_layer(std::io::BufReader::new(blob), dir, &options)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        applied.map_err(|e| {
            BuildError::other(format!(
                "applying layer {} onto {}: {e}",
                layer.digest,
                dir.display()
            ))
        })?;
    }
    Ok(())
}
