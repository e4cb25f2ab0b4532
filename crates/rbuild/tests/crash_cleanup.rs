//! What a build leaves when it is killed, interrupted or runs out of space: builds killed
//! with SIGKILL at random moments (a secret from the environment, a registry cache export)
//! leave nothing after the next command and `rbuild prune`; SIGINT, SIGTERM and SIGHUP say
//! "cancelled", stop the step and exit 130 / 143 / 129 with nothing left behind; a store on a full
//! file system gives a clean error (no panic), still passes `rbuild fsck`, and builds again
//! once there is room. Runs as root (CI does).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rbuild_testutil::{busybox_rootfs, require_root, Registry};

mod common;
use common::{ok, rbuild};

/// Builds `busybox:latest` into the store at `root` (which may already exist).
fn add_busybox(root: &Path) {
    let ctx = tempfile::tempdir().unwrap();
    busybox_rootfs(&ctx.path().join("rootfs"));
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD [\"sh\"]\n",
    )
    .unwrap();
    ok(rbuild(root)
        .args(["-q", "-t", "busybox:latest"])
        .arg(ctx.path())
        .output()
        .unwrap());
}

fn context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    ctx
}

/// A value no file on this machine holds by chance.
fn secret_value(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("s3cr3t-{tag}-{}-{nanos}", std::process::id())
}

/// Every regular file under `dir` (not following symlinks) whose content holds `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if meta.is_file() {
            if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path);
                }
            }
        }
    }
    found
}

/// Where a secret could be left: the store and the memory file systems rbuild uses.
fn secret_leftovers(root: &Path, value: &str) -> Vec<PathBuf> {
    let mut found = files_containing(root, value.as_bytes());
    found.extend(files_containing(Path::new("/dev/shm"), value.as_bytes()));
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
        found.extend(files_containing(Path::new(&runtime), value.as_bytes()));
    }
    found
}

/// The entries of `<root>/<dir>` (none if it does not exist).
fn entries(root: &Path, dir: &str) -> Vec<PathBuf> {
    match std::fs::read_dir(root.join(dir)) {
        Ok(list) => list.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Pids of processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(marker) {
                pids.push(pid);
            }
        }
    }
    pids
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `pid` and its descendants are doing (state and kernel wait channel), for a
/// failure message.
fn process_tree(pid: u32) -> String {
    let describe = |p: u32| {
        let read = |f: &str| std::fs::read_to_string(format!("/proc/{p}/{f}")).unwrap_or_default();
        let state = read("status")
            .lines()
            .find(|l| l.starts_with("State:"))
            .unwrap_or_default()
            .to_string();
        format!(
            "{p} {} [{state}] wchan={}",
            read("cmdline").replace('\0', " "),
            read("wchan")
        )
    };
    let mut lines = vec![describe(pid)];
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
        lines.push(process_tree(child));
    }
    lines.join("\n")
}

/// Gives SIGINT and SIGHUP their default action in this process, so that the builds it
/// starts get them so too. A test run in the background of a non-interactive shell
/// (`cmd &`) or under `nohup` inherits them ignored, and rbuild rightly keeps a signal its
/// parent ignores ignored (`cmd/cancel.rs`): the signal tests would then wait on a build
/// that cannot be interrupted.
fn default_signal_actions() {
    for signal in [libc::SIGINT, libc::SIGHUP] {
        // SAFETY: signal(2) with SIG_DFL installs no handler; it only changes this
        // process's disposition, which its children inherit.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
}

/// Waits for `child` to exit (at most two minutes: a loaded machine is slow, a hang is
/// not); its exit code, or 128 + the signal.
fn wait_code(child: &mut Child) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        }
        if start.elapsed() > Duration::from_secs(120) {
            let tree = process_tree(child.id());
            let _ = child.kill();
            panic!("rbuild did not exit within two minutes:\n{tree}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text);
    }
    text
}

