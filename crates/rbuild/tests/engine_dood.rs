//! `--engine dood` against a real private dockerd (run as root; needs the Debian packages
//! docker.io, busybox-static, docker-registry, apache2-utils and openssl).

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;

use rbuild_testutil::{busybox_rootfs, Dockerd, DockerdOptions, Registry};

const BASE: &str = "rbuild-test-base:1";

/// One daemon at a time: each test starts its own, and two cores are not enough to start
/// several while others build.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn daemon_with_base() -> Dockerd {
    let daemon = Dockerd::start();
    let rootfs = tempfile::tempdir().unwrap();
    busybox_rootfs(rootfs.path());
    daemon.import_rootfs(rootfs.path(), BASE);
    daemon
}

/// rbuild against the test daemon. Its builds run with `--network host`: the test daemons
/// have no bridge (several coexist), and BuildKit's default network is the bridge.
fn rbuild(host: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.env("DOCKER_HOST", host)
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("DOCKER_TLS_CERTDIR")
        .env_remove("RBUILD_ENGINE");
    cmd
}

fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "rbuild failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn build_tags_labels_and_build_args_land_in_the_daemon() {
    let _guard = serial();
    let daemon = daemon_with_base();
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM {BASE}\nARG GREETING=none\nARG FROM_ENV=unset\n\
             RUN echo \"$GREETING $FROM_ENV\" > /greeting\nLABEL from=dockerfile\n"
        ),
    )]);
    let iidfile = ctx.path().join("iid");
    // Without the `build` word: `rbuild [OPTIONS] CONTEXT` is a build.
    let out = rbuild(&daemon.host())
        .args([
            "--engine",
            "dood",
            "--network",
            "host",
            "-t",
            "app:one",
            "-t",
            "app:two",
        ])
        .args(["--label", "extra=yes", "--build-arg", "GREETING=hello"])
        .args(["--build-arg", "FROM_ENV"])
        .env("FROM_ENV", "env-value")
        .arg("--iidfile")
        .arg(&iidfile)
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // BuildKit names a RUN step with its variables expanded.
    assert!(
        stderr.contains("[2/2] RUN echo \"hello env-value\" > /greeting"),
        "{stderr}"
    );

    let labels = daemon.docker_ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.Labels}}",
        "app:one",
    ]);
    let labels: serde_json::Value = serde_json::from_str(&labels).unwrap();
    assert_eq!(labels["extra"], "yes");
    assert_eq!(labels["from"], "dockerfile");
    let id = daemon.docker_ok(&["image", "inspect", "-f", "{{.Id}}", "app:two"]);
    assert_eq!(std::fs::read_to_string(&iidfile).unwrap(), id.trim());
    let greeting = daemon.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "app:one",
        "cat",
        "/greeting",
    ]);
    assert_eq!(greeting, "hello env-value\n");
}

#[test]
fn target_stops_at_the_named_stage() {
    let _guard = serial();
    let daemon = daemon_with_base();
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM {BASE} AS one\nRUN echo one > /stage\nFROM {BASE} AS two\nRUN echo two > /stage\n"
        ),
    )]);
    let out = rbuild(&daemon.host())
        .args([
            "build",
            "--engine",
            "dood",
            "--network",
            "host",
            "-q",
            "-t",
            "staged",
        ])
        .args(["--target", "one"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_success(&out);
    // -q: nothing but the image ID on stdout, and no progress at all.
    let id = daemon.docker_ok(&["image", "inspect", "-f", "{{.Id}}", "staged"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), id);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let stage = daemon.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "staged",
        "cat",
        "/stage",
    ]);
    assert_eq!(stage, "one\n");
}

