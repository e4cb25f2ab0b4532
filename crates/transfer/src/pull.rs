//! Pull: a manifest, or an index (one platform or all), and its blobs into the store.

use futures_util::{StreamExt as _, TryStreamExt as _};
use rbuild_image::{media_types, Descriptor, Index, Manifest, Platform, Reference};
use rbuild_registry::{resolve_platform, Client, RawManifest, SyncWriter};
use rbuild_store::{ImageRecord, Store};

use crate::error::{Result, TransferError};
use crate::progress::{Event, Progress};
use crate::sources::record_blob_source;

/// Which manifests of an index to pull.
#[derive(Debug, Clone, PartialEq)]
pub enum PlatformChoice {
    /// The manifest for this platform; the store keeps that manifest alone.
    One(Platform),
    /// Every manifest (and its blobs); the store keeps the index, unchanged.
    All,
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub platforms: PlatformChoice,
    /// Blobs downloaded at once.
    pub parallel_blobs: usize,
    /// Tag the image in the store with the reference's name (when it has a tag).
    pub tag: bool,
    /// With `PlatformChoice::One`, refuse a single-platform image of another platform (as
    /// `docker pull --platform` does). Off by default: a build's FROM of a foreign image, or a
    /// pull without `--platform`, takes what the registry has.
    pub require_platform: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platforms: PlatformChoice::One(Platform::host()),
            parallel_blobs: crate::DEFAULT_PARALLEL_BLOBS,
            tag: true,
            require_platform: false,
        }
    }
}

