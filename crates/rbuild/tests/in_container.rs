//! `rbuild build` inside an unprivileged CI container: a real private dockerd runs an image
//! holding the rbuild binary, and the build happens inside `docker run` with Docker's
//! default security options (root, default seccomp: no user namespaces, so `chroot`) and as
//! uid 1000 with seccomp unconfined (user namespaces but no fresh /proc, so `userns` with a
//! single-id map). Runs as root (CI does); needs the Debian packages docker.io and
//! busybox-static.

use std::path::Path;
use std::process::Output;
use std::sync::Mutex;

use rbuild_testutil::{busybox_rootfs, require_root, Dockerd};

mod common;
use common::{copy_at_same_path, shared_libraries};

/// The image holding rbuild, its shared libraries and the build contexts.
const IMAGE: &str = "rbuild-in-container:test";

/// Where the rbuild binary lives in the image.
const RBUILD_IN_IMAGE: &str = "/usr/local/bin/rbuild";

/// One daemon at a time: two cores are not enough to start two and build in both.
static SERIAL: Mutex<()> = Mutex::new(());

/// The script run as root in the container: probe, make the base image with rbuild itself,
/// build on it into /out, then check the container's own `/` did not get the RUN steps'
/// writes. `$STORE` is the store directory.
const ROOT_SCRIPT: &str = r#"set -e
rbuild --root "$STORE" info --json > /out/info.json
rbuild --root "$STORE" build -q -t base:1 /ctx/base > /out/base-id.txt
rbuild --root "$STORE" build --progress plain -t app:1 -o type=local,dest=/out/rootfs /ctx/app
if test -e /marker; then echo "CONTAINER ROOT WAS MODIFIED: /marker exists"; exit 7; fi
if test -e /app; then echo "CONTAINER ROOT WAS MODIFIED: /app exists"; exit 7; fi
echo CONTAINER-ROOT-CLEAN
"#;

/// The build on top of the base: RUN steps write files, echo env, run in a WORKDIR; COPY.
const APP_DOCKERFILE: &str = "FROM base:1
ENV GREETING=hello-from-env
WORKDIR /app/dir
RUN echo marker > /marker && pwd > pwd.txt && id -u > /uid.txt
RUN echo \"$GREETING\" > /greeting.txt
COPY data.txt /copied/data.txt
RUN cat /copied/data.txt > seen-copy.txt
";

/// The script run as uid 1000: probe, then a build whose steps need no chown outside the
/// user namespace (see [`USERNS_DOCKERFILE`]).
const USERNS_SCRIPT: &str = r#"set -e
rbuild --root "$STORE" info --json > /out/info.json
rbuild --root "$STORE" build --progress plain -t app:1 -o type=local,dest=/out/rootfs /ctx/userns
if test -e /marker; then echo "CONTAINER ROOT WAS MODIFIED: /marker exists"; exit 7; fi
if test -e /app; then echo "CONTAINER ROOT WAS MODIFIED: /app exists"; exit 7; fi
echo CONTAINER-ROOT-CLEAN
"#;

/// `FROM scratch` with busybox bound from the context for each RUN: as an unprivileged user
/// the native engine cannot yet apply a base image's layers, COPY or WORKDIR (each chowns
/// to 0 outside the user namespace), so the RUN steps bring their own shell. The second
/// step reads what the first wrote.
const USERNS_DOCKERFILE: &str = r#"FROM scratch
ENV GREETING=hello-from-env
RUN --mount=type=bind,source=tools/bin,target=/bin ["/bin/sh", "-c", "echo marker > /marker && id -u > /uid.txt && echo \"$GREETING\" > /greeting.txt && mkdir -p /app/dir && cd /app/dir && pwd > pwd.txt"]
RUN --mount=type=bind,source=tools/bin,target=/bin ["/bin/sh", "-c", "cat /greeting.txt > /second.txt"]
"#;

const BASE_DOCKERFILE: &str = "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD [\"sh\"]\n";

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The user of the second test, as Docker's `--user` takes it.
const USERNS_UID: u32 = 1000;

/// Gives `dir` and everything below it (symlinks themselves) to `uid`:`uid`.
fn chown_tree(dir: &Path, uid: u32) {
    std::os::unix::fs::lchown(dir, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("cannot chown {}: {e}", dir.display()));
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            chown_tree(&path, uid);
        } else {
            std::os::unix::fs::lchown(&path, Some(uid), Some(uid))
                .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A daemon holding [`IMAGE`]: busybox, rbuild with its libraries, and the contexts under
/// /ctx (`base`: a busybox rootfs for `FROM scratch`; `app`: the build on it).
fn daemon_with_rbuild_image() -> Dockerd {
    let daemon = Dockerd::start();
    let rootfs = tempfile::tempdir().unwrap();
    let root = rootfs.path();
    busybox_rootfs(root);
    let binary = env!("CARGO_BIN_EXE_rbuild");
    let in_image = root.join(RBUILD_IN_IMAGE.trim_start_matches('/'));
    std::fs::create_dir_all(in_image.parent().unwrap()).unwrap();
    if std::fs::hard_link(binary, &in_image).is_err() {
        std::fs::copy(binary, &in_image).unwrap_or_else(|e| panic!("cannot copy {binary}: {e}"));
    }
    for library in shared_libraries(binary) {
        copy_at_same_path(&library, root);
    }
    busybox_rootfs(&root.join("ctx/base/rootfs"));
    write(&root.join("ctx/base/Dockerfile"), BASE_DOCKERFILE);
    write(&root.join("ctx/app/Dockerfile"), APP_DOCKERFILE);
    write(&root.join("ctx/app/data.txt"), "copied into the build\n");
    busybox_rootfs(&root.join("ctx/userns/tools"));
    write(&root.join("ctx/userns/Dockerfile"), USERNS_DOCKERFILE);
    // A CI checkout belongs to the job's user; the bind mount's copy keeps owners, which
    // uid 1000 can only do for its own files.
    chown_tree(&root.join("ctx/userns"), USERNS_UID);
    daemon.import_rootfs(root, IMAGE);
    daemon
}

/// A host directory bound as /out, writable by any uid (the second test runs as uid 1000).
fn output_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// `docker run --rm --network none -v OUT:/out [options] IMAGE sh -c SCRIPT`.
fn run_script(daemon: &Dockerd, out: &Path, options: &[&str], store: &str, script: &str) -> Output {
    let volume = format!("{}:/out", out.display());
    let store_env = format!("STORE={store}");
    let mut args = vec!["run", "--rm", "--network", "none", "-v", &volume];
    args.extend_from_slice(options);
    args.extend_from_slice(&[
        "-e",
        "PATH=/usr/local/bin:/bin",
        "-e",
        &store_env,
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    daemon.docker(&args)
}

fn describe(out: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn read(path: &Path, run: &Output) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} after the build ({e}); the container run:\n{}",
            path.display(),
            describe(run)
        )
    })
}

