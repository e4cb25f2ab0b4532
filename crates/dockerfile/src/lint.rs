//! BuildKit's build checks (`frontend/dockerfile/linter`, Dockerfile 1.8+): the rules a
//! Dockerfile is checked against before it is built, and the `check` configuration (`#
//! check=skip=...;error=true`, or the build argument `BUILDKIT_DOCKERFILE_CHECK`, which
//! replaces the directive). Each rule is a pure function of the parsed Dockerfile; a build
//! prints the warnings with their file and line, and with `error=true` fails before any step
//! runs when one was found ("lint violation found for rules: ...").
//!
//! `CopyIgnoredFile` needs the context's ignore file: [`copy_ignored_files`] takes it as a
//! function, which the build gives. The rules that need what only a build knows are left
//! out: `InvalidBaseImagePlatform` (the pulled image). `UndefinedVar` needs the
//! environment of each stage's base image: [`undefined_vars`] takes it as a function, which
//! the build gives for the images it holds before any step runs. `InvalidDefinitionDescription` is experimental in BuildKit: it runs only
//! when `experimental=` names it (or `all`), and `skip=` does not apply to it. A word that holds a variable is not checked where
//! BuildKit checks the expanded value (WORKDIR's path, EXPOSE's ports); a base image's own
//! SHELL is not known here (`JSONArgsRecommended` sees the SHELLs of this file).

use std::collections::BTreeSet;

use crate::instructions::Instruction;
use crate::stages::Dockerfile;

mod casing;
mod stage_rules;
#[cfg(test)]
mod tests;

use casing::{from_casing, instruction_casing, stage_names};
pub use stage_rules::is_secret_key;
use stage_rules::{from_rules, stage_rules};

/// One of BuildKit's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub name: &'static str,
    /// Where BuildKit documents it.
    pub url: &'static str,
}

macro_rules! rules {
    ($($id:ident = $name:literal, $slug:literal;)*) => {
        $(pub const $id: Rule = Rule {
            name: $name,
            url: concat!("https://docs.docker.com/go/dockerfile/rule/", $slug, "/"),
        };)*
    };
}

rules! {
    STAGE_NAME_CASING = "StageNameCasing", "stage-name-casing";
    FROM_AS_CASING = "FromAsCasing", "from-as-casing";
    NO_EMPTY_CONTINUATION = "NoEmptyContinuation", "no-empty-continuation";
    CONSISTENT_INSTRUCTION_CASING = "ConsistentInstructionCasing", "consistent-instruction-casing";
    DUPLICATE_STAGE_NAME = "DuplicateStageName", "duplicate-stage-name";
    RESERVED_STAGE_NAME = "ReservedStageName", "reserved-stage-name";
    JSON_ARGS_RECOMMENDED = "JSONArgsRecommended", "json-args-recommended";
    MAINTAINER_DEPRECATED = "MaintainerDeprecated", "maintainer-deprecated";
    WORKDIR_RELATIVE_PATH = "WorkdirRelativePath", "workdir-relative-path";
    MULTIPLE_INSTRUCTIONS_DISALLOWED = "MultipleInstructionsDisallowed", "multiple-instructions-disallowed";
    UNDEFINED_ARG_IN_FROM = "UndefinedArgInFrom", "undefined-arg-in-from";
    LEGACY_KEY_VALUE_FORMAT = "LegacyKeyValueFormat", "legacy-key-value-format";
    REDUNDANT_TARGET_PLATFORM = "RedundantTargetPlatform", "redundant-target-platform";
    SECRETS_USED_IN_ARG_OR_ENV = "SecretsUsedInArgOrEnv", "secrets-used-in-arg-or-env";
    FROM_PLATFORM_FLAG_CONST_DISALLOWED = "FromPlatformFlagConstDisallowed", "from-platform-flag-const-disallowed";
    EXPOSE_PROTO_CASING = "ExposeProtoCasing", "expose-proto-casing";
    EXPOSE_INVALID_FORMAT = "ExposeInvalidFormat", "expose-invalid-format";
    INVALID_DEFAULT_ARG_IN_FROM = "InvalidDefaultArgInFrom", "invalid-default-arg-in-from";
    COPY_IGNORED_FILE = "CopyIgnoredFile", "copy-ignored-file";
    INVALID_DEFINITION_DESCRIPTION = "InvalidDefinitionDescription", "invalid-definition-description";
    UNDEFINED_VAR = "UndefinedVar", "undefined-var";
}

