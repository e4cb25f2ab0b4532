//! Running a layer-making step (RUN, COPY, ADD, WORKDIR) through the cache: key its lowered
//! op (`op.rs`), reuse a record on a hit (nothing runs and nothing is extracted), otherwise
//! bring the stage's rootfs up to date (`stage_rootfs.rs`), run the step and record what it
//! made. Also what lowering reads ([`SourceKeys`] for the build context).
//!
//! The file system a stage stands on is named by `StageState::fs_key`: the base image's
//! manifest digest (with the platform), then after each layer step
//! `digest(step key, layer diff id)`. Chaining on the layer's content, not just on the
//! step key, keeps a re-run step with different output (a `--no-cache` run of a random
//! RUN) from being combined with cached results computed on top of the old output.

use rbuild_image::{Descriptor, Digest, Hasher};
use rbuild_store::CacheRecord;

use crate::cache::{RemoteCacheError, RemoteCacheErrorKind};
use crate::content_hash::digest_source;
use crate::context::{BuildContext, Origin};
use crate::copy_spec::CopySpec;
use crate::downloads::GitRef;
use crate::error::{BuildError, Result};
use crate::lower::{layer_format, network_name, LowerError, Lowering, SourceKeys};
use crate::op::{explain_miss, CopyOp};
use crate::progress::{Event, Progress};
use crate::runner::Step;
use crate::sources::{CopyFilters, SourceRoot};
use crate::state::StageState;

/// How a layer step ended.
pub(crate) enum StepEnd {
    /// Made a layer of this size by running.
    Ran(u64),
    /// Reused a cached layer of this size.
    Cached,
}

/// The file system after a layer step: the step's key and the layer's content.
pub(crate) fn result_key(step_key: &Digest, diff_id: &Digest) -> Digest {
    let mut h = Hasher::new();
    h.update(b"rbuild fs v1\n");
    h.update(step_key.to_string().as_bytes());
    h.update(b"\n");
    h.update(diff_id.to_string().as_bytes());
    h.finish()
}

/// What a stage's first file system is: a base image (by manifest digest) or `scratch`,
/// on a platform.
pub(crate) fn base_key(base_id: &Digest, platform: &rbuild_image::Platform) -> Digest {
    let mut h = Hasher::new();
    h.update(b"rbuild base v1\n");
    h.update(base_id.to_string().as_bytes());
    h.update(
        format!(
            "\n{}/{}/{}",
            platform.os, platform.architecture, platform.variant
        )
        .as_bytes(),
    );
    h.finish()
}

