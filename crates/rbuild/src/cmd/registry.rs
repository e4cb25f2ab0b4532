//! Registry commands: `pull`, `push`, `login`, `logout`. The protocol is rbuild-registry's,
//! moving images between it and the store is rbuild-transfer's; this module parses flags.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rbuild_image::{Platform, Reference};
use rbuild_registry::{Client, ClientOptions};
use rbuild_transfer::{
    JsonProgress, NoProgress, PlainProgress, PlatformChoice, Progress, PullOptions, PushOptions,
};

use super::Globals;

/// Registry connection options shared by the commands.
#[derive(clap::Args, Debug, Clone)]
pub struct RegistryOptions {
    /// Talk plain http to this registry (host[:port]); loopback registries always use http.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
    /// Speak https to this registry without verifying its certificate; repeatable.
    #[arg(long = "skip-tls-verify-registry", value_name = "HOST")]
    pub skip_tls_verify: Vec<String>,
    /// Trust this CA bundle (PEM) in addition to certs.d and the built-in roots.
    #[arg(long = "ca-file", value_name = "FILE")]
    pub ca_files: Vec<PathBuf>,
    /// A Docker Hub mirror (host[:port] or URL) tried before Docker Hub; repeatable.
    #[arg(long = "registry-mirror", value_name = "MIRROR")]
    pub mirrors: Vec<String>,
    #[command(flatten)]
    pub timeouts: RegistryTimeouts,
}

/// How long registry requests may take (seconds, fractions allowed). Each also reads an
/// environment variable, for CI configuration.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RegistryTimeouts {
    /// Total time for one registry request (manifest, token, existence check), retries and
    /// body included [default: 300].
    #[arg(long = "registry-timeout", env = "RBUILD_REGISTRY_TIMEOUT", value_name = "SECONDS", value_parser = parse_seconds)]
    pub request: Option<Duration>,
    /// Total time for one blob download or upload, resumes and retries included
    /// [default: 3600].
    #[arg(long = "registry-blob-timeout", env = "RBUILD_REGISTRY_BLOB_TIMEOUT", value_name = "SECONDS", value_parser = parse_seconds)]
    pub blob: Option<Duration>,
    /// A registry connection that sends nothing for this long fails (and is retried)
    /// [default: 120].
    #[arg(long = "registry-idle-timeout", env = "RBUILD_REGISTRY_IDLE_TIMEOUT", value_name = "SECONDS", value_parser = parse_seconds)]
    pub idle: Option<Duration>,
    /// Time to connect to a registry (TCP and TLS) [default: 30].
    #[arg(long = "registry-connect-timeout", env = "RBUILD_REGISTRY_CONNECT_TIMEOUT", value_name = "SECONDS", value_parser = parse_seconds)]
    pub connect: Option<Duration>,
}

impl RegistryTimeouts {
    pub(crate) fn any_set(&self) -> bool {
        self.request.is_some()
            || self.blob.is_some()
            || self.idle.is_some()
            || self.connect.is_some()
    }

    fn apply(&self, options: &mut ClientOptions) {
        if let Some(d) = self.request {
            options.request_timeout = d;
        }
        if let Some(d) = self.blob {
            options.blob_timeout = d;
        }
        if let Some(d) = self.idle {
            options.read_timeout = d;
        }
        if let Some(d) = self.connect {
            options.connect_timeout = d;
        }
    }
}

/// A positive number of seconds (`30`, `0.5`).
fn parse_seconds(text: &str) -> std::result::Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds <= 7.0 * 86400.0) {
        return Err(format!(
            "{text:?}: a timeout must be over 0 and at most a week"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

impl RegistryOptions {
    pub(super) fn client(&self) -> Client {
        let mut options = ClientOptions {
            insecure_registries: self.insecure_registries.clone(),
            skip_tls_verify: self.skip_tls_verify.clone(),
            ca_files: self.ca_files.clone(),
            mirrors: self.mirrors.clone(),
            ..ClientOptions::default()
        };
        self.timeouts.apply(&mut options);
        Client::new(options)
    }
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// How `pull` and `push` report what they do (on stderr).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransferProgressArg {
    /// A line per blob: `Pushing sha256:… 12.3 MiB`, `Layer already exists`, `Pulled`.
    #[default]
    Plain,
    /// One JSON event per line.
    Json,
    /// Nothing; only the result on stdout.
    Quiet,
}

#[derive(clap::Args, Debug, Clone)]
pub struct TransferProgressArgs {
    /// Progress output.
    #[arg(long, value_enum, default_value_t)]
    pub progress: TransferProgressArg,
    /// No progress; print only the digest.
    #[arg(short, long)]
    pub quiet: bool,
}

impl TransferProgressArgs {
    fn is_quiet(&self) -> bool {
        self.quiet || self.progress == TransferProgressArg::Quiet
    }

    fn reporter(&self) -> Box<dyn Progress> {
        progress_reporter(if self.quiet {
            TransferProgressArg::Quiet
        } else {
            self.progress
        })
    }
}

/// The reporter for a progress choice (also used by `build` for base pulls and `--push`).
pub(super) fn progress_reporter(choice: TransferProgressArg) -> Box<dyn Progress> {
    match choice {
        TransferProgressArg::Plain => Box::new(PlainProgress::new(
            crate::escape::EscapingWriter::new(std::io::stderr()),
        )),
        TransferProgressArg::Json => Box::new(JsonProgress::stderr()),
        TransferProgressArg::Quiet => Box::new(NoProgress),
    }
}

// ---------------------------------------------------------------- pull

/// Pull an image from a registry into the store.
#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// The image, e.g. alpine:3.20 or localhost:5000/app@sha256:...
    pub image: String,
    /// The platform to pull from a multi-platform image (default: this host's).
    #[arg(
        long,
        value_name = "OS/ARCH[/VARIANT]",
        conflicts_with = "all_platforms"
    )]
    pub platform: Option<String>,
    /// Pull every platform of a multi-platform image and keep its index unchanged.
    #[arg(long, short = 'a')]
    pub all_platforms: bool,
    #[command(flatten)]
    pub progress: TransferProgressArgs,
    #[command(flatten)]
    pub registry: RegistryOptions,
}

