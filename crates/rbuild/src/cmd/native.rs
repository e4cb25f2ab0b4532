//! `rbuild build --engine native` (the default): the command line resolved into a request
//! for rbuild's own executor, base images pulled on demand, and the result exported.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use rbuild_executor::tty_progress::{stderr_is_terminal, TtyPrinter, TtyProgress};
use rbuild_executor::{
    BaseImages, BuildRequest, JsonProgress, NoProgress, PlainProgress, Progress,
};
use rbuild_image::{Platform, Reference};
use rbuild_registry::Client;
use rbuild_sandbox::{Isolation, Network, Seccomp};
use rbuild_store::archive::ArchiveFormat;
use rbuild_store::{ImageRecord, Store};

use super::build::{
    parse_build_args, parse_labels, parse_output, BuildArgs, CompressionArg, IsolationArg,
    NetworkArg, ProgressArg,
};
use super::registry::{self, RegistryOptions, TransferProgressArg};
use super::registry_cache::{CacheFlags, CacheIo, Notes};
use super::Globals;

/// Where a finished image goes besides the store.
enum Export {
    Archive(ArchiveFormat, PathBuf),
    Local(PathBuf),
    Push,
}

pub fn run(globals: &Globals, args: &BuildArgs) -> Result<u8> {
    // Before opening the store or pulling anything: the build could not give a correct
    // image.
    if args.isolation == IsolationArg::Restricted {
        bail!("{}", rbuild_sandbox::restricted::NOT_YET);
    }
    let cache_flags = CacheFlags::parse(args)?;
    let phases_before = rbuild_executor::phases::snapshot();
    let store = globals.open_store()?;
    let registry_options = RegistryOptions {
        insecure_registries: args.insecure_registries.clone(),
        skip_tls_verify: args.skip_tls_verify_registries.clone(),
        ca_files: args.registry_certificates.clone(),
        mirrors: args.registry_mirrors.clone(),
        timeouts: args.registry_timeouts.clone(),
    };
    let client = registry_options.client();
    let runtime = registry::runtime()?;

    let raw_context = args
        .context
        .as_deref()
        .or(args.context_flag.as_deref())
        .ok_or_else(|| anyhow!("no build context given"))?;
    // Holds a context unpacked from a tar until the build is over.
    let mut unpacked = None;
    let context_dir = context_dir(&store, raw_context, &mut unpacked)?;
    let (dockerfile_name, dockerfile_path, dockerfile_text) =
        read_dockerfile(&context_dir, args.file.as_deref())?;

    let mut secret_files = None;
    // Private ssh-agents for `--ssh ID=KEYFILE`, stopped when the build is over.
    let mut ssh_key_agents = Vec::new();
    let mut request = BuildRequest::new(&context_dir, dockerfile_text);
    request.dockerfile_name = dockerfile_name;
    request.dockerfile_path = dockerfile_path;
    request.build_args = parse_build_args(&args.build_args, |k| std::env::var(k).ok())?;
    request.target = args.target.clone();
    request.tags = args.tags.clone();
    request.tags.extend(args.destinations.iter().cloned());
    request.labels = parse_labels(&args.labels)?;
    request.no_cache = args.no_cache;
    request.no_cache_filter = args.no_cache_filter.clone();
    request.explain_misses = args.explain_misses;
    request.platform = args.platform.clone();
    request.network = match args.network {
        NetworkArg::Default | NetworkArg::Host => Network::Host,
        NetworkArg::None => Network::None,
    };
    request.isolation = match args.isolation {
        IsolationArg::Auto => Isolation::Auto,
        IsolationArg::Userns => Isolation::Userns,
        IsolationArg::Chroot => Isolation::Chroot,
        IsolationArg::Restricted => Isolation::Restricted,
    };
    request.seccomp = security_opts(&args.security_opts)?;
    request.secrets = secrets(&store, &args.secrets, &mut secret_files)?;
    request.ssh = ssh_agents(&store, &args.ssh, &mut ssh_key_agents)?;
    // BuildKit takes the epoch from the build argument SOURCE_DATE_EPOCH.
    let epoch_arg = match request.build_args.get("SOURCE_DATE_EPOCH") {
        Some(v) if !v.is_empty() => Some(v.trim().parse::<i64>().with_context(|| {
            format!("--build-arg SOURCE_DATE_EPOCH={v:?} is not a number of seconds")
        })?),
        _ => None,
    };
    request.source_date_epoch =
        source_date_epoch(args.source_date_epoch.or(epoch_arg), args.reproducible)?;
    request.max_parallel_stages = args.max_parallelism.map(|n| n as usize);
    (request.compression, request.compression_level) =
        compression(args.compression, args.compression_level)?;

    let push = (args.push || !args.destinations.is_empty()) && !args.no_push;
    let mut exports = Vec::new();
    for spec in &args.outputs {
        let spec = parse_output(spec)?;
        match (spec.kind.as_str(), spec.dest) {
            ("docker", Some(dest)) => exports.push(Export::Archive(ArchiveFormat::Docker, dest)),
            ("oci", Some(dest)) => exports.push(Export::Archive(ArchiveFormat::Oci, dest)),
            ("local", Some(dest)) => exports.push(Export::Local(dest)),
            ("registry", _) if !args.no_push => exports.push(Export::Push),
            _ => {}
        }
    }
    if push && !exports.iter().any(|e| matches!(e, Export::Push)) {
        exports.push(Export::Push);
    }
    if let Some(path) = &args.tar_path {
        exports.push(Export::Archive(ArchiveFormat::Docker, path.clone()));
    }
    if exports.iter().any(|e| matches!(e, Export::Push)) && request.tags.is_empty() {
        bail!("--push needs at least one -t/--tag (or --destination) naming where to push");
    }

    let mode = progress_mode(args.progress, args.quiet);
    let quiet = mode == ProgressMode::Quiet;
    let mut tty = (mode == ProgressMode::Tty).then(|| TtyProgress::stderr(colour_wanted()));
    // Base pulls and `--push` report in the build's style (above the live view in a terminal).
    let transfer_progress: Box<dyn rbuild_transfer::Progress> = match &tty {
        Some(tty) => Box::new(TransferLines(tty.printer())),
        None => registry::progress_reporter(match mode {
            ProgressMode::Quiet => TransferProgressArg::Quiet,
            ProgressMode::Json => TransferProgressArg::Json,
            _ => TransferProgressArg::Plain,
        }),
    };
    let bases = PullingBases {
        client: client.clone(),
        runtime: &runtime,
        always_pull: args.pull,
        pulled: Mutex::new(Vec::new()),
        pulling: Mutex::new(BTreeMap::new()),
        progress: transfer_progress.as_ref(),
    };
    let mut plain;
    let mut json;
    let mut none = NoProgress;
    let progress: &mut dyn Progress = match (mode, tty.as_mut()) {
        (_, Some(tty)) => tty,
        (ProgressMode::Quiet, _) => &mut none,
        (ProgressMode::Json, _) => {
            json = JsonProgress::stderr();
            &mut json
        }
        _ => {
            // RUN output and instruction text are untrusted: escape control characters.
            plain = PlainProgress::new(crate::escape::EscapingWriter::new(std::io::stderr()));
            &mut plain
        }
    };
    let notes = match mode {
        ProgressMode::Quiet => Notes::Quiet,
        ProgressMode::Json => Notes::Json,
        ProgressMode::Plain | ProgressMode::Tty => Notes::Plain,
    };
    let cache_io = CacheIo {
        client: &client,
        runtime: &runtime,
        store: &store,
        notes,
    };
    let imported = cache_flags.import(&cache_io, progress);
    let result =
        rbuild_executor::build_with_cache(&request, &store, &bases, imported.remote(), progress)?;
    drop(unpacked);
    drop(secret_files);
    drop(ssh_key_agents);

    let record = store
        .resolve(&result.manifest.to_string())
        .context("reading back the built image")?;
    let mut pushed = None;
    for export in &exports {
        match export {
            Export::Archive(format, dest) => super::images::write_archive_file(
                &store,
                std::slice::from_ref(&record),
                *format,
                dest,
            )?,
            Export::Local(dest) => write_local(&store, &record, dest)?,
            Export::Push => {
                for tag in &request.tags {
                    let digest = push_tag(
                        &store,
                        &client,
                        &runtime,
                        &record,
                        tag,
                        transfer_progress.as_ref(),
                    )?;
                    if !quiet {
                        eprintln!("pushed {tag}@{digest}");
                    }
                    pushed.get_or_insert(digest);
                }
            }
        }
    }
    cache_flags.export(&cache_io, &imported, &result, progress)?;
    let phases = rbuild_executor::phases::snapshot().since(&phases_before);
    progress.event(&rbuild_executor::Event::Phases { phases });
    if let Some(path) = &args.iidfile {
        write_file(path, &result.image_id.to_string())?;
    }
    let digest = pushed.unwrap_or_else(|| result.manifest.clone());
    if let Some(path) = &args.digest_file {
        write_file(path, &digest.to_string())?;
    }
    if let Some(path) = &args.metadata_file {
        let metadata = serde_json::json!({
            "containerimage.digest": digest.to_string(),
            "containerimage.config.digest": result.image_id.to_string(),
            "image.name": request.tags.join(","),
            "rbuild.phases": phases,
        });
        write_file(path, &serde_json::to_string_pretty(&metadata)?)?;
    }
    if quiet {
        println!("{}", result.image_id);
    }
    Ok(0)
}

