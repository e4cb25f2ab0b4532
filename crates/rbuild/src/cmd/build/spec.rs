//! The one mapping from `rbuild build` flags to a [`BuildSpec`], which both engines' front
//! ends consume (`native.rs` through a `Session`, `daemon.rs` as a daemon request). Every
//! flag's syntax is checked here, before any work starts.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rbuild_executor::tty_progress::stderr_is_terminal;
use rbuild_executor::RemoteContext;
use rbuild_remote_cache::{cache_repo_target, parse_cache_from, parse_cache_to};
use rbuild_sandbox::{Isolation, Seccomp};
use rbuild_session::{
    BuildSpec, ContextSource, DockerfileSource, NetworkMode, OutputKind, OutputSpec, ProgressMode,
    SecretSource, SecretSpec, SshSpec,
};

use super::args::{BuildArgs, CompressionArg, IsolationArg, NetworkArg, ProgressArg};
use super::named_contexts::BuildContextValue;

/// Resolves the command line into a build spec (a context URL is refused: see
/// [`spec_and_remote_context`]); for tests of the translation of other command lines.
#[cfg(test)]
pub fn spec_from_args(args: &BuildArgs) -> Result<BuildSpec> {
    let (spec, remote) = spec_and_remote_context(args)?;
    if !remote.is_empty() {
        bail!("a context URL is fetched only by `rbuild build`");
    }
    Ok(spec)
}

/// Resolves the command line into a build spec; a context URL (a git repository or an
/// http(s) archive or Dockerfile, as `docker buildx build URL` takes) is fetched first, and
/// the fetched files live as long as the returned [`RemoteContext`].
pub(crate) fn spec_and_remote_context(args: &BuildArgs) -> Result<(BuildSpec, Vec<RemoteContext>)> {
    let raw_context = args
        .context
        .as_deref()
        .or(args.context_flag.as_deref())
        .ok_or_else(|| anyhow!("no build context given"))?;
    let remote = if rbuild_executor::is_remote_context(raw_context) {
        let fetched = rbuild_executor::fetch_remote_context(raw_context, &std::env::temp_dir())
            .map_err(|e| anyhow!("fetching the build context: {e}"))?;
        Some(fetched)
    } else {
        None
    };
    let context = match &remote {
        Some(fetched) => ContextSource::Dir(fetched.dir.clone()),
        None => context_source(raw_context)?,
    };
    if context == ContextSource::Stdin && args.file.as_deref() == Some("-") {
        bail!("the context and the Dockerfile cannot both come from standard input");
    }
    let mut spec = BuildSpec::new(context);
    spec.dockerfile = match (&remote, args.file.as_deref()) {
        // The URL served the Dockerfile itself: BuildKit takes it whatever `-f` names.
        (
            Some(RemoteContext {
                dockerfile: Some(text),
                ..
            }),
            _,
        ) => DockerfileSource::Inline(text.clone()),
        // `-f NAME` of a context URL names a file inside it (buildx's behaviour).
        (Some(fetched), Some(name)) if name != "-" && Path::new(name).is_relative() => {
            DockerfileSource::Path(fetched.dir.join(name))
        }
        (_, file) => dockerfile_source(file)?,
    };
    spec.tags = args.tags.clone();
    spec.tags.extend(args.destinations.iter().cloned());
    spec.build_args = parse_build_args(&args.build_args, |k| std::env::var(k).ok())?;
    spec.labels = parse_labels(&args.labels)?;
    spec.target = args.target.clone();
    spec.platform = args.platform.clone();
    spec.no_cache = args.no_cache;
    spec.no_cache_filter = args.no_cache_filter.clone();
    spec.explain_misses = args.explain_misses;
    spec.pull = args.pull;
    spec.network = match args.network {
        NetworkArg::Default => NetworkMode::Default,
        NetworkArg::Host => NetworkMode::Host,
        NetworkArg::None => NetworkMode::None,
    };
    spec.allow_network_host = entitlements(&args.allow)?;
    spec.isolation = match args.isolation {
        IsolationArg::Auto => Isolation::Auto,
        IsolationArg::Userns => Isolation::Userns,
        IsolationArg::Chroot => Isolation::Chroot,
        IsolationArg::Restricted => Isolation::Restricted,
    };
    spec.seccomp = security_opts(&args.security_opts)?;
    spec.secrets = args
        .secrets
        .iter()
        .map(|s| parse_secret(s))
        .collect::<Result<_>>()?;
    spec.ssh = args
        .ssh
        .iter()
        .map(|s| parse_ssh(s, std::env::var_os("SSH_AUTH_SOCK")))
        .collect::<Result<_>>()?;
    // The main context's time (`SOURCE_DATE_EPOCH=context`); every fetched context is kept.
    let context_epoch = remote.as_ref().and_then(|r| r.epoch);
    let mut remote: Vec<RemoteContext> = remote.into_iter().collect();
    for text in &args.build_contexts {
        let (name, context) = match super::named_contexts::parse_build_context(text)? {
            (name, BuildContextValue::Context(context)) => (name, context),
            // Fetched into a directory; its time is kept for `ARG SOURCE_DATE_EPOCH=NAME`.
            (name, BuildContextValue::Url(url)) => {
                let (context, fetched) =
                    super::named_contexts::fetch_url_context(&name, &url, &std::env::temp_dir())?;
                if let Some(epoch) = fetched.epoch {
                    spec.named_context_epochs.insert(name.clone(), epoch);
                }
                remote.push(fetched);
                (name, context)
            }
        };
        if spec.named_contexts.insert(name.clone(), context).is_some() {
            bail!("--build-context {name}: given twice");
        }
    }
    cache_flags(args, &mut spec)?;
    spec.outputs = outputs(args)?;
    // BuildKit takes the epoch from the build argument SOURCE_DATE_EPOCH.
    spec.source_date_epoch = match epoch_build_arg(spec.build_args.get("SOURCE_DATE_EPOCH"))? {
        // `context`: the time of the context's git commit; a local directory or a tar (the
        // contexts rbuild takes) has none, so the build has no epoch, as in BuildKit
        // (`testSourceDateEpochContextLocalUnset`), whatever the environment says.
        // A context URL has one: a git commit's time, an HTTP Last-Modified or an archive's
        // newest mtime; RUN sees it as the build argument's value, as in BuildKit.
        EpochArg::Context if context_epoch.is_some() => {
            let epoch =
                source_date_epoch(args.source_date_epoch.or(context_epoch), args.reproducible)?;
            if let Some(epoch) = epoch {
                spec.build_args
                    .insert("SOURCE_DATE_EPOCH".to_string(), epoch.to_string());
            }
            epoch
        }
        EpochArg::Context if args.source_date_epoch.is_none() && !args.reproducible => None,
        EpochArg::Context | EpochArg::Unset => {
            source_date_epoch(args.source_date_epoch, args.reproducible)?
        }
        EpochArg::Seconds(epoch) => {
            source_date_epoch(args.source_date_epoch.or(Some(epoch)), args.reproducible)?
        }
    };
    (spec.compression, spec.compression_level) =
        compression(args.compression, args.compression_level)?;
    spec.max_parallel_stages = args.max_parallelism.map(|n| n as usize);
    spec.iidfile = args.iidfile.clone();
    spec.digest_file = args.digest_file.clone();
    spec.metadata_file = args.metadata_file.clone();
    spec.progress = progress_mode(args.progress, args.quiet);
    Ok((spec, remote))
}

