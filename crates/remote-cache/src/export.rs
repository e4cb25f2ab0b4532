//! `--cache-to`: the build's cache records (and cache mounts) pushed to a registry as one
//! cache manifest, merged with what the ref already holds.
//!
//! Merge protocol (registries have no compare-and-swap on tags):
//! 1. push every layer blob first (skipped when present, mounted from another repository
//!    of the same registry when known there), so the step below is a few small requests;
//! 2. read the tag's current cache, merge — this build's records win for the keys both
//!    have (BuildKit's export replaces the ref with the build's records, so the next
//!    importer gets this build's image), the keys only the ref has stay, each of ours is
//!    marked used today and records unused for longer than `expire-unused` are dropped —
//!    and push the config and the manifest under the tag, unless the current cache already
//!    holds ours as they are;
//! 3. wait a short, jittered settle delay and read the tag again: if another writer's
//!    manifest replaced ours without our keys (it read before we wrote), go back to 2.
//!    Bounded by [`MAX_ATTEMPTS`].
//!
//! Two writers racing both end with a tag holding the union of their keys, as long as a
//! writer's step 2 takes less than the settle delay of the other — it is four small
//! requests. For a key both wrote, the last writer's record stays.
//!
//! A damaged rbuild cache under the tag is replaced; anything else (an image, another tool's
//! cache) is never overwritten: the export fails saying so.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use rbuild_image::{media_types, Descriptor, Digest, Reference};
use rbuild_layer::{Compression, WriteOptions};
use rbuild_registry::{Client, PushOutcome};
use rbuild_store::{is_plain_layer, CacheRecord, Store};
use tokio::runtime::Handle;

use crate::format::{CacheIndex, MountLayer};
use crate::import::{read_cache, ReadError};
use crate::spec::{CacheTarget, Mode};

/// Read-merge-write rounds before giving up on a contended ref.
pub const MAX_ATTEMPTS: usize = 6;
/// Blobs uploaded at once.
const PARALLEL_BLOBS: usize = 3;

/// What a build gives the exporter.
#[derive(Debug, Clone)]
pub struct ExportInput<'a> {
    /// Every layer-making step's record, in build order (`BuildResult::cache_records`).
    pub records: &'a [CacheRecord],
    /// The layers of the built image, for `mode=min`.
    pub final_layers: &'a [Digest],
    /// `RUN --mount=type=cache` directories, (id, dir), for `mounts=true`.
    pub mounts: &'a [(String, PathBuf)],
    /// Where layers are known to be already (from the import), for cross-repository mounts.
    pub sources: &'a HashMap<Digest, Reference>,
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Step records this build contributed.
    pub records: usize,
    /// Cache mounts exported.
    pub mounts: usize,
    /// Distinct layers of this build's contribution.
    pub layers: usize,
    /// Uploaded.
    pub pushed: usize,
    /// Mounted from another repository.
    pub mounted: usize,
    /// Already in the repository.
    pub already_there: usize,
    /// Records in the cache manifest after the merge.
    pub total_records: usize,
    /// Read-merge-write rounds it took (0: the ref already had everything).
    pub attempts: usize,
    /// Records of the ref dropped as unused for longer than `expire-unused`.
    pub expired: usize,
    /// Records left out (their layer is no longer in the store).
    pub warnings: Vec<String>,
}

/// Exports `input` to `target`.
pub fn export(
    client: &Client,
    handle: &Handle,
    store: &Store,
    target: &CacheTarget,
    input: &ExportInput<'_>,
) -> Result<ExportReport, String> {
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.as_secs() / 86_400) as u32)
        .unwrap_or(0);
    export_on_day(client, handle, store, target, input, today)
}

