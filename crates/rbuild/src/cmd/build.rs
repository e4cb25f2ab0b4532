//! `rbuild build`: the command line of a build (Docker's and Kaniko's flags), resolved into a
//! request for the chosen engine.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;
use rbuild_engine::{
    BuildRequest, ContextSource, DindOptions, DockerfileSource, Engine, NetworkMode, Output,
    ProgressMode,
};

use super::Globals;

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
    /// Non-root with no user namespace and no chroot (a Kubernetes restricted pod): in
    /// progress, builds are refused naming what is missing.
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
    /// The network of RUN steps.
    #[arg(long, value_enum, default_value_t = NetworkArg::Default)]
    pub network: NetworkArg,
    /// How RUN steps are isolated (native engine).
    #[arg(long, value_enum, default_value_t = IsolationArg::Auto)]
    pub isolation: IsolationArg,
    /// `seccomp=unconfined`: RUN steps without Docker's default seccomp filter (native
    /// engine).
    #[arg(long = "security-opt", value_name = "seccomp=unconfined")]
    pub security_opts: Vec<String>,
    /// Where the result goes: `type=oci|docker|local|registry[,dest=PATH]` (repeatable).
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
    pub registry_timeouts: super::registry::RegistryTimeouts,
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

/// `KEY=VALUE` pairs; a bare `KEY` takes its value from `lookup` (Docker leaves it out when
/// the variable is unset).
pub(super) fn parse_build_args(
    items: &[String],
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        match item.split_once('=') {
            Some(("", _)) => bail!("--build-arg {item:?} has no name"),
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Some(v) = lookup(item) {
                    out.insert(item.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

pub(super) fn parse_labels(items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            _ => bail!("--label {item:?} is not KEY=VALUE"),
        }
    }
    Ok(out)
}

/// A parsed `-o` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub kind: String,
    pub dest: Option<PathBuf>,
}

pub(super) fn parse_output(spec: &str) -> Result<OutputSpec> {
    let mut kind = None;
    let mut dest = None;
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("-o {spec:?}: {part:?} is not key=value"))?;
        match k {
            "type" => kind = Some(v.to_string()),
            "dest" => dest = Some(PathBuf::from(v)),
            // BuildKit's exporter attributes (name=, push=, ...): `name` and `push` have flags.
            other => {
                bail!("-o {spec:?}: the attribute {other:?} is not supported; use type= and dest=")
            }
        }
    }
    let kind = kind.ok_or_else(|| anyhow!("-o {spec:?} needs type=oci|docker|local|registry"))?;
    match kind.as_str() {
        "oci" | "docker" | "local" => {
            if dest.is_none() {
                bail!("-o {spec:?}: type={kind} needs dest=PATH");
            }
        }
        "registry" => {}
        _ => bail!("-o {spec:?}: unknown type {kind:?}; use oci, docker, local or registry"),
    }
    Ok(OutputSpec { kind, dest })
}

/// Kaniko's `--context dir://path` / `tar://path`.
fn context_source(raw: &str) -> Result<ContextSource> {
    if raw == "-" {
        return Ok(ContextSource::Stdin);
    }
    if let Some(path) = raw.strip_prefix("tar://") {
        return Ok(ContextSource::TarFile(PathBuf::from(path)));
    }
    let raw = raw.strip_prefix("dir://").unwrap_or(raw);
    if raw.contains("://") {
        bail!(
            "the context {raw:?} is a URL; only local directories and tar archives are supported"
        );
    }
    let path = PathBuf::from(raw);
    if path.is_file() {
        Ok(ContextSource::TarFile(path))
    } else {
        Ok(ContextSource::Dir(path))
    }
}

fn dockerfile_source(file: Option<&str>) -> Result<DockerfileSource> {
    match file {
        None => Ok(DockerfileSource::Default),
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the Dockerfile from standard input")?;
            Ok(DockerfileSource::Inline(text))
        }
        Some(path) => Ok(DockerfileSource::Path(PathBuf::from(path))),
    }
}

