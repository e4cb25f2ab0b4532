//! The native build executor: a Dockerfile and a context in, an image in the store out,
//! with BuildKit's semantics for instructions, config and history.
//!
//! The pipeline (one module per job):
//! parse ([`rbuild_dockerfile`]) → plan the stages the target needs → per stage: resolve the
//! base ([`base`]) and lay out its root filesystem ([`build_dir`]) → run each instruction
//! ([`stage`]: config-only ones edit the config; RUN ([`run`]) and COPY/ADD ([`copy`])
//! change the filesystem, [`snapshot`] finds what changed and [`commit`] stores it as a
//! layer) → write config and manifest, then tag.
//!
//! ```no_run
//! use rbuild_executor::{build, BuildRequest, LocalImages, PlainProgress};
//! # fn demo(store: &rbuild_store::Store) -> Result<(), rbuild_executor::BuildError> {
//! let text = std::fs::read_to_string("Dockerfile").unwrap();
//! let request = BuildRequest::new(".", text).with_tag("app:latest");
//! let result = build(&request, store, &LocalImages, &mut PlainProgress::stderr())?;
//! println!("{}", result.image_id);
//! # Ok(()) }
//! ```

mod add_archive;
pub mod base;
#[cfg(test)]
mod build_checks_tests;
mod build_dir;
pub mod cache;
mod chmod;
mod chroot_mounts;
mod commit;
mod config_ops;
mod content_hash;
mod context;
mod copy;
mod copy_dispatch;
mod copy_skeleton;
mod copy_spec;
mod deferred;
mod downloads;
pub mod error;
mod fileop_user;
mod fsops;
mod history;
mod in_place;
mod lower;
mod mounts;
mod named_contexts;
mod op;
mod owners;
pub mod phases;
mod precise_times;
pub mod progress;
mod run;
mod runner;
mod schedule;
pub mod scratch;
pub mod secrets;
mod snapshot;
mod sources;
pub mod ssh_agent;
mod stage;
mod stage_rootfs;
mod state;
mod step_cache;
mod trees;
pub mod tty_progress;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use rbuild_dockerfile::{parse_dockerfile, BuildOptions, Platform as DfPlatform};
use rbuild_image::{Digest, Platform};
use rbuild_layer::{Compression, WriteOptions};
use rbuild_sandbox::{Isolation, Network, Sandbox, Seccomp};
use rbuild_store::Store;

pub use base::{BaseImageError, BaseImages, LocalImages};
pub use cache::{
    cache_mount_dir, NoRemoteCache, RemoteCache, RemoteCacheError, RemoteCacheErrorKind,
};
pub use chmod::ChmodError;
pub use downloads::remote_context::{fetch_remote_context, is_remote_context, RemoteContext};
pub use error::BuildError;
pub use fsops::maybe_run_root_worker;
pub use named_contexts::{NamedContext, OciLayoutRef};
pub use phases::{Phase, PhaseTimes};
pub use progress::{Event, JsonProgress, NoProgress, PlainProgress, Progress};
pub use scratch::{begin_cancel, cancelling, remove_live_dirs, sweep_dead, ScratchDir, Swept};
pub use secrets::SecretFiles;
pub use trees::{prune_build_state, PrunedBuildState};

