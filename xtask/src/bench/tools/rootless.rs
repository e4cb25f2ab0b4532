//! The rootless peer's user and what it needs: its store directories owned by it, and
//! build secrets it can read.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

#[cfg(test)]
use super::Cache;
use super::{Builder, Kind};

/// An unprivileged user with a subordinate id range, whom rootless Buildah runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// `XDG_RUNTIME_DIR`: exists, owned by the user, mode 0700.
    pub runtime_dir: PathBuf,
}

impl Builder {
    /// Makes the store directories a rootless builder writes (its root and run root, and
    /// the directory holding them), owned by its user; nothing to do for the others,
    /// which run as root and make their own.
    pub fn prepare_store(&self) -> Result<()> {
        let Kind::Buildah {
            root,
            runroot,
            user: Some(u),
        } = &self.kind
        else {
            return Ok(());
        };
        let mut dirs = vec![root.as_path(), runroot.as_path()];
        dirs.extend(root.parent());
        for d in dirs {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            std::os::unix::fs::chown(d, Some(u.uid), Some(u.gid))
                .with_context(|| format!("giving {} to {}", d.display(), u.name))?;
        }
        Ok(())
    }

    /// The user a rootless builder runs as, and the directory of its private state.
    fn rootless_user_and_store(&self) -> Option<(&RunAs, &Path)> {
        match &self.kind {
            Kind::Buildah {
                root,
                user: Some(u),
                ..
            } => Some((u, root.parent().unwrap_or(root.as_path()))),
            Kind::BuildKit {
                meta_dir,
                user: Some(u),
                ..
            } => Some((u, meta_dir.parent().unwrap_or(meta_dir.as_path()))),
            _ => None,
        }
    }

    /// The build secrets as this builder can read them: a rootless builder gets a private
    /// copy (mode 0400, its user's, under its store directory) of a source file its user
    /// cannot read; the others read the sources as they are.
    pub fn readable_secrets(&self, secrets: &[(&str, &str)]) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (id, src) in secrets {
            let src = match self.rootless_user_and_store() {
                Some((u, store)) if !readable_by(u, Path::new(src))? => {
                    let dir = store.join("secrets");
                    std::fs::create_dir_all(&dir)?;
                    std::os::unix::fs::chown(&dir, Some(u.uid), Some(u.gid))?;
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
                    let copy = dir.join(id);
                    let _ = std::fs::remove_file(&copy);
                    std::fs::copy(src, &copy).with_context(|| format!("copying {src}"))?;
                    std::os::unix::fs::chown(&copy, Some(u.uid), Some(u.gid))?;
                    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o400))?;
                    copy.display().to_string()
                }
                _ => src.to_string(),
            };
            out.push((id.to_string(), src));
        }
        Ok(out)
    }
}