/// The options only the native engine has, refused by name with the daemon engines.
fn refuse_native_only(args: &BuildArgs) -> Result<()> {
    let engine = match args.engine {
        EngineKind::Dood => "dood",
        EngineKind::Dind => "dind",
        EngineKind::Native => return Ok(()),
    };
    let unsupported = [
        (
            !args.secrets.is_empty(),
            "--secret (the daemon's classic builder has no secret mounts)",
        ),
        (
            !args.ssh.is_empty(),
            "--ssh (the daemon's classic builder has no ssh mounts)",
        ),
        (
            args.isolation != IsolationArg::Auto,
            "--isolation (the daemon isolates RUN steps itself)",
        ),
        (
            !args.security_opts.is_empty(),
            "--security-opt (the daemon applies its own seccomp profile)",
        ),
        (
            args.load_into_store,
            "--load-into-store (the image stays in the daemon; use -o type=docker)",
        ),
        (
            args.cache_repo.is_some() || !args.cache_to.is_empty() || !args.cache_from.is_empty(),
            "--cache-to, --cache-from and --cache-repo (the daemon's builder keeps its cache \
             locally)",
        ),
        (args.reproducible, "--reproducible"),
        (
            !args.skip_tls_verify_registries.is_empty() || !args.registry_certificates.is_empty(),
            "--skip-tls-verify-registry and --registry-ca (the daemon's own registry settings \
             apply)",
        ),
        (
            !args.no_cache_filter.is_empty() || args.explain_misses,
            "--no-cache-filter and --explain-misses",
        ),
        (
            args.compression != CompressionArg::Gzip || args.compression_level.is_some(),
            "--compression and --compression-level",
        ),
        (args.source_date_epoch.is_some(), "--source-date-epoch"),
        (
            args.max_parallelism.is_some(),
            "--max-parallelism (the daemon schedules its own steps)",
        ),
        (
            args.registry_timeouts.any_set(),
            "--registry-timeout and the other registry timeouts (the daemon pulls and pushes \
             with its own)",
        ),
    ];
    for (present, what) in unsupported {
        if present {
            bail!("{what} is not supported with --engine {engine}; use --engine native");
        }
    }
    Ok(())
}

/// Resolves the command line into an engine request.
pub fn request_from_args(args: &BuildArgs) -> Result<BuildRequest> {
    let raw_context = args
        .context
        .as_deref()
        .or(args.context_flag.as_deref())
        .ok_or_else(|| anyhow!("no build context given"))?;
    let context = context_source(raw_context)?;
    if context == ContextSource::Stdin && args.file.as_deref() == Some("-") {
        bail!("the context and the Dockerfile cannot both come from standard input");
    }
    let mut req = BuildRequest::new(context);
    req.dockerfile = dockerfile_source(args.file.as_deref())?;
    req.tags = args.tags.clone();
    req.tags.extend(args.destinations.iter().cloned());
    req.build_args = parse_build_args(&args.build_args, |k| std::env::var(k).ok())?;
    req.labels = parse_labels(&args.labels)?;
    req.target = args.target.clone();
    req.platform = args.platform.clone();
    req.no_cache = args.no_cache;
    req.pull = args.pull;
    req.network = match args.network {
        NetworkArg::Default => NetworkMode::Default,
        NetworkArg::Host => NetworkMode::Host,
        NetworkArg::None => NetworkMode::None,
    };
    req.push = (args.push || !args.destinations.is_empty()) && !args.no_push;
    for spec in &args.outputs {
        let spec = parse_output(spec)?;
        match (spec.kind.as_str(), spec.dest) {
            ("docker", Some(dest)) => req.outputs.push(Output::DockerArchive(dest)),
            ("registry", _) if !args.no_push => req.outputs.push(Output::Registry),
            ("registry", _) => {}
            (kind, _) => bail!(
                "-o type={kind} is not supported with the daemon engines yet; use type=docker \
                 or type=registry"
            ),
        }
    }
    if let Some(path) = &args.tar_path {
        req.outputs.push(Output::DockerArchive(path.clone()));
    }
    req.iidfile = args.iidfile.clone();
    req.digest_file = args.digest_file.clone();
    req.metadata_file = args.metadata_file.clone();
    req.quiet = args.quiet || args.progress == ProgressArg::Quiet;
    req.json_progress = args.progress == ProgressArg::Json;
    Ok(req)
}

