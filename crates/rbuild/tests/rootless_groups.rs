//! Supplementary groups of RUN steps in rootless builds. BuildKit gives a step the groups
//! /etc/group lists for its user plus the primary group; a rootless build can only give
//! the ones its user namespace maps. Runs as root to create the test users (CI does).

use std::path::Path;
use std::process::{Command, Output};

use rbuild_testutil::require_root;

mod common;
use common::{ok, rbuild, store_with_busybox, test_user, user_workspace};

/// Builds, as `user` (with `subids`), a RUN as root on a base whose /etc/group lists root
/// in `adm` (4), as Alpine's does; returns the `Groups:` line the step saw.
fn root_groups_as(user: &str, subids: Option<(u32, u32)>) -> String {
    let (uid, gid) = test_user(user, subids);
    let (work, bin) = user_workspace();

    // The base, built as root and handed over as an archive.
    let base_store = store_with_busybox();
    let base_ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        base_ctx.path().join("Dockerfile"),
        "FROM busybox:latest\nRUN echo adm:x:4:root >> /etc/group\n",
    )
    .unwrap();
    ok(rbuild(base_store.path())
        .args(["build", "-q", "-t", "grouped:1"])
        .arg(base_ctx.path())
        .output()
        .unwrap());
    let archive = work.path().join("grouped.tar");
    ok(rbuild(base_store.path())
        .args(["save", "grouped:1", "-o"])
        .arg(&archive)
        .output()
        .unwrap());
    std::fs::set_permissions(
        &archive,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();

    let (store, ctx, home) = (
        work.path().join("store"),
        work.path().join("ctx"),
        work.path().join("home"),
    );
    for dir in [&store, &ctx, &home] {
        std::fs::create_dir(dir).unwrap();
    }
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM grouped:1\nRUN grep ^Groups: /proc/self/status > /groups.txt\n",
    )
    .unwrap();
    let owned = Command::new("chown")
        .args(["-R", &format!("{uid}:{gid}")])
        .args([&store, &ctx, &home])
        .status()
        .unwrap();
    assert!(owned.success());
    let as_user = |args: &[&str]| -> Output {
        Command::new("runuser")
            .args(["-u", user, "--", "env"])
            .arg(format!("HOME={}", home.display()))
            .arg(format!("TMPDIR={}", home.display()))
            .arg(&bin)
            .arg("--root")
            .arg(&store)
            .args(args)
            .env_remove("RBUILD_ENGINE")
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .expect("runuser (util-linux) is needed")
    };
    ok(as_user(&["load", "-i", archive.to_str().unwrap()]));
    let out = home.join("out");
    ok(as_user(&[
        "build",
        "--progress",
        "plain",
        "-o",
        &format!("type=local,dest={}", out.display()),
        ctx.to_str().unwrap(),
    ]));
    read_groups(&out.join("groups.txt"))
}

fn read_groups(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.trim_start_matches("Groups:").trim().to_string()
}

#[test]
fn rootless_run_gets_the_groups_its_namespace_maps() {
    require_root("creating users and running rbuild as them in this test");
    // With subordinate ids, root gets 0 and the listed 4, as under BuildKit.
    let mut mapped: Vec<u32> = root_groups_as("rbuildgrp", Some((400_000, 65_536)))
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    mapped.sort_unstable();
    assert_eq!(mapped, vec![0, 4]);
    // A single-id mapping has only group 0 and denies setgroups(2): the step still runs
    // (the unmappable group 4 is left out instead of failing every RUN).
    let single = root_groups_as("rbuildgrpsingle", None);
    assert!(
        !single.split_whitespace().any(|g| g == "4"),
        "group 4 cannot exist in a single-id namespace: {single:?}"
    );
}
