//! The reference BuildKit: its private daemon (`start.sh`), the lock that keeps two runs
//! from stopping each other's, and its error line as a golden keeps it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use super::run_ok;

/// The daemon started by `start.sh`, stopped on drop.
pub(crate) struct BuildKit {
    script: PathBuf,
    state: PathBuf,
    addr: String,
}

impl BuildKit {
    pub(crate) fn start(reference: &Path, state: &Path, registry: &str) -> Result<BuildKit> {
        let script = reference.join("start.sh");
        if !script.is_file() {
            bail!("{} is missing: --reference names the directory of the reference BuildKit (start.sh, buildkitd.xz, buildctl.xz)", script.display());
        }
        // A daemon left running from an earlier run would lack this run's registry.
        let _ = Command::new("bash")
            .arg(&script)
            .args(["--stop", "--state"])
            .arg(state)
            .output();
        let out = run_ok(
            "the reference BuildKit's start.sh",
            Command::new("bash")
                .arg(&script)
                .arg("--state")
                .arg(state)
                .args(["--insecure", registry]),
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let addr = text
            .lines()
            .find_map(|l| l.strip_prefix("BUILDKIT_HOST="))
            .ok_or_else(|| anyhow!("start.sh printed no BUILDKIT_HOST: {text}"))?
            .to_string();
        Ok(BuildKit {
            script,
            state: state.to_path_buf(),
            addr,
        })
    }

    pub(crate) fn buildctl(&self) -> Command {
        let mut cmd = Command::new(self.state.join("bin/buildctl"));
        cmd.arg("--addr").arg(&self.addr);
        cmd
    }

    /// `buildctl build` of the Dockerfile frontend with plain progress, `context` as the
    /// build context and the Dockerfile in `dockerfile_dir`.
    pub(crate) fn dockerfile_build(&self, context: &Path, dockerfile_dir: &Path) -> Command {
        let mut cmd = self.buildctl();
        dockerfile_build_args(&mut cmd, context, dockerfile_dir);
        cmd
    }
}

/// The arguments of `buildctl build` of the Dockerfile frontend with plain progress,
/// `context` as the build context and the Dockerfile in `dockerfile_dir` (for any
/// buildctl: the reference daemon's here, the bench's rootful and rootless ones).
pub(crate) fn dockerfile_build_args(cmd: &mut Command, context: &Path, dockerfile_dir: &Path) {
    cmd.args([
        "build",
        "--progress",
        "plain",
        "--frontend",
        "dockerfile.v0",
    ])
    .arg("--local")
    .arg(format!("context={}", context.display()))
    .arg("--local")
    .arg(format!("dockerfile={}", dockerfile_dir.display()));
}

impl Drop for BuildKit {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .args(["--stop", "--state"])
            .arg(&self.state)
            .output();
    }
}

/// Holds an exclusive lock on the daemon's state directory for the whole run: two runs
/// would stop each other's daemon.
pub(crate) fn lock_state(state: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    let path = state.join("xtask.lock");
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared with the call.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        bail!(
            "another `cargo xtask fidelity` is running ({} is locked); wait for it to finish",
            path.display()
        );
    }
    Ok(file)
}

/// BuildKit's error line: the last `ERROR:`/`error:` line of buildctl's output, without
/// what varies between runs (the step's timing prefix).
pub fn buildkit_error_line(stderr: &str) -> String {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("error:") || l.contains("ERROR:"))
        .unwrap_or_else(|| stderr.lines().last().unwrap_or(""))
        .trim();
    let line = sorted_lint_rules(line);
    // Snapshot ids are random: `checksum of ref v57r...::m9ka...: "/x": not found`.
    const REF: &str = "of ref ";
    match line.find(REF) {
        Some(i) => match line[i + REF.len()..].find(": ") {
            Some(j) => format!(
                "{}<ref>{}",
                &line[..i + REF.len()],
                &line[i + REF.len() + j..]
            ),
            None => line.to_string(),
        },
        None => line.to_string(),
    }
}

/// `lint violation found for rules: B, A` with the rules sorted: BuildKit lists them in
/// the order of a Go map, which changes from run to run.
fn sorted_lint_rules(line: &str) -> String {
    const RULES: &str = "lint violation found for rules: ";
    let Some(i) = line.find(RULES) else {
        return line.to_string();
    };
    let start = i + RULES.len();
    let mut rules: Vec<&str> = line[start..].split(", ").collect();
    rules.sort_unstable();
    format!("{}{}", &line[..start], rules.join(", "))
}
