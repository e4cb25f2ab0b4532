//! Helpers for integration tests that run real steps (feature `test-support`).

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

/// The busybox applets linked into [`busybox_rootfs`].
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "id", "touch", "rm", "mkdir", "chown", "chmod", "ln", "sleep",
    "mkfifo", "pwd", "env", "hostname", "head", "wc", "true", "false", "kill", "rmdir", "mv", "cp",
    "seq", "xargs", "stat", "grep", "sed", "test", "printf", "readlink", "dd", "find",
];

/// Fills `root` with a tiny rootfs: /bin/busybox (the static one from Debian's
/// busybox-static) plus applet symlinks, /etc/passwd and /etc/group (root, app 1000 in
/// groups app and wheel), and empty /proc, /dev, /sys, /tmp.
pub fn busybox_rootfs(root: &Path) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("busybox not found: install the Debian package busybox-static");
    for dir in [
        "bin", "etc", "proc", "dev", "sys", "tmp", "root", "home/app",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nwheel:x:10:app\napp:x:1000:\n",
    )
    .unwrap();
}

/// Fails the test with a clear message unless we run as root.
pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (it creates users, namespaces and chroots); CI runs it as root"
    );
}

/// A test of a harness-less test binary.
pub type TestFn = fn();

/// Runs `tests` whose name contains the first non-flag argument (if any), libtest style,
/// and returns the process exit code. Call [`crate::maybe_run_helper`] before this.
pub fn run_tests(tests: &[(&str, TestFn)]) -> std::process::ExitCode {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let selected: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filter.as_deref().is_none_or(|f| name.contains(f)))
        .collect();
    println!("running {} tests", selected.len());
    let mut failed = Vec::new();
    for (name, test) in &selected {
        let started = std::time::Instant::now();
        let result = std::panic::catch_unwind(test);
        let verdict = if result.is_ok() { "ok" } else { "FAILED" };
        println!(
            "test {name} ... {verdict} ({:.2}s)",
            started.elapsed().as_secs_f64()
        );
        if result.is_err() {
            failed.push(*name);
        }
    }
    println!(
        "test result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        println!("failures: {failed:?}");
        std::process::ExitCode::FAILURE
    }
}
