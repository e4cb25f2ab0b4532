//! The rules of a stage's FROM line and of the instructions BuildKit checks while converting
//! a stage (key=value forms, secrets in ARG/ENV, WORKDIR, JSON arguments, repeated
//! instructions, EXPOSE).

use std::collections::BTreeSet;

use super::casing::written_words;
use super::*;
use crate::instructions::{Command, Instruction, ShellOrExec};
use crate::stages::{Dockerfile, Stage};
use crate::Base;

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
/// suggestion), InvalidDefaultArgInFrom, RedundantTargetPlatform and
/// FromPlatformFlagConstDisallowed.
pub(super) fn from_rules(
    df: &Dockerfile,
    stage: &Stage,
    global: &[(String, String)],
) -> Vec<LintWarning> {
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
    if from.image.contains('$') {
        // The image as the global ARGs' defaults alone make it (no build argument): an ARG
        // without a default is unset. BuildKit: "Default value for ARG ... results in empty
        // or invalid base image name" when that is no valid reference.
        let mut defaults: Vec<(String, String)> = Vec::new();
        for cmd in &df.meta_args {
            let Instruction::Arg(arg) = &cmd.instruction else {
                continue;
            };
            for decl in &arg.args {
                defaults.retain(|(k, _)| k != &decl.key);
                if let Some(value) = &decl.value {
                    let value = lexer
                        .process_word(value, &defaults)
                        .unwrap_or_else(|_| value.clone());
                    defaults.push((decl.key.clone(), value));
                }
            }
        }
        if let Ok(name) = lexer.process_word(&from.image, &defaults) {
            if !is_valid_reference(&name) {
                out.push(LintWarning::new(
                    INVALID_DEFAULT_ARG_IN_FROM,
                    line,
                    format!(
                        "Default value for ARG {} results in empty or invalid base image name",
                        from.image
                    ),
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
pub(super) fn stage_rules(df: &Dockerfile, index: usize) -> Vec<LintWarning> {
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

/// Whether `name` parses as an image reference (distribution's grammar, as
/// `reference.ParseNormalizedNamed` reads it): `[DOMAIN/]PATH[:TAG][@DIGEST]`, the path
/// lowercase components joined by `.`, `_`, `__` or dashes.
pub(super) fn is_valid_reference(name: &str) -> bool {
    let (rest, digest) = match name.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (name, None),
    };
    if let Some(digest) = digest {
        let Some((algorithm, hex)) = digest.split_once(':') else {
            return false;
        };
        let algorithm_ok = !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'.'));
        // go-digest checks the length of the algorithms it knows.
        let length_ok = match algorithm {
            "sha256" => hex.len() == 64,
            "sha384" => hex.len() == 96,
            "sha512" => hex.len() == 128,
            _ => hex.len() >= 32,
        };
        if !algorithm_ok || !length_ok || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
    }
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && word(tag.as_bytes()[0])
            && tag.bytes().all(|b| word(b) || matches!(b, b'.' | b'-'));
        if !ok {
            return false;
        }
    }
    if path.is_empty() || path.len() > 255 {
        return false;
    }
    let mut components: Vec<&str> = path.split('/').collect();
    let first = components[0];
    if components.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost")
    {
        let (host, port) = match first.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (first, None),
        };
        let host_ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !host_ok || port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return false;
        }
        components.remove(0);
    }
    components.iter().all(|c| is_path_component(c))
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}
