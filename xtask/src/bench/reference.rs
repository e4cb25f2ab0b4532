//! The reference peers, made ready from the directory given with `--reference` (by default
//! `../shared/reference` beside the repository): BuildKit v0.32 (its `start.sh` starts a
//! private rootful `buildkitd` from the `.xz` binaries, decompressed under the bench's work
//! directory) and Kaniko v1.28 (its `make-image.sh` loads an executor image into the
//! bench's private dockerd). A peer that cannot be made ready is not an error: it becomes
//! a skipped peer whose cells say why.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::tools::{self, Builder};

pub const BUILDKIT: &str = "buildkit-v032";
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
        Builder::buildkit(state.join("bin/buildctl"), addr, meta),
        daemon,
    ))
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
    super::fresh_dir(out_dir)?;
    Ok(Builder::kaniko(
        PathBuf::from(tools::DEBIAN_DOCKER),
        docker_host.to_string(),
        KANIKO_IMAGE.to_string(),
        out_dir.to_path_buf(),
    ))
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
