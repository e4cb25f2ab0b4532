//! The stage graph: what each stage is built on, the stages its `COPY --from` and `RUN
//! --mount from=` need, ONBUILD triggers, and the build plan (stages in dependency order,
//! grouped by what can run in parallel).

use std::collections::{BTreeMap, BTreeSet};

use super::{
    parse_dockerfile, Base, BuildOptions, BuildPlan, Dependency, DependencyKind, Dockerfile, Stage,
    PROXY_ARGS,
};
use crate::error::Error;
use crate::instructions::{Command, Instruction, MountType};

impl Dockerfile {
    /// What stage `stage` is built on: FROM expanded with the global scope, then matched
    /// against earlier stage names as written. Stage names are stored lowercased, and
    /// BuildKit's `addState` looks the FROM name up in that map without lowercasing it, so
    /// `FROM Build` after `AS Build` names an image (an invalid one), not the stage.
    pub fn stage_base(&self, stage: usize, global: &[(String, String)]) -> Result<Base, Error> {
        let s = &self.stages[stage];
        if let Some(key) = self.replacing_context(stage) {
            return Ok(Base::Context(key));
        }
        let expanded = s.from.expand(&self.file, &self.lexer(), &global.to_vec())?;
        let Instruction::From(f) = expanded.instruction else {
            unreachable!("FROM expands to FROM")
        };
        if f.image.is_empty() {
            return Err(self.error_at(
                &s.from,
                None,
                format!("base name ({}) should not be blank", s.base().image),
            ));
        }
        let named = self
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(f.image.as_str()));
        match named {
            Some(i) if i < stage => Ok(match self.replacing_context(i) {
                Some(key) => Base::Context(key),
                None => Base::Stage(i),
            }),
            Some(_) => Err(self.error_at(
                &s.from,
                None,
                format!("stage {:?} refers to itself or to a later stage", f.image),
            )),
            None => Ok(match self.named_context(&f.image) {
                Some(key) => Base::Context(key),
                None => Base::Image(f.image),
            }),
        }
    }

    /// Resolves a `--from` value (stage name, stage index, or image).
    fn resolve_from(&self, stage: usize, cmd: &Command, from: &str) -> Result<Base, Error> {
        if let Some(key) = self.named_context(from) {
            return Ok(Base::Context(key));
        }
        if let Some(i) = self.stage_by_name(from) {
            if i == stage {
                return Err(self.error_at(
                    cmd,
                    Some(from),
                    format!("stage {from:?} cannot refer to itself"),
                ));
            }
            return Ok(Base::Stage(i));
        }
        if let Ok(i) = from.parse::<usize>() {
            if i >= stage {
                return Err(self.error_at(
                    cmd,
                    Some(from),
                    format!("invalid stage index {i}: --from can only name one of the {stage} stage(s) before this one"),
                ));
            }
            return Ok(match self.replacing_context(i) {
                Some(key) => Base::Context(key),
                None => Base::Stage(i),
            });
        }
        Ok(Base::Image(from.to_string()))
    }

    /// The stages stage `stage` needs: its FROM base, `COPY --from` and `RUN --mount from=`.
    /// A `--from` that is not a stage name or index is an image reference (as in BuildKit).
    pub fn dependencies(
        &self,
        stage: usize,
        global: &[(String, String)],
        opts: &BuildOptions,
    ) -> Result<Vec<Dependency>, Error> {
        let s = &self.stages[stage];
        let mut deps = Vec::new();
        // A stage a named context replaces is not built: it needs nothing.
        if self.replacing_context(stage).is_some() {
            return Ok(deps);
        }
        if let Base::Stage(i) = self.stage_base(stage, global)? {
            deps.push(Dependency {
                stage: i,
                kind: DependencyKind::From,
                line: s.from.location.start_line,
            });
        }
        let lexer = self.lexer();
        // Built as the commands are walked (not recomputed per command, which would make
        // planning quadratic in the number of instructions), from the base stage's if the
        // stage is built FROM one (as `stage_env`).
        let base = self.stage_base(stage, global)?;
        let mut env: Vec<(String, String)> = match base {
            Base::Stage(i) => self.stage_env(i, self.stages[i].commands.len(), global, opts)?,
            Base::Image(_) | Base::Context(_) => Vec::new(),
        };
        // The ONBUILD triggers of a base stage run first, and their `--from`s are needs of
        // this stage (BuildKit's `initOnBuildTriggers`: "creates the commands and
        // dependencies for them").
        // So do those of a named context's image the build read before planning.
        let triggers = match &base {
            Base::Stage(i) => self.onbuild_triggers(*i, &s.from)?,
            Base::Context(key) => {
                self.parse_triggers(self.context_trigger_texts(key).iter(), &s.from)?
            }
            Base::Image(_) => Vec::new(),
        };
        for cmd in triggers.iter().chain(&s.commands) {
            let uses_from = match &cmd.instruction {
                Instruction::Copy(c) => c.from.is_some(),
                Instruction::Run(r) => !r.mounts.is_empty(),
                _ => false,
            };
            if !uses_from {
                self.extend_env(cmd, &lexer, &mut env, global, opts)?;
                continue;
            }
            let expanded = cmd.expand(&self.file, &lexer, &env)?;
            let mut froms = Vec::new();
            match &expanded.instruction {
                Instruction::Copy(c) => {
                    froms.extend(c.from.iter().map(|f| (f.clone(), DependencyKind::CopyFrom)))
                }
                Instruction::Run(r) => froms.extend(r.mounts.iter().filter_map(|m| {
                    let m = m.parsed.as_ref()?;
                    // Secret and ssh mounts have no source stage.
                    if matches!(m.kind, MountType::Secret | MountType::Ssh) {
                        return None;
                    }
                    m.from.clone().map(|f| (f, DependencyKind::MountFrom))
                })),
                _ => {}
            }
            for (from, kind) in froms {
                if let Base::Stage(i) = self.resolve_from(stage, cmd, &from)? {
                    deps.push(Dependency {
                        stage: i,
                        kind,
                        line: cmd.location.start_line,
                    });
                }
            }
        }
        Ok(deps)
    }

    /// The ONBUILD triggers stage `base` leaves to a stage built FROM it, as commands placed
    /// at that stage's FROM (`at`), as BuildKit places them ("reset the location to the
    /// onbuild trigger"). Each is parsed as a Dockerfile line of its own, as the executor
    /// parses them when it runs them.
    pub fn onbuild_triggers(&self, base: usize, at: &Command) -> Result<Vec<Command>, Error> {
        let expressions =
            self.stages[base]
                .commands
                .iter()
                .filter_map(|cmd| match &cmd.instruction {
                    Instruction::OnBuild(onbuild) => Some(&onbuild.expression),
                    _ => None,
                });
        self.parse_triggers(expressions, at)
    }

    /// ONBUILD trigger expressions parsed, each as a Dockerfile line of its own, placed at
    /// `at`.
    fn parse_triggers<'e>(
        &self,
        expressions: impl Iterator<Item = &'e String>,
        at: &Command,
    ) -> Result<Vec<Command>, Error> {
        let mut triggers = Vec::new();
        for expression in expressions {
            let text = format!("FROM scratch\n{expression}\n");
            let parsed = parse_dockerfile(&self.file, &text).map_err(|e| {
                self.error_at(
                    at,
                    None,
                    format!("ONBUILD trigger {expression:?}: {}", e.message),
                )
            })?;
            let mut trigger = match parsed.stages.first().map(|s| s.commands.as_slice()) {
                Some([one]) => one.clone(),
                _ => {
                    return Err(self.error_at(
                        at,
                        None,
                        format!("ONBUILD trigger {expression:?} is not one instruction"),
                    ))
                }
            };
            trigger.location = at.location.clone();
            triggers.push(trigger);
        }
        Ok(triggers)
    }

    /// The stages needed for `opts.target` (or the last stage), dependencies first, with
    /// the groups that can run in parallel. Cycles are errors.
    pub fn build_plan(&self, opts: &BuildOptions) -> Result<BuildPlan, Error> {
        let target = self.target_stage(opts.target.as_deref())?;
        if let Some(key) = self.replacing_context(target) {
            let s = &self.stages[target];
            return Err(self.error_at(
                &s.from,
                None,
                format!(
                    "the target stage {} is replaced by the named context {key:?}: rbuild \
                     cannot give a named context as the build's result",
                    stage_label(s)
                ),
            ));
        }
        let global = self.global_args(opts)?;
        let mut depth: BTreeMap<usize, usize> = BTreeMap::new();
        let mut order = Vec::new();
        let mut visiting = BTreeSet::new();
        self.visit(target, &global, opts, &mut visiting, &mut depth, &mut order)?;
        let max = depth.values().copied().max().unwrap_or(0);
        let mut levels = vec![Vec::new(); max + 1];
        for (&stage, &d) in &depth {
            levels[d].push(stage);
        }
        Ok(BuildPlan {
            target,
            order,
            levels,
        })
    }

    fn visit(
        &self,
        stage: usize,
        global: &[(String, String)],
        opts: &BuildOptions,
        visiting: &mut BTreeSet<usize>,
        depth: &mut BTreeMap<usize, usize>,
        order: &mut Vec<usize>,
    ) -> Result<usize, Error> {
        if let Some(&d) = depth.get(&stage) {
            return Ok(d);
        }
        if !visiting.insert(stage) {
            let s = &self.stages[stage];
            return Err(self.error_at(
                &s.from,
                None,
                format!("circular dependency detected on stage: {}", stage_label(s)),
            ));
        }
        let mut d = 0;
        for dep in self.dependencies(stage, global, opts)? {
            d = d.max(self.visit(dep.stage, global, opts, visiting, depth, order)? + 1);
        }
        visiting.remove(&stage);
        depth.insert(stage, d);
        order.push(stage);
        Ok(d)
    }

    /// `--build-arg`s no ARG declares (BuildKit warns about these); proxy args excluded.
    pub fn unused_build_args(&self, opts: &BuildOptions) -> Vec<String> {
        let declared: BTreeSet<&str> = self
            .meta_args
            .iter()
            .chain(self.stages.iter().flat_map(|s| s.commands.iter()))
            .filter_map(|c| match &c.instruction {
                Instruction::Arg(a) => Some(a.args.iter().map(|d| d.key.as_str())),
                _ => None,
            })
            .flatten()
            .collect();
        opts.build_args
            .keys()
            .filter(|k| !declared.contains(k.as_str()) && !PROXY_ARGS.contains(&k.as_str()))
            .cloned()
            .collect()
    }
}

fn stage_label(s: &Stage) -> String {
    s.name.clone().unwrap_or_else(|| s.index.to_string())
}
