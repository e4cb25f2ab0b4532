//! `rbuild kaniko …` and `/kaniko/executor …`: Kaniko's executor command line with Kaniko's
//! meaning, translated into an `rbuild build` command line. The translation is pure (it only
//! asks whether files exist), so every flag's meaning is unit-tested; what happens after the
//! build (Kaniko's digest files and OCI layout) is done here too, from rbuild's digest file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rbuild_image::Reference;

/// Kaniko's flags that take a value. Both `--name value` and `--name=value` are accepted, as
/// pflag does.
const VALUE_FLAGS: &[&str] = &[
    "context",
    "dockerfile",
    "destination",
    "tar-path",
    "cache-repo",
    "cache-ttl",
    "cache-dir",
    "digest-file",
    "image-name-with-digest-file",
    "image-name-tag-with-digest-file",
    "oci-layout-path",
    "ignore-path",
    "push-retry",
    "verbosity",
    "log-format",
    "custom-platform",
    "build-arg",
    "label",
    "target",
    "registry-mirror",
    "registry-certificate",
    "registry-client-cert",
    "registry-map",
    "insecure-registry",
    "skip-tls-verify-registry",
    "snapshot-mode",
    "snapshotMode",
    "compression",
    "compression-level",
    "image-fs-extract-retry",
    "image-download-retry",
    "kaniko-dir",
    "context-sub-path",
    "bucket",
    "git",
    "credential-helpers",
];

/// Kaniko's boolean flags: `--name`, `--name=true` or `--name=false`.
const BOOL_FLAGS: &[&str] = &[
    "cache",
    "cache-copy-layers",
    "cache-run-layers",
    "cleanup",
    "compressed-caching",
    "force",
    "force-build-metadata",
    "ignore-var-run",
    "insecure",
    "insecure-pull",
    "log-timestamp",
    "no-push",
    "no-push-cache",
    "preserve-context",
    "materialize",
    "push-ignore-immutable-tag-errors",
    "reproducible",
    "single-snapshot",
    "skip-default-registry-fallback",
    "skip-push-permission-check",
    "skip-tls-verify",
    "skip-tls-verify-pull",
    "skip-unused-stages",
    "use-new-run",
];

/// Flags rbuild accepts and ignores, with why (said once per build).
const IGNORED: &[(&str, &str)] = &[
    (
        "cache-ttl",
        "cache records are kept until `rbuild prune` or the cache's own bound",
    ),
    ("cache-dir", "base images are kept in rbuild's store"),
    ("cache-copy-layers", "COPY and ADD steps are always cached"),
    ("cache-run-layers", "RUN steps are always cached"),
    (
        "compressed-caching",
        "rbuild never keeps a compressed copy of the whole filesystem",
    ),
    (
        "cleanup",
        "RUN steps never touch the container's own filesystem, so there is nothing to clean",
    ),
    (
        "ignore-path",
        "only the build's own root filesystem is snapshotted",
    ),
    (
        "ignore-var-run",
        "only the build's own root filesystem is snapshotted",
    ),
    (
        "single-snapshot",
        "each step's layer is computed from what it changed",
    ),
    (
        "snapshot-mode",
        "each step's layer is computed from what it changed",
    ),
    (
        "snapshotMode",
        "each step's layer is computed from what it changed",
    ),
    ("use-new-run", "RUN steps always run in their own sandbox"),
    (
        "skip-unused-stages",
        "stages the target does not need are always skipped, as BuildKit does",
    ),
    (
        "force",
        "rbuild never runs in the builder's own filesystem, so it needs no --force",
    ),
    (
        "kaniko-dir",
        "rbuild keeps its state in its store (--root or RBUILD_ROOT)",
    ),
    (
        "log-timestamp",
        "progress lines carry step numbers and times already",
    ),
    ("push-retry", "pushes retry with rbuild's own policy"),
    (
        "image-fs-extract-retry",
        "extraction is local and not retried",
    ),
    (
        "image-download-retry",
        "downloads retry with rbuild's own policy",
    ),
    (
        "skip-push-permission-check",
        "the push itself reports a permission error",
    ),
    (
        "skip-default-registry-fallback",
        "registry mirrors fall back as with Docker",
    ),
    (
        "preserve-context",
        "the context is never changed by a build",
    ),
    (
        "materialize",
        "the filesystem is always materialized where a step needs it",
    ),
    ("force-build-metadata", "build metadata is always written"),
    (
        "push-ignore-immutable-tag-errors",
        "a refused tag is an error",
    ),
];