/// [`export`] as if run on `today` (days since 1970-01-01, UTC): what the records' last
/// use and their expiry are counted in.
pub fn export_on_day(
    client: &Client,
    handle: &Handle,
    store: &Store,
    target: &CacheTarget,
    input: &ExportInput<'_>,
    today: u32,
) -> Result<ExportReport, String> {
    let mut report = ExportReport::default();
    let mut ours = CacheIndex::default();
    let keep: HashSet<&Digest> = input.final_layers.iter().collect();
    for record in input.records {
        // A lazy layer (a step's plain tar) leaves the machine compressed: the copy the
        // image already has when there is one (what `mode=min` compares with), else one
        // compressed now with gzip and remembered for the next export.
        let lazy = is_plain_layer(&record.layer.media_type) && store.is_lazy_layer(&record.diff_id);
        let known = if lazy {
            store
                .any_compressed_layer(&record.diff_id)
                .map_err(|e| format!("reading the compressed copy of {}: {e}", record.diff_id))?
        } else {
            None
        };
        let shown = known.as_ref().unwrap_or(&record.layer);
        if target.mode == Mode::Min && !keep.contains(&shown.digest) {
            continue;
        }
        let record = &match (lazy, known) {
            (false, _) => record.clone(),
            (true, Some(layer)) => CacheRecord {
                layer,
                ..record.clone()
            },
            (true, None) if store.has_blob(&record.layer.digest) => CacheRecord {
                layer: store
                    .ship_layer(&record.layer, &record.diff_id, &WriteOptions::default())
                    .map_err(|e| format!("compressing layer {}: {e}", record.diff_id))?,
                ..record.clone()
            },
            (true, None) => record.clone(),
        };
        // A registry-cache hit the build did not need the files of is never pulled: its
        // layer can still be exported where the registry can mount or already has it.
        let reachable = input
            .sources
            .get(&record.layer.digest)
            .is_some_and(|r| r.registry() == target.reference.registry());
        if !store.has_blob_or_remote(&record.layer.digest) && !reachable {
            report.warnings.push(format!(
                "cache record {} left out: its layer {} is not in the store",
                record.key, record.layer.digest
            ));
            continue;
        }
        // A key seen twice in one build (two stages running the same step) keeps the
        // first result, the one later steps chained on.
        ours.records
            .entry(record.key.clone())
            .or_insert_with(|| record.clone());
    }
    if target.mounts {
        for (id, dir) in input.mounts {
            let mount = mount_layer(store, id, dir)?;
            ours.mounts.insert(id.clone(), mount);
        }
    }
    report.records = ours.records.len();
    report.mounts = ours.mounts.len();
    let layers = ours.layers();
    report.layers = layers.len();

    handle.block_on(async {
        push_layers(client, store, target, &layers, input.sources, &mut report).await?;
        merge_and_publish(client, store, target, &ours, today, &mut report).await
    })?;
    Ok(report)
}

/// The contents of a cache mount directory as a gzip layer in the store (kept from gc for
/// the life of `store`).
fn mount_layer(store: &Store, id: &str, dir: &Path) -> Result<MountLayer, String> {
    let fail = |e: String| format!("exporting cache mount {id:?}: {e}");
    let writer = store.blob_writer().map_err(|e| fail(e.to_string()))?;
    let mut writer = writer;
    let options = WriteOptions {
        compression: Compression::Gzip,
        ..Default::default()
    };
    let info = rbuild_layer::write_dir_layer(dir, &mut writer, &options)
        .map_err(|e| fail(e.to_string()))?;
    let committed = writer
        .commit(Some(&info.digest))
        .map_err(|e| fail(e.to_string()))?;
    store
        .protect(&committed.digest)
        .map_err(|e| fail(e.to_string()))?;
    Ok(MountLayer {
        id: id.to_string(),
        layer: Descriptor::new(info.media_type, committed.digest, committed.size),
        diff_id: info.diff_id,
    })
}