/// `--allow`: whether `network.host` is granted. BuildKit's other entitlements are errors
/// naming why: rbuild runs no `RUN --security=insecure` step, and has no device
/// entitlements.
fn entitlements(allow: &[String]) -> Result<bool> {
    let mut network_host = false;
    for entitlement in allow {
        match entitlement.trim() {
            "network.host" => network_host = true,
            "security.insecure" => bail!(
                "--allow security.insecure: rbuild does not run privileged steps \
                 (RUN --security=insecure is refused)"
            ),
            other => {
                bail!("--allow {other:?}: unknown entitlement (rbuild grants only network.host)")
            }
        }
    }
    Ok(network_host)
}

/// `-o` outputs in order, then the push `--push`/`--destination` ask for (unless
/// `--no-push`), then Kaniko's `--tar-path`.
fn outputs(args: &BuildArgs) -> Result<Vec<OutputSpec>> {
    let mut outputs = Vec::new();
    for text in &args.outputs {
        let output = parse_output(text)?;
        // Kaniko's --no-push wins over every way of asking for a push.
        if output.kind == OutputKind::Registry && args.no_push {
            continue;
        }
        outputs.push(output);
    }
    let push = (args.push || !args.destinations.is_empty()) && !args.no_push;
    if push && !outputs.iter().any(|o| o.kind == OutputKind::Registry) {
        outputs.push(OutputSpec::new(OutputKind::Registry, None)?);
    }
    if let Some(path) = &args.tar_path {
        outputs.push(OutputSpec::new(OutputKind::Docker, Some(path.clone()))?);
    }
    Ok(outputs)
}

