//! Layer tarballs: applying layers onto a directory safely, and writing deterministic
//! compressed layers from a change set.

pub mod change;

pub use change::Change;