/// How the build reports, `auto` resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProgressMode {
    Quiet,
    Plain,
    Json,
    Tty,
}

/// `auto` is the live view when stderr is a terminal that can move its cursor (not
/// `TERM=dumb`), plain lines otherwise (CI logs, pipes); `tty` is the live view anyway.
fn progress_mode(arg: ProgressArg, quiet: bool) -> ProgressMode {
    match arg {
        _ if quiet => ProgressMode::Quiet,
        ProgressArg::Quiet => ProgressMode::Quiet,
        ProgressArg::Plain => ProgressMode::Plain,
        ProgressArg::Json => ProgressMode::Json,
        ProgressArg::Tty => ProgressMode::Tty,
        ProgressArg::Auto => {
            let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
            if stderr_is_terminal() && !dumb {
                ProgressMode::Tty
            } else {
                ProgressMode::Plain
            }
        }
    }
}

/// Colour unless `NO_COLOR` is set to something (no-color.org).
fn colour_wanted() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Transfer lines (base pulls, pushes) printed above the live view, not through it.
struct TransferLines(TtyPrinter);

impl rbuild_transfer::Progress for TransferLines {
    fn event(&self, event: &rbuild_transfer::Event) {
        self.0.line(&rbuild_transfer::plain_line(event));
    }
}