/// Pulls `reference` into `store` and returns the stored image. Every blob and manifest is
/// verified against its digest before it is renamed into the store; nothing half-written is
/// left on error. Blobs the store already has are not downloaded (and are leased so a
/// concurrent gc keeps them until the manifest is indexed).
pub async fn pull(
    client: &Client,
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord> {
    let raw = client.get_manifest(reference).await?;
    progress.event(&Event::Resolved {
        reference: reference.to_string(),
        digest: raw.digest.clone(),
        media_type: raw.media_type.clone(),
    });
    let stored = if raw.is_index() {
        match &options.platforms {
            PlatformChoice::One(platform) => {
                let entry = resolve_platform(&raw, platform)?;
                let child = client
                    .get_manifest_by_digest(reference, &entry.digest)
                    .await?;
                pull_image(client, store, reference, &child, options, progress).await?
            }
            PlatformChoice::All => {
                pull_index(client, store, reference, &raw, options, progress).await?
            }
        }
    } else {
        if let (PlatformChoice::One(wanted), true) = (&options.platforms, options.require_platform)
        {
            check_platform(client, store, reference, &raw, wanted, progress).await?;
        }
        pull_image(client, store, reference, &raw, options, progress).await?
    };
    if options.tag && reference.tag().is_some() {
        // `name:tag@digest` tags the name; the digest only pinned what was fetched.
        let name = reference.name();
        let tag = reference.tag().unwrap_or("latest");
        store.tag(&format!("{name}:{tag}"), &stored)?;
    }
    progress.event(&Event::Pulled {
        reference: reference.to_string(),
        digest: stored.digest.clone(),
    });
    Ok(store.resolve(&stored.digest.to_string())?)
}

/// Every manifest of an index and their blobs, then the index itself, byte for byte.
async fn pull_index(
    client: &Client,
    store: &Store,
    reference: &Reference,
    raw: &RawManifest,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<Descriptor> {
    let index = Index::from_slice(&raw.bytes).map_err(|e| {
        TransferError::Invalid(format!(
            "index {} of {reference} is malformed: {e}",
            raw.digest
        ))
    })?;
    let mut children = Vec::with_capacity(index.manifests.len());
    for entry in &index.manifests {
        if media_types::is_index(&entry.media_type) {
            return Err(TransferError::Invalid(format!(
                "index {} of {reference} nests another index ({}); not supported",
                raw.digest, entry.digest
            )));
        }
        children.push(
            client
                .get_manifest_by_digest(reference, &entry.digest)
                .await?,
        );
    }
    let blobs = children
        .iter()
        .map(|child| parse_manifest(reference, child))
        .collect::<Result<Vec<_>>>()?;
    // Platforms usually share layers: fetch each blob once.
    let mut unique: Vec<Descriptor> = Vec::new();
    for manifest in &blobs {
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !unique.iter().any(|u| u.digest == blob.digest) {
                unique.push(blob.clone());
            }
        }
    }
    pull_blobs(client, store, reference, &unique, options, progress).await?;
    for child in &children {
        store.put_manifest_bytes(&child.bytes)?;
    }
    Ok(store.put_index_bytes(&raw.bytes)?)
}

/// One image manifest and its blobs.
async fn pull_image(
    client: &Client,
    store: &Store,
    reference: &Reference,
    raw: &RawManifest,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<Descriptor> {
    let manifest = parse_manifest(reference, raw)?;
    let blobs: Vec<Descriptor> = std::iter::once(&manifest.config)
        .chain(&manifest.layers)
        .cloned()
        .collect();
    pull_blobs(client, store, reference, &blobs, options, progress).await?;
    Ok(store.put_manifest_bytes(&raw.bytes)?)
}

/// Fetches the config of a single-platform image first and refuses it if its platform is not
/// `wanted`, before any layer is downloaded.
async fn check_platform(
    client: &Client,
    store: &Store,
    reference: &Reference,
    raw: &RawManifest,
    wanted: &Platform,
    progress: &dyn Progress,
) -> Result<()> {
    let manifest = parse_manifest(reference, raw)?;
    let only_config = PullOptions {
        parallel_blobs: 1,
        ..PullOptions::default()
    };
    pull_blobs(
        client,
        store,
        reference,
        std::slice::from_ref(&manifest.config),
        &only_config,
        progress,
    )
    .await?;
    let actual = store.read_config(&manifest.config.digest)?.platform();
    if !actual.matches(wanted) {
        return Err(TransferError::Invalid(format!(
            "{reference} was found but does not match the specified platform: wanted \
             {wanted}, actual: {actual}"
        )));
    }
    Ok(())
}

fn parse_manifest(reference: &Reference, raw: &RawManifest) -> Result<Manifest> {
    if !media_types::is_manifest(&raw.media_type) {
        return Err(TransferError::Invalid(format!(
            "{reference}: manifest {} has type {}, which is not an image manifest",
            raw.digest, raw.media_type
        )));
    }
    Manifest::from_slice(&raw.bytes).map_err(|e| {
        TransferError::Invalid(format!(
            "manifest {} of {reference} is malformed: {e}",
            raw.digest
        ))
    })
}

async fn pull_blobs(
    client: &Client,
    store: &Store,
    reference: &Reference,
    blobs: &[Descriptor],
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let (registry, repository) = (reference.registry(), reference.repository());
    futures_util::stream::iter(blobs)
        .map(|blob| async move {
            // Leased whether present or not: present blobs must survive until indexed.
            if store.protect(&blob.digest)? {
                progress.event(&Event::BlobInStore {
                    digest: blob.digest.clone(),
                    size: blob.size,
                });
                return Ok(());
            }
            progress.event(&Event::BlobPulling {
                digest: blob.digest.clone(),
                size: blob.size,
            });
            // `pull_blob` hashes every byte it writes and fails unless they hash to the
            // digest asked for: the store takes that digest without a second pass.
            let mut sink = SyncWriter(store.blob_writer_hashed_by_caller()?);
            client
                .pull_blob(registry, repository, &blob.digest, blob.size, &mut sink)
                .await?;
            sink.into_inner().commit(Some(&blob.digest))?;
            record_blob_source(store, &blob.digest, registry, repository)?;
            progress.event(&Event::BlobPulled {
                digest: blob.digest.clone(),
                size: blob.size,
            });
            Ok::<(), TransferError>(())
        })
        .buffer_unordered(options.parallel_blobs.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}
