//! Debian bases in the Kubernetes "restricted" pod (`docker run --user 1000:1000 --cap-drop
//! ALL --security-opt no-new-privileges`, Docker's default seccomp profile, on a real
//! private dockerd), in the builder image for usrmerge bases (the repository Dockerfile's
//! `restricted-debian` target: `/bin`, `/lib`, `/lib64`, `/sbin` are symlinks into `/usr`,
//! as a Debian stage has them): a real `apt-get install` gives the image rbuild gives on the
//! host with user-namespace isolation. apt drops privileges to `_apt` for its downloads and
//! checks the drop, which the supervisor's per-process credentials make work.
//!
//! Runs as root (CI does); needs the Debian packages docker.io, docker-registry,
//! debootstrap (a bookworm minbase from this machine's apt mirror, which the steps reach
//! too) and patchelf (this test's rbuild is dynamically linked: its loader and libraries go
//! under /rbuild/lib, where a Debian stage's own libraries cannot collide with them).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rbuild_testutil::{debian_image_rootfs, require_binary, require_root, Dockerd, Registry};

mod common;
use common::{shared_libraries, RESTRICTED_POD};

const PATCHELF: &str = "/usr/bin/patchelf";
const IMAGE: &str = "rbuild:restricted-debian-test";
const EPOCH: [&str; 2] = ["--source-date-epoch", "1700000000"];

fn rbuild() -> &'static str {
    env!("CARGO_BIN_EXE_rbuild")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn describe(out: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// rbuild on the host with the store `store`; panics with its output on failure.
fn rbuild_ok(store: &Path, args: &[&str]) -> Output {
    let out = Command::new(rbuild())
        .arg("--root")
        .arg(store)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(out.status.success(), "rbuild {args:?}: {}", describe(&out));
    out
}

fn run_ok(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{command:?}: {}", describe(&out));
}

/// A bookworm minbase pushed to `registry` as `base/debian:1`; its rootfs is deleted once
/// in the image.
fn push_debian_base(work: &Path, store: &Path, registry: &Registry) -> String {
    let ctx = work.join("debian-base");
    let rootfs = ctx.join("rootfs");
    debian_image_rootfs(&rootfs);
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nCMD [\"bash\"]\n",
    )
    .unwrap();
    let tag = format!("{}/base/debian:1", registry.host());
    rbuild_ok(
        store,
        &["build", "-q", "--push", "-t", &tag, ctx.to_str().unwrap()],
    );
    std::fs::remove_dir_all(&ctx).unwrap();
    tag
}

/// `rbuild:restricted-debian` from the repository's Dockerfile, laid out as `cargo xtask
/// builder-image` lays it out (xtask/restricted-debian-top-level.txt), with this test's
/// rbuild: its loader and libraries in /rbuild/lib (patchelf points it there).
fn builder_image(daemon: &Dockerd, work: &Path) {
    let context = work.join("builder");
    let root = context.join("restricted-debian");
    let lib = root.join("rbuild/lib");
    std::fs::create_dir_all(root.join("rbuild/bin")).unwrap();
    std::fs::create_dir_all(&lib).unwrap();
    let binary = root.join("rbuild/bin/rbuild");
    std::fs::copy(rbuild(), &binary).unwrap();
    let mut loader = None;
    for library in shared_libraries(rbuild()) {
        let name = library.file_name().unwrap().to_owned();
        std::fs::copy(&library, lib.join(&name)).unwrap();
        if name.to_string_lossy().starts_with("ld-") {
            loader = Some(Path::new("/rbuild/lib").join(name));
        }
    }
    let loader = loader.expect("rbuild has a dynamic loader");
    run_ok(
        Command::new(PATCHELF)
            .arg("--set-interpreter")
            .arg(&loader)
            .args(["--set-rpath", "/rbuild/lib"])
            .arg(&binary),
    );
    std::fs::write(root.join("rbuild/in-place-root"), "").unwrap();
    std::fs::create_dir_all(root.join("rbuild/certs")).unwrap();
    std::fs::write(root.join("rbuild/certs/ca-certificates.crt"), "").unwrap();
    // Top-level redirection, as `cargo xtask builder-image` lays it out.
    std::fs::create_dir_all(root.join("rbuild/top")).unwrap();
    let top_level =
        std::fs::read_to_string(repo_root().join("xtask/restricted-debian-top-level.txt")).unwrap();
    for line in top_level.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once(" -> ") {
            Some((name, target)) => std::os::unix::fs::symlink(target, root.join(name)).unwrap(),
            None => std::fs::create_dir_all(root.join(line)).unwrap(),
        }
    }
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    run_ok(Command::new("chmod").args(["-R", "g+rwX"]).arg(&root));
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let archive = work.join("builder.tar");
    let dockerfile = repo_root().join("Dockerfile");
    rbuild_ok(
        &work.join("image-store"),
        &[
            "build",
            "-q",
            "-f",
            dockerfile.to_str().unwrap(),
            "--target",
            "restricted-debian",
            "-t",
            IMAGE,
            "-o",
            &format!("type=docker,dest={}", archive.display()),
            context.to_str().unwrap(),
        ],
    );
    daemon.docker_ok(&["load", "-i", archive.to_str().unwrap()]);
    std::fs::remove_file(&archive).unwrap();
    std::fs::remove_dir_all(&context).unwrap();
    std::fs::remove_dir_all(work.join("image-store")).unwrap();
}