#[test]
fn failing_run_reports_command_and_exit_code() {
    let _guard = serial();
    let daemon = daemon_with_base();
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {BASE}\nRUN echo before\nRUN exit 3\nRUN echo never\n"),
    )]);
    let out = rbuild(&daemon.host())
        .args([
            "build",
            "--engine",
            "dood",
            "--network",
            "host",
            "-t",
            "broken",
        ])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("RUN exited with code 3"), "{stderr}");
    assert!(stderr.contains("/bin/sh -c exit 3"), "{stderr}");
    assert!(stderr.contains("step 3/4"), "{stderr}");
    assert!(!stderr.contains("never\n"), "{stderr}");
    let inspect = daemon.docker(&["image", "inspect", "broken"]);
    assert!(
        !inspect.status.success(),
        "a failed build must not be tagged"
    );
}

#[test]
fn dockerignore_keeps_ignored_files_out_of_the_image() {
    let _guard = serial();
    let daemon = daemon_with_base();
    let ctx = context(&[
        ("Dockerfile", &format!("FROM {BASE}\nCOPY . /ctx/\n")),
        (".dockerignore", "secret.txt\nlogs\n!logs/keep.log\n"),
        ("keep.txt", "k"),
        ("secret.txt", "s"),
        ("logs/a.log", "a"),
        ("logs/keep.log", "b"),
    ]);
    let out = rbuild(&daemon.host())
        .args([
            "build",
            "--engine",
            "dood",
            "-t",
            "ignored",
            "--network",
            "none",
        ])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_success(&out);
    let listing = daemon.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "ignored",
        "ls",
        "-R",
        "/ctx",
    ]);
    assert!(listing.contains("keep.txt"), "{listing}");
    assert!(listing.contains("keep.log"), "{listing}");
    assert!(!listing.contains("secret.txt"), "{listing}");
    assert!(!listing.contains("a.log"), "{listing}");
}

#[test]
fn dockerfile_outside_the_context_is_sent_along() {
    let _guard = serial();
    let daemon = daemon_with_base();
    let ctx = context(&[("data.txt", "payload")]);
    let elsewhere = context(&[(
        "Build.dockerfile",
        &format!("FROM {BASE}\nCOPY data.txt /data.txt\n"),
    )]);
    let out = rbuild(&daemon.host())
        .args([
            "build",
            "--engine",
            "dood",
            "--network",
            "host",
            "-t",
            "outside",
            "-f",
        ])
        .arg(elsewhere.path().join("Build.dockerfile"))
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_success(&out);
    let data = daemon.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "outside",
        "cat",
        "/data.txt",
    ]);
    assert_eq!(data, "payload");

    // `-f -`: the Dockerfile on stdin, the context a directory.
    let dockerfile = format!("FROM {BASE}\nCOPY data.txt /copied\n");
    let mut cmd = rbuild(&daemon.host());
    cmd.args([
        "build",
        "--engine",
        "dood",
        "--network",
        "host",
        "-t",
        "from-stdin",
        "-f",
        "-",
    ])
    .arg(ctx.path());
    assert_success(&run_with_stdin(cmd, dockerfile.as_bytes()));
    assert_eq!(cat_in(&daemon, "from-stdin", "/copied"), "payload");

    // `-`: the whole context as a tar on stdin.
    let mut tar_bytes = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut tar_bytes);
        let files = [
            (
                "Dockerfile",
                format!("FROM {BASE}\nCOPY in-tar.txt /in-tar\n"),
            ),
            ("in-tar.txt", "from the archive".to_string()),
        ];
        for (name, text) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            builder
                .append_data(&mut header, name, text.as_bytes())
                .unwrap();
        }
        builder.finish().unwrap();
    }
    let mut cmd = rbuild(&daemon.host());
    cmd.args([
        "build",
        "--engine",
        "dood",
        "--network",
        "host",
        "-t",
        "tar-context",
        "-",
    ]);
    assert_success(&run_with_stdin(cmd, &tar_bytes));
    assert_eq!(
        cat_in(&daemon, "tar-context", "/in-tar"),
        "from the archive"
    );
}

fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input).unwrap();
    child.wait_with_output().unwrap()
}