fn info_json(out: &Path, run: &Output) -> serde_json::Value {
    let text = read(&out.join("info.json"), run);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "info --json is not JSON ({e}):\n{text}\nthe container run:\n{}",
            describe(run)
        )
    })
}

/// The script ran to its end: the build succeeded and the container's `/` has none of the
/// RUN steps' writes.
fn assert_script_finished(run: &Output) {
    assert!(
        run.status.success(),
        "the build in the container failed:\n{}",
        describe(run)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("CONTAINER-ROOT-CLEAN"),
        "the script did not reach its end:\n{}",
        describe(run)
    );
}

/// The files the RUN steps of both Dockerfiles write, in the exported rootfs.
fn assert_run_step_files(rootfs: &Path, run: &Output) {
    assert_eq!(read(&rootfs.join("marker"), run), "marker\n");
    assert_eq!(read(&rootfs.join("app/dir/pwd.txt"), run), "/app/dir\n");
    assert_eq!(read(&rootfs.join("greeting.txt"), run), "hello-from-env\n");
    // Root in the step: real root under chroot, the mapped user under userns.
    assert_eq!(read(&rootfs.join("uid.txt"), run), "0\n");
}

#[test]
fn builds_as_root_under_docker_default_seccomp_with_chroot() {
    require_root("starting dockerd for the in-container build");
    let _guard = serial();
    let daemon = daemon_with_rbuild_image();
    let out = output_dir();
    let run = run_script(&daemon, out.path(), &[], "/store", ROOT_SCRIPT);

    let info = info_json(out.path(), &run);
    assert_eq!(info["euid"], 0, "info: {info:#}");
    assert_eq!(
        info["userns"]["ok"], false,
        "Docker's default seccomp profile refuses unshare(CLONE_NEWUSER); info: {info:#}"
    );
    assert_eq!(info["chroot"]["ok"], true, "info: {info:#}");
    assert_eq!(info["auto"], "chroot", "info: {info:#}");

    assert_script_finished(&run);
    let base_id = read(&out.path().join("base-id.txt"), &run);
    assert!(
        base_id.trim().starts_with("sha256:"),
        "base image id: {base_id:?}"
    );
    let rootfs = out.path().join("rootfs");
    assert_run_step_files(&rootfs, &run);
    assert_eq!(
        read(&rootfs.join("copied/data.txt"), &run),
        "copied into the build\n"
    );
    assert_eq!(
        read(&rootfs.join("app/dir/seen-copy.txt"), &run),
        "copied into the build\n",
        "a RUN after COPY must see the copied file"
    );
    assert!(
        rootfs.join("bin/busybox").is_file(),
        "the exported rootfs lacks the base's /bin/busybox"
    );
}

#[test]
fn builds_as_uid_1000_with_seccomp_unconfined_in_a_user_namespace() {
    require_root("starting dockerd for the in-container build");
    let _guard = serial();
    let daemon = daemon_with_rbuild_image();
    let out = output_dir();
    // With a group too: `--user 1000` alone runs with gid 0, and uid 1000 cannot chown its
    // copies to a group it is not in.
    let user = format!("{USERNS_UID}:{USERNS_UID}");
    let options = [
        "--user",
        &user,
        "--security-opt",
        "seccomp=unconfined",
        "-e",
        "HOME=/tmp",
    ];
    let run = run_script(&daemon, out.path(), &options, "/tmp/store", USERNS_SCRIPT);

    let info = info_json(out.path(), &run);
    assert_eq!(info["euid"], USERNS_UID, "info: {info:#}");
    assert_eq!(info["userns"]["ok"], true, "info: {info:#}");
    assert_eq!(
        info["fresh_proc"]["ok"], false,
        "Docker masks paths under /proc, so a new proc mount is refused; info: {info:#}"
    );
    assert_eq!(
        info["newuidmap"],
        serde_json::Value::Null,
        "the image has no newuidmap: a single-id map; info: {info:#}"
    );
    assert_eq!(info["auto"], "userns", "info: {info:#}");

    assert_script_finished(&run);
    let rootfs = out.path().join("rootfs");
    assert_run_step_files(&rootfs, &run);
    assert_eq!(
        read(&rootfs.join("second.txt"), &run),
        "hello-from-env\n",
        "the second RUN must see the first one's file"
    );
    assert!(
        !rootfs.join("bin").exists(),
        "the /bin mountpoint stub of RUN --mount leaked into the image"
    );
}
