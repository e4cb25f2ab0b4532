//! Real steps in real namespaces (no mocks). Needs root (CI runs it as root), busybox-static,
//! uidmap (newuidmap/newgidmap) and util-linux's runuser.
//!
//! This binary is also the sandbox helper (`__rbuild-sandbox-helper`) and a small driver
//! (`__driver SPEC_JSON`) run as another user or killed by the tests.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use rbuild_sandbox::test_support::{busybox_rootfs, require_root, run_tests};
use rbuild_sandbox::{
    resolve_user, Isolation, Network, OutputStream, Rootfs, Sandbox, SandboxError, StepOutcome,
    StepSpec, StubKind,
};

const DRIVER_ARG: &str = "__driver";

fn main() -> ExitCode {
    rbuild_sandbox::maybe_run_helper();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(DRIVER_ARG) {
        return driver(&args[2]);
    }
    run_tests(&[
        (
            "probe_as_root_finds_userns_and_chroot",
            probe_as_root_finds_userns_and_chroot,
        ),
        ("exit_codes_and_signals", exit_codes_and_signals),
        ("env_cwd_and_user_userns", env_cwd_and_user_userns),
        ("env_cwd_and_user_chroot", env_cwd_and_user_chroot),
        (
            "etc_files_are_bound_not_written",
            etc_files_are_bound_not_written,
        ),
        ("devices_and_proc_work", devices_and_proc_work),
        (
            "missing_command_is_a_clear_error",
            missing_command_is_a_clear_error,
        ),
        (
            "background_process_is_killed_userns",
            background_process_is_killed_userns,
        ),
        (
            "background_process_is_killed_chroot",
            background_process_is_killed_chroot,
        ),
        ("network_none_has_only_lo", network_none_has_only_lo),
        (
            "sigterm_to_rbuild_kills_the_step_userns",
            sigterm_to_rbuild_kills_the_step_userns,
        ),
        (
            "sigterm_to_rbuild_kills_the_step_chroot",
            sigterm_to_rbuild_kills_the_step_chroot,
        ),
        (
            "unprivileged_with_subuid_range",
            unprivileged_with_subuid_range,
        ),
        (
            "unprivileged_single_id_mapping",
            unprivileged_single_id_mapping,
        ),
        ("unprivileged_overlay_rootfs", unprivileged_overlay_rootfs),
        ("overhead_of_run_true", overhead_of_run_true),
        (
            "steps_run_when_rbuild_is_pid_1",
            steps_run_when_rbuild_is_pid_1,
        ),
        (
            "chroot_refuses_a_bind_it_cannot_mount",
            chroot_refuses_a_bind_it_cannot_mount,
        ),
        (
            "chroot_copies_up_only_the_written_name_of_a_shared_file",
            chroot_copies_up_only_the_written_name_of_a_shared_file,
        ),
        (
            "copy_up_is_refused_outside_chroot_and_restricted_isolation",
            copy_up_is_refused_outside_chroot_and_restricted_isolation,
        ),
        (
            "chroot_copies_up_for_each_stopped_call",
            chroot_copies_up_for_each_stopped_call,
        ),
        (
            "an_overlay_step_is_volatile_and_its_directories_serve_once",
            an_overlay_step_is_volatile_and_its_directories_serve_once,
        ),
        (
            "every_helper_is_reaped_after_its_step",
            every_helper_is_reaped_after_its_step,
        ),
    ])
}

/// Runs the spec given as JSON and prints the outcome on the last line of stdout.
fn driver(spec_json: &str) -> ExitCode {
    let spec: StepSpec = serde_json::from_str(spec_json).expect("driver spec");
    let mut out = |_: OutputStream, bytes: &[u8]| {
        use std::io::Write;
        let _ = std::io::stdout().write_all(bytes);
        let _ = std::io::stdout().flush();
    };
    match Sandbox::new().run(&spec, &mut out) {
        Ok(outcome) => {
            println!(
                "\nOUTCOME code={:?} mapping={:?} hint={}",
                outcome.status.code,
                outcome.id_mapping,
                outcome.failure_hint().unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("\nERROR {e}");
            ExitCode::from(3)
        }
    }
}

fn sandbox() -> Sandbox {
    Sandbox::new()
}

fn rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    busybox_rootfs(dir.path());
    dir
}

fn sh(root: &Path, script: &str, isolation: Isolation) -> StepSpec {
    let mut spec = StepSpec::new(
        Rootfs::Dir(root.to_path_buf()),
        vec!["/bin/sh".into(), "-c".into(), script.into()],
    );
    spec.isolation = isolation;
    spec
}

fn run(spec: &StepSpec) -> (StepOutcome, String) {
    let mut output = Vec::new();
    let outcome = sandbox()
        .run(spec, &mut |_, b| output.extend_from_slice(b))
        .unwrap_or_else(|e| panic!("step {:?} could not run: {e}", spec.argv));
    (outcome, String::from_utf8_lossy(&output).into_owned())
}