/// `cat PATH` in a container of `image`, without network.
fn cat_in(daemon: &Dockerd, image: &str, path: &str) -> String {
    daemon.docker_ok(&["run", "--rm", "--network", "none", image, "cat", path])
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("cannot run openssl: install the Debian package `openssl`");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in the layout of
/// `DOCKER_CERT_PATH` (ca.pem, cert.pem, key.pem) plus server-*.pem.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=rbuild test CA",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server-key.pem",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server-cert.pem",
        ],
    );
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "client.csr",
            "-subj",
            "/CN=client",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "client.ext",
            "-out",
            "cert.pem",
        ],
    );
}

#[test]
fn tls_over_tcp_with_client_certificates() {
    let _guard = serial();
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let port = rbuild_testutil::free_port();
    let p = |f: &str| certs.path().join(f).to_string_lossy().into_owned();
    let daemon = Dockerd::start_with(DockerdOptions {
        extra_args: vec![
            "--tlsverify".into(),
            "--tlscacert".into(),
            p("ca.pem"),
            "--tlscert".into(),
            p("server-cert.pem"),
            "--tlskey".into(),
            p("server-key.pem"),
            "-H".into(),
            format!("tcp://127.0.0.1:{port}"),
        ],
    });
    let rootfs = tempfile::tempdir().unwrap();
    busybox_rootfs(rootfs.path());
    daemon.import_rootfs(rootfs.path(), BASE);
    let ctx = context(&[("Dockerfile", &format!("FROM {BASE}\nRUN echo tls > /via\n"))]);
    let out = rbuild(&format!("tcp://127.0.0.1:{port}"))
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", certs.path())
        .args([
            "build",
            "--engine",
            "dood",
            "--network",
            "host",
            "-t",
            "over-tls",
        ])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_success(&out);
    // The BuildKit session and build went over TLS too (no classic fallback).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[2/2] RUN echo tls > /via"), "{stderr}");
    assert!(!stderr.contains("classic builder"), "{stderr}");
    let via = daemon.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "over-tls",
        "cat",
        "/via",
    ]);
    assert_eq!(via, "tls\n");

    // Without the client certificate the daemon refuses, and rbuild says which file is missing.
    let empty = tempfile::tempdir().unwrap();
    let out = rbuild(&format!("tcp://127.0.0.1:{port}"))
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", empty.path())
        .args([
            "build",
            "--engine",
            "dood",
            "--network",
            "host",
            "-t",
            "over-tls",
        ])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ca.pem"), "{stderr}");
}

