//! What a step changed in a root filesystem, as a list of [`Change`]s for the layer writer.
//!
//! - [`overlay`]: the step wrote into an overlay upperdir (mounted by the sandbox helper);
//!   the upperdir is converted (whiteouts → `Delete`, opaque dirs → `OpaqueDir`).
//! - [`walk`]: the step ran on a private copy, compared with an index taken before.
//!
//! Both remove the sandbox's mountpoint stubs first and return the same normalised form
//! ([`normalize::normalize`]), so the same step gives the same list.

pub mod copy;
pub mod meta;
pub mod normalize;
pub mod overlay;
pub mod walk;

pub use meta::is_overlay_private_xattr;
pub use overlay::{merge_upper, overlay_changes, OverlayDirs};
pub use rbuild_layer::Change;
pub use walk::{index_tree, MetadataIndex, WalkSnapshot};