/// Flags that would change the result and that rbuild cannot honour: an error, never a
/// silently dropped flag.
const REFUSED: &[(&str, &str)] = &[
    ("bucket", "contexts from cloud storage are not supported; download the context first"),
    ("git", "git contexts are not supported; clone the repository and pass --context dir://PATH"),
    ("registry-map", "registry remapping is not supported; name the registry in the FROM line or use --registry-mirror"),
    ("registry-client-cert", "put client certificates in certs.d (<host>/client.cert and client.key) instead"),
    ("credential-helpers", "credential helpers are read from Docker's config.json"),
];

/// An `rbuild build` command line and what to do after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// Arguments after `rbuild build`.
    pub build_args: Vec<String>,
    /// One line per accepted but ignored flag.
    pub ignored: Vec<String>,
    /// The images pushed (Kaniko's `--destination`s), for the digest files.
    pub destinations: Vec<String>,
    /// Where rbuild writes the image digest (the user's `--digest-file`, or ours).
    pub digest_file: Option<PathBuf>,
    pub image_name_with_digest_file: Option<PathBuf>,
    pub image_name_tag_with_digest_file: Option<PathBuf>,
    /// Kaniko's `--oci-layout-path`: an OCI layout directory, made from an OCI archive.
    pub oci_layout: Option<(PathBuf, PathBuf)>,
}

/// One parsed flag occurrence.
#[derive(Debug)]
enum Flag {
    Value(String, String),
    Bool(String, bool),
}

fn parse_bool(name: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
        "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(false),
        _ => bail!("--{name}={value}: not a boolean (use true or false)"),
    }
}

fn long_name(short: &str) -> Option<&'static str> {
    match short {
        "c" => Some("context"),
        "f" => Some("dockerfile"),
        "d" => Some("destination"),
        "v" => Some("verbosity"),
        _ => None,
    }
}

fn parse_flags(args: &[String]) -> Result<Vec<Flag>> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = if let Some(rest) = arg.strip_prefix("--") {
            match rest.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (rest.to_string(), None),
            }
        } else if let Some(rest) = arg.strip_prefix('-').filter(|r| !r.is_empty()) {
            let (short, inline) = match rest.split_once('=') {
                Some((s, v)) => (s, Some(v.to_string())),
                None if rest.len() > 1 => (&rest[..1], Some(rest[1..].to_string())),
                None => (rest, None),
            };
            let Some(long) = long_name(short) else {
                bail!("unknown Kaniko flag -{short} (see `rbuild kaniko --help`)");
            };
            (long.to_string(), inline)
        } else {
            bail!("unexpected argument {arg:?}: Kaniko's executor takes flags only (the context is --context)");
        };
        if VALUE_FLAGS.contains(&name.as_str()) {
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| anyhow!("--{name} needs a value"))?,
            };
            out.push(Flag::Value(name, value));
        } else if BOOL_FLAGS.contains(&name.as_str()) {
            let value = match inline {
                Some(v) => parse_bool(&name, &v)?,
                None => true,
            };
            out.push(Flag::Bool(name, value));
        } else {
            bail!("unknown Kaniko flag --{name} (see docs/kaniko.md for the flags rbuild accepts)");
        }
    }
    Ok(out)
}

