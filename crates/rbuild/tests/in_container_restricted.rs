//! The Kubernetes "restricted" pod, as `docker run --user 1000:1000 --cap-drop ALL
//! --security-opt no-new-privileges` with Docker's default seccomp profile, on a real private
//! dockerd: no user namespaces, no chroot, no capabilities. What the `restricted` isolation
//! (in progress) relies on must work there, and a build asking for it must be refused
//! before producing anything. Runs as root (CI does); needs the Debian packages docker.io
//! and busybox-static.

use std::path::Path;
use std::process::Output;

use rbuild_testutil::{busybox_rootfs, require_root, Dockerd};

mod common;
use common::{copy_at_same_path, shared_libraries};

const IMAGE: &str = "rbuild-in-container-restricted:test";

/// Docker's options for Kubernetes' restricted level (the seccomp profile is Docker's
/// default, which is what `RuntimeDefault` means under containerd).
const RESTRICTED: &[&str] = &["--cap-drop", "ALL", "--security-opt", "no-new-privileges"];

/// Records the process's confinement, probes, tries a build with `--isolation restricted`
/// and one with `auto`, and lists the store's images. Every outcome lands in /out.
const SCRIPT: &str = r#"
grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd):' /proc/self/status > /out/status.txt
rbuild --root /out/store info --json > /out/info.json 2> /out/info.err
rbuild --root /out/store build --isolation restricted -t app:1 /ctx/app > /out/restricted.out 2>&1
echo $? > /out/restricted.rc
rbuild --root /out/store build -t app:1 /ctx/app > /out/auto.out 2>&1
echo $? > /out/auto.rc
rbuild --root /out/store images > /out/images.txt 2>&1
echo SCRIPT-DONE
"#;

/// A build whose RUN step chowns to root: with this isolation's owners not yet in layers,
/// an image from it would be wrong.
const APP_DOCKERFILE: &str = r#"FROM scratch
COPY data.txt /data.txt
RUN --mount=type=bind,source=tools/bin,target=/bin ["/bin/sh", "-c", "chown 0:0 /data.txt"]
"#;

fn daemon_with_rbuild_image() -> Dockerd {
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
    let app = root.join("ctx/app");
    busybox_rootfs(&app.join("tools"));
    std::fs::write(app.join("Dockerfile"), APP_DOCKERFILE).unwrap();
    std::fs::write(app.join("data.txt"), "data\n").unwrap();
    daemon.import_rootfs(root, IMAGE);
    daemon
}

/// Runs [`SCRIPT`] as `user` under [`RESTRICTED`]; returns the run and its /out.
fn run_restricted(daemon: &Dockerd, user: &str) -> (Output, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let volume = format!("{}:/out", out.path().display());
    let mut args = vec![
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &volume,
        "--user",
        user,
    ];
    args.extend_from_slice(RESTRICTED);
    args.extend_from_slice(&[
        "-e",
        "PATH=/usr/local/bin:/bin",
        "-e",
        "HOME=/tmp",
        IMAGE,
        "sh",
        "-c",
        SCRIPT,
    ]);
    let run = daemon.docker(&args);
    (run, out)
}

fn describe(run: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    )
}

fn read(out: &Path, name: &str, run: &Output) -> String {
    std::fs::read_to_string(out.join(name))
        .unwrap_or_else(|e| panic!("no {name} ({e}):\n{}", describe(run)))
}

/// The facts the `restricted` isolation relies on, in a restricted container as `user`.
fn assert_restricted_prerequisites(out: &Path, run: &Output) {
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("SCRIPT-DONE"),
        "{}",
        describe(run)
    );
    // The environment is what Kubernetes' restricted level gives: no_new_privs, a seccomp
    // filter, no capability at all.
    let status = read(out, "status.txt", run);
    for wanted in [
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
    ] {
        assert!(status.contains(wanted), "{wanted:?} not in:\n{status}");
    }
    let info: serde_json::Value = serde_json::from_str(&read(out, "info.json", run))
        .unwrap_or_else(|e| panic!("info.json: {e}\n{}", read(out, "info.err", run)));
    assert_eq!(info["userns"]["ok"], false, "{info:#}");
    assert_eq!(info["chroot"]["ok"], false, "{info:#}");
    // Landlock (to keep steps away from rbuild's store and credentials) is allowed by
    // Docker's profile: measured ABI 7 on kernel 6.18.
    assert!(
        info["landlock"].as_i64().is_some_and(|abi| abi >= 1),
        "{info:#}"
    );
    assert!(
        info["auto"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no isolation available")),
        "{info:#}"
    );
    assert_eq!(
        info["restricted"]["seccomp_user_notif"]["ok"], true,
        "a filter with a listener, a supervised fchownat(…, 0, 0): {info:#}"
    );
    assert_eq!(
        info["restricted"]["ptrace_child"]["ok"], true,
        "ptrace of our own child, seeing a chroot Docker refuses: {info:#}"
    );

    // And says what the isolation cannot do, even once it builds.
    let cannot = info["restricted"]["cannot"].to_string();
    assert!(
        cannot.contains("mount, unshare") && cannot.contains("another user"),
        "{info:#}"
    );

    // Asked for by name, the isolation refuses the build, naming what is missing.
    assert_eq!(read(out, "restricted.rc", run), "1\n");
    let refused = read(out, "restricted.out", run);
    assert!(
        refused.contains("isolation `restricted` cannot build yet")
            && refused.contains("recorded owners"),
        "{refused}"
    );
    // `auto` still finds nothing (it does not pick an isolation that cannot build yet).
    assert_ne!(read(out, "auto.rc", run), "0\n");
    let auto = read(out, "auto.out", run);
    assert!(auto.contains("no isolation available"), "{auto}");
    // Neither left an image behind.
    let images = read(out, "images.txt", run);
    assert!(!images.contains("app"), "{images}");
}

#[test]
fn the_restricted_isolations_mechanism_works_in_a_restricted_container() {
    require_root("starting dockerd for the restricted container");
    let daemon = daemon_with_rbuild_image();

    let (run, out) = run_restricted(&daemon, "1000:1000");
    assert_restricted_prerequisites(out.path(), &run);

    // OpenShift's way: an arbitrary uid with no passwd entry, group 0.
    let (run, out) = run_restricted(&daemon, "1000770000:0");
    assert_restricted_prerequisites(out.path(), &run);
}