#[test]
fn push_through_the_daemon_with_credentials_from_config_json() {
    let _guard = serial();
    let registry = Registry::start_with_htpasswd("builder", "s3cret-pass");
    let daemon = daemon_with_base();
    let docker_config = tempfile::tempdir().unwrap();
    let auth = Command::new("sh")
        .args(["-c", "printf builder:s3cret-pass | base64"])
        .output()
        .unwrap();
    let auth = String::from_utf8(auth.stdout).unwrap();
    std::fs::write(
        docker_config.path().join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
            registry.host(),
            auth.trim()
        ),
    )
    .unwrap();
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {BASE}\nRUN echo pushed > /p\n"),
    )]);
    let reference = format!("{}/team/app:v1", registry.host());
    let digest_file = ctx.path().join("digest");
    let out = rbuild(&daemon.host())
        .env("DOCKER_CONFIG", docker_config.path())
        .args([
            "build",
            "--engine",
            "dood",
            "--network",
            "host",
            "--push",
            "-t",
            &reference,
        ])
        .arg("--digest-file")
        .arg(&digest_file)
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("s3cret-pass"),
        "credentials leaked into the output: {stderr}"
    );
    assert_eq!(
        registry.manifest_status("team/app", "v1"),
        Some(401),
        "auth must be required"
    );
    assert_eq!(
        registry.manifest_status_logged_in("team/app", "v1"),
        Some(200),
        "the pushed manifest must be in the registry"
    );
    let digest = std::fs::read_to_string(&digest_file).unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );

    // Pulls of base images get the credentials too (the BuildKit session's auth provider
    // answers the daemon from config.json): `--pull` makes the daemon fetch the pushed image
    // back from the authenticated registry.
    let child_ctx = context(&[("Dockerfile", &format!("FROM {reference}\nRUN cat /p\n"))]);
    let out = rbuild(&daemon.host())
        .env("DOCKER_CONFIG", docker_config.path())
        .args([
            "build",
            "--engine",
            "dood",
            "--network",
            "host",
            "--pull",
            "-t",
            "child:1",
        ])
        .arg(child_ctx.path())
        .output()
        .unwrap();
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("FROM {reference}@sha256:")),
        "the base image was not pulled: {stderr}"
    );
    assert!(stderr.contains("    pushed\n"), "{stderr}");
    let empty_config = tempfile::tempdir().unwrap();
    let out = rbuild(&daemon.host())
        .env("DOCKER_CONFIG", empty_config.path())
        .args([
            "build",
            "--engine",
            "dood",
            "--network",
            "host",
            "--pull",
            "-t",
            "child:2",
        ])
        .arg(child_ctx.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a pull without credentials must fail"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("auth"), "{stderr}");

    // Without credentials the push fails with the registry named.
    let out = rbuild(&daemon.host())
        .env("DOCKER_CONFIG", empty_config.path())
        .args([
            "build",
            "--engine",
            "dood",
            "--network",
            "host",
            "--push",
            "-t",
            &format!("{}/team/app:v2", registry.host()),
        ])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pushing") && stderr.contains("team/app:v2"),
        "{stderr}"
    );
}

#[test]
fn push_to_an_open_registry_stores_the_manifest() {
    let _guard = serial();
    let registry = Registry::start();
    let daemon = daemon_with_base();
    let ctx = context(&[("Dockerfile", &format!("FROM {BASE}\nLABEL pushed=yes\n"))]);
    let reference = format!("{}/x:y", registry.host());
    let out = rbuild(&daemon.host())
        .args([
            "build",
            "--engine",
            "dood",
            "--network",
            "host",
            "--destination",
            &reference,
        ])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(registry.manifest_status("x", "y"), Some(200));
    assert_eq!(registry.manifest_status("x", "nope"), Some(404));
}

#[test]
fn docker_output_writes_a_docker_archive() {
    let _guard = serial();
    let daemon = daemon_with_base();
    let ctx = context(&[("Dockerfile", &format!("FROM {BASE}\nRUN echo saved > /s\n"))]);
    let dest = ctx.path().join("image.tar");
    let metadata = ctx.path().join("metadata.json");
    let out = rbuild(&daemon.host())
        .args([
            "build",
            "--engine",
            "dood",
            "--network",
            "host",
            "-t",
            "saved:1",
            "-o",
        ])
        .arg(format!("type=docker,dest={}", dest.display()))
        .arg("--metadata-file")
        .arg(&metadata)
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_success(&out);
    let mut archive = tar::Archive::new(std::fs::File::open(&dest).unwrap());
    let mut manifest = None;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("manifest.json") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            manifest = Some(text);
        }
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&manifest.expect("manifest.json in the archive")).unwrap();
    assert_eq!(manifest[0]["RepoTags"][0], "saved:1");
    let metadata: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metadata).unwrap()).unwrap();
    let id = daemon.docker_ok(&["image", "inspect", "-f", "{{.Id}}", "saved:1"]);
    assert_eq!(metadata["containerimage.config.digest"], id.trim());
    assert_eq!(metadata["image.name"], "saved:1");
}

