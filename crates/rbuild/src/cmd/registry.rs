//! Registry commands: `pull`, `push`, `login`, `logout`. All protocol logic is in
//! rbuild-registry; this module moves blobs between it and the store.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use rbuild_image::{media_types, Digest, Manifest, Platform, Reference};
use rbuild_registry::{resolve_platform, Client, ClientOptions, SyncWriter};
use rbuild_store::Store;

use super::Globals;

/// Blobs moved at once per image (pull and push).
const PARALLEL_BLOBS: usize = 3;

/// Registry connection options shared by the commands.
#[derive(clap::Args, Debug, Clone)]
pub struct RegistryOptions {
    /// Talk plain http to this registry (host[:port]); loopback registries always use http.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
    /// Trust this CA bundle (PEM) in addition to certs.d and the built-in roots.
    #[arg(long = "ca-file", value_name = "FILE")]
    pub ca_files: Vec<PathBuf>,
    /// A Docker Hub mirror (host[:port] or URL) tried before Docker Hub; repeatable.
    #[arg(long = "registry-mirror", value_name = "MIRROR")]
    pub mirrors: Vec<String>,
}

impl RegistryOptions {
    pub(super) fn client(&self) -> Client {
        Client::new(ClientOptions {
            insecure_registries: self.insecure_registries.clone(),
            ca_files: self.ca_files.clone(),
            mirrors: self.mirrors.clone(),
            ..ClientOptions::default()
        })
    }
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

// ---------------------------------------------------------------- pull

/// Pull an image from a registry into the store.
#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// The image, e.g. alpine:3.20 or localhost:5000/app@sha256:...
    pub image: String,
    /// The platform to pull from a multi-platform image (default: this host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub registry: RegistryOptions,
}

pub fn run_pull(globals: &Globals, args: PullArgs) -> Result<u8> {
    let reference = Reference::parse(&args.image)?;
    let platform = match &args.platform {
        Some(p) => p.parse::<Platform>()?,
        None => Platform::host(),
    };
    let store = globals.open_store()?;
    let client = args.registry.client();
    let digest = runtime()?.block_on(pull(&client, &store, &reference, &platform))?;
    println!("{}: pulled {digest}", reference.familiar());
    Ok(0)
}

pub(super) async fn pull(
    client: &Client,
    store: &Store,
    reference: &Reference,
    platform: &Platform,
) -> Result<Digest> {
    let mut raw = client.get_manifest(reference).await?;
    if raw.is_index() {
        let entry = resolve_platform(&raw, platform)?;
        raw = client
            .get_manifest_by_digest(reference, &entry.digest)
            .await?;
    }
    let manifest = Manifest::from_slice(&raw.bytes)
        .with_context(|| format!("manifest {} of {reference} is malformed", raw.digest))?;
    let blobs: Vec<_> = std::iter::once(&manifest.config)
        .chain(&manifest.layers)
        .filter(|d| !store.has_blob(&d.digest))
        .collect();
    futures_util::stream::iter(blobs)
        .map(|blob| async move {
            let mut sink = SyncWriter(store.blob_writer()?);
            client
                .pull_blob(
                    reference.registry(),
                    reference.repository(),
                    &blob.digest,
                    blob.size,
                    &mut sink,
                )
                .await?;
            sink.into_inner().commit(Some(&blob.digest))?;
            anyhow::Ok(())
        })
        .buffer_unordered(PARALLEL_BLOBS)
        .try_collect::<Vec<()>>()
        .await?;
    let descriptor = store.put_manifest_bytes(&raw.bytes)?;
    if reference.tag().is_some() {
        let name = match reference.digest() {
            // `name:tag@digest` tags the name; the digest only pinned what was fetched.
            Some(_) => reference
                .with_tag(reference.tag().unwrap_or("latest"))?
                .to_string(),
            None => reference.to_string(),
        };
        store.tag(&name, &descriptor)?;
    }
    Ok(raw.digest)
}

// ---------------------------------------------------------------- push

/// Push an image from the store to a registry.
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
    let (descriptor, manifest) = store.image_manifest(&record.manifest)?;
    let bytes = store.read_blob(&descriptor.digest)?;
    let client = args.registry.client();
    let digest = runtime()?.block_on(push(
        &client,
        &store,
        &destination,
        &manifest,
        Bytes::from(bytes),
        &descriptor.media_type,
    ))?;
    if let Some(file) = &args.digest_file {
        std::fs::write(file, digest.to_string())
            .with_context(|| format!("writing the digest to {}", file.display()))?;
    }
    println!("{}: pushed {digest}", destination.familiar());
    Ok(0)
}

pub(super) async fn push(
    client: &Client,
    store: &Store,
    destination: &Reference,
    manifest: &Manifest,
    bytes: Bytes,
    media_type: &str,
) -> Result<Digest> {
    let (registry, repository) = (destination.registry(), destination.repository());
    // The store is an OCI image layout, so a blob's file is blobs/sha256/<hex>.
    let blob_dir = store.layout_dir().join("blobs").join("sha256");
    futures_util::stream::iter(std::iter::once(&manifest.config).chain(&manifest.layers))
        .map(|blob| {
            let path = blob_dir.join(blob.digest.hex());
            async move {
                if !client
                    .blob_exists(registry, repository, &blob.digest)
                    .await?
                {
                    client
                        .push_blob_from_file(registry, repository, &path, &blob.digest, blob.size)
                        .await?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(PARALLEL_BLOBS)
        .try_collect::<Vec<()>>()
        .await?;
    let media_type = if media_type.is_empty() {
        media_types::OCI_MANIFEST
    } else {
        media_type
    };
    Ok(client.push_manifest(destination, bytes, media_type).await?)
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
