//! [`BuildSpec`]: everything the user asked of one build, typed, with no flag syntax left.
//! The command line (Docker's flags and Kaniko's) resolves into one of these; both engines'
//! front ends consume it (the native one through [`Session`](crate::Session)).

use std::collections::BTreeMap;
use std::path::PathBuf;

use rbuild_image::Reference;
use rbuild_layer::Compression;
use rbuild_remote_cache::CacheTarget;
use rbuild_sandbox::{Isolation, Seccomp};

use crate::export::OutputSpec;

/// Where the build context comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextSource {
    /// A directory, used where it is.
    Dir(PathBuf),
    /// A tar archive (optionally compressed), unpacked into a private directory.
    TarFile(PathBuf),
    /// A tar archive on standard input.
    Stdin,
}

/// Where the Dockerfile comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerfileSource {
    /// `Dockerfile` (or `dockerfile`) in the context.
    Default,
    /// A file, read from inside the directory that holds it.
    Path(PathBuf),
    /// The text itself (`-f -`: already read from standard input).
    Inline(String),
}

/// RUN's network when an instruction says nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// The engine's default (the host's network for the native engine).
    #[default]
    Default,
    Host,
    None,
}

/// Where a `--secret` value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file, mounted as it is.
    File(PathBuf),
    /// An environment variable of this process, written to a private memory file.
    Env(String),
}

/// `--secret id=ID,src=PATH|env=VAR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub id: String,
    pub source: SecretSource,
}

/// `--ssh ID=PATH[,PATH…]`: one agent socket or private key files (the CLI resolves
/// `--ssh default` to `$SSH_AUTH_SOCK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSpec {
    pub id: String,
    pub paths: Vec<PathBuf>,
}

/// How progress is shown: the session only reports events; the caller prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    Quiet,
    #[default]
    Plain,
    Json,
    /// The live terminal view.
    Tty,
}

/// One build, as asked.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    pub context: ContextSource,
    pub dockerfile: DockerfileSource,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// `--target`: a stage name; `None` builds the last stage.
    pub target: Option<String>,
    /// `os/arch[/variant]`; `None` is the host.
    pub platform: Option<String>,
    /// Names given to the result (and where a push goes).
    pub tags: Vec<String>,
    pub no_cache: bool,
    pub no_cache_filter: Vec<String>,
    pub explain_misses: bool,
    /// `--pull`: fetch base images again even when the store has them.
    pub pull: bool,
    pub network: NetworkMode,
    /// `--allow network.host`: the entitlement a `RUN --network=host` needs (BuildKit's).
    pub allow_network_host: bool,
    pub isolation: Isolation,
    pub seccomp: Seccomp,
    pub secrets: Vec<SecretSpec>,
    pub ssh: Vec<SshSpec>,
    /// `--cache-from`: registry caches read before the build.
    pub cache_from: Vec<Reference>,
    /// `--cache-to`: registry caches written after it.
    pub cache_to: Vec<CacheTarget>,
    /// `-o` outputs (a push included when `push` is set).
    pub outputs: Vec<OutputSpec>,
    pub source_date_epoch: Option<i64>,
    pub compression: Compression,
    pub compression_level: Option<u32>,
    pub max_parallel_stages: Option<usize>,
    /// Files written once the build succeeded: the image id, the digest (the pushed
    /// manifest's when pushed), BuildKit-style metadata.
    pub iidfile: Option<PathBuf>,
    pub digest_file: Option<PathBuf>,
    pub metadata_file: Option<PathBuf>,
    pub progress: ProgressMode,
    /// The sandbox helper executable; `None` is this executable.
    pub helper: Option<PathBuf>,
    /// `--build-context NAME=...` (buildx's flag): name → a directory or an image, which
    /// FROM, `COPY --from` and `RUN --mount from=` of that name read before any stage or
    /// image of it.
    pub named_contexts: BTreeMap<String, rbuild_executor::NamedContext>,
    /// The time of each named context fetched from a URL (`ARG SOURCE_DATE_EPOCH=NAME`).
    pub named_context_epochs: BTreeMap<String, i64>,
}

impl BuildSpec {
    /// A spec with Docker's defaults for the given context.
    pub fn new(context: ContextSource) -> Self {
        BuildSpec {
            context,
            dockerfile: DockerfileSource::Default,
            build_args: BTreeMap::new(),
            labels: BTreeMap::new(),
            target: None,
            platform: None,
            tags: Vec::new(),
            no_cache: false,
            no_cache_filter: Vec::new(),
            explain_misses: false,
            pull: false,
            network: NetworkMode::Default,
            allow_network_host: false,
            isolation: Isolation::Auto,
            seccomp: Seccomp::DockerDefault,
            secrets: Vec::new(),
            ssh: Vec::new(),
            cache_from: Vec::new(),
            cache_to: Vec::new(),
            outputs: Vec::new(),
            source_date_epoch: None,
            compression: Compression::Gzip,
            compression_level: None,
            max_parallel_stages: None,
            iidfile: None,
            digest_file: None,
            metadata_file: None,
            progress: ProgressMode::Plain,
            helper: None,
            named_contexts: BTreeMap::new(),
            named_context_epochs: BTreeMap::new(),
        }
    }

    /// Whether the target stage's layers leave the machine compressed (a push, an OCI or
    /// docker archive, a registry-cache export): then they are compressed as they are written.
    /// Otherwise the local image keeps them plain and a later push compresses them.
    pub fn target_ships(&self) -> bool {
        !self.cache_to.is_empty()
            || self.outputs.iter().any(|o| {
                matches!(
                    o.kind,
                    crate::export::OutputKind::Registry
                        | crate::export::OutputKind::Oci
                        | crate::export::OutputKind::Docker
                )
            })
    }

    /// The epoch the outputs' `source-date-epoch=N` attributes give the build: `Some(N)`
    /// when one gives a number, which then dates the build when it is earlier than the
    /// build's own epoch or the build has none (BuildKit's exporter dates the entries later
    /// than its epoch with it; RUN's `SOURCE_DATE_EPOCH` build argument is not changed),
    /// and so every output; `None` when none gives one (an empty value only turns the
    /// rewrite off for its output). Outputs giving different values are an error: rbuild
    /// builds one image per build.
    pub fn output_epoch(&self) -> Result<Option<i64>, crate::ExportError> {
        let mut given: Vec<Option<i64>> = self
            .outputs
            .iter()
            .filter_map(|o| o.source_date_epoch)
            .collect();
        given.sort();
        given.dedup();
        let numbers = given.iter().filter(|e| e.is_some()).count();
        if numbers > 0 && given.len() > 1 {
            let shown: Vec<String> = given
                .iter()
                .map(|e| e.map_or("empty".to_string(), |n| n.to_string()))
                .collect();
            return Err(crate::ExportError::EpochConflict(shown.join(", ")));
        }
        Ok(given.into_iter().flatten().next())
    }

    /// Whether any output pushes to a registry.
    pub fn pushes(&self) -> bool {
        self.outputs
            .iter()
            .any(|o| o.kind == crate::export::OutputKind::Registry)
    }
}
