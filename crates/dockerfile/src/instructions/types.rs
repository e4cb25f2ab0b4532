//! One Rust type per Dockerfile instruction (BuildKit's `instructions/commands.go`).

use serde::Serialize;

use super::mount::MountFlag;
use crate::syntax::Heredoc;

/// Where an instruction is in the file, and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// 1-based first and last physical line (heredoc bodies included).
    pub start_line: usize,
    pub end_line: usize,
    /// The logical line as written (continuations joined).
    pub original: String,
}

/// An instruction with its location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Command {
    #[serde(flatten)]
    pub location: Location,
    #[serde(flatten)]
    pub instruction: Instruction,
}

/// A command line in shell form (run through the SHELL) or exec form (a JSON array).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShellOrExec {
    Shell(String),
    Exec(Vec<String>),
}

impl ShellOrExec {
    /// BuildKit's `handleJSONArgs`: exec form keeps the words, shell form joins them.
    pub(crate) fn from_args(args: Vec<String>, json: bool) -> ShellOrExec {
        if json {
            ShellOrExec::Exec(args)
        } else {
            ShellOrExec::Shell(args.join(" "))
        }
    }
    pub fn is_empty(&self) -> bool {
        match self {
            ShellOrExec::Shell(s) => s.is_empty(),
            ShellOrExec::Exec(v) => v.is_empty(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", rename_all = "lowercase")]
pub enum Instruction {
    From(From),
    Run(Run),
    Copy(Copy),
    Add(Add),
    Env(Env),
    Arg(Arg),
    Label(Label),
    Expose(Expose),
    Volume(Volume),
    User(User),
    Workdir(Workdir),
    Cmd(Cmd),
    Entrypoint(Entrypoint),
    Healthcheck(Healthcheck),
    Shell(Shell),
    #[serde(rename = "stopsignal")]
    StopSignal(StopSignal),
    #[serde(rename = "onbuild")]
    OnBuild(OnBuild),
    Maintainer(Maintainer),
}

impl Instruction {
    /// The upper-case keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Env(_) => "ENV",
            Instruction::Arg(_) => "ARG",
            Instruction::Label(_) => "LABEL",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Volume(_) => "VOLUME",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Shell(_) => "SHELL",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::OnBuild(_) => "ONBUILD",
            Instruction::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// `FROM [--platform=p] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    /// The image (or stage) reference, unexpanded.
    pub image: String,
    /// The stage name, lower-cased.
    pub name: Option<String>,
    pub platform: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Default,
    None,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    Sandbox,
    Insecure,
}

/// `RUN [--mount=...] [--network=...] [--security=...] cmd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    pub cmd: ShellOrExec,
    pub mounts: Vec<MountFlag>,
    pub network: Network,
    pub security: Security,
    pub heredocs: Vec<Heredoc>,
}

/// A COPY/ADD source given inline as a heredoc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineSource {
    /// The file name (the heredoc delimiter).
    pub path: String,
    /// The body, already chomped for `<<-`.
    pub data: String,
    /// Variables in `data` are to be expanded (unquoted delimiter).
    pub expand: bool,
}

/// `COPY [flags] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    pub sources: Vec<String>,
    pub inline_sources: Vec<InlineSource>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
}

/// `ADD [flags] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Add {
    pub sources: Vec<String>,
    pub inline_sources: Vec<InlineSource>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub keep_git_dir: Option<bool>,
    pub checksum: Option<String>,
    pub unpack: Option<bool>,
    pub exclude: Vec<String>,
}

/// A `key=value` pair of ENV or LABEL (values unexpanded, quotes kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// Legacy form `ENV key value` (no `=`): the value is taken literally as one word.
    pub no_delim: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Env {
    pub pairs: Vec<KeyValue>,
}

/// One `ARG name[=default]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    pub key: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arg {
    pub args: Vec<ArgDecl>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    pub pairs: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expose {
    /// Sorted, as BuildKit does.
    pub ports: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    pub volumes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workdir {
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cmd {
    pub cmd: ShellOrExec,
    pub heredocs: Vec<Heredoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entrypoint {
    pub cmd: ShellOrExec,
    pub heredocs: Vec<Heredoc>,
}

/// `HEALTHCHECK NONE` (test `["NONE"]`) or `HEALTHCHECK [flags] CMD ...` (test
/// `["CMD", ...]` in exec form, `["CMD-SHELL", "..."]` in shell form). Durations are in
/// nanoseconds; 0 = not set (inherit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub interval: i64,
    pub timeout: i64,
    pub start_period: i64,
    pub start_interval: i64,
    pub retries: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shell {
    pub shell: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StopSignal {
    pub signal: String,
}

/// `ONBUILD <instruction>`: stored as text, parsed again when a child image builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnBuild {
    pub expression: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Maintainer {
    pub maintainer: String,
}
