//! Running the stages: the builder that owns the build's state, a stage's FROM (base
//! image, `scratch` or an earlier stage, then the base's ONBUILD triggers) and the dispatch
//! of each instruction. Config-only instructions are handled here; RUN is in `run.rs`,
//! COPY/ADD in `copy.rs`, `RUN --mount` in `mounts.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rbuild_dockerfile::instructions::{Command, Instruction, ShellOrExec};
use rbuild_dockerfile::{parse_dockerfile, Base, BuildOptions, Dockerfile};
use rbuild_ignore::PatternMatcher;
use rbuild_image::{Descriptor, Digest, History, ImageConfig, Platform};
use rbuild_layer::WriteOptions;
use rbuild_sandbox::Sandbox;
use rbuild_store::{CacheRecord, ImageRecord, Store};

use crate::base::{self, BaseImages, LoadedImage};
use crate::build_dir::{apply_layers, BuildDir};
use crate::cache::RemoteCache;
use crate::commit::commit_layer;
use crate::error::{BuildError, Result};
use crate::fsops;
use crate::history::{self, go_list, go_quote_list};
use crate::op::StepOp;
use crate::progress::{seconds, Event, Progress};
use crate::snapshot::Index;
use crate::step_cache::{base_key, stage_skips_cache, StepEnd};
use crate::BuildRequest;

/// BuildKit's history comment on every entry a Dockerfile build adds.
const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

pub(crate) struct BuilderParts<'a> {
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
}

/// A finished stage: its image and its root filesystem (kept for `COPY --from`; only the
/// first `applied` layers are on it: cache hits are applied when something reads it).
pub(crate) struct StageOutput {
    pub image: LoadedImage,
    pub rootfs: PathBuf,
    pub applied: usize,
    pub fs_key: Digest,
    /// The stage's environment at its end (ENVs and ARG values) and its ARGs: a stage built
    /// `FROM` this one starts with them (BuildKit's `dispatchState.init`).
    pub env: Vec<(String, String)>,
    pub build_args: Vec<(String, String)>,
}

/// The state of the stage being built (BuildKit's `dispatchState`).
pub(crate) struct StageState {
    pub index: usize,
    pub label: String,
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    pub rootfs: PathBuf,
    /// The LLB state's environment: image Env, then ARG values and ENVs as declared. Used
    /// for expansion and as RUN's environment.
    pub env: Vec<(String, String)>,
    /// The stage's ARGs with their values, for RUN's history string.
    pub build_args: Vec<(String, String)>,
    /// CMD was set in this stage (an ENTRYPOINT then keeps it).
    pub cmd_set: bool,
    /// How many of `layers` are applied on `rootfs` (hits are applied only when a later
    /// step needs the files).
    pub applied: usize,
    /// The step just run left its layer off the rootfs (a rootless overlay step: the
    /// change is in its upper directory); `applied` says what the rootfs has, and the rest
    /// is applied with the layers of cache hits, when needed.
    pub layer_off_rootfs: bool,
    /// The cache key of the file system the next step starts from.
    pub fs_key: Digest,
    /// Every step of this stage runs (`--no-cache`, `--no-cache-filter`).
    pub no_cache: bool,
    /// When the stage's last layer step ran: the `created` of the config-only history
    /// entries after it.
    pub clock: Option<String>,
    /// History entries of this stage still waiting for a `created` time.
    pub undated: Vec<usize>,
}

impl StageState {
    pub(crate) fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    pub(crate) fn workdir(&self) -> String {
        if self.config.config.working_dir.is_empty() {
            "/".into()
        } else {
            self.config.config.working_dir.clone()
        }
    }

    /// What lowering reads of this stage (`lower.rs`).
    pub(crate) fn view(&self) -> crate::lower::StageView<'_> {
        crate::lower::StageView {
            index: self.index,
            fs_key: &self.fs_key,
            env: &self.env,
            user: &self.config.config.user,
            workdir: self.workdir(),
            shell: self.shell(),
        }
    }

    pub(crate) fn shell(&self) -> Vec<String> {
        if self.config.config.shell.is_empty() {
            vec!["/bin/sh".into(), "-c".into()]
        } else {
            self.config.config.shell.clone()
        }
    }
}

