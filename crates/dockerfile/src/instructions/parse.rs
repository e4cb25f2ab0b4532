//! Syntax node -> typed instruction (BuildKit's `instructions/parse.go`), with BuildKit's
//! checks and messages.

use super::bflags::{BFlags, FlagError};
use super::mount::{check_mount_unexpanded, parse_mount, MountFlag};
use super::types::*;
use super::values::parse_go_duration;
use crate::error::{Error, Source};
use crate::syntax::{chomp_heredoc_content, must_parse_heredoc, Heredoc, Node};

/// A failure inside one instruction: the message and, if known, the text to point at.
pub(crate) struct Fail {
    pub message: String,
    pub needle: Option<String>,
}

impl std::convert::From<String> for Fail {
    fn from(message: String) -> Fail {
        Fail {
            message,
            needle: None,
        }
    }
}

impl std::convert::From<&str> for Fail {
    fn from(message: &str) -> Fail {
        Fail {
            message: message.to_string(),
            needle: None,
        }
    }
}

impl std::convert::From<FlagError> for Fail {
    fn from(e: FlagError) -> Fail {
        let name = e.flag.split('=').next().unwrap_or(&e.flag).to_string();
        Fail {
            message: e.message,
            needle: Some(name),
        }
    }
}

type R<T> = Result<T, Fail>;

/// Parses one syntax node into a typed command. Errors name the file, line and column.
pub fn parse_command(node: &Node, source: &Source<'_>) -> Result<Command, Error> {
    let instruction = parse_instruction(node).map_err(|f| {
        source.error(
            node.start_line,
            node.end_line,
            f.needle.as_deref(),
            f.message,
        )
    })?;
    Ok(Command {
        location: Location {
            start_line: node.start_line,
            end_line: node.end_line,
            original: node.original.clone(),
        },
        instruction,
    })
}

/// The node's arguments, flag parser and attributes, as BuildKit's `parseRequest`.
struct Req<'a> {
    node: &'a Node,
    args: Vec<String>,
    flags: BFlags,
}

pub(crate) fn parse_instruction(node: &Node) -> R<Instruction> {
    let mut req = Req {
        node,
        args: node.arg_words(),
        flags: BFlags::new(&node.flags),
    };
    let keyword = node.value.to_lowercase();
    Ok(match keyword.as_str() {
        "env" => Instruction::Env(Env {
            pairs: parse_env_like(&mut req, "ENV")?,
        }),
        "label" => Instruction::Label(Label {
            pairs: parse_env_like(&mut req, "LABEL")?,
        }),
        "maintainer" => {
            exactly_one(&req, "MAINTAINER")?;
            req.flags.parse()?;
            Instruction::Maintainer(Maintainer {
                maintainer: req.args[0].clone(),
            })
        }
        "add" => Instruction::Add(parse_add(&mut req)?),
        "copy" => Instruction::Copy(parse_copy(&mut req)?),
        "from" => Instruction::From(parse_from(&mut req)?),
        "onbuild" => Instruction::OnBuild(parse_onbuild(&mut req)?),
        "workdir" => {
            exactly_one(&req, "WORKDIR")?;
            req.flags.parse()?;
            Instruction::Workdir(Workdir {
                path: req.args[0].clone(),
            })
        }
        "run" => Instruction::Run(parse_run(&mut req)?),
        "cmd" => {
            req.flags.parse()?;
            Instruction::Cmd(Cmd {
                cmd: ShellOrExec::from_args(req.args.clone(), node.json),
                heredocs: node.heredocs.clone(),
            })
        }
        "entrypoint" => {
            req.flags.parse()?;
            Instruction::Entrypoint(Entrypoint {
                cmd: ShellOrExec::from_args(req.args.clone(), node.json),
                heredocs: node.heredocs.clone(),
            })
        }
        "healthcheck" => Instruction::Healthcheck(parse_healthcheck(&mut req)?),
        "expose" => {
            at_least_one(&req, "EXPOSE")?;
            req.flags.parse()?;
            let mut ports = req.args.clone();
            ports.sort();
            Instruction::Expose(Expose { ports })
        }
        "user" => {
            exactly_one(&req, "USER")?;
            req.flags.parse()?;
            Instruction::User(User {
                user: req.args[0].clone(),
            })
        }
        "volume" => {
            at_least_one(&req, "VOLUME")?;
            req.flags.parse()?;
            let mut volumes = Vec::new();
            for v in &req.args {
                let v = v.trim();
                if v.is_empty() {
                    return Err("VOLUME specified can not be an empty string".into());
                }
                volumes.push(v.to_string());
            }
            Instruction::Volume(Volume { volumes })
        }
        // BuildKit does not look at STOPSIGNAL's flags at all.
        "stopsignal" => {
            exactly_one(&req, "STOPSIGNAL")?;
            Instruction::StopSignal(StopSignal {
                signal: req.args[0].clone(),
            })
        }
        "arg" => Instruction::Arg(parse_arg(&req)?),
        "shell" => {
            req.flags.parse()?;
            if req.args.is_empty() {
                return Err("SHELL requires at least one argument".into());
            }
            if !node.json {
                return Err("SHELL requires the arguments to be in JSON form".into());
            }
            Instruction::Shell(Shell {
                shell: req.args.clone(),
            })
        }
        _ => {
            return Err(Fail {
                message: format!("unknown instruction: {}", node.value),
                needle: Some(node.value.clone()),
            })
        }
    })
}