/// Everything a build needs besides the store and the base images.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The build context directory.
    pub context_dir: PathBuf,
    pub dockerfile_text: String,
    /// The Dockerfile's name as shown in errors (`Dockerfile`).
    pub dockerfile_name: String,
    /// The Dockerfile's path, to find `<name>.dockerignore` beside it; `None` means only
    /// the context's `.dockerignore` is looked at.
    pub dockerfile_path: Option<PathBuf>,
    pub build_args: BTreeMap<String, String>,
    /// `--target`: a stage name; `None` builds the last stage.
    pub target: Option<String>,
    /// Tags given to the result (`app:latest`), applied only once the image is complete.
    pub tags: Vec<String>,
    /// `--label`s added to the image config (no history entry, as BuildKit).
    pub labels: BTreeMap<String, String>,
    /// `--no-cache`: run every step (results are still recorded for later builds).
    pub no_cache: bool,
    /// `--no-cache-filter`: stages (names or indexes) whose steps all run.
    pub no_cache_filter: Vec<String>,
    /// Report for each cache miss which input changed since the last build of that step.
    pub explain_misses: bool,
    /// `os/arch[/variant]`; `None` is the host. Only the host's architecture can be built.
    pub platform: Option<String>,
    /// RUN's network when the instruction says nothing (`--network=default`).
    pub network: Network,
    /// The `network.host` entitlement (`--allow network.host`): without it a `RUN
    /// --network=host` fails the build before any step runs, as in BuildKit.
    pub allow_network_host: bool,
    pub isolation: Isolation,
    /// `--security-opt seccomp=unconfined` turns off the seccomp filter of RUN steps.
    pub seccomp: Seccomp,
    /// `--secret id=...,src=PATH`: secret id → file.
    pub secrets: BTreeMap<String, PathBuf>,
    /// `--ssh id[=socket]`: ssh id → the ssh-agent socket forwarded to
    /// `RUN --mount=type=ssh`.
    pub ssh: BTreeMap<String, PathBuf>,
    /// SOURCE_DATE_EPOCH: the config's and history's `created`, and the clamp of layer
    /// mtimes.
    pub source_date_epoch: Option<i64>,
    /// An exporter's `source-date-epoch=N` (`-o …,source-date-epoch=N`): the build is dated
    /// with the earlier of it and its own epoch (the one above, else the Dockerfile's
    /// default), as BuildKit's exporter dates entries later than its epoch with it and
    /// keeps earlier ones; no epoch of its own: this one.
    pub output_epoch: Option<i64>,
    pub compression: Compression,
    /// `--compression-level`; `None` is the format's default.
    pub compression_level: Option<u32>,
    /// Whether the target stage's layers leave the machine (pushed, exported compressed):
    /// then they are compressed as they are written, else stored plain and compressed only
    /// if they ever leave (`Store::shipped_manifest`). `true` here; the session sets it from
    /// the build's outputs.
    pub target_ships: bool,
    /// Whether a step of a stage no image is made of may leave its layer unwritten until
    /// something needs it (`deferred.rs`). `false` here (every layer written as it is
    /// made); the session sets it unless the build exports its cache (`--cache-to` reads
    /// every step's layer).
    pub defer_unshipped_layers: bool,
    /// The sandbox helper executable (a binary whose `main` calls
    /// `rbuild_sandbox::maybe_run_helper`); `None` is this executable.
    pub helper: Option<PathBuf>,
    /// How many independent stages may run at once; `None` is the number of cores.
    pub max_parallel_stages: Option<usize>,
    /// `--build-context NAME=...`: name → what it is; these come before stages and images
    /// of those names.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// The time of each named context fetched from a URL (an HTTP `Last-Modified`, else its
    /// archive's newest mtime; a git commit's time): what `ARG SOURCE_DATE_EPOCH=NAME`
    /// stands for.
    pub named_context_epochs: BTreeMap<String, i64>,
}

