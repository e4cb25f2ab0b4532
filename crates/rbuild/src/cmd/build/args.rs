//! The flags of `rbuild build`: Docker's, buildx's and Kaniko's spellings, as clap parses
//! them. What they mean is resolved once, into a `BuildSpec`, by `spec.rs`.

use std::path::PathBuf;

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    /// rbuild's own rootless builder.
    Native,
    /// An existing Docker daemon (DOCKER_HOST or /var/run/docker.sock).
    Dood,
    /// A private dockerd started for this build (needs root).
    Dind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    Default,
    Host,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IsolationArg {
    Auto,
    Userns,
    Chroot,
    /// Non-root with no user namespace and no chroot (a Kubernetes restricted pod): RUN
    /// steps run in the builder image's own `/` (only where /rbuild/in-place-root marks it),
    /// owners recorded beside the files.
    Restricted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressArg {
    Auto,
    Plain,
    Tty,
    Quiet,
    Json,
}

/// Build an image from a Dockerfile.
#[derive(clap::Args, Debug, Clone)]
pub struct BuildArgs {
    /// The build context: a directory, a tar archive, or `-` for a tar archive on stdin.
    #[arg(value_name = "CONTEXT", required_unless_present = "context_flag")]
    pub context: Option<String>,
    /// Kaniko's spelling of CONTEXT (`dir://` and `tar://` prefixes are accepted).
    #[arg(long = "context", value_name = "CONTEXT", conflicts_with = "context")]
    pub context_flag: Option<String>,
    /// Name the image (repeatable).
    #[arg(short = 't', long = "tag", value_name = "NAME:TAG")]
    pub tags: Vec<String>,
    /// The Dockerfile (default CONTEXT/Dockerfile; `-` reads it from stdin).
    #[arg(
        short = 'f',
        long = "file",
        visible_alias = "dockerfile",
        value_name = "PATH"
    )]
    pub file: Option<String>,
    /// A build argument, `KEY=VALUE`, or `KEY` to take its value from the environment.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// Build up to this stage.
    #[arg(long)]
    pub target: Option<String>,
    /// The platform of the image, e.g. linux/amd64.
    #[arg(long)]
    pub platform: Option<String>,
    /// Add a label to the image, `KEY=VALUE` (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Do not use cached layers.
    #[arg(long)]
    pub no_cache: bool,
    /// Do not use cached layers for these stages (names or indexes; repeatable or
    /// comma-separated).
    #[arg(long, value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Say for each step that misses the cache which of its inputs changed since the last
    /// build of that step.
    #[arg(long)]
    pub explain_misses: bool,
    /// Always pull base images, even when a copy is present.
    #[arg(long)]
    pub pull: bool,
    /// A secret for RUN --mount=type=secret: `id=ID,src=PATH` or `id=ID,env=VAR`.
    #[arg(long = "secret", value_name = "id=ID,src=PATH|env=VAR")]
    pub secrets: Vec<String>,
    /// An ssh-agent for RUN --mount=type=ssh: `default` (or another id) for the agent at
    /// $SSH_AUTH_SOCK, `ID=SOCKET`, or `ID=KEYFILE[,KEYFILE...]` (loaded into a private
    /// agent for the build).
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET|KEYFILE[,KEYFILE...]]")]
    pub ssh: Vec<String>,
    /// A named context (buildx's flag): `NAME=DIR` or `NAME=docker-image://REF`. FROM,
    /// COPY --from and RUN --mount from= naming NAME read it before any stage or image of
    /// that name.
    #[arg(long = "build-context", value_name = "NAME=DIR|docker-image://REF")]
    pub build_contexts: Vec<String>,
    /// The network of RUN steps.
    #[arg(long, value_enum, default_value_t = NetworkArg::Default)]
    pub network: NetworkArg,
    /// Run the build checks only (buildx's `--check`): print each warning, build nothing;
    /// the exit status is 1 when there is one.
    #[arg(long)]
    pub check: bool,
    /// Grant an entitlement, as buildx's `--allow`: `network.host` lets a `RUN
    /// --network=host` run (repeatable or comma-separated).
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// How RUN steps are isolated (native engine).
    #[arg(long, value_enum, default_value_t = IsolationArg::Auto)]
    pub isolation: IsolationArg,
    /// `seccomp=unconfined`: RUN steps without Docker's default seccomp filter (native
    /// engine).
    #[arg(long = "security-opt", value_name = "seccomp=unconfined")]
    pub security_opts: Vec<String>,
    /// Where the result goes: `type=oci|docker|local|registry[,dest=PATH]` (repeatable);
    /// image outputs also take BuildKit's `rewrite-timestamp=true` and
    /// `source-date-epoch=N` (empty: none) (docs/cli.md).
    #[arg(short = 'o', long = "output", value_name = "type=...,dest=...")]
    pub outputs: Vec<String>,
    /// Push every tag to its registry.
    #[arg(long)]
    pub push: bool,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write the image digest (the manifest digest when pushed) to this file.
    #[arg(long, value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    /// Write build metadata as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Print only the image ID.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Progress output.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
    /// Which builder runs the build.
    #[arg(long, value_enum, env = "RBUILD_ENGINE", default_value_t = EngineKind::Native)]
    pub engine: EngineKind,
    /// The private daemon's storage for --engine dind (default: <store root>/dind).
    #[arg(long, value_name = "DIR")]
    pub dind_storage: Option<PathBuf>,
    /// A registry mirror for Docker Hub pulls (repeatable).
    #[arg(long = "registry-mirror", value_name = "URL")]
    pub registry_mirrors: Vec<String>,
    /// A registry reached over plain HTTP or with an untrusted certificate (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Speak https to this registry without verifying its certificate; repeatable.
    #[arg(long = "skip-tls-verify-registry", value_name = "HOST[:PORT]")]
    pub skip_tls_verify_registries: Vec<String>,
    /// Trust this CA bundle (PEM) for every registry, besides certs.d; repeatable.
    #[arg(long = "registry-ca", value_name = "FILE")]
    pub registry_certificates: Vec<PathBuf>,
    #[command(flatten)]
    pub registry_timeouts: crate::cmd::registry::RegistryTimeouts,
    /// Also put the result into rbuild's image store.
    #[arg(long)]
    pub load_into_store: bool,
    /// Kaniko: tag and push to this reference (repeatable).
    #[arg(long = "destination", value_name = "REF")]
    pub destinations: Vec<String>,
    /// Kaniko: do not push, even with --destination.
    #[arg(long)]
    pub no_push: bool,
    /// Kaniko: write the image as a docker archive to this path.
    #[arg(long, value_name = "PATH")]
    pub tar_path: Option<PathBuf>,
    /// Kaniko: read and write the step cache in this repository (tag `buildcache`).
    #[arg(long, value_name = "REPO")]
    pub cache_repo: Option<String>,
    /// Export the step cache to a registry (repeatable):
    /// `type=registry,ref=REPO[:TAG][,mode=min|max][,mounts=true]`.
    #[arg(long = "cache-to", value_name = "type=registry,ref=REPO[:TAG],...")]
    pub cache_to: Vec<String>,
    /// Use a step cache from a registry (repeatable): `type=registry,ref=REPO[:TAG]`.
    #[arg(long = "cache-from", value_name = "type=registry,ref=REPO[:TAG]")]
    pub cache_from: Vec<String>,
    /// Kaniko: strip timestamps for a reproducible image.
    #[arg(long)]
    pub reproducible: bool,
    /// Layer compression (native engine): gzip, zstd (smaller and faster; Docker ≥ 23 reads
    /// it) or none.
    #[arg(long, value_enum, default_value_t)]
    pub compression: CompressionArg,
    /// Compression level: gzip 0–9 (default 6), zstd 1–22 (default 3).
    #[arg(long, value_name = "N")]
    pub compression_level: Option<u32>,
    /// How many independent stages run at the same time (default: the number of cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_parallelism: Option<u32>,
    /// Clamp file times in new layers and set the image's times to this Unix time, so the
    /// same inputs give the same digest (default: $SOURCE_DATE_EPOCH).
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<i64>,
}

/// `--compression`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompressionArg {
    #[default]
    Gzip,
    Zstd,
    None,
}
