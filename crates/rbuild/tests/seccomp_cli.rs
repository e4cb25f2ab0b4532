//! The seccomp filter through the binary: `rbuild info` reports it, RUN steps of a native
//! build are refused what `docker build` refuses (namespaces, mounts), and
//! `--security-opt seccomp=unconfined` lifts it with a warning. Runs as root (CI does);
//! needs busybox-static.

use rbuild_testutil::require_root;

mod common;
use common::{fails, ok, rbuild, store_with_busybox};

#[test]
fn info_reports_the_docker_default_profile() {
    let store = tempfile::tempdir().unwrap();
    let out = ok(rbuild(store.path())
        .args(["info", "--json"])
        .output()
        .unwrap());
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let seccomp = &info["seccomp"];
    assert_eq!(seccomp["profile"], "docker-default", "{info:#}");
    let allowed = seccomp["allowed_syscalls"].as_u64().unwrap();
    assert!((300..400).contains(&allowed), "{seccomp:#}");
    assert_eq!(seccomp["errno_syscalls"]["clone3"], 38, "{seccomp:#}");
    let conditional: Vec<&str> = seccomp["conditional_syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    // By syscall number: socket (41), clone (56), personality (135).
    assert_eq!(
        conditional,
        ["socket", "clone", "personality"],
        "{seccomp:#}"
    );
    assert!(
        seccomp["refused_in_chroot"]
            .as_array()
            .unwrap()
            .contains(&"ptrace".into()),
        "{seccomp:#}"
    );

    let text = ok(rbuild(store.path()).arg("info").output().unwrap());
    let text = String::from_utf8_lossy(&text.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("seccomp "))
        .unwrap_or_else(|| panic!("no seccomp line:\n{text}"));
    assert!(
        line.contains(&format!("docker-default ({allowed} syscalls allowed")),
        "{line}"
    );
}

#[test]
fn run_steps_are_refused_namespaces_unless_unconfined() {
    require_root("native builds in this test");
    let store = store_with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:latest\nRUN busybox unshare -U true && echo unshared > /u\n",
    )
    .unwrap();
    let err = fails(
        rbuild(store.path())
            .args(["build", "--progress", "plain", "--no-cache"])
            .arg(ctx.path())
            .output()
            .unwrap(),
    );
    assert!(err.contains("Operation not permitted"), "{err}");

    let out = ok(rbuild(store.path())
        .args(["build", "--progress", "plain", "--no-cache"])
        .args(["--security-opt", "seccomp=unconfined"])
        .arg(ctx.path())
        .output()
        .unwrap());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("WARNING: RUN steps run without a seccomp filter"),
        "{log}"
    );

    let err = fails(
        rbuild(store.path())
            .args(["build", "--security-opt", "apparmor=unconfined"])
            .arg(ctx.path())
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("--security-opt \"apparmor=unconfined\" is not supported"),
        "{err}"
    );
    let err = fails(
        rbuild(store.path())
            .args(["build", "--security-opt", "seccomp=/tmp/profile.json"])
            .arg(ctx.path())
            .output()
            .unwrap(),
    );
    assert!(
        err.contains("custom profile files are not supported"),
        "{err}"
    );
}