/// Base images from the store, pulled from their registry when missing (or always with
/// `--pull`, once per build).
struct PullingBases<'r> {
    client: Client,
    runtime: &'r tokio::runtime::Runtime,
    always_pull: bool,
    pulled: Mutex<Vec<String>>,
    /// One lock per image name: stages (and the build's look-ahead) asking for the same
    /// image wait for one pull, while different images are pulled at the same time.
    pulling: Mutex<BTreeMap<String, std::sync::Arc<Mutex<()>>>>,
    progress: &'r dyn rbuild_transfer::Progress,
}

impl BaseImages for PullingBases<'_> {
    fn resolve(
        &self,
        store: &Store,
        reference: &str,
        platform: &Platform,
    ) -> Result<ImageRecord, String> {
        let parsed =
            Reference::parse(reference).map_err(|e| format!("base image {reference:?}: {e}"))?;
        let name = parsed.to_string();
        let name_lock = self
            .pulling
            .lock()
            .map_err(|e| e.to_string())?
            .entry(name.clone())
            .or_default()
            .clone();
        let _pulling = name_lock.lock().map_err(|e| e.to_string())?;
        let pulled_already = self
            .pulled
            .lock()
            .map_err(|e| e.to_string())?
            .contains(&name);
        if !self.always_pull || pulled_already {
            if let Ok(record) = store.resolve(&name) {
                return Ok(record);
            }
        }
        let _t = rbuild_executor::Phase::Pull.timer();
        let options = rbuild_transfer::PullOptions {
            platforms: rbuild_transfer::PlatformChoice::One(platform.clone()),
            ..Default::default()
        };
        let record = self
            .runtime
            .block_on(rbuild_transfer::pull(
                &self.client,
                store,
                &parsed,
                &options,
                self.progress,
            ))
            .map_err(|e| format!("pulling {reference}: {e}"))?;
        self.pulled.lock().map_err(|e| e.to_string())?.push(name);
        Ok(record)
    }
}

