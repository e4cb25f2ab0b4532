//! The reference peers, made ready from the directory given with `--reference` (by default
//! `../shared/reference` beside the repository): BuildKit v0.32 (its `start.sh` starts a
//! private rootful `buildkitd` from the `.xz` binaries, decompressed under the bench's work
//! directory) and Kaniko v1.28 (its `make-image.sh` loads an executor image into the
//! bench's private dockerd). Rootless BuildKit is the same buildkitd run by Debian's
//! `rootlesskit` as the unprivileged bench user (its snapshots are overlay mounts inside
//! that user namespace; RUN gets the host network). A peer that cannot be made ready is not an error: it becomes
//! a skipped peer whose cells say why.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::tools::{self, Builder, RunAs};

pub const BUILDKIT: &str = "buildkit-v032";
pub const BUILDKIT_ROOTLESS: &str = "buildkit-v032-rootless";
pub const KANIKO: &str = "kaniko";
const KANIKO_IMAGE: &str = "rbuild-bench/kaniko-executor:v1.28.3";

/// The private `buildkitd` started for the run, stopped when dropped.
pub struct BuildKitDaemon {
    script: PathBuf,
    state: PathBuf,
}

impl Drop for BuildKitDaemon {
    fn drop(&mut self) {
        stop_buildkitd(&self.script, &self.state);
    }
}

fn stop_buildkitd(script: &Path, state: &Path) {
    let _ = Command::new("bash")
        .arg(script)
        .args(["--stop", "--state"])
        .arg(state)
        .output();
}

/// The file `what` of the reference directory, or why it is not there.
fn reference_file(reference: &Path, what: &str) -> Result<PathBuf> {
    let path = reference.join(what);
    if !path.is_file() {
        bail!(
            "{} is missing (--reference DIR names the directory holding buildkit/ and \
             kaniko/ of the reference builders)",
            path.display()
        );
    }
    Ok(path)
}

/// Starts the reference BuildKit (state, binaries and cache under `state`, emptied first;
/// the harness's registry `registry` allowed over plain http) and returns its builder.
pub fn buildkit(
    reference: &Path,
    state: &Path,
    registry: &str,
) -> Result<(Builder, BuildKitDaemon)> {
    let script = reference_file(reference, "buildkit/start.sh")?;
    for xz in ["buildkit/buildkitd.xz", "buildkit/buildctl.xz"] {
        reference_file(reference, xz)?;
    }
    // A daemon left from an interrupted run would lack this run's registry.
    stop_buildkitd(&script, state);
    tools::remove_tree(&state.join("root"))?;
    std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    let out = Command::new("bash")
        .arg(&script)
        .arg("--state")
        .arg(state)
        .args(["--insecure", registry])
        .output()
        .context("running the reference BuildKit's start.sh")?;
    let daemon = BuildKitDaemon {
        script: script.clone(),
        state: state.to_path_buf(),
    };
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let addr = text
        .lines()
        .find_map(|l| l.strip_prefix("BUILDKIT_HOST="))
        .with_context(|| format!("start.sh printed no BUILDKIT_HOST: {text}"))?
        .to_string();
    let meta = state.join("metadata");
    super::fresh_dir(&meta)?;
    Ok((
        Builder::buildkit(BUILDKIT, state.join("bin/buildctl"), addr, meta, None),
        daemon,
    ))
}

/// The rootless `buildkitd`: rootlesskit started as the bench user in a process group of
/// its own, which is stopped (TERM, then KILL) when this is dropped.
pub struct RootlessBuildKitDaemon {
    child: Child,
}

