//! Rootless builds by a user with a subordinate id range keep owners: an image's non-root
//! owners and setuid bits survive extraction, a chown in RUN, `COPY --chown` and `USER`
//! give files the container ids, and the layers are byte-identical to a root build's.
//! Runs as root (to create the user); needs the Debian packages uidmap, busybox-static and
//! util-linux (runuser).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use rbuild_testutil::{busybox_rootfs, require_binary, require_root};

mod common;
use common::{fails, ok, test_user, user_workspace};

/// The test user and its subordinate range (kept apart from other tests' ranges).
const USER: &str = "rbuildsubids";
const SUB_START: u32 = 400_000;
const SUB_COUNT: u32 = 65_536;

const EPOCH: &str = "1700000000";

/// Files in one COPY.
const MANY: usize = 600;

/// rbuild as root on store `root`, with SOURCE_DATE_EPOCH set.
fn rbuild_as_root(bin: &Path, root: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--root")
        .arg(root)
        .env_remove("RBUILD_ENGINE")
        .env("SOURCE_DATE_EPOCH", EPOCH);
    cmd
}

/// Every layer entry of the image in OCI archive `archive`, layer by layer (bottom first),
/// with the layers' digests.
fn oci_layers(archive: &Path) -> Vec<(String, Vec<rbuild_layer::EntryInfo>)> {
    let mut blobs = std::collections::BTreeMap::new();
    let mut outer = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in outer.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        blobs.insert(path, data);
    }
    let json = |path: &str| -> serde_json::Value {
        serde_json::from_slice(blobs.get(path).unwrap_or_else(|| panic!("{path} missing"))).unwrap()
    };
    let blob_path = |digest: &serde_json::Value| {
        format!("blobs/{}", digest.as_str().unwrap().replacen(':', "/", 1))
    };
    let index = json("index.json");
    let manifest = json(&blob_path(&index["manifests"][0]["digest"]));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| {
            let digest = layer["digest"].as_str().unwrap().to_string();
            let blob = &blobs[&blob_path(&layer["digest"])];
            (digest, rbuild_layer::list_entries(blob.as_slice()).unwrap())
        })
        .collect()
}

/// (uid, gid, mode bits) of `path` in the topmost layer that has it.
fn owner_in(layers: &[(String, Vec<rbuild_layer::EntryInfo>)], path: &str) -> (u64, u64, u32) {
    layers
        .iter()
        .rev()
        .find_map(|(_, entries)| {
            entries
                .iter()
                .find(|e| e.path.to_string_lossy().trim_end_matches('/') == path)
        })
        .map(|e| (e.uid, e.gid, e.mode & 0o7777))
        .unwrap_or_else(|| panic!("{path} is in no layer"))
}

