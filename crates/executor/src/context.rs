//! The build context: what every step of a build reads (the request, store, sandbox,
//! Dockerfile, bases, remote cache), the state its stages share, and where an instruction
//! came from for errors.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rbuild_dockerfile::instructions::Command;
use rbuild_dockerfile::{BuildOptions, Dockerfile};
use rbuild_ignore::PatternMatcher;
use rbuild_image::{Digest, Platform};
use rbuild_layer::WriteOptions;
use rbuild_sandbox::Sandbox;
use rbuild_store::{CacheRecord, Store};

use crate::base::{self, BaseImages, LoadedImage};
use crate::build_dir::BuildDir;
use crate::cache::RemoteCache;
use crate::error::{BuildError, Result};
use crate::history;
use crate::state::StageOutput;
use crate::BuildRequest;

/// What a build context is made of (the rest it makes itself).
pub(crate) struct ContextParts<'a> {
    pub request: &'a BuildRequest,
    pub store: &'a Store,
    pub bases: &'a (dyn BaseImages + Sync),
    pub dockerfile: &'a Dockerfile,
    pub opts: &'a BuildOptions,
    pub platform: Platform,
    pub sandbox: Sandbox,
    pub write_options: WriteOptions,
    pub remote: &'a (dyn RemoteCache + Sync),
    pub phases: crate::phases::BuildPhases,
    pub owners: crate::fsops::Owners,
    /// The stage whose image the build stores: its layers are compressed as they are
    /// written.
    pub target_stage: usize,
}

/// Everything a build's steps read and do not change: the request, store, sandbox, parsed
/// Dockerfile, the platform and layer format, base images and the remote cache. What the
/// stages of a build change and share is in [`SharedState`]; what one stage changes is its
/// own [`StageState`](crate::state::StageState).
pub(crate) struct BuildContext<'a> {
    pub request: &'a BuildRequest,
    pub store: &'a Store,
    pub bases: &'a (dyn BaseImages + Sync),
    pub df: &'a Dockerfile,
    pub opts: &'a BuildOptions,
    pub platform: Platform,
    pub sandbox: Sandbox,
    pub write_options: WriteOptions,
    pub global: Vec<(String, String)>,
    /// The build's scratch directory (stage roots, downloads, heredoc scripts).
    pub dir: BuildDir,
    pub ignore: Option<PatternMatcher>,
    pub remote: &'a (dyn RemoteCache + Sync),
    /// The store's shared extracted trees (`None` when they cannot be used).
    pub trees: Option<crate::trees::Trees>,
    /// This build's phase counters, entered on every thread the build runs on.
    pub phases: crate::phases::BuildPhases,
    /// How this build's files get their owners (`fsops::Owners::for_build`), handed to
    /// everything that writes or removes them.
    pub owners: crate::fsops::Owners,
    /// The stage whose image the build stores: its layers ship, so they are written
    /// compressed (`commit::commit_layer`).
    pub target_stage: usize,
    /// What the stages change as the build goes.
    pub shared: SharedState,
}

/// What the stages of one build change and share, as they run on several threads at once.
/// Each part has its own lock, held briefly and never across a RUN; one lock is taken
/// while another is held only in this order: `done` or `image_roots`, then
/// `pending_remote`, `made_here`, `shared_roots`, `precise_times`; `deferred` after `done`.
pub(crate) struct SharedState {
    /// Finished stages, by index (read by `FROM`, `COPY --from`, `--mount from=`).
    pub done: Mutex<BTreeMap<usize, StageOutput>>,
    /// Images used by `--from`, extracted once per build.
    pub image_roots: Mutex<BTreeMap<String, PathBuf>>,
    /// ADD's downloads and git checkouts, each fetched once per build.
    pub fetcher: Mutex<crate::downloads::Fetcher>,
    /// Cache records of the layer steps run or reused so far (the registry export's).
    pub used_records: Mutex<Vec<CacheRecord>>,
    /// `RUN --mount=type=cache` directories used: (id, directory).
    pub cache_mounts_used: Mutex<Vec<(String, PathBuf)>>,
    /// Registry-cache hits whose layers are not fetched yet, by layer digest.
    pub pending_remote: Mutex<BTreeMap<Digest, CacheRecord>>,
    /// Layers this build made by running steps: a tree is made only of layers that will be
    /// wanted again (a base image's, cached steps'), not of a `--no-cache` run's.
    pub made_here: Mutex<HashSet<Digest>>,
    /// Stage roots whose files are links into a shared tree.
    pub shared_roots: Mutex<HashSet<PathBuf>>,
    /// A stage failed: the stages running beside it stop before their next step.
    pub cancelled: AtomicBool,
    /// Layer steps of this build by key: the record once one stage has run (or found) it.
    /// A stage with the same step on the same file system waits on the slot and takes the
    /// record, as BuildKit merges identical vertices: the step runs once and both images
    /// share its layer.
    pub step_results: Mutex<HashMap<Digest, Arc<Mutex<Option<CacheRecord>>>>>,
    /// The times the steps of this build left on what they wrote, by layer digest: set
    /// again where another stage's rootfs gets the layer (`precise_times.rs`).
    pub precise_times: Mutex<HashMap<Digest, Arc<crate::precise_times::PreciseTimes>>>,
    /// Layers whose blobs are not written yet, by digest (`deferred.rs`): held while one
    /// is written, so a stage needing it waits for the blob.
    pub deferred: Mutex<crate::deferred::DeferredLayers>,
}