impl BuildRequest {
    /// A request with Docker's defaults: `Dockerfile`, no args, host network, auto isolation.
    pub fn new(context_dir: impl Into<PathBuf>, dockerfile_text: impl Into<String>) -> Self {
        BuildRequest {
            context_dir: context_dir.into(),
            dockerfile_text: dockerfile_text.into(),
            dockerfile_name: "Dockerfile".into(),
            dockerfile_path: None,
            build_args: BTreeMap::new(),
            target: None,
            tags: Vec::new(),
            labels: BTreeMap::new(),
            no_cache: false,
            no_cache_filter: Vec::new(),
            explain_misses: false,
            platform: None,
            network: Network::Host,
            allow_network_host: false,
            isolation: Isolation::Auto,
            seccomp: Seccomp::DockerDefault,
            secrets: BTreeMap::new(),
            ssh: BTreeMap::new(),
            source_date_epoch: None,
            output_epoch: None,
            compression: Compression::Gzip,
            compression_level: None,
            target_ships: true,
            defer_unshipped_layers: false,
            helper: None,
            max_parallel_stages: None,
            named_contexts: BTreeMap::new(),
            named_context_epochs: BTreeMap::new(),
        }
    }

    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    pub fn with_build_arg(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.build_args.insert(key.into(), value.into());
        self
    }
}

/// What a successful build made.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildResult {
    /// The manifest digest (what the tags point at).
    pub manifest: Digest,
    /// Docker's image id: the config digest.
    pub image_id: Digest,
    pub tags: Vec<String>,
    /// Cache records of the steps of this build that made layers (hits and new ones), in
    /// build order: what `--cache-to` exports.
    pub cache_records: Vec<rbuild_store::CacheRecord>,
    /// `RUN --mount=type=cache` directories the build used: (id, directory).
    pub cache_mounts: Vec<(String, PathBuf)>,
    /// The epoch the build was dated with (`SOURCE_DATE_EPOCH`, from the request or the
    /// Dockerfile's `ARG SOURCE_DATE_EPOCH=` default), if any: what the exporter's
    /// `rewrite-timestamp` rewrites to.
    pub source_date_epoch: Option<i64>,
    /// Where this build's time went: its own counters (`phases::BuildPhases`), so builds
    /// running at the same time in one process do not count each other's time; `compress`
    /// alone is process-wide.
    pub phases: PhaseTimes,
}

fn to_df_platform(p: &Platform) -> DfPlatform {
    DfPlatform {
        os: p.os.clone(),
        architecture: p.architecture.clone(),
        variant: (!p.variant.is_empty()).then(|| p.variant.clone()),
    }
}

/// The epoch a global `ARG SOURCE_DATE_EPOCH=N` default of the Dockerfile gives, when
/// neither the request nor a build arg sets one: Dockerfile 1.26 (BuildKit v0.32) dates the
/// image with it (`testSourceDateEpochDockerfileDefault`), and a default that is not a
/// number of seconds fails the build (`invalid SOURCE_DATE_EPOCH`). The default is taken as
/// written: one that refers to other variables is an error too. A default naming a named
/// context fetched from a URL (`ARG SOURCE_DATE_EPOCH=mysource` with `--build-context
/// mysource=URL`) is that context's time, which RUN then sees as the ARG's value
/// (`testSourceDateEpochNamedContextHTTP*`): `Some((epoch, true))`.
fn dockerfile_epoch(
    dockerfile: &rbuild_dockerfile::Dockerfile,
    request: &BuildRequest,
) -> Result<Option<(i64, bool)>, BuildError> {
    if request.source_date_epoch.is_some() || request.build_args.contains_key("SOURCE_DATE_EPOCH") {
        return Ok(None);
    }
    let mut found = None;
    for command in &dockerfile.meta_args {
        if let rbuild_dockerfile::instructions::Instruction::Arg(arg) = &command.instruction {
            for decl in arg.args.iter().filter(|d| d.key == "SOURCE_DATE_EPOCH") {
                // A later declaration without a default keeps the earlier one's value.
                if let Some(value) = &decl.value {
                    found = Some((value.clone(), command.location.start_line));
                }
            }
        }
    }
    let Some((value, line)) = found else {
        return Ok(None);
    };
    if let Some(epoch) = request.named_context_epochs.get(&value) {
        return Ok(Some((*epoch, true)));
    }
    if let Some(stage) = dockerfile
        .stages
        .iter()
        .find(|s| s.name.as_deref() == Some(value.to_ascii_lowercase().as_str()))
    {
        return stage_epoch(stage, &request.dockerfile_name, line).map(|e| Some((e, true)));
    }
    match value.parse::<i64>() {
        Ok(epoch) if epoch >= 0 => Ok(Some((epoch, false))),
        _ => Err(BuildError::other(format!(
            "{}:{line}: invalid SOURCE_DATE_EPOCH: {value:?} (the ARG's default must be a \
             number of seconds since 1970)",
            request.dockerfile_name
        ))),
    }
}

