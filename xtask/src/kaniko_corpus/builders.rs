//! One case built by each builder: its Dockerfile staged with the run's registry and URL
//! stand-ins, then built by rbuild, by the reference BuildKit (`buildctl`) and by Kaniko
//! (in a private dockerd).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use rbuild_testutil::{Dockerd, DOCKER_CLI};

use super::cases::{self, Case};
use super::{urls, KANIKO, KANIKO_IMAGE};
use crate::fidelity::{rbuild, run, run_ok, BuildKit};

/// What a build gave: an image archive, or its output when it failed.
pub(super) enum Built {
    Image(PathBuf),
    Failed(String),
}

/// rbuild's error: its last line that says `error` with the indented lines that follow it
/// (the reason), else its last line.
pub(super) fn rbuild_error_line(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let Some(at) = lines
        .iter()
        .rposition(|l| l.to_ascii_lowercase().contains("error"))
    else {
        return lines
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
            .unwrap_or_default();
    };
    let mut parts = vec![lines[at].trim()];
    parts.extend(
        lines[at + 1..]
            .iter()
            .take_while(|l| l.starts_with(' ') && !l.trim().is_empty())
            .take(2)
            .map(|l| l.trim()),
    );
    parts.join(": ")
}

/// A file-name-safe form of a case name (`with-context/issue-57` has a slash).
pub(super) fn safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Writes the case's Dockerfile, its registry and its download URLs rewritten (to the run's
/// registry and URL stand-ins), into a directory of its own (with its `<name>.dockerignore`
/// when the corpus has one) and returns that file.
pub(super) fn stage_dockerfile(
    corpus: &Path,
    case: &Case,
    (registry, url_server): (&str, &str),
    work: &Path,
) -> Result<PathBuf> {
    let source = corpus.join(&case.dockerfile);
    let text = std::fs::read_to_string(&source)
        .with_context(|| format!("reading {}", source.display()))?;
    let file_name = source
        .file_name()
        .ok_or_else(|| anyhow!("{}: no file name", source.display()))?;
    let dir = work.join("dockerfiles").join(safe(&case.name));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dest = dir.join(file_name);
    let text = cases::rewrite_from(&text, &case.from_rewrites);
    let text = urls::rewrite_urls(&cases::rewrite_registry(&text, registry), url_server);
    std::fs::write(&dest, text).with_context(|| format!("writing {}", dest.display()))?;
    let mut ignore_name = file_name.to_os_string();
    ignore_name.push(".dockerignore");
    let ignore = source.with_file_name(&ignore_name);
    if ignore.is_file() {
        std::fs::copy(&ignore, dir.join(&ignore_name))
            .with_context(|| format!("copying {}", ignore.display()))?;
    }
    Ok(dest)
}

pub(super) fn build_rbuild(
    bin: &Path,
    store: &Path,
    case: &Case,
    dockerfile: &Path,
    context: &Path,
    dest: &Path,
) -> Result<(Built, String)> {
    let mut cmd = rbuild(bin, store);
    cmd.args(["build", "-q", "--progress", "plain", "-f"])
        .arg(dockerfile)
        .arg("-o")
        .arg(format!("type=docker,dest={}", dest.display()));
    for arg in &case.build_args {
        cmd.arg("--build-arg").arg(arg);
    }
    if let Some(target) = &case.target {
        cmd.arg("--target").arg(target);
    }
    cmd.arg(context);
    let out = run("rbuild build", &mut cmd)?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok((Built::Image(dest.to_path_buf()), output))
    } else {
        Ok((Built::Failed(output.clone()), output))
    }
}

pub(super) fn build_buildkit(
    buildkit: &BuildKit,
    case: &Case,
    dockerfile: &Path,
    context: &Path,
    dest: &Path,
) -> Result<Built> {
    let dir = dockerfile
        .parent()
        .ok_or_else(|| anyhow!("{}: no directory", dockerfile.display()))?;
    let file_name = dockerfile
        .file_name()
        .ok_or_else(|| anyhow!("{}: no file name", dockerfile.display()))?;
    let mut cmd = buildkit.dockerfile_build(context, dir);
    cmd.arg("--no-cache")
        .arg("--opt")
        .arg(format!("filename={}", file_name.to_string_lossy()))
        .arg("--output")
        .arg(format!(
            "type=docker,name=kaniko-corpus:1,dest={}",
            dest.display()
        ));
    for arg in &case.build_args {
        cmd.arg("--opt").arg(format!("build-arg:{arg}"));
    }
    if let Some(target) = &case.target {
        cmd.arg("--opt").arg(format!("target={target}"));
    }
    let out = run("buildctl build", &mut cmd)?;
    if out.status.success() {
        Ok(Built::Image(dest.to_path_buf()))
    } else {
        Ok(Built::Failed(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

/// Kaniko v1.28 in the private daemon, with the corpus and the staged Dockerfile mounted
/// read-only, `--no-push --tar-path` into `dest`'s directory.
pub(super) fn build_kaniko(
    dockerd: &Dockerd,
    corpus: &Path,
    case: &Case,
    dockerfile: &Path,
    dest: &Path,
) -> Result<Built> {
    let (Some(dir), Some(file_name), Some(out_dir), Some(out_name)) = (
        dockerfile.parent(),
        dockerfile.file_name(),
        dest.parent(),
        dest.file_name(),
    ) else {
        bail!("{}: not a file in a directory", dockerfile.display());
    };
    let mut cmd = Command::new(DOCKER_CLI);
    cmd.arg("-H")
        .arg(dockerd.host())
        .args(["run", "--rm", "--network", "host", "-v"])
        .arg(format!("{}:/corpus:ro", corpus.display()))
        .arg("-v")
        .arg(format!("{}:/dockerfile:ro", dir.display()))
        .arg("-v")
        .arg(format!("{}:/out", out_dir.display()))
        .arg(KANIKO_IMAGE)
        .arg("--context")
        .arg(format!("dir:///corpus/{}", case.context.display()))
        .arg("--dockerfile")
        .arg(format!("/dockerfile/{}", file_name.to_string_lossy()))
        .args(["--no-push", "--tar-path"])
        .arg(format!("/out/{}", out_name.to_string_lossy()))
        .args([
            "--destination",
            "kaniko-corpus:1",
            "--insecure",
            "--insecure-pull",
        ]);
    for arg in &case.build_args {
        cmd.arg("--build-arg").arg(arg);
    }
    if let Some(target) = &case.target {
        cmd.arg("--target").arg(target);
    }
    let out = run("docker run (Kaniko)", &mut cmd)?;
    if out.status.success() && dest.is_file() {
        Ok(Built::Image(dest.to_path_buf()))
    } else {
        Ok(Built::Failed(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// A private dockerd with the Kaniko executor image loaded (`DIR/reference/kaniko`).
pub(super) fn start_kaniko(shared: &Path) -> Result<Dockerd> {
    let script = shared.join(KANIKO).join("make-image.sh");
    if !script.is_file() {
        bail!(
            "{} is missing: --kaniko needs the reference Kaniko beside the reference BuildKit",
            script.display()
        );
    }
    let dockerd = Dockerd::start();
    run_ok(
        "the reference Kaniko's make-image.sh",
        Command::new("bash")
            .arg(&script)
            .arg(KANIKO_IMAGE)
            .arg(DOCKER_CLI)
            .env("DOCKER_HOST", dockerd.host()),
    )?;
    Ok(dockerd)
}