/// `--cache-from`, `--cache-to`; `--cache-repo REPO` reads and writes `REPO:buildcache`.
fn cache_flags(args: &BuildArgs, spec: &mut BuildSpec) -> Result<()> {
    for text in &args.cache_from {
        spec.cache_from
            .push(parse_cache_from(text).map_err(|e| anyhow!(e))?);
    }
    for text in &args.cache_to {
        spec.cache_to
            .push(parse_cache_to(text).map_err(|e| anyhow!(e))?);
    }
    if let Some(repo) = &args.cache_repo {
        let target = cache_repo_target(repo).map_err(|e| anyhow!(e))?;
        spec.cache_from.push(target.reference.clone());
        spec.cache_to.push(target);
    }
    Ok(())
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

/// One `-o type=…[,dest=…][,KEY=VALUE…]`; an unknown type or attribute is an error naming
/// it. The image exporter attributes (`rewrite-timestamp=`, `source-date-epoch=`) are read
/// by the session's [`OutputSpec::set_attribute`].
pub(super) fn parse_output(text: &str) -> Result<OutputSpec> {
    let mut kind = None;
    let mut dest = None;
    let mut attributes = Vec::new();
    for part in text.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("-o {text:?}: {part:?} is not key=value"))?;
        match k {
            "type" => kind = Some(v.to_string()),
            "dest" => dest = Some(PathBuf::from(v)),
            other => attributes.push((other, v)),
        }
    }
    let kind = kind.ok_or_else(|| anyhow!("-o {text:?} needs type=oci|docker|local|registry"))?;
    let kind = OutputKind::parse(&kind).map_err(|e| anyhow!("-o {text:?}: {e}"))?;
    let mut output = OutputSpec::new(kind, dest).map_err(|e| anyhow!("-o {text:?}: {e}"))?;
    for (key, value) in attributes {
        output
            .set_attribute(key, value)
            .map_err(|e| anyhow!("-o {text:?}: {e}"))?;
    }
    Ok(output)
}

/// Kaniko's `--context dir://path` / `tar://path`, a tar file, `-` (stdin) or a directory.
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

/// `-f PATH`, or `-f -`: read now from standard input, up to the Dockerfile size limit.
fn dockerfile_source(file: Option<&str>) -> Result<DockerfileSource> {
    match file {
        None => Ok(DockerfileSource::Default),
        Some("-") => {
            let limit = rbuild_dockerfile::limits::MAX_DOCKERFILE_BYTES;
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
            Ok(DockerfileSource::Inline(text))
        }
        Some(path) => Ok(DockerfileSource::Path(PathBuf::from(path))),
    }
}

/// `--secret id=ID,src=PATH` or `id=ID,env=VAR` (the value is read when the build starts).
fn parse_secret(text: &str) -> Result<SecretSpec> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
            Some(("env", v)) => env = Some(v.to_string()),
            Some(("type", "file" | "env")) => {}
            _ => bail!("--secret {text:?}: expected id=ID,src=PATH or id=ID,env=VAR"),
        }
    }
    let id = id.ok_or_else(|| anyhow!("--secret {text:?} needs id=ID"))?;
    let source = match (src, env) {
        (Some(path), None) => SecretSource::File(path),
        (None, Some(var)) => SecretSource::Env(var),
        _ => bail!("--secret {text:?}: give exactly one of src=PATH and env=VAR"),
    };
    Ok(SecretSpec { id, source })
}

/// `--ssh default` / `--ssh ID` (the agent at `$SSH_AUTH_SOCK`, given as `auth_sock`) and
/// `--ssh ID=PATH[,PATH…]` where the paths are one agent socket or private key files (as
/// buildx).
fn parse_ssh(text: &str, auth_sock: Option<std::ffi::OsString>) -> Result<SshSpec> {
    let (id, paths) = match text.split_once('=') {
        Some((id, paths)) => (id, Some(paths)),
        None => (text, None),
    };
    if id.is_empty() {
        bail!("--ssh {text:?}: expected default, ID or ID=SOCKET|KEYFILE[,KEYFILE…]");
    }
    let paths: Vec<PathBuf> = match paths {
        Some(paths) => paths
            .split(',')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect(),
        None => vec![auth_sock
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| {
                anyhow!(
                    "--ssh {id}: SSH_AUTH_SOCK is not set; start an ssh-agent or give --ssh \
                     {id}=SOCKET|KEYFILE"
                )
            })?],
    };
    Ok(SshSpec {
        id: id.to_string(),
        paths,
    })
}