/// A directory context is used where it is; a tar (a file, or `-` for stdin) is unpacked
/// into a private directory in the store, with the same safety as a layer.
fn context_dir(
    store: &Store,
    raw: &str,
    keep: &mut Option<rbuild_executor::ScratchDir>,
) -> Result<PathBuf> {
    let raw = raw.strip_prefix("dir://").unwrap_or(raw);
    let tar: Option<Box<dyn std::io::Read>> = if raw == "-" {
        Some(Box::new(std::io::stdin().lock()))
    } else if let Some(path) = raw.strip_prefix("tar://") {
        Some(Box::new(
            File::open(path).with_context(|| format!("opening {path}"))?,
        ))
    } else if raw.contains("://") {
        bail!(
            "the context {raw:?} is a URL; only local directories and tar archives are supported"
        );
    } else if Path::new(raw).is_file() {
        Some(Box::new(
            File::open(raw).with_context(|| format!("opening {raw}"))?,
        ))
    } else {
        None
    };
    let Some(tar) = tar else {
        let dir = PathBuf::from(raw);
        if !dir.is_dir() {
            bail!("the build context {raw:?} is not a directory or a tar archive");
        }
        return Ok(dir);
    };
    let tmp = rbuild_executor::ScratchDir::for_context(store)
        .context("creating a directory for the context")?;
    let options = rbuild_layer::ApplyOptions {
        ownership: rbuild_layer::Ownership::Ignore,
        ..Default::default()
    };
    rbuild_layer::apply_layer(tar, tmp.path(), &options)
        .map_err(|e| anyhow!("unpacking the build context: {e}"))?;
    let dir = tmp.path().to_path_buf();
    *keep = Some(tmp);
    Ok(dir)
}

/// The Dockerfile's name for messages, its path (for `Dockerfile.dockerignore`) and text.
/// Read as BuildKit reads it: from the directory that holds it (the context by default, the
/// `-f` file's directory otherwise) with symlinks resolved inside that directory, so a
/// Dockerfile that links to a host file reads nothing from the host.
fn read_dockerfile(
    context: &Path,
    file: Option<&str>,
) -> Result<(String, Option<PathBuf>, String)> {
    let limit = rbuild_dockerfile::limits::MAX_DOCKERFILE_BYTES;
    match file {
        Some("-") => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .take(limit + 1)
                .read_to_end(&mut bytes)
                .context("reading the Dockerfile from standard input")?;
            if bytes.len() as u64 > limit {
                bail!("the Dockerfile on standard input is larger than the limit of {limit} bytes");
            }
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow!("the Dockerfile on standard input is not UTF-8"))?;
            Ok(("Dockerfile".into(), None, text))
        }
        Some(path) => {
            let path = PathBuf::from(path);
            let text = read_dockerfile_in_dir(&path)?;
            Ok((path.display().to_string(), Some(path), text))
        }
        None => {
            let path = context.join("Dockerfile");
            let text = read_dockerfile_in_dir(&path)?;
            Ok(("Dockerfile".into(), Some(path), text))
        }
    }
}

