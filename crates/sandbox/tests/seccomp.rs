//! The seccomp filter of real steps (no mocks): Docker's default profile refuses what it
//! refuses under `docker build`, ordinary work still runs, setuid programs keep working, and
//! chroot isolation refuses more. Needs root (CI runs it as root), busybox-static, gcc (with
//! the static glibc of libc6-dev), uidmap and util-linux's runuser.
//!
//! This binary is also the sandbox helper (`__rbuild-sandbox-helper`) and a driver
//! (`__driver SPEC_JSON`) run as an unprivileged user.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rbuild_sandbox::test_support::{busybox_rootfs, require_root, run_tests};
use rbuild_sandbox::{Isolation, OutputStream, Rootfs, Sandbox, Seccomp, StepOutcome, StepSpec};

const DRIVER_ARG: &str = "__driver";

/// A static program that tries one syscall per argument and prints `NAME=ok` or
/// `NAME=errno:N`, so the tests see exactly what the kernel answered.
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static void *thread_main(void *arg) { return arg; }

static long try_one(const char *name) {
    if (!strcmp(name, "keyctl")) return syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0);
    if (!strcmp(name, "add_key")) return syscall(SYS_add_key, "user", "k", "v", 1, -3);
    if (!strcmp(name, "clone3")) return syscall(SYS_clone3, NULL, 0);
    if (!strcmp(name, "clone_newuser")) {
        long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (pid == 0) _exit(0);
        return pid > 0 ? 0 : -1;
    }
    if (!strcmp(name, "unshare_newns")) return unshare(CLONE_NEWNS);
    if (!strcmp(name, "personality_query")) return syscall(SYS_personality, 0xffffffffUL) < 0 ? -1 : 0;
    if (!strcmp(name, "personality_no_aslr")) return syscall(SYS_personality, 0x0040000UL);
    if (!strcmp(name, "vsock")) return socket(40 /* AF_VSOCK */, SOCK_STREAM, 0);
    if (!strcmp(name, "unix_socket")) return socket(AF_UNIX, SOCK_STREAM, 0);
    if (!strcmp(name, "bpf")) return syscall(SYS_bpf, 0, NULL, 0);
    if (!strcmp(name, "perf_event_open")) return syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0);
    if (!strcmp(name, "ptrace_traceme")) return ptrace(PTRACE_TRACEME, 0, 0, 0);
    if (!strcmp(name, "process_vm_readv")) {
        char src[4] = "abc", dst[4];
        struct iovec local = {dst, 4}, remote = {src, 4};
        return syscall(SYS_process_vm_readv, getpid(), &local, 1, &remote, 1, 0);
    }
    if (!strcmp(name, "chroot")) return chroot("/");
    if (!strcmp(name, "thread")) {
        pthread_t t;
        int e = pthread_create(&t, NULL, thread_main, NULL);
        if (e) { errno = e; return -1; }
        return pthread_join(t, NULL);
    }
    if (!strcmp(name, "x32_getpid")) return syscall(0x40000000 | SYS_getpid);
    if (!strcmp(name, "i386_getpid")) {
        long ret = 20; /* __NR_getpid on i386 */
        __asm__ volatile("int $0x80" : "+a"(ret) : : "memory");
        if (ret < 0) { errno = -ret; return -1; }
        return 0;
    }
    if (!strcmp(name, "euid")) { printf("euid=%d\n", geteuid()); return 0; }
    if (!strcmp(name, "nnp")) { printf("nnp=%d\n", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)); return 0; }
    fprintf(stderr, "unknown probe %s\n", name);
    _exit(2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        errno = 0;
        long r = try_one(argv[i]);
        if (r < 0) printf("%s=errno:%d\n", argv[i], errno);
        else printf("%s=ok\n", argv[i]);
        fflush(stdout);
    }
    return 0;
}
"#;

