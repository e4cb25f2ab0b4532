//! Emptying a tool's store between runs, and removing the stores the harness made,
//! mounts and all.

use std::path::Path;

use anyhow::{Context, Result};

use super::{Builder, Kind};

impl Builder {
    /// Empties the tool's store and cache, as on a fresh CI machine (not timed).
    pub fn reset(&self) -> Result<()> {
        match &self.kind {
            Kind::Rbuild { root, .. } => remove_tree(root),
            Kind::Docker { .. } => {
                let out = self
                    .docker_prune()
                    .output()
                    .context("running docker system prune")?;
                anyhow::ensure!(
                    out.status.success(),
                    "docker system prune failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Ok(())
            }
            Kind::Buildah { root, runroot, .. } => {
                remove_tree(root)?;
                remove_tree(runroot)?;
                self.prepare_store()
            }
            Kind::BuildKit { .. } => {
                let mut c = self.base_command();
                c.args(["prune", "--all"]);
                let out = c.output().context("running buildctl prune")?;
                anyhow::ensure!(
                    out.status.success(),
                    "buildctl prune --all failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Ok(())
            }
            // Every Kaniko (and restricted pod) build is a new container: nothing is kept
            // between builds but what it pushed to a registry.
            Kind::Kaniko { .. } | Kind::Restricted { .. } | Kind::Skipped { .. } => Ok(()),
        }
    }
}

impl Builder {
    /// The docker peer's reset: everything of the daemon but what carries
    /// [`super::KEEP_LABEL`] (Kaniko's executor image, run on the same daemon).
    pub(super) fn docker_prune(&self) -> std::process::Command {
        let (key, value) = super::KEEP_LABEL;
        let mut c = self.base_command();
        c.args(["system", "prune", "--all", "--force", "--filter"])
            .arg(format!("label!={key}={value}"));
        c
    }
}

/// Removes a directory tree, first detaching whatever is mounted inside it (Buildah's
/// overlay driver mounts its own storage directory).
pub fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    detach_mounts_under(dir);
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

fn detach_mounts_under(root: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let Ok(root) = root.canonicalize() else {
        return;
    };
    let mut mounts: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(&root))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        if let Ok(c) = std::ffi::CString::new(m) {
            // SAFETY: a valid NUL-terminated path; a failed unmount is harmless here.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docker_reset_keeps_the_images_labelled_to_be_kept() {
        let docker = Builder::docker_buildkit("/usr/bin/docker".into(), "unix:///d.sock".into());
        let c = docker.docker_prune();
        let argv: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            argv,
            [
                "-H",
                "unix:///d.sock",
                "system",
                "prune",
                "--all",
                "--force",
                "--filter",
                "label!=rbuild-bench.keep=true"
            ]
        );
    }
}