fn dind_storage(globals: &Globals, args: &BuildArgs) -> Result<PathBuf> {
    if let Some(dir) = &args.dind_storage {
        return Ok(dir.clone());
    }
    let root = match &globals.root {
        Some(root) => root.clone(),
        None => rbuild_store::default_root()?,
    };
    Ok(root.join("dind"))
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// Makes `rbuild [OPTIONS] CONTEXT` mean `rbuild build [OPTIONS] CONTEXT`: when the first
/// argument after the global options is neither a subcommand nor help/version, `build` is
/// inserted there.
pub fn with_default_subcommand(
    mut args: Vec<std::ffi::OsString>,
    subcommands: &[String],
) -> Vec<std::ffi::OsString> {
    let mut i = 1;
    while let Some(arg) = args.get(i).and_then(|a| a.to_str()) {
        // The global options that may come before the subcommand.
        if arg == "--root" {
            i += 2;
        } else if arg.starts_with("--root=") {
            i += 1;
        } else {
            break;
        }
    }
    let Some(first) = args.get(i) else {
        return args;
    };
    let first = first.to_string_lossy();
    let passthrough = ["-h", "--help", "-V", "--version", "help"];
    if subcommands.iter().any(|s| *s == first) || passthrough.contains(&first.as_ref()) {
        return args;
    }
    args.insert(i, "build".into());
    args
}

pub fn run(globals: &Globals, args: BuildArgs) -> Result<u8> {
    if args.engine == EngineKind::Native {
        return super::native::run(globals, &args);
    }
    refuse_native_only(&args)?;
    let req = request_from_args(&args)?;
    let engine = match args.engine {
        EngineKind::Dind => {
            let mut options = DindOptions::new(absolute(&dind_storage(globals, &args)?)?);
            options.registry_mirrors = args.registry_mirrors.clone();
            options.insecure_registries = args.insecure_registries.clone();
            Engine::Dind(options)
        }
        _ => {
            if !args.registry_mirrors.is_empty() || !args.insecure_registries.is_empty() {
                bail!(
                    "--registry-mirror and --insecure-registry configure the private daemon of \
                     --engine dind; with --engine dood they are the existing daemon's settings"
                );
            }
            if args.dind_storage.is_some() {
                bail!("--dind-storage only applies to --engine dind");
            }
            Engine::Dood
        }
    };
    let mode = if req.quiet {
        ProgressMode::Quiet
    } else if req.json_progress {
        ProgressMode::Json
    } else {
        ProgressMode::Plain
    };
    let mut stderr = std::io::stderr();
    match rbuild_engine::run(&req, &engine, mode, &mut stderr) {
        Ok(result) => {
            if req.quiet {
                println!("{}", result.image_id);
            }
            Ok(0)
        }
        Err(err) => match err.downcast_ref::<rbuild_engine::Interrupted>() {
            Some(interrupted) => {
                eprintln!("error: {interrupted}");
                Ok(interrupted.exit_code)
            }
            None => Err(err),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_build_arg_comes_from_the_environment_or_is_dropped() {
        let args = vec!["A=1".to_string(), "B".into(), "C".into(), "D=x=y".into()];
        let got = parse_build_args(&args, |k| (k == "B").then(|| "from-env".to_string())).unwrap();
        let expected: BTreeMap<String, String> = [("A", "1"), ("B", "from-env"), ("D", "x=y")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn outputs_are_parsed_and_checked() {
        assert_eq!(
            parse_output("type=docker,dest=out.tar").unwrap(),
            OutputSpec {
                kind: "docker".into(),
                dest: Some(PathBuf::from("out.tar"))
            }
        );
        assert!(parse_output("type=oci")
            .unwrap_err()
            .to_string()
            .contains("dest=PATH"));
        assert!(parse_output("type=nope,dest=x").is_err());
        assert!(parse_output("dest=x")
            .unwrap_err()
            .to_string()
            .contains("type="));
    }

    #[test]
    fn kaniko_context_prefixes() {
        assert_eq!(
            context_source("dir:///src").unwrap(),
            ContextSource::Dir(PathBuf::from("/src"))
        );
        assert_eq!(
            context_source("tar:///ctx.tar").unwrap(),
            ContextSource::TarFile(PathBuf::from("/ctx.tar"))
        );
        assert_eq!(context_source("-").unwrap(), ContextSource::Stdin);
        assert!(context_source("s3://bucket/ctx").is_err());
    }

    #[test]
    fn build_is_the_default_subcommand() {
        let subs = vec!["build".to_string(), "parse".to_string()];
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert_eq!(
            with_default_subcommand(args(&["rbuild", "-t", "a", "."]), &subs),
            args(&["rbuild", "build", "-t", "a", "."])
        );
        assert_eq!(
            with_default_subcommand(args(&["rbuild", "--root", "/r", "."]), &subs),
            args(&["rbuild", "--root", "/r", "build", "."])
        );
        assert_eq!(
            with_default_subcommand(args(&["rbuild", "parse", "x"]), &subs),
            args(&["rbuild", "parse", "x"])
        );
        assert_eq!(
            with_default_subcommand(args(&["rbuild", "--help"]), &subs),
            args(&["rbuild", "--help"])
        );
    }

    #[test]
    fn labels_need_a_key_and_value() {
        assert!(parse_labels(&["novalue".to_string()]).is_err());
        assert_eq!(
            parse_labels(&["a=b=c".to_string()])
                .unwrap()
                .get("a")
                .map(String::as_str),
            Some("b=c")
        );
    }
}
