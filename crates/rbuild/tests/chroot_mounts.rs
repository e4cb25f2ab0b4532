//! `RUN --mount` with `--isolation chroot` (no mount(2)): every kind reaches the step, none
//! of it reaches a layer, and a target's previous content comes back. As root on the host
//! (chroot mode needs root); the same build runs with rbuild as a container's entrypoint in
//! `in_container_entrypoint.rs`.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{ok, rbuild, store_with_busybox};
use rbuild_testutil::require_root;

const SECRET: &str = "s3cret-value-never-in-a-layer";

/// Steps using each mount kind; each writes what it saw to a file of its own.
const DOCKERFILE: &str = r#"FROM busybox:latest
RUN mkdir -p /var/cache/app /opt/target /run/secrets && echo image > /opt/target/orig.txt && echo image-cache > /var/cache/app/orig.txt
RUN --mount=type=cache,target=/var/cache/app,id=appcache ls -A /var/cache/app > /cache-listing && echo one > /var/cache/app/from-step
RUN --mount=type=cache,target=/var/cache/app,id=appcache cat /var/cache/app/from-step > /cache-seen
RUN --mount=type=secret,id=ca,mode=0440,uid=1,gid=2 busybox sha256sum < /run/secrets/ca > /secret-sum && ls -ln /run/secrets/ca > /secret-meta
RUN --mount=type=secret,id=ca,target=/etc/ca.pem test -f /etc/ca.pem && echo default-secret-ok > /secret-default && ls -ln /etc/ca.pem > /secret-default-meta
RUN --mount=type=bind,source=data,target=/opt/target cat /opt/target/ctx.txt > /bind-seen && ls -A /opt/target > /bind-listing
RUN --mount=type=tmpfs,target=/opt/target ls -A /opt/target > /tmpfs-listing && echo scratch > /opt/target/scratch
RUN --mount=type=bind,from=busybox:latest,source=/etc,target=/mnt/etc cat /mnt/etc/passwd > /from-image-passwd && echo written > /mnt/etc/written
RUN <<EOF
#!/bin/sh
echo heredoc-ran > /heredoc.txt
EOF
RUN --mount=type=ssh echo "$SSH_AUTH_SOCK" > /ssh-sock && test -S "$SSH_AUTH_SOCK" && until test -e /tmp/proxied; do sleep 0.1; done
"#;

/// A fake ssh agent: answers each connection's first message with `pong:` + the message,
/// and counts them.
fn fake_agent(path: &Path) -> std::sync::mpsc::Receiver<String> {
    let listener = UnixListener::bind(path).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut buf = [0u8; 64];
            let n = conn.read(&mut buf).unwrap_or(0);
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let _ = conn.write_all(format!("pong:{msg}").as_bytes());
            let _ = tx.send(msg);
        }
    });
    rx
}

/// Finds `name` (a socket) under `dir` without following symlinks.
fn find_socket(dir: &Path, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let ty = entry.file_type().ok()?;
        if ty.is_socket() && entry.file_name() == name {
            return Some(entry.path());
        }
        if ty.is_dir() && !ty.is_symlink() {
            if let Some(found) = find_socket(&entry.path(), name) {
                return Some(found);
            }
        }
    }
    None
}