fn fsck_clean(root: &Path) {
    let out = rbuild(root).arg("fsck").output().unwrap();
    assert!(
        out.status.success(),
        "fsck found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigint_and_sigterm_cancel_the_build_and_leave_nothing() {
    require_root("native builds in this test");
    default_signal_actions();
    let root = tempfile::tempdir().unwrap();
    add_busybox(root.path());
    // (signal, to the whole process group as a terminal's Ctrl-C does, exit code)
    for (signal, group, code) in [
        (libc::SIGINT, false, 130),
        (libc::SIGTERM, false, 143),
        (libc::SIGINT, true, 130),
        (libc::SIGHUP, false, 129),
    ] {
        let value = secret_value("signal");
        let marker = format!("marker-{signal}-{}", std::process::id());
        let ctx = context(&format!(
            "FROM busybox\n\
             RUN --mount=type=secret,id=token test -s /run/secrets/token && sleep 300 && echo {marker}\n"
        ));
        use std::os::unix::process::CommandExt;
        let mut child = rbuild(root.path())
            .process_group(0)
            .args([
                "build",
                "--progress",
                "plain",
                "--secret",
                "id=token,env=RB_TEST_TOKEN",
            ])
            .arg(ctx.path())
            .env("RB_TEST_TOKEN", &value)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The step is running (its shell carries the marker) with the secret mounted.
        wait_until("the step to start", Duration::from_secs(60), || {
            !processes_with(&marker).is_empty()
        });
        let build_dirs = entries(root.path(), "build");
        assert!(!build_dirs.is_empty());
        let secrets = secret_leftovers(root.path(), &value);
        assert!(
            !secrets.is_empty(),
            "the secret should exist while the build runs"
        );
        // Another command sweeps what dead builds left: a live build's directories and
        // secrets are not that, and the build goes on.
        fsck_clean(root.path());
        ok(rbuild(root.path()).arg("prune").output().unwrap());
        assert_eq!(entries(root.path(), "build"), build_dirs);
        assert_eq!(secret_leftovers(root.path(), &value), secrets);
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build should still run"
        );
        let target = if group {
            -(child.id() as libc::pid_t)
        } else {
            child.id() as libc::pid_t
        };
        // SAFETY: kill(2) on our own child's pid, or its own process group.
        unsafe { libc::kill(target, signal) };
        let exit = wait_code(&mut child);
        let log = stderr_of(&mut child);
        assert_eq!(exit, code, "signal {signal} (group: {group}): {log}");
        assert!(log.contains("cancelled"), "signal {signal}: {log}");
        assert!(!log.contains("panicked"), "{log}");
        assert!(!log.contains(&value), "the secret value was printed: {log}");
        wait_until(
            "the step's processes to end",
            Duration::from_secs(10),
            || processes_with(&marker).is_empty(),
        );
        assert_eq!(
            entries(root.path(), "build"),
            Vec::<PathBuf>::new(),
            "{log}"
        );
        assert_eq!(secret_leftovers(root.path(), &value), Vec::<PathBuf>::new());
    }
    fsck_clean(root.path());
}

/// A tiny xorshift generator: random moments without a crate.
struct Random(u64);

