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
        (
            "host_stays_out_of_reach_as_root",
            host_stays_out_of_reach_as_root,
        ),
        (
            "host_stays_out_of_reach_unprivileged",
            host_stays_out_of_reach_unprivileged,
        ),
        ("capabilities_are_dockers", capabilities_are_dockers),
        (
            "the_report_names_the_confinement",
            the_report_names_the_confinement,
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

/// The host state the attacks aim at, made and checked by the test.
struct Targets {
    /// A freezer cgroup holding a host process the step tries to freeze.
    cgroup: std::path::PathBuf,
    victim: std::process::Child,
    stat_interval: String,
    /// The transparent hugepage mode the host has, and one the step tries to set.
    thp_before: Option<String>,
    thp_attempt: &'static str,
}

const STAT_INTERVAL: &str = "/proc/sys/vm/stat_interval";
const THP: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

impl Targets {
    fn new(name: &str) -> Targets {
        let cgroup = Path::new("/sys/fs/cgroup/freezer").join(format!("rbuild-{name}"));
        let _ = std::fs::create_dir(&cgroup);
        assert!(
            cgroup.join("freezer.state").exists(),
            "no v1 freezer cgroup at {}",
            cgroup.display()
        );
        let victim = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        std::fs::write(cgroup.join("cgroup.procs"), victim.id().to_string()).unwrap();
        let thp_before = std::fs::read_to_string(THP).ok();
        let thp_attempt = match &thp_before {
            Some(t) if t.contains("[never]") => "always",
            _ => "never",
        };
        Targets {
            cgroup,
            victim,
            stat_interval: std::fs::read_to_string(STAT_INTERVAL).unwrap(),
            thp_before,
            thp_attempt,
        }
    }

    /// One line per attack; each prints `LEAK:what` if the step got through, `BROKEN:what`
    /// if something a step needs stopped working.
    fn script(&self) -> String {
        let interval: u32 = self.stat_interval.trim().parse().unwrap();
        let freezer = Path::new("/sys/fs/cgroup/freezer")
            .join(self.cgroup.file_name().unwrap())
            .join("freezer.state");
        [
            format!(
                "echo {} > {STAT_INTERVAL} && echo LEAK:sysctl",
                interval + 6
            ),
            format!("echo {} > {THP} && echo LEAK:thp", self.thp_attempt),
            format!("echo FROZEN > {} && echo LEAK:freezer", freezer.display()),
            "echo h > /proc/sysrq-trigger && echo LEAK:sysrq".to_string(),
            "echo x > /devnodes/null3 && echo LEAK:rootfs-null".to_string(),
            "echo rbuild-confinement-test > /devnodes/kmsg && echo LEAK:rootfs-kmsg".to_string(),
            "echo x > /mnt/image/null3 && echo LEAK:bind-null".to_string(),
            "test \"$(head -c 1 /proc/timer_list | wc -c)\" = 0 || echo LEAK:timer_list"
                .to_string(),
            "test \"$(head -c 1 /proc/keys | wc -c)\" = 0 || echo LEAK:keys".to_string(),
            "test \"$(head -c 1 /proc/kcore | wc -c)\" = 0 || echo LEAK:kcore".to_string(),
            "test \"$(ls -A /sys/firmware | wc -l)\" = 0 || echo LEAK:firmware".to_string(),
            "grep -v ':/$' /proc/self/cgroup | sed 's/^/LEAK:cgroupns /'".to_string(),
            "echo x > /dev/null || echo BROKEN:dev-null".to_string(),
            "test \"$(head -c 4 /dev/zero | wc -c)\" = 4 || echo BROKEN:dev-zero".to_string(),
            "cat /proc/self/status > /dev/null || echo BROKEN:proc".to_string(),
            "echo DONE".to_string(),
        ]
        .join("; ")
    }

    /// Fails (after restoring the host) if any attack got through.
    fn check(mut self, who: &str, out: &str) {
        let interval = std::fs::read_to_string(STAT_INTERVAL).unwrap();
        let thp = std::fs::read_to_string(THP).ok();
        let frozen = std::fs::read_to_string(self.cgroup.join("freezer.state")).unwrap();
        self.restore();
        let alive = self.victim.try_wait().unwrap().is_none();
        assert!(
            out.contains("DONE"),
            "{who}: the step did not finish:\n{out}"
        );
        assert!(
            !out.contains("LEAK:") && !out.contains("BROKEN:"),
            "{who}:\n{out}"
        );
        assert_eq!(interval, self.stat_interval, "{who}: host sysctl changed");
        assert_eq!(thp, self.thp_before, "{who}: host THP mode changed");
        assert_eq!(frozen.trim(), "THAWED", "{who}: host cgroup frozen");
        assert!(alive, "{who}: the host process in the cgroup died");
    }
}

impl Targets {
    /// Puts the host back as it was, whatever the step did.
    fn restore(&self) {
        // A frozen process cannot even die: thaw first.
        let _ = std::fs::write(self.cgroup.join("freezer.state"), "THAWED");
        let _ = std::fs::write(STAT_INTERVAL, &self.stat_interval);
        if let Some(before) = &self.thp_before {
            if let Some(mode) = before.split('[').nth(1).and_then(|m| m.split(']').next()) {
                let _ = std::fs::write(THP, mode);
            }
        }
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        self.restore();
        let _ = self.victim.kill();
        let _ = self.victim.wait();
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

/// Device nodes an image could ship: null (1:3) and kmsg (1:11), mode 0666.
fn make_device_nodes(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, minor) in [("null3", 3), ("kmsg", 11)] {
        let path = rbuild_sandbox_cpath(&dir.join(name));
        // SAFETY: mknod with a NUL-terminated path.
        let r = unsafe {
            libc::mknod(
                path.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(1, minor),
            )
        };
        assert_eq!(r, 0, "mknod {name}: {}", std::io::Error::last_os_error());
        // SAFETY: as above; mknod's mode is filtered by the umask.
        unsafe { libc::chmod(path.as_ptr(), 0o666) };
    }
}

fn rbuild_sandbox_cpath(path: &Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// A busybox rootfs with device nodes in /devnodes, and a directory with device nodes to
/// bind at /mnt/image (as `RUN --mount=type=bind,from=IMAGE` does); both owned by `uid`.
fn attack_rootfs(dir: &Path, uid: u32) -> StepSpec {
    let root = dir.join("rootfs");
    std::fs::create_dir(&root).unwrap();
    busybox_rootfs(&root);
    make_device_nodes(&root.join("devnodes"));
    let image = dir.join("image");
    make_device_nodes(&image);
    chown_tree(dir, uid);
    let mut spec = sh(&root, "");
    spec.binds.push(rbuild_sandbox::BindMount {
        source: image,
        target: "/mnt/image".into(),
        readonly: false,
        remove_source: false,
        tmpfs_size: None,
    });
    spec
}

fn host_stays_out_of_reach_as_root() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = attack_rootfs(dir.path(), 0);
    let targets = Targets::new("confine-root");
    spec.argv[2] = targets.script();
    let (_, out) = run(&spec);
    targets.check("root", &out);
    // What Docker's containers get for a write to a kernel tunable.
    assert!(
        out.contains("stat_interval: Read-only file system"),
        "{out}"
    );
}

fn host_stays_out_of_reach_unprivileged() {
    require_root();
    for (user, range) in [("rbuildconf1", Some(300000)), ("rbuildconf2", None)] {
        let uid = ensure_user(user, range);
        let dir = tempfile::tempdir().unwrap();
        let mut spec = attack_rootfs(dir.path(), uid);
        let targets = Targets::new(&format!("confine-{user}"));
        spec.argv[2] = targets.script();
        let out = run_as(user, &spec, &[]);
        assert!(out.contains("OUTCOME"), "{user}: {out}");
        targets.check(user, &out);
    }
}

/// The capability lines of /proc/self/status, as `(name, mask)`.
fn cap_lines(out: &str) -> Vec<(String, u64)> {
    out.lines()
        .filter_map(|l| {
            let (name, hex) = l.split_once(":\t")?;
            name.starts_with("Cap").then(|| {
                (
                    name.to_string(),
                    u64::from_str_radix(hex.trim(), 16).unwrap(),
                )
            })
        })
        .collect()
}

fn capabilities_are_dockers() {
    require_root();
    let mask = rbuild_sandbox::caps::docker_cap_mask();
    assert_eq!(mask, 0xa804_25fb);
    let root = rootfs();
    // Things Docker's set does not allow: mounting, setting the hostname.
    let script = "grep ^Cap /proc/self/status; \
                  /bin/busybox mount -t tmpfs t /tmp 2>/dev/null && echo LEAK:mount; \
                  hostname other 2>/dev/null && echo LEAK:hostname; \
                  chown 123:456 /tmp && echo chown-ok";
    let (outcome, out) = run(&sh(root.path(), script));
    assert!(outcome.status.success(), "{out}");
    assert!(!out.contains("LEAK:"), "{out}");
    assert!(
        out.contains("chown-ok"),
        "CAP_CHOWN is in Docker's set: {out}"
    );
    let caps = cap_lines(&out);
    let expected = [
        ("CapInh", 0),
        ("CapPrm", mask),
        ("CapEff", mask),
        ("CapBnd", mask),
        ("CapAmb", 0),
    ];
    let expected: Vec<(String, u64)> = expected.iter().map(|(n, m)| (n.to_string(), *m)).collect();
    assert_eq!(caps, expected, "{out}");
    // Another user: nothing effective, the same bounding set (what a setuid program gets).
    let mut spec = sh(root.path(), "grep ^Cap /proc/self/status");
    spec.user = rbuild_sandbox::resolve_user(root.path(), "app").unwrap();
    let (_, out) = run(&spec);
    let caps = cap_lines(&out);
    assert!(caps.contains(&("CapEff".to_string(), 0)), "{out}");
    assert!(caps.contains(&("CapBnd".to_string(), mask)), "{out}");
    // A setuid-root program that user runs works as under `docker build`: busybox `su` to
    // a root without a password gives a root shell holding Docker's set, no more.
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(root.path().join("etc/shadow"), "root::19000:0:99999:7:::\n").unwrap();
    std::fs::set_permissions(
        root.path().join("bin/busybox"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let mut spec = sh(
        root.path(),
        "id -u; /bin/busybox su -c 'id -u; grep ^Cap /proc/self/status' root",
    );
    spec.user = rbuild_sandbox::resolve_user(root.path(), "app").unwrap();
    let (outcome, out) = run(&spec);
    assert!(outcome.status.success(), "{out}");
    assert!(out.starts_with("1000\n0\n"), "{out}");
    assert_eq!(cap_lines(&out), expected, "{out}");
    // Unprivileged users get the same set.
    for (user, range) in [("rbuildconf1", Some(300000)), ("rbuildconf2", None)] {
        let uid = ensure_user(user, range);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        busybox_rootfs(&root);
        chown_tree(dir.path(), uid);
        let out = run_as(user, &sh(&root, "grep ^Cap /proc/self/status"), &[]);
        let caps = cap_lines(&out);
        assert_eq!(caps, expected, "{user}: {out}");
    }
}

/// What `rbuild info` prints comes from the probe: as root on this host, userns steps whose
/// ids are an unprivileged range.
fn the_report_names_the_confinement() {
    require_root();
    let caps = Sandbox::new().probe();
    assert!(caps.checks.cgroupns.ok, "{:?}", caps.checks.cgroupns);
    let json = serde_json::to_value(caps).unwrap();
    let c = &json["confinement"];
    assert_eq!(c["isolation"], "userns", "{c:#}");
    // Root's range is the wide one or a 65536-id block, whichever the machine leaves free
    // (docs/sandbox.md, "Root's id range"); either maps container 0.. to unprivileged ids.
    let id_mapping = c["id_mapping"].as_str().unwrap();
    assert!(
        id_mapping.starts_with("container 0..")
            && id_mapping.contains(" = an unprivileged host range"),
        "{c:#}"
    );
    assert_eq!(c["cgroup_namespace"], true, "{c:#}");
    let names = |key: &str| -> Vec<String> {
        c[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: {c:#}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert!(names("masked_paths").contains(&"/proc/kcore".to_string()));
    assert!(names("readonly_paths").contains(&"/proc/sys".to_string()));
    let capabilities = names("capabilities");
    assert_eq!(capabilities.len(), 14, "{capabilities:?}");
    assert!(capabilities.contains(&"CAP_NET_BIND_SERVICE".to_string()));
    assert!(!capabilities.contains(&"CAP_SYS_ADMIN".to_string()));
    // The keys the seccomp and Landlock support fill.
    let keys = c.as_object().unwrap();
    assert!(
        keys.contains_key("seccomp") && keys.contains_key("landlock"),
        "{c:#}"
    );
}
