//! rbuild as a container's PID 1: a real private dockerd runs an image with
//! `--entrypoint /usr/local/bin/rbuild` (never `sh -c`, which would be PID 1 instead), with
//! Docker's default security options (root, default seccomp: chroot isolation). Every RUN
//! must work although the helper's parent is PID 1, and `docker stop` must end a build
//! promptly (the init rbuild becomes forwards SIGTERM). Runs as root (CI does); needs the
//! Debian packages docker.io and busybox-static.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rbuild_testutil::{busybox_rootfs, require_root, Dockerd};

mod common;
use common::{copy_at_same_path, shared_libraries};

const IMAGE: &str = "rbuild-entrypoint:test";
const RBUILD_IN_IMAGE: &str = "/usr/local/bin/rbuild";

/// One daemon at a time: two cores are not enough to start two and build in both.
static SERIAL: Mutex<()> = Mutex::new(());

/// A base stage from the busybox rootfs in the context, then RUN steps on it: writes, the
/// environment, a working directory, a step reading what an earlier one wrote, a step
/// leaving an orphan behind (re-parented to the step's reaper, not to rbuild's init).
const APP_DOCKERFILE: &str = "FROM scratch AS base
COPY rootfs/ /
ENV PATH=/bin
FROM base
ENV GREETING=hello-from-env
WORKDIR /app/dir
RUN echo marker > /marker && pwd > pwd.txt && id -u > /uid.txt
RUN echo \"$GREETING\" > /greeting.txt
RUN (sleep 1 &) ; cat /greeting.txt > /second.txt
";

/// A step that runs until stopped, announcing itself first.
const SLOW_DOCKERFILE: &str = "FROM scratch
COPY rootfs/ /
RUN echo STEP-STARTED && sleep 600
";

/// RUN --mount in chroot mode (no mount(2) under Docker's default seccomp): a cache, a
/// secret and a bind, each over a target with content of its own.
const MOUNTS_DOCKERFILE: &str = "FROM scratch AS base
COPY rootfs/ /
ENV PATH=/bin
FROM base
RUN mkdir -p /var/cache/app /opt/target && echo image > /opt/target/orig.txt && echo image-cache > /var/cache/app/orig.txt
RUN --mount=type=cache,target=/var/cache/app ls -A /var/cache/app > /cache-listing && echo one > /var/cache/app/from-step
RUN --mount=type=cache,target=/var/cache/app cat /var/cache/app/from-step > /cache-seen
RUN --mount=type=secret,id=ca busybox sha256sum < /run/secrets/ca > /secret-sum
RUN --mount=type=bind,source=data,target=/opt/target cat /opt/target/ctx.txt > /bind-seen
";

/// A step trying to leave its root inside the container: a fresh /proc, then the canary in
/// the container's own `/` through `/proc/1/root` and `/proc/$PPID/root`, a write into its
/// /out (bound from the test's directory),
/// SIGTERM to PID 1 (rbuild's init, which would pass it on and end the build), a device
/// node, a chroot.
const ESCAPE_DOCKERFILE: &str = r#"FROM scratch AS base
COPY rootfs/ /
ENV PATH=/bin
FROM base
RUN busybox mount -t proc proc /proc 2>/dev/null; echo "mount:$?" > /results; \
    busybox cat /proc/1/root/canary.txt >> /results 2>/dev/null; \
    busybox cat /proc/$PPID/root/canary.txt >> /results 2>/dev/null; \
    echo pwned > /proc/1/root/out/written 2>/dev/null; \
    busybox kill -TERM 1 2>/dev/null; echo "kill:$?" >> /results; \
    busybox kill -TERM $PPID 2>/dev/null; echo "kill-parent:$?" >> /results; \
    busybox mknod /tmp/mem c 1 1 2>/dev/null; echo "mknod:$?" >> /results; \
    busybox chroot / /bin/busybox true 2>/dev/null; echo "chroot:$?" >> /results; \
    busybox sleep 1; true
RUN test -e /results
"#;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A daemon holding [`IMAGE`]: busybox, rbuild with its libraries, and build contexts
/// under /ctx, each with a busybox `rootfs/` for its base stage.
fn daemon_with_rbuild_image(contexts: &[(&str, &[(&str, &str)])]) -> Dockerd {
    let daemon = Dockerd::start();
    let image = tempfile::tempdir().unwrap();
    let root = image.path();
    busybox_rootfs(root);
    let binary = env!("CARGO_BIN_EXE_rbuild");
    let in_image = root.join(RBUILD_IN_IMAGE.trim_start_matches('/'));
    std::fs::create_dir_all(in_image.parent().unwrap()).unwrap();
    if std::fs::hard_link(binary, &in_image).is_err() {
        std::fs::copy(binary, &in_image).unwrap();
    }
    for library in shared_libraries(binary) {
        copy_at_same_path(&library, root);
    }
    for (name, files) in contexts {
        let ctx = root.join("ctx").join(name);
        busybox_rootfs(&ctx.join("rootfs"));
        for (path, text) in *files {
            write(&ctx.join(path), text);
        }
    }
    daemon.import_rootfs(root, IMAGE);
    daemon
}