#[test]
fn rootless_build_with_subordinate_ids_keeps_owners_like_root() {
    require_root("creating a user with a subordinate id range in this test");
    require_binary("/usr/bin/newuidmap", "uidmap");
    require_binary("/usr/bin/newgidmap", "uidmap");
    let (uid, gid) = test_user(USER, Some((SUB_START, SUB_COUNT)));

    // Everything the user touches lives in one world-traversable directory.
    let (work, bin) = user_workspace();
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };

    // The base, built as root: files owned by 1000:1000 and a setuid file of 1000's.
    let root_store = work.path().join("root-store");
    let base_ctx = work.path().join("base-ctx");
    busybox_rootfs(&base_ctx.join("rootfs"));
    std::fs::write(
        base_ctx.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\n\
         RUN mkdir -p /home/u && echo data > /home/u/f && chmod 600 /home/u/f \
         && touch /suid && chown -R 1000:1000 /home/u /suid && chmod 4755 /suid\n",
    )
    .unwrap();
    ok(rbuild_as_root(&bin, &root_store)
        .args(["build", "-q", "-t", "base:1"])
        .arg(&base_ctx)
        .output()
        .unwrap());
    let archive = work.path().join("base.tar");
    ok(rbuild_as_root(&bin, &root_store)
        .args(["save", "base:1", "-o"])
        .arg(&archive)
        .output()
        .unwrap());
    chmod(&archive, 0o644);

    let store = work.path().join("store");
    let ctx = work.path().join("ctx");
    let home = work.path().join("home");
    for dir in [&store, &ctx, &home] {
        std::fs::create_dir(dir).unwrap();
    }
    std::fs::write(ctx.join("f.txt"), "from the context\n").unwrap();
    // More changes than one message to the container-root helper holds.
    std::fs::create_dir(ctx.join("many")).unwrap();
    for i in 0..MANY {
        std::fs::write(ctx.join(format!("many/{i:04}-{}", "n".repeat(80))), "x").unwrap();
    }
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM base:1 AS private\n\
         RUN mkdir -p /home/p2/dist && echo built > /home/p2/dist/out \
             && chown -R 1000:1000 /home/p2 && chmod 700 /home/p2\n\
         FROM base:1\n\
         COPY --from=private /home/p2/dist/ /dist/\n\
         RUN touch /x && chown 123:456 /x\n\
         RUN mkdir -p /home/p && echo s > /home/p/secret && chown -R 1000:1000 /home/p \
             && chmod 700 /home/p\n\
         COPY --chown=1000:1000 f.txt /home/u/copied\n\
         COPY many/ /home/u/many/\n\
         COPY --chown=1000:1000 <<EOF /home/u/inline\n\
         written by a heredoc\n\
         EOF\n\
         ADD owned.tar /home/u/\n\
         ADD --chown=123:456 owned.tar /chowned/\n\
         RUN touch /home/u/f /suid && ls -ln /home/u/f /suid\n\
         RUN echo more >> /home/p/secret\n\
         USER 1000\n\
         RUN touch /tmp/y\n",
    )
    .unwrap();
    // An archive ADD unpacks, with entries owned by 1000 and a private file.
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("data")).unwrap();
    std::fs::write(tree.join("data/t"), "in the archive\n").unwrap();
    chmod(&tree.join("data/t"), 0o640);
    let tarred = Command::new("tar")
        .args(["--owner=1000", "--group=1000", "-cf"])
        .arg(ctx.join("owned.tar"))
        .arg("-C")
        .arg(&tree)
        .arg("data")
        .status()
        .unwrap();
    assert!(tarred.success());
    let bad_ctx = work.path().join("bad-ctx");
    std::fs::create_dir(&bad_ctx).unwrap();
    std::fs::write(bad_ctx.join("f.txt"), "x\n").unwrap();
    std::fs::write(
        bad_ctx.join("Dockerfile"),
        format!("FROM base:1\nCOPY --chown={} f.txt /z\n", SUB_COUNT + 5),
    )
    .unwrap();
    let owned = Command::new("chown")
        .args(["-R", &format!("{uid}:{gid}")])
        .args([&store, &ctx, &home, &bad_ctx])
        .status()
        .unwrap();
    assert!(owned.success());

    let as_user = |args: &[&str]| -> Output {
        Command::new("runuser")
            .args(["-u", USER, "--", "env"])
            .arg(format!("HOME={}", home.display()))
            .arg(format!("TMPDIR={}", home.display()))
            .arg(format!("SOURCE_DATE_EPOCH={EPOCH}"))
            .arg(&bin)
            .arg("--root")
            .arg(&store)
            .args(args)
            .env_remove("RBUILD_ENGINE")
            .output()
            .expect("runuser (util-linux) is needed")
    };
    ok(as_user(&["load", "-i", archive.to_str().unwrap()]));
    let oci_in_home = home.join("app.oci.tar");
    let built = ok(as_user(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "app:1",
        "-o",
        &format!("type=oci,dest={}", oci_in_home.display()),
        ctx.to_str().unwrap(),
    ]));
    let log = String::from_utf8_lossy(&built.stderr);
    // The base's owners were there for the step to see (ls -ln inside the build).
    assert!(
        log.lines()
            .any(|l| l.contains("1000") && l.contains("/home/u/f") && l.contains("-rw-------")),
        "the step did not see /home/u/f owned by 1000:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("/suid") && l.contains("-rwsr-xr-x")),
        "the step did not see /suid setuid:\n{log}"
    );
    let rootless = oci_layers(&oci_in_home);

    // Container ids in the layers, never the host's subordinate ids.
    assert_eq!(owner_in(&rootless, "x"), (123, 456, 0o644));
    assert_eq!(owner_in(&rootless, "home/u/copied"), (1000, 1000, 0o644));
    assert_eq!(owner_in(&rootless, "home/u/f"), (1000, 1000, 0o600));
    assert_eq!(owner_in(&rootless, "suid"), (1000, 1000, 0o4755));
    assert_eq!(owner_in(&rootless, "tmp/y").0, 1000);
    assert_eq!(owner_in(&rootless, "home/u/inline"), (1000, 1000, 0o644));
    assert_eq!(owner_in(&rootless, "home/u/data/t"), (1000, 1000, 0o640));
    // ADD --chown of an archive gives every entry the owner and keeps its mode: the chmod
    // after the chown is container root's (the user cannot chmod a mapped id's file).
    assert_eq!(owner_in(&rootless, "chowned/data"), (123, 456, 0o755));
    assert_eq!(owner_in(&rootless, "chowned/data/t"), (123, 456, 0o640));
    // A directory only 1000 may read (apt leaves such ones, owned by `_apt`): the steps
    // after it list the rootfs, and the step writing inside it lists its upper directory,
    // through container root.
    assert_eq!(owner_in(&rootless, "home/p"), (1000, 1000, 0o700));
    assert_eq!(owner_in(&rootless, "home/p/secret"), (1000, 1000, 0o644));
    // Copied out of such a directory of another stage (container root reads it).
    assert_eq!(owner_in(&rootless, "dist/out"), (1000, 1000, 0o644));
    let many: Vec<_> = rootless
        .iter()
        .flat_map(|(_, entries)| entries)
        .filter(|e| e.path.starts_with("home/u/many/"))
        .collect();
    // The files and their directory.
    assert_eq!(many.len(), MANY + 1);
    assert!(many.iter().all(|e| (e.uid, e.gid) == (0, 0)));
    for (digest, entries) in &rootless {
        for e in entries {
            assert!(
                e.uid < 65_536 && e.gid < 65_536,
                "{digest}: {} is recorded with host id {}:{}",
                e.path.display(),
                e.uid,
                e.gid
            );
        }
    }

    // The same build as root gives the same layers, byte for byte.
    let root_oci = work.path().join("root.oci.tar");
    ok(rbuild_as_root(&bin, &root_store)
        .args(["build", "-q", "-o"])
        .arg(format!("type=oci,dest={}", root_oci.display()))
        .arg(&ctx)
        .output()
        .unwrap());
    let as_root = oci_layers(&root_oci);
    let digests = |layers: &[(String, Vec<rbuild_layer::EntryInfo>)]| -> Vec<String> {
        layers.iter().map(|(d, _)| d.clone()).collect()
    };
    if digests(&as_root) != digests(&rootless) {
        for ((dr, er), (du, eu)) in as_root.iter().zip(&rootless) {
            let show = |es: &[rbuild_layer::EntryInfo]| -> Vec<String> {
                es.iter()
                    .map(|e| {
                        format!(
                            "{} {}:{} {:o} {}",
                            e.path.display(),
                            e.uid,
                            e.gid,
                            e.mode,
                            e.mtime
                        )
                    })
                    .collect()
            };
            assert_eq!(show(er), show(eu), "layer {dr} (root) vs {du} (rootless)");
        }
        panic!(
            "layer digests differ: root {:?}, rootless {:?}",
            digests(&as_root),
            digests(&rootless)
        );
    }

    // Nothing of the build is left behind, though it was owned by subordinate ids.
    let leftovers: Vec<_> = std::fs::read_dir(store.join("build"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "left in the store: {leftovers:?}");

    // The extracted base trees hold files of container users; prune removes them through
    // container root.
    let trees = || -> usize {
        std::fs::read_dir(store.join("trees"))
            .map(|d| d.flatten().filter(|e| e.path().is_dir()).count())
            .unwrap_or(0)
    };
    let before = trees();
    assert!(before >= 1, "the rootless build shared no extracted tree");
    let pruned = ok(as_user(&["prune"]));
    let text = String::from_utf8_lossy(&pruned.stdout);
    assert!(
        text.contains(&format!("Removed {before} extracted base trees")),
        "{text}"
    );
    assert_eq!(trees(), 0, "prune left trees: {text}");

    // An id outside the range: a clear error naming it.
    let err = fails(as_user(&["build", bad_ctx.to_str().unwrap()]));
    assert!(
        err.contains(&format!(
            "COPY --chown={}: uid {} is outside the subordinate ranges of {USER}",
            SUB_COUNT + 5,
            SUB_COUNT + 5
        )),
        "{err}"
    );
}
