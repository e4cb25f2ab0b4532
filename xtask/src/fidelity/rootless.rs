//! The `rootless` mode of the live check: rbuild run by an unprivileged user with a
//! subordinate id range (`newuidmap`/`newgidmap` map it, overlay in the user namespace), as
//! a developer runs it on their own machine. The user is created when missing (the bench's
//! rootless user helper, under another name) and everything it reads is its own: a copy of
//! the cases, the rbuild binary, its store, its HOME and TMPDIR, where its images go.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::cases::Case;
use super::{run_ok, BASE_NAME};
use crate::bench::{as_user, rootless_user, RunAs};

/// The unprivileged user the rootless mode runs rbuild as.
pub(super) const FIDELITY_USER: &str = "rbuild-fidelity";

/// The rootless mode's user and the directory it owns (mode 0700) under the work directory.
pub(crate) struct RootlessUser {
    user: RunAs,
    /// The user's directory: `bin/rbuild`, `store`, `home`, `tmp`, `out`, `cases`.
    dir: PathBuf,
}

impl RootlessUser {
    /// Creates the user if missing (with a subordinate uid and gid range of 65536 ids) and
    /// its directory `work/rootless`: a copy of the rbuild binary and of the cases, all its
    /// own. `work` is made traversable (0755) so the user reaches its directory and the
    /// files root makes there for both builders (Dockerfiles with the servers' address, OCI
    /// layouts); what stays root's in `work` is only what root alone reads.
    pub(super) fn prepare(bin: &Path, cases_dir: &Path, work: &Path) -> Result<RootlessUser> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            bail!("the rootless mode needs root to create its user {FIDELITY_USER} and give it a subordinate id range (this runs as uid {euid})");
        }
        for helper in ["/usr/bin/newuidmap", "/usr/bin/newgidmap"] {
            if !Path::new(helper).is_file() {
                bail!("the rootless mode needs {helper} to map the user's subordinate ids: apt-get install uidmap");
            }
        }
        let user = rootless_user(FIDELITY_USER)
            .with_context(|| format!("making the rootless mode's user {FIDELITY_USER}"))?;
        std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("opening {} to {FIDELITY_USER}", work.display()))?;
        let dir = work.join("rootless");
        for sub in ["bin", "store", "home", "tmp", "out"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        // The target directory may not be reachable by another user (a checkout under
        // /root): the user runs its own copy.
        let own_bin = dir.join("bin/rbuild");
        std::fs::copy(bin, &own_bin)
            .with_context(|| format!("copying {} to {}", bin.display(), own_bin.display()))?;
        std::fs::set_permissions(&own_bin, std::fs::Permissions::from_mode(0o755))?;
        // The cases as the user's own checkout: readable whatever the modes of the
        // repository's directories, and the context's files are the user's, as a
        // developer's are (container root in the build, like root's in the other modes).
        run_ok(
            "cp -a (the cases, for the rootless user)",
            Command::new("cp")
                .arg("-a")
                .arg(cases_dir)
                .arg(dir.join("cases")),
        )?;
        run_ok(
            "chown -R (the rootless user's directory)",
            Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", user.uid, user.gid))
                .arg(&dir),
        )?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(RootlessUser { user, dir })
    }

    /// The user's store.
    pub(super) fn store(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// Where the user writes the images it builds (root reads and deletes them).
    pub(super) fn out_dir(&self) -> PathBuf {
        self.dir.join("out")
    }

    /// `rbuild --root STORE` run as the user (`runuser`, HOME and TMPDIR in its
    /// directory), with the environment `super::rbuild` clears cleared here too.
    pub(super) fn rbuild(&self) -> Command {
        let mut cmd = as_user(&self.user);
        cmd.arg(format!("TMPDIR={}", self.dir.join("tmp").display()))
            .arg(format!("HOME={}", self.dir.join("home").display()))
            .arg(self.dir.join("bin/rbuild"))
            .arg("--root")
            .arg(self.store())
            .env_remove("RBUILD_ENGINE")
            .env_remove("SOURCE_DATE_EPOCH");
        cmd
    }

    /// The case as the user's copy has it (the same `case.json`, the user's files).
    pub(super) fn case(&self, case: &Case) -> Case {
        Case {
            name: case.name.clone(),
            dir: self.dir.join("cases").join(&case.name),
            spec: case.spec.clone(),
        }
    }

    /// Hands the user a file root made for both builders and the user must read (the
    /// case's ssh key: ssh refuses a key others can read, so it is given, not opened).
    pub(super) fn give(&self, path: &Path) -> Result<()> {
        std::os::unix::fs::chown(path, Some(self.user.uid), Some(self.user.gid))
            .with_context(|| format!("giving {} to {FIDELITY_USER}", path.display()))
    }

    /// Builds the base in the user's store from `base_ctx` (root's, readable) and checks
    /// that its layers are those of the base in root's `store`: the rootless mode starts
    /// from the very image BuildKit and the other modes start from.
    pub(super) fn build_base(
        &self,
        root_bin: &Path,
        root_store: &Path,
        base_ctx: &Path,
    ) -> Result<()> {
        run_ok(
            "rbuild build (the base, the rootless store)",
            self.rbuild()
                .args(["build", "-q", "-t", BASE_NAME])
                .arg(base_ctx),
        )?;
        let ours = layer_digests(&run_ok(
            "rbuild inspect (the base, the rootless store)",
            self.rbuild().args(["inspect", BASE_NAME]),
        )?)?;
        let roots = layer_digests(&run_ok(
            "rbuild inspect (the base)",
            super::rbuild(root_bin, root_store).args(["inspect", BASE_NAME]),
        )?)?;
        if ours != roots {
            bail!("the base built by {FIDELITY_USER} has the layers {ours:?}, root's {roots:?}: a rootless COPY of the same files differs");
        }
        Ok(())
    }
}

/// The layer digests of the one image `rbuild inspect` printed.
fn layer_digests(out: &std::process::Output) -> Result<Vec<String>> {
    let value: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing rbuild inspect's output")?;
    let layers = value[0]["Manifest"]["layers"]
        .as_array()
        .context("rbuild inspect printed no Manifest.layers")?;
    Ok(layers
        .iter()
        .filter_map(|l| l["digest"].as_str().map(str::to_string))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(stdout: &str) -> std::process::Output {
        std::process::Output {
            status: std::process::ExitStatus::default(),
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        }
    }

    #[test]
    fn the_bases_layers_are_read_from_rbuild_inspect() {
        let inspected = r#"[{"Id": "sha256:c", "Manifest": {"layers": [
            {"digest": "sha256:a", "size": 1}, {"digest": "sha256:b", "size": 2}]}}]"#;
        assert_eq!(
            layer_digests(&output(inspected)).unwrap(),
            ["sha256:a", "sha256:b"]
        );
        assert!(layer_digests(&output(r#"[{"Id": "sha256:c"}]"#)).is_err());
        assert!(layer_digests(&output("not json")).is_err());
    }
}
