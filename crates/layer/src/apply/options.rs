//! Options and statistics of [`apply_layer`](crate::apply_layer).

use crate::idmap::IdMap;

/// What to do with the owners recorded in the layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Ownership {
    /// chown to the recorded uid/gid (needs root or CAP_CHOWN).
    #[default]
    Preserve,
    /// chown to the host ids the map gives (rootless extraction for a user namespace).
    Map(IdMap),
    /// Leave everything owned by the extracting user.
    Ignore,
}

/// What to do with character/block device entries when `mknod` is not permitted
/// (unprivileged, or inside a user namespace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceNodes {
    /// Skip them, counting each in [`ApplyStats::skipped_devices`] with a warning.
    #[default]
    SkipIfNotPermitted,
    /// Fail the whole apply.
    Require,
}

/// How [`apply_layer`](crate::apply_layer) treats owners and privileged entries.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    pub ownership: Ownership,
    pub device_nodes: DeviceNodes,
}

/// What an apply did. `warnings` explains every skipped device or xattr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Tar entries read (including whiteouts).
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Device nodes and fifos created.
    pub special_files: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    pub skipped_devices: u64,
    pub skipped_xattrs: u64,
    pub warnings: Vec<String>,
}

/// At most this many warnings are kept as text; the counters keep counting.
pub(crate) const MAX_WARNINGS: usize = 100;

impl ApplyStats {
    pub(crate) fn warn(&mut self, message: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(message);
        }
    }
}