impl Random {
    fn seeded() -> Random {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Random(nanos | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// How many builds to kill; `RBUILD_CRASH_KILLS` runs more by hand.
fn kill_count() -> usize {
    std::env::var("RBUILD_CRASH_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5)
}

#[test]
fn builds_killed_at_random_moments_leave_nothing_after_prune() {
    require_root("native builds in this test");
    let registry = Registry::start();
    let root = tempfile::tempdir().unwrap();
    add_busybox(root.path());
    let cache = format!("{}/cache/crash", registry.host());
    // Several layers of incompressible data, a secret in one step, a second stage: there is
    // work (and files, and a cache export) at every moment a kill may land. The last step
    // lasts longer than the latest kill (4.2 s), so a fast machine does not finish builds
    // before they are killed.
    let ctx = context(
        "FROM busybox AS tools\n\
         ARG ROUND\n\
         RUN head -c 3000000 /dev/urandom > /tool && echo $ROUND > /round\n\
         FROM busybox\n\
         ARG ROUND\n\
         RUN --mount=type=secret,id=token test -s /run/secrets/token && head -c 4000000 /dev/urandom > /a\n\
         COPY --from=tools /tool /tool\n\
         RUN for i in 1 2 3 4 5 6 7 8; do head -c 500000 /dev/urandom > /f$i; done && echo $ROUND\n\
         RUN sleep 5 && head -c 2000000 /dev/urandom > /b\n",
    );
    let value = secret_value("kill");
    let build = |round: usize| {
        let mut command = rbuild(root.path());
        command
            .args(["build", "--progress", "plain", "-t", "crash:latest"])
            .args(["--secret", "id=token,env=RB_TEST_TOKEN"])
            .args(["--build-arg", &format!("ROUND={round}")])
            .args(["--cache-to", &format!("type=registry,ref={cache},mode=max")])
            .arg(ctx.path())
            .env("RB_TEST_TOKEN", &value)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };
    let mut random = Random::seeded();
    let kills = kill_count();
    let mut killed_running = 0;
    for round in 0..kills {
        let mut child = build(round).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(200 + random.below(4000)));
        // SIGKILL: no handler runs, nothing is cleaned up by the build itself.
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        killed_running * 2 >= kills,
        "most builds should have been killed while running ({killed_running} of {kills})"
    );
    let out = ok(rbuild(root.path()).arg("prune").output().unwrap());
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        entries(root.path(), "build"),
        Vec::<PathBuf>::new(),
        "prune said: {said}"
    );
    assert_eq!(
        entries(root.path(), "trash"),
        Vec::<PathBuf>::new(),
        "{said}"
    );
    assert_eq!(secret_leftovers(root.path(), &value), Vec::<PathBuf>::new());
    // No scratch directory either (only temp blob files, collected 30 s after their
    // writer died, may remain).
    let scratch: Vec<PathBuf> = entries(root.path(), "tmp")
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(scratch, Vec::<PathBuf>::new(), "{said}");
    fsck_clean(root.path());
    // The next build succeeds, cache export included, and leaves no build directory.
    let out = build(kills).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(entries(root.path(), "build"), Vec::<PathBuf>::new());
    assert_eq!(secret_leftovers(root.path(), &value), Vec::<PathBuf>::new());
    fsck_clean(root.path());
}

/// A tmpfs of `size` mounted on a new directory; unmounted on drop.
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    fn mount(size: &str) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs needs root");
        SmallFs(dir)
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.0.path())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_store_is_a_clean_error_and_still_passes_fsck() {
    require_root("mounting a small tmpfs for the store");
    let fs = SmallFs::mount("48m");
    let root = fs.path().join("store");
    add_busybox(&root);
    // The step fits (about 30 MB in the build's root filesystem); its layer, as much again
    // and incompressible, does not.
    let ctx = context("FROM busybox\nRUN head -c 30000000 /dev/urandom > /big\n");
    let out = rbuild(&root)
        .args(["build", "--progress", "plain", "-t", "big:1"])
        .arg(ctx.path())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the build should not fit: {log}");
    assert_ne!(out.status.code(), Some(101), "rbuild panicked: {log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("No space left on device"), "{log}");
    assert!(
        log.contains(&root.display().to_string()) && log.contains("needed more than"),
        "the error should name the file and the space it needed: {log}"
    );
    fsck_clean(&root);
    assert!(fails_to_resolve(&root, "big:1"));
    // With room, the same build succeeds on the same store.
    fs.resize("160m");
    ok(rbuild(&root)
        .args(["build", "-q", "-t", "big:1"])
        .arg(ctx.path())
        .output()
        .unwrap());
    fsck_clean(&root);
}

/// Whether `rbuild inspect NAME` fails (no such image).
fn fails_to_resolve(root: &Path, name: &str) -> bool {
    !rbuild(root)
        .args(["inspect", name])
        .output()
        .unwrap()
        .status
        .success()
}

/// A user with subordinate ids for the rootless test (its own name and range).
const ROOTLESS_USER: &str = "rbuildcrash";
const ROOTLESS_SUB_START: u32 = 600_000;

/// A user with subordinate ids, a store of its own (at `store`, created here unless it
/// exists) holding busybox, and a context directory it owns.
struct Rootless {
    /// Holds the binary, the context and the home directory.
    _work: tempfile::TempDir,
    bin: PathBuf,
    uid: u32,
    gid: u32,
    store: PathBuf,
    ctx: PathBuf,
    home: PathBuf,
}

impl Rootless {
    fn new(store: Option<PathBuf>) -> Rootless {
        use std::os::unix::fs::PermissionsExt;
        require_root("creating a user with a subordinate id range in this test");
        rbuild_testutil::require_binary("/usr/bin/newuidmap", "uidmap");
        rbuild_testutil::require_binary("/usr/bin/setpriv", "util-linux");
        let (uid, gid) = common::test_user(ROOTLESS_USER, Some((ROOTLESS_SUB_START, 65_536)));
        let (work, bin) = common::user_workspace();
        // The base, built and saved by root, loaded by the user.
        let root_store = work.path().join("root-store");
        add_busybox(&root_store);
        let archive = work.path().join("base.tar");
        ok(rbuild(&root_store)
            .args(["save", "busybox:latest", "-o"])
            .arg(&archive)
            .output()
            .unwrap());
        std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = store.unwrap_or_else(|| work.path().join("store"));
        let ctx = work.path().join("ctx");
        let home = work.path().join("home");
        for dir in [&store, &ctx, &home] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let owned = Command::new("chown")
            .args(["-R", &format!("{uid}:{gid}")])
            .args([&store, &ctx, &home])
            .status()
            .unwrap();
        assert!(owned.success());
        let user = Rootless {
            _work: work,
            bin,
            uid,
            gid,
            store,
            ctx,
            home,
        };
        ok(user
            .rbuild(&["load", "-i", archive.to_str().unwrap()])
            .output()
            .unwrap());
        user
    }

    /// rbuild as the user on its store. setpriv execs rbuild itself, so the child's pid is
    /// rbuild's.
    fn rbuild(&self, args: &[&str]) -> Command {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid",
                &self.uid.to_string(),
                "--regid",
                &self.gid.to_string(),
            ])
            .args(["--clear-groups", "--"])
            .arg(&self.bin)
            .arg("--root")
            .arg(&self.store)
            .args(args)
            .env("HOME", &self.home)
            .env("TMPDIR", &self.home)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("RBUILD_ENGINE");
        command
    }
}