/// `ssh-add` and the libraries it loads, copied into `dir` (the RUN step runs it through the
/// copied loader: the test base is busybox only).
fn copy_ssh_add(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let ldd = Command::new("ldd")
        .arg("/usr/bin/ssh-add")
        .output()
        .unwrap();
    assert!(ldd.status.success(), "ldd /usr/bin/ssh-add failed");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=> ") {
            Some((_, rest)) => rest.split_whitespace().next().unwrap_or(""),
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if !path.starts_with('/') {
            continue;
        }
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        let name = if name.starts_with("ld-linux") {
            "ld.so"
        } else {
            name
        };
        std::fs::copy(path, dir.join(name)).unwrap();
    }
    std::fs::copy("/usr/bin/ssh-add", dir.join("ssh-add")).unwrap();
}

/// An ssh agent (`ssh-agent -D`) holding one fresh key; killed when dropped.
struct Agent {
    child: std::process::Child,
    socket: std::path::PathBuf,
    /// The key's SHA256 fingerprint as `ssh-add -l` prints it.
    fingerprint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent() -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let child = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent (Debian package openssh-client) is needed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "ssh-agent did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let key = dir.path().join("key");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "ssh-keygen failed");
    let add = Command::new("ssh-add")
        .env("SSH_AUTH_SOCK", &socket)
        .arg(&key)
        .output()
        .unwrap();
    assert!(add.status.success(), "ssh-add failed: {add:?}");
    let print = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key.with_extension("pub"))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8_lossy(&print.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    Agent {
        child,
        socket,
        fingerprint,
        _dir: dir,
    }
}

#[test]
fn secrets_ssh_agents_and_run_mounts_go_through_the_buildkit_session() {
    let _guard = serial();
    let daemon = daemon_with_base();
    let agent = start_agent();
    // The Dockerfile names only a prefix of it: the whole value must appear nowhere.
    let secret_value = "s3cret-value-9f2c71";
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("token");
    std::fs::write(&secret_file, secret_value).unwrap();
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM {BASE}\n\
             RUN --mount=type=secret,id=token test \"$(wc -c < /run/secrets/token)\" -eq {} && \
             grep -q '^s3cret-value-' /run/secrets/token && echo secret-seen > /secret-seen\n\
             RUN --mount=type=cache,target=/cache echo cached > /cache/f && cat /cache/f > \
             /cache-seen\n\
             RUN --mount=type=ssh --mount=type=bind,source=tools,target=/tools \
             /tools/ld.so --library-path /tools /tools/ssh-add -l > /ssh-seen\n",
            secret_value.len()
        ),
    )]);
    copy_ssh_add(&ctx.path().join("tools"));
    let out = rbuild(&daemon.host())
        .args([
            "build",
            "--engine",
            "dood",
            "--network",
            "host",
            "-t",
            "sess:1",
        ])
        .arg("--secret")
        .arg(format!("id=token,src={}", secret_file.display()))
        .arg("--ssh")
        .arg(format!("default={}", agent.socket.display()))
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(cat_in(&daemon, "sess:1", "/secret-seen"), "secret-seen\n");
    assert_eq!(cat_in(&daemon, "sess:1", "/cache-seen"), "cached\n");
    let listed = cat_in(&daemon, "sess:1", "/ssh-seen");
    assert!(
        listed.contains(&agent.fingerprint),
        "the RUN step did not reach the forwarded agent: {listed:?}"
    );

    // The secret's value is in no output, no history and no layer.
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!output.contains(secret_value), "{output}");
    let history = daemon.docker_ok(&["history", "--no-trunc", "sess:1"]);
    assert!(!history.contains(secret_value), "{history}");
    let saved = secrets.path().join("saved.tar");
    daemon.docker_ok(&["save", "-o", saved.to_str().unwrap(), "sess:1"]);
    let bytes = std::fs::read(&saved).unwrap();
    assert!(
        !bytes
            .windows(secret_value.len())
            .any(|w| w == secret_value.as_bytes()),
        "the secret's value is in the saved image"
    );
    std::fs::remove_file(&saved).unwrap();

    // A secret the command line does not give fails the step, naming the id.
    let missing = context(&[(
        "Dockerfile",
        &format!(
            "FROM {BASE}\nRUN --mount=type=secret,id=absent,required cat /run/secrets/absent\n"
        ),
    )]);
    let out = rbuild(&daemon.host())
        .args(["build", "--engine", "dood", "--network", "host"])
        .arg(missing.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("absent"), "{stderr}");

    // A key file is not an agent: refused by name before any build.
    let out = rbuild(&daemon.host())
        .args(["build", "--engine", "dood", "--ssh"])
        .arg(format!("default={}", secret_file.display()))
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not an agent socket"), "{stderr}");
}