/// `--security-opt` values: only `seccomp=unconfined` (and `seccomp=default`) exist here.
fn security_opts(opts: &[String]) -> Result<Seccomp> {
    let mut seccomp = Seccomp::DockerDefault;
    for opt in opts {
        match opt.split_once('=') {
            Some(("seccomp", value)) => {
                seccomp = value
                    .parse()
                    .map_err(|e: String| anyhow!("--security-opt {opt}: {e}"))?;
            }
            _ => bail!(
                "--security-opt {opt:?} is not supported: the only option is seccomp=unconfined"
            ),
        }
    }
    Ok(seccomp)
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

/// What the build argument SOURCE_DATE_EPOCH asks for.
#[derive(Debug, PartialEq, Eq)]
enum EpochArg {
    Unset,
    /// `context`: the context's own time.
    Context,
    Seconds(i64),
}

fn epoch_build_arg(value: Option<&String>) -> Result<EpochArg> {
    match value.map(|v| v.trim()) {
        None | Some("") => Ok(EpochArg::Unset),
        Some("context") => Ok(EpochArg::Context),
        Some(v) => Ok(EpochArg::Seconds(v.parse::<i64>().with_context(|| {
            format!("--build-arg SOURCE_DATE_EPOCH={v:?} is not a number of seconds (or `context`)")
        })?)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_date_epoch_build_arg() {
        let arg = |v: &str| epoch_build_arg(Some(&v.to_string()));
        assert_eq!(epoch_build_arg(None).unwrap(), EpochArg::Unset);
        assert_eq!(arg("").unwrap(), EpochArg::Unset);
        assert_eq!(arg("context").unwrap(), EpochArg::Context);
        assert_eq!(
            arg(" 1700000000").unwrap(),
            EpochArg::Seconds(1_700_000_000)
        );
        assert!(arg("yesterday")
            .unwrap_err()
            .to_string()
            .contains("yesterday"));
    }

    #[test]
    fn allow_grants_network_host_alone() {
        assert!(!entitlements(&[]).unwrap());
        assert!(entitlements(&["network.host".into()]).unwrap());
        let err = entitlements(&["security.insecure".into()]).unwrap_err();
        assert!(err.to_string().contains("security.insecure"), "{err}");
        let err = entitlements(&["network.host".into(), "device".into()]).unwrap_err();
        assert!(err.to_string().contains("unknown entitlement"), "{err}");
    }

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
            OutputSpec::new(OutputKind::Docker, Some(PathBuf::from("out.tar"))).unwrap()
        );
        let output =
            parse_output("type=oci,dest=o.tar,rewrite-timestamp=true,source-date-epoch=").unwrap();
        assert!(output.rewrite_timestamp);
        assert_eq!(output.source_date_epoch, Some(None));
        let err = parse_output("type=oci,dest=o.tar,source-date-epoch=x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("source-date-epoch") && err.contains("\"x\""),
            "{err}"
        );
        let err = parse_output("type=docker,dest=o.tar,push=true")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"push\""), "{err}");
        assert!(parse_output("type=oci")
            .unwrap_err()
            .to_string()
            .contains("dest=PATH"));
        assert!(parse_output("dest=x")
            .unwrap_err()
            .to_string()
            .contains("type="));
    }

    #[test]
    fn an_unknown_output_type_is_refused_with_its_name() {
        let err = parse_output("type=tarball,dest=x").unwrap_err().to_string();
        assert!(err.contains("unknown output type \"tarball\""), "{err}");
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

    #[test]
    fn secrets_name_a_file_or_a_variable() {
        assert_eq!(
            parse_secret("id=tok,env=TOKEN").unwrap(),
            SecretSpec {
                id: "tok".into(),
                source: SecretSource::Env("TOKEN".into())
            }
        );
        assert!(parse_secret("id=tok,src=/a,env=B")
            .unwrap_err()
            .to_string()
            .contains("exactly one"));
        assert!(parse_secret("src=/a")
            .unwrap_err()
            .to_string()
            .contains("id=ID"));
    }

    #[test]
    fn ssh_default_is_the_agent_of_the_environment() {
        let spec = parse_ssh("default", Some("/run/agent.sock".into())).unwrap();
        assert_eq!(spec.paths, vec![PathBuf::from("/run/agent.sock")]);
        let err = parse_ssh("default", None).unwrap_err().to_string();
        assert!(err.contains("SSH_AUTH_SOCK is not set"), "{err}");
        let keys = parse_ssh("git=/k1,/k2", None).unwrap();
        assert_eq!(keys.id, "git");
        assert_eq!(keys.paths.len(), 2);
    }
}