fn describe(out: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `docker run --rm --network none -v OUT:/out --entrypoint rbuild IMAGE ARGS...`: rbuild
/// is the container's PID 1, with Docker's default security options.
fn run_rbuild(daemon: &Dockerd, out: &Path, args: &[&str]) -> Output {
    let volume = format!("{}:/out", out.display());
    let mut all = vec![
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &volume,
        "--entrypoint",
        RBUILD_IN_IMAGE,
        IMAGE,
    ];
    all.extend_from_slice(args);
    daemon.docker(&all)
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

#[test]
fn builds_with_rbuild_as_the_container_entrypoint() {
    require_root("starting dockerd for the in-container build");
    let _guard = serial();
    let daemon = daemon_with_rbuild_image(&[("app", &[("Dockerfile", APP_DOCKERFILE)])]);
    let out = tempfile::tempdir().unwrap();
    let run = run_rbuild(
        &daemon,
        out.path(),
        &[
            "--root",
            "/store",
            "build",
            "--progress",
            "plain",
            "-o",
            "type=local,dest=/out/rootfs",
            "/ctx/app",
        ],
    );
    assert!(
        run.status.success(),
        "the build with rbuild as PID 1 failed:\n{}",
        describe(&run)
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !stderr.contains("Connection reset"),
        "a helper took PID 1 for a dead parent:\n{}",
        describe(&run)
    );
    let rootfs = out.path().join("rootfs");
    assert_eq!(read(&rootfs.join("marker"), &run), "marker\n");
    assert_eq!(read(&rootfs.join("app/dir/pwd.txt"), &run), "/app/dir\n");
    assert_eq!(read(&rootfs.join("uid.txt"), &run), "0\n");
    assert_eq!(read(&rootfs.join("greeting.txt"), &run), "hello-from-env\n");
    assert_eq!(read(&rootfs.join("second.txt"), &run), "hello-from-env\n");
}

#[test]
fn docker_stop_ends_a_build_run_as_the_entrypoint_promptly() {
    require_root("starting dockerd for the in-container build");
    let _guard = serial();
    let daemon = daemon_with_rbuild_image(&[("slow", &[("Dockerfile", SLOW_DOCKERFILE)])]);
    let name = "rbuild-entrypoint-stop";
    let started = daemon.docker(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "--entrypoint",
        RBUILD_IN_IMAGE,
        IMAGE,
        "--root",
        "/store",
        "build",
        "--progress",
        "plain",
        "/ctx/slow",
    ]);
    assert!(started.status.success(), "{}", describe(&started));
    // Wait until the step runs.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let logs = daemon.docker(&["logs", name]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        );
        if text.contains("STEP-STARTED") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow step never started:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A stop timeout far above what forwarding needs: without forwarding, PID 1 ignores
    // SIGTERM and docker waits all of it before SIGKILL.
    let stop_started = Instant::now();
    let stopped = daemon.docker(&["stop", "-t", "60", name]);
    let took = stop_started.elapsed();
    eprintln!("docker stop took {took:?}");
    assert!(stopped.status.success(), "{}", describe(&stopped));
    let code = daemon.docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", name]);
    let _ = daemon.docker(&["rm", "-f", name]);
    assert!(
        took < Duration::from_secs(20),
        "docker stop took {took:?}: SIGTERM was not forwarded to the build"
    );
    assert_eq!(
        code.trim(),
        "143",
        "the container should end as the build did, killed by SIGTERM (128 + 15)"
    );
}

#[test]
fn run_mounts_work_with_rbuild_as_the_entrypoint_in_chroot_mode() {
    require_root("starting dockerd for the in-container build");
    let _guard = serial();
    let secret = "in-container-secret-value";
    let daemon = daemon_with_rbuild_image(&[(
        "mounts",
        &[
            ("Dockerfile", MOUNTS_DOCKERFILE),
            ("data/ctx.txt", "from the context\n"),
            ("secret.txt", secret),
        ],
    )]);
    let out = tempfile::tempdir().unwrap();
    let run = run_rbuild(
        &daemon,
        out.path(),
        &[
            "--root",
            "/store",
            "build",
            "--progress",
            "plain",
            "--secret",
            "id=ca,src=/ctx/mounts/secret.txt",
            "-o",
            "type=local,dest=/out/rootfs",
            "/ctx/mounts",
        ],
    );
    assert!(
        run.status.success(),
        "the build failed:\n{}",
        describe(&run)
    );
    let rootfs = out.path().join("rootfs");
    let expected_sum = Command::new("busybox")
        .arg("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(secret.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        read(&rootfs.join("secret-sum"), &run),
        String::from_utf8(expected_sum.stdout).unwrap(),
        "the step read the secret"
    );
    assert_eq!(read(&rootfs.join("cache-listing"), &run), "");
    assert_eq!(read(&rootfs.join("cache-seen"), &run), "one\n");
    assert_eq!(read(&rootfs.join("bind-seen"), &run), "from the context\n");
    // None of the mounts' files reached the image; the targets have their content back.
    assert_eq!(read(&rootfs.join("opt/target/orig.txt"), &run), "image\n");
    assert!(!rootfs.join("opt/target/ctx.txt").exists());
    assert!(!rootfs.join("var/cache/app/from-step").exists());
    assert_eq!(
        read(&rootfs.join("var/cache/app/orig.txt"), &run),
        "image-cache\n"
    );
    assert!(
        !rootfs.join("run/secrets").exists(),
        "the secret's directory leaked"
    );
    let log = describe(&run);
    assert!(!log.contains(secret), "the secret is in the build's output");
}

#[test]
fn a_step_cannot_leave_its_root_in_a_default_docker_run() {
    require_root("starting dockerd for the in-container build");
    let _guard = serial();
    let daemon = daemon_with_rbuild_image(&[("escape", &[("Dockerfile", ESCAPE_DOCKERFILE)])]);
    let out = tempfile::tempdir().unwrap();
    let info = run_rbuild(&daemon, out.path(), &["info", "--json"]);
    assert!(info.status.success(), "{}", describe(&info));
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["auto"], "chroot", "info: {info:#}");
    eprintln!(
        "landlock under Docker's default seccomp: {}",
        info["landlock"]
    );
    // The canary lives in the container's own `/`, outside the build's root.
    let volume = format!("{}:/out", out.path().display());
    let run = daemon.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &volume,
        "--entrypoint",
        "/bin/sh",
        IMAGE,
        "-c",
        "echo CANARY-in-the-container > /canary.txt && \
         exec /usr/local/bin/rbuild --root /store build --progress plain \
         -o type=local,dest=/out/rootfs /ctx/escape",
    ]);
    assert!(
        run.status.success(),
        "the build failed (or a signal reached it):\n{}",
        describe(&run)
    );
    let results = read(&out.path().join("rootfs/results"), &run);
    assert!(
        !results.contains("CANARY"),
        "read outside the root:\n{results}"
    );
    assert!(
        !out.path().join("written").exists(),
        "the step wrote into the container's /out"
    );
    assert!(!results.contains("mount:0"), "{results}");
    assert!(!results.contains("kill:0"), "signalled PID 1:\n{results}");
    assert!(
        !results.contains("kill-parent:0"),
        "signalled the helper:\n{results}"
    );
    assert!(!results.contains("mknod:0"), "{results}");
    assert!(
        results.contains("chroot:") && !results.contains("chroot:0"),
        "{results}"
    );
    let log = describe(&run);
    match info["landlock"].as_i64() {
        Some(abi) if abi >= 6 => assert!(!log.contains("chroot isolation"), "{log}"),
        _ => assert_eq!(log.matches("chroot isolation").count(), 1, "{log}"),
    }
}