/// The registry part of a reference, as `--insecure-registry` wants it.
fn registry_of(reference: &str) -> Result<String> {
    let parsed = Reference::parse(reference)
        .map_err(|e| anyhow!("--destination {reference:?} is not an image reference: {e}"))?;
    Ok(parsed.registry().to_string())
}

/// The repository of a reference without tag or digest (Kaniko's default cache repository is
/// `<destination repository>/cache`).
fn repository_of(reference: &str) -> Result<String> {
    let parsed = Reference::parse(reference)
        .map_err(|e| anyhow!("--destination {reference:?} is not an image reference: {e}"))?;
    Ok(format!("{}/{}", parsed.registry(), parsed.repository()))
}

/// Kaniko's context: `dir://PATH`, `tar://PATH` or a plain path (a directory or a tar).
/// `sub_path` is `--context-sub-path`.
fn context_dir(raw: &str, sub_path: Option<&str>) -> Result<(String, Option<PathBuf>)> {
    for scheme in ["s3://", "gs://", "az://", "https://", "http://", "git://"] {
        if raw.starts_with(scheme) {
            bail!(
                "the context {raw:?} is remote; rbuild builds from a local directory (dir://PATH) \
                 or tar archive (tar://PATH): download or clone it first"
            );
        }
    }
    if let Some(tar) = raw.strip_prefix("tar://") {
        if sub_path.is_some() {
            bail!("--context-sub-path is supported with directory contexts only");
        }
        return Ok((format!("tar://{tar}"), None));
    }
    let dir = PathBuf::from(raw.strip_prefix("dir://").unwrap_or(raw));
    let dir = match sub_path {
        Some(sub) => dir.join(sub),
        None => dir,
    };
    Ok((dir.display().to_string(), Some(dir)))
}

