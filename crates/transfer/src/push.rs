//! Push: an image or a whole index from the store to a registry.

use std::collections::HashSet;

use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use rbuild_image::{media_types, Descriptor, Digest, Index, Manifest, Reference};
use rbuild_registry::{Client, PushOutcome};
use rbuild_store::Store;

use crate::error::{Result, TransferError};
use crate::progress::{Event, Progress};
use crate::sources::{mount_source, record_blob_source};

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Blobs uploaded at once.
    pub parallel_blobs: usize,
    /// Ask the registry to mount blobs from another repository they came from.
    pub cross_repository_mount: bool,
    /// How the plain layers a build made are compressed on the way out (a local image
    /// keeps them plain: `Store::shipped_manifest`). gzip by default.
    pub layers: rbuild_layer::WriteOptions,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            parallel_blobs: crate::DEFAULT_PARALLEL_BLOBS,
            cross_repository_mount: true,
            layers: rbuild_layer::WriteOptions::default(),
        }
    }
}

/// A manifest read from the store, ready to send.
struct StoredManifest {
    descriptor: Descriptor,
    bytes: Bytes,
    manifest: Manifest,
}

/// Pushes `source` (a manifest or an index descriptor from the store, e.g.
/// `ImageRecord::manifest`) to `destination` (a tag, or a digest equal to the source's) and
/// returns the digest the destination now points to. An index is pushed whole: every
/// platform's blobs and manifest, then the index, each byte for byte, so every digest is
/// unchanged — except that plain layers a build made are compressed first (a local image
/// keeps them plain), which gives the manifest a build compressing as it wrote would have. Blobs are leased in the store first, so gc cannot delete them mid-push.
pub async fn push(
    client: &Client,
    store: &Store,
    source: &Descriptor,
    destination: &Reference,
    options: &PushOptions,
    progress: &dyn Progress,
) -> Result<Digest> {
    // Lazy layers are compressed (once: the store remembers) and uploaded as each is ready;
    // the manifest that leaves the machine is assembled after (compressing nothing more).
    let (early, _compressing_store) =
        push_compressed_layers(client, store, source, destination, options, progress).await?;
    let shipped = store.shipped_manifest(source, &options.layers)?;
    let source = &shipped;
    let source_bytes = Bytes::from(read_protected(store, &source.digest)?);
    let (manifests, index) = if media_types::is_index(&source.media_type) {
        let index = Index::from_slice(&source_bytes).map_err(|e| {
            TransferError::Invalid(format!(
                "index {} in the store is malformed: {e}",
                source.digest
            ))
        })?;
        let mut manifests = Vec::with_capacity(index.manifests.len());
        for entry in &index.manifests {
            if !media_types::is_manifest(&entry.media_type) {
                return Err(TransferError::Invalid(format!(
                    "index {} lists {} of type {}; only image manifests can be pushed",
                    source.digest, entry.digest, entry.media_type
                )));
            }
            manifests.push(read_manifest(store, entry)?);
        }
        (manifests, Some(source_bytes))
    } else {
        (vec![read_manifest(store, source)?], None)
    };

    // Each blob once, even when platforms share layers.
    let mut blobs: Vec<&Descriptor> = Vec::new();
    for stored in &manifests {
        for blob in std::iter::once(&stored.manifest.config).chain(&stored.manifest.layers) {
            if !blobs.iter().any(|b| b.digest == blob.digest) {
                blobs.push(blob);
            }
        }
    }
    blobs.retain(|b| !early.contains(&b.digest));
    for blob in &blobs {
        if !store.protect(&blob.digest)? {
            return Err(TransferError::Invalid(format!(
                "cannot push {destination}: blob {} ({}) is missing from the store (run `rbuild fsck`)",
                blob.digest, blob.media_type
            )));
        }
    }
    futures_util::stream::iter(blobs)
        .map(|blob| push_blob(client, store, destination, blob, options, progress))
        .buffer_unordered(options.parallel_blobs.max(1))
        .try_collect::<Vec<()>>()
        .await?;

    let media_type = |d: &Descriptor, fallback: &str| {
        if d.media_type.is_empty() {
            fallback.to_string()
        } else {
            d.media_type.clone()
        }
    };
    let top = match index {
        Some(bytes) => {
            // The platforms' manifests go up by digest, then the index under the tag.
            for stored in &manifests {
                let by_digest = destination.with_digest(stored.descriptor.digest.clone());
                let digest = push_manifest(
                    client,
                    &by_digest,
                    stored.bytes.clone(),
                    &media_type(&stored.descriptor, media_types::OCI_MANIFEST),
                    progress,
                )
                .await?;
                check_digest(&stored.descriptor.digest, &digest)?;
            }
            push_manifest(
                client,
                destination,
                bytes,
                &media_type(source, media_types::OCI_INDEX),
                progress,
            )
            .await?
        }
        None => {
            let stored = &manifests[0];
            push_manifest(
                client,
                destination,
                stored.bytes.clone(),
                &media_type(&stored.descriptor, media_types::OCI_MANIFEST),
                progress,
            )
            .await?
        }
    };
    check_digest(&source.digest, &top)?;
    progress.event(&Event::Pushed {
        reference: destination.to_string(),
        digest: top.clone(),
    });
    Ok(top)
}

