//! What the command-line tests share: running the rbuild binary on a store, checking how
//! it exited, and a store holding a busybox base image made by rbuild itself.

#![allow(dead_code)] // each test binary uses its own part of this

use std::path::Path;
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
