//! rbuild's own seccomp filter inside a default `docker run` (root, Docker's seccomp profile,
//! no CAP_SYS_ADMIN, so chroot isolation): the filter is installed on top of Docker's (with
//! no_new_privs, the only way without CAP_SYS_ADMIN) and refuses what Docker's profile allows
//! there but would reach outside a chroot: `ptrace`, `process_vm_readv`, `chroot`. Runs as
//! root (CI does); needs the Debian packages docker.io, busybox-static and gcc with libc6-dev.

use std::path::Path;
use std::process::Command;

use rbuild_testutil::{busybox_rootfs, require_root, Dockerd};

mod common;
use common::{copy_at_same_path, shared_libraries};

const IMAGE: &str = "rbuild-in-container-seccomp:test";

/// Tries each syscall named on the command line and prints `NAME=ok` or `NAME=errno:N`.
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        long r = -1;
        errno = 0;
        if (!strcmp(argv[i], "ptrace_traceme")) r = ptrace(PTRACE_TRACEME, 0, 0, 0);
        else if (!strcmp(argv[i], "process_vm_readv")) {
            char src[4] = "abc", dst[4];
            struct iovec l = {dst, 4}, rem = {src, 4};
            r = syscall(SYS_process_vm_readv, getpid(), &l, 1, &rem, 1, 0);
        } else if (!strcmp(argv[i], "chroot")) r = chroot("/");
        else if (!strcmp(argv[i], "clone3")) r = syscall(SYS_clone3, NULL, 0);
        else if (!strcmp(argv[i], "nnp")) { printf("nnp=%d\n", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)); continue; }
        if (r < 0) printf("%s=errno:%d\n", argv[i], errno); else printf("%s=ok\n", argv[i]);
    }
    return 0;
}
"#;

const SCRIPT: &str = r#"set -e
rbuild --root /store info --json > /out/info.json
rbuild --root /store build -q -t base:1 /ctx/base > /dev/null
rbuild --root /store build --progress plain -o type=local,dest=/out/rootfs /ctx/app
rbuild --root /store build --progress plain --no-cache --security-opt seccomp=unconfined \
    -o type=local,dest=/out/unconfined /ctx/app
echo BUILD-DONE
"#;

const APP_DOCKERFILE: &str = "FROM base:1
RUN probe ptrace_traceme process_vm_readv chroot clone3 nnp > /answers.txt && id -u > /uid.txt
";

fn compile_probe(dest: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("probe.c");
    std::fs::write(&source, PROBE_C).unwrap();
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let out = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(dest)
        .arg(&source)
        .output()
        .expect("gcc is needed to build the syscall probe");
    assert!(
        out.status.success(),
        "compiling the probe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn chroot_steps_in_a_default_container_run_under_rbuilds_filter() {
    require_root("starting dockerd for the in-container build");
    let daemon = Dockerd::start();
    let image_root = tempfile::tempdir().unwrap();
    let root = image_root.path();
    busybox_rootfs(root);
    let binary = env!("CARGO_BIN_EXE_rbuild");
    let in_image = root.join("usr/local/bin/rbuild");
    std::fs::create_dir_all(in_image.parent().unwrap()).unwrap();
    if std::fs::hard_link(binary, &in_image).is_err() {
        std::fs::copy(binary, &in_image).unwrap();
    }
    for library in shared_libraries(binary) {
        copy_at_same_path(&library, root);
    }
    let base = root.join("ctx/base");
    busybox_rootfs(&base.join("rootfs"));
    compile_probe(&base.join("rootfs/bin/probe"));
    std::fs::write(
        base.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("ctx/app")).unwrap();
    std::fs::write(root.join("ctx/app/Dockerfile"), APP_DOCKERFILE).unwrap();
    daemon.import_rootfs(root, IMAGE);

    let out = tempfile::tempdir().unwrap();
    let volume = format!("{}:/out", out.path().display());
    let run = daemon.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &volume,
        "-e",
        "PATH=/usr/local/bin:/bin",
        IMAGE,
        "sh",
        "-c",
        SCRIPT,
    ]);
    let describe = format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        run.status.success() && String::from_utf8_lossy(&run.stdout).contains("BUILD-DONE"),
        "{describe}"
    );
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("info.json")).unwrap())
            .unwrap();
    assert_eq!(info["auto"], "chroot", "{info:#}");
    assert_eq!(info["seccomp"]["profile"], "docker-default", "{info:#}");

    let answers = std::fs::read_to_string(out.path().join("rootfs/answers.txt"))
        .unwrap_or_else(|e| panic!("no answers.txt ({e}):\n{describe}"));
    // Docker's profile allows these three to root in a container; rbuild's chroot filter
    // does not. clone3 → ENOSYS comes from both.
    assert_eq!(
        answers,
        "ptrace_traceme=errno:1\nprocess_vm_readv=errno:1\nchroot=errno:1\nclone3=errno:38\nnnp=1\n",
        "{describe}"
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("rootfs/uid.txt")).unwrap(),
        "0\n"
    );
    // The control: without rbuild's filter only Docker's applies, which allows ptrace to
    // root. chroot stays refused and no_new_privs set: the chroot confinement drops
    // CAP_SYS_CHROOT and Landlock sets no_new_privs, whatever the seccomp option.
    // (process_vm_readv depends on the Docker version: 20.10's profile refuses it, newer
    // ones allow it on kernels >= 4.8.)
    let unconfined = std::fs::read_to_string(out.path().join("unconfined/answers.txt"))
        .unwrap_or_else(|e| panic!("no unconfined answers.txt ({e}):\n{describe}"));
    let control: Vec<&str> = unconfined
        .lines()
        .filter(|l| !l.starts_with("process_vm_readv="))
        .collect();
    assert_eq!(
        control,
        [
            "ptrace_traceme=ok",
            "chroot=errno:1",
            "clone3=errno:38",
            "nnp=1"
        ],
        "{describe}"
    );
}