fn probe_as_root_finds_userns_and_chroot() {
    require_root();
    let caps = sandbox().probe();
    assert!(caps.checks.userns.ok, "{caps:?}");
    assert!(caps.checks.chroot.ok, "{caps:?}");
    assert!(caps.checks.overlay_in_userns.ok, "{caps:?}");
    assert_eq!(caps.auto, Ok(Isolation::Userns));
    assert!(caps.full_id_range());
}

fn exit_codes_and_signals() {
    require_root();
    let root = rootfs();
    for isolation in [Isolation::Userns, Isolation::Chroot] {
        let (outcome, _) = run(&sh(root.path(), "exit 3", isolation));
        assert_eq!(outcome.status.code, Some(3), "{isolation}");
        assert_eq!(outcome.isolation, isolation);
        let (outcome, _) = run(&sh(
            root.path(),
            "echo hi; echo oops; kill -9 $$",
            isolation,
        ));
        assert_eq!(outcome.status.signal, Some(9), "{isolation}");
        assert_eq!(outcome.tail, vec!["hi".to_string(), "oops".to_string()]);
        let (outcome, out) = run(&sh(root.path(), "echo ok", isolation));
        assert!(outcome.status.success());
        assert_eq!(out, "ok\n");
    }
}

fn env_cwd_and_user(isolation: Isolation) {
    require_root();
    let root = rootfs();
    let mut spec = sh(
        root.path(),
        "echo \"$FOO\"; pwd; id -u; id -g; id -G; touch mine",
        isolation,
    );
    spec.env.push("FOO=bar baz".into());
    spec.cwd = "/app/dir".into();
    spec.user = resolve_user(root.path(), "app").unwrap();
    std::fs::create_dir_all(root.path().join("app/dir")).unwrap();
    std::os::unix::fs::chown(root.path().join("app/dir"), Some(1000), Some(1000)).unwrap();
    let (outcome, out) = run(&spec);
    assert!(outcome.status.success(), "{out}");
    assert_eq!(out, "bar baz\n/app/dir\n1000\n1000\n1000 10\n");
    let meta = std::fs::metadata(root.path().join("app/dir/mine")).unwrap();
    // Real root maps ids 1:1, so the host sees the step's ids.
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));

    // A missing working directory is created, as runc does.
    let mut spec = sh(root.path(), "pwd", isolation);
    spec.cwd = "/new/wd".into();
    let (_, out) = run(&spec);
    assert_eq!(out, "/new/wd\n");
    assert!(root.path().join("new/wd").is_dir());
}

fn env_cwd_and_user_userns() {
    env_cwd_and_user(Isolation::Userns);
}

fn env_cwd_and_user_chroot() {
    env_cwd_and_user(Isolation::Chroot);
}

fn etc_files_are_bound_not_written() {
    require_root();
    let root = rootfs();
    std::fs::write(root.path().join("etc/hosts"), "original\n").unwrap();
    let mut spec = sh(
        root.path(),
        "cat /etc/hosts; test -e /etc/hostname && echo hostname-file; hostname; \
         test -f /etc/resolv.conf && echo resolv",
        Isolation::Userns,
    );
    spec.hostname = "buildhost".into();
    let (outcome, out) = run(&spec);
    assert!(outcome.status.success(), "{out}");
    assert!(out.contains("127.0.0.1\tlocalhost buildhost\n"), "{out}");
    assert!(out.contains("\nbuildhost\n"), "{out}");
    // As in BuildKit, a step has no /etc/hostname unless its root has one.
    assert!(!out.contains("hostname-file"), "{out}");
    assert!(out.contains("resolv"), "{out}");
    // The rootfs's own file is untouched; the missing ones exist only as empty stubs,
    // reported so the snapshotter can remove them.
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/hosts")).unwrap(),
        "original\n"
    );
    assert_eq!(
        std::fs::read(root.path().join("etc/resolv.conf")).unwrap(),
        b""
    );
    assert!(!root.path().join("etc/hostname").exists());
    let stub_paths: Vec<&str> = outcome.stubs.iter().map(|s| s.path.as_str()).collect();
    assert!(stub_paths.contains(&"/etc/resolv.conf"), "{stub_paths:?}");
    assert!(!stub_paths.contains(&"/etc/hosts"), "{stub_paths:?}");
    assert!(outcome.stubs.iter().all(|s| s.kind == StubKind::File));
    let etc_mtime = std::fs::metadata(root.path().join("etc")).unwrap().mtime();
    std::thread::sleep(Duration::from_millis(20));
    let (outcome, _) = run(&spec);
    assert!(
        outcome.stubs.is_empty(),
        "an existing stub is reused, not re-created"
    );
    std::fs::remove_file(root.path().join("etc/resolv.conf")).unwrap();
    let before = std::fs::metadata(root.path().join("etc")).unwrap();
    let (outcome, _) = run(&spec);
    assert_ne!(
        std::fs::metadata(root.path().join("etc"))
            .unwrap()
            .mtime_nsec(),
        before.mtime_nsec()
    );
    rbuild_sandbox::remove_stubs(root.path(), &outcome.stubs).unwrap();
    assert!(!root.path().join("etc/resolv.conf").exists());
    let after = std::fs::metadata(root.path().join("etc")).unwrap();
    assert_eq!(
        (after.mtime(), after.mtime_nsec()),
        (before.mtime(), before.mtime_nsec())
    );
    assert!(etc_mtime <= after.mtime());
}