/// Reads `path` from inside its parent directory; `Dockerfile` falls back to `dockerfile`
/// (BuildKit's moby/moby#10858 rule).
fn read_dockerfile_in_dir(path: &Path) -> Result<String> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("the Dockerfile path {} names no file", path.display()))?;
    let limit = rbuild_dockerfile::limits::MAX_DOCKERFILE_BYTES;
    let mut result = rbuild_ignore::read_file_in_root(dir, Path::new(name), limit);
    if matches!(result, Err(rbuild_ignore::InRootError::NotFound)) && name == "Dockerfile" {
        if let Ok(bytes) = rbuild_ignore::read_file_in_root(dir, Path::new("dockerfile"), limit) {
            result = Ok(bytes);
        }
    }
    let bytes = result.map_err(|err| match err {
        rbuild_ignore::InRootError::NotFound => anyhow!(
            "unable to open the Dockerfile {}: no such file inside {} (symlinks are resolved \
             inside that directory, as BuildKit does)",
            path.display(),
            dir.display()
        ),
        other => anyhow!("unable to open the Dockerfile {}: {other}", path.display()),
    })?;
    String::from_utf8(bytes).map_err(|_| anyhow!("the Dockerfile {} is not UTF-8", path.display()))
}

/// `--ssh default` / `--ssh ID` (the agent at `$SSH_AUTH_SOCK`) and `--ssh ID=PATH[,PATH…]`
/// where the paths are one agent socket or private key files (as buildx). Key files are
/// loaded into a private ssh-agent that lives as long as `keep`. A missing path, a key with
/// a passphrase or a missing agent fails before any work starts.
fn ssh_agents(
    store: &Store,
    specs: &[String],
    keep: &mut Vec<rbuild_executor::ssh_agent::SshAgent>,
) -> Result<BTreeMap<String, PathBuf>> {
    use rbuild_executor::ssh_agent::{classify_ssh_paths, SshAgent, SshSource};
    let mut out = BTreeMap::new();
    for spec in specs {
        let (id, paths) = match spec.split_once('=') {
            Some((id, paths)) => (id, Some(paths)),
            None => (spec.as_str(), None),
        };
        if id.is_empty() {
            bail!("--ssh {spec:?}: expected default, ID or ID=SOCKET|KEYFILE[,KEYFILE…]");
        }
        let paths: Vec<PathBuf> = match paths {
            Some(paths) => paths
                .split(',')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
            None => vec![std::env::var_os("SSH_AUTH_SOCK")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| {
                    anyhow!(
                        "--ssh {id}: SSH_AUTH_SOCK is not set; start an ssh-agent or give --ssh {id}=SOCKET|KEYFILE"
                    )
                })?],
        };
        let socket = match classify_ssh_paths(&paths).map_err(|e| anyhow!("--ssh {id}: {e}"))? {
            SshSource::Socket(socket) => socket,
            SshSource::Keys(keys) => {
                let agent = SshAgent::start(&store.state_dir("tmp")?, &keys)
                    .map_err(|e| anyhow!("--ssh {id}: {e}"))?;
                let socket = agent.socket().to_path_buf();
                keep.push(agent);
                socket
            }
        };
        out.insert(id.to_string(), socket);
    }
    Ok(out)
}

/// `--secret id=ID,src=PATH` and `id=ID,env=VAR`. An env secret's value is written to a
/// private directory on a memory file system (see `rbuild_executor::SecretFiles`) that lives
/// as long as `keep`; a missing file or variable is an error before any work starts.
fn secrets(
    store: &Store,
    specs: &[String],
    keep: &mut Option<rbuild_executor::SecretFiles>,
) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                Some(("env", v)) => env = Some(v.to_string()),
                Some(("type", "file" | "env")) => {}
                _ => bail!("--secret {spec:?}: expected id=ID,src=PATH or id=ID,env=VAR"),
            }
        }
        let id = id.ok_or_else(|| anyhow!("--secret {spec:?} needs id=ID"))?;
        let path = match (src, env) {
            (Some(path), None) => {
                if !path.is_file() {
                    bail!(
                        "--secret id={id}: the file {} does not exist",
                        path.display()
                    );
                }
                path
            }
            (None, Some(var)) => {
                let value = std::env::var_os(&var).ok_or_else(|| {
                    anyhow!("--secret id={id}: the environment variable {var} is not set")
                })?;
                let files = match keep {
                    Some(files) => files,
                    None => {
                        let files = rbuild_executor::SecretFiles::create(store)
                            .context("creating a private directory for --secret values")?;
                        if files.on_disk() {
                            eprintln!(
                                "warning: no memory file system (tmpfs at $XDG_RUNTIME_DIR or \
                                 /dev/shm) is writable: --secret values are kept in {} until \
                                 the build ends",
                                files.dir().display()
                            );
                        }
                        keep.insert(files)
                    }
                };
                use std::os::unix::ffi::OsStrExt as _;
                files
                    .add(value.as_bytes())
                    .with_context(|| format!("--secret id={id}"))?
            }
            _ => bail!("--secret {spec:?}: give exactly one of src=PATH and env=VAR"),
        };
        out.insert(id, path);
    }
    Ok(out)
}

