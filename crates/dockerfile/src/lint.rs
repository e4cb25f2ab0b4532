//! BuildKit's build checks (`frontend/dockerfile/linter`, Dockerfile 1.8+): the rules a
//! Dockerfile is checked against before it is built, and the `check` configuration (`#
//! check=skip=...;error=true`, or the build argument `BUILDKIT_DOCKERFILE_CHECK`, which
//! replaces the directive). Each rule is a pure function of the parsed Dockerfile; a build
//! prints the warnings with their file and line, and with `error=true` fails before any step
//! runs when one was found ("lint violation found for rules: ...").
//!
//! The rules that need what only a build knows are left out: `UndefinedVar` (the base
//! image's environment), `CopyIgnoredFile` (the context), `InvalidBaseImagePlatform` (the
//! pulled image), `InvalidDefaultArgInFrom` (reference parsing), and the experimental
//! `InvalidDefinitionDescription`. A word that holds a variable is not checked where
//! BuildKit checks the expanded value (WORKDIR's path, EXPOSE's ports); a base image's own
//! SHELL is not known here (`JSONArgsRecommended` sees the SHELLs of this file).

use std::collections::BTreeSet;

use crate::instructions::{Command, Instruction, ShellOrExec};
use crate::stages::{Dockerfile, Stage};
use crate::Base;

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
}

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
    fn new(rule: Rule, line: usize, message: impl Into<String>) -> Self {
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
    pub error: bool,
}

impl CheckConfig {
    /// Parses `skip=A,B;error=true` (also `experimental=...`, accepted and without effect:
    /// no experimental rule is implemented). An empty text is the default: every rule,
    /// warnings only.
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
                "experimental" => {}
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

