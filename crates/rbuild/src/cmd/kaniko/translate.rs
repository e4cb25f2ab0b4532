//! The pure translation of Kaniko's flags into an `rbuild build` command line (which the
//! build command resolves into a `BuildSpec` like any other), and what to do after it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use rbuild_image::Reference;

use super::flags::*;

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

/// The registry part of a reference, as `--insecure-registry` wants it.
pub(super) fn registry_of(reference: &str) -> Result<String> {
    let parsed = Reference::parse(reference)
        .map_err(|e| anyhow!("--destination {reference:?} is not an image reference: {e}"))?;
    Ok(parsed.registry().to_string())
}

/// The repository of a reference without tag or digest (Kaniko's default cache repository is
/// `<destination repository>/cache`).
pub(super) fn repository_of(reference: &str) -> Result<String> {
    let parsed = Reference::parse(reference)
        .map_err(|e| anyhow!("--destination {reference:?} is not an image reference: {e}"))?;
    Ok(format!("{}/{}", parsed.registry(), parsed.repository()))
}

/// Kaniko's context: `dir://PATH`, `tar://PATH` or a plain path (a directory or a tar).
/// `sub_path` is `--context-sub-path`.
pub(super) fn context_dir(raw: &str, sub_path: Option<&str>) -> Result<(String, Option<PathBuf>)> {
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
