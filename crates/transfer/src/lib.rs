//! Moving images between the local store and registries.
//!
//! [`pull`] fetches a manifest (or an index: one platform, or all of them) and its blobs into
//! a [`Store`](rbuild_store::Store), verifying every digest; [`push`] sends an image or a
//! whole multi-platform index from the store to a registry: blobs first (in parallel, skipping
//! what the registry has, mounting from another repository of the same registry when the blob
//! came from there), then manifests, then the index. Every blob being pushed is leased in the
//! store for the life of the `Store`, so a concurrent `rbuild prune` cannot delete it mid-push.
//!
//! Both are plain `async fn`s over shared references, usable from any tokio runtime (the
//! registry client needs one); store writes are short blocking file operations done inline.
//! What happens is reported as [`Event`]s to a [`Progress`]; [`PlainProgress`] and
//! [`JsonProgress`] print them.

mod bases;
mod error;
mod progress;
mod pull;
mod push;
mod remote_blobs;
mod sources;

pub use bases::{BaseImageError, PullingBases};
pub use error::{Result, TransferError};
pub use progress::{
    human_size, plain_line, Event, JsonProgress, NoProgress, PlainProgress, Progress,
    RecordingProgress,
};
pub use pull::{pull, PlatformChoice, PullOptions};
pub use push::{push, PushOptions};
pub use remote_blobs::RegistryBlobFetcher;
pub use sources::{blob_sources, record_blob_source};

/// Blobs moved at once per image, unless the options say otherwise.
pub const DEFAULT_PARALLEL_BLOBS: usize = 4;