/// What a walk snapshot (in place, as in chroot mode) puts in the layer and an overlay
/// snapshot does not: apt downloads the suite's InRelease again (the base's lists are
/// debootstrap's) and renames it over the identical file, with the same size and the
/// same whole-second mtime. The walk sees a new inode with a truncated mtime and cannot
/// compare the contents (the old file is gone), so it keeps the file; the overlay snapshot
/// compares it with the lower layer's copy and drops it. The flattened file systems are
/// equal (the `files` part of the diff is checked with no exception). docs/sandbox.md,
/// "What this isolation cannot do yet".
const REWRITTEN_UNCHANGED: &str = "/var/lib/apt/lists/*_InRelease";

/// `rbuild diff` of two OCI archives, ignoring times and what package managers write
/// differently on every run; the differences it reports. With `rewritten`, the layers'
/// entries [`REWRITTEN_UNCHANGED`] are left out too.
fn differences(a: &Path, b: &Path, rewritten: bool) -> String {
    let ignores =
        std::fs::read_to_string(repo_root().join("testdata/fidelity-nondeterministic.txt"))
            .unwrap();
    let mut diff = Command::new(rbuild());
    diff.args(["diff", "--ignore-timestamps"]);
    for pattern in ignores
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        diff.arg("--ignore").arg(pattern);
    }
    if rewritten {
        diff.arg("--ignore").arg(REWRITTEN_UNCHANGED);
    }
    let out = diff.arg(a).arg(b).output().unwrap();
    if out.status.success() {
        String::new()
    } else {
        describe(&out)
    }
}

#[test]
fn apt_get_install_in_a_debian_stage_equals_the_hosts_user_namespace_build() {
    restricted_build_equals_the_hosts(&Build {
        what: "apt-get install jq",
        steps: "RUN apt-get update && apt-get install -y --no-install-recommends jq \
          && jq --version > /root/jq-version\n",
        files: &[],
        ca_secret: false,
        users: &["1000:1000", "1000770000:0"],
    });
}

/// python3-pip pulls in ca-certificates, whose postinst copies an owner it read with
/// `stat` (`chgrp $(stat -L -c %g /usr/local) /usr/local/share/ca-certificates`): equal
/// only because the supervisor answers `stat` with root's ids for the build user's files.
#[test]
fn pip_in_a_debian_stage_equals_the_hosts_user_namespace_build() {
    restricted_build_equals_the_hosts(&Build {
        what: "apt-get install python3-pip",
        steps: "RUN apt-get update && apt-get install -y --no-install-recommends python3-pip \
          && pip --version > /root/pip-version\n",
        files: &[],
        ca_secret: false,
        users: &["1000:1000"],
    });
}

/// The Node app of the real-world fidelity cases (testdata/fidelity/debian_apps/node).
const NODE_APP: &[(&str, &str)] = &[
    (
        "app/index.js",
        include_str!("../../../testdata/fidelity/debian_apps/node/index.js"),
    ),
    (
        "app/package.json",
        include_str!("../../../testdata/fidelity/debian_apps/node/package.json"),
    ),
    (
        "app/package-lock.json",
        include_str!("../../../testdata/fidelity/debian_apps/node/package-lock.json"),
    ),
];

