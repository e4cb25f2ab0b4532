//! The stage model: a parsed Dockerfile split into build stages, global ARGs, `--target`
//! resolution, build arguments (defaults, overrides, predefined platform and proxy args)
//! and the stage dependency graph.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rbuild_shell::{ExpansionBudget, Lexer};
use serde::Serialize;

use crate::error::{Error, Source};
use crate::expand::expand_instruction;
use crate::instructions::{parse_command, Command, Instruction, MountType};
use crate::limits::{MAX_DOCKERFILE_BYTES, MAX_EXPANSION_BYTES, MAX_INSTRUCTIONS, MAX_STAGES};
use crate::syntax::{self, Directive, Warning};

pub use crate::build_options::{BuildOptions, Platform, PROXY_ARGS};

/// One build stage: its FROM and the commands after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    pub index: usize,
    /// Lower-cased `AS` name.
    pub name: Option<String>,
    /// The FROM command (always `Instruction::From`).
    pub from: Command,
    pub commands: Vec<Command>,
}

impl Stage {
    pub fn base(&self) -> &crate::instructions::From {
        match &self.from.instruction {
            Instruction::From(f) => f,
            _ => unreachable!("a stage always starts with FROM"),
        }
    }
}

/// A whole parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    /// The name used in errors (as the caller gave it).
    pub file: String,
    pub escape: char,
    pub directives: Vec<Directive>,
    pub warnings: Vec<Warning>,
    /// ARG instructions before the first FROM.
    pub meta_args: Vec<Command>,
    pub stages: Vec<Stage>,
    #[serde(skip)]
    text: String,
    /// Shared by every lexer of this Dockerfile: bounds the total text expansion produces.
    #[serde(skip)]
    budget: SharedBudget,
}

/// The expansion budget of a [`Dockerfile`]: bookkeeping, not content, so it never makes
/// two Dockerfiles differ.
#[derive(Debug, Clone)]
struct SharedBudget(Arc<ExpansionBudget>);

impl Default for SharedBudget {
    fn default() -> Self {
        SharedBudget(ExpansionBudget::new(MAX_EXPANSION_BYTES))
    }
}

impl PartialEq for SharedBudget {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for SharedBudget {}

/// What a stage builds on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    /// Another stage of this file.
    Stage(usize),
    /// An image reference (expanded), or `scratch`.
    Image(String),
}

/// Why one stage needs another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DependencyKind {
    From,
    CopyFrom,
    MountFrom,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependency {
    pub stage: usize,
    pub kind: DependencyKind,
    /// The line of the instruction that creates the dependency.
    pub line: usize,
}

/// The stages a target needs, in an order an executor can run them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildPlan {
    pub target: usize,
    /// Dependencies before dependents; the target last.
    pub order: Vec<usize>,
    /// Groups of mutually independent stages: every stage in `levels[i]` only needs stages
    /// of earlier levels, so each level can run in parallel.
    pub levels: Vec<Vec<usize>>,
}

/// Parses a Dockerfile: syntax, typed instructions and stages. `file` is used in errors.
pub fn parse_dockerfile(file: &str, text: &str) -> Result<Dockerfile, Error> {
    let source = Source::new(file, text);
    if text.len() as u64 > MAX_DOCKERFILE_BYTES {
        return Err(Error {
            file: file.to_string(),
            line: 1,
            column: 1,
            message: format!(
                "the Dockerfile is {} bytes, more than the limit of {MAX_DOCKERFILE_BYTES}",
                text.len()
            ),
            source_line: None,
        });
    }
    let parsed =
        syntax::parse(text).map_err(|e| source.error(e.start_line, e.end_line, None, e.message))?;
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    if parsed.ast.children.len() > MAX_INSTRUCTIONS {
        let node = &parsed.ast.children[MAX_INSTRUCTIONS];
        return Err(source.error(
            node.start_line,
            node.end_line,
            None,
            format!("more than the limit of {MAX_INSTRUCTIONS} instructions"),
        ));
    }
    for node in &parsed.ast.children {
        let cmd = parse_command(node, &source)?;
        check_copy_from_unexpanded(&cmd, parsed.escape).map_err(|message| {
            source.error(node.start_line, node.end_line, Some("--from"), message)
        })?;
        if matches!(cmd.instruction, Instruction::From(_)) && stages.len() == MAX_STAGES {
            return Err(source.error(
                node.start_line,
                node.end_line,
                None,
                format!("more than the limit of {MAX_STAGES} build stages"),
            ));
        }
        match (&cmd.instruction, stages.last_mut()) {
            (Instruction::From(f), _) => stages.push(Stage {
                index: stages.len(),
                name: f.name.clone(),
                from: cmd,
                commands: Vec::new(),
            }),
            (Instruction::Arg(_), None) => meta_args.push(cmd),
            (_, None) => {
                return Err(source.error(
                    node.start_line,
                    node.end_line,
                    None,
                    "no build stage in current context",
                ))
            }
            (_, Some(stage)) => stage.commands.push(cmd),
        }
    }
    Ok(Dockerfile {
        file: file.to_string(),
        escape: parsed.escape,
        directives: parsed.directives,
        warnings: parsed.warnings,
        meta_args,
        stages,
        text: text.to_string(),
        budget: SharedBudget::default(),
    })
}