fn devices_and_proc_work() {
    require_root();
    let root = rootfs();
    for isolation in [Isolation::Userns, Isolation::Chroot] {
        let (outcome, out) = run(&sh(
            root.path(),
            "echo x > /dev/null && head -c 5 /dev/zero | wc -c && head -c 3 /dev/urandom | wc -c",
            isolation,
        ));
        assert!(outcome.status.success(), "{isolation}: {out}");
        assert_eq!(out, "5\n3\n", "{isolation}");
    }
    // userns gets a PID namespace: the shell is a child of our init (pid 1).
    let (_, out) = run(&sh(root.path(), "echo $$; ls /proc/1/", Isolation::Userns));
    assert!(out.starts_with("2\n"), "{out}");
    // chroot mode creates missing device nodes as stubs; userns puts /dev on a tmpfs.
    let root = rootfs();
    let (outcome, _) = run(&sh(root.path(), "true", Isolation::Chroot));
    assert!(outcome
        .stubs
        .iter()
        .any(|s| s.path == "/dev/null" && s.kind == StubKind::CharDevice));
    let (outcome, _) = run(&sh(root.path(), "true", Isolation::Userns));
    assert!(
        outcome.stubs.iter().all(|s| !s.path.starts_with("/dev/")),
        "{:?}",
        outcome.stubs
    );
}

fn missing_command_is_a_clear_error() {
    require_root();
    let root = rootfs();
    for isolation in [Isolation::Userns, Isolation::Chroot] {
        let mut spec = sh(root.path(), "", isolation);
        spec.argv = vec!["no-such-tool".into()];
        match sandbox().run(&spec, &mut |_, _| {}) {
            Err(SandboxError::Helper { stage, message }) => {
                assert_eq!(stage, "exec");
                assert!(
                    message.contains("no-such-tool") && message.contains("not found"),
                    "{message}"
                );
            }
            other => panic!("expected an exec error, got {other:?}"),
        }
    }
}

fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            e.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.starts_with(marker).then_some(cmdline)
        })
        .collect()
}

fn background_process_is_killed(isolation: Isolation, marker: &str) {
    require_root();
    let marker = &format!("{marker}{}", std::process::id());
    let root = rootfs();
    let started = Instant::now();
    // The background sleep keeps stdout open: the step only ends because it is killed.
    let (outcome, _) = run(&sh(
        root.path(),
        &format!("sleep {marker} & echo started"),
        isolation,
    ));
    assert!(outcome.status.success());
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        processes_with(&format!("sleep {marker}")),
        Vec::<String>::new()
    );
}

fn background_process_is_killed_userns() {
    background_process_is_killed(Isolation::Userns, "4241");
}

fn background_process_is_killed_chroot() {
    background_process_is_killed(Isolation::Chroot, "4242");
}

fn network_none_has_only_lo() {
    require_root();
    let root = rootfs();
    let mut spec = sh(root.path(), "cat /proc/net/dev", Isolation::Userns);
    spec.network = Network::None;
    let (outcome, out) = run(&spec);
    assert!(outcome.status.success(), "{out}");
    let interfaces: Vec<&str> = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, vec!["lo"], "{out}");
    // Its /sys is a sysfs of its own network namespace (BuildKit's): `lo` alone, read-only,
    // with the cgroupfs below it read-only too.
    let mut spec = sh(
        root.path(),
        "ls /sys/class/net; echo 1 > /sys/kernel/uevent_helper && echo sysfs-written; \
         touch /sys/fs/cgroup/x 2>/dev/null && echo cgroup-written; true",
        Isolation::Userns,
    );
    spec.network = Network::None;
    let (outcome, out) = run(&spec);
    assert!(outcome.status.success(), "{out}");
    assert!(out.starts_with("lo\n"), "{out}");
    assert!(!out.contains("written"), "{out}");
}