fn exactly_one(req: &Req<'_>, name: &str) -> R<()> {
    if req.args.len() != 1 {
        return Err(format!("{name} requires exactly one argument").into());
    }
    Ok(())
}

fn at_least_one(req: &Req<'_>, name: &str) -> R<()> {
    if req.args.is_empty() {
        return Err(format!("{name} requires at least one argument").into());
    }
    Ok(())
}

fn parse_env_like(req: &mut Req<'_>, name: &str) -> R<Vec<KeyValue>> {
    req.flags.parse()?;
    let args = &req.args;
    if args.is_empty() {
        return Err(format!("{name} requires at least one argument").into());
    }
    if args.len() % 3 != 0 {
        return Err(format!("Bad input to {name}, too many arguments").into());
    }
    let mut pairs = Vec::new();
    for chunk in args.chunks(3) {
        if chunk[0].is_empty() {
            return Err(format!("{name} names can not be blank").into());
        }
        pairs.push(KeyValue {
            key: chunk[0].clone(),
            value: chunk[1].clone(),
            no_delim: chunk[2].is_empty(),
        });
    }
    Ok(pairs)
}

fn parse_arg(req: &Req<'_>) -> R<Arg> {
    if req.args.is_empty() {
        return Err("ARG requires at least one argument".into());
    }
    let mut args = Vec::new();
    for a in &req.args {
        let decl = match a.split_once('=') {
            Some(("", _)) => return Err("ARG names can not be blank".into()),
            Some((k, v)) => ArgDecl {
                key: k.to_string(),
                value: Some(v.to_string()),
            },
            None => ArgDecl {
                key: a.clone(),
                value: None,
            },
        };
        args.push(decl);
    }
    Ok(Arg { args })
}

/// Splits COPY/ADD arguments into file sources, heredoc sources and the destination.
fn sources_and_dest(req: &Req<'_>, command: &str) -> R<(Vec<String>, Vec<InlineSource>, String)> {
    let (dest, srcs) = req
        .args
        .split_last()
        .ok_or_else(|| Fail::from(format!("{command} requires a destination")))?;
    if must_parse_heredoc(dest).is_some() {
        return Err(format!("{command} cannot accept a heredoc as a destination").into());
    }
    let lookup = |name: &str| -> Option<&Heredoc> {
        req.node.heredocs.iter().rev().find(|h| h.name == name)
    };
    let mut paths = Vec::new();
    let mut inline = Vec::new();
    for src in srcs {
        match must_parse_heredoc(src) {
            Some(h) => {
                let content = lookup(&h.name)
                    .map(|d| d.content.clone())
                    .unwrap_or_default();
                let data = if h.chomp {
                    chomp_heredoc_content(&content)
                } else {
                    content
                };
                inline.push(InlineSource {
                    path: h.name,
                    data,
                    expand: h.expand,
                });
            }
            None => paths.push(src.clone()),
        }
    }
    Ok((paths, inline, dest.clone()))
}

fn no_destination(command: &str) -> Fail {
    format!(
        "{command} requires at least two arguments, but only one was provided. Destination could not be determined"
    )
    .into()
}