#[test]
fn rootless_builds_killed_or_cancelled_leave_nothing_after_prune() {
    default_signal_actions();
    let user = Rootless::new(None);
    let (store, ctx) = (user.store.as_path(), user.ctx.as_path());
    let as_user = |args: &[&str]| user.rbuild(args);
    let marker = format!("rootless-marker-{}", std::process::id());
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM busybox\n\
             RUN mkdir /owned && chown 1000:1000 /owned && echo data > /owned/f\n\
             RUN --mount=type=secret,id=token grep -q s3cr3t /run/secrets/token && sleep 300 && echo {marker}\n"
        ),
    )
    .unwrap();
    for how in ["kill -9", "SIGINT"] {
        let value = secret_value("rootless");
        let mut child = as_user(&[
            "build",
            "--progress",
            "plain",
            "--secret",
            "id=token,env=RB_TEST_TOKEN",
        ])
        .arg(ctx)
        .env("RB_TEST_TOKEN", &value)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        wait_until(
            "the rootless step to start",
            Duration::from_secs(120),
            || !processes_with(&marker).is_empty(),
        );
        let secret_dirs = secret_leftovers(store, &value);
        assert!(
            !secret_dirs.is_empty() && secret_dirs.iter().all(|p| !p.starts_with(store)),
            "the secret should be on a memory file system while the build runs: {secret_dirs:?}"
        );
        let signal = if how == "SIGINT" {
            libc::SIGINT
        } else {
            libc::SIGKILL
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let exit = wait_code(&mut child);
        let log = stderr_of(&mut child);
        if how == "SIGINT" {
            assert_eq!(exit, 130, "{log}");
            assert!(log.contains("cancelled"), "{log}");
            // Nothing of the build is left where builds run, and no secret anywhere.
            assert_eq!(entries(store, "build"), Vec::<PathBuf>::new(), "{log}");
            assert_eq!(secret_leftovers(store, &value), Vec::<PathBuf>::new());
        }
        wait_until(
            "the step's processes to end",
            Duration::from_secs(10),
            || processes_with(&marker).is_empty(),
        );
        // The user's prune removes the rest, files of subordinate ids included.
        let out = as_user(&["prune"]).output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{how}: {said}");
        assert_eq!(
            entries(store, "build"),
            Vec::<PathBuf>::new(),
            "{how}: {said}"
        );
        assert_eq!(
            entries(store, "trash"),
            Vec::<PathBuf>::new(),
            "{how}: {said}"
        );
        assert_eq!(
            secret_leftovers(store, &value),
            Vec::<PathBuf>::new(),
            "{how}"
        );
        let fsck = as_user(&["fsck"]).output().unwrap();
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stdout)
        );
    }
}