/// The blobs of the store holding `needle`: every blob as stored and the layers (gzip)
/// uncompressed, or (`layers_only`) the uncompressed layers alone (configs hold the RUN
/// commands, which name the paths).
fn blobs_contain(store: &Path, needle: &[u8], layers_only: bool) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let dir = store.join("oci/blobs/sha256");
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let raw = std::fs::read(entry.path()).unwrap();
        let mut data = raw.clone();
        let mut unzipped = Vec::new();
        if flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut unzipped)
            .is_ok()
        {
            data = unzipped;
        } else if layers_only {
            continue;
        }
        if data.windows(needle.len()).any(|w| w == needle) {
            hits.push(entry.path());
        }
    }
    hits
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_mount_kind_works_in_chroot_mode_and_leaves_no_trace() {
    require_root("chroot isolation");
    let store = store_with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::create_dir_all(ctx.path().join("data")).unwrap();
    std::fs::write(ctx.path().join("data/ctx.txt"), "from the context\n").unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("ca");
    std::fs::write(&secret, SECRET).unwrap();
    let agent_socket = secrets.path().join("agent.sock");
    let agent = fake_agent(&agent_socket);
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("rootfs");

    let mut child = rbuild(store.path())
        .args(["build", "--isolation", "chroot", "--progress", "plain"])
        .arg(format!("--secret=id=ca,src={}", secret.display()))
        .arg(format!("--ssh=default={}", agent_socket.display()))
        .arg("-o")
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(ctx.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While the ssh step waits: talk through the socket in its root, then let it end.
    let deadline = Instant::now() + Duration::from_secs(180);
    let socket = loop {
        if let Some(found) = find_socket(store.path(), "ssh_agent.0") {
            break found;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the build ended ({status}) before its ssh step ran:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "the ssh step never started");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut conn = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    conn.write_all(b"ping").unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert_eq!(
        reply, "pong:ping",
        "the socket in the root forwards to the agent"
    );
    assert_eq!(agent.recv_timeout(Duration::from_secs(10)).unwrap(), "ping");
    let step_root = socket.ancestors().nth(3).unwrap();
    std::fs::write(step_root.join("tmp/proxied"), "").unwrap();
    let output = child.wait_with_output().unwrap();
    let output = ok(output);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!log.contains(SECRET), "the secret is in the build's output");

    // Each mount reached its step.
    assert_eq!(
        read(&dest.join("cache-listing")),
        "",
        "the cache hides the target's content"
    );
    assert_eq!(
        read(&dest.join("cache-seen")),
        "one\n",
        "the cache persists"
    );
    let expected_sum = std::process::Command::new("busybox")
        .arg("sha256sum")
        .stdin(std::fs::File::open(&secret).unwrap())
        .output()
        .unwrap();
    assert_eq!(
        read(&dest.join("secret-sum")),
        String::from_utf8(expected_sum.stdout).unwrap(),
        "the step read the secret"
    );
    let meta = read(&dest.join("secret-meta"));
    assert!(
        meta.starts_with("-r--r-----")
            && meta.split_whitespace().nth(2) == Some("1")
            && meta.split_whitespace().nth(3) == Some("2"),
        "the secret file has the mode and owner asked: {meta}"
    );
    let meta = read(&dest.join("secret-default-meta"));
    assert!(
        meta.starts_with("-r--------") && meta.split_whitespace().nth(2) == Some("0"),
        "a secret is 0400 root by default: {meta}"
    );
    assert_eq!(read(&dest.join("bind-seen")), "from the context\n");
    assert_eq!(read(&dest.join("bind-listing")), "ctx.txt\n");
    assert_eq!(
        read(&dest.join("tmpfs-listing")),
        "",
        "a tmpfs starts empty"
    );
    assert!(read(&dest.join("from-image-passwd")).starts_with("root:x:0:0"));
    assert_eq!(read(&dest.join("heredoc.txt")), "heredoc-ran\n");
    assert_eq!(read(&dest.join("ssh-sock")), "/run/buildkit/ssh_agent.0\n");

    // None of it reached the image; the targets have their own content back.
    assert_eq!(read(&dest.join("opt/target/orig.txt")), "image\n");
    let listing: Vec<_> = std::fs::read_dir(dest.join("opt/target"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(listing, ["orig.txt"], "bind and tmpfs files stayed out");
    let listing: Vec<_> = std::fs::read_dir(dest.join("var/cache/app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(listing, ["orig.txt"], "the cache's files stayed out");
    assert_eq!(read(&dest.join("var/cache/app/orig.txt")), "image-cache\n");
    assert_eq!(
        std::fs::read_dir(dest.join("run/secrets")).unwrap().count(),
        0,
        "the secret file stayed out"
    );
    for absent in ["etc/ca.pem", "mnt", "dev/pipes", "run/buildkit"] {
        assert!(
            !dest.join(absent).exists(),
            "/{absent} leaked into the image"
        );
    }
    assert!(
        blobs_contain(store.path(), SECRET.as_bytes(), false).is_empty(),
        "the secret is in a blob of the store"
    );
    // The tar paths of what the steps wrote into their mounts (the secret's own path is in
    // /secret-meta, written by `ls`; its content was searched for above).
    for path in [
        "var/cache/app/from-step",
        "opt/target/scratch",
        "opt/target/ctx.txt",
        "mnt/etc/written",
    ] {
        assert!(
            blobs_contain(store.path(), path.as_bytes(), true).is_empty(),
            "{path} is in a layer"
        );
    }
}

#[test]
fn a_failing_step_gives_the_cache_back_and_restores_the_target() {
    require_root("chroot isolation");
    let store = store_with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:latest\n\
         RUN mkdir -p /c && echo image > /c/orig\n\
         RUN --mount=type=cache,target=/c,id=keep echo kept > /c/value && false\n",
    )
    .unwrap();
    let failed = rbuild(store.path())
        .args(["build", "--isolation", "chroot", "--progress", "plain"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(!failed.status.success(), "the step fails");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:latest\n\
         RUN mkdir -p /c && echo image > /c/orig\n\
         RUN --mount=type=cache,target=/c,id=keep cat /c/value > /seen\n\
         RUN cat /c/orig > /orig-after\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("rootfs");
    ok(rbuild(store.path())
        .args([
            "build",
            "--isolation",
            "chroot",
            "--progress",
            "plain",
            "-o",
        ])
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(ctx.path())
        .output()
        .unwrap());
    assert_eq!(
        read(&dest.join("seen")),
        "kept\n",
        "the failed step's cache came back"
    );
    assert_eq!(read(&dest.join("orig-after")), "image\n");
    assert!(!dest.join("c/value").exists());
}

/// Chroot mode cannot mount a tmpfs: a `size=` it could not apply is an error naming why,
/// not a dropped flag; with `--isolation userns` the step sees a tmpfs of that size.
#[test]
fn a_tmpfs_size_is_applied_in_userns_and_refused_in_chroot_mode() {
    require_root("chroot isolation");
    let store = store_with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:latest\n\
         RUN --mount=type=tmpfs,target=/small,size=2m df -k /small | tail -1 \
         | awk '{print $2}' > /size\n",
    )
    .unwrap();
    let refused = rbuild(store.path())
        .args(["build", "--isolation", "chroot", "--progress", "plain"])
        .arg(ctx.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("size= cannot be applied with --isolation chroot"),
        "{stderr}"
    );
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("rootfs");
    ok(rbuild(store.path())
        .args(["build", "--isolation", "userns", "--progress", "plain"])
        .arg("-o")
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(ctx.path())
        .output()
        .unwrap());
    assert_eq!(read(&dest.join("size")), "2048\n");
}