/// Translates Kaniko's executor flags. `exists` answers whether a path names an existing file.
pub fn translate(args: &[String], exists: &dyn Fn(&Path) -> bool) -> Result<Translation> {
    let flags = parse_flags(args)?;
    let value = |name: &str| -> Option<String> {
        flags.iter().rev().find_map(|f| match f {
            Flag::Value(n, v) if n == name => Some(v.clone()),
            _ => None,
        })
    };
    let values = |name: &str| -> Vec<String> {
        flags
            .iter()
            .filter_map(|f| match f {
                Flag::Value(n, v) if n == name => Some(v.clone()),
                _ => None,
            })
            .collect()
    };
    let flag = |name: &str| -> bool {
        flags
            .iter()
            .rev()
            .find_map(|f| match f {
                Flag::Bool(n, v) if n == name => Some(*v),
                _ => None,
            })
            .unwrap_or(false)
    };
    for (name, why) in REFUSED {
        if value(name).is_some() {
            bail!("--{name} is not supported: {why}");
        }
    }
    let mut out = Translation {
        build_args: Vec::new(),
        ignored: Vec::new(),
        destinations: values("destination"),
        digest_file: value("digest-file").map(PathBuf::from),
        image_name_with_digest_file: value("image-name-with-digest-file").map(PathBuf::from),
        image_name_tag_with_digest_file: value("image-name-tag-with-digest-file")
            .map(PathBuf::from),
        oci_layout: None,
    };
    let mut seen_ignored: Vec<&str> = Vec::new();
    for f in &flags {
        let name = match f {
            Flag::Value(n, _) | Flag::Bool(n, _) => n.as_str(),
        };
        if let Some((n, why)) = IGNORED.iter().find(|(n, _)| *n == name) {
            if !seen_ignored.contains(n) {
                seen_ignored.push(n);
                out.ignored
                    .push(format!("--{n} is accepted and ignored: {why}"));
            }
        }
    }
    if let Some(mode) = value("snapshot-mode").or(value("snapshotMode")) {
        if !["full", "redo", "time"].contains(&mode.as_str()) {
            bail!("--snapshot-mode={mode}: use full, redo or time");
        }
    }

    let no_push = flag("no-push");
    let tar_path = value("tar-path");
    if out.destinations.is_empty() && !no_push && tar_path.is_none() {
        bail!("you must provide --destination, or use --no-push (as with Kaniko)");
    }
    let b = &mut out.build_args;

    // Context and Dockerfile: Kaniko's defaults are /workspace/ and Dockerfile.
    let raw_context = value("context").unwrap_or_else(|| "/workspace/".to_string());
    let (context, context_dir) = context_dir(&raw_context, value("context-sub-path").as_deref())?;
    b.extend(["--context".to_string(), context]);
    let dockerfile = value("dockerfile").unwrap_or_else(|| "Dockerfile".to_string());
    let dockerfile_path = PathBuf::from(&dockerfile);
    let resolved = if dockerfile_path.is_absolute() {
        Some(dockerfile_path.clone())
    } else {
        // Relative to the context first (Kaniko's documented meaning), then to the working
        // directory (Kaniko also accepts that).
        let in_context = context_dir.as_ref().map(|c| c.join(&dockerfile_path));
        match in_context {
            Some(p) if exists(&p) => Some(p),
            _ if exists(&dockerfile_path) => Some(dockerfile_path.clone()),
            Some(p) => bail!(
                "the Dockerfile {dockerfile:?} was found neither in the context ({}) nor in the \
                 working directory",
                p.display()
            ),
            // A tar context: the Dockerfile is read from inside the archive.
            None => None,
        }
    };
    match resolved {
        Some(p) => b.extend(["-f".to_string(), p.display().to_string()]),
        None if dockerfile != "Dockerfile" => bail!(
            "with a tar context, the Dockerfile must be the archive's ./Dockerfile or an \
             absolute path; got {dockerfile:?}"
        ),
        None => {}
    }

    for d in &out.destinations {
        b.extend(["--destination".to_string(), d.clone()]);
    }
    if no_push {
        b.push("--no-push".to_string());
    }
    if let Some(tar) = &tar_path {
        if out.destinations.is_empty() {
            bail!("--tar-path needs a --destination to name the image in the archive (as with Kaniko)");
        }
        b.extend(["--tar-path".to_string(), tar.clone()]);
    }
    for (kaniko, ours) in [
        ("build-arg", "--build-arg"),
        ("label", "--label"),
        ("registry-mirror", "--registry-mirror"),
        ("insecure-registry", "--insecure-registry"),
        ("skip-tls-verify-registry", "--skip-tls-verify-registry"),
    ] {
        for v in values(kaniko) {
            b.extend([ours.to_string(), v]);
        }
    }
    if let Some(t) = value("target") {
        b.extend(["--target".to_string(), t]);
    }
    if let Some(p) = value("custom-platform") {
        b.extend(["--platform".to_string(), p]);
    }
    if flag("reproducible") {
        b.push("--reproducible".to_string());
    }
    if let Some(c) = value("compression") {
        if !["gzip", "zstd"].contains(&c.as_str()) {
            bail!("--compression={c}: use gzip or zstd");
        }
        b.extend(["--compression".to_string(), c]);
    }
    if let Some(l) = value("compression-level") {
        b.extend(["--compression-level".to_string(), l]);
    }
    for cert in values("registry-certificate") {
        // Kaniko: `--registry-certificate my.registry.url=/path/to/the/certificate.cert`.
        let (_, path) = cert
            .split_once('=')
            .ok_or_else(|| anyhow!("--registry-certificate {cert:?} is not REGISTRY=PATH"))?;
        b.extend(["--registry-ca".to_string(), path.to_string()]);
    }

    // Kaniko's --insecure (push over http) and --skip-tls-verify (push without verifying)
    // name the destinations' registries; the -pull variants the base images' (see run()).
    let mut push_registries = Vec::new();
    for d in &out.destinations {
        push_registries.push(registry_of(d)?);
    }
    let cache = flag("cache");
    let cache_repo = match (cache, value("cache-repo")) {
        (true, Some(repo)) => Some(repo),
        (true, None) => match out.destinations.first() {
            Some(d) => Some(format!("{}/cache", repository_of(d)?)),
            None => bail!("--cache=true needs --cache-repo or a --destination to derive it from"),
        },
        (false, Some(_)) => {
            out.ignored
                .push("--cache-repo is ignored without --cache=true (as with Kaniko)".to_string());
            None
        }
        (false, None) => None,
    };
    if let Some(repo) = &cache_repo {
        push_registries.push(registry_of(repo)?);
        if flag("no-push-cache") {
            b.extend([
                "--cache-from".to_string(),
                format!("type=registry,ref={repo}:buildcache"),
            ]);
        } else {
            b.extend(["--cache-repo".to_string(), repo.clone()]);
        }
    }
    push_registries.dedup();
    if flag("insecure") {
        for r in &push_registries {
            b.extend(["--insecure-registry".to_string(), r.clone()]);
        }
    }
    if flag("skip-tls-verify") {
        for r in &push_registries {
            b.extend(["--skip-tls-verify-registry".to_string(), r.clone()]);
        }
    }

    // Progress: Kaniko's log levels and formats.
    let verbosity = value("verbosity").unwrap_or_else(|| "info".to_string());
    let quiet = match verbosity.as_str() {
        "panic" | "fatal" | "error" | "warn" => true,
        "info" | "debug" | "trace" => false,
        other => bail!("--verbosity={other}: use panic, fatal, error, warn, info, debug or trace"),
    };
    let progress = match value("log-format").as_deref() {
        Some("json") => "json",
        Some("text") | Some("color") | None if quiet => "quiet",
        Some("text") | Some("color") | None => "plain",
        Some(other) => bail!("--log-format={other}: use text, color or json"),
    };
    b.extend(["--progress".to_string(), progress.to_string()]);

    let wants_digest =
        out.image_name_with_digest_file.is_some() || out.image_name_tag_with_digest_file.is_some();
    if let Some(f) = &out.digest_file {
        b.extend(["--digest-file".to_string(), f.display().to_string()]);
    } else if wants_digest {
        // Filled in by run() with a private file.
    }
    if let Some(layout) = value("oci-layout-path") {
        // Filled in by run(): an OCI archive written next to the layout, then unpacked.
        out.oci_layout = Some((PathBuf::from(layout), PathBuf::new()));
    }
    Ok(out)
}

