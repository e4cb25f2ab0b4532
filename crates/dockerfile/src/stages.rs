//! The stage model: a parsed Dockerfile split into build stages, global ARGs, `--target`
//! resolution, build arguments (defaults, overrides, predefined platform and proxy args)
//! and the stage dependency graph.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rbuild_shell::{ExpansionBudget, Lexer};
use serde::Serialize;

use crate::error::{Error, Source};
use crate::expand::expand_instruction;
use crate::instructions::{parse_command, Command, Instruction};
use crate::limits::{MAX_DOCKERFILE_BYTES, MAX_EXPANSION_BYTES, MAX_INSTRUCTIONS, MAX_STAGES};
use crate::syntax::{self, Directive, Warning};

pub use crate::build_options::{BuildOptions, Platform, PROXY_ARGS};

mod graph;
mod named;
mod scope;
mod undefined;

pub use undefined::{suggest, BaseEnv, UndefinedVar};

pub use named::named_context_key;

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
    /// The comment lines right above each FROM and ARG (BuildKit's `PrevComment`), by the
    /// instruction's first line: what `InvalidDefinitionDescription` reads.
    #[serde(skip)]
    pub(crate) definition_comments: Vec<(usize, Vec<String>)>,
    /// Shared by every lexer of this Dockerfile: bounds the total text expansion produces.
    #[serde(skip)]
    budget: SharedBudget,
    /// The keys ([`named_context_key`]) of the build's named contexts (`--build-context`):
    /// set by the build ([`Dockerfile::with_named_contexts`]), not by the text.
    #[serde(skip)]
    named_contexts: BTreeSet<String>,
    /// The ONBUILD triggers of named contexts' images, by key, as the build read them
    /// before planning ([`Dockerfile::with_context_triggers`]).
    #[serde(skip)]
    context_triggers: BTreeMap<String, Vec<String>>,
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
    /// A named context of the build (`--build-context NAME=...`), by its key
    /// ([`named_context_key`]): it comes before stages and images, as in BuildKit.
    Context(String),
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
    let mut definition_comments = Vec::new();
    for node in &parsed.ast.children {
        let cmd = parse_command(node, &source)?;
        if matches!(cmd.instruction, Instruction::From(_) | Instruction::Arg(_))
            && !node.prev_comment.is_empty()
        {
            definition_comments.push((node.start_line, node.prev_comment.clone()));
        }
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
        definition_comments,
        budget: SharedBudget::default(),
        named_contexts: BTreeSet::new(),
        context_triggers: BTreeMap::new(),
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