/// Compresses the lazy plain layers of `source` (`Store::ship_layer`) on a thread of its
/// own, one after the other (gzip on every core), and uploads each blob as soon as it is
/// ready, so that uploads overlap the compression of the layers after them. Returns the
/// digests pushed, and the store handle the thread compressed with: its leases keep the
/// new blobs from gc until the caller is done. Nothing happens when no layer needs
/// compressing (the caller pushes every blob as it is).
async fn push_compressed_layers(
    client: &Client,
    store: &Store,
    source: &Descriptor,
    destination: &Reference,
    options: &PushOptions,
    progress: &dyn Progress,
) -> Result<(HashSet<Digest>, Option<Store>)> {
    let layers = store.layers_with_diff_ids(source)?;
    let compress = options.layers.compression != rbuild_layer::Compression::None
        && layers.iter().any(|(layer, diff_id)| {
            rbuild_store::is_plain_layer(&layer.media_type) && store.is_lazy_layer(diff_id)
        });
    if !compress {
        return Ok((HashSet::new(), None));
    }
    // A handle of its own: the thread outlives no borrow of the caller's.
    let worker_store = Store::open(store.root())?;
    let write_options = options.layers.clone();
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let worker = std::thread::spawn(move || {
        for (layer, diff_id) in layers {
            let shipped = worker_store.ship_layer(&layer, &diff_id, &write_options);
            let failed = shipped.is_err();
            // A closed channel: the uploads failed, nothing more is wanted.
            if sender.send(shipped).is_err() || failed {
                break;
            }
        }
        worker_store
    });
    let ready = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|shipped| (shipped, receiver))
    });
    let pushed = ready
        .map(|shipped| async move {
            let blob = shipped?;
            if !store.protect(&blob.digest)? {
                return Err(TransferError::Invalid(format!(
                    "cannot push {destination}: blob {} is missing from the store",
                    blob.digest
                )));
            }
            push_blob(client, store, destination, &blob, options, progress).await?;
            Ok(blob.digest)
        })
        .buffer_unordered(options.parallel_blobs.max(1))
        .try_collect::<HashSet<Digest>>()
        .await;
    // On success the channel is closed, so the thread has ended; after a failure it ends
    // when its current layer is done, on its own.
    let pushed = pushed?;
    let worker_store = worker
        .join()
        .map_err(|_| TransferError::Invalid("the layer-compressing thread panicked".into()))?;
    Ok((pushed, Some(worker_store)))
}

fn check_digest(expected: &Digest, got: &Digest) -> Result<()> {
    if expected != got {
        return Err(TransferError::Invalid(format!(
            "pushed manifest hashes to {got}, not {expected} as stored"
        )));
    }
    Ok(())
}

