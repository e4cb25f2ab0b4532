//! Layer tarballs: applying layers onto a directory safely, and writing deterministic
//! compressed layers from a change set.
//!
//! - [`apply_layer`] extracts a (gzip/zstd/plain) layer with OCI whiteout semantics, never
//!   writing outside the target.
//! - [`write_layer`] / [`write_dir_layer`] write a deterministic layer and return its diff id,
//!   digest and size, computed in the same single pass.
//! - [`list_entries`] reads a layer's entry metadata.
//! - [`link_tree`] makes a private view of an extracted tree out of hard links.

pub mod apply;
pub mod change;
pub mod compression;
pub mod entry;
pub mod error;
/// The id maps, re-exported: they live in `rbuild-idmap`, shared with the sandbox.
pub use rbuild_idmap as idmap;
pub mod list;
mod path;
pub use path::sorted_dir_entries;
pub mod tree;
pub mod write;

pub use apply::{
    apply_layer, ApplyOptions, ApplyStats, DeviceNodes, Ownership, TarBounds,
    MAX_SPECIAL_ENTRY_BYTES,
};
pub use change::Change;
pub use compression::Compression;
pub use entry::{EntryInfo, EntryKind};
pub use error::{Error, Result};
pub use list::list_entries;
pub use rbuild_idmap::{IdMap, IdRange};
pub use tree::{link_tree, LinkStats};
pub use write::{
    compress_layer, compress_time, write_dir_layer, write_layer, write_layer_with_times, LayerInfo,
    PreciseMtime, RecordedDevice, RecordedDeviceKind, RecordedInodes, WriteOptions,
};
