//! Attacks on the confinement of a step, as root and as unprivileged users (with and without
//! a subordinate id range): each tries to reach something of rbuild's or the host's and
//! fails the test if it can. Needs root (CI runs it as root), busybox-static, uidmap and
//! util-linux's runuser.
//!
//! This binary is also the sandbox helper and a driver run as another user.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::ExitCode;

use rbuild_sandbox::test_support::{
    busybox_rootfs, chown_tree, ensure_user, maybe_run_driver, require_root, run_as, run_tests,
};
use rbuild_sandbox::{Isolation, Rootfs, Sandbox, StepOutcome, StepSpec};

/// A value that must never reach a step: set in this process's environment (and the
/// driver's), and in the name of a file this process holds open without close-on-exec.
const CANARY: &str = "rbuild-canary-5d81e0c4";
const CANARY_VAR: &str = "RBUILD_TEST_CANARY";

fn main() -> ExitCode {
    rbuild_sandbox::maybe_run_helper();
    maybe_run_driver();
    // Single-threaded still: no other thread reads the environment.
    std::env::set_var(CANARY_VAR, CANARY);
    run_tests(&[
        (
            "rbuild_state_stays_out_as_root",
            rbuild_state_stays_out_as_root,
        ),
        (
            "rbuild_state_stays_out_unprivileged",
            rbuild_state_stays_out_unprivileged,
        ),
    ])
}

fn rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    busybox_rootfs(dir.path());
    dir
}

fn sh(root: &Path, script: &str) -> StepSpec {
    let mut spec = StepSpec::new(
        Rootfs::Dir(root.to_path_buf()),
        vec!["/bin/sh".into(), "-c".into(), script.into()],
    );
    spec.isolation = Isolation::Userns;
    spec
}

fn run(spec: &StepSpec) -> (StepOutcome, String) {
    let mut output = Vec::new();
    let outcome = Sandbox::new()
        .run(spec, &mut |_, b| output.extend_from_slice(b))
        .unwrap_or_else(|e| panic!("sandbox error: {e}"));
    (outcome, String::from_utf8_lossy(&output).into_owned())
}

/// Reads every environment and descriptor the step can see, then lists its own descriptors
/// after a `FDS` line.
const LEAK_SCRIPT: &str = "cat /proc/1/environ /proc/*/environ 2>&1; ls -l /proc/*/fd/ 2>&1; \
                           echo; echo FDS; ls /proc/self/fd";

/// A file whose name holds the canary, open without close-on-exec in this process (as a
/// descriptor rbuild inherited from whoever started it would be).
fn open_canary_file() -> std::fs::File {
    let path = std::env::temp_dir().join(format!("{CANARY}-fd"));
    let file = std::fs::File::create(&path).unwrap();
    // SAFETY: clearing FD_CLOEXEC on a descriptor this function owns.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) };
    let _ = std::fs::remove_file(&path);
    file
}

fn assert_nothing_leaked(who: &str, out: &str) {
    assert!(
        !out.contains(CANARY),
        "{who}: the step saw the canary:\n{out}"
    );
    assert!(
        out.contains("can't open '/proc/1/environ': Permission denied"),
        "{who}: the step's init must be out of reach (non-dumpable):\n{out}"
    );
    // The shell's 0, 1, 2 and the directory ls reads (3): nothing else.
    let fds: Vec<&str> = out
        .split("\nFDS\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{who}: no FDS section:\n{out}"))
        .split_whitespace()
        .take_while(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "{who}:\n{out}");
}

fn rbuild_state_stays_out_as_root() {
    require_root();
    let _held = open_canary_file();
    let root = rootfs();
    let (outcome, out) = run(&sh(root.path(), LEAK_SCRIPT));
    assert!(outcome.status.success(), "{out}");
    assert_nothing_leaked("root", &out);
}

fn rbuild_state_stays_out_unprivileged() {
    require_root();
    let _held = open_canary_file();
    for (user, range) in [("rbuildconf1", Some(300000)), ("rbuildconf2", None)] {
        let uid = ensure_user(user, range);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        busybox_rootfs(&root);
        chown_tree(dir.path(), uid);
        let out = run_as(user, &sh(&root, LEAK_SCRIPT), &[(CANARY_VAR, CANARY)]);
        assert!(out.contains("OUTCOME code=Some(0)"), "{user}: {out}");
        let expected = if range.is_some() {
            "SubIds"
        } else {
            "SingleId"
        };
        assert!(
            out.contains(&format!("mapping={expected}")),
            "{user}: {out}"
        );
        assert_nothing_leaked(user, &out);
    }
}