#[test]
fn dockerfile_syntax_newer_than_the_daemon_fails_clearly() {
    let _guard = serial();
    let daemon = daemon_with_base();
    // v0.8's built-in frontend has no heredocs: the line is an unknown instruction.
    let heredoc = context(&[(
        "Dockerfile",
        &format!("FROM {BASE}\nRUN <<EOF\necho hi\nEOF\n"),
    )]);
    let out = rbuild(&daemon.host())
        .args(["build", "--engine", "dood", "--network", "host"])
        .arg(heredoc.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown instruction"), "{stderr}");
    assert!(
        stderr.contains("no heredocs") && stderr.contains("--engine native"),
        "{stderr}"
    );
    // `# syntax=` makes the daemon resolve the frontend image: it names the image it cannot
    // get (no Docker Hub here).
    let syntax = context(&[(
        "Dockerfile",
        &format!("# syntax=docker/dockerfile:1.4\nFROM {BASE}\n"),
    )]);
    let out = rbuild(&daemon.host())
        .args(["build", "--engine", "dood", "--network", "host"])
        .arg(syntax.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("docker/dockerfile:1.4"), "{stderr}");
}

#[test]
fn docker_buildkit_0_falls_back_to_the_classic_builder_with_a_note() {
    let _guard = serial();
    let daemon = daemon_with_base();
    let ctx = context(&[("Dockerfile", &format!("FROM {BASE}\nENV A=1\n"))]);
    let out = rbuild(&daemon.host())
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--engine", "dood", "-t", "classic:1"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert_success(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("note: using the daemon's classic builder: DOCKER_BUILDKIT=0"),
        "{stderr}"
    );
    // The classic builder's own history format proves which builder ran.
    let history = daemon.docker_ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        "classic:1",
    ]);
    assert!(history.contains("#(nop)"), "{history}");
    // Secrets need BuildKit: refused with the reason rather than dropped.
    let secret = tempfile::NamedTempFile::new().unwrap();
    let out = rbuild(&daemon.host())
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--engine", "dood", "--secret"])
        .arg(format!("id=s,src={}", secret.path().display()))
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--secret and --ssh need the daemon's BuildKit"),
        "{stderr}"
    );
}

#[test]
fn synced_contexts_of_equal_size_and_mtime_stay_apart() {
    let _guard = serial();
    let daemon = daemon_with_base();
    // BuildKit sends only what changed since its last copy of a synced directory, judged by
    // size and mtime: two directories must not share that copy.
    let mut built = Vec::new();
    for word in ["aaa", "bbb"] {
        let ctx = context(&[
            ("Dockerfile", &format!("FROM {BASE}\nCOPY word /word\n")),
            ("word", word),
        ]);
        for name in ["Dockerfile", "word"] {
            let touch = Command::new("touch")
                .args(["-h", "-d", "@1000000000"])
                .arg(ctx.path().join(name))
                .status()
                .unwrap();
            assert!(touch.success());
        }
        let tag = format!("word-{word}");
        let out = rbuild(&daemon.host())
            .args(["build", "--engine", "dood", "--network", "host", "-t", &tag])
            .arg(ctx.path())
            .output()
            .unwrap();
        assert_success(&out);
        built.push((tag, word));
    }
    for (tag, word) in built {
        assert_eq!(cat_in(&daemon, &tag, "/word"), word);
    }
}