/// BuildKit's experimental rules: checked only when the configuration's `experimental=`
/// names them.
const EXPERIMENTAL: &[&Rule] = &[&INVALID_DEFINITION_DESCRIPTION];

/// A rule broken at a line of the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintWarning {
    pub rule: Rule,
    /// BuildKit's message for this violation.
    pub message: String,
    /// 1-based line of the instruction BuildKit reports.
    pub line: usize,
}

impl LintWarning {
    pub fn new(rule: Rule, line: usize, message: impl Into<String>) -> Self {
        LintWarning {
            rule,
            message: message.into(),
            line,
        }
    }

    /// `Dockerfile:3: MaintainerDeprecated: Maintainer instruction is deprecated in favor
    /// of using label (https://...)`.
    pub fn render(&self, file: &str) -> String {
        format!(
            "{file}:{}: {}: {} ({})",
            self.line, self.rule.name, self.message, self.rule.url
        )
    }
}

/// The `check` configuration: which rules are skipped, and whether a violation fails the
/// build (BuildKit's `linter.ParseLintOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    pub skip_all: bool,
    pub skip: BTreeSet<String>,
    /// `experimental=all`.
    pub experimental_all: bool,
    /// The experimental rules `experimental=` names.
    pub experimental: BTreeSet<String>,
    pub error: bool,
}

