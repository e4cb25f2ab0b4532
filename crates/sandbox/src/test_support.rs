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
        rustix::process::geteuid().as_raw(),
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

/// The argument that makes a test binary act as [`run_driver`] (call [`maybe_run_driver`]
/// in its `main`, after [`crate::maybe_run_helper`]).
pub const DRIVER_ARG: &str = "__driver";

/// If this process was started as a driver (`__driver SPEC_JSON`), runs the step and exits:
/// its output, then `OUTCOME code=.. mapping=..` or `ERROR ...` on the last line.
pub fn maybe_run_driver() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(DRIVER_ARG) {
        return;
    }
    let spec: crate::StepSpec = serde_json::from_str(&args[2]).expect("driver spec");
    let mut out = |_: crate::OutputStream, bytes: &[u8]| {
        use std::io::Write;
        let _ = std::io::stdout().write_all(bytes);
        let _ = std::io::stdout().flush();
    };
    match crate::Sandbox::new().run(&spec, &mut out) {
        Ok(outcome) => {
            println!(
                "\nOUTCOME code={:?} mapping={:?}",
                outcome.status.code, outcome.id_mapping
            );
            std::process::exit(0);
        }
        Err(e) => {
            println!("\nERROR {e}");
            std::process::exit(3);
        }
    }
}

/// Creates user `name` if missing and sets (or removes) its subordinate id ranges
/// (`name:START:65536` in /etc/subuid and /etc/subgid). Returns its uid.
pub fn ensure_user(name: &str, subid_start: Option<u32>) -> u32 {
    use std::process::Command;
    if Command::new("id").arg(name).output().unwrap().status.code() != Some(0) {
        let status = Command::new("useradd").args(["-m", name]).status().unwrap();
        assert!(status.success(), "useradd {name} failed");
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let content = std::fs::read_to_string(file).unwrap_or_default();
        let mut lines: Vec<String> = content
            .lines()
            .filter(|l| !l.starts_with(&format!("{name}:")))
            .map(str::to_string)
            .collect();
        if let Some(start) = subid_start {
            lines.push(format!("{name}:{start}:65536"));
        }
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(file, text).unwrap();
    }
    let out = Command::new("id").args(["-u", name]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Makes `dir` and everything below it belong to `uid:uid` (symlinks themselves included).
pub fn chown_tree(dir: &Path, uid: u32) {
    let status = std::process::Command::new("chown")
        .args(["-R", "-h", &format!("{uid}:{uid}")])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success(), "chown -R {uid} {}", dir.display());
}

/// Runs this test binary as a driver for `spec` as `user` (through util-linux's runuser),
/// with `env` added to its environment; returns stdout and stderr.
pub fn run_as(user: &str, spec: &crate::StepSpec, env: &[(&str, &str)]) -> String {
    let mut command = std::process::Command::new("runuser");
    command
        .args(["-u", user, "--"])
        .arg(std::env::current_exe().unwrap())
        .args([DRIVER_ARG, &serde_json::to_string(spec).unwrap()])
        .env("TMPDIR", "/tmp");
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().expect("runuser (util-linux) is needed");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}