fn main() -> ExitCode {
    rbuild_sandbox::maybe_run_helper();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(DRIVER_ARG) {
        return driver(&args[2]);
    }
    let result = run_tests(&[
        (
            "ordinary_work_runs_under_the_filter_userns",
            ordinary_work_runs_under_the_filter_userns,
        ),
        (
            "ordinary_work_runs_under_the_filter_chroot",
            ordinary_work_runs_under_the_filter_chroot,
        ),
        (
            "docker_default_refusals_userns",
            docker_default_refusals_userns,
        ),
        (
            "docker_default_refusals_chroot",
            docker_default_refusals_chroot,
        ),
        (
            "chroot_isolation_refuses_ptrace_and_chroot",
            chroot_isolation_refuses_ptrace_and_chroot,
        ),
        (
            "non_native_syscall_abis_are_refused",
            non_native_syscall_abis_are_refused,
        ),
        (
            "setuid_programs_work_without_no_new_privs_as_root",
            setuid_programs_work_without_no_new_privs_as_root,
        ),
        (
            "setuid_programs_work_rootless_with_subuid_range",
            setuid_programs_work_rootless_with_subuid_range,
        ),
        (
            "unconfined_runs_without_a_filter",
            unconfined_runs_without_a_filter,
        ),
        ("overhead_of_the_filter", overhead_of_the_filter),
    ]);
    if let Some(dir) = PROBE.get().and_then(|probe| probe.parent()) {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

/// Runs the spec given as JSON and prints the output, then `OUTCOME code=...`.
fn driver(spec_json: &str) -> ExitCode {
    let spec: StepSpec = serde_json::from_str(spec_json).expect("driver spec");
    let mut out = |_: OutputStream, bytes: &[u8]| {
        use std::io::Write;
        let _ = std::io::stdout().write_all(bytes);
    };
    match Sandbox::new().run(&spec, &mut out) {
        Ok(outcome) => {
            println!("\nOUTCOME code={:?}", outcome.status.code);
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("\nERROR {e}");
            ExitCode::from(3)
        }
    }
}

/// The compiled probe (in a directory of its own, removed when the tests end).
static PROBE: OnceLock<PathBuf> = OnceLock::new();

/// The probe, compiled once per test process.
fn probe_binary() -> &'static Path {
    PROBE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rbuild-seccomp-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("probe.c");
        std::fs::write(&source, PROBE_C).unwrap();
        let binary = dir.join("probe");
        let out = Command::new("gcc")
            .args(["-static", "-O1", "-pthread", "-o"])
            .arg(&binary)
            .arg(&source)
            .output()
            .expect("gcc is needed to build the syscall probe");
        assert!(
            out.status.success(),
            "compiling the probe: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        binary
    })
}

/// A busybox rootfs with the probe as /bin/probe and the applets these tests use.
fn rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fill_rootfs(dir.path());
    dir
}

fn fill_rootfs(root: &Path) {
    busybox_rootfs(root);
    for applet in ["unshare", "mount", "umount", "su", "nsenter"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::create_dir_all(root.join("mnt")).unwrap();
    std::fs::copy(probe_binary(), root.join("bin/probe")).unwrap();
}

fn sh(root: &Path, script: &str, isolation: Isolation) -> StepSpec {
    let mut spec = StepSpec::new(
        Rootfs::Dir(root.to_path_buf()),
        vec!["/bin/sh".into(), "-c".into(), script.into()],
    );
    spec.isolation = isolation;
    spec
}

fn run_with(sandbox: &Sandbox, spec: &StepSpec) -> (StepOutcome, String) {
    let mut output = Vec::new();
    let outcome = sandbox
        .run(spec, &mut |_, b| output.extend_from_slice(b))
        .unwrap_or_else(|e| panic!("step {:?} could not run: {e}", spec.argv));
    (outcome, String::from_utf8_lossy(&output).into_owned())
}

fn run(spec: &StepSpec) -> (StepOutcome, String) {
    run_with(&Sandbox::new(), spec)
}

/// Runs the probe for `names` and returns each answer (`ok` or `errno:N`).
fn probe(root: &Path, isolation: Isolation, names: &[&str]) -> Vec<(String, String)> {
    let script = format!("/bin/probe {}", names.join(" "));
    let (outcome, out) = run(&sh(root, &script, isolation));
    assert!(outcome.status.success(), "{isolation}: {out}");
    names
        .iter()
        .map(|name| {
            let answer = out
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("{isolation}: no answer for {name}: {out}"));
            (name.to_string(), answer.to_string())
        })
        .collect()
}

fn answers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

const EPERM: &str = "errno:1";