/// Runs a Kaniko command line: translate, build, then write Kaniko's extra outputs.
pub fn run(globals: &super::Globals, args: &[String]) -> Result<u8> {
    use clap::Parser as _;
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "rbuild's Kaniko-compatible executor: Kaniko's flags with Kaniko's meaning \
             (see docs/kaniko.md)"
        );
        return Ok(0);
    }
    let mut t = translate(args, &|p: &Path| p.is_file())?;
    for line in &t.ignored {
        eprintln!("note: {line}");
    }
    let scratch = tempfile::Builder::new()
        .prefix("rbuild-kaniko-")
        .tempdir()
        .context("creating a scratch directory")?;
    let needs_digest =
        t.image_name_with_digest_file.is_some() || t.image_name_tag_with_digest_file.is_some();
    if t.digest_file.is_none() && needs_digest {
        let private = scratch.path().join("digest");
        t.build_args
            .extend(["--digest-file".to_string(), private.display().to_string()]);
        t.digest_file = Some(private);
    }
    if let Some((_, archive)) = &mut t.oci_layout {
        *archive = scratch.path().join("image.oci.tar");
        t.build_args.extend([
            "-o".to_string(),
            format!("type=oci,dest={}", archive.display()),
        ]);
    }
    let flags = parse_flags(args)?;
    let pulls_insecure = flags
        .iter()
        .any(|f| matches!(f, Flag::Bool(n, true) if n == "insecure-pull"));
    let pulls_unverified = flags
        .iter()
        .any(|f| matches!(f, Flag::Bool(n, true) if n == "skip-tls-verify-pull"));
    if pulls_insecure || pulls_unverified {
        for registry in base_registries(&t)? {
            let flag = if pulls_insecure {
                "--insecure-registry"
            } else {
                "--skip-tls-verify-registry"
            };
            t.build_args.extend([flag.to_string(), registry]);
        }
    }

    #[derive(clap::Parser)]
    #[command(name = "rbuild build")]
    struct Build {
        #[command(flatten)]
        args: super::build::BuildArgs,
    }
    let argv = std::iter::once("rbuild build".to_string()).chain(t.build_args.iter().cloned());
    let build = Build::try_parse_from(argv)
        .map_err(|e| anyhow!("the translated command line was refused: {e}"))?;
    let code = super::build::run(globals, build.args)?;
    if code != 0 {
        return Ok(code);
    }
    if let Some(digest_file) = &t.digest_file {
        let digest = std::fs::read_to_string(digest_file)
            .with_context(|| format!("reading {}", digest_file.display()))?;
        let digest = digest.trim();
        if let Some(path) = &t.image_name_with_digest_file {
            let mut lines = String::new();
            for d in &t.destinations {
                lines.push_str(&format!("{}@{digest}\n", repository_of(d)?));
            }
            write_new(path, &lines)?;
        }
        if let Some(path) = &t.image_name_tag_with_digest_file {
            let mut lines = String::new();
            for d in &t.destinations {
                lines.push_str(&format!("{d}@{digest}\n"));
            }
            write_new(path, &lines)?;
        }
    }
    if let Some((layout, archive)) = &t.oci_layout {
        unpack_oci_layout(archive, layout)?;
    }
    Ok(0)
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Unpacks the OCI archive rbuild wrote into the directory Kaniko's `--oci-layout-path`
/// names (the builder image has no `tar`, so the archive is read here).
fn unpack_oci_layout(archive: &Path, layout: &Path) -> Result<()> {
    std::fs::create_dir_all(layout).with_context(|| format!("creating {}", layout.display()))?;
    let file =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    tar::Archive::new(file)
        .unpack(layout)
        .with_context(|| format!("unpacking the OCI layout into {}", layout.display()))
}