impl Dockerfile {
    fn source(&self) -> Source<'_> {
        Source::new(&self.file, &self.text)
    }

    fn error_at(&self, cmd: &Command, needle: Option<&str>, message: impl Into<String>) -> Error {
        self.source().error(
            cmd.location.start_line,
            cmd.location.end_line,
            needle,
            message,
        )
    }

    /// A lexer with this file's escape character.
    /// A lexer with this file's escape character, sharing this file's expansion budget
    /// ([`crate::limits::MAX_EXPANSION_BYTES`]).
    pub fn lexer(&self) -> Lexer {
        Lexer::new(self.escape).with_budget(self.budget.0.clone())
    }

    /// The stage with this name, case-insensitively: what `--target`, `COPY --from` and
    /// `RUN --mount from=` name (BuildKit's `findStateByName` lowercases the name). `FROM`
    /// matches exactly instead ([`Self::stage_base`]).
    pub fn stage_by_name(&self, name: &str) -> Option<usize> {
        let name = name.to_lowercase();
        self.stages
            .iter()
            .position(|s| s.name.as_deref() == Some(name.as_str()))
    }

    /// `--target`: a stage name, or the last stage when none is given.
    pub fn target_stage(&self, target: Option<&str>) -> Result<usize, Error> {
        let fail = |message: String| Error {
            file: self.file.clone(),
            line: 1,
            column: 1,
            message,
            source_line: None,
        };
        if self.stages.is_empty() {
            return Err(fail("dockerfile contains no stages to build".into()));
        }
        match target {
            None | Some("") => Ok(self.stages.len() - 1),
            Some(t) => self
                .stage_by_name(t)
                .ok_or_else(|| fail(format!("target stage {t:?} could not be found"))),
        }
    }

    /// The global scope: predefined platform args, then every global ARG with its value
    /// (the `--build-arg` override, else its default expanded with what came before).
    /// Only this scope is visible in FROM lines.
    pub fn global_args(&self, opts: &BuildOptions) -> Result<Vec<(String, String)>, Error> {
        let lexer = self.lexer();
        let mut scope = opts.predefined_args();
        scope.push(("TARGETSTAGE".to_string(), self.target_stage_name(opts)));
        for cmd in &self.meta_args {
            let Instruction::Arg(arg) = &cmd.instruction else {
                continue;
            };
            let mut assigned = Vec::new();
            for decl in &arg.args {
                let value = match (opts.build_args.get(&decl.key), &decl.value) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(default)) => Some(
                        lexer
                            .process_word(default, &scope)
                            .map_err(|e| self.error_at(cmd, None, e.to_string()))?,
                    ),
                    (None, None) => None,
                };
                if let Some(v) = value {
                    assigned.push((decl.key.clone(), v));
                }
            }
            scope.extend(assigned);
        }
        Ok(scope)
    }

    /// BuildKit's `TARGETSTAGE`: the `--target` stage, else the last stage's name, else
    /// `default` (Dockerfile 1.26; `testTargetStageNameArg`).
    pub fn target_stage_name(&self, opts: &BuildOptions) -> String {
        match opts.target.as_deref() {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => self
                .stages
                .last()
                .and_then(|s| s.name.clone())
                .unwrap_or_else(|| "default".to_string()),
        }
    }

    /// The value of a stage-level `ARG key[=default]`: the `--build-arg`, else the default
    /// (already expanded), else the global ARG of that name, else a predefined platform arg.
    pub fn stage_arg_value(
        &self,
        key: &str,
        expanded_default: Option<&str>,
        global: &[(String, String)],
        opts: &BuildOptions,
    ) -> Option<String> {
        if let Some(v) = opts.build_args.get(key) {
            return Some(v.clone());
        }
        if let Some(d) = expanded_default {
            return Some(d.to_string());
        }
        let declared_globally = self.meta_args.iter().any(|c| match &c.instruction {
            Instruction::Arg(a) => a.args.iter().any(|d| d.key == key),
            _ => false,
        });
        let predefined =
            key == "TARGETSTAGE" || opts.predefined_args().iter().any(|(k, _)| k == key);
        if declared_globally || predefined {
            return global
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone());
        }
        None
    }

    /// The environment a stage's command at `upto` sees for expansion: the ARGs and ENVs
    /// declared in the stage before it (global ARGs only where redeclared), after those of
    /// the stage it is built FROM, if any.
    pub fn stage_env(
        &self,
        stage: usize,
        upto: usize,
        global: &[(String, String)],
        opts: &BuildOptions,
    ) -> Result<Vec<(String, String)>, Error> {
        let lexer = self.lexer();
        // A stage built FROM an earlier stage starts with that stage's ARG values and ENVs
        // (BuildKit's `dispatchState.init` takes the base stage's state).
        let mut env: Vec<(String, String)> = match self.stage_base(stage, global) {
            Ok(Base::Stage(i)) if i < stage => {
                self.stage_env(i, self.stages[i].commands.len(), global, opts)?
            }
            _ => Vec::new(),
        };
        for cmd in self.stages[stage].commands.iter().take(upto) {
            self.extend_env(cmd, &lexer, &mut env, global, opts)?;
        }
        Ok(env)
    }

    /// Adds what an ARG or ENV command declares to a stage's expansion environment.
    fn extend_env(
        &self,
        cmd: &Command,
        lexer: &Lexer,
        env: &mut Vec<(String, String)>,
        global: &[(String, String)],
        opts: &BuildOptions,
    ) -> Result<(), Error> {
        match &cmd.instruction {
            // As the executor: an ARG's default is expanded only when no --build-arg
            // replaces it (BuildKit defers the ARG's expansion error).
            Instruction::Arg(a) => {
                for d in &a.args {
                    let default = match &d.value {
                        Some(raw) if !opts.build_args.contains_key(&d.key) => Some(
                            lexer
                                .process_word(raw, &*env)
                                .map_err(|e| self.error_at(cmd, None, e.to_string()))?,
                        ),
                        other => other.clone(),
                    };
                    if let Some(v) = self.stage_arg_value(&d.key, default.as_deref(), global, opts)
                    {
                        env.push((d.key.clone(), v));
                    }
                }
            }
            Instruction::Env(_) => {
                if let Instruction::Env(e) = cmd.expand(&self.file, lexer, &*env)?.instruction {
                    env.extend(e.pairs.into_iter().map(|p| (p.key, p.value)));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// What stage `stage` is built on: FROM expanded with the global scope, then matched
    /// against earlier stage names as written. Stage names are stored lowercased, and
    /// BuildKit's `addState` looks the FROM name up in that map without lowercasing it, so
    /// `FROM Build` after `AS Build` names an image (an invalid one), not the stage.
    pub fn stage_base(&self, stage: usize, global: &[(String, String)]) -> Result<Base, Error> {
        let s = &self.stages[stage];
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
            Some(i) if i < stage => Ok(Base::Stage(i)),
            Some(_) => Err(self.error_at(
                &s.from,
                None,
                format!("stage {:?} refers to itself or to a later stage", f.image),
            )),
            None => Ok(Base::Image(f.image)),
        }
    }

    /// Resolves a `--from` value (stage name, stage index, or image).
    fn resolve_from(&self, stage: usize, cmd: &Command, from: &str) -> Result<Base, Error> {
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
            return Ok(Base::Stage(i));
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
            Base::Image(_) => Vec::new(),
        };
        // The ONBUILD triggers of a base stage run first, and their `--from`s are needs of
        // this stage (BuildKit's `initOnBuildTriggers`: "creates the commands and
        // dependencies for them").
        let triggers = match base {
            Base::Stage(i) => self.onbuild_triggers(i, &s.from)?,
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
        let mut triggers = Vec::new();
        for cmd in &self.stages[base].commands {
            let Instruction::OnBuild(onbuild) = &cmd.instruction else {
                continue;
            };
            let text = format!("FROM scratch\n{}\n", onbuild.expression);
            let parsed = parse_dockerfile(&self.file, &text).map_err(|e| {
                self.error_at(
                    at,
                    None,
                    format!("ONBUILD trigger {:?}: {}", onbuild.expression, e.message),
                )
            })?;
            let mut trigger = match parsed.stages.first().map(|s| s.commands.as_slice()) {
                Some([one]) => one.clone(),
                _ => {
                    return Err(self.error_at(
                        at,
                        None,
                        format!(
                            "ONBUILD trigger {:?} is not one instruction",
                            onbuild.expression
                        ),
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

    /// Expands one command of this file against `env`; errors point into this file.
    pub fn expand(&self, cmd: &Command, env: &[(String, String)]) -> Result<Instruction, Error> {
        expand_instruction(&cmd.instruction, &self.lexer(), &env.to_vec())
            .map_err(|m| self.error_at(cmd, None, m))
    }
}

/// BuildKit v0.32 (`toCommand`) processes `COPY --from`'s value with no variables at all
/// and refuses it when that changes it: the name is never expanded, neither with a stage
/// ARG nor with a global one (`testDockerfileCopyFromArgs`). Checked for every stage, as
/// BuildKit converts them all, whether or not the target needs it.
fn check_copy_from_unexpanded(cmd: &Command, escape: char) -> Result<(), String> {
    let Instruction::Copy(copy) = &cmd.instruction else {
        return Ok(());
    };
    let Some(from) = &copy.from else {
        return Ok(());
    };
    let no_variables: Vec<(String, String)> = Vec::new();
    let processed = Lexer::new(escape)
        .process_word(from, &no_variables)
        .map_err(|e| e.to_string())?;
    if &processed != from {
        return Err(
            "variable expansion is not supported for --from, define a new stage with \
                    FROM using ARG from global scope as a workaround"
                .into(),
        );
    }
    Ok(())
}

fn stage_label(s: &Stage) -> String {
    s.name.clone().unwrap_or_else(|| s.index.to_string())
}
