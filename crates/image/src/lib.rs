//! The image model: config (a Docker superset of OCI's), manifests and indexes, references,
//! digests, and canonical JSON so the same image always has the same digest.

pub mod digest;
pub mod reference;

pub use digest::Digest;
pub use reference::Reference;