/// nodejs and npm from apt, then `npm ci` of a small app from its lockfile over HTTPS (the
/// machine's CA bundle as the secret `ca`, as the bench's npm row does), the app run in the
/// same step: npm's cache, tarball extraction and the owners it gives are the pod's.
#[test]
fn npm_ci_in_a_debian_stage_equals_the_hosts_user_namespace_build() {
    restricted_build_equals_the_hosts(&Build {
        what: "apt-get install nodejs npm, npm ci",
        steps: "RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
                nodejs npm && rm -rf /var/lib/apt/lists/*\n\
                WORKDIR /app\n\
                COPY app/ ./\n\
                RUN --mount=type=secret,id=ca npm_config_cafile=/run/secrets/ca \
                npm ci --no-audit --no-fund --no-update-notifier \
                && rm -rf /root/.npm && node index.js > /app/ran\n",
        files: NODE_APP,
        ca_secret: true,
        users: &["1000:1000"],
    });
}

/// The machine's CA bundle (with a proxy's CA where there is one): what the package
/// managers that speak HTTPS get as the secret `ca`, in no layer.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A build compared by [`restricted_build_equals_the_hosts`].
struct Build<'a> {
    /// What it does, for the timing line.
    what: &'a str,
    /// The Dockerfile after `FROM <a Debian base>`.
    steps: &'a str,
    /// Files of the context (path, text).
    files: &'a [(&'a str, &'a str)],
    /// Whether [`CA_BUNDLE`] is given as the secret `ca`.
    ca_secret: bool,
    /// The users the restricted container runs as.
    users: &'a [&'a str],
}

/// Builds `FROM <a Debian base>` then the build's steps as root on the host (user-namespace
/// isolation) and in the restricted container as each of its users, and checks the images
/// are equal.
fn restricted_build_equals_the_hosts(build: &Build) {
    let Build {
        what,
        steps,
        files,
        ca_secret,
        users,
    } = *build;
    require_root("starting dockerd for the restricted container");
    require_binary(PATCHELF, "patchelf");
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let registry = Registry::start();
    let base = push_debian_base(work.path(), &store, &registry);
    let app = work.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("Dockerfile"), format!("FROM {base}\n{steps}")).unwrap();
    for (name, text) in files {
        let path = app.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let host_secret = format!("id=ca,src={CA_BUNDLE}");
    let secret_args: &[&str] = if ca_secret {
        &["--secret", &host_secret]
    } else {
        &[]
    };

    // The reference: root on the host, user-namespace isolation.
    let reference = work.path().join("reference.tar");
    let started = std::time::Instant::now();
    let host = rbuild_ok(
        &store,
        &[
            &[
                "build",
                "--progress",
                "plain",
                "--isolation",
                "userns",
                "-o",
            ][..],
            &[&format!("type=oci,dest={}", reference.display())],
            &EPOCH,
            secret_args,
            &[app.to_str().unwrap()],
        ]
        .concat(),
    );
    let host_seconds = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&store).unwrap();

    let daemon = Dockerd::start();
    builder_image(&daemon, work.path());
    for &user in users {
        let out = tempfile::tempdir().unwrap();
        std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let ctx_volume = format!("{}:/workspace:ro", app.display());
        let out_volume = format!("{}:/out", out.path().display());
        let ca_volume = format!("{CA_BUNDLE}:/ca/ca.crt:ro");
        let mut args = vec!["run", "--rm", "--network", "host", "--user", user];
        args.extend_from_slice(RESTRICTED_POD);
        if ca_secret {
            args.extend_from_slice(&["-v", &ca_volume]);
        }
        args.extend_from_slice(&[
            "-v",
            &ctx_volume,
            "-v",
            &out_volume,
            IMAGE,
            "build",
            "--isolation",
            "restricted",
            "--progress",
            "plain",
            "-o",
            "type=oci,dest=/out/app.tar",
        ]);
        args.extend_from_slice(&EPOCH);
        if ca_secret {
            args.extend_from_slice(&["--secret", "id=ca,src=/ca/ca.crt"]);
        }
        args.push("/workspace");
        let started = std::time::Instant::now();
        let run = daemon.docker(&args);
        assert!(run.status.success(), "as {user}: {}", describe(&run));
        println!(
            "{what}: host userns {host_seconds:.1} s, restricted container as {user} \
             {:.1} s (docker run included)",
            started.elapsed().as_secs_f64()
        );
        let built = out.path().join("app.tar");
        // The whole file system, with no exception but the nondeterministic paths.
        let all = differences(&reference, &built, false);
        assert!(
            !all.contains("\nfiles:") && !all.starts_with("files:") && !all.contains("config:"),
            "as {user}, the file system differs from the host's: {all}"
        );
        let differs = differences(&reference, &built, true);
        assert!(
            differs.is_empty(),
            "as {user}, the image differs from the host's: {differs}\n{}\nthe host's build: {}",
            describe(&run),
            describe(&host)
        );
    }
}

/// `RUN --mount=type=ssh` in the pod: an ssh-agent started here (as the pod's user: an
/// agent answers only its own uid and root) holds a key; its socket is mounted into the
/// restricted container and given to rbuild with `--ssh default=…`; the step's `ssh-add
/// -l` lists the key through the socket rbuild forwards into the stage. A step without
/// the mount finds no agent.
#[test]
fn an_ssh_mount_reaches_the_agent_forwarded_into_the_pod() {
    require_root("starting dockerd for the restricted container");
    require_binary(PATCHELF, "patchelf");
    for tool in [
        "/usr/bin/ssh-agent",
        "/usr/bin/ssh-add",
        "/usr/bin/ssh-keygen",
    ] {
        require_binary(tool, "openssh-client");
    }
    require_binary("/usr/bin/setpriv", "util-linux");
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let registry = Registry::start();
    let base = push_debian_base(work.path(), &store, &registry);
    std::fs::remove_dir_all(&store).unwrap();

    // The key and the agent, the pod's user's (who must be able to reach them).
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let agent_dir = work.path().join("agent");
    std::fs::create_dir(&agent_dir).unwrap();
    let key = agent_dir.join("key");
    run_ok(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "restricted-pod-key",
                "-f",
            ])
            .arg(&key),
    );
    run_ok(
        Command::new("chown")
            .args(["-R", "1000:1000"])
            .arg(&agent_dir),
    );
    let as_pod_user = |program: &str| {
        let mut command = Command::new("setpriv");
        command.args([
            "--reuid",
            "1000",
            "--regid",
            "1000",
            "--clear-groups",
            "--",
            program,
        ]);
        command
    };
    let socket = agent_dir.join("agent.sock");
    let mut agent = as_pod_user("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let agent_guard = KillOnDrop(&mut agent);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "ssh-agent made no socket"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    run_ok(
        as_pod_user("ssh-add")
            .env("SSH_AUTH_SOCK", &socket)
            .arg(&key),
    );
    let fingerprint = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key.with_extension("pub"))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8(fingerprint.stdout).unwrap();
    let fingerprint = fingerprint
        .split_whitespace()
        .nth(1)
        .expect("ssh-keygen -l prints bits, fingerprint, comment")
        .to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");

    let app = work.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("Dockerfile"),
        format!(
            "FROM {base}\n\
             RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
             openssh-client && rm -rf /var/lib/apt/lists/*\n\
             RUN --mount=type=ssh ssh-add -l && echo \"agent at $SSH_AUTH_SOCK\" \
             && stat -c \"default socket %u:%g %a\" $SSH_AUTH_SOCK\n\
             RUN --mount=type=ssh,uid=1000,gid=1001,mode=0660 \
             stat -c \"owned socket %u:%g %a\" $SSH_AUTH_SOCK && ssh-add -l\n\
             RUN ssh-add -l; echo \"without the mount: $?\"\n"
        ),
    )
    .unwrap();

    let daemon = Dockerd::start();
    builder_image(&daemon, work.path());
    let ctx_volume = format!("{}:/workspace:ro", app.display());
    let agent_volume = format!("{}:/agent", agent_dir.display());
    let mut args = vec!["run", "--rm", "--network", "host", "--user", "1000:1000"];
    args.extend_from_slice(RESTRICTED_POD);
    args.extend_from_slice(&[
        "-v",
        &ctx_volume,
        "-v",
        &agent_volume,
        IMAGE,
        "build",
        "--isolation",
        "restricted",
        "--progress",
        "plain",
        "--ssh",
        "default=/agent/agent.sock",
        "/workspace",
    ]);
    let run = daemon.docker(&args);
    drop(agent_guard);
    assert!(run.status.success(), "{}", describe(&run));
    let log = String::from_utf8_lossy(&run.stderr);
    let listed = log
        .lines()
        .find(|l| l.contains(&fingerprint))
        .unwrap_or_else(|| panic!("ssh-add -l did not list {fingerprint}: {log}"));
    assert!(listed.contains("restricted-pod-key"), "{listed}");
    assert!(
        log.contains("agent at /run/buildkit/ssh_agent.0"),
        "SSH_AUTH_SOCK is BuildKit's path: {log}"
    );
    // The socket as `uid=`, `gid=` and `mode=` ask, through the supervisor's stat (the
    // build user owns it on the disk and cannot chown it).
    assert!(
        log.contains("default socket 0:0 600"),
        "the default mount is root's, mode 0600: {log}"
    );
    assert!(
        log.contains("owned socket 1000:1001 660"),
        "the socket shows the owner asked for: {log}"
    );
    // ssh-add's status 2: no agent to reach.
    assert!(
        log.contains("without the mount: 2"),
        "a step without the mount reached an agent: {log}"
    );
    assert!(
        !log.contains("PRIVATE KEY"),
        "the key itself never shows: {log}"
    );
}

/// Kills and reaps a child when dropped, so a failed assertion leaves no agent running.
struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
