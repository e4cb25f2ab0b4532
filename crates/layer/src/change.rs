//! The change set a snapshotter hands to the layer writer.
//!
//! Both snapshotters (overlay upperdir and walk-and-compare) describe what a step changed
//! in these terms, so the layer writer does not care which one ran.

use std::path::PathBuf;

/// One change to a root filesystem, relative to its root (no leading `/`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// A path that was created or whose content or metadata changed. The layer writer reads
    /// its current state (file, dir, symlink, device, hardlink group, xattrs) from the source
    /// root it is given.
    Upsert(PathBuf),
    /// A path that was removed: written as a `.wh.NAME` whiteout.
    Delete(PathBuf),
    /// A directory whose earlier contents are all hidden (replaced wholesale): written as the
    /// directory itself followed by a `.wh..wh..opq` entry. Its new children come as
    /// separate `Upsert`s.
    OpaqueDir(PathBuf),
}

impl Change {
    /// The path this change is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Change::Upsert(p) | Change::Delete(p) | Change::OpaqueDir(p) => p,
        }
    }
}