#[test]
fn a_killed_build_leaves_no_ssh_agent_and_no_agent_directory() {
    require_root("native builds in this test");
    let root = tempfile::tempdir().unwrap();
    add_busybox(root.path());
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("crash-key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "crash-key", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (openssh-client) is installed");
    assert!(status.success());
    let marker = format!("ssh-marker-{}", std::process::id());
    let ctx = context(&format!(
        "FROM busybox\nRUN --mount=type=ssh test -S $SSH_AUTH_SOCK && sleep 300 && echo {marker}\n"
    ));
    let mut child = rbuild(root.path())
        .args(["build", "--progress", "plain", "--ssh"])
        .arg(format!("default={}", key.display()))
        .arg(ctx.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the step to start", Duration::from_secs(60), || {
        !processes_with(&marker).is_empty()
    });
    let prefix = format!("rbuild-ssh-{}-", child.id());
    let agent_dirs = || -> Vec<PathBuf> {
        entries(root.path(), "tmp")
            .into_iter()
            .chain(
                std::fs::read_dir(std::env::temp_dir())
                    .unwrap()
                    .flatten()
                    .map(|e| e.path()),
            )
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
            .collect()
    };
    let dirs = agent_dirs();
    assert_eq!(dirs.len(), 1, "one agent directory while the build runs");
    let socket = dirs[0].join("agent.sock").display().to_string();
    assert!(
        !processes_with(&socket).is_empty(),
        "the agent runs on {socket}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The agent, holding the key, dies with the build; the next command removes its files.
    wait_until("the agent to end", Duration::from_secs(10), || {
        processes_with(&socket).is_empty()
    });
    ok(rbuild(root.path()).arg("images").output().unwrap());
    assert_eq!(agent_dirs(), Vec::<PathBuf>::new());
}