/// Two RUN steps, for counting warnings.
const TWO_STEPS_DOCKERFILE: &str = "FROM scratch AS base
COPY rootfs/ /
ENV PATH=/bin
FROM base
RUN echo one > /one
RUN echo two > /two
";

#[test]
fn without_landlock_the_build_says_so_once_and_info_shows_why() {
    require_root("starting dockerd for the in-container build");
    let _guard = serial();
    let daemon = daemon_with_rbuild_image(&[("two", &[("Dockerfile", TWO_STEPS_DOCKERFILE)])]);
    // A seccomp profile refusing Landlock's syscalls (EPERM), as an older Docker's would.
    let profile_dir = tempfile::tempdir().unwrap();
    let profile = profile_dir.path().join("no-landlock.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
    )
    .unwrap();
    let seccomp = format!("seccomp={}", profile.display());
    let out = tempfile::tempdir().unwrap();
    let volume = format!("{}:/out", out.path().display());
    let docker_run = |args: &[&str]| {
        let mut all = vec![
            "run",
            "--rm",
            "--network",
            "none",
            "--security-opt",
            &seccomp,
            "-v",
            &volume,
            "--entrypoint",
            RBUILD_IN_IMAGE,
            IMAGE,
        ];
        all.extend_from_slice(args);
        daemon.docker(&all)
    };
    let info = docker_run(&["info", "--json"]);
    assert!(info.status.success(), "{}", describe(&info));
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let landlock = info["landlock"].as_str().unwrap_or_default().to_string();
    assert!(
        landlock.starts_with("unavailable: ") && landlock.contains("EPERM"),
        "info: {info:#}"
    );
    let text = docker_run(&["info"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains(&landlock),
        "{}",
        describe(&text)
    );
    let run = docker_run(&[
        "--root",
        "/store",
        "build",
        "--isolation",
        "chroot",
        "--progress",
        "plain",
        "-o",
        "type=local,dest=/out/rootfs",
        "/ctx/two",
    ]);
    assert!(run.status.success(), "{}", describe(&run));
    let log = describe(&run);
    assert_eq!(
        log.matches("chroot isolation without Landlock").count(),
        1,
        "one warning for the build:\n{log}"
    );
    assert_eq!(read(&out.path().join("rootfs/two"), &run), "two\n");
}