async fn push_layers(
    client: &Client,
    store: &Store,
    target: &CacheTarget,
    layers: &[Descriptor],
    sources: &HashMap<Digest, Reference>,
    report: &mut ExportReport,
) -> Result<(), String> {
    let (registry, repository) = (target.reference.registry(), target.reference.repository());
    let outcomes: Vec<PushOutcome> = futures_util::stream::iter(layers)
        .map(|layer| {
            let from = sources
                .get(&layer.digest)
                .filter(|r| r.registry() == registry && r.repository() != repository);
            async move {
                let outcome = match from {
                    Some(from) if store.has_blob(&layer.digest) => {
                        client
                            .mount_or_push_blob(
                                registry,
                                repository,
                                from.repository(),
                                &blob_path(store, &layer.digest),
                                &layer.digest,
                                layer.size,
                            )
                            .await
                    }
                    _ => {
                        // Not on disk (a registry-cache hit still in its registry): mounted
                        // when it can be, else fetched (`blob_file`) only if it must be sent.
                        let mounted = match from {
                            Some(from) => client
                                .mount_blob(registry, repository, from.repository(), &layer.digest)
                                .await
                                .map_err(|e| e.to_string())?,
                            None => false,
                        };
                        if mounted {
                            Ok(PushOutcome::Mounted)
                        } else if client
                            .blob_exists(registry, repository, &layer.digest)
                            .await
                            .map_err(|e| e.to_string())?
                        {
                            Ok(PushOutcome::AlreadyExists)
                        } else {
                            let path = store
                                .blob_file(&layer.digest)
                                .map_err(|e| format!("layer {}: {e}", layer.digest))?;
                            client
                                .push_blob_from_file(
                                    registry,
                                    repository,
                                    &path,
                                    &layer.digest,
                                    layer.size,
                                )
                                .await
                                .map(|()| PushOutcome::Uploaded)
                        }
                    }
                };
                outcome.map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(PARALLEL_BLOBS)
        .try_collect()
        .await?;
    for outcome in outcomes {
        match outcome {
            PushOutcome::AlreadyExists => report.already_there += 1,
            PushOutcome::Mounted => report.mounted += 1,
            PushOutcome::Uploaded => report.pushed += 1,
        }
    }
    Ok(())
}

async fn merge_and_publish(
    client: &Client,
    store: &Store,
    target: &CacheTarget,
    ours: &CacheIndex,
    today: u32,
    report: &mut ExportReport,
) -> Result<(), String> {
    let reference = &target.reference;
    for attempt in 1..=MAX_ATTEMPTS {
        let current = match read_cache(client, reference).await {
            Ok(Some((_, index))) => index,
            Ok(None) => CacheIndex::default(),
            // Damaged or foreign: replaced by ours (it was useless to every reader anyway).
            Err(ReadError::Untrusted(_)) => CacheIndex::default(),
            // Never clobber what is not a cache (an image pushed under this tag, say).
            Err(ReadError::Foreign(e)) => {
                return Err(format!(
                    "{reference} holds something else: {e}; refusing to replace it (export \
                     the cache to another tag)"
                ))
            }
            Err(ReadError::Unreachable(e)) => {
                return Err(format!("reading the cache at {reference}: {e}"))
            }
        };
        if current.holds(ours, today) {
            report.total_records = current.records.len();
            return Ok(());
        }
        let mut merged = current;
        merged.merge_ours_win(ours, today);
        if let Some(days) = target.expire_unused_days {
            report.expired = merged.expire_unused(today, days);
        }
        let pushed = publish(client, store, reference, &merged).await?;
        report.attempts = attempt;
        report.total_records = merged.records.len();

        tokio::time::sleep(jitter(300, 500)).await;
        match read_cache(client, reference).await {
            Ok(Some((digest, _))) if digest == pushed => return Ok(()),
            Ok(Some((_, now))) if now.covers(ours) => {
                report.total_records = now.records.len();
                return Ok(());
            }
            // Another writer replaced ours without our records: merge again.
            _ => tokio::time::sleep(jitter(50 * attempt as u64, 200)).await,
        }
    }
    Err(format!(
        "the cache at {reference} kept being replaced by other writers; gave up after \
         {MAX_ATTEMPTS} attempts"
    ))
}

/// Pushes the config blob and the manifest of `index` under the tag; returns the manifest
/// digest.
async fn publish(
    client: &Client,
    store: &Store,
    reference: &Reference,
    index: &CacheIndex,
) -> Result<Digest, String> {
    let (config, manifest) = index.encode();
    let (registry, repository) = (reference.registry(), reference.repository());
    let digest = &manifest.config.digest;
    if !client
        .blob_exists(registry, repository, digest)
        .await
        .map_err(|e| e.to_string())?
    {
        let tmp =
            tempfile::NamedTempFile::new_in(store.state_dir("tmp").map_err(|e| e.to_string())?)
                .map_err(|e| format!("writing the cache config: {e}"))?;
        std::fs::write(tmp.path(), &config)
            .map_err(|e| format!("writing the cache config: {e}"))?;
        client
            .push_blob_from_file(
                registry,
                repository,
                tmp.path(),
                digest,
                config.len() as u64,
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    let bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    client
        .push_manifest(reference, Bytes::from(bytes), media_types::OCI_MANIFEST)
        .await
        .map_err(|e| e.to_string())
}

fn blob_path(store: &Store, digest: &Digest) -> PathBuf {
    // The store is an OCI image layout: a blob's file is blobs/<algorithm>/<hex>.
    store
        .layout_dir()
        .join("blobs")
        .join(digest.algorithm())
        .join(digest.hex())
}

/// `base` to `base + spread` milliseconds, different in every process and call.
fn jitter(base: u64, spread: u64) -> Duration {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    let r = h.finish() % spread.max(1);
    Duration::from_millis(base + r)
}