impl BuildContext<'_> {
    /// itself for what must be read.
    pub(crate) fn lowering(&self) -> Lowering<'_> {
        Lowering {
            build_network: network_name(self.request.network).into(),
            layer_format: layer_format(&self.write_options),
            keys: self,
        }
    }

    /// The op of a COPY/ADD, its errors placed under the instruction.
    pub(crate) fn lower_copy(
        &self,
        st: &StageState,
        origin: &Origin<'_>,
        spec: &CopySpec,
    ) -> Result<CopyOp> {
        let name = if spec.is_add { "ADD" } else { "COPY" };
        self.lowering().copy(&st.view(), spec).map_err(|e| match e {
            LowerError::Read(e) => origin.error(format!("{name} failed: {e}")),
            other => origin.error(other),
        })
    }

    /// A name for "this step of this Dockerfile", under which the inputs of its last key
    /// are kept for explaining a miss.
    fn step_position(&self, st: &StageState, step: usize) -> String {
        let context = std::fs::canonicalize(&self.request.context_dir)
            .unwrap_or_else(|_| self.request.context_dir.clone());
        format!(
            "{}\n{}\n{}\n{step}",
            context.display(),
            self.request.dockerfile_name,
            st.label
        )
    }

    /// The record for `key`: the store's own, else the remote cache's (its layer fetched
    /// and recorded locally, so the next build hits locally).
    fn lookup(
        &self,
        key: &Digest,
        progress: &mut dyn Progress,
    ) -> Option<(CacheRecord, &'static str)> {
        let _t = crate::phases::Phase::Cache.timer();
        match self.store.cache_lookup(key) {
            // A layer never written is a hit while its kept files can write it; one still
            // in its registry (recorded remote) is fetched by its first reader.
            Ok(Some(record))
                if self.store.has_blob_or_remote(&record.layer.digest)
                    || self.take_kept_hit(&record) =>
            {
                return Some((record, "local"))
            }
            Ok(_) => {}
            Err(e) => progress.event(&Event::Warning {
                message: format!("reading the build cache: {e}"),
            }),
        }
        let record = self.remote.lookup(key)?;
        // A plain layer in a cache record was made by a build step (lazily stored): like
        // this store's own, it is compressed if it leaves the machine, so the image is the
        // one the build that recorded it made.
        if rbuild_store::is_plain_layer(&record.layer.media_type) {
            if let Err(e) = self.store.mark_lazy_layer(&record.diff_id) {
                progress.event(&Event::Warning {
                    message: format!("recording a registry cache hit's plain layer: {e}"),
                });
            }
        }
        if matches!(self.store.protect(&record.layer.digest), Ok(true)) {
            // The layer is here already (another image or an earlier import has it).
            if let Err(e) = self.store.cache_put(&record) {
                progress.event(&Event::Warning {
                    message: format!("recording a registry cache hit: {e}"),
                });
            }
        } else {
            // Fetched only if something needs its files or the image keeps it: a hit in a
            // stage that later hits make irrelevant costs nothing.
            crate::context::lock(&self.shared.pending_remote)
                .insert(record.layer.digest.clone(), record.clone());
        }
        Some((record, "registry"))
    }

    /// Fetches the registry-cache layers among `layers` that are not in the store yet, and
    /// records them locally so that the next build hits without the registry.
    pub(crate) fn fetch_pending(&self, layers: &[Descriptor]) -> Result<()> {
        self.settle_pending(layers, false)
    }

    /// Settles the registry-cache layers among `layers` that are not in the store yet: with
    /// `lazy` (the image's layers, whose files no step needs), each is recorded remote in
    /// the store when the cache can say where it is, and fetched by its first reader
    /// (`Store::ensure_blob`); else fetched now. Either way the hit is recorded locally.
    pub(crate) fn settle_pending(&self, layers: &[Descriptor], lazy: bool) -> Result<()> {
        // Layers of this build or the cache that were never written (`deferred.rs`).
        self.write_deferred(layers.iter().map(|l| &l.digest))?;
        for layer in layers {
            let Some(record) = crate::context::lock(&self.shared.pending_remote)
                .get(&layer.digest)
                .cloned()
            else {
                continue;
            };
            let _t = crate::phases::Phase::Pull.timer();
            let remote = lazy.then(|| self.remote.remote_blob(&record)).flatten();
            let settled = match remote {
                Some(remote) => self.store.record_remote_blob(&remote).map_err(|e| {
                    RemoteCacheError::new(
                        RemoteCacheErrorKind::Store,
                        format!("recording it remote: {e}"),
                    )
                }),
                None => self.remote.fetch_layer(self.store, &record),
            };
            settled
                .and_then(|()| {
                    self.store.cache_put(&record).map_err(|e| {
                        RemoteCacheError::new(
                            RemoteCacheErrorKind::Store,
                            format!("recording it: {e}"),
                        )
                    })
                })
                .map_err(|source| BuildError::RemoteCacheLayer {
                    layer: record.layer.digest.clone(),
                    source,
                })?;
            crate::context::lock(&self.shared.pending_remote).remove(&layer.digest);
        }
        Ok(())
    }

    /// Runs a layer step through the cache: the key of its op is looked up locally, then
    /// in the registry cache; on a miss the runner (`runner.rs`) does the step on the
    /// (materialised) rootfs, which commits exactly one layer. `created_by` is its history
    /// entry.
    pub(crate) fn layer_step(
        &self,
        st: &mut StageState,
        origin: &Origin<'_>,
        to_run: &Step<'_>,
        created_by: String,
        step: usize,
        progress: &mut dyn Progress,
    ) -> Result<StepEnd> {
        let position = self.step_position(st, step);
        // One encoding of the op gives both the key and what explains a miss.
        let op = to_run.op();
        let (digest, inputs) = (op.key(), op.explain_inputs());
        // The same step of another stage of this build (same key: same file system, same
        // op) runs once: a stage that gets here second waits for it and takes its layer.
        let slot = self.shared.step_slot(&digest);
        let mut in_build = crate::context::lock(&slot);
        if let Some(record) = in_build.clone() {
            let hit = CacheHit {
                record,
                source: "build",
            };
            return Ok(self.take_record(st, hit, created_by, step, progress));
        }
        if !st.no_cache {
            if let Some((record, source)) = self.lookup(&digest, progress) {
                *in_build = Some(record.clone());
                let _ = self.store.cache_record_inputs(&position, &inputs);
                let hit = CacheHit { record, source };
                return Ok(self.take_record(st, hit, created_by, step, progress));
            }
        }
        if self.request.explain_misses {
            let reason = if st.no_cache {
                "--no-cache".to_string()
            } else {
                let previous = self.store.cache_last_inputs(&position);
                explain_miss(previous.as_ref(), &inputs)
            };
            progress.event(&Event::CacheMiss {
                stage: st.label.clone(),
                step,
                reason,
            });
        }
        let size = self.run_step(st, origin, to_run, step, progress)?;
        // A step that changed the rootfs has its layer on it; a rootless overlay step's
        // layer is applied when a later step needs the files (never, after a stage's last
        // step): `applied` stays where `materialize` left it.
        if !st.layer_off_rootfs {
            st.applied = st.layers.len();
        }
        st.layer_off_rootfs = false;
        // Every layer step commits a layer (an empty change set too), so these are there;
        // an error rather than a panic if a future step kind forgets to.
        let no_layer = || BuildError::other(format!("{created_by}: the step made no layer"));
        let layer = st.layers.last().cloned().ok_or_else(no_layer)?;
        let diff_id = st
            .config
            .rootfs
            .diff_ids
            .last()
            .cloned()
            .ok_or_else(no_layer)?;
        let created = self.now();
        st.add_history(created_by, true);
        st.date_history(&created, self.request.source_date_epoch);
        st.fs_key = result_key(&digest, &diff_id);
        let record = CacheRecord {
            key: digest,
            layer,
            diff_id,
            created,
        };
        let recorded = match self.record_deferred(&record) {
            Some(recorded) => recorded,
            None => self.store.cache_put(&record),
        };
        if let Err(e) = recorded {
            progress.event(&Event::Warning {
                message: format!("recording the step in the build cache: {e}"),
            });
        }
        let _ = self.store.cache_record_inputs(&position, &inputs);
        *in_build = Some(record.clone());
        crate::context::lock(&self.shared.used_records).push(record);
        Ok(StepEnd::Ran(size))
    }

    /// Takes a step's result from `hit` (the cache's, or the same step run for another
    /// stage of this build) instead of running it.
    fn take_record(
        &self,
        st: &mut StageState,
        hit: CacheHit,
        created_by: String,
        step: usize,
        progress: &mut dyn Progress,
    ) -> StepEnd {
        let CacheHit { record, source } = hit;
        st.layers.push(record.layer.clone());
        st.config.rootfs.diff_ids.push(record.diff_id.clone());
        st.add_history(created_by, true);
        st.date_history(&record.created, self.request.source_date_epoch);
        st.fs_key = result_key(&record.key, &record.diff_id);
        let size = record.layer.size;
        crate::context::lock(&self.shared.used_records).push(record);
        progress.event(&Event::StepCached {
            stage: st.label.clone(),
            step,
            layer_size: size,
            source: source.into(),
        });
        StepEnd::Cached
    }
}

