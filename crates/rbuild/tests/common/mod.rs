//! What the command-line tests share: running the rbuild binary on a store, checking how
//! it exited, and a store holding a busybox base image made by rbuild itself.

#![allow(dead_code)] // each test binary uses its own part of this

pub mod golden;
pub mod workflow;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rbuild_testutil::busybox_rootfs;

/// The rbuild binary on store `root`, with no engine or epoch from the environment.
pub fn rbuild(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.arg("--root")
        .arg(root)
        .env_remove("RBUILD_ENGINE")
        .env_remove("SOURCE_DATE_EPOCH");
    cmd
}

/// Docker's options for Kubernetes' restricted level (the seccomp profile is Docker's
/// default, which is what `RuntimeDefault` means under containerd); the user (`--user`)
/// is each test's. The exact `securityContext` is in docs/ci/kubernetes-restricted.md.
pub const RESTRICTED_POD: &[&str] = &["--cap-drop", "ALL", "--security-opt", "no-new-privileges"];

/// `out` of a run that must have succeeded.
pub fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "rbuild failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The stderr of a run that must have failed.
pub fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "rbuild should have failed:\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A store holding `busybox:latest`, built by rbuild from a local rootfs.
pub fn store_with_busybox() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    busybox_rootfs(&ctx.path().join("rootfs"));
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD [\"sh\"]\n",
    )
    .unwrap();
    ok(rbuild(root.path())
        .args(["-q", "-t", "busybox:latest"])
        .arg(ctx.path())
        .output()
        .unwrap());
    root
}

/// Creates the user `name` if missing and gives it exactly the subordinate uid and gid range
/// `subids` (start, count), or none; returns its uid and gid.
pub fn test_user(name: &str, subids: Option<(u32, u32)>) -> (u32, u32) {
    let exists = Command::new("id")
        .arg(name)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        let status = Command::new("useradd").args(["-m", name]).status().unwrap();
        assert!(status.success(), "useradd {name} failed");
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let content = std::fs::read_to_string(file).unwrap_or_default();
        let mut kept: String = content
            .lines()
            .filter(|l| !l.starts_with(&format!("{name}:")))
            .map(|l| format!("{l}\n"))
            .collect();
        if let Some((start, count)) = subids {
            kept.push_str(&format!("{name}:{start}:{count}\n"));
        }
        std::fs::write(file, kept).unwrap();
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, name]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// A world-traversable directory for a test user's files, holding a copy of the rbuild
/// binary (the target directory may not be reachable by other users); returns it and the
/// binary's path.
pub fn user_workspace() -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = work.path().join("rbuild");
    std::fs::copy(env!("CARGO_BIN_EXE_rbuild"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (work, bin)
}

/// The shared libraries (and the dynamic loader) `ldd` lists for `binary`.
pub fn shared_libraries(binary: &str) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .expect("cannot run ldd (Debian package libc-bin)");
    assert!(
        out.status.success(),
        "ldd {binary} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let libraries: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| {
            // `libc.so.6 => /lib/.../libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`;
            // the vdso has no file.
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    assert!(
        libraries
            .iter()
            .any(|l| l.to_string_lossy().contains("ld-")),
        "ldd {binary} listed no dynamic loader:\n{text}"
    );
    libraries
}

/// Puts the file `source` names (following symlinks: Debian's loader path is one) at the
/// same absolute path under `root`.
pub fn copy_at_same_path(source: &Path, root: &Path) {
    let real = std::fs::canonicalize(source)
        .unwrap_or_else(|e| panic!("cannot resolve {}: {e}", source.display()));
    let dest = root.join(source.strip_prefix("/").unwrap());
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    // A hard link is instant for the large debug binary; a copy when across filesystems.
    if std::fs::hard_link(&real, &dest).is_err() {
        std::fs::copy(&real, &dest)
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", real.display()));
    }
}