/// `--compression` and `--compression-level`, the level checked against the format's range.
fn compression(
    choice: CompressionArg,
    level: Option<u32>,
) -> Result<(rbuild_layer::Compression, Option<u32>)> {
    let (compression, range) = match choice {
        CompressionArg::Gzip => (rbuild_layer::Compression::Gzip, 0..=9),
        CompressionArg::Zstd => (rbuild_layer::Compression::Zstd, 1..=22),
        CompressionArg::None => (rbuild_layer::Compression::None, 0..=0),
    };
    match level {
        Some(_) if choice == CompressionArg::None => {
            bail!("--compression-level does not apply to --compression none")
        }
        Some(n) if !range.contains(&n) => bail!(
            "--compression-level {n} is out of range for {choice:?}: use {}–{}",
            range.start(),
            range.end()
        ),
        _ => Ok((compression, level)),
    }
}

/// `--source-date-epoch N` first; `--reproducible` pins timestamps to the epoch, as Kaniko's
/// flag does; otherwise `SOURCE_DATE_EPOCH` is honoured when set.
fn source_date_epoch(flag: Option<i64>, reproducible: bool) -> Result<Option<i64>> {
    if flag.is_some() {
        return Ok(flag);
    }
    if reproducible {
        return Ok(Some(0));
    }
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            Ok(Some(v.trim().parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")
            })?))
        }
        _ => Ok(None),
    }
}

/// `-o type=local,dest=DIR`: the image's filesystem, layers applied in order.
fn write_local(store: &Store, record: &ImageRecord, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let manifest = store.read_manifest(&record.image_manifest.digest)?;
    let options = rbuild_layer::ApplyOptions {
        ownership: if is_root() {
            rbuild_layer::Ownership::Preserve
        } else {
            rbuild_layer::Ownership::Ignore
        },
        ..Default::default()
    };
    for layer in &manifest.layers {
        let blob = store.open_blob(&layer.digest)?;
        rbuild_layer::apply_layer(blob, dest, &options).map_err(|e| {
            anyhow!(
                "writing layer {} into {}: {e}",
                layer.digest,
                dest.display()
            )
        })?;
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn push_tag(
    store: &Store,
    client: &Client,
    runtime: &tokio::runtime::Runtime,
    record: &ImageRecord,
    tag: &str,
    progress: &dyn rbuild_transfer::Progress,
) -> Result<rbuild_image::Digest> {
    let _t = rbuild_executor::Phase::Push.timer();
    let destination = Reference::parse(tag)?;
    Ok(runtime.block_on(rbuild_transfer::push(
        client,
        store,
        &record.manifest,
        &destination,
        &rbuild_transfer::PushOptions::default(),
        progress,
    ))?)
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `--security-opt` values: only `seccomp=unconfined` (and `seccomp=default`) exist here.
fn security_opts(opts: &[String]) -> Result<Seccomp> {
    let mut seccomp = Seccomp::DockerDefault;
    for opt in opts {
        match opt.split_once('=') {
            Some(("seccomp", value)) => {
                seccomp = value
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("--security-opt {opt}: {e}"))?;
            }
            _ => anyhow::bail!(
                "--security-opt {opt:?} is not supported: the only option is seccomp=unconfined"
            ),
        }
    }
    Ok(seccomp)
}