/// A step's result found instead of run, and where: `local`, `registry` or `build` (the
/// same step of another stage of this build).
struct CacheHit {
    record: CacheRecord,
    source: &'static str,
}

/// What lowering reads: the build context, finished stages, images, downloads.
impl SourceKeys for BuildContext<'_> {
    fn context_entries(
        &self,
        src: &str,
        parents: bool,
        filters: &CopyFilters,
    ) -> Result<Vec<(String, Digest)>> {
        let _t = crate::phases::Phase::Cache.timer();
        let root = SourceRoot::Context {
            dir: &self.request.context_dir,
            ignore: self.ignore.as_ref(),
        };
        let mut entries = Vec::new();
        for (source, filters) in root.copy_sources(src, parents, filters)? {
            let filter = root.filter_for(&source, &filters);
            entries.extend(digest_source(&source.host, &source.rel, &filter)?.entries);
        }
        Ok(entries)
    }

    /// An earlier stage's file-system key, or an image's base key (its manifest digest).
    fn key_of_from(&self, current: usize, from: &str) -> Result<Digest> {
        if let Some(key) = self.context_of_from(current, from) {
            return self.key_of_named(&key);
        }
        let stage = self
            .df
            .stage_by_name(from)
            .or_else(|| from.parse::<usize>().ok().filter(|&i| i < current));
        if let Some(i) = stage {
            return crate::context::lock(&self.shared.done)
                .get(&i)
                .map(|o| o.fs_key.clone())
                .ok_or_else(|| {
                    BuildError::other(format!(
                        "stage {from:?} has not been built (it must come before this stage)"
                    ))
                });
        }
        let image = self.load_image(from)?;
        Ok(base_key(&image.id, &self.platform))
    }

    fn url_content(&self, url: &str) -> Result<Digest> {
        Ok(crate::context::lock(&self.shared.fetcher).fetch(url)?.1)
    }

    fn git_commit(&self, git: &GitRef, keep_git_dir: Option<bool>) -> Result<String> {
        // The same checkout the ADD then copies (one fetch per build).
        Ok(crate::context::lock(&self.shared.fetcher)
            .checkout_ref(git, keep_git_dir)?
            .1)
    }
}

/// Orders RFC 3339 UTC times as written by this crate (`2024-01-02T03:04:05.5Z`): the
/// seconds part, then the fraction padded to nanoseconds.
pub(crate) fn time_order(t: &str) -> (String, String) {
    let t = t.trim_end_matches('Z');
    match t.split_once('.') {
        Some((secs, frac)) => (secs.to_string(), format!("{frac:0<9}")),
        None => (t.to_string(), "0".repeat(9)),
    }
}

/// Whether a stage's steps skip the cache (`--no-cache`, or `--no-cache-filter` naming it
/// by name or index).
pub(crate) fn stage_skips_cache(
    no_cache: bool,
    filter: &[String],
    index: usize,
    name: Option<&str>,
) -> bool {
    no_cache
        || filter.iter().any(|f| {
            name.is_some_and(|n| n.eq_ignore_ascii_case(f)) || f.parse::<usize>() == Ok(index)
        })
}