impl CheckConfig {
    /// Parses `skip=A,B;experimental=C;error=true`. An empty text is the default: every
    /// rule that is not experimental, warnings only.
    pub fn parse(text: &str) -> Result<CheckConfig, String> {
        let mut config = CheckConfig::default();
        let text = text.trim();
        if text.is_empty() {
            return Ok(config);
        }
        for part in text.splitn(3, ';') {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!("invalid check option {part:?}"));
            };
            let value = value.trim();
            match key.trim() {
                "skip" if value == "all" => config.skip_all = true,
                "skip" => config
                    .skip
                    .extend(value.split(',').map(|r| r.trim().to_string())),
                "experimental" if value == "all" => config.experimental_all = true,
                "experimental" => config
                    .experimental
                    .extend(value.split(',').map(|r| r.trim().to_string())),
                "error" => {
                    config.error = parse_go_bool(value).ok_or_else(|| {
                        format!(
                            "failed to parse check option {part:?}: strconv.ParseBool: \
                             parsing {value:?}: invalid syntax"
                        )
                    })?
                }
                other => return Err(format!("invalid check option {other:?}")),
            }
        }
        Ok(config)
    }

    /// Whether `rule` is checked: an experimental rule when `experimental=` names it
    /// (`skip=` does not apply to it), any other unless `skip=` names it (BuildKit's
    /// `Linter.Run`).
    pub fn checks(&self, rule: &Rule) -> bool {
        if EXPERIMENTAL.contains(&rule) {
            return self.experimental_all || self.experimental.contains(rule.name);
        }
        !self.skip_all && !self.skip.contains(rule.name)
    }

    /// With `error=true`, the build's error for these (checked) warnings: BuildKit's text,
    /// the rules named once each (sorted; BuildKit's order is a map's).
    pub fn error_for(&self, warnings: &[LintWarning]) -> Option<String> {
        if !self.error || warnings.is_empty() {
            return None;
        }
        let rules: BTreeSet<&str> = warnings.iter().map(|w| w.rule.name).collect();
        Some(format!(
            "lint violation found for rules: {}",
            rules.into_iter().collect::<Vec<_>>().join(", ")
        ))
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The check configuration of a build: the build argument `BUILDKIT_DOCKERFILE_CHECK` when
/// given (BuildKit's dockerui replaces the directive with it), else the `# check=`
/// directive.
pub fn check_config(df: &Dockerfile, build_arg: Option<&str>) -> Result<CheckConfig, String> {
    if let Some(value) = build_arg {
        return CheckConfig::parse(value)
            .map_err(|e| format!("failed to parse BUILDKIT_DOCKERFILE_CHECK: {e}"));
    }
    let directive = df
        .directives
        .iter()
        .find(|d| d.name == "check")
        .map(|d| d.value.as_str())
        .unwrap_or("");
    CheckConfig::parse(directive).map_err(|e| format!("failed to parse check options: {e}"))
}

/// Every violation of the implemented rules, in the order of the file: the rules BuildKit
/// checks when parsing and when reading each stage's FROM, for every stage, and those it
/// checks when converting a stage, for the stages in `built` (the build's plan) alone, as
/// BuildKit converts only those. `global` is the global scope FROM lines expand in
/// ([`Dockerfile::global_args`]).
pub fn lint(df: &Dockerfile, built: &[usize], global: &[(String, String)]) -> Vec<LintWarning> {
    let mut out = Vec::new();
    for w in &df.warnings {
        out.push(LintWarning::new(
            NO_EMPTY_CONTINUATION,
            w.line,
            "Empty continuation line",
        ));
    }
    for stage in &df.stages {
        out.extend(from_casing(&stage.from));
        out.extend(from_rules(df, stage, global));
        for cmd in &stage.commands {
            if matches!(cmd.instruction, Instruction::Maintainer(_)) {
                out.push(LintWarning::new(
                    MAINTAINER_DEPRECATED,
                    cmd.location.start_line,
                    "Maintainer instruction is deprecated in favor of using label",
                ));
            }
        }
    }
    out.extend(definition_descriptions(df));
    out.extend(stage_names(df));
    let keywords = df
        .stages
        .iter()
        .flat_map(|s| std::iter::once(&s.from).chain(&s.commands));
    out.extend(instruction_casing(keywords));
    for &index in built {
        out.extend(stage_rules(df, index));
    }
    out.sort_by_key(|w| w.line);
    out
}

/// BuildKit's experimental `InvalidDefinitionDescription` (`validateDefinitionDescription`):
/// the comment right above a named FROM or an ARG is taken for its description, which
/// starts with the stage's or argument's name; a last comment line that starts otherwise
/// warns: "Comment for ARG should follow the format: `# <arg_key> <description>`" (the key
/// itself when the ARG declares one). An empty comment line, or any other line, in between
/// ends the comment.
fn definition_descriptions(df: &Dockerfile) -> Vec<LintWarning> {
    let commands = df.meta_args.iter().chain(
        df.stages
            .iter()
            .flat_map(|s| std::iter::once(&s.from).chain(&s.commands)),
    );
    let mut out = Vec::new();
    for cmd in commands {
        let (instruction, keys): (&str, Vec<&str>) = match &cmd.instruction {
            Instruction::From(from) => match &from.name {
                Some(name) => ("FROM", vec![name.as_str()]),
                None => continue,
            },
            Instruction::Arg(arg) => ("ARG", arg.args.iter().map(|a| a.key.as_str()).collect()),
            _ => continue,
        };
        let line = cmd.location.start_line;
        let Some((_, comments)) = df.definition_comments.iter().find(|(l, _)| *l == line) else {
            continue;
        };
        let (Some(last), Some(first_key)) = (comments.last(), keys.first()) else {
            continue;
        };
        let described = last.split(' ').next().unwrap_or("");
        if keys.contains(&described) {
            continue;
        }
        let example = if keys.len() > 1 {
            "<arg_key>"
        } else {
            first_key
        };
        out.push(LintWarning::new(
            INVALID_DEFINITION_DESCRIPTION,
            line,
            format!(
                "Comment for {instruction} should follow the format: `# {example} <description>`"
            ),
        ));
    }
    out
}

/// BuildKit's `UndefinedVar` for the stages in `built`: "Usage of undefined variable '$X'"
/// at each command using a variable its stage neither sets nor declares, with BuildKit's
/// "(did you mean $Y?)" when a set variable is close. A stage whose base image's environment `base_env` does not
/// know is not checked, nor one whose scope cannot be computed (its build fails with that
/// error).
pub fn undefined_vars(
    df: &Dockerfile,
    built: &[usize],
    global: &[(String, String)],
    opts: &crate::BuildOptions,
    base_env: crate::BaseEnv<'_>,
) -> Vec<LintWarning> {
    let mut out = Vec::new();
    for &stage in built {
        if stage >= df.stages.len() || df.replacing_context(stage).is_some() {
            continue;
        }
        let Ok(Some(found)) = df.undefined_vars(stage, global, opts, base_env) else {
            continue;
        };
        out.extend(found.into_iter().map(|v| {
            let hint = v
                .suggestion
                .map(|s| format!(" (did you mean ${s}?)"))
                .unwrap_or_default();
            LintWarning::new(
                UNDEFINED_VAR,
                v.line,
                format!("Usage of undefined variable '${}'{hint}", v.name),
            )
        }));
    }
    out
}

/// The context's ignore file as `CopyIgnoredFile` reads it.
pub struct ContextIgnore<'a> {
    /// Whether a path or one of its parents is excluded.
    pub ignored: &'a dyn Fn(&str) -> bool,
    /// The patterns as the matcher cleaned them, `!` starting an exception.
    pub patterns: &'a [String],
}

