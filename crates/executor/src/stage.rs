//! Running one stage: its FROM (base image, `scratch` or an earlier stage, then the base's
//! ONBUILD triggers), the dispatch of each instruction — RUN (`run.rs`), COPY/ADD
//! (`copy.rs`) and WORKDIR lowered to step ops and run through the cache (`step_cache.rs`),
//! config-only instructions in `config_ops.rs` — and writing the target's image.

use std::sync::atomic::Ordering;
use std::time::Instant;

use rbuild_dockerfile::instructions::Instruction;
use rbuild_dockerfile::{parse_dockerfile, Base};
use rbuild_store::ImageRecord;

use crate::base::LoadedImage;
use crate::context::{lock, BuildContext, Origin};
use crate::copy_spec::CopySpec;
use crate::error::{BuildError, Result};
use crate::fsops;
use crate::history;
use crate::progress::{seconds, Event, Progress};
use crate::runner::Step;
use crate::state::{StageOutput, StageState};
use crate::step_cache::{base_key, stage_skips_cache, StepEnd};

/// `KEY=value` entries as pairs.
fn env_pairs(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect()
}

impl BuildContext<'_> {
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
                let done = lock(&self.shared.done);
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
            Base::Context(name) => {
                let image = self.load_named(name).map_err(|e| from_origin.error(e))?;
                let key = base_key(&image.id, &self.platform);
                (name.clone(), image, key, None)
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
            pending_merge: None,
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
            crate::run::check_network_entitlement(self.request, &trigger_file, &cmd.instruction)?;
            trigger_cmds.push(cmd);
        }
        let commands = trigger_cmds
            .iter()
            .map(|c| (trigger_file.clone(), c))
            .chain(stage.commands.iter().map(|c| (self.df.file.clone(), c)));
        for (n, (file, cmd)) in commands.enumerate() {
            let step = n + 2;
            if self.shared.cancelled.load(Ordering::SeqCst) {
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
            st.date_history(&now, self.request.source_date_epoch);
        }
        let output = StageOutput {
            image: LoadedImage {
                config: st.config,
                layers: st.layers,
                id: st.fs_key.clone(),
            },
            rootfs: st.rootfs,
            applied: st.applied,
            pending_merge: st.pending_merge,
            fs_key: st.fs_key,
            env: st.env,
            build_args: st.build_args,
        };
        lock(&self.shared.done).insert(index, output);
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
        let created_by = match &expanded.instruction {
            Instruction::From(_) => return Err(origin.error("FROM inside a stage")),
            Instruction::Run(run) => {
                let op = self
                    .lowering()
                    .run(&st.view(), run)
                    .map_err(|e| origin.error(e))?;
                let created_by = self.run_created_by(st, &op.command);
                let step_to_run = Step::Run { op, run };
                return self
                    .layer_step(st, origin, &step_to_run, created_by, step, progress)
                    .map(Some);
            }
            Instruction::Copy(_) | Instruction::Add(_) => {
                let spec: CopySpec = match &expanded.instruction {
                    Instruction::Copy(c) => c.clone().into(),
                    Instruction::Add(a) => a.clone().into(),
                    _ => unreachable!(),
                };
                let op = self.lower_copy(st, origin, &spec)?;
                let created_by =
                    crate::copy_spec::history_text(if spec.is_add { "ADD" } else { "COPY" }, &spec);
                let step_to_run = Step::Copy { op, spec: &spec };
                return self
                    .layer_step(st, origin, &step_to_run, created_by, step, progress)
                    .map(Some);
            }
            Instruction::Workdir(w) => {
                return self.dispatch_workdir(st, origin, &w.path, step, progress)
            }
            other => match self.apply_config(st, origin, other)? {
                Some(created_by) => created_by,
                None => return Ok(None),
            },
        };
        st.add_history(created_by, false);
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
        // BuildKit's `NormalizeWorkdir` joins a relative path to the current directory and
        // cleans it, but keeps an absolute one as written (`WORKDIR $dir/` stays
        // `/another/dir/`): that text is the config's WorkingDir and the history's.
        let wd = if path.starts_with('/') {
            path.to_string()
        } else {
            fsops::join_container(&st.workdir(), path)
        };
        st.config.config.working_dir = wd.clone();
        if wd == "/" {
            st.add_history(format!("WORKDIR {wd}"), false);
            return Ok(None);
        }
        let op = self.lowering().workdir(&st.view(), &st.workdir());
        let created_by = format!("WORKDIR {wd}");
        let end = self.layer_step(st, origin, &Step::Workdir(op), created_by, step, progress)?;
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
            let done = lock(&self.shared.done);
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
        let output = lock(&self.shared.done)
            .remove(&target)
            .ok_or_else(|| BuildError::other("the target stage was not built"))?;
        // The image's registry-cache layers stay in the registry until read (lazy): an
        // all-hit build downloads none of them.
        self.settle_pending(&output.image.layers, true)?;
        let mut config = output.image.config;
        config.created = Some(created);
        for (k, v) in &self.request.labels {
            config.config.labels.insert(k.clone(), v.clone());
        }
        // A local image keeps the plain layers its steps made; they are compressed when they
        // leave the machine (`Store::shipped_manifest`), or here when the build ships them.
        let layers = if self.request.target_ships {
            self.ship_layers(&output.image.layers, &config.rootfs.diff_ids)?
        } else {
            output.image.layers.clone()
        };
        let record = self
            .store
            .put_image(&config, &layers)
            .map_err(BuildError::store("storing the image"))?;
        let mut tags = Vec::new();
        for tag in &self.request.tags {
            self.store
                .tag(tag, &record.manifest)
                .map_err(BuildError::store(format!("tagging {tag:?}")))?;
            tags.push(tag.clone());
        }
        Ok((record, tags))
    }
}
