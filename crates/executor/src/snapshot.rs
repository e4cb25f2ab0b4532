//! The build's use of the walk snapshotter (`rbuild_snapshot::Index`): phase timing, and
//! walking as container root where this process cannot read every directory (rootless with
//! subordinate ids, other container users' private directories are closed to it).

use std::path::{Path, PathBuf};

use rbuild_layer::Change;
use rbuild_sandbox::Stub;
use rbuild_snapshot::Entries;

/// Metadata of every path under a root, taken before a step.
pub(crate) struct Index(rbuild_snapshot::Index);

impl Index {
    pub(crate) fn scan(root: &Path) -> Result<Index, String> {
        let _t = crate::phases::Phase::Snapshot.timer();
        Ok(Index(rbuild_snapshot::Index::from_entries(entries(root)?)))
    }

    /// What changed between `self` (before) and the root's current state.
    pub(crate) fn changes(&self, root: &Path) -> Result<Vec<Change>, String> {
        let _t = crate::phases::Phase::Snapshot.timer();
        Ok(self.0.changes_to(&entries(root)?))
    }
}

/// Every path's metadata under `root`, walked here or by container root.
fn entries(root: &Path) -> Result<Entries, String> {
    match crate::fsops::container_root() {
        Some(container_root) => container_root
            .scan(root)
            .map_err(|e| format!("scanning {}: {e}", root.display())),
        None => rbuild_snapshot::walk(root).map_err(|e| e.to_string()),
    }
}

/// The changes an overlay step made (`rbuild_snapshot::overlay_changes`): as container
/// root where this process could not read them all, else here.
pub(crate) fn overlay_changes(
    upper: &Path,
    lowers: &[PathBuf],
    stubs: &[Stub],
) -> Result<Vec<Change>, String> {
    match crate::fsops::container_root() {
        Some(root) => root
            .overlay_changes(upper, lowers, stubs)
            .map_err(|e| e.to_string()),
        None => rbuild_snapshot::overlay_changes(upper, lowers, stubs).map_err(|e| e.to_string()),
    }
}