#[test]
fn a_full_rootless_store_is_a_clean_error_and_still_passes_fsck() {
    let fs = SmallFs::mount("48m");
    let user = Rootless::new(Some(fs.path().join("store")));
    std::fs::write(
        user.ctx.join("Dockerfile"),
        "FROM busybox\nRUN head -c 30000000 /dev/urandom > /big\n",
    )
    .unwrap();
    let ctx = user.ctx.to_str().unwrap();
    let out = user
        .rbuild(&["build", "--progress", "plain", "-t", "big:1", ctx])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the build should not fit: {log}");
    assert_ne!(out.status.code(), Some(101), "rbuild panicked: {log}");
    assert!(!log.contains("panicked"), "{log}");
    // Container root writes the layer into a pipe: the store's error, not the pipe's.
    assert!(log.contains("No space left on device"), "{log}");
    assert!(!log.contains("Broken pipe"), "{log}");
    assert!(log.contains("needed more than"), "{log}");
    let fsck = user.rbuild(&["fsck"]).output().unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    fs.resize("160m");
    let out = user
        .rbuild(&["build", "-q", "-t", "big:1", ctx])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fsck = user.rbuild(&["fsck"]).output().unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

/// Runs a build whose step holds a secret from a file (outside the store and the memory file
/// systems) mounted with an owner and mode of its own, and checks, while the step runs, that
/// the step reads it as asked but no copy of it is left on any file system rbuild writes to:
/// the step's init unlinked the copy once mounted, so a kill -9 from then on leaves nothing.
fn check_secret_copy_unlinked(
    mut build: Command,
    secret_file: &Path,
    store: &Path,
    marker: &str,
    value: &str,
) {
    let mut child = build
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the step to start", Duration::from_secs(120), || {
        !processes_with(marker).is_empty() || child.try_wait().unwrap().is_some()
    });
    let running = child.try_wait().unwrap().is_none();
    let leftovers = secret_leftovers(store, value);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let exit = wait_code(&mut child);
    let log = stderr_of(&mut child);
    assert!(running, "the step should have reached its sleep: {log}");
    assert_eq!(
        leftovers,
        Vec::<PathBuf>::new(),
        "a copy of the secret outlived its mount: {log}"
    );
    assert_eq!(exit, 143, "{log}");
    assert!(std::fs::read_to_string(secret_file)
        .unwrap()
        .contains(value));
}

/// The step's view of the secret, checked by the step itself: its content, and the owner and
/// mode the mount asked for. The shell's `$0` carries the marker the test waits for.
fn secret_step(marker: &str, value: &str) -> String {
    format!(
        "FROM busybox\n\
         RUN --mount=type=secret,id=token,uid=1000,gid=10,mode=0440 sh -c 'test \"$(cat /run/secrets/token)\" = {value} && test \"$(stat -c %u:%g:%a /run/secrets/token)\" = 1000:10:440 && sleep 300; exit 1' {marker}\n"
    )
}

#[test]
fn a_steps_secret_copy_is_unlinked_before_its_command_runs() {
    require_root("native builds in this test");
    let root = tempfile::tempdir().unwrap();
    add_busybox(root.path());
    let value = secret_value("unlinked");
    let marker = format!("root-secret-marker-{}", std::process::id());
    let ctx = context(&secret_step(&marker, &value));
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("token");
    std::fs::write(&secret_file, &value).unwrap();
    let mut build = rbuild(root.path());
    build
        .args(["build", "--progress", "plain", "--secret"])
        .arg(format!("id=token,src={}", secret_file.display()))
        .arg(ctx.path());
    check_secret_copy_unlinked(build, &secret_file, root.path(), &marker, &value);
}

#[test]
fn a_rootless_steps_secret_copy_is_unlinked_before_its_command_runs() {
    use std::os::unix::fs::PermissionsExt;
    let user = Rootless::new(None);
    let value = secret_value("rootless-unlinked");
    let marker = format!("user-secret-marker-{}", std::process::id());
    std::fs::write(user.ctx.join("Dockerfile"), secret_step(&marker, &value)).unwrap();
    let secret_file = user.home.join("token");
    std::fs::write(&secret_file, &value).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut build = user.rbuild(&["build", "--progress", "plain", "--secret"]);
    build
        .arg(format!("id=token,src={}", secret_file.display()))
        .arg(&user.ctx);
    check_secret_copy_unlinked(build, &secret_file, &user.store, &marker, &value);
}