impl SharedState {
    fn new(store: &Store) -> Self {
        SharedState {
            done: Default::default(),
            image_roots: Default::default(),
            fetcher: Mutex::new(crate::downloads::Fetcher::new(store)),
            used_records: Default::default(),
            cache_mounts_used: Default::default(),
            pending_remote: Default::default(),
            made_here: Default::default(),
            shared_roots: Default::default(),
            cancelled: AtomicBool::new(false),
            step_results: Default::default(),
            precise_times: Default::default(),
            deferred: Default::default(),
        }
    }

    /// The slot of the layer step with key `key` (see [`SharedState::step_results`]).
    pub fn step_slot(&self, key: &Digest) -> Arc<Mutex<Option<CacheRecord>>> {
        lock(&self.step_results)
            .entry(key.clone())
            .or_default()
            .clone()
    }
}

/// Where a command came from, for error messages.
pub(crate) struct Origin<'c> {
    pub file: String,
    pub cmd: &'c Command,
}

impl Origin<'_> {
    /// The error `message` (a text or a typed error) under this instruction.
    pub(crate) fn error(&self, message: impl std::fmt::Display) -> BuildError {
        BuildError::Step {
            file: self.file.clone(),
            line: self.cmd.location.start_line,
            // A URL's credentials never reach an error.
            instruction: crate::downloads::redact_credentials(&self.cmd.location.original),
            message: crate::downloads::redact_credentials(&message.to_string()),
        }
    }
}

impl<'a> BuildContext<'a> {
    pub(crate) fn new(parts: ContextParts<'a>) -> Result<Self> {
        let global = parts.dockerfile.global_args(parts.opts)?;
        let dockerfile_path = parts.request.dockerfile_path.clone().unwrap_or_else(|| {
            parts
                .request
                .context_dir
                .join(&parts.request.dockerfile_name)
        });
        let ignore =
            match rbuild_ignore::read_ignore_file(&parts.request.context_dir, &dockerfile_path) {
                Ok(Some((path, patterns))) => Some(
                    PatternMatcher::from_ignore_file(&patterns)
                        .map_err(|e| BuildError::other(format!("{}: {e}", path.display())))?,
                ),
                Ok(None) => None,
                Err(e) => return Err(BuildError::other(format!("reading the ignore file: {e}"))),
            };
        Ok(BuildContext {
            request: parts.request,
            store: parts.store,
            bases: parts.bases,
            df: parts.dockerfile,
            opts: parts.opts,
            platform: parts.platform,
            sandbox: parts.sandbox,
            write_options: parts.write_options,
            global,
            dir: BuildDir::create(parts.store, &parts.owners)?,
            ignore,
            remote: parts.remote,
            trees: crate::trees::Trees::open(parts.store, &parts.owners).ok(),
            phases: parts.phases,
            owners: parts.owners,
            target_stage: parts.target_stage,
            shared: SharedState::new(parts.store),
        })
    }

    pub(crate) fn stage_label(&self, index: usize) -> String {
        self.df.stages[index]
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{index}"))
    }

    /// The time a step runs: SOURCE_DATE_EPOCH, else now.
    pub(crate) fn now(&self) -> String {
        match self.request.source_date_epoch {
            Some(epoch) => history::rfc3339(epoch, 0),
            None => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                history::rfc3339(now.as_secs() as i64, now.subsec_nanos())
            }
        }
    }

    pub(crate) fn load_image(&self, reference: &str) -> Result<LoadedImage> {
        if reference.eq_ignore_ascii_case("scratch") {
            return Ok(base::scratch(&self.platform));
        }
        let record = self.bases.resolve(self.store, reference, &self.platform)?;
        base::load(self.store, &record)
    }
}

/// Locks `mutex`; a thread that panicked while holding it has already failed the build, so
/// its data is still used (the panic is reported by the thread's join).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
