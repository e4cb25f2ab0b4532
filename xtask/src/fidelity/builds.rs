//! One case built by each builder with the same inputs, and the golden description of
//! what a build gave.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, Context, Result};
use rbuild_diff::describe::{self, BaseCounts};
use rbuild_diff::{read_image, ImageSource};
use rbuild_testutil::{CaseServers, HTTP_PLACEHOLDER};
use serde_json::Value;

use super::buildkit::{buildkit_error_line, BuildKit};
use super::cases::{Case, CaseContext};
use super::{rbuild, run, BASE_NAME};

/// `--secret id=ID,src=PATH` for each of the case's secrets and `--ssh default=KEY` when it
/// asks for an agent: the same flags for rbuild and buildctl.
fn secret_and_ssh_flags(case: &Case, work: &Path) -> Result<Vec<String>> {
    let mut flags = Vec::new();
    for (id, path) in case.secrets() {
        flags.push("--secret".to_string());
        flags.push(format!("id={id},src={}", path.display()));
    }
    if let Some(key) = case.ssh_key(work)? {
        flags.push("--ssh".to_string());
        flags.push(format!("default={}", key.display()));
    }
    Ok(flags)
}

/// Builds, with rbuild, the OCI layout of each `oci-layout:DIR` named context of the case
/// (`DIR/Dockerfile` of the case, `FROM` the base), into the work directory: both builders
/// read that one layout, as BuildKit's tests read the layout an earlier build exported.
pub(super) fn make_oci_layouts(bin: &Path, store: &Path, case: &Case, work: &Path) -> Result<()> {
    for (_, context) in case.named_contexts()? {
        let CaseContext::OciLayout(dir) = context else {
            continue;
        };
        let layout = layout_dir(case, work, &dir);
        if layout.join("index.json").is_file() {
            continue;
        }
        let archive = work.join(format!("{}-{dir}-layout.tar", case.name));
        let source = case.dir.join(&dir);
        let out = run(
            "rbuild build (an OCI layout)",
            rbuild(bin, store)
                .args(["build", "-q", "-o"])
                .arg(format!("type=oci,dest={}", archive.display()))
                .arg(&source),
        )?;
        if !out.status.success() {
            return Err(anyhow!(
                "{}: building the OCI layout of {dir}: {}",
                case.name,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::fs::create_dir_all(&layout)?;
        let out = run(
            "tar -xf (an OCI layout)",
            std::process::Command::new("tar")
                .arg("-xf")
                .arg(&archive)
                .arg("-C")
                .arg(&layout),
        )?;
        std::fs::remove_file(&archive)?;
        if !out.status.success() {
            return Err(anyhow!(
                "{}: unpacking the OCI layout of {dir}: {}",
                case.name,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

fn layout_dir(case: &Case, work: &Path, dir: &str) -> PathBuf {
    work.join(format!("{}-{dir}-layout", case.name))
}

/// The layout of an `oci-layout:DIR` context ([`make_oci_layouts`]) and the digest of its
/// one manifest.
fn oci_layout(case: &Case, work: &Path, dir: &str) -> Result<(PathBuf, String)> {
    let layout = layout_dir(case, work, dir);
    let index = std::fs::read(layout.join("index.json"))
        .with_context(|| format!("{}: reading the layout of {dir}", case.name))?;
    let index: Value = serde_json::from_slice(&index)?;
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .ok_or_else(|| anyhow!("{}: the layout of {dir} names no manifest", case.name))?;
    Ok((layout, digest.to_string()))
}

/// What a build gave: an image archive, or the error it printed.
pub(super) enum Built {
    Image(PathBuf),
    Failed(String),
}

/// Builds the case with `cmd` (an `rbuild --root STORE`, as root or as the rootless user),
/// `--isolation isolation`, its image written to `dest`.
pub(super) fn build_rbuild(
    mut cmd: Command,
    dest: PathBuf,
    case: &Case,
    work: &Path,
    servers: Option<&CaseServers>,
    isolation: &str,
) -> Result<Built> {
    cmd.args([
        "build",
        "-q",
        "--progress",
        "plain",
        "--isolation",
        isolation,
    ]);
    // A context URL (`rbuild build URL`) holds its Dockerfile (`-f` names it there).
    let remote = case.remote_context(servers)?;
    match (&remote, case.text("dockerfile_name")) {
        (Some(_), Some(name)) => {
            cmd.arg("-f").arg(name);
        }
        (Some(_), None) => {}
        (None, _) => {
            cmd.arg("-f")
                .arg(case.dockerfile_dir(work, servers)?.join("Dockerfile"));
        }
    }
    cmd.arg("-o").arg(format!(
        "type=docker,dest={}{}",
        dest.display(),
        exporter_attrs(case)
    ));
    for arg in case.build_args(servers) {
        cmd.arg("--build-arg").arg(arg);
    }
    if let Some(target) = case.text("target") {
        cmd.arg("--target").arg(target);
    }
    // The build-wide network (buildx's `--network`).
    if let Some(network) = case.text("network") {
        cmd.arg("--network").arg(network);
    }
    cmd.args(secret_and_ssh_flags(case, work)?);
    for (name, context) in case.named_contexts()? {
        let value = match context {
            CaseContext::Image(reference) => format!("docker-image://{reference}"),
            CaseContext::Local(dir) => dir.display().to_string(),
            CaseContext::Url(url) => servers.map_or(url.clone(), |s| s.substitute(&url)),
            CaseContext::OciLayout(dir) => {
                let (layout, digest) = oci_layout(case, work, &dir)?;
                format!("oci-layout://{}@{digest}", layout.display())
            }
        };
        cmd.arg("--build-context").arg(format!("{name}={value}"));
    }
    match remote {
        Some(url) => cmd.arg(url),
        None => cmd.arg(case.context(work)?),
    };
    let out = run("rbuild build", &mut cmd)?;
    if out.status.success() {
        Ok(Built::Image(dest))
    } else {
        Ok(Built::Failed(unplace(
            servers,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )))
    }
}

pub(super) fn build_buildkit(
    buildkit: &BuildKit,
    base: &str,
    case: &Case,
    work: &Path,
    servers: Option<&CaseServers>,
) -> Result<Built> {
    let dest = work.join(format!("{}-buildkit.tar", case.name));
    let mut cmd = match case.remote_context(servers)? {
        // BuildKit's dockerui fetches the context (and the Dockerfile in it) itself.
        Some(url) => {
            let mut cmd = buildkit.buildctl();
            cmd.args([
                "build",
                "--progress",
                "plain",
                "--frontend",
                "dockerfile.v0",
                "--opt",
            ])
            .arg(format!("context={url}"));
            if let Some(name) = case.text("dockerfile_name") {
                cmd.arg("--opt").arg(format!("filename={name}"));
            }
            cmd
        }
        None => {
            buildkit.dockerfile_build(&case.context(work)?, &case.dockerfile_dir(work, servers)?)
        }
    };
    cmd.arg("--opt")
        .arg(format!("context:{BASE_NAME}=docker-image://{base}"))
        .arg("--output")
        .arg(format!(
            "type=docker,name=buildkit-cases/{}:1,dest={}{}",
            case.name,
            dest.display(),
            exporter_attrs(case)
        ));
    for arg in case.build_args(servers) {
        cmd.arg("--opt").arg(format!("build-arg:{arg}"));
    }
    if let Some(target) = case.text("target") {
        cmd.arg("--opt").arg(format!("target={target}"));
    }
    // The build-wide network, as buildx hands `--network` to the frontend.
    if let Some(network) = case.text("network") {
        cmd.arg("--opt")
            .arg(format!("force-network-mode={network}"));
    }
    cmd.args(secret_and_ssh_flags(case, work)?);
    for (name, context) in case.named_contexts()? {
        match context {
            CaseContext::Image(reference) if reference == BASE_NAME => cmd
                .arg("--opt")
                .arg(format!("context:{name}=docker-image://{base}")),
            CaseContext::Image(reference) => cmd
                .arg("--opt")
                .arg(format!("context:{name}=docker-image://{reference}")),
            CaseContext::Url(url) => cmd.arg("--opt").arg(format!(
                "context:{name}={}",
                servers.map_or(url.clone(), |s| s.substitute(&url))
            )),
            CaseContext::Local(dir) => cmd
                .arg("--local")
                .arg(format!("{name}={}", dir.display()))
                .arg("--opt")
                .arg(format!("context:{name}=local:{name}")),
            // buildctl's `--oci-layout ID=DIR` and the context `oci-layout://ID@DIGEST`, as
            // buildx hands BuildKit `--build-context NAME=oci-layout://DIR@DIGEST`.
            CaseContext::OciLayout(dir) => {
                let (layout, digest) = oci_layout(case, work, &dir)?;
                cmd.arg("--oci-layout")
                    .arg(format!("layout-{name}={}", layout.display()))
                    .arg("--opt")
                    .arg(format!(
                        "context:{name}=oci-layout://layout-{name}@{digest}"
                    ))
            }
        };
    }
    let out = run("buildctl build", &mut cmd)?;
    if out.status.success() {
        Ok(Built::Image(dest))
    } else {
        Ok(Built::Failed(unplace(
            servers,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )))
    }
}

/// `text` with the servers' address replaced by their placeholder.
pub(super) fn unplace(servers: Option<&CaseServers>, text: String) -> String {
    match servers {
        Some(s) => s.unsubstitute(&text),
        None => text,
    }
}

/// A description with the servers' address replaced by their placeholder (history lines
/// hold URLs).
pub(super) fn unplace_json(servers: Option<&CaseServers>, value: Value) -> Result<Value> {
    let Some(servers) = servers else {
        return Ok(value);
    };
    let text = serde_json::to_string(&value)?;
    Ok(serde_json::from_str(
        &text.replace(&servers.url(), HTTP_PLACEHOLDER),
    )?)
}

/// A case's `exporter_attrs` (BuildKit's image exporter attributes, `KEY=VALUE`), each
/// after a comma, for both builders' `-o`/`--output`.
fn exporter_attrs(case: &Case) -> String {
    case.spec
        .get("exporter_attrs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|a| format!(",{a}"))
        .collect()
}

pub(super) fn describe_archive(path: &Path, base: BaseCounts, case: &Case) -> Result<Value> {
    let image = read_image(&ImageSource::Archive(path.to_path_buf(), None), None)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut description =
        describe::describe(&image, base).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if case.spec.get("times").and_then(Value::as_bool) == Some(true) {
        describe::add_times(&mut description, &image, base);
    }
    if !exporter_attrs(case).is_empty() {
        describe::add_rewritten_timestamps(&mut description, &image);
    }
    Ok(description)
}

/// The golden of a case from BuildKit's result.
pub(super) fn golden_of(built: &Built, base: BaseCounts, case: &Case) -> Result<Value> {
    match built {
        Built::Image(path) => describe_archive(path, base, case),
        Built::Failed(stderr) => Ok(serde_json::json!({ "error": buildkit_error_line(stderr) })),
    }
}