/// The epoch of the stage `ARG SOURCE_DATE_EPOCH=NAME` names, which must be source-only as
/// in BuildKit v0.32 (`FROM scratch` and one `ADD` of one URL, written without variables):
/// its URL's time, fetched on its own (a git commit's time; an HTTP `Last-Modified`, else
/// the newest mtime of the archive it serves; `testSourceDateEpochStageHTTPArchive`).
fn stage_epoch(
    stage: &rbuild_dockerfile::Stage,
    file: &str,
    line: usize,
) -> Result<i64, BuildError> {
    use rbuild_dockerfile::instructions::Instruction;
    let name = stage.name.clone().unwrap_or_default();
    let url = match (stage.base().image.as_str(), stage.commands.as_slice()) {
        ("scratch", [command]) => match &command.instruction {
            Instruction::Add(add)
                if add.sources.len() == 1
                    && add.inline_sources.is_empty()
                    && !add.sources[0].contains('$')
                    && is_remote_context(&add.sources[0]) =>
            {
                Some(add.sources[0].clone())
            }
            _ => None,
        },
        _ => None,
    };
    let Some(url) = url else {
        return Err(BuildError::other(format!(
            "{file}:{line}: SOURCE_DATE_EPOCH stage {name:?} does not meet source-only \
             requirements (FROM scratch and one ADD of a URL)"
        )));
    };
    let fetched = fetch_remote_context(&url, &std::env::temp_dir())?;
    fetched.epoch.ok_or_else(|| {
        BuildError::other(format!(
            "{file}:{line}: SOURCE_DATE_EPOCH stage {name:?}: {} has no time (no \
             Last-Modified, not an archive)",
            downloads::redact_url(&url)
        ))
    })
}

/// The build checks of `dockerfile` for a build of the stages `built` (`rbuild_dockerfile::
/// lint`), as the check configuration (`# check=`, or the build argument
/// `BUILDKIT_DOCKERFILE_CHECK`) asks: each warning rendered with the file and line, and
/// with `error=true` and a warning, the error that fails the build.
fn build_checks(
    dockerfile: &rbuild_dockerfile::Dockerfile,
    opts: &BuildOptions,
    request: &BuildRequest,
    built: &[usize],
    store: Option<&Store>,
) -> Result<(Vec<String>, Option<String>), BuildError> {
    use rbuild_dockerfile::lint;
    let file = &request.dockerfile_name;
    let config = lint::check_config(
        dockerfile,
        request
            .build_args
            .get("BUILDKIT_DOCKERFILE_CHECK")
            .map(String::as_str),
    )
    .map_err(|e| BuildError::other(format!("{file}: {e}")))?;
    let global = dockerfile.global_args(opts)?;
    let mut all = lint::lint(dockerfile, built, &global);
    // UndefinedVar needs each base image's environment: that of the images the store holds
    // before any step runs (`pull_missing_bases` pulled those it lacked; a base whose pull
    // failed is not checked, its stage fails).
    let base_env =
        |base: &rbuild_dockerfile::Base| named_contexts::stored_base_env(request, store, base);
    all.extend(lint::undefined_vars(
        dockerfile, built, &global, opts, &base_env,
    ));
    all.sort_by_key(|w| w.line);
    // CopyIgnoredFile needs the context's ignore file; one that cannot be read fails the
    // build itself, naming it, when the context is read.
    let dockerfile_path = request
        .dockerfile_path
        .clone()
        .unwrap_or_else(|| request.context_dir.join(&request.dockerfile_name));
    if let Ok(Some((_, patterns))) =
        rbuild_ignore::read_ignore_file(&request.context_dir, &dockerfile_path)
    {
        if let Ok(matcher) = rbuild_ignore::PatternMatcher::from_ignore_file(&patterns) {
            let ignored = |path: &str| matcher.matches_or_parent_matches(path);
            let patterns = matcher.patterns();
            let ignore = lint::ContextIgnore {
                ignored: &ignored,
                patterns: &patterns,
            };
            all.extend(lint::copy_ignored_files(dockerfile, built, &ignore));
            all.sort_by_key(|w| w.line);
        }
    }
    let found: Vec<lint::LintWarning> =
        all.into_iter().filter(|w| config.checks(&w.rule)).collect();
    let error = config.error_for(&found).map(|e| format!("{file}: {e}"));
    Ok((found.iter().map(|w| w.render(file)).collect(), error))
}