fn mounts_mentioning(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

fn sigterm_to_rbuild_kills_the_step(isolation: Isolation, marker: &str) {
    require_root();
    // Unique per run, so leftovers of another run cannot confuse the count.
    let marker = &format!("{marker}{}", std::process::id());
    let root = rootfs();
    let spec = sh(
        root.path(),
        &format!("sleep {marker} & echo started; sleep {marker}"),
        isolation,
    );
    let mut driver = Command::new(std::env::current_exe().unwrap())
        .args([DRIVER_ARG, &serde_json::to_string(&spec).unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Whatever happens below, the driver must not outlive the test.
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            // SAFETY: kill takes integers only; the driver is our child and not yet
            // reaped (`wait` below runs after this guard's kill), so its pid is not reused.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    let _guard = KillOnDrop(driver.id());
    let mut stdout = driver.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("started") {
        use std::io::Read;
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "driver ended before the step started");
        seen.extend_from_slice(&buf[..n]);
    }
    let pattern = format!("sleep {marker}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes_with(&pattern).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(processes_with(&pattern).len(), 2);
    // SAFETY: kill takes integers only; the driver is our child, not yet reaped.
    unsafe { libc::kill(driver.id() as i32, libc::SIGTERM) };
    driver.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with(&pattern).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(processes_with(&pattern), Vec::<String>::new());
    assert_eq!(mounts_mentioning(root.path()), Vec::<String>::new());
}

fn sigterm_to_rbuild_kills_the_step_userns() {
    sigterm_to_rbuild_kills_the_step(Isolation::Userns, "4243");
}

fn sigterm_to_rbuild_kills_the_step_chroot() {
    sigterm_to_rbuild_kills_the_step(Isolation::Chroot, "4244");
}

/// Creates `name` if missing, and sets (or removes) its subordinate id ranges.
fn ensure_user(name: &str, subid_start: Option<u32>) -> u32 {
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

/// A rootfs owned by `uid`, in a directory only it (and root) can use.
fn rootfs_owned_by(uid: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    busybox_rootfs(&root);
    let walk = Command::new("chown")
        .args([
            "-R",
            "-h",
            &format!("{uid}:{uid}"),
            &dir.path().to_string_lossy(),
        ])
        .status()
        .unwrap();
    assert!(walk.success());
    (dir, root)
}

/// Runs the driver as `user` (via runuser) and returns its stdout.
fn run_as(user: &str, spec: &StepSpec) -> String {
    let out = Command::new("runuser")
        .args(["-u", user, "--"])
        .arg(std::env::current_exe().unwrap())
        .args([DRIVER_ARG, &serde_json::to_string(spec).unwrap()])
        .env("TMPDIR", "/tmp")
        .output()
        .expect("runuser (util-linux) is needed");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn unprivileged_with_subuid_range() {
    require_root();
    let uid = ensure_user("rbuildtest", Some(200000));
    let (_dir, root) = rootfs_owned_by(uid);
    let spec = sh(
        &root,
        "id -u; touch /f /g && chown 1000:1000 /f && chown 65535 /g && echo chowned",
        Isolation::Userns,
    );
    let out = run_as("rbuildtest", &spec);
    assert!(out.contains("0\nchowned\n"), "{out}");
    assert!(out.contains("OUTCOME code=Some(0) mapping=SubIds"), "{out}");
    // Container id N maps to host id 200000 + N - 1 (id 0 is the user itself).
    let f = std::fs::metadata(root.join("f")).unwrap();
    assert_eq!((f.uid(), f.gid()), (200999, 200999));
    assert_eq!(std::fs::metadata(root.join("g")).unwrap().uid(), 265534);
    assert_eq!(std::fs::metadata(root.join("bin")).unwrap().uid(), uid);
    // The USER switch works too.
    let mut spec = sh(&root, "id -u; id -G", Isolation::Userns);
    spec.user = resolve_user(&root, "app").unwrap();
    let out = run_as("rbuildtest", &spec);
    assert!(out.contains("1000\n1000 10\n"), "{out}");
}

fn unprivileged_single_id_mapping() {
    require_root();
    let uid = ensure_user("rbuildtest2", None);
    let (_dir, root) = rootfs_owned_by(uid);
    let spec = sh(&root, "touch /f && chown 1000 /f", Isolation::Userns);
    let out = run_as("rbuildtest2", &spec);
    assert!(out.contains("mapping=SingleId"), "{out}");
    assert!(out.contains("OUTCOME code=Some(1)"), "{out}");
    assert!(
        out.contains("/etc/subuid") && out.contains("rbuildtest2:100000:65536"),
        "{out}"
    );
    // Root with its primary group as supplementary group (as the executor asks, after
    // BuildKit's ensureAdditionalGids) runs although setgroups(2) is denied here.
    let mut spec = sh(&root, "id -u", Isolation::Userns);
    spec.user.groups = vec![0];
    let out = run_as("rbuildtest2", &spec);
    assert!(out.contains("OUTCOME code=Some(0)"), "{out}");
    let mut spec = sh(&root, "id -u", Isolation::Userns);
    spec.user = resolve_user(&root, "app").unwrap();
    let out = run_as("rbuildtest2", &spec);
    assert!(
        out.contains("ERROR")
            && out.contains("is not mapped")
            && out.contains("rbuildtest2:100000:65536"),
        "{out}"
    );
    // Root-owned files in the rootfs stay the user's own files on the host.
    assert_eq!(std::fs::metadata(root.join("f")).unwrap().uid(), uid);
}

fn overhead_of_run_true() {
    require_root();
    let root = rootfs();
    for isolation in [Isolation::Userns, Isolation::Chroot] {
        let spec = sh(root.path(), "true", isolation);
        run(&spec);
        let rounds = 20;
        let started = Instant::now();
        for _ in 0..rounds {
            assert!(run(&spec).0.status.success());
        }
        let per_step = started.elapsed() / rounds;
        println!(
            "  RUN true with {isolation}: {:.1} ms per step",
            per_step.as_secs_f64() * 1000.0
        );
        assert!(
            per_step < Duration::from_secs(1),
            "{isolation}: {per_step:?}"
        );
    }
}

fn unprivileged_overlay_rootfs() {
    require_root();
    let uid = ensure_user("rbuildtest", Some(200000));
    let (dir, lower) = rootfs_owned_by(uid);
    let parent = dir.path().join("ovl");
    for sub in ["", "upper", "work", "merged"] {
        std::fs::create_dir_all(parent.join(sub)).unwrap();
        std::os::unix::fs::chown(parent.join(sub), Some(uid), Some(uid)).unwrap();
    }
    let rootfs = Rootfs::Overlay {
        lowerdirs: vec![lower.clone()],
        upperdir: parent.join("upper"),
        workdir: parent.join("work"),
        merged: parent.join("merged"),
    };
    let mut spec = StepSpec::new(
        rootfs,
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "rm /bin/cat && touch /new && chown 1000 /new".into(),
        ],
    );
    spec.isolation = Isolation::Userns;
    let out = run_as("rbuildtest", &spec);
    assert!(out.contains("OUTCOME code=Some(0) mapping=SubIds"), "{out}");
    // The lower is untouched; the upper has the new file (host id 200999) and a whiteout.
    assert!(lower.join("bin/cat").exists());
    assert_eq!(
        std::fs::metadata(parent.join("upper/new")).unwrap().uid(),
        200999
    );
    let whiteout = std::fs::symlink_metadata(parent.join("upper/bin/cat")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
}

/// The driver as PID 1 of a new PID namespace (rbuild as a container's entrypoint, without
/// the init it forks there): a helper whose parent is PID 1 must not take it for dead.
fn steps_run_when_rbuild_is_pid_1() {
    require_root();
    let root = rootfs();
    for isolation in [Isolation::Userns, Isolation::Chroot] {
        let spec = sh(root.path(), "echo ran-under-pid-1", isolation);
        let out = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "--mount-proc", "--"])
            .arg(std::env::current_exe().unwrap())
            .args([DRIVER_ARG, &serde_json::to_string(&spec).unwrap()])
            .output()
            .expect("unshare (util-linux) is needed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("ran-under-pid-1"), "{isolation}: {text}");
        assert!(text.contains("OUTCOME code=Some(0)"), "{isolation}: {text}");
    }
}

/// chroot isolation has no mount(2): a bind handed to it is an error naming it, never
/// dropped (the build places RUN --mount content itself).
fn chroot_refuses_a_bind_it_cannot_mount() {
    require_root();
    let root = rootfs();
    let source = tempfile::tempdir().unwrap();
    let mut spec = sh(root.path(), "touch /ran", Isolation::Chroot);
    spec.binds.push(rbuild_sandbox::BindMount {
        source: source.path().to_path_buf(),
        target: "/mnt/cache".into(),
        readonly: false,
        remove_source: false,
        tmpfs_size: None,
    });
    match sandbox().run(&spec, &mut |_, _| {}) {
        Err(SandboxError::Helper { stage, message }) => {
            assert_eq!(stage, "mounts");
            assert!(message.contains("/mnt/cache"), "{message}");
        }
        other => panic!("expected a mounts error, got {other:?}"),
    }
    assert!(
        !root.path().join("ran").exists(),
        "the step ran without its mount"
    );
}

/// Hard-link groups from before a chroot step (`copy_up_inodes`): a write-open, a chmod
/// (by a name relative to the cwd), a chown and a truncate of one name each give that name
/// a new inode with the change and leave the other name as it was (owner, mode, content,
/// xattrs copied; the directory's times kept), as overlayfs's copy-up does. A read leaves
/// the group alone, a group made within the step stays one, and symlinks pointing out of
/// the root (absolute or by `..`) are not followed by the supervisor to a file outside.
fn chroot_copies_up_only_the_written_name_of_a_shared_file() {
    use std::os::unix::fs::PermissionsExt;
    require_root();
    let root = rootfs();
    let g = root.path().join("g");
    std::fs::create_dir(&g).unwrap();
    let mut inodes = Vec::new();
    for group in ["w", "c", "o", "t", "r"] {
        let first = g.join(format!("{group}-1"));
        std::fs::write(&first, format!("{group}\n")).unwrap();
        std::fs::set_permissions(&first, std::fs::Permissions::from_mode(0o4751)).unwrap();
        std::os::unix::fs::chown(&first, Some(7), Some(8)).unwrap();
        std::fs::set_permissions(&first, std::fs::Permissions::from_mode(0o4751)).unwrap();
        let name = c_path(&first);
        // SAFETY: a valid C string path, name and value.
        let set = unsafe {
            libc::setxattr(
                name.as_ptr(),
                c"user.rbuild".as_ptr(),
                b"kept".as_ptr().cast(),
                4,
                0,
            )
        };
        assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
        std::fs::hard_link(&first, g.join(format!("{group}-2"))).unwrap();
        inodes.push(std::fs::metadata(&first).unwrap().ino());
    }
    // A shared file outside the root, its inode listed too: only a supervisor that
    // followed the step's symlinks out of its root would copy it up.
    let outside = tempfile::tempdir().unwrap();
    let x = outside.path().join("x");
    std::fs::write(&x, "outside\n").unwrap();
    std::fs::hard_link(&x, outside.path().join("y")).unwrap();
    inodes.push(std::fs::metadata(&x).unwrap().ino());
    std::os::unix::fs::symlink(&x, g.join("abs")).unwrap();
    let escape = format!("../../../../../../../../..{}", x.display());
    std::os::unix::fs::symlink(&escape, g.join("rel")).unwrap();
    let dir_before = std::fs::metadata(&g).unwrap();

    let mut spec = sh(
        root.path(),
        "set -e; echo more >> /g/w-1; (cd /g && chmod 600 c-1); chown 5:6 /g/o-1; \
         truncate -s 1 /g/t-1; cat /g/r-1 /g/r-2 >/dev/null; \
         mkdir /n; echo n > /n/new-1; ln /n/new-1 /n/new-2; chmod 640 /n/new-1; \
         chmod 600 /g/abs 2>/dev/null || true; chmod 600 /g/rel 2>/dev/null || true; \
         echo hi 2>/dev/null > /g/abs || true; echo done",
        Isolation::Chroot,
    );
    spec.copy_up_inodes = inodes;
    let (outcome, out) = run(&spec);
    assert_eq!(outcome.status.code, Some(0), "{out}");
    assert!(out.contains("done"), "{out}");

    let meta = |name: &str| std::fs::metadata(g.join(name)).unwrap();
    for group in ["w", "c", "o", "t"] {
        let (written, other) = (meta(&format!("{group}-1")), meta(&format!("{group}-2")));
        assert_ne!(
            written.ino(),
            other.ino(),
            "{group}: the written name copied up"
        );
        assert_eq!((written.nlink(), other.nlink()), (1, 1), "{group}");
        assert_eq!(
            (other.mode() & 0o7777, other.uid(), other.gid(), other.len()),
            (0o4751, 7, 8, 2),
            "{group}: the other name keeps the old inode as it was"
        );
        assert_eq!(
            std::fs::read_to_string(g.join(format!("{group}-2"))).unwrap(),
            format!("{group}\n")
        );
        let copy = c_path(&g.join(format!("{group}-1")));
        let mut value = [0u8; 16];
        // SAFETY: a valid C string path and name, and a buffer of 16 bytes.
        let n = unsafe {
            libc::getxattr(
                copy.as_ptr(),
                c"user.rbuild".as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert_eq!(n, 4, "{group}: the xattr went with the copy");
        assert_eq!(&value[..4], b"kept");
    }
    assert_eq!(std::fs::read_to_string(g.join("w-1")).unwrap(), "w\nmore\n");
    assert_eq!(meta("c-1").mode() & 0o7777, 0o600);
    let o = meta("o-1");
    assert_eq!((o.uid(), o.gid()), (5, 6));
    assert_eq!(
        o.mode() & 0o7777,
        0o751,
        "the chown ran on the copy, clearing its setuid bit"
    );
    assert_eq!(
        (meta("w-1").mode() & 0o7777, meta("w-1").uid()),
        (0o4751, 7)
    );
    assert_eq!(meta("t-1").len(), 1);
    assert_eq!(
        meta("r-1").ino(),
        meta("r-2").ino(),
        "a read copies nothing up"
    );
    let new1 = std::fs::metadata(root.path().join("n/new-1")).unwrap();
    let new2 = std::fs::metadata(root.path().join("n/new-2")).unwrap();
    assert_eq!(
        (new1.ino(), new1.nlink(), new2.mode() & 0o777),
        (new2.ino(), 2, 0o640),
        "a group made in the step stays one"
    );
    let dir_after = std::fs::metadata(&g).unwrap();
    assert_eq!(
        (dir_after.mtime(), dir_after.mtime_nsec()),
        (dir_before.mtime(), dir_before.mtime_nsec()),
        "a copy-up leaves its directory's mtime"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&g)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("rbuild-copy-up"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let (x_meta, y_meta) = (
        std::fs::metadata(&x).unwrap(),
        std::fs::metadata(outside.path().join("y")).unwrap(),
    );
    assert_eq!(
        (x_meta.ino(), x_meta.nlink(), x_meta.mode() & 0o777),
        (y_meta.ino(), 2, 0o644),
        "the file outside the root was not touched"
    );
    assert_eq!(std::fs::read_to_string(&x).unwrap(), "outside\n");

    // A step running as another user: the supervisor reads its call as that user.
    let u1 = g.join("u-1");
    std::fs::write(&u1, "u\n").unwrap();
    std::os::unix::fs::chown(&u1, Some(1000), Some(1000)).unwrap();
    std::fs::hard_link(&u1, g.join("u-2")).unwrap();
    let r1 = g.join("root-1");
    std::fs::write(&r1, "r\n").unwrap();
    std::fs::hard_link(&r1, g.join("root-2")).unwrap();
    let mut spec = sh(
        root.path(),
        "chmod 600 /g/u-1; if chmod 600 /g/root-1 || echo no >> /g/root-1; then exit 9; fi",
        Isolation::Chroot,
    );
    spec.user = rbuild_sandbox::UserIds {
        uid: 1000,
        gid: 1000,
        groups: vec![1000],
    };
    spec.copy_up_inodes = vec![
        std::fs::metadata(&u1).unwrap().ino(),
        std::fs::metadata(&r1).unwrap().ino(),
    ];
    let (outcome, out) = run(&spec);
    assert_eq!(outcome.status.code, Some(0), "{out}");
    let (u1, u2) = (meta("u-1"), meta("u-2"));
    assert_ne!(u1.ino(), u2.ino(), "a user's chmod copied its name up");
    assert_eq!(
        (u1.mode() & 0o777, u1.uid(), u2.mode() & 0o777),
        (0o600, 1000, 0o644)
    );
    assert_eq!(
        meta("root-1").ino(),
        meta("root-2").ino(),
        "a chmod or write-open the kernel refuses copies nothing up"
    );
}

/// Only the chroot helper has the copy-up supervisor: a step of another isolation that
/// asks for it is refused, not run without it.
fn copy_up_is_refused_outside_chroot_and_restricted_isolation() {
    require_root();
    let root = rootfs();
    let mut spec = sh(root.path(), "touch /ran", Isolation::Userns);
    spec.copy_up_inodes = vec![1];
    match sandbox().run(&spec, &mut |_, _| {}) {
        Err(SandboxError::Unavailable(why)) => {
            assert!(
                why.contains("chroot and restricted isolation only"),
                "{why}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!root.path().join("ran").exists());
}

fn c_path(path: &Path) -> std::ffi::CString {
    std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap()
}

/// The calls busybox does not make, by a static C program in the root: `truncate(2)`,
/// `utimensat` by a name relative to the cwd, `setxattr`, `removexattr`, `fchmodat` relative
/// to a directory descriptor, `lchown`, `creat` each copy their name up; an
/// `O_CREAT|O_EXCL` open of a shared name (which fails) and `fchmod` of a read-only
/// descriptor (not redirected, docs/fidelity.md) copy nothing.
fn chroot_copies_up_for_each_stopped_call() {
    require_root();
    let root = rootfs();
    let source = root.path().join("calls.c");
    std::fs::write(
        &source,
        r#"
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>
#define CHECK(x) if ((x) != 0) { perror(#x); return 1; }
int main(void) {
    struct timespec times[2] = {{1, 0}, {2, 0}};
    CHECK(truncate("/g/tr-1", 1));
    CHECK(chdir("/g"));
    CHECK(utimensat(AT_FDCWD, "ut-1", times, 0));
    CHECK(setxattr("/g/xa-1", "user.new", "v", 1, 0));
    CHECK(removexattr("/g/rx-1", "user.rbuild"));
    int dir = open("/g", O_DIRECTORY | O_RDONLY);
    CHECK(dir < 0);
    CHECK(fchmodat(dir, "fd-1", 0600, 0));
    CHECK(lchown("/g/lc-1", 5, 5));
    int created = creat("/g/cr-1", 0644);
    CHECK(created < 0);
    CHECK(write(created, "c", 1) != 1);
    CHECK(open("/g/ex-1", O_WRONLY | O_CREAT | O_EXCL, 0644) != -1);
    int ro = open("/g/ro-1", O_RDONLY);
    CHECK(ro < 0);
    CHECK(fchmod(ro, 0600));
    puts("calls done");
    return 0;
}
"#,
    )
    .unwrap();
    let compiled = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(root.path().join("calls"))
        .arg(&source)
        .output()
        .expect("cc is needed");
    assert!(
        compiled.status.success(),
        "cc -static: {}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let g = root.path().join("g");
    std::fs::create_dir(&g).unwrap();
    let groups = ["tr", "ut", "xa", "rx", "fd", "lc", "cr", "ex", "ro"];
    let mut inodes = Vec::new();
    for group in groups {
        let first = g.join(format!("{group}-1"));
        std::fs::write(&first, format!("{group}\n")).unwrap();
        let name = c_path(&first);
        // SAFETY: a valid C string path, name and value.
        let set = unsafe {
            libc::setxattr(
                name.as_ptr(),
                c"user.rbuild".as_ptr(),
                b"kept".as_ptr().cast(),
                4,
                0,
            )
        };
        assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
        std::fs::hard_link(&first, g.join(format!("{group}-2"))).unwrap();
        inodes.push(std::fs::metadata(&first).unwrap().ino());
    }
    let mut spec = StepSpec::new(
        Rootfs::Dir(root.path().to_path_buf()),
        vec!["/calls".into()],
    );
    spec.isolation = Isolation::Chroot;
    spec.copy_up_inodes = inodes;
    let (outcome, out) = run(&spec);
    assert_eq!(outcome.status.code, Some(0), "{out}");
    assert!(out.contains("calls done"), "{out}");
    let meta = |name: &str| std::fs::metadata(g.join(name)).unwrap();
    for group in ["tr", "ut", "xa", "rx", "fd", "lc", "cr"] {
        let (written, other) = (meta(&format!("{group}-1")), meta(&format!("{group}-2")));
        assert_ne!(written.ino(), other.ino(), "{group}: copied up");
        assert_eq!(
            (
                other.len(),
                other.mode() & 0o777,
                other.uid(),
                other.nlink()
            ),
            ((group.len() + 1) as u64, 0o644, 0, 1),
            "{group}: the other name as it was"
        );
        assert_eq!(
            std::fs::read_to_string(g.join(format!("{group}-2"))).unwrap(),
            format!("{group}\n"),
            "{group}"
        );
    }
    assert_eq!(meta("tr-1").len(), 1);
    assert_eq!((meta("ut-1").atime(), meta("ut-1").mtime()), (1, 2));
    assert_ne!(meta("ut-2").mtime(), 2);
    assert_eq!(meta("fd-1").mode() & 0o777, 0o600);
    assert_eq!((meta("lc-1").uid(), meta("lc-1").gid()), (5, 5));
    assert_eq!(std::fs::read_to_string(g.join("cr-1")).unwrap(), "c");
    let xattr = |name: &str, key: &std::ffi::CStr| -> isize {
        let path = c_path(&g.join(name));
        let mut value = [0u8; 16];
        // SAFETY: a valid C string path and name, and a buffer of 16 bytes.
        unsafe {
            libc::getxattr(
                path.as_ptr(),
                key.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        }
    };
    assert_eq!(xattr("xa-1", c"user.new"), 1);
    assert_eq!(
        xattr("xa-2", c"user.new"),
        -1,
        "the other name has no new xattr"
    );
    assert_eq!(xattr("rx-1", c"user.rbuild"), -1, "removed from the copy");
    assert_eq!(xattr("rx-2", c"user.rbuild"), 4, "kept by the other name");
    assert_eq!(
        meta("ex-1").ino(),
        meta("ex-2").ino(),
        "a create-only open copies nothing"
    );
    assert_eq!(
        (meta("ro-1").ino(), meta("ro-2").mode() & 0o777),
        (meta("ro-2").ino(), 0o600),
        "fchmod of a read-only descriptor reaches every name (not redirected)"
    );
}

/// A step's overlay is mounted `volatile` (no syncfs of the whole upper file system when
/// the step's mount namespace goes, no fsync inside the step), which the kernel allows only
/// once per upper and work directory: a second mount of the same directories (a step whose
/// upper a crashed or finished step left) is refused, never run.
fn an_overlay_step_is_volatile_and_its_directories_serve_once() {
    require_root();
    let lower = rootfs();
    let parent = tempfile::tempdir().unwrap();
    for sub in ["upper", "work", "merged"] {
        std::fs::create_dir(parent.path().join(sub)).unwrap();
    }
    let rootfs = Rootfs::Overlay {
        lowerdirs: vec![lower.path().to_path_buf()],
        upperdir: parent.path().join("upper"),
        workdir: parent.path().join("work"),
        merged: parent.path().join("merged"),
    };
    let mut spec = StepSpec::new(
        rootfs,
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "touch /first && cat /proc/self/mountinfo".into(),
        ],
    );
    spec.isolation = Isolation::Userns;
    let (outcome, output) = run(&spec);
    assert!(outcome.status.success(), "{output}");
    let root_mount = output
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no mount on / in:\n{output}"));
    assert!(root_mount.contains(" overlay "), "{root_mount}");
    assert!(root_mount.contains("volatile"), "{root_mount}");
    assert!(parent.path().join("upper/first").exists());
    assert!(parent.path().join("work/work/incompat/volatile").is_dir());

    spec.argv = vec!["/bin/sh".into(), "-c".into(), "touch /second".into()];
    match sandbox().run(&spec, &mut |_, _| {}) {
        Err(SandboxError::Helper { stage, .. }) => assert_eq!(stage, "mount overlay"),
        other => panic!("a second mount of a volatile upper must fail, got {other:?}"),
    }
    assert!(!parent.path().join("upper/second").exists());
}

/// `Sandbox::run` returns once the step's processes are gone, before its helper has torn
/// the step's mount namespace down (dropping a large overlay's inodes takes a while); the
/// helper is still reaped: none is left as a zombie.
fn every_helper_is_reaped_after_its_step() {
    require_root();
    let root = rootfs();
    for _ in 0..5 {
        let (outcome, _) = run(&sh(root.path(), "true", Isolation::Userns));
        assert!(outcome.status.success());
    }
    let helpers = || -> Vec<String> {
        let pid = std::process::id();
        let mut found = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
        {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace() {
                let stat =
                    std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
                found.push(format!("{child}: {stat}"));
            }
        }
        found
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !helpers().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(helpers(), Vec::<String>::new());
}