fn parse_add(req: &mut Req<'_>) -> R<Add> {
    if req.args.len() < 2 {
        return Err(no_destination("ADD"));
    }
    for f in ["chown", "chmod", "checksum"] {
        req.flags.add_string(f);
    }
    for f in ["link", "keep-git-dir", "unpack"] {
        req.flags.add_bool(f);
    }
    req.flags.add_strings("exclude");
    req.flags.parse()?;
    let (sources, inline_sources, dest) = sources_and_dest(req, "ADD")?;
    Ok(Add {
        sources,
        inline_sources,
        dest,
        chown: req.flags.string("chown"),
        chmod: req.flags.string("chmod"),
        link: req.flags.bool("link").unwrap_or(false),
        keep_git_dir: req.flags.bool("keep-git-dir"),
        checksum: req.flags.string("checksum"),
        unpack: req.flags.bool("unpack"),
        exclude: req.flags.strings("exclude"),
    })
}

fn parse_copy(req: &mut Req<'_>) -> R<Copy> {
    if req.args.len() < 2 {
        return Err(no_destination("COPY"));
    }
    for f in ["chown", "from", "chmod"] {
        req.flags.add_string(f);
    }
    req.flags.add_bool("link");
    req.flags.add_bool("parents");
    req.flags.add_strings("exclude");
    req.flags.parse()?;
    let (sources, inline_sources, dest) = sources_and_dest(req, "COPY")?;
    Ok(Copy {
        sources,
        inline_sources,
        dest,
        from: req.flags.string("from"),
        chown: req.flags.string("chown"),
        chmod: req.flags.string("chmod"),
        link: req.flags.bool("link").unwrap_or(false),
        parents: req.flags.bool("parents").unwrap_or(false),
        exclude: req.flags.strings("exclude"),
    })
}

/// BuildKit's stage-name rule `^[a-z][a-z0-9-_.]*$` (after lower-casing).
fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn parse_from(req: &mut Req<'_>) -> R<From> {
    let args = &req.args;
    let name = if args.len() == 3 && args[1].eq_ignore_ascii_case("as") {
        let name = args[2].to_lowercase();
        if !is_valid_stage_name(&name) {
            return Err(Fail {
                message: format!(
                    "invalid name for build stage: {}, name can't start with a number or contain symbols",
                    crate::syntax::go_quote(&args[2])
                ),
                needle: Some(args[2].clone()),
            });
        }
        Some(name)
    } else if args.len() != 1 {
        return Err("FROM requires either one or three arguments".into());
    } else {
        None
    };
    req.flags.add_string("platform");
    req.flags.parse()?;
    Ok(From {
        image: req.args[0].clone(),
        name,
        platform: req.flags.string("platform"),
    })
}

fn parse_onbuild(req: &mut Req<'_>) -> R<OnBuild> {
    if req.args.is_empty() {
        return Err("ONBUILD requires at least one argument".into());
    }
    req.flags.parse()?;
    let trigger = req.args[0].trim().to_uppercase();
    match trigger.as_str() {
        "ONBUILD" => return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()),
        "MAINTAINER" | "FROM" => {
            return Err(format!("{trigger} isn't allowed as an ONBUILD trigger").into())
        }
        _ => {}
    }
    // `(?i)^\s*ONBUILD\s*` removed from the original line.
    let original = &req.node.original;
    let trimmed = original.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '\u{b}');
    let mut expression = match trimmed.get(..7) {
        Some(kw) if kw.eq_ignore_ascii_case("onbuild") => trimmed[7..]
            .trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '\u{b}')
            .to_string(),
        _ => original.clone(),
    };
    for h in &req.node.heredocs {
        expression.push('\n');
        expression.push_str(&h.content);
        expression.push_str(&h.name);
    }
    Ok(OnBuild { expression })
}