/// Whether the build checks `UndefinedVar` (BuildKit's default; `# check=skip=` or the
/// `BUILDKIT_DOCKERFILE_CHECK` build argument can turn it off). A configuration that does
/// not parse is `build_checks`' error to report.
fn checks_undefined_vars(
    dockerfile: &rbuild_dockerfile::Dockerfile,
    request: &BuildRequest,
) -> bool {
    use rbuild_dockerfile::lint;
    lint::check_config(
        dockerfile,
        request
            .build_args
            .get("BUILDKIT_DOCKERFILE_CHECK")
            .map(String::as_str),
    )
    .is_ok_and(|config| config.checks(&lint::UNDEFINED_VAR))
}

/// Pulls, in parallel, the base images of the stages in `built` that the store lacks.
/// `UndefinedVar` needs each base's environment before any step runs, as BuildKit resolves
/// every base's config while it converts the Dockerfile, so that a check with
/// `error=true` fails a build on an image not pulled yet as it fails one on a stored image.
/// A pull that fails is not reported here: the stage needing the image reports it, in
/// place, when it runs (and is not checked); the CLI's bases remember the failure for the
/// build, so that stage does not pull again (`rbuild_transfer::PullingBases`).
#[allow(clippy::too_many_arguments)]
fn pull_missing_bases(
    dockerfile: &rbuild_dockerfile::Dockerfile,
    opts: &BuildOptions,
    request: &BuildRequest,
    built: &[usize],
    store: &Store,
    bases: &(dyn BaseImages + Sync),
    platform: &Platform,
    build_phases: &phases::BuildPhases,
) {
    let Ok(global) = dockerfile.global_args(opts) else {
        return;
    };
    let missing: std::collections::BTreeSet<String> = built
        .iter()
        .filter_map(|&stage| dockerfile.stage_base(stage, &global).ok())
        .filter_map(|base| named_contexts::base_image_reference(request, &base))
        .filter(|reference| !reference.eq_ignore_ascii_case("scratch"))
        .filter(|reference| store.resolve(reference).is_err())
        .collect();
    std::thread::scope(|scope| {
        for reference in &missing {
            scope.spawn(move || {
                let _phases = build_phases.enter();
                let _ = bases.resolve(store, reference, platform);
            });
        }
    });
}

/// Every build check of `request`'s Dockerfile (`rbuild build --check`, BuildKit's
/// `--call=check`): all stages, or those `--target` needs, whatever the check
/// configuration's `error=`; nothing is built. The rendered warnings.
pub fn check(request: &BuildRequest) -> Result<Vec<String>, BuildError> {
    let dockerfile = parse_dockerfile(&request.dockerfile_name, &request.dockerfile_text)?;
    let host = to_df_platform(&Platform::host());
    let opts = BuildOptions {
        target: request.target.clone(),
        build_args: request.build_args.clone(),
        target_platform: host.clone(),
        build_platform: host,
    };
    let stages: Vec<usize> = match request.target {
        Some(_) => dockerfile.build_plan(&opts)?.order,
        None => (0..dockerfile.stages.len()).collect(),
    };
    Ok(build_checks(&dockerfile, &opts, request, &stages, None)?.0)
}