pub fn run_pull(globals: &Globals, args: PullArgs) -> Result<u8> {
    let reference = Reference::parse(&args.image)?;
    let platforms = match (&args.platform, args.all_platforms) {
        (_, true) => PlatformChoice::All,
        (Some(p), false) => PlatformChoice::One(p.parse::<Platform>()?),
        (None, false) => PlatformChoice::One(Platform::host()),
    };
    let store = globals.open_store()?;
    let client = args.registry.client();
    store.set_blob_fetcher(std::sync::Arc::new(
        rbuild_transfer::RegistryBlobFetcher::new(&client),
    ));
    let options = PullOptions {
        platforms,
        // An explicit --platform must match, as with `docker pull --platform`.
        require_platform: args.platform.is_some(),
        ..PullOptions::default()
    };
    let reporter = args.progress.reporter();
    let record = runtime()?.block_on(rbuild_transfer::pull(
        &client,
        &store,
        &reference,
        &options,
        reporter.as_ref(),
    ))?;
    if args.progress.is_quiet() {
        println!("{}", record.manifest.digest);
    } else {
        println!(
            "{}: pulled {}",
            reference.familiar(),
            record.manifest.digest
        );
    }
    Ok(0)
}

// ---------------------------------------------------------------- push

/// Push an image from the store to a registry (a multi-platform index with all its platforms).
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// The image in the store (name, id or digest).
    pub source: String,
    /// Where to push (default: the source name).
    pub destination: Option<String>,
    /// Write the pushed manifest digest to this file.
    #[arg(long, value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    #[command(flatten)]
    pub progress: TransferProgressArgs,
    #[command(flatten)]
    pub registry: RegistryOptions,
}

pub fn run_push(globals: &Globals, args: PushArgs) -> Result<u8> {
    let store = globals.open_store()?;
    let record = store.resolve(&args.source)?;
    let destination = Reference::parse(args.destination.as_deref().unwrap_or(&args.source))
        .context("the destination must be an image name (give DST when SRC is an id)")?;
    if destination.digest().is_some() {
        bail!("cannot push to {destination}: the destination must be a tag, not a digest");
    }
    let client = args.registry.client();
    store.set_blob_fetcher(std::sync::Arc::new(
        rbuild_transfer::RegistryBlobFetcher::new(&client),
    ));
    let reporter = args.progress.reporter();
    let digest = runtime()?.block_on(rbuild_transfer::push(
        &client,
        &store,
        &record.manifest,
        &destination,
        &PushOptions::default(),
        reporter.as_ref(),
    ))?;
    if let Some(file) = &args.digest_file {
        std::fs::write(file, digest.to_string())
            .with_context(|| format!("writing the digest to {}", file.display()))?;
    }
    if args.progress.is_quiet() {
        println!("{digest}");
    } else {
        println!("{}: pushed {digest}", destination.familiar());
    }
    Ok(0)
}

// ---------------------------------------------------------------- login / logout

/// `docker.io`, `https://index.docker.io/v1/` and `localhost:5000` as a registry name.
fn registry_name(input: &str) -> String {
    let trimmed = input
        .strip_prefix("https://")
        .or_else(|| input.strip_prefix("http://"))
        .unwrap_or(input);
    let host = trimmed.split('/').next().unwrap_or(trimmed);
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

/// Log in to a registry (credentials are checked, then stored in the Docker config).
#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// The registry (default: Docker Hub).
    #[arg(default_value = "docker.io")]
    pub registry: String,
    #[arg(short, long)]
    pub username: String,
    /// The password (prefer --password-stdin: arguments are visible to other users).
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub options: RegistryOptions,
}

pub fn run_login(_globals: &Globals, args: LoginArgs) -> Result<u8> {
    let password = match (&args.password, args.password_stdin) {
        (Some(p), _) => p.clone(),
        (None, true) => {
            let mut p = String::new();
            std::io::stdin()
                .read_to_string(&mut p)
                .context("reading the password from stdin")?;
            p.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => bail!("give the password with --password-stdin (or --password)"),
    };
    let registry = registry_name(&args.registry);
    let client = args.options.client();
    runtime()?.block_on(client.login(&registry, &args.username, &password))?;
    println!("Login succeeded: {registry}");
    Ok(0)
}

/// Remove stored credentials for a registry.
#[derive(clap::Args, Debug)]
pub struct LogoutArgs {
    /// The registry (default: Docker Hub).
    #[arg(default_value = "docker.io")]
    pub registry: String,
}

pub fn run_logout(_globals: &Globals, args: LogoutArgs) -> Result<u8> {
    let registry = registry_name(&args.registry);
    Client::default().logout(&registry)?;
    println!("Removed login credentials for {registry}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_normalise_like_docker_login() {
        assert_eq!(registry_name("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_name("docker.io"), "docker.io");
        assert_eq!(registry_name("localhost:5000"), "localhost:5000");
        assert_eq!(registry_name("https://ghcr.io"), "ghcr.io");
    }
}
