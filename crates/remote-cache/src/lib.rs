//! The step cache shared through a registry (`--cache-to`, `--cache-from`, Kaniko's
//! `--cache-repo`): one cache manifest per ref maps step keys to layers, so a build reads
//! it once and then pulls only the layers of its hits. With `mounts=true` the contents of
//! `RUN --mount=type=cache` directories travel too. Format, merge protocol and what is
//! verified: `docs/cache.md`, "Shared through a registry".
//!
//! - [`spec`]: the command-line spellings.
//! - [`format`]: the cache manifest and its config, encoded and checked.
//! - [`RegistryCache`]: `--cache-from`, the executor's [`rbuild_executor::RemoteCache`].
//! - [`export()`]: `--cache-to`, merging with what the ref holds.

mod export;
pub mod format;
mod import;
pub mod spec;

pub use export::{export, export_on_day, ExportInput, ExportReport, MAX_ATTEMPTS};
pub use format::{CacheIndex, MountLayer, CACHE_CONFIG_MEDIA_TYPE};
pub use import::{ImportEvent, MountRestore, RegistryCache};
pub use spec::{
    cache_repo_target, parse_cache_from, parse_cache_to, CacheTarget, Mode, DEFAULT_CACHE_TAG,
};