/// The build's state, shared by the threads that run independent stages at once: what
/// changes during the build is behind locks (held briefly, never across a RUN).
pub(crate) struct Builder<'a> {
    pub request: &'a BuildRequest,
    pub store: &'a Store,
    pub bases: &'a (dyn BaseImages + Sync),
    pub df: &'a Dockerfile,
    pub opts: &'a BuildOptions,
    pub platform: Platform,
    pub sandbox: Sandbox,
    pub write_options: WriteOptions,
    pub global: Vec<(String, String)>,
    pub dir: BuildDir,
    pub ignore: Option<PatternMatcher>,
    pub done: Mutex<BTreeMap<usize, StageOutput>>,
    /// Images used by `--from`, extracted once per build.
    pub image_roots: Mutex<BTreeMap<String, PathBuf>>,
    /// ADD's downloads and git checkouts, each fetched once per build.
    pub fetcher: Mutex<crate::downloads::Fetcher>,
    pub remote: &'a (dyn RemoteCache + Sync),
    /// Cache records of the layer steps run or reused so far.
    pub used_records: Mutex<Vec<CacheRecord>>,
    /// `RUN --mount=type=cache` directories used: (id, directory).
    pub cache_mounts_used: Mutex<Vec<(String, PathBuf)>>,
    /// Registry-cache hits whose layers are not fetched yet, by layer digest.
    pub pending_remote: Mutex<BTreeMap<Digest, CacheRecord>>,
    /// A stage failed: the stages running beside it stop before their next step.
    pub cancelled: AtomicBool,
    /// The store's shared extracted trees (`None` when they cannot be used).
    pub trees: Option<crate::trees::Trees>,
    /// Layers this build made by running steps: a tree is made only of layers that will be
    /// wanted again (a base image's, cached steps'), not of a `--no-cache` run's.
    pub made_here: Mutex<std::collections::HashSet<Digest>>,
    /// Stage roots whose files are links into a shared tree.
    pub shared_roots: Mutex<std::collections::HashSet<PathBuf>>,
    /// This build's phase counters, entered on every thread the build runs on.
    pub phases: crate::phases::BuildPhases,
}

/// Where a command came from, for error messages.
pub(crate) struct Origin<'c> {
    pub file: String,
    pub cmd: &'c Command,
}

impl Origin<'_> {
    pub(crate) fn error(&self, message: impl Into<String>) -> BuildError {
        BuildError::Step {
            file: self.file.clone(),
            line: self.cmd.location.start_line,
            // A URL's credentials never reach an error.
            instruction: crate::downloads::redact_credentials(&self.cmd.location.original),
            message: crate::downloads::redact_credentials(&message.into()),
        }
    }
}

fn env_pairs(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect()
}