/// BuildKit's `CopyIgnoredFile` (`validateCopySourcePath`): a COPY or ADD of the build
/// context, in a stage of `built`, naming a source that the context's ignore file excludes
/// (a path or one of its parents): `Attempting to Copy file "Dockerfile" that is excluded
/// by .dockerignore`. The source is cleaned as Go's `filepath.Clean` does. As in BuildKit,
/// an ignore file with a `!` exception checks nothing (a file kept inside an excluded
/// directory cannot be told statically), and the context root (`.`, `/`) is reported only
/// when a pattern is `*`, `**` or `**/*` (so `.*`, which the root's own name `.` matches,
/// does not warn for `COPY . .`). A source holding a variable is not checked (BuildKit
/// checks its expanded value), nor URLs, git sources and heredocs, which are no context
/// paths.
pub fn copy_ignored_files(
    df: &Dockerfile,
    built: &[usize],
    ignore: &ContextIgnore,
) -> Vec<LintWarning> {
    if ignore.patterns.iter().any(|p| p.starts_with('!')) {
        return Vec::new();
    }
    let root_ignored = ignore
        .patterns
        .iter()
        .any(|p| matches!(p.as_str(), "*" | "**" | "**/*"));
    let mut out = Vec::new();
    for &index in built {
        let Some(stage) = df.stages.get(index) else {
            continue;
        };
        for cmd in &stage.commands {
            let (verb, sources) = match &cmd.instruction {
                Instruction::Copy(copy) if copy.from.is_none() => ("Copy", &copy.sources),
                Instruction::Add(add) => ("Add", &add.sources),
                _ => continue,
            };
            for source in sources {
                let remote = source.contains("://") || source.starts_with("git@");
                if remote || source.contains('$') || source.starts_with("<<") {
                    continue;
                }
                let cleaned = clean_path(source);
                let is_root = cleaned == "." || cleaned == "/";
                if (!is_root || root_ignored) && (ignore.ignored)(&cleaned) {
                    out.push(LintWarning::new(
                        COPY_IGNORED_FILE,
                        cmd.location.start_line,
                        format!(
                            "Attempting to {verb} file {cleaned:?} that is excluded by .dockerignore"
                        ),
                    ));
                }
            }
        }
    }
    out
}

/// Go's `filepath.Clean` on a slash path: no empty or `.` components, `..` applied (and
/// dropped at the root), `.` for nothing.
fn clean_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}
