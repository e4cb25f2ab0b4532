//! Whole builds attacking their own confinement, as root and as unprivileged users with and
//! without a subordinate id range: a base image ships device nodes (null 1:3, kmsg 1:11),
//! rbuild's environment holds a canary and a secret no step mounts, and one RUN step tries
//! to reach all of it, through the rootfs and through `RUN --mount=type=bind,from=`.
//! Needs root (CI runs as root), busybox-static, uidmap and util-linux's runuser.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use rbuild_testutil::{busybox_rootfs, require_root};

mod common;
use common::{ok, test_user, user_workspace};

const CANARY: &str = "rbuild-canary-91f27ab3";
const SECRET: &str = "rbuild-secret-0c4d8e55";
const STAT_INTERVAL: &str = "/proc/sys/vm/stat_interval";

/// A docker archive of `devbase:1`: a busybox rootfs plus /devnodes/null3 (1:3) and
/// /devnodes/kmsg (1:11), both 0666, as an untrusted image could ship them.
fn device_image_archive(dest: &Path) {
    let rootfs = tempfile::tempdir().unwrap();
    busybox_rootfs(rootfs.path());
    let mut layer = tar::Builder::new(Vec::new());
    layer.follow_symlinks(false);
    layer.append_dir_all(".", rootfs.path()).unwrap();
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    layer
        .append_data(&mut dir, "devnodes/", std::io::empty())
        .unwrap();
    for (name, minor) in [("null3", 3), ("kmsg", 11)] {
        let mut node = tar::Header::new_gnu();
        node.set_entry_type(tar::EntryType::Char);
        node.set_mode(0o666);
        node.set_size(0);
        node.set_device_major(1).unwrap();
        node.set_device_minor(minor).unwrap();
        layer
            .append_data(&mut node, format!("devnodes/{name}"), std::io::empty())
            .unwrap();
    }
    let layer = layer.into_inner().unwrap();
    let diff_id = rbuild_image::Digest::of(&layer).to_string();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
    .to_string();
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": ["devbase:1"],
        "Layers": ["layer.tar"],
    }])
    .to_string();
    let mut archive = tar::Builder::new(std::fs::File::create(dest).unwrap());
    for (name, data) in [
        ("config.json", config.as_bytes()),
        ("layer.tar", layer.as_slice()),
        ("manifest.json", manifest.as_bytes()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        archive.append_data(&mut header, name, data).unwrap();
    }
    archive.finish().unwrap();
}

/// The step: each attack prints `LEAK:what` if it got through (written `LEAK\"\":` so the
/// command line the progress output echoes does not match). Rootless extraction skips
/// device nodes, so there they are only tried where they exist.
const DOCKERFILE: &str = "FROM devbase:1\n\
RUN --mount=type=bind,from=devbase:1,target=/m sh -c '\
test -c /devnodes/null3 && echo x > /devnodes/null3 && echo LEAK\"\":rootfs-null; \
test -c /devnodes/kmsg && echo rbuild-confinement-test > /devnodes/kmsg && echo LEAK\"\":rootfs-kmsg; \
test -c /m/devnodes/null3 && echo x > /m/devnodes/null3 && echo LEAK\"\":bind-null; \
echo 9 > /proc/sys/vm/stat_interval && echo LEAK\"\":sysctl; \
test -c /devnodes/null3 && test -c /m/devnodes/null3 && echo HAS\"\"-DEVICES; \
cat /proc/*/environ; ls -l /proc/*/fd/; env; echo STEP-DONE'\n";

fn assert_confined(who: &str, out: &Output, interval_before: &str) {
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let interval = std::fs::read_to_string(STAT_INTERVAL).unwrap();
    if interval != interval_before {
        std::fs::write(STAT_INTERVAL, interval_before).unwrap();
    }
    assert!(out.status.success(), "{who}: the build failed:\n{text}");
    assert!(
        text.contains("STEP-DONE"),
        "{who}: the step did not run:\n{text}"
    );
    assert!(!text.contains("LEAK:"), "{who}:\n{text}");
    assert!(
        !text.contains(CANARY),
        "{who}: rbuild's environment reached the step:\n{text}"
    );
    assert!(
        !text.contains(SECRET),
        "{who}: an unmounted secret reached the step:\n{text}"
    );
    assert_eq!(
        interval, interval_before,
        "{who}: the host's vm.stat_interval changed"
    );
}

#[test]
fn a_step_reaches_no_device_no_host_tunable_and_nothing_of_rbuild() {
    require_root("making users and device nodes");
    let interval_before = std::fs::read_to_string(STAT_INTERVAL).unwrap();
    let (work, bin) = user_workspace();
    let archive = work.path().join("devbase.tar");
    device_image_archive(&archive);
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o644)).unwrap();

    let build = |who: &str, user: Option<&str>| -> Output {
        let base = work.path().join(who);
        let (store, ctx, home) = (base.join("store"), base.join("ctx"), base.join("home"));
        for dir in [&store, &ctx, &home] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
        if let Some(user) = user {
            let chown = Command::new("chown")
                .args(["-R", user])
                .arg(&base)
                .status()
                .unwrap();
            assert!(chown.success());
        }
        let command = |args: &[&str]| -> Command {
            let mut cmd = match user {
                Some(user) => {
                    let mut cmd = Command::new("runuser");
                    cmd.args(["-u", user, "--"]).arg(&bin);
                    cmd
                }
                None => Command::new(&bin),
            };
            cmd.arg("--root")
                .arg(&store)
                .args(args)
                .env("HOME", &home)
                .env("TMPDIR", &home)
                .env_remove("RBUILD_ENGINE")
                .env("RBUILD_TEST_CANARY", CANARY)
                .env("RBUILD_TEST_SECRET", SECRET);
            cmd
        };
        ok(command(&["load", "-i"]).arg(&archive).output().unwrap());
        command(&[
            "build",
            "--progress",
            "plain",
            "--no-cache",
            "--secret",
            "id=unused,env=RBUILD_TEST_SECRET",
        ])
        .arg(&ctx)
        .output()
        .unwrap()
    };

    let out = build("root", None);
    assert_confined("root", &out, &interval_before);
    // As root the image's device nodes are extracted: the attack above was real.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HAS-DEVICES")
            || String::from_utf8_lossy(&out.stdout).contains("HAS-DEVICES"),
        "the device nodes should be in the root build's rootfs and bind mount"
    );

    for (user, range) in [
        ("rbuildconfine1", Some((500_000, 65_536))),
        ("rbuildconfine2", None),
    ] {
        test_user(user, range);
        let out = build(user, Some(user));
        assert_confined(user, &out, &interval_before);
    }
}