/// Leases a blob, then reads and verifies it.
fn read_protected(store: &Store, digest: &Digest) -> Result<Vec<u8>> {
    store.protect(digest)?;
    Ok(store.read_blob(digest)?)
}

fn read_manifest(store: &Store, descriptor: &Descriptor) -> Result<StoredManifest> {
    let bytes = read_protected(store, &descriptor.digest)?;
    let manifest = Manifest::from_slice(&bytes).map_err(|e| {
        TransferError::Invalid(format!(
            "manifest {} in the store is malformed: {e}",
            descriptor.digest
        ))
    })?;
    Ok(StoredManifest {
        descriptor: descriptor.clone(),
        bytes: Bytes::from(bytes),
        manifest,
    })
}

async fn push_manifest(
    client: &Client,
    reference: &Reference,
    bytes: Bytes,
    media_type: &str,
    progress: &dyn Progress,
) -> Result<Digest> {
    let digest = client.push_manifest(reference, bytes, media_type).await?;
    progress.event(&Event::ManifestPushed {
        reference: reference.to_string(),
        digest: digest.clone(),
        media_type: media_type.to_string(),
    });
    Ok(digest)
}

/// One blob: skipped if the registry has it, mounted if it came from another repository of
/// the same registry (and `options.cross_repository_mount`), else uploaded from its file in
/// the store. A layer still in its registry (a registry-cache hit, `rbuild_store::RemoteBlob`,
/// whose repository is recorded as its source) is read — fetched — only when it must be
/// uploaded.
async fn push_blob(
    client: &Client,
    store: &Store,
    destination: &Reference,
    blob: &Descriptor,
    options: &PushOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let (registry, repository) = (destination.registry(), destination.repository());
    let (digest, size) = (blob.digest.clone(), blob.size);
    let from = options
        .cross_repository_mount
        .then(|| mount_source(store, &blob.digest, registry, repository))
        .flatten();
    let on_disk = store.has_blob(&digest);
    let event = match from {
        // On disk: one request asks for the mount and opens the upload it falls back to.
        Some(from) if on_disk => {
            let path = store.blob_file(&digest)?;
            match client
                .mount_or_push_blob(registry, repository, &from, &path, &digest, size)
                .await?
            {
                PushOutcome::AlreadyExists => Event::BlobExists { digest, size },
                PushOutcome::Mounted => Event::BlobMounted { digest, size, from },
                PushOutcome::Uploaded => Event::BlobPushed { digest, size },
            }
        }
        // Remote: the mount is tried before anything reads (fetches) the blob.
        Some(from) => {
            if client.blob_exists(registry, repository, &digest).await? {
                Event::BlobExists { digest, size }
            } else if client
                .mount_blob(registry, repository, &from, &digest)
                .await?
            {
                Event::BlobMounted { digest, size, from }
            } else {
                upload(client, store, registry, repository, blob, progress).await?
            }
        }
        None => {
            if client.blob_exists(registry, repository, &digest).await? {
                Event::BlobExists { digest, size }
            } else {
                upload(client, store, registry, repository, blob, progress).await?
            }
        }
    };
    progress.event(&event);
    record_blob_source(store, &blob.digest, registry, repository)?;
    Ok(())
}

/// Uploads a blob from its file in the store (a remote blob is fetched first: `blob_file`).
async fn upload(
    client: &Client,
    store: &Store,
    registry: &str,
    repository: &str,
    blob: &Descriptor,
    progress: &dyn Progress,
) -> Result<Event> {
    let (digest, size) = (blob.digest.clone(), blob.size);
    let path = store.blob_file(&digest)?;
    progress.event(&Event::BlobPushing {
        digest: digest.clone(),
        size,
    });
    client
        .push_blob_from_file(registry, repository, &path, &digest, size)
        .await?;
    Ok(Event::BlobPushed { digest, size })
}
