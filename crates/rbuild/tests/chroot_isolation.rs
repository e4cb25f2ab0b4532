//! `--isolation chroot` as root on the host: the same Dockerfile gives the same image as
//! with `--isolation userns`, and the step is confined (Landlock, dropped capabilities).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{ok, rbuild};
use rbuild_testutil::{busybox_rootfs, require_root};

/// Every path under `root` with its type, mode, owner and (files) content or (links)
/// target.
fn listing(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let what = if meta.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                pending.push(path.clone());
                "dir".to_string()
            } else if meta.is_file() {
                format!("file {:?}", std::fs::read(&path).unwrap())
            } else {
                format!("other rdev {}", meta.rdev())
            };
            out.insert(
                rel,
                format!(
                    "{what} mode {:o} owner {}:{}",
                    meta.mode(),
                    meta.uid(),
                    meta.gid()
                ),
            );
        }
    }
    out
}

/// A base without /proc, /dev or /sys (the busybox rootfs has none), RUN steps on it.
fn build_with(isolation: &str, ctx: &Path) -> (tempfile::TempDir, std::path::PathBuf) {
    let store = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("rootfs");
    ok(rbuild(store.path())
        .args(["build", "--no-cache", "--isolation", isolation, "-o"])
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(ctx)
        .output()
        .unwrap());
    (out, dest)
}

#[test]
fn chroot_and_userns_give_the_same_files() {
    require_root("chroot isolation");
    let ctx = tempfile::tempdir().unwrap();
    busybox_rootfs(&ctx.path().join("rootfs"));
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\n\
         RUN echo hi > /x && mkdir -p /srv/app && echo data > /srv/app/f\n\
         RUN rm /x && echo second > /srv/second\n",
    )
    .unwrap();
    let (_keep_userns, userns) = build_with("userns", ctx.path());
    let (_keep_chroot, chroot) = build_with("chroot", ctx.path());
    let userns = listing(&userns);
    let chroot = listing(&chroot);
    for dir in ["proc", "dev", "sys"] {
        assert_eq!(
            userns.get(dir).map(String::as_str),
            Some("dir mode 40755 owner 0:0"),
            "userns leaves /{dir}"
        );
    }
    assert!(userns.contains_key("srv/second"));
    assert_eq!(userns, chroot, "the two isolations gave different files");
}

/// A step that tries to leave its root every way the issue found, recording each result:
/// a fresh /proc, then `/proc/1/root` and `/proc/$PPID/root` to read a canary and write
/// beside it; signalling a process outside; a device node; a chroot escape.
pub const ESCAPE_DOCKERFILE: &str = r#"FROM busybox:latest
ARG CANARY
ARG OUTSIDE
ARG VICTIM
RUN busybox mount -t proc proc /proc 2>/dev/null; echo "mount:$?" > /results; \
    busybox cat /proc/1/root$CANARY >> /results 2>/dev/null; \
    busybox cat /proc/$PPID/root$CANARY >> /results 2>/dev/null; \
    echo pwned > /proc/1/root$OUTSIDE/written 2>/dev/null; \
    busybox kill -9 $VICTIM 2>/dev/null; echo "kill:$?" >> /results; \
    busybox mknod /tmp/mem c 1 1 2>/dev/null; echo "mknod:$?" >> /results; \
    echo x > /tmp/mem 2>/dev/null; \
    busybox chroot / /bin/busybox true 2>/dev/null; echo "chroot:$?" >> /results; \
    busybox umount /proc 2>/dev/null; true
"#;

#[test]
fn a_chroot_step_cannot_leave_its_root() {
    require_root("chroot isolation");
    let store = common::store_with_busybox();
    let outside = tempfile::tempdir().unwrap();
    let canary = outside.path().join("canary.txt");
    std::fs::write(&canary, "CANARY-outside-the-root\n").unwrap();
    let mut victim = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), ESCAPE_DOCKERFILE).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("rootfs");
    let built = rbuild(store.path())
        .args(["build", "--isolation", "chroot", "--progress", "plain"])
        .arg(format!("--build-arg=CANARY={}", canary.display()))
        .arg(format!("--build-arg=OUTSIDE={}", outside.path().display()))
        .arg(format!("--build-arg=VICTIM={}", victim.id()))
        .arg("-o")
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(ctx.path())
        .output()
        .unwrap();
    let victim_alive = victim.try_wait().unwrap().is_none();
    let _ = victim.kill();
    let _ = victim.wait();
    let built = ok(built);
    let results = std::fs::read_to_string(dest.join("results")).unwrap();
    assert!(
        !results.contains("CANARY"),
        "the step read a file outside its root:\n{results}"
    );
    assert!(
        !outside.path().join("written").exists(),
        "the step wrote outside its root"
    );
    assert!(
        results.contains("mount:") && !results.contains("mount:0"),
        "mounting a fresh /proc must be refused:\n{results}"
    );
    assert!(victim_alive, "the step killed a process outside: {results}");
    assert!(!results.contains("kill:0"), "{results}");
    assert!(
        !results.contains("mknod:0"),
        "mknod of a device must be refused:\n{results}"
    );
    // `echo x > /tmp/mem` after a refused mknod makes a plain file.
    if let Ok(meta) = std::fs::symlink_metadata(dest.join("tmp/mem")) {
        assert!(meta.is_file(), "a device node reached the image: {meta:?}");
    }
    assert!(
        results.contains("chroot:") && !results.contains("chroot:0"),
        "chroot (an escape's first move) must be refused:\n{results}"
    );
    // This kernel has Landlock with scoping: nothing to warn about, and info says so.
    let info = ok(rbuild(store.path())
        .args(["info", "--json"])
        .output()
        .unwrap());
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let log = String::from_utf8_lossy(&built.stderr);
    match info["landlock"].as_i64() {
        Some(abi) if abi >= 6 => assert!(
            !log.contains("chroot isolation"),
            "no warning with Landlock ABI {abi}:\n{log}"
        ),
        _ => assert_eq!(
            log.matches("chroot isolation").count(),
            1,
            "one warning without full Landlock ({}):\n{log}",
            info["landlock"]
        ),
    }
    let landlock = &info["landlock"];
    assert!(
        landlock.is_i64()
            || landlock
                .as_str()
                .is_some_and(|s| s.starts_with("unavailable: ")),
        "info's landlock field: {landlock}"
    );
}

/// Serves `body` over HTTP on a local port, to every connection, until the test ends.
fn http_server(body: &'static str) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut request = [0u8; 1024];
            let _ = conn.read(&mut request);
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn network_none_refuses_tcp_in_chroot_mode() {
    require_root("chroot isolation");
    let store = common::store_with_busybox();
    let port = http_server("served\n");
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM busybox:latest\n\
             RUN wget -q -O /with-net http://127.0.0.1:{port}/\n\
             RUN --network=none wget -q -O /tmp/x http://127.0.0.1:{port}/ && echo connected > /no-net || echo refused > /no-net\n"
        ),
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
        std::fs::read_to_string(dest.join("with-net")).unwrap(),
        "served\n",
        "a step has the host's network by default"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("no-net")).unwrap(),
        "refused\n",
        "--network=none must refuse TCP"
    );
}
