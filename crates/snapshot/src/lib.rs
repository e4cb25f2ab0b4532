//! What a step changed in a root filesystem, as a list of [`Change`]s for the layer writer.
//!
//! - [`overlay`]: the step wrote into an overlay upperdir (mounted by the sandbox helper);
//!   the upperdir is converted (whiteouts → `Delete`; a directory replacing a lower one →
//!   a `Delete` per entry of the lower one it lacks).
//! - [`walk`]: the step wrote into the root itself, compared with an [`Index`] taken before
//!   (the executor's snapshotter for chroot steps, COPY and WORKDIR; its rules decide image
//!   digests, see the module doc).
//!
//! The overlay conversion returns the normalised form of [`normalize::normalize`]; the walk
//! lists exactly the paths whose metadata changed (see [`walk`]).

mod copy;
pub mod meta;
pub mod normalize;
pub mod overlay;
pub mod replica;
pub mod walk;

pub use meta::is_overlay_private_xattr;
pub use overlay::{merge_upper, overlay_changes, OverlayDirs};
pub use rbuild_layer::Change;
pub use replica::replicate;
pub use walk::{decode_entries, encode_entries, walk, Entries, Index, Meta};
