//! The build's use of the walk snapshotter (`rbuild_snapshot::Index`): phase timing, and
//! walking as container root where this process cannot read every directory (rootless with
//! subordinate ids, other container users' private directories are closed to it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rbuild_layer::Change;
use rbuild_rootfs::ContainerRoot;
use rbuild_sandbox::Stub;
use rbuild_snapshot::Entries;

use crate::error::{BuildError, Result};

/// Metadata of every path under a root, taken before a step, and who walks the root again
/// after it (the build's container root, if it has one).
pub(crate) struct Index {
    before: rbuild_snapshot::Index,
    walker: Option<Arc<ContainerRoot>>,
}

impl Index {
    pub(crate) fn scan(owners: &crate::fsops::Owners, root: &Path) -> Result<Index> {
        let _t = crate::phases::Phase::Snapshot.timer();
        let walker = owners.container_root().cloned();
        let before = rbuild_snapshot::Index::from_entries(entries(walker.as_deref(), root)?);
        Ok(Index { before, walker })
    }

    /// The inode numbers of the regular files that had more than one name under the root
    /// (hard-link groups), sorted. Files with one link (nearly all) are passed over on
    /// their link count alone.
    pub(crate) fn hard_link_groups(&self) -> Vec<u64> {
        hard_link_groups_of(self.before.entries())
    }

    /// What changed between `self` (before) and the root's current state.
    pub(crate) fn changes(&self, root: &Path) -> Result<Vec<Change>> {
        let _t = crate::phases::Phase::Snapshot.timer();
        Ok(self
            .before
            .changes_to(&entries(self.walker.as_deref(), root)?))
    }
}

/// The inode numbers of the regular files with more than one name in `entries` (hard-link
/// groups), sorted: what a step copies up on write (`StepSpec::copy_up_inodes`). Files
/// with one link (nearly all) are passed over on their link count alone.
pub(crate) fn hard_link_groups_of(entries: &Entries) -> Vec<u64> {
    let mut names: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    for meta in entries.values() {
        if meta.nlink > 1 && meta.is_regular() {
            *names.entry(meta.ino).or_default() += 1;
        }
    }
    let mut groups: Vec<u64> = names
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(ino, _)| ino)
        .collect();
    groups.sort_unstable();
    groups
}

/// Every path's metadata under `root`, walked here or by container root.
fn entries(container_root: Option<&ContainerRoot>, root: &Path) -> Result<Entries> {
    match container_root {
        Some(container_root) => container_root
            .scan(root)
            .map_err(BuildError::container_root(format!(
                "scanning {}",
                root.display()
            ))),
        None => rbuild_snapshot::walk(root).map_err(BuildError::Snapshot),
    }
}

/// The changes an overlay step made (`rbuild_snapshot::overlay_changes`): as container
/// root where this process could not read them all, else here.
pub(crate) fn overlay_changes(
    owners: &crate::fsops::Owners,
    upper: &Path,
    lowers: &[PathBuf],
    stubs: &[Stub],
) -> Result<Vec<Change>> {
    match owners.container_root() {
        Some(root) => root
            .overlay_changes(upper, lowers, stubs)
            .map_err(BuildError::container_root("")),
        None => {
            rbuild_snapshot::overlay_changes(upper, lowers, stubs).map_err(BuildError::Snapshot)
        }
    }
}