    /// Whether `rule` is checked.
    pub fn checks(&self, rule: &Rule) -> bool {
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

/// The words of an instruction as written: its keyword, then its arguments without flags.
fn written_words(cmd: &Command) -> (String, Vec<String>) {
    let mut words = cmd.location.original.split_whitespace();
    let keyword = words.next().unwrap_or_default().to_string();
    let args = words
        .filter(|w| !w.starts_with("--"))
        .map(str::to_string)
        .collect();
    (keyword, args)
}

/// `StageNameCasing` and `FromAsCasing` (`instructions/parse.go`).
fn from_casing(from: &Command) -> Vec<LintWarning> {
    let mut out = Vec::new();
    let (keyword, args) = written_words(from);
    let line = from.location.start_line;
    if args.len() == 3 && args[2] != args[2].to_lowercase() {
        out.push(LintWarning::new(
            STAGE_NAME_CASING,
            line,
            format!("Stage name '{}' should be lowercase", args[2]),
        ));
    }
    if args.len() >= 3 {
        let lower = keyword == keyword.to_lowercase();
        let upper = keyword == keyword.to_uppercase();
        let as_word = &args[1];
        let matches = if lower {
            *as_word == as_word.to_lowercase()
        } else if upper {
            *as_word == as_word.to_uppercase()
        } else {
            true
        };
        if !matches {
            out.push(LintWarning::new(
                FROM_AS_CASING,
                line,
                format!("'{as_word}' and '{keyword}' keywords' casing do not match"),
            ));
        }
    }
    out
}

/// `ReservedStageName` and `DuplicateStageName` (`validateStageNames`).
fn stage_names(df: &Dockerfile) -> Vec<LintWarning> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for stage in &df.stages {
        let Some(name) = &stage.name else { continue };
        let line = stage.from.location.start_line;
        if name == "context" || name == "scratch" {
            out.push(LintWarning::new(
                RESERVED_STAGE_NAME,
                line,
                format!("Stage name should not use the same name as reserved stage {name:?}"),
            ));
        }
        if !seen.insert(name.clone()) {
            out.push(LintWarning::new(
                DUPLICATE_STAGE_NAME,
                line,
                format!("Duplicate stage name {name:?}, stage names should be unique"),
            ));
        }
    }
    out
}

/// `ConsistentInstructionCasing` (`validateCommandCasing`): every keyword written in one
/// case, that of the majority of the keywords that are (upper case on a tie).
fn instruction_casing<'a>(commands: impl Iterator<Item = &'a Command>) -> Vec<LintWarning> {
    let keywords: Vec<(String, usize)> = commands
        .map(|c| (written_words(c).0, c.location.start_line))
        .collect();
    let (mut lower, mut upper) = (0, 0);
    for (keyword, _) in &keywords {
        if *keyword == keyword.to_lowercase() {
            lower += 1;
        } else if *keyword == keyword.to_uppercase() {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    let mut out = Vec::new();
    for (keyword, line) in keywords {
        let casing = if majority_lower && keyword != keyword.to_lowercase() {
            "lowercase"
        } else if !majority_lower && keyword != keyword.to_uppercase() {
            "uppercase"
        } else {
            continue;
        };
        out.push(LintWarning::new(
            CONSISTENT_INSTRUCTION_CASING,
            line,
            format!("Command '{keyword}' should match the case of the command majority ({casing})"),
        ));
    }
    out
}

/// Whether `key` looks like it holds a secret (BuildKit's `getSecretsRegex`: one of its
/// `_`-separated words is a secret word, and none is an allowed one).
pub fn is_secret_key(key: &str) -> bool {
    const DENY: [&str; 10] = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: [&str; 3] = ["public", "file", "version"];
    let has = |words: &[&str]| {
        key.split('_')
            .any(|part| words.iter().any(|w| part.eq_ignore_ascii_case(w)))
    };
    has(&DENY) && !has(&ALLOW)
}

/// A stage's FROM platform flag as written.
fn platform_flag(from: &Command) -> Option<String> {
    match &from.instruction {
        Instruction::From(f) => f.platform.clone(),
        _ => None,
    }
}

/// The rules of a stage's FROM (`buildDispatchStates`): UndefinedArgInFrom (a variable of
/// the image or platform that no global ARG declares; without BuildKit's "did you mean"
/// suggestion), RedundantTargetPlatform and FromPlatformFlagConstDisallowed.
fn from_rules(df: &Dockerfile, stage: &Stage, global: &[(String, String)]) -> Vec<LintWarning> {
    let mut out = Vec::new();
    let line = stage.from.location.start_line;
    let Instruction::From(from) = &stage.from.instruction else {
        return out;
    };
    let declared: BTreeSet<&str> = global
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(df.meta_args.iter().flat_map(|c| match &c.instruction {
            Instruction::Arg(a) => a.args.iter().map(|d| d.key.as_str()).collect::<Vec<_>>(),
            _ => Vec::new(),
        }))
        .collect();
    let lexer = df.lexer();
    let global_env = global.to_vec();
    for word in std::iter::once(&from.image).chain(&from.platform) {
        let Ok(expansion) = lexer.process_word_with_matches(word, &global_env) else {
            continue;
        };
        for name in &expansion.unmatched {
            if !declared.contains(name.as_str()) {
                out.push(LintWarning::new(
                    UNDEFINED_ARG_IN_FROM,
                    line,
                    format!("FROM argument '{name}' is not declared"),
                ));
            }
        }
    }
    if let Some(platform) = platform_flag(&stage.from) {
        let line = stage.from.location.start_line;
        if platform == "$TARGETPLATFORM" || platform == "${TARGETPLATFORM}" {
            out.push(LintWarning::new(
                REDUNDANT_TARGET_PLATFORM,
                line,
                format!(
                    "Setting platform to predefined {platform} in FROM is redundant as this is \
                     the default behavior"
                ),
            ));
        } else if !platform.contains('$') {
            if let Ok(p) = crate::Platform::parse(&platform) {
                let name = stage.name.as_deref().unwrap_or("");
                if !name.contains(&p.os) && !name.contains(&p.architecture) {
                    out.push(LintWarning::new(
                        FROM_PLATFORM_FLAG_CONST_DISALLOWED,
                        line,
                        format!("FROM --platform flag should not use constant value {platform:?}"),
                    ));
                }
            }
        }
    }
    out
}

/// The rules BuildKit checks while converting one stage (`dispatch*`): LegacyKeyValueFormat,
/// SecretsUsedInArgOrEnv, WorkdirRelativePath, JSONArgsRecommended,
/// MultipleInstructionsDisallowed and the EXPOSE rules. A stage built FROM another of this
/// file starts from that one's WORKDIR and SHELL state.
fn stage_rules(df: &Dockerfile, index: usize) -> Vec<LintWarning> {
    let mut out = Vec::new();
    let stage = &df.stages[index];
    let (mut workdir_set, mut shell_set) = inherited_state(df, index);
    // The instruction a later one of the same kind overrides: reported at the earlier one.
    let mut cmd_at: Option<usize> = None;
    let mut entrypoint_at: Option<usize> = None;
    let mut healthcheck_at: Option<usize> = None;
    let used_once = |at: &mut Option<usize>, name: &str, line: usize, out: &mut Vec<_>| {
        if let Some(previous) = at.replace(line) {
            out.push(LintWarning::new(
                MULTIPLE_INSTRUCTIONS_DISALLOWED,
                previous,
                format!(
                    "Multiple {name} instructions should not be used in the same stage because \
                     only the last one will be used"
                ),
            ));
        }
    };
    for cmd in &stage.commands {
        let line = cmd.location.start_line;
        let (keyword, _) = written_words(cmd);
        match &cmd.instruction {
            Instruction::Env(env) => {
                for pair in &env.pairs {
                    if pair.no_delim {
                        out.push(legacy_key_value(&keyword, line));
                    }
                    if is_secret_key(&pair.key) {
                        out.push(secret_key("ENV", &pair.key, line));
                    }
                }
            }
            Instruction::Label(label) => {
                for pair in &label.pairs {
                    if pair.no_delim {
                        out.push(legacy_key_value(&keyword, line));
                    }
                }
            }
            Instruction::Arg(arg) => {
                for decl in &arg.args {
                    if is_secret_key(&decl.key) {
                        out.push(secret_key("ARG", &decl.key, line));
                    }
                }
            }
            Instruction::Workdir(w) => {
                if !workdir_set && !w.path.starts_with('/') && !w.path.starts_with('$') {
                    out.push(LintWarning::new(
                        WORKDIR_RELATIVE_PATH,
                        line,
                        format!(
                            "Relative workdir {:?} can have unexpected results if the base \
                             image changes",
                            w.path
                        ),
                    ));
                }
                workdir_set = true;
            }
            Instruction::Shell(_) => shell_set = true,
            Instruction::Cmd(c) => {
                used_once(&mut cmd_at, &keyword, line, &mut out);
                if matches!(c.cmd, ShellOrExec::Shell(_)) && !shell_set {
                    out.push(json_args(&keyword, line));
                }
            }
            Instruction::Entrypoint(e) => {
                used_once(&mut entrypoint_at, &keyword, line, &mut out);
                if matches!(e.cmd, ShellOrExec::Shell(_)) && !shell_set {
                    out.push(json_args(&keyword, line));
                }
            }
            Instruction::Healthcheck(_) => used_once(&mut healthcheck_at, &keyword, line, &mut out),
            Instruction::Expose(expose) => {
                for port in expose.ports.iter().filter(|p| !p.contains('$')) {
                    out.extend(expose_rules(port, line));
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether a stage starts with WORKDIR and SHELL set by this file: through the stages it is
/// built FROM (BuildKit carries `workdirSet` and the image's Shell over from the base
/// stage).
fn inherited_state(df: &Dockerfile, index: usize) -> (bool, bool) {
    let (mut workdir, mut shell) = (false, false);
    let mut current = index;
    // A FROM chain is acyclic (a stage can only be built FROM an earlier one).
    while let Ok(Base::Stage(base)) = df.stage_base(current, &[]) {
        for cmd in &df.stages[base].commands {
            match cmd.instruction {
                Instruction::Workdir(_) => workdir = true,
                Instruction::Shell(_) => shell = true,
                _ => {}
            }
        }
        current = base;
    }
    (workdir, shell)
}

fn legacy_key_value(keyword: &str, line: usize) -> LintWarning {
    LintWarning::new(
        LEGACY_KEY_VALUE_FORMAT,
        line,
        format!("\"{keyword} key=value\" should be used instead of legacy \"{keyword} key value\" format"),
    )
}

fn secret_key(instruction: &str, key: &str, line: usize) -> LintWarning {
    LintWarning::new(
        SECRETS_USED_IN_ARG_OR_ENV,
        line,
        format!("Do not use ARG or ENV instructions for sensitive data ({instruction} {key:?})"),
    )
}

fn json_args(keyword: &str, line: usize) -> LintWarning {
    LintWarning::new(
        JSON_ARGS_RECOMMENDED,
        line,
        format!(
            "JSON arguments recommended for {keyword} to prevent unintended behavior related \
             to OS signals"
        ),
    )
}

/// `ExposeProtoCasing` and `ExposeInvalidFormat` of one EXPOSE word
/// (`[ip:][hostPort:]containerPort[/proto]`).
fn expose_rules(port: &str, line: usize) -> Vec<LintWarning> {
    let mut out = Vec::new();
    let (ports, proto) = match port.rsplit_once('/') {
        Some((ports, proto)) => (ports, proto),
        None => (port, ""),
    };
    if proto != proto.to_lowercase() {
        out.push(LintWarning::new(
            EXPOSE_PROTO_CASING,
            line,
            format!("Defined protocol '{port}' in EXPOSE instruction should be lowercase"),
        ));
    }
    if ports.contains(':') {
        out.push(LintWarning::new(
            EXPOSE_INVALID_FORMAT,
            line,
            format!(
                "EXPOSE instruction should not define an IP address or host-port mapping, \
                 found '{port}'"
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_dockerfile;

    fn names(text: &str) -> Vec<(&'static str, usize)> {
        let df = parse_dockerfile("Dockerfile", text).unwrap();
        let all: Vec<usize> = (0..df.stages.len()).collect();
        let global = [("TARGETPLATFORM".to_string(), "linux/amd64".to_string())];
        lint(&df, &all, &global)
            .into_iter()
            .map(|w| (w.rule.name, w.line))
            .collect()
    }

    #[test]
    fn the_golden_cases_rules() {
        assert_eq!(
            names("# check=error=true\nFROM busybox\nMAINTAINER someone\n"),
            [("MaintainerDeprecated", 3)]
        );
        assert_eq!(
            names("FROM busybox AS base\nENV legacy value\nWORKDIR relative\nRUN echo ok\n"),
            [("LegacyKeyValueFormat", 2), ("WorkdirRelativePath", 3)]
        );
        assert_eq!(
            names("FROM a AS base\nWORKDIR /abs\nFROM base\nWORKDIR rel\nSHELL [\"sh\", \"-c\"]\nCMD x\n"),
            [],
            "WORKDIR set by the base stage; CMD after SHELL"
        );
        assert_eq!(
            names("FROM a\nCMD x\nENTRYPOINT y\nENTRYPOINT [\"z\"]\nHEALTHCHECK NONE\n"),
            [
                ("JSONArgsRecommended", 2),
                ("JSONArgsRecommended", 3),
                ("MultipleInstructionsDisallowed", 3)
            ]
        );
    }

    #[test]
    fn casing_and_stage_names() {
        assert_eq!(
            names("FROM a AS Mixed\nfrom b as x\nRUN true\nFROM c as scratch\nFROM d AS x\n"),
            [
                ("StageNameCasing", 1),
                ("ConsistentInstructionCasing", 2),
                ("FromAsCasing", 4),
                ("ReservedStageName", 4),
                ("DuplicateStageName", 5),
            ]
        );
    }

    #[test]
    fn secrets_platforms_and_ports() {
        assert_eq!(
            names(
                "FROM --platform=linux/amd64 a\nARG GITHUB_TOKEN\nENV PUBLIC_KEY=x API_KEY=y\n\
                 EXPOSE 80/TCP 127.0.0.1:53:53/udp $P\n\
                 FROM --platform=$TARGETPLATFORM b AS c\nFROM --platform=linux/arm64 c AS arm64-b\n"
            ),
            [
                ("FromPlatformFlagConstDisallowed", 1),
                ("SecretsUsedInArgOrEnv", 2),
                ("SecretsUsedInArgOrEnv", 3),
                ("ExposeInvalidFormat", 4),
                ("ExposeProtoCasing", 4),
                ("RedundantTargetPlatform", 5),
            ]
        );
        assert!(is_secret_key("db_password") && is_secret_key("AUTH"));
        assert!(!is_secret_key("PUBLIC_KEY") && !is_secret_key("KEYS") && !is_secret_key("x"));
    }

    #[test]
    fn undefined_arg_in_from() {
        let df = parse_dockerfile(
            "Df",
            "ARG DECLARED\nARG GIVEN=x\nFROM $DECLARED$GIVEN${MISSING}\nFROM --platform=$BUILDPLATFORM b\n",
        )
        .unwrap();
        let global = vec![
            ("GIVEN".to_string(), "x".to_string()),
            ("BUILDPLATFORM".to_string(), "linux/amd64".to_string()),
        ];
        let found: Vec<(&str, String, usize)> = lint(&df, &[], &global)
            .into_iter()
            .map(|w| (w.rule.name, w.message, w.line))
            .collect();
        assert_eq!(
            found,
            [(
                "UndefinedArgInFrom",
                "FROM argument 'MISSING' is not declared".to_string(),
                3
            )]
        );
    }

    #[test]
    fn only_the_built_stages_are_converted() {
        let df = parse_dockerfile("Df", "FROM a AS one\nENV k v\nFROM b\nMAINTAINER m\n").unwrap();
        let rules: Vec<&str> = lint(&df, &[1], &[]).iter().map(|w| w.rule.name).collect();
        assert_eq!(
            rules,
            ["MaintainerDeprecated"],
            "parse-time rules see every stage"
        );
    }

    #[test]
    fn check_options() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert!(c.error && !c.checks(&JSON_ARGS_RECOMMENDED) && c.checks(&MAINTAINER_DEPRECATED));
        let c = CheckConfig::parse("skip=all;error=true").unwrap();
        assert!(!c.checks(&MAINTAINER_DEPRECATED));
        assert_eq!(CheckConfig::parse("").unwrap(), CheckConfig::default());
        assert!(CheckConfig::parse("error=maybe")
            .unwrap_err()
            .contains("error=maybe"));
        assert!(CheckConfig::parse("nope")
            .unwrap_err()
            .contains("invalid check option"));
        assert!(CheckConfig::parse("other=1")
            .unwrap_err()
            .contains("\"other\""));
        let warnings = [
            LintWarning::new(WORKDIR_RELATIVE_PATH, 4, "x"),
            LintWarning::new(LEGACY_KEY_VALUE_FORMAT, 3, "y"),
            LintWarning::new(LEGACY_KEY_VALUE_FORMAT, 5, "y"),
        ];
        let c = CheckConfig::parse("error=true").unwrap();
        assert_eq!(
            c.error_for(&warnings).unwrap(),
            "lint violation found for rules: LegacyKeyValueFormat, WorkdirRelativePath"
        );
        assert_eq!(CheckConfig::default().error_for(&warnings), None);
    }

    #[test]
    fn the_build_arg_replaces_the_directive() {
        let df = parse_dockerfile("Df", "# check=error=true\nFROM a\n").unwrap();
        assert!(check_config(&df, None).unwrap().error);
        assert!(!check_config(&df, Some("skip=all")).unwrap().error);
        assert!(check_config(&df, Some("bad"))
            .unwrap_err()
            .contains("BUILDKIT_DOCKERFILE_CHECK"));
    }
}
