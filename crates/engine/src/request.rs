//! What a daemon build is asked to do, already resolved from the command line.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where the build context comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextSource {
    /// A directory on disk; `.dockerignore` in it is applied before sending.
    Dir(PathBuf),
    /// A tar archive on disk, sent as it is.
    TarFile(PathBuf),
    /// A tar archive read from standard input (`-`).
    Stdin,
}

/// Where the Dockerfile comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerfileSource {
    /// `Dockerfile` at the root of the context.
    Default,
    /// A path given with `-f`. Relative paths are resolved against the current directory
    /// first (like `docker build`), then against the context.
    Path(PathBuf),
    /// The text read from standard input (`-f -`).
    Inline(String),
}

/// The network RUN steps get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    Default,
    Host,
    None,
}

/// One `-o/--output` destination the daemon engines can produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `type=docker,dest=F`: a `docker save` archive.
    DockerArchive(PathBuf),
    /// `type=registry`: push every tag.
    Registry,
}

/// Where a `--secret` value comes from (served through the BuildKit session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    /// An environment variable of this process.
    Env(String),
}

/// A build handed to a Docker daemon.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub context: ContextSource,
    pub dockerfile: DockerfileSource,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Option<String>,
    pub no_cache: bool,
    pub pull: bool,
    pub network: NetworkMode,
    /// Push every tag after the build (`--push`, `--destination`, `type=registry`).
    pub push: bool,
    pub outputs: Vec<Output>,
    pub iidfile: Option<PathBuf>,
    pub digest_file: Option<PathBuf>,
    pub metadata_file: Option<PathBuf>,
    pub quiet: bool,
    pub json_progress: bool,
    /// `--secret` ids and their sources.
    pub secrets: Vec<(String, SecretSource)>,
    /// `--ssh` ids and the agent sockets they forward.
    pub ssh: Vec<(String, PathBuf)>,
}

impl BuildRequest {
    /// A request with every option at its default, for the given context.
    pub fn new(context: ContextSource) -> Self {
        BuildRequest {
            context,
            dockerfile: DockerfileSource::Default,
            tags: Vec::new(),
            build_args: BTreeMap::new(),
            labels: BTreeMap::new(),
            target: None,
            platform: None,
            no_cache: false,
            pull: false,
            network: NetworkMode::Default,
            push: false,
            outputs: Vec::new(),
            iidfile: None,
            digest_file: None,
            metadata_file: None,
            quiet: false,
            json_progress: false,
            secrets: Vec::new(),
            ssh: Vec::new(),
        }
    }
}