fn ordinary_work_runs_under_the_filter(isolation: Isolation) {
    require_root();
    let root = rootfs();
    let script = "set -e; ls / >/dev/null; cat /etc/passwd >/dev/null; \
                  echo $(echo from a subshell) | grep -q subshell; sleep 0 & wait; \
                  mkdir /tmp/d; chown 1000:1000 /tmp/d; stat -c %u:%g /tmp/d; \
                  echo data > /tmp/d/f; chmod 600 /tmp/d/f; cp /tmp/d/f /tmp/g; cat /tmp/g";
    let (outcome, out) = run(&sh(root.path(), script, isolation));
    assert!(outcome.status.success(), "{isolation}: {out}");
    assert!(out.contains("1000:1000") && out.contains("data"), "{out}");
    // glibc tries clone3 first for threads and falls back to clone on ENOSYS; EPERM would
    // break every threaded program.
    assert_eq!(
        probe(
            root.path(),
            isolation,
            &["thread", "clone3", "unix_socket", "personality_query"]
        ),
        answers(&[
            ("thread", "ok"),
            ("clone3", "errno:38"),
            ("unix_socket", "ok"),
            ("personality_query", "ok"),
        ])
    );
}

fn ordinary_work_runs_under_the_filter_userns() {
    ordinary_work_runs_under_the_filter(Isolation::Userns);
}

fn ordinary_work_runs_under_the_filter_chroot() {
    ordinary_work_runs_under_the_filter(Isolation::Chroot);
}

fn docker_default_refusals(isolation: Isolation) {
    require_root();
    let root = rootfs();
    let (_, out) = run(&sh(
        root.path(),
        "unshare -U true; echo unshare=$?; mount -t tmpfs none /mnt; echo mount=$?; \
         umount /proc 2>&1; echo umount=$?; nsenter -t 1 -m true; echo nsenter=$?",
        isolation,
    ));
    for line in [
        "unshare(0x10000000): Operation not permitted",
        "unshare=1",
        "mount: permission denied",
        "mount=1",
        "can't unmount /proc: Operation not permitted",
        "umount=1",
        "nsenter=1",
    ] {
        assert!(out.contains(line), "{isolation}: {line}: {out}");
    }
    let names = [
        "keyctl",
        "add_key",
        "clone_newuser",
        "unshare_newns",
        "personality_no_aslr",
        "vsock",
        "bpf",
        "perf_event_open",
    ];
    let expected: Vec<(&str, &str)> = names.iter().map(|n| (*n, EPERM)).collect();
    assert_eq!(probe(root.path(), isolation, &names), answers(&expected));
}

fn docker_default_refusals_userns() {
    docker_default_refusals(Isolation::Userns);
}

fn docker_default_refusals_chroot() {
    docker_default_refusals(Isolation::Chroot);
}

fn chroot_isolation_refuses_ptrace_and_chroot() {
    require_root();
    let root = rootfs();
    let names = ["ptrace_traceme", "process_vm_readv", "chroot"];
    // Docker allows these inside its own namespaces; so does a userns step.
    assert_eq!(
        probe(root.path(), Isolation::Userns, &names),
        answers(&[
            ("ptrace_traceme", "ok"),
            ("process_vm_readv", "ok"),
            ("chroot", "ok"),
        ])
    );
    // A chroot step shares rbuild's namespaces: they would reach rbuild itself.
    assert_eq!(
        probe(root.path(), Isolation::Chroot, &names),
        answers(&[
            ("ptrace_traceme", EPERM),
            ("process_vm_readv", EPERM),
            ("chroot", EPERM),
        ])
    );
}

fn non_native_syscall_abis_are_refused() {
    require_root();
    let root = rootfs();
    for isolation in [Isolation::Userns, Isolation::Chroot] {
        assert_eq!(
            probe(root.path(), isolation, &["x32_getpid"]),
            answers(&[("x32_getpid", EPERM)]),
            "{isolation}"
        );
        // i386 syscalls (int 0x80) fail seccompiler's architecture check: the process is killed.
        let (outcome, out) = run(&sh(
            root.path(),
            "/bin/probe i386_getpid; echo status=$?",
            isolation,
        ));
        assert!(outcome.status.success(), "{out}");
        assert!(
            out.contains(&format!("status={}", 128 + libc::SIGSYS)),
            "{isolation}: {out}"
        );
        assert!(!out.contains("i386_getpid="), "{isolation}: {out}");
    }
}

/// The probe made setuid root in `root`, run as uid 1000 (`app`).
fn setuid_probe_as_app(root: &Path, isolation: Isolation) -> StepSpec {
    let mut spec = StepSpec::new(
        Rootfs::Dir(root.to_path_buf()),
        vec!["/bin/probe-suid".into(), "euid".into(), "nnp".into()],
    );
    spec.isolation = isolation;
    spec.user.uid = 1000;
    spec.user.gid = 1000;
    spec
}