/// Builds the image `request` describes into `store`, with the store's own step cache.
/// Nothing is tagged unless the whole build succeeds; the per-build working directories are
/// removed whatever happens.
pub fn build(
    request: &BuildRequest,
    store: &Store,
    bases: &(dyn BaseImages + Sync),
    progress: &mut dyn Progress,
) -> Result<BuildResult, BuildError> {
    build_with_cache(request, store, bases, &NoRemoteCache, progress)
}

/// [`build`], also looking up steps the store has no record of in `remote`.
pub fn build_with_cache(
    request: &BuildRequest,
    store: &Store,
    bases: &(dyn BaseImages + Sync),
    remote: &(dyn RemoteCache + Sync),
    progress: &mut dyn Progress,
) -> Result<BuildResult, BuildError> {
    let started = Instant::now();
    // This build's own phase times (builds at once in one process do not mix theirs).
    let build_phases = phases::BuildPhases::new();
    let _phases = build_phases.enter();
    let host = Platform::host();
    let platform = match &request.platform {
        None => host.clone(),
        Some(text) => {
            let p = DfPlatform::parse(text).map_err(BuildError::other)?;
            let wanted = Platform::new(&p.os, &p.architecture, p.variant.as_deref().unwrap_or(""))
                .normalized();
            if wanted.os != host.os || wanted.architecture != host.architecture {
                return Err(BuildError::other(format!(
                    "platform {text} is not this machine's ({}/{}); cross-platform builds are not supported yet",
                    host.os, host.architecture
                )));
            }
            wanted
        }
    };
    let dockerfile = parse_dockerfile(&request.dockerfile_name, &request.dockerfile_text)?
        .with_named_contexts(request.named_contexts.keys().map(String::as_str))
        .with_context_triggers(named_contexts::stored_context_triggers(request, store));
    let dated;
    let request = match dockerfile_epoch(&dockerfile, request)? {
        Some((epoch, named)) => {
            let mut build_args = request.build_args.clone();
            if named {
                build_args.insert("SOURCE_DATE_EPOCH".to_string(), epoch.to_string());
            }
            dated = BuildRequest {
                source_date_epoch: Some(epoch),
                build_args,
                ..request.clone()
            };
            &dated
        }
        None => request,
    };
    let capped;
    let request = match request.output_epoch {
        Some(cap) if request.source_date_epoch.is_none_or(|own| own > cap) => {
            capped = BuildRequest {
                source_date_epoch: Some(cap),
                ..request.clone()
            };
            &capped
        }
        _ => request,
    };
    let opts = BuildOptions {
        target: request.target.clone(),
        build_args: request.build_args.clone(),
        target_platform: to_df_platform(&platform),
        build_platform: to_df_platform(&host),
    };
    let plan = dockerfile.build_plan(&opts)?;
    if checks_undefined_vars(&dockerfile, request) {
        pull_missing_bases(
            &dockerfile,
            &opts,
            request,
            &plan.order,
            store,
            bases,
            &platform,
            &build_phases,
        );
    }
    // BuildKit's build checks, before any step runs: warnings, or with `error=true` the
    // build's error (the parser's empty-continuation warning is one of them).
    let (warnings, lint_error) =
        build_checks(&dockerfile, &opts, request, &plan.order, Some(store))?;
    for message in warnings {
        progress.event(&Event::Warning { message });
    }
    if let Some(error) = lint_error {
        return Err(BuildError::other(error));
    }
    for &stage in &plan.order {
        for cmd in &dockerfile.stages[stage].commands {
            let place = format!("{}:{}", request.dockerfile_name, cmd.location.start_line);
            run::check_network_entitlement(request, &place, &cmd.instruction)?;
        }
    }
    let unused = dockerfile.unused_build_args(&opts);
    if !unused.is_empty() {
        progress.event(&Event::Warning {
            message: format!("one or more build-args {unused:?} were not consumed"),
        });
    }
    let sandbox = match &request.helper {
        Some(p) => Sandbox::with_helper(p),
        None => Sandbox::new(),
    }
    .with_seccomp(request.seccomp);
    if request.seccomp == Seccomp::Unconfined {
        progress.event(&Event::Warning {
            message: "RUN steps run without a seccomp filter (--security-opt seccomp=unconfined)"
                .into(),
        });
    }
    // Rootless, files get owners through the build's user namespace mapping (a helper that
    // is container root, when the user has subordinate ids), and layers record the
    // container ids of the host ids on disk. Kept for the whole build (see fsops).
    // As root, steps in a user namespace run as an unprivileged host range instead.
    let userns_steps = matches!(
        sandbox.resolve_isolation(request.isolation),
        Ok(rbuild_sandbox::Isolation::Userns)
    );
    let restricted = matches!(
        sandbox.resolve_isolation(request.isolation),
        Ok(rbuild_sandbox::Isolation::Restricted)
    );
    let (owners, owners_warning) = if restricted {
        let in_place = in_place::InPlaceOwners::for_build(store.root())?;
        (fsops::Owners::Recorded(in_place), None)
    } else {
        fsops::Owners::for_build(&sandbox, userns_steps, store.root())?
    };
    if let Some(message) = owners_warning {
        progress.event(&Event::Warning { message });
    }
    let sandbox = match &owners {
        fsops::Owners::Ranged(range) => sandbox.with_root_range(*range),
        fsops::Owners::Recorded(in_place) => sandbox.with_protected(in_place::protected(
            store.root(),
            &request.context_dir,
            &in_place.root,
        )),
        _ => sandbox,
    };
    let write_options = WriteOptions {
        compression: request.compression,
        level: request.compression_level,
        source_date_epoch: request.source_date_epoch,
        id_map: owners.id_map(),
        ..Default::default()
    };
    let builder = context::BuildContext::new(context::ContextParts {
        request,
        store,
        bases,
        dockerfile: &dockerfile,
        opts: &opts,
        platform,
        sandbox,
        write_options,
        remote,
        phases: build_phases.clone(),
        owners,
        target_stage: plan.target,
    })?;
    let names: Vec<String> = plan.order.iter().map(|&i| builder.stage_label(i)).collect();
    progress.event(&Event::BuildStarted { stages: names });
    schedule::run_stages(&builder, &plan, progress)?;
    let (record, tags) = builder.finish(plan.target)?;
    // What no image needed stays unwritten; its files are kept for the cache.
    builder.finish_deferred(progress)?;
    // The cache is bounded by default: over the bound, the least recently used records go.
    if let Err(e) = store.bound_cache(rbuild_store::default_cache_bound(store.root())) {
        progress.event(&Event::Warning {
            message: format!("bounding the build cache: {e}"),
        });
    }
    progress.event(&Event::BuildDone {
        image_id: record.config.to_string(),
        manifest: record.manifest.digest.to_string(),
        tags: tags.clone(),
        seconds: progress::seconds(started.elapsed()),
    });
    let cache_records = std::mem::take(&mut *context::lock(&builder.shared.used_records));
    let cache_mounts = std::mem::take(&mut *context::lock(&builder.shared.cache_mounts_used));
    Ok(BuildResult {
        manifest: record.manifest.digest,
        image_id: record.config,
        tags,
        cache_records,
        cache_mounts,
        source_date_epoch: request.source_date_epoch,
        phases: build_phases.times(),
    })
}