impl<'a> Builder<'a> {
    pub(crate) fn new(parts: BuilderParts<'a>) -> Result<Self> {
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
        Ok(Builder {
            request: parts.request,
            store: parts.store,
            bases: parts.bases,
            df: parts.dockerfile,
            opts: parts.opts,
            platform: parts.platform,
            sandbox: parts.sandbox,
            write_options: parts.write_options,
            global,
            dir: BuildDir::create(parts.store)?,
            ignore,
            done: Default::default(),
            image_roots: Default::default(),
            fetcher: Mutex::new(crate::downloads::Fetcher::new(parts.store)),
            remote: parts.remote,
            used_records: Default::default(),
            cache_mounts_used: Default::default(),
            pending_remote: Default::default(),
            cancelled: AtomicBool::new(false),
            trees: crate::trees::Trees::open(parts.store).ok(),
            made_here: Default::default(),
            shared_roots: Default::default(),
            phases: parts.phases,
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

    /// Adds a history entry. Its `created` is the time of the layer step it belongs to or
    /// follows (see [`Builder::date_history`]), so that a rebuild served from the cache
    /// repeats the first build's times and gives the same image.
    pub(crate) fn add_history(&self, st: &mut StageState, created_by: String, with_layer: bool) {
        st.config.history.push(History {
            created: st.clock.clone(),
            created_by,
            comment: HISTORY_COMMENT.into(),
            empty_layer: !with_layer,
            ..Default::default()
        });
        if st.clock.is_none() || with_layer {
            st.undated.push(st.config.history.len() - 1);
        }
    }

    /// A layer step ran (or was reused) at `time`: it dates its own entry, the config-only
    /// entries before it that had no time yet, and those after it until the next one.
    pub(crate) fn date_history(&self, st: &mut StageState, time: &str) {
        let time = match self.request.source_date_epoch {
            Some(epoch) => history::rfc3339(epoch, 0),
            None => time.to_string(),
        };
        for i in st.undated.drain(..) {
            st.config.history[i].created = Some(time.clone());
        }
        st.clock = Some(time);
    }

    /// Stores what changed since `before` as the stage's next layer; returns its size.
    pub(crate) fn commit(
        &self,
        st: &mut StageState,
        before: &Index,
    ) -> std::result::Result<u64, String> {
        let changes = before.changes(&st.rootfs)?;
        let rootfs = st.rootfs.clone();
        self.commit_changes(st, &rootfs, &changes)
    }

    /// Stores `changes` (read from `source_root`) as the stage's next layer; returns its
    /// size.
    pub(crate) fn commit_changes(
        &self,
        st: &mut StageState,
        source_root: &std::path::Path,
        changes: &[rbuild_layer::Change],
    ) -> std::result::Result<u64, String> {
        let layer = commit_layer(self.store, source_root, changes, &self.write_options)?;
        lock(&self.made_here).insert(layer.descriptor.digest.clone());
        let size = layer.descriptor.size;
        st.layers.push(layer.descriptor);
        st.config.rootfs.diff_ids.push(layer.diff_id);
        Ok(size)
    }

    pub(crate) fn load_image(&self, reference: &str) -> std::result::Result<LoadedImage, String> {
        if reference.eq_ignore_ascii_case("scratch") {
            return Ok(base::scratch(&self.platform));
        }
        let record = self.bases.resolve(self.store, reference, &self.platform)?;
        base::load(self.store, &record)
    }

    /// The root filesystem a `--from` names: an earlier stage (name or index) or an image.
    pub(crate) fn root_of_from(
        &self,
        current: usize,
        from: &str,
    ) -> std::result::Result<PathBuf, String> {
        let stage = self
            .df
            .stage_by_name(from)
            .or_else(|| from.parse::<usize>().ok().filter(|&i| i < current));
        if let Some(i) = stage {
            // The lock is held while the stage's rootfs is brought up to date: two stages
            // reading it at once must not both apply its layers.
            let mut done = lock(&self.done);
            let output = done.get_mut(&i).ok_or_else(|| {
                format!("stage {from:?} has not been built (it must come before this stage)")
            })?;
            self.catch_up(&output.image.layers, &mut output.applied, &output.rootfs)
                .map_err(|e| e.to_string())?;
            return Ok(output.rootfs.clone());
        }
        let mut roots = lock(&self.image_roots);
        if let Some(root) = roots.get(from) {
            return Ok(root.clone());
        }
        let image = self.load_image(from)?;
        // Only read (COPY --from, read-only binds; a writable bind gets a copy): the
        // image's shared tree itself serves.
        let shared = match &self.trees {
            Some(trees) if !image.layers.is_empty() => trees
                .get_or_make(&image.layers, &|layers, dir| {
                    apply_layers(self.store, layers, dir)
                })
                .ok(),
            _ => None,
        };
        let root = match shared {
            Some(tree) => tree,
            None => {
                let root = self.dir.new_dir("from-image").map_err(|e| e.to_string())?;
                apply_layers(self.store, &image.layers, &root).map_err(|e| e.to_string())?;
                root
            }
        };
        roots.insert(from.to_string(), root.clone());
        Ok(root)
    }

    pub(crate) fn run_stage(&self, index: usize, progress: &mut dyn Progress) -> Result<()> {
        let stage = &self.df.stages[index];
        let label = self.stage_label(index);
        let from_origin = Origin {
            file: self.df.file.clone(),
            cmd: &stage.from,
        };
        let started = Instant::now();
        let base = self.df.stage_base(index, &self.global)?;
        // A stage built FROM an earlier one carries on with that stage's LLB state: its ARG
        // values stay in the environment and its ARGs in RUN's history (BuildKit's
        // `dispatchState.init`: `ds.state = ds.base.state`, `ds.buildArgs = append(ds.buildArgs,
        // ds.base.buildArgs...)`); the legacy builder starts from the image config alone.
        let (base_name, image, fs_key, inherited) = match &base {
            Base::Stage(i) => {
                let done = lock(&self.done);
                let output = done
                    .get(i)
                    .ok_or_else(|| from_origin.error("base stage was not built"))?;
                (
                    self.stage_label(*i),
                    output.image.clone(),
                    output.fs_key.clone(),
                    Some((output.env.clone(), output.build_args.clone())),
                )
            }
            Base::Image(reference) => {
                let image = self
                    .load_image(reference)
                    .map_err(|e| from_origin.error(e))?;
                let key = base_key(&image.id, &self.platform);
                (reference.clone(), image, key, None)
            }
        };
        let triggers = image.config.config.on_build.clone();
        let steps = 1 + triggers.len() + stage.commands.len();
        progress.event(&Event::StepStarted {
            stage: label.clone(),
            step: 1,
            steps,
            text: format!("FROM {base_name}"),
        });
        // Empty until a step that runs needs it: a stage served from the cache is never
        // extracted.
        let rootfs = self.dir.new_dir(&format!("rootfs-{index}"))?;
        let mut config = image.config.clone();
        // Docker runs a base's triggers once, in the child; they are not inherited.
        config.config.on_build.clear();
        // BuildKit's dispatchStages ("make sure that PATH is always set"): a base whose
        // config sets no PATH (an imported image, `FROM scratch`) gets the default one in
        // the stage's config and environment, except on Windows.
        if !self.platform.os.eq_ignore_ascii_case("windows")
            && !config
                .config
                .env
                .iter()
                .any(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == "PATH")
        {
            config
                .config
                .env
                .push(format!("PATH={}", rbuild_sandbox::DEFAULT_PATH));
        }
        let (env, build_args) = match inherited {
            Some((mut env, build_args)) => {
                // Then the image config's Env on top, as BuildKit's dispatchStages does.
                for (k, v) in env_pairs(&config.config.env) {
                    match env.iter_mut().find(|(ek, _)| *ek == k) {
                        Some(e) => e.1 = v,
                        None => env.push((k, v)),
                    }
                }
                (env, build_args)
            }
            None => (env_pairs(&config.config.env), Vec::new()),
        };
        let mut st = StageState {
            index,
            label: label.clone(),
            env,
            config,
            layers: image.layers.clone(),
            rootfs,
            build_args,
            cmd_set: false,
            applied: 0,
            layer_off_rootfs: false,
            fs_key,
            no_cache: stage_skips_cache(
                self.request.no_cache,
                &self.request.no_cache_filter,
                index,
                stage.name.as_deref(),
            ),
            clock: None,
            undated: Vec::new(),
        };
        progress.event(&Event::StepDone {
            stage: label.clone(),
            step: 1,
            seconds: seconds(started.elapsed()),
            layer_size: None,
        });

        let trigger_file = format!("ONBUILD trigger of {base_name}");
        let mut trigger_cmds = Vec::new();
        for trigger in &triggers {
            let parsed = parse_dockerfile(&trigger_file, &format!("FROM scratch\n{trigger}\n"))?;
            let cmd = parsed
                .stages
                .first()
                .and_then(|s| s.commands.first())
                .cloned()
                .ok_or_else(|| {
                    BuildError::other(format!("{trigger_file}: {trigger:?} is not an instruction"))
                })?;
            if matches!(
                cmd.instruction,
                Instruction::OnBuild(_) | Instruction::Maintainer(_)
            ) {
                return Err(BuildError::other(format!(
                    "{trigger_file}: {} isn't allowed as an ONBUILD trigger",
                    cmd.instruction.keyword()
                )));
            }
            trigger_cmds.push(cmd);
        }
        let commands = trigger_cmds
            .iter()
            .map(|c| (trigger_file.clone(), c))
            .chain(stage.commands.iter().map(|c| (self.df.file.clone(), c)));
        for (n, (file, cmd)) in commands.enumerate() {
            let step = n + 2;
            if self.cancelled.load(Ordering::SeqCst) {
                return Err(BuildError::Cancelled);
            }
            let started = Instant::now();
            progress.event(&Event::StepStarted {
                stage: label.clone(),
                step,
                steps,
                text: crate::downloads::redact_credentials(&cmd.location.original),
            });
            let origin = Origin { file, cmd };
            match self.dispatch(&mut st, &origin, step, progress)? {
                // The cache reported the hit itself.
                Some(StepEnd::Cached) => {}
                end => progress.event(&Event::StepDone {
                    stage: label.clone(),
                    step,
                    seconds: seconds(started.elapsed()),
                    layer_size: match end {
                        Some(StepEnd::Ran(size)) => Some(size),
                        _ => None,
                    },
                }),
            }
        }
        if !st.undated.is_empty() {
            // No layer step dated these: a stage of config-only steps, built now.
            let now = self.now();
            self.date_history(&mut st, &now);
        }
        let output = StageOutput {
            image: LoadedImage {
                config: st.config,
                layers: st.layers,
                id: st.fs_key.clone(),
            },
            rootfs: st.rootfs,
            applied: st.applied,
            fs_key: st.fs_key,
            env: st.env,
            build_args: st.build_args,
        };
        lock(&self.done).insert(index, output);
        Ok(())
    }

    /// Carries out one instruction; returns the size of the layer it made, if any.
    fn dispatch(
        &self,
        st: &mut StageState,
        origin: &Origin<'_>,
        step: usize,
        progress: &mut dyn Progress,
    ) -> Result<Option<StepEnd>> {
        let expanded = match &origin.cmd.instruction {
            // BuildKit's dispatch expands every instruction but ARG ("ARG command value could
            // be ignored, so defer handling the expansion error"): an ARG's default is
            // expanded below, only when no --build-arg replaces it.
            Instruction::Arg(_) => origin.cmd.clone(),
            _ => origin.cmd.expand(&origin.file, &self.df.lexer(), &st.env)?,
        };
        let cfg = &mut st.config.config;
        let created_by = match &expanded.instruction {
            Instruction::From(_) => return Err(origin.error("FROM inside a stage")),
            Instruction::Run(run) => {
                let op = self
                    .lowering()
                    .run(&st.view(), run)
                    .map_err(|e| origin.error(e))?;
                let created_by = self.run_created_by(st, &op.command);
                return self
                    .layer_step(
                        st,
                        &StepOp::Run(op),
                        created_by,
                        step,
                        progress,
                        |b, st, progress| b.dispatch_run(st, origin, run, step, progress),
                    )
                    .map(Some);
            }
            Instruction::Copy(_) | Instruction::Add(_) => {
                let spec: crate::copy::CopySpec = match &expanded.instruction {
                    Instruction::Copy(c) => c.clone().into(),
                    Instruction::Add(a) => a.clone().into(),
                    _ => unreachable!(),
                };
                let op = self.lower_copy(st, origin, &spec)?;
                let created_by =
                    crate::copy::history_text(if spec.is_add { "ADD" } else { "COPY" }, &spec);
                return self
                    .layer_step(st, &op, created_by, step, progress, |b, st, progress| {
                        b.dispatch_copy(st, origin, &spec, progress)
                    })
                    .map(Some);
            }
            Instruction::Workdir(w) => {
                return self.dispatch_workdir(st, origin, &w.path, step, progress)
            }
            Instruction::Env(env) => {
                let mut msg = String::from("ENV");
                for pair in &env.pairs {
                    // BuildKit's addEnv: a variable already set keeps its place.
                    let entry = format!("{}={}", pair.key, pair.value);
                    let existing = cfg
                        .env
                        .iter_mut()
                        .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == pair.key);
                    match existing {
                        Some(e) => *e = entry,
                        None => cfg.env.push(entry),
                    }
                    msg.push_str(&format!(" {}={}", pair.key, pair.value));
                }
                for pair in &env.pairs {
                    st.set_env(&pair.key, &pair.value);
                }
                msg
            }
            Instruction::Arg(arg) => {
                let mut parts = Vec::new();
                for decl in &arg.args {
                    let default = match &decl.value {
                        Some(raw) if !self.opts.build_args.contains_key(&decl.key) => Some(
                            self.df
                                .lexer()
                                .process_word(raw, &st.env)
                                .map_err(|e| origin.error(e.to_string()))?,
                        ),
                        other => other.clone(),
                    };
                    let value = self.df.stage_arg_value(
                        &decl.key,
                        default.as_deref(),
                        &self.global,
                        self.opts,
                    );
                    match &value {
                        Some(v) => {
                            parts.push(format!("{}={v}", decl.key));
                            st.set_env(&decl.key, v);
                        }
                        None => parts.push(decl.key.clone()),
                    }
                    // BuildKit's runCommandString shows a redeclared ARG at its first
                    // place, with the newest value.
                    let value = value.unwrap_or_default();
                    match st.build_args.iter_mut().find(|(k, _)| k == &decl.key) {
                        Some(entry) => entry.1 = value,
                        None => st.build_args.push((decl.key.clone(), value)),
                    }
                }
                format!("ARG {}", parts.join(" "))
            }
            Instruction::Label(label) => {
                let mut msg = String::from("LABEL");
                for pair in &label.pairs {
                    cfg.labels.insert(pair.key.clone(), pair.value.clone());
                    msg.push_str(&format!(" {}={}", pair.key, pair.value));
                }
                msg
            }
            Instruction::Maintainer(m) => {
                st.config.author = m.maintainer.clone();
                format!("MAINTAINER {}", m.maintainer)
            }
            Instruction::Expose(expose) => {
                let mut added = BTreeMap::new();
                for spec in &expose.ports {
                    for port in expand_port_spec(spec).map_err(|e| origin.error(e))? {
                        added.insert(port, ());
                    }
                }
                for port in added.keys() {
                    cfg.exposed_ports.insert(port.clone(), Default::default());
                }
                let shown: Vec<String> = added.keys().map(|p| format!("{p}:{{}}")).collect();
                format!("EXPOSE map[{}]", shown.join(" "))
            }
            Instruction::Volume(v) => {
                for path in &v.volumes {
                    if path.trim().is_empty() {
                        return Err(origin.error("VOLUME specified can not be an empty string"));
                    }
                    cfg.volumes.insert(path.clone(), Default::default());
                }
                format!("VOLUME {}", go_list(&v.volumes))
            }
            Instruction::User(u) => {
                cfg.user = u.user.clone();
                format!("USER {}", u.user)
            }
            Instruction::Cmd(c) => {
                let args = command_args(&c.cmd, &st.shell());
                st.config.config.cmd = Some(args.clone());
                // BuildKit sets it on every CMD (not on ENTRYPOINT).
                st.config.config.args_escaped = true;
                st.cmd_set = true;
                format!("CMD {}", go_quote_list(&args))
            }
            Instruction::Entrypoint(e) => {
                let args = command_args(&e.cmd, &st.shell());
                st.config.config.entrypoint = Some(args.clone());
                if !st.cmd_set {
                    st.config.config.cmd = None;
                }
                format!("ENTRYPOINT {}", go_quote_list(&args))
            }
            Instruction::Healthcheck(h) => {
                let hc = rbuild_image::Healthcheck {
                    test: h.test.clone(),
                    interval: h.interval,
                    timeout: h.timeout,
                    start_period: h.start_period,
                    start_interval: h.start_interval,
                    retries: h.retries,
                    ..Default::default()
                };
                let msg = history::healthcheck(&hc);
                cfg.healthcheck = Some(hc);
                msg
            }
            Instruction::Shell(s) => {
                cfg.shell = s.shell.clone();
                format!("SHELL {}", go_list(&s.shell))
            }
            Instruction::StopSignal(s) => {
                cfg.stop_signal = s.signal.clone();
                format!("STOPSIGNAL {}", s.signal)
            }
            Instruction::OnBuild(o) => {
                // BuildKit records no history entry for ONBUILD.
                cfg.on_build.push(o.expression.clone());
                return Ok(None);
            }
        };
        self.add_history(st, created_by, false);
        Ok(None)
    }

    /// WORKDIR: sets the config and creates the directory (owned by USER, as BuildKit) in
    /// a layer of its own, except for `/`.
    fn dispatch_workdir(
        &self,
        st: &mut StageState,
        origin: &Origin<'_>,
        path: &str,
        step: usize,
        progress: &mut dyn Progress,
    ) -> Result<Option<StepEnd>> {
        let wd = fsops::join_container(&st.workdir(), path);
        st.config.config.working_dir = wd.clone();
        if wd == "/" {
            self.add_history(st, format!("WORKDIR {wd}"), false);
            return Ok(None);
        }
        let op = self.lowering().workdir(&st.view(), &wd);
        let created_by = format!("WORKDIR {wd}");
        let end = self.layer_step(
            st,
            &StepOp::Workdir(op),
            created_by,
            step,
            progress,
            |b, st, progress| {
                // BuildKit's `llb.Mkdir(wd, 0755, llb.WithParents(true), llb.WithUser(user))`:
                // the owner of a file operation, not a RUN's user (see `fileop_user`).
                let owner = if st.config.config.user.is_empty() {
                    (0, 0)
                } else {
                    let user = &st.config.config.user;
                    let owner = crate::fileop_user::file_op_owner(&st.rootfs, user)
                        .map_err(|e| origin.error(e))?;
                    if let Some(message) = owner.warning(&format!("WORKDIR {wd} under USER {user}"))
                    {
                        progress.event(&crate::progress::Event::Warning { message });
                    }
                    owner.ids()
                };
                let before = b.scan(&st.rootfs).map_err(|e| origin.error(e))?;
                fsops::ensure_dir(&st.rootfs, &wd, owner).map_err(|e| origin.error(e))?;
                b.commit(st, &before).map_err(|e| origin.error(e))
            },
        )?;
        Ok(Some(end))
    }

    /// Writes the target stage's image and tags it.
    pub(crate) fn finish(&self, target: usize) -> Result<(ImageRecord, Vec<String>)> {
        // The image was made when its last history entry was (BuildKit's patchImageConfig:
        // the base's `created` is dropped, the last dated entry gives it): a build served
        // from the cache gives the image of the build that filled it. With
        // SOURCE_DATE_EPOCH a later time is clamped to the epoch ("if epoch is set then
        // clamp creation time"), so a base image's own time never shows.
        let created = {
            let done = lock(&self.done);
            let history = &done
                .get(&target)
                .ok_or_else(|| BuildError::other("the target stage was not built"))?
                .image
                .config
                .history;
            let last = history
                .iter()
                .rev()
                .find_map(|h| h.created.clone())
                .unwrap_or_else(|| self.now());
            match self.request.source_date_epoch {
                Some(epoch) => {
                    let epoch = history::rfc3339(epoch, 0);
                    if crate::step_cache::time_order(&last) > crate::step_cache::time_order(&epoch)
                    {
                        epoch
                    } else {
                        last
                    }
                }
                None => last,
            }
        };
        let output = lock(&self.done)
            .remove(&target)
            .ok_or_else(|| BuildError::other("the target stage was not built"))?;
        self.fetch_pending(&output.image.layers)?;
        let mut config = output.image.config;
        config.created = Some(created);
        for (k, v) in &self.request.labels {
            config.config.labels.insert(k.clone(), v.clone());
        }
        let record = self
            .store
            .put_image(&config, &output.image.layers)
            .map_err(|e| BuildError::other(format!("storing the image: {e}")))?;
        let mut tags = Vec::new();
        for tag in &self.request.tags {
            self.store
                .tag(tag, &record.manifest)
                .map_err(|e| BuildError::other(format!("tagging {tag:?}: {e}")))?;
            tags.push(tag.clone());
        }
        Ok((record, tags))
    }
}

/// Locks `mutex`; a thread that panicked while holding it has already failed the build, so
/// its data is still used (the panic is reported by the thread's join).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Exec form as is; shell form through the SHELL.
pub(crate) fn command_args(cmd: &ShellOrExec, shell: &[String]) -> Vec<String> {
    match cmd {
        ShellOrExec::Exec(v) => v.clone(),
        ShellOrExec::Shell(s) => {
            let mut args = shell.to_vec();
            args.push(s.clone());
            args
        }
    }
}

/// `80`, `80/udp`, `8000-8002/tcp` → `80/tcp`, ... (Docker's `nat.ParsePortSpecs`).
fn expand_port_spec(spec: &str) -> std::result::Result<Vec<String>, String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let bad = || format!("invalid containerPort: {ports}");
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(format!(
            "invalid range specified for container port: {ports}"
        ));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}
