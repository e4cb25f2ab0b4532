//! The image model: config (a Docker superset of OCI's), manifests and indexes, references,
//! digests, and canonical JSON so the same image always has the same digest.
//!
//! Own types rather than oci-spec's: oci-spec drops Docker's `Shell`, `OnBuild`, `Healthcheck`
//! and `ArgsEscaped`, has no catch-all for unknown fields and serialises `HashMap`s, so digests
//! would change from run to run (see docs/store.md).

pub mod canonical;
pub mod config;
pub mod digest;
pub mod manifest;
pub mod media_types;
pub mod platform;
pub mod reference;

pub use config::{ContainerConfig, Healthcheck, History, ImageConfig, RootFs};
pub use digest::{Digest, Hasher};
pub use manifest::{Descriptor, Index, Manifest};
pub use platform::Platform;
pub use reference::Reference;