impl Drop for RootlessBuildKitDaemon {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Where Debian's rootlesskit is.
const ROOTLESSKIT: &str = "/usr/bin/rootlesskit";

/// Starts the reference BuildKit rootless, as `user` under rootlesskit (binaries, config
/// and cache under `state`, emptied first and given to the user; the harness's registry
/// `registry` allowed over plain http), and returns its builder.
pub fn buildkit_rootless(
    reference: &Path,
    state: &Path,
    registry: &str,
    user: &RunAs,
) -> Result<(Builder, RootlessBuildKitDaemon)> {
    let mut xz = Vec::new();
    for name in ["buildkitd", "buildctl"] {
        xz.push((
            name,
            reference_file(reference, &format!("buildkit/{name}.xz"))?,
        ));
    }
    if !Path::new(ROOTLESSKIT).is_file() {
        bail!("{ROOTLESSKIT} is missing (apt-get install rootlesskit)");
    }
    tools::remove_tree(state)?;
    let bin = state.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    for (name, file) in xz {
        let out = std::fs::File::create(bin.join(name))?;
        let status = Command::new("xz")
            .arg("-dc")
            .arg(&file)
            .stdout(out)
            .status()
            .context("running xz")?;
        anyhow::ensure!(status.success(), "xz -dc {} failed", file.display());
        std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755))?;
    }
    let sock = state.join("buildkitd.sock");
    let mut config = format!(
        "root = \"{}\"\n[grpc]\n  address = [ \"unix://{}\" ]\n\
         [worker.oci]\n  enabled = true\n  binary = \"runc\"\n  snapshotter = \"overlayfs\"\n\
         \x20 networkMode = \"host\"\n  gc = true\n  maxUsedSpace = \"20GB\"\n\
         [worker.containerd]\n  enabled = false\n",
        state.join("root").display(),
        sock.display()
    );
    config.push_str(&format!(
        "[registry.\"{registry}\"]\n  http = true\n  insecure = true\n"
    ));
    std::fs::write(state.join("buildkitd.toml"), config)?;
    let meta = state.join("metadata");
    std::fs::create_dir_all(&meta)?;
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", user.uid, user.gid))
        .arg(state)
        .status()
        .context("running chown")?;
    anyhow::ensure!(
        status.success(),
        "giving {} to {} failed",
        state.display(),
        user.name
    );
    let log = std::fs::File::create(state.join("buildkitd.log"))?;
    let mut start = tools::as_user(user);
    start
        .arg(ROOTLESSKIT)
        .args([
            "--net=host",
            "--copy-up=/etc",
            "--disable-host-loopback",
            "--state-dir",
        ])
        .arg(state.join("rootlesskit"))
        .arg(bin.join("buildkitd"))
        .arg("--config")
        .arg(state.join("buildkitd.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let child = start.spawn().context("starting rootlesskit buildkitd")?;
    let daemon = RootlessBuildKitDaemon { child };
    let builder = Builder::buildkit(
        BUILDKIT_ROOTLESS,
        bin.join("buildctl"),
        format!("unix://{}", sock.display()),
        meta,
        Some(user.clone()),
    );
    for _ in 0..100 {
        let mut workers = tools::as_user(user);
        workers
            .arg(bin.join("buildctl"))
            .arg("--addr")
            .arg(format!("unix://{}", sock.display()))
            .args(["debug", "workers"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if workers.status().is_ok_and(|s| s.success()) {
            return Ok((builder, daemon));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(state.join("buildkitd.log")).unwrap_or_default();
    bail!(
        "rootless buildkitd did not answer within 20 s: {}",
        super::measure::reason(&log)
    )
}

/// Loads the reference Kaniko's executor image into the dockerd at `docker_host` and
/// returns its builder (digest files under `out_dir`).
pub fn kaniko(reference: &Path, docker_host: &str, out_dir: &Path) -> Result<Builder> {
    let script = reference_file(reference, "kaniko/make-image.sh")?;
    reference_file(reference, "kaniko/executor.xz")?;
    let out = Command::new("bash")
        .arg(&script)
        .args([KANIKO_IMAGE, tools::DEBIAN_DOCKER])
        .env("DOCKER_HOST", docker_host)
        .output()
        .context("running the reference Kaniko's make-image.sh")?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    keep_through_prunes(docker_host, KANIKO_IMAGE)?;
    super::fresh_dir(out_dir)?;
    Ok(Builder::kaniko(
        PathBuf::from(tools::DEBIAN_DOCKER),
        docker_host.to_string(),
        KANIKO_IMAGE.to_string(),
        out_dir.to_path_buf(),
    ))
}

/// Gives `image` in the dockerd at `docker_host` the label [`tools::KEEP_LABEL`], which the
/// docker peer's reset (`docker system prune --all`, shared daemon) leaves alone: without
/// it the prune of a registry-cache row removed Kaniko's executor image, and Kaniko's next
/// `docker run` went to Docker Hub for it. The label is added by a classic `docker build`
/// of `FROM image` (no step runs, nothing is pulled: the image is local).
fn keep_through_prunes(docker_host: &str, image: &str) -> Result<()> {
    let (key, value) = tools::KEEP_LABEL;
    let mut build = Command::new(tools::DEBIAN_DOCKER);
    build
        .env("DOCKER_BUILDKIT", "0")
        .args(["-H", docker_host, "build", "--quiet", "--label"])
        .arg(format!("{key}={value}"))
        .args(["-t", image, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = build
        .spawn()
        .context("running docker build to label Kaniko's image")?;
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, format!("FROM {image}\n").as_bytes())
            .context("writing the labelling Dockerfile")?;
    }
    let out = child
        .wait_with_output()
        .context("waiting for docker build")?;
    if !out.status.success() {
        bail!(
            "labelling {image} so that prunes keep it failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The peer `name` ready to run, or a skipped peer saying why it is not.
pub fn or_skipped(name: &str, made: Result<Builder>) -> Builder {
    match made {
        Ok(b) => b,
        Err(e) => {
            let why = format!("{e:#}");
            eprintln!("==> {name} is skipped: {why}");
            Builder::skipped(name, why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::tools::Op;

    #[test]
    fn a_missing_reference_directory_makes_skipped_peers_that_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("no-reference");
        let b = or_skipped(
            BUILDKIT,
            buildkit(&absent, &dir.path().join("state"), "127.0.0.1:1").map(|(b, _)| b),
        );
        let why = b.cannot(Op::Build).unwrap();
        assert!(why.starts_with("skipped: "), "{why}");
        assert!(why.contains("buildkit/start.sh is missing"), "{why}");
        assert!(why.contains("--reference"), "{why}");
        assert_eq!(b.name, BUILDKIT);
        let user = RunAs {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            home: "/nonexistent".into(),
            runtime_dir: "/nonexistent".into(),
        };
        let r = or_skipped(
            BUILDKIT_ROOTLESS,
            buildkit_rootless(&absent, &dir.path().join("rl"), "127.0.0.1:1", &user)
                .map(|(b, _)| b),
        );
        assert!(r
            .cannot(Op::Build)
            .unwrap()
            .contains("buildkit/buildkitd.xz is missing"));
        let k = or_skipped(KANIKO, kaniko(&absent, "unix:///x.sock", dir.path()));
        assert!(k
            .cannot(Op::Build)
            .unwrap()
            .contains("kaniko/make-image.sh is missing"));
        // The binaries are required too, not only the scripts.
        std::fs::create_dir_all(absent.join("kaniko")).unwrap();
        std::fs::write(absent.join("kaniko/make-image.sh"), "exit 0").unwrap();
        let k = or_skipped(KANIKO, kaniko(&absent, "unix:///x.sock", dir.path()));
        assert!(k
            .cannot(Op::Build)
            .unwrap()
            .contains("kaniko/executor.xz is missing"));
    }
}