/// Whether `user` can read `path` (asked of the kernel, as that user: `test -r`).
fn readable_by(user: &RunAs, path: &Path) -> Result<bool> {
    let status = Command::new("runuser")
        .args(["-u", &user.name, "--", "test", "-r"])
        .arg(path)
        .status()
        .context("running runuser")?;
    Ok(status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn bench_user() -> RunAs {
        RunAs {
            name: "bench".into(),
            uid: 1005,
            gid: 1006,
            home: "/home/bench".into(),
            runtime_dir: "/run/user/1005".into(),
        }
    }

    #[test]
    fn a_rootless_store_is_made_and_given_to_its_user() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: getuid and getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let user = RunAs {
            uid,
            gid,
            ..bench_user()
        };
        let store = dir.path().join("stores/buildah-rootless");
        let b = Builder::buildah_rootless(&store, user);
        b.prepare_store().unwrap();
        for d in [store.clone(), store.join("root"), store.join("runroot")] {
            let m = std::fs::metadata(&d).unwrap();
            assert!(m.is_dir(), "{}", d.display());
            assert_eq!((m.uid(), m.gid()), (uid, gid), "{}", d.display());
        }
        std::fs::write(store.join("root/layer"), "x").unwrap();
        b.reset().unwrap();
        assert!(store.join("root").is_dir() && store.join("runroot").is_dir());
        assert!(!store.join("root/layer").exists());
        // Root's builders make their own stores.
        let root_store = dir.path().join("stores/buildah");
        Builder::buildah(&root_store).prepare_store().unwrap();
        assert!(!root_store.exists());
    }

    #[test]
    fn a_secret_its_user_cannot_read_is_copied_for_rootless_buildah_only() {
        rbuild_testutil::require_root("runuser -u nobody");
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let secret = dir.path().join("ca.crt");
        std::fs::write(&secret, "certificate").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let src = secret.to_str().unwrap();
        let nobody = RunAs {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            home: "/nonexistent".into(),
            runtime_dir: "/nonexistent".into(),
        };
        let store = dir.path().join("store");
        let b = Builder::buildah_rootless(&store, nobody);
        let got = b.readable_secrets(&[("ca", src)]).unwrap();
        let copy = store.join("secrets/ca");
        assert_eq!(got, [("ca".to_string(), copy.display().to_string())]);
        assert_eq!(std::fs::read_to_string(&copy).unwrap(), "certificate");
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(&copy).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (65534, 0o400));
        // A readable source is used as it is; root's builders always use the source.
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            b.readable_secrets(&[("ca", src)]).unwrap(),
            [("ca".to_string(), src.to_string())]
        );
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            Builder::buildah(&store)
                .readable_secrets(&[("ca", src)])
                .unwrap(),
            [("ca".to_string(), src.to_string())]
        );
    }

    #[test]
    fn rootless_buildah_runs_as_its_user_with_its_home_and_runtime_dir() {
        let b = Builder::buildah_rootless(Path::new("/u"), bench_user());
        assert_eq!(b.name, "buildah-rootless");
        assert!(!b.is_rbuild());
        let c = &b.build(Path::new("/c"), "t", Cache::Off)[0];
        assert_eq!(c.get_program(), "runuser");
        let a = argv(c);
        assert_eq!(
            a[..12],
            [
                "-u",
                "bench",
                "--",
                "env",
                "HOME=/home/bench",
                "XDG_RUNTIME_DIR=/run/user/1005",
                "buildah",
                "--root",
                "/u/root",
                "--runroot",
                "/u/runroot",
                "--storage-driver",
            ]
        );
        assert_eq!(a[12], "overlay");
        assert_eq!(a[13], "bud");
        assert!(a.contains(&"--no-cache".to_string()), "{a:?}");
        // The bases come from the harness's plain-http registry.
        assert!(a.contains(&"--tls-verify=false".to_string()), "{a:?}");
        // Root Buildah is the same command without the runuser prefix.
        let root =
            argv(&Builder::buildah(Path::new("/u")).build(Path::new("/c"), "t", Cache::Off)[0]);
        assert_eq!(root[..], a[7..]);
        assert_eq!(
            Builder::buildah(Path::new("/u")).build(Path::new("/c"), "t", Cache::Off)[0]
                .get_program(),
            "buildah"
        );
    }

    #[test]
    fn rootless_buildah_pushes_pulls_and_caches_like_root_buildah_as_its_user() {
        let b = Builder::buildah_rootless(Path::new("/u"), bench_user());
        let push = b.push("src:1", "127.0.0.1:5000/d:1");
        assert_eq!(push.len(), 1);
        let p = argv(&push[0]);
        assert_eq!(p[..2], ["-u", "bench"]);
        assert_eq!(
            p[p.len() - 4..],
            [
                "push",
                "--tls-verify=false",
                "src:1",
                "docker://127.0.0.1:5000/d:1"
            ]
        );
        let pull = b.pull("127.0.0.1:5000/d:1");
        assert_eq!(pull.get_program(), "runuser");
        assert_eq!(
            argv(&pull)[argv(&pull).len() - 3..],
            ["pull", "--tls-verify=false", "127.0.0.1:5000/d:1"]
        );
        assert_eq!(b.cache_ref("r/c"), "r/c");
        let export = argv(&b.build(Path::new("/c"), "t", Cache::ExportTo("r/c"))[0]);
        assert!(export.windows(2).any(|w| w == ["--cache-to", "r/c"]));
        let import = argv(&b.build(Path::new("/c"), "t", Cache::ImportFrom("r/c"))[0]);
        assert!(import.windows(2).any(|w| w == ["--cache-from", "r/c"]));
        assert_eq!(
            b.cached_steps("--> Using cache 12ab\n--> Using cache 34cd\n"),
            2
        );
        let v = b.version();
        assert_eq!(v.get_program(), "runuser");
        assert_eq!(argv(&v).last().unwrap(), "--version");
    }

    #[test]
    fn a_private_store_keeps_the_rootless_user() {
        let b =
            Builder::buildah_rootless(Path::new("/u"), bench_user()).with_store(Path::new("/e"));
        assert_eq!(b.name, "buildah-rootless");
        let a = argv(&b.build(Path::new("/c"), "t", Cache::Local)[0]);
        assert_eq!(a[..2], ["-u", "bench"]);
        assert!(a.windows(2).any(|w| w == ["--root", "/e/root"]), "{a:?}");
        assert!(
            a.windows(2).any(|w| w == ["--runroot", "/e/runroot"]),
            "{a:?}"
        );
    }
}