fn setuid_programs_work_without_no_new_privs_as_root() {
    require_root();
    let root = rootfs();
    let suid = root.path().join("bin/probe-suid");
    std::fs::copy(probe_binary(), &suid).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    for isolation in [Isolation::Userns, Isolation::Chroot] {
        let (outcome, out) = run(&setuid_probe_as_app(root.path(), isolation));
        assert!(outcome.status.success(), "{out}");
        assert!(
            out.contains("euid=0") && out.contains("nnp=0"),
            "{isolation}: {out}"
        );
    }
    // busybox su as root (no password asked) also switches users under the filter.
    let (outcome, out) = run(&sh(root.path(), "su app -c id", Isolation::Userns));
    assert!(outcome.status.success(), "{out}");
    assert!(out.contains("uid=1000(app)"), "{out}");
}

fn ensure_user(name: &str, subid_start: u32) -> u32 {
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
        lines.push(format!("{name}:{subid_start}:65536"));
        std::fs::write(file, lines.join("\n") + "\n").unwrap();
    }
    let out = Command::new("id").args(["-u", name]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn setuid_programs_work_rootless_with_subuid_range() {
    require_root();
    let uid = ensure_user("rbuildseccomp", 300000);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    fill_rootfs(&root);
    let suid = root.join("bin/probe-suid");
    std::fs::copy(probe_binary(), &suid).unwrap();
    // Owned by the user, which is root (0) inside the step's user namespace.
    let chown = Command::new("chown")
        .args(["-R", "-h", &format!("{uid}:{uid}")])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(chown.success());
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(std::fs::metadata(&suid).unwrap().uid(), uid);

    let spec = setuid_probe_as_app(&root, Isolation::Userns);
    let out = Command::new("runuser")
        .args(["-u", "rbuildseccomp", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([DRIVER_ARG, &serde_json::to_string(&spec).unwrap()])
        .env("TMPDIR", "/tmp")
        .output()
        .expect("runuser (util-linux) is needed");
    let out =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.contains("OUTCOME code=Some(0)"), "{out}");
    assert!(out.contains("euid=0") && out.contains("nnp=0"), "{out}");
}

fn unconfined_runs_without_a_filter() {
    require_root();
    let root = rootfs();
    let unconfined = Sandbox::new().with_seccomp(Seccomp::Unconfined);
    for isolation in [Isolation::Userns, Isolation::Chroot] {
        let (outcome, out) = run_with(
            &unconfined,
            &sh(
                root.path(),
                "/bin/probe clone3 unshare_newns personality_no_aslr",
                isolation,
            ),
        );
        assert!(outcome.status.success(), "{out}");
        // The kernel itself answers: EFAULT/EINVAL for a NULL clone_args, not ENOSYS.
        assert!(!out.contains("clone3=errno:38"), "{isolation}: {out}");
        // Docker's profile refuses turning ASLR off; without a filter the kernel allows it.
        // (unshare(CLONE_NEWNS) stays refused either way: the step holds Docker's
        // capabilities, without CAP_SYS_ADMIN.)
        assert!(out.contains("personality_no_aslr=ok"), "{isolation}: {out}");
        assert!(out.contains("unshare_newns=errno:1"), "{isolation}: {out}");
    }
}

fn overhead_of_the_filter() {
    require_root();
    let root = rootfs();
    let rounds = 20;
    for isolation in [Isolation::Userns, Isolation::Chroot] {
        let spec = sh(root.path(), "true", isolation);
        let mut per_step = Vec::new();
        for seccomp in [Seccomp::Unconfined, Seccomp::DockerDefault] {
            let sandbox = Sandbox::new().with_seccomp(seccomp);
            run_with(&sandbox, &spec);
            let started = Instant::now();
            for _ in 0..rounds {
                assert!(run_with(&sandbox, &spec).0.status.success());
            }
            let took = started.elapsed() / rounds;
            println!(
                "  RUN true, {isolation}, seccomp {seccomp}: {:.2} ms per step",
                took.as_secs_f64() * 1000.0
            );
            per_step.push(took);
        }
        assert!(
            per_step[1] < per_step[0] + Duration::from_millis(20),
            "{isolation}: the filter costs more than 20 ms per step: {per_step:?}"
        );
    }
}