/// The registries of the base images named in FROM lines (for `--insecure-pull` and
/// `--skip-tls-verify-pull`), expanded with the global build args.
fn base_registries(t: &Translation) -> Result<Vec<String>> {
    let file = t
        .build_args
        .iter()
        .position(|a| a == "-f")
        .and_then(|i| t.build_args.get(i + 1))
        .map(PathBuf::from);
    let Some(file) = file else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("reading the Dockerfile {}", file.display()))?;
    let parsed = rbuild_dockerfile::parse_dockerfile(&file.display().to_string(), &text)
        .map_err(|e| anyhow!("{e}"))?;
    let mut build_args = std::collections::BTreeMap::new();
    for (i, a) in t.build_args.iter().enumerate() {
        if a == "--build-arg" {
            if let Some((k, v)) = t.build_args.get(i + 1).and_then(|kv| kv.split_once('=')) {
                build_args.insert(k.to_string(), v.to_string());
            }
        }
    }
    let platform = rbuild_dockerfile::Platform::parse("linux/amd64").map_err(|e| anyhow!(e))?;
    let opts = rbuild_dockerfile::BuildOptions {
        target: None,
        build_args,
        target_platform: platform.clone(),
        build_platform: platform,
    };
    let global = parsed.global_args(&opts).map_err(|e| anyhow!("{e}"))?;
    let mut out = Vec::new();
    for stage in 0..parsed.stages.len() {
        if let rbuild_dockerfile::Base::Image(image) = parsed
            .stage_base(stage, &global)
            .map_err(|e| anyhow!("{e}"))?
        {
            if image != "scratch" {
                if let Ok(r) = Reference::parse(&image) {
                    let registry = r.registry().to_string();
                    if !out.contains(&registry) {
                        out.push(registry);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Whether this process was started as Kaniko's executor (`/kaniko/executor`).
pub fn invoked_as_executor(argv0: &std::ffi::OsStr) -> bool {
    Path::new(argv0).file_name().and_then(|n| n.to_str()) == Some("executor")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(args: &[&str], files: &[&str]) -> Result<Translation> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let files: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
        translate(&args, &|p: &Path| files.iter().any(|f| f == p))
    }

    fn has_pair(t: &Translation, flag: &str, value: &str) -> bool {
        t.build_args
            .windows(2)
            .any(|w| w[0] == flag && w[1] == value)
    }

    #[test]
    fn relative_dockerfile_is_found_in_the_context_first() {
        let got = t(
            &[
                "--context",
                "dir:///src",
                "--dockerfile",
                "sub/Dockerfile",
                "--no-push",
            ],
            &["/src/sub/Dockerfile", "sub/Dockerfile"],
        )
        .unwrap();
        assert!(has_pair(&got, "--context", "/src"), "{got:?}");
        assert!(has_pair(&got, "-f", "/src/sub/Dockerfile"), "{got:?}");
        // Only in the working directory: Kaniko accepts that too.
        let got = t(
            &["-c", "/src", "-f", "other/Dockerfile", "--no-push"],
            &["other/Dockerfile"],
        )
        .unwrap();
        assert!(has_pair(&got, "-f", "other/Dockerfile"), "{got:?}");
        // Nowhere: a clear error naming the context path.
        let err = t(&["-c", "/src", "--no-push"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/src/Dockerfile"), "{err}");
    }

    #[test]
    fn destination_or_no_push_is_required() {
        let err = t(&["-c", "/src"], &["/src/Dockerfile"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--destination"), "{err}");
        let got = t(
            &[
                "-c",
                "/src",
                "-d",
                "reg.example:5000/app:1",
                "--destination=reg.example:5000/app:2",
            ],
            &["/src/Dockerfile"],
        )
        .unwrap();
        assert!(has_pair(&got, "--destination", "reg.example:5000/app:1"));
        assert!(has_pair(&got, "--destination", "reg.example:5000/app:2"));
        assert!(!got.build_args.contains(&"--no-push".to_string()));
    }

    #[test]
    fn cache_true_derives_the_cache_repo_from_the_destination() {
        let got = t(
            &[
                "-c",
                "/src",
                "-d",
                "reg.example:5000/team/app:1",
                "--cache=true",
            ],
            &["/src/Dockerfile"],
        )
        .unwrap();
        assert!(
            has_pair(&got, "--cache-repo", "reg.example:5000/team/app/cache"),
            "{got:?}"
        );
        let got = t(
            &[
                "-c",
                "/src",
                "-d",
                "r:5000/a:1",
                "--cache",
                "--cache-repo",
                "r:5000/c",
                "--no-push-cache",
            ],
            &["/src/Dockerfile"],
        )
        .unwrap();
        assert!(
            has_pair(
                &got,
                "--cache-from",
                "type=registry,ref=r:5000/c:buildcache"
            ),
            "{got:?}"
        );
        assert!(!got.build_args.contains(&"--cache-repo".to_string()));
        // --cache-repo without --cache=true is ignored, and said so.
        let got = t(
            &[
                "-c",
                "/src",
                "-d",
                "r:5000/a:1",
                "--cache-repo=r:5000/c",
                "--cache=false",
            ],
            &["/src/Dockerfile"],
        )
        .unwrap();
        assert!(
            !got.build_args.iter().any(|a| a.starts_with("--cache")),
            "{got:?}"
        );
        assert!(got.ignored.iter().any(|l| l.contains("--cache-repo")));
    }

    #[test]
    fn insecure_and_skip_tls_verify_name_the_push_registries() {
        let got = t(
            &[
                "-c",
                "/src",
                "-d",
                "reg.example:5000/a:1",
                "--insecure",
                "--skip-tls-verify",
                "--cache",
                "--cache-repo",
                "cache.example/c",
            ],
            &["/src/Dockerfile"],
        )
        .unwrap();
        assert!(
            has_pair(&got, "--insecure-registry", "reg.example:5000"),
            "{got:?}"
        );
        assert!(
            has_pair(&got, "--insecure-registry", "cache.example"),
            "{got:?}"
        );
        assert!(
            has_pair(&got, "--skip-tls-verify-registry", "reg.example:5000"),
            "{got:?}"
        );
    }

    #[test]
    fn meaningless_flags_are_accepted_and_said_once_unknown_ones_refused() {
        let got = t(
            &[
                "-c",
                "/src",
                "--no-push",
                "--cleanup",
                "--single-snapshot",
                "--snapshot-mode=redo",
                "--use-new-run",
                "--ignore-path",
                "/a",
                "--ignore-path=/b",
                "--verbosity=debug",
                "--push-retry",
                "3",
                "--cache-ttl=6h",
            ],
            &["/src/Dockerfile"],
        )
        .unwrap();
        let ignore_path_notes = got
            .ignored
            .iter()
            .filter(|l| l.contains("--ignore-path"))
            .count();
        assert_eq!(ignore_path_notes, 1, "{:?}", got.ignored);
        assert!(got.ignored.iter().any(|l| l.contains("--cleanup")));
        assert!(has_pair(&got, "--progress", "plain"));
        let err = t(
            &["-c", "/src", "--no-push", "--frobnicate"],
            &["/src/Dockerfile"],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--frobnicate"), "{err}");
        let err = t(
            &["-c", "/src", "--no-push", "--registry-map=a=b"],
            &["/src/Dockerfile"],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("registry remapping"), "{err}");
        let err = t(
            &["-c", "/src", "--no-push", "--snapshot-mode=fast"],
            &["/src/Dockerfile"],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("full, redo or time"), "{err}");
    }

    #[test]
    fn flags_with_rbuild_equivalents_are_passed_on() {
        let got = t(
            &[
                "-c",
                "tar:///ctx.tar",
                "-d",
                "r:5000/a:1",
                "--tar-path",
                "/out/a.tar",
                "--build-arg",
                "A=1",
                "--label=l=v",
                "--target",
                "final",
                "--custom-platform",
                "linux/amd64",
                "--reproducible",
                "--log-format=json",
                "--registry-certificate",
                "r:5000=/certs/ca.crt",
                "--compression",
                "zstd",
            ],
            &[],
        )
        .unwrap();
        for (f, v) in [
            ("--context", "tar:///ctx.tar"),
            ("--tar-path", "/out/a.tar"),
            ("--build-arg", "A=1"),
            ("--label", "l=v"),
            ("--target", "final"),
            ("--platform", "linux/amd64"),
            ("--progress", "json"),
            ("--registry-ca", "/certs/ca.crt"),
            ("--compression", "zstd"),
        ] {
            assert!(has_pair(&got, f, v), "{f} {v}: {got:?}");
        }
        assert!(got.build_args.contains(&"--reproducible".to_string()));
        assert!(!got.build_args.contains(&"-f".to_string()), "{got:?}");
    }

    #[test]
    fn executor_is_recognised_by_its_file_name() {
        assert!(invoked_as_executor(std::ffi::OsStr::new(
            "/kaniko/executor"
        )));
        assert!(!invoked_as_executor(std::ffi::OsStr::new(
            "/usr/local/bin/rbuild"
        )));
    }
}