fn parse_run(req: &mut Req<'_>) -> R<Run> {
    req.flags.add_strings("mount");
    req.flags.add_string("network");
    req.flags.add_string("security");
    req.flags.add_strings("device");
    req.flags.parse()?;
    let mut mounts = Vec::new();
    for spec in req.flags.strings("mount") {
        let fail = |message: String| Fail {
            message,
            needle: Some("--mount".into()),
        };
        check_mount_unexpanded(&spec).map_err(fail)?;
        // Without variables the mount can be checked now; otherwise at expansion time.
        let parsed = if spec.contains('$') {
            None
        } else {
            Some(parse_mount(&spec, &mut |v| Ok(v.to_string())).map_err(fail)?)
        };
        mounts.push(MountFlag { spec, parsed });
    }
    let network = match req.flags.string("network").as_deref().unwrap_or("default") {
        "default" => Network::Default,
        "none" => Network::None,
        "host" => Network::Host,
        other => {
            return Err(Fail {
                message: format!("invalid network mode {}", crate::syntax::go_quote(other)),
                needle: Some("--network".into()),
            })
        }
    };
    let security = match req.flags.string("security").as_deref().unwrap_or("sandbox") {
        "sandbox" => Security::Sandbox,
        "insecure" => Security::Insecure,
        other => {
            return Err(Fail {
                message: format!("security {} is not valid", crate::syntax::go_quote(other)),
                needle: Some("--security".into()),
            })
        }
    };
    if !req.flags.strings("device").is_empty() {
        return Err(Fail {
            message: "RUN --device is not supported by rbuild".into(),
            needle: Some("--device".into()),
        });
    }
    Ok(Run {
        cmd: ShellOrExec::from_args(req.args.clone(), req.node.json),
        mounts,
        network,
        security,
        heredocs: req.node.heredocs.clone(),
    })
}

fn parse_interval(req: &Req<'_>, name: &str) -> R<i64> {
    let Some(s) = req.flags.string(name).filter(|s| !s.is_empty()) else {
        return Ok(0);
    };
    let fail = |message: String| Fail {
        message,
        needle: Some(format!("--{name}")),
    };
    let d = parse_go_duration(&s).map_err(fail)?;
    if d == 0 {
        return Ok(0);
    }
    if d < 1_000_000 {
        return Err(fail(format!("Interval \"{name}\" cannot be less than 1ms")));
    }
    Ok(d)
}

fn parse_healthcheck(req: &mut Req<'_>) -> R<Healthcheck> {
    if req.args.is_empty() {
        return Err("HEALTHCHECK requires at least one argument".into());
    }
    let typ = req.args[0].to_uppercase();
    let rest = req.args[1..].to_vec();
    if typ == "NONE" {
        if !rest.is_empty() {
            return Err("HEALTHCHECK NONE takes no arguments".into());
        }
        return Ok(Healthcheck {
            test: vec![typ],
            interval: 0,
            timeout: 0,
            start_period: 0,
            start_interval: 0,
            retries: 0,
        });
    }
    for f in [
        "interval",
        "timeout",
        "start-period",
        "start-interval",
        "retries",
    ] {
        req.flags.add_string(f);
    }
    req.flags.parse()?;
    if typ != "CMD" {
        return Err(format!("Unknown type \"{typ}\" in HEALTHCHECK (try CMD)").into());
    }
    let cmd = match ShellOrExec::from_args(rest, req.node.json) {
        ShellOrExec::Exec(v) if !v.is_empty() => {
            let mut t = vec!["CMD".to_string()];
            t.extend(v);
            t
        }
        ShellOrExec::Shell(s) if !s.is_empty() => vec!["CMD-SHELL".to_string(), s],
        _ => return Err("Missing command after HEALTHCHECK CMD".into()),
    };
    let retries = match req.flags.string("retries").filter(|s| !s.is_empty()) {
        None => 0,
        Some(s) => {
            let fail = |message: String| Fail {
                message,
                needle: Some("--retries".into()),
            };
            let n: i32 = s.parse().map_err(|_| {
                fail(format!(
                    "strconv.ParseInt: parsing {}: invalid syntax",
                    crate::syntax::go_quote(&s)
                ))
            })?;
            if n < 0 {
                return Err(fail(format!("--retries cannot be negative ({n})")));
            }
            i64::from(n)
        }
    };
    Ok(Healthcheck {
        test: cmd,
        interval: parse_interval(req, "interval")?,
        timeout: parse_interval(req, "timeout")?,
        start_period: parse_interval(req, "start-period")?,
        start_interval: parse_interval(req, "start-interval")?,
        retries,
    })
}
