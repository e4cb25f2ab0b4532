//! `--engine dind`: rbuild starts its own dockerd (run as root; needs the Debian packages
//! docker.io and busybox-static). The base comes from the context (`FROM scratch` + COPY)
//! because the private daemon has no images and there is no Docker Hub here.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rbuild_testutil::{busybox_rootfs, require_binary, require_root, Registry, DOCKERD};

static SERIAL: Mutex<()> = Mutex::new(());

fn context_with_rootfs(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    busybox_rootfs(&dir.path().join("rootfs"));
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    dir
}

fn rbuild() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.env_remove("DOCKER_HOST").env_remove("RBUILD_ENGINE");
    cmd
}

/// dockerd processes whose command line mentions `storage`, with their `-H` socket paths.
fn daemons_using(storage: &Path) -> Vec<(u32, Option<PathBuf>)> {
    let needle = storage.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("dockerd"))
            && args.iter().any(|a| a.contains(&needle))
        {
            let socket = args
                .iter()
                .position(|a| a == "-H")
                .and_then(|i| args.get(i + 1))
                .and_then(|h| h.strip_prefix("unix://"))
                .map(PathBuf::from);
            out.push((pid, socket));
        }
    }
    out
}

fn mounts_under(root: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(root))
        .map(str::to_string)
        .collect()
}

fn preconditions() {
    require_root("--engine dind");
    require_binary(DOCKERD, "docker.io");
}

#[test]
fn dind_build_runs_and_leaves_nothing_behind() {
    preconditions();
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ctx = context_with_rootfs(
        // A tmpfs mount: only BuildKit has RUN --mount.
        "FROM scratch\nCOPY rootfs/ /\n\
         RUN --mount=type=tmpfs,target=/t echo dind-run-ok && echo made > /made\n",
    );
    let storage = tempfile::tempdir().unwrap();
    let dest = ctx.path().join("out.tar");
    let registry = Registry::start();
    let reference = format!("{}/dind/made:1", registry.host());
    let out = rbuild()
        .args(["build", "--engine", "dind", "--push", "-t", &reference])
        .args(["--insecure-registry", &registry.host()])
        .arg("--dind-storage")
        .arg(storage.path())
        .arg("-o")
        .arg(format!("type=docker,dest={}", dest.display()))
        .arg(ctx.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dind build failed: {stderr}");
    assert!(stderr.contains("dind-run-ok"), "{stderr}");
    assert!(
        stderr.contains("[2/2] RUN --mount=type=tmpfs,target=/t echo dind-run-ok"),
        "the step lines come from BuildKit's status records: {stderr}"
    );
    let mut archive = tar::Archive::new(std::fs::File::open(&dest).unwrap());
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "manifest.json"), "{names:?}");
    assert_eq!(registry.manifest_status("dind/made", "1"), Some(200));
    assert!(
        daemons_using(storage.path()).is_empty(),
        "a dockerd outlived the build"
    );
    assert!(
        mounts_under(storage.path()).is_empty(),
        "{:?}",
        mounts_under(storage.path())
    );
    assert!(
        storage.path().join("data").is_dir(),
        "the data root is kept as the cache"
    );
}

#[test]
fn sigint_during_a_long_run_stops_the_private_daemon() {
    preconditions();
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ctx = context_with_rootfs("FROM scratch\nCOPY rootfs/ /\nRUN sleep 60\n");
    let storage = tempfile::tempdir().unwrap();
    let mut child = rbuild()
        .args(["build", "--engine", "dind", "-t", "never-finished"])
        .arg("--dind-storage")
        .arg(storage.path())
        .arg(ctx.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if line.contains("RUN sleep 60") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(90))
        .expect("the build never reached `RUN sleep 60`");
    // Give the daemon a moment to start the step's container.
    std::thread::sleep(Duration::from_secs(2));
    let daemons = daemons_using(storage.path());
    assert_eq!(
        daemons.len(),
        1,
        "expected one private dockerd, found {daemons:?}"
    );
    let socket = daemons[0].1.clone().expect("the private dockerd's socket");
    assert!(socket.exists());

    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(45) {
            let _ = child.kill();
            panic!("rbuild did not stop within 45 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = reader.join().unwrap();
    assert_eq!(status.code(), Some(130), "{output}");
    assert!(output.contains("interrupted by SIGINT"), "{output}");
    assert!(
        daemons_using(storage.path()).is_empty(),
        "the private dockerd survived SIGINT"
    );
    assert!(
        mounts_under(storage.path()).is_empty(),
        "{:?}",
        mounts_under(storage.path())
    );
    assert!(
        !socket.exists(),
        "the socket {} was left behind",
        socket.display()
    );
    assert!(
        !socket.parent().unwrap().exists(),
        "the daemon's runtime directory was left behind"
    );
}

#[test]
fn dind_as_non_root_is_refused_with_the_alternatives() {
    preconditions();
    let ctx = context_with_rootfs("FROM scratch\n");
    // setpriv (util-linux) drops to nobody for this one command.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_rbuild"))
        .args([
            "build",
            "--engine",
            "dind",
            "--dind-storage",
            "/nonexistent/dind",
        ])
        .arg(ctx.path())
        .env_remove("RBUILD_ENGINE")
        .output()
        .expect("cannot run setpriv (Debian package util-linux)");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs root"), "{stderr}");
    assert!(stderr.contains("--engine native"), "{stderr}");
    assert!(stderr.contains("--engine dood"), "{stderr}");
}
