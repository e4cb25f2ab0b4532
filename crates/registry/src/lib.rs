//! A Docker Registry v2 / OCI distribution client: auth, pull, push, mounts, retries.
//!
//! Our own thin client on reqwest rather than oci-client: see docs/registry.md for why.
//! [`Client`] is `Clone + Send + Sync`; clones share connections and the token cache, so
//! callers run as many operations at once as they like.

pub mod auth;
mod blob;
mod body;
mod client;
pub mod error;
mod login;
pub mod manifest;
mod sync_writer;
pub mod transport;

pub use auth::credentials::{Credential, DockerConfig};
pub use blob::PushOutcome;
pub use body::{MAX_ERROR_BODY_BYTES, MAX_MANIFEST_BYTES, MAX_TOKEN_BYTES};
pub use client::{Client, ClientOptions};
pub use error::{ErrorKind, RegistryError, Result};
pub use manifest::{resolve_platform, RawManifest};
pub use rbuild_image::Platform;
pub use sync_writer::SyncWriter;
pub use transport::RetryPolicy;
