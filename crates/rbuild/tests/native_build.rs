//! `rbuild build` with the native engine, end to end through the binary: a base image made
//! by rbuild itself (`FROM scratch` + a busybox rootfs), pushed to a real registry, then
//! pulled by a build in an empty store. Runs as root (CI does); needs the Debian packages
//! busybox-static and docker-registry.

use std::path::Path;
use std::process::{Command, Output};

use rbuild_testutil::{require_root, Registry};

mod common;
use common::{fails, ok, rbuild, store_with_busybox, test_user, user_workspace};

fn example_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello")
}

#[test]
fn example_builds_from_a_base_pulled_from_a_real_registry() {
    require_root("native builds in this test");
    let registry = Registry::start();
    let base = format!("{}/base/busybox:latest", registry.host());

    // Make the base with rbuild and push it: no other tool is involved.
    let first = store_with_busybox();
    let digest_file = first.path().join("pushed-digest");
    ok(rbuild(first.path())
        .args(["push", "busybox:latest", &base, "--digest-file"])
        .arg(&digest_file)
        .output()
        .unwrap());
    let pushed = std::fs::read_to_string(&digest_file).unwrap();
    assert!(pushed.starts_with("sha256:"), "{pushed}");

    // A second, empty store: the build must pull the base from the registry.
    let second = tempfile::tempdir().unwrap();
    let out_dir = second.path().join("out");
    let iid = second.path().join("iid");
    let out = ok(rbuild(second.path())
        .args(["build", "--progress", "plain", "-t", "hello:1"])
        .args(["--build-arg", &format!("BASE={base}")])
        .arg("-o")
        .arg(format!("type=local,dest={}", out_dir.display()))
        .arg("--iidfile")
        .arg(&iid)
        .arg(example_dir())
        .output()
        .unwrap());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("[builder 4/4] RUN <<EOF"), "{log}");
    assert_eq!(
        std::fs::read_to_string(out_dir.join("greeting.txt")).unwrap(),
        "hello from a container built by rbuild\n"
    );
    let mode = std::fs::metadata(out_dir.join("greeting.txt")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o7777,
        0o644
    );

    // The image's config is what the Dockerfile says, and the iid file names it.
    let inspect = ok(rbuild(second.path())
        .args(["inspect", "hello:1"])
        .output()
        .unwrap());
    let json: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let image = &json[0];
    assert_eq!(
        image["Id"].as_str().unwrap(),
        std::fs::read_to_string(&iid).unwrap().trim()
    );
    let config = &image["Config"]["config"];
    assert_eq!(config["Cmd"], serde_json::json!(["cat", "/greeting.txt"]));
    assert_eq!(config["Labels"]["org.opencontainers.image.title"], "hello");
    assert!(config["Env"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("GREETING_FILE=/greeting.txt")));
    assert_eq!(
        config["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "test -f \"$GREETING_FILE\""])
    );

    // Push the result and read it back in a third store.
    let dest = format!("{}/app/hello:1", registry.host());
    ok(rbuild(second.path())
        .args(["push", "hello:1", &dest])
        .output()
        .unwrap());
    let third = tempfile::tempdir().unwrap();
    ok(rbuild(third.path()).args(["pull", &dest]).output().unwrap());
    let again = ok(rbuild(third.path())
        .args(["inspect", &dest])
        .output()
        .unwrap());
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again[0]["Id"], image["Id"]);
}

#[test]
fn build_errors_name_what_failed() {
    require_root("native builds in this test");
    let root = store_with_busybox();
    let ctx = tempfile::tempdir().unwrap();

    // A failing RUN: the command and its exit code.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:latest\nRUN echo about to fail && exit 7\n",
    )
    .unwrap();
    let err = fails(rbuild(root.path()).arg(ctx.path()).output().unwrap());
    assert!(err.contains("exit code 7"), "{err}");
    assert!(err.contains("echo about to fail"), "{err}");

    // A COPY source outside the context.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:latest\nCOPY ../secret /x\n",
    )
    .unwrap();
    let err = fails(rbuild(root.path()).arg(ctx.path()).output().unwrap());
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("../secret"), "{err}");

    // A secret file that does not exist fails before any work.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:latest\nRUN --mount=type=secret,id=tok cat /run/secrets/tok\n",
    )
    .unwrap();
    let err = fails(
        rbuild(root.path())
            .args(["build", "--secret", "id=tok,src=/nonexistent/tok"])
            .arg(ctx.path())
            .output()
            .unwrap(),
    );
    assert!(err.contains("/nonexistent/tok"), "{err}");

    // A Dockerfile error shows the file, line and the line itself.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:latest\nCOPY --frm=a x y\n",
    )
    .unwrap();
    let err = fails(rbuild(root.path()).arg(ctx.path()).output().unwrap());
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("COPY --frm=a x y"), "{err}");

    // Nothing was tagged by the failed builds.
    let images = ok(rbuild(root.path()).args(["images", "-q"]).output().unwrap());
    assert_eq!(String::from_utf8_lossy(&images.stdout).lines().count(), 1);
}

#[test]
fn secrets_reach_run_but_never_the_image() {
    require_root("native builds in this test");
    let root = store_with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:latest\n\
         RUN --mount=type=secret,id=tok test \"$(cat /run/secrets/tok)\" = s3cr3t-value && echo match > /result\n",
    )
    .unwrap();
    let out_dir = ctx.path().join("out");
    ok(rbuild(root.path())
        .args([
            "build",
            "--secret",
            "id=tok,env=RBUILD_TEST_TOKEN",
            "-t",
            "s:1",
        ])
        .env("RBUILD_TEST_TOKEN", "s3cr3t-value")
        .arg("-o")
        .arg(format!("type=local,dest={}", out_dir.display()))
        .arg(ctx.path())
        .output()
        .unwrap());
    // The step saw the secret...
    assert_eq!(
        std::fs::read_to_string(out_dir.join("result")).unwrap(),
        "match\n"
    );
    // ...but no layer holds /run/secrets/tok.
    assert!(!out_dir.join("run/secrets/tok").exists());
}

#[test]
fn built_image_runs_in_docker_after_save_and_load() {
    require_root("native builds and a private dockerd in this test");
    let root = store_with_busybox();
    let ok_build = ok(rbuild(root.path())
        .args([
            "build",
            "-q",
            "-t",
            "hello:run",
            "--build-arg",
            "BASE=busybox:latest",
        ])
        .arg(example_dir())
        .output()
        .unwrap());
    let image_id = String::from_utf8_lossy(&ok_build.stdout).trim().to_string();
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    let archive = root.path().join("hello.tar");
    ok(rbuild(root.path())
        .args(["save", "hello:run", "--format", "docker", "-o"])
        .arg(&archive)
        .output()
        .unwrap());

    let daemon = rbuild_testutil::Dockerd::start();
    let loaded = daemon.docker_ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("hello:run"), "{loaded}");
    // Docker computes the same image id from the same config.
    let id = daemon.docker_ok(&["image", "inspect", "-f", "{{.Id}}", "hello:run"]);
    assert_eq!(id.trim(), image_id);
    let output = daemon.docker_ok(&["run", "--rm", "--network", "none", "hello:run"]);
    assert_eq!(output, "hello from a container built by rbuild\n");
}

/// Every entry of every layer blob in an OCI archive (config and manifest blobs are
/// skipped: they are not tars).
fn oci_layer_entries(archive: &Path) -> Vec<rbuild_layer::EntryInfo> {
    let mut outer = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut entries = Vec::new();
    for entry in outer.entries().unwrap() {
        let mut entry = entry.unwrap();
        if !entry.path().unwrap().starts_with("blobs/sha256") {
            continue;
        }
        let mut blob = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut blob).unwrap();
        if blob.first() == Some(&b'{') {
            continue;
        }
        entries.extend(rbuild_layer::list_entries(blob.as_slice()).unwrap());
    }
    entries
}

#[test]
fn unprivileged_user_without_subids_builds_from_an_image() {
    require_root("creating a user and running rbuild as it in this test");
    let user = "rbuildnosub";
    let (uid, gid) = test_user(user, None);
    assert_ne!(uid, 0);

    // Everything the user touches lives in one world-traversable directory.
    let (work, bin) = user_workspace();
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };

    // The base image, built as root and handed over as an archive.
    let base_store = store_with_busybox();
    let archive = work.path().join("busybox.tar");
    ok(rbuild(base_store.path())
        .args(["save", "busybox:latest", "-o"])
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
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:latest\nWORKDIR /app\nCOPY f.txt .\nRUN echo hi > /app/run.txt\n",
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
    let oci = work.path().join("app.oci.tar");
    // The user writes the archive into its own home.
    let oci_in_home = home.join("app.oci.tar");
    ok(as_user(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "app:1",
        "-o",
        &format!("type=oci,dest={}", oci_in_home.display()),
        ctx.to_str().unwrap(),
    ]));
    std::fs::rename(&oci_in_home, &oci).unwrap();

    // Files created by container root (WORKDIR, COPY, RUN) are root's in the layers, not
    // the host user's.
    let entries = oci_layer_entries(&oci);
    for wanted in ["app/", "app/f.txt", "app/run.txt"] {
        let found: Vec<_> = entries
            .iter()
            .filter(|e| {
                e.path.to_string_lossy().trim_end_matches('/') == wanted.trim_end_matches('/')
            })
            .collect();
        assert!(!found.is_empty(), "{wanted} is in no layer");
        for entry in found {
            assert_eq!(
                (entry.uid, entry.gid),
                (0, 0),
                "{wanted} is recorded with the host user's ids"
            );
        }
    }
    // Giving files to another id would need subordinate ids: a clear error, not EPERM.
    let chown_ctx = home.join("chown-ctx");
    std::fs::create_dir(&chown_ctx).unwrap();
    std::fs::write(chown_ctx.join("f.txt"), "x\n").unwrap();
    std::fs::write(
        chown_ctx.join("Dockerfile"),
        "FROM busybox:latest\nCOPY --chown=1000 f.txt /x\n",
    )
    .unwrap();
    let err = fails(as_user(&["build", chown_ctx.to_str().unwrap()]));
    assert!(
        err.contains("COPY --chown=1000: rootless builds cannot give files to uid 1000 without subordinate ids"),
        "{err}"
    );

    // The base image's files are still root's too.
    let busybox = entries
        .iter()
        .find(|e| e.path.to_string_lossy() == "bin/busybox")
        .expect("bin/busybox is in the base layer");
    assert_eq!((busybox.uid, busybox.gid), (0, 0));
}

/// The step cache through the command line: `CACHED` lines, `--explain-misses`,
/// `--no-cache-filter`, and `rbuild prune --keep-storage`.
#[test]
fn cache_hits_misses_explanations_and_prune() {
    require_root("native builds in this test");
    let root = store_with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("app.txt"), "1\n").unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox AS base\nRUN echo base > /base\n\
         FROM base\nCOPY app.txt /app.txt\nRUN cat /app.txt\n",
    )
    .unwrap();
    let build = |extra: &[&str]| -> String {
        // A fixed epoch: a step that runs again makes the same layer (no new mtimes).
        let out = ok(rbuild(root.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["build", "--progress", "plain", "-t", "app"])
            .args(extra)
            .arg(ctx.path())
            .output()
            .unwrap());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let cold = build(&[]);
    assert!(!cold.contains("CACHED"), "{cold}");
    let warm = build(&[]);
    assert_eq!(warm.matches("CACHED").count(), 3, "{warm}");

    std::fs::write(ctx.path().join("app.txt"), "2\n").unwrap();
    let changed = build(&["--explain-misses"]);
    assert_eq!(changed.matches("CACHED").count(), 1, "{changed}");
    assert!(
        changed.contains("cache miss: source app.txt changed"),
        "{changed}"
    );
    assert!(
        changed.contains("cache miss: the step before it changed"),
        "{changed}"
    );

    // The base stage runs again; its layer is the same, so the next stage still hits.
    let filtered = build(&["--no-cache-filter", "base"]);
    assert!(filtered.contains("#2 DONE"), "{filtered}");
    assert_eq!(filtered.matches("CACHED").count(), 2, "{filtered}");

    // The builds started from one shared extracted tree of the base (and of the cached
    // base stage, for the COPY that missed).
    let trees = || {
        std::fs::read_dir(root.path().join("trees"))
            .map(|d| d.flatten().filter(|e| e.path().is_dir()).count())
            .unwrap_or(0)
    };
    let trees_before = trees();
    assert!(trees_before >= 1, "no extracted tree was shared");

    // The image keeps its layers; dropping the cache makes the next build run the steps
    // of the stage that is not in the image.
    let out = ok(rbuild(root.path())
        .args(["prune", "--keep-storage", "0"])
        .output()
        .unwrap());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("build cache records"), "{text}");
    // The extracted base trees the builds shared go too (they are made again when needed).
    assert!(
        text.contains(&format!("Removed {trees_before} extracted base trees")),
        "{text}"
    );
    assert!(text.contains("finished build directories"), "{text}");
    assert_eq!(trees(), 0, "prune leaves no tree");
    let after = build(&[]);
    assert_eq!(after.matches("CACHED").count(), 0, "{after}");
    let err = fails(
        rbuild(root.path())
            .args(["prune", "--filter", "label=x"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("only until=DURATION"), "{err}");
}

#[test]
fn ssh_key_files_reach_run_through_a_private_agent() {
    require_root("native builds in this test");
    let root = store_with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let keygen = |name: &str, passphrase: &str| {
        let key = keys.path().join(name);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen (openssh-client) is installed");
        assert!(status.success());
        key
    };
    let key = keygen("rbuild-cli-key", "");
    let fingerprint = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key.with_extension("pub"))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8_lossy(&fingerprint.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    // busybox has no ssh-add: the host's, with its libraries, at the host's paths.
    let ssh_add = Path::new("/usr/bin/ssh-add");
    let mut files = vec![ssh_add.to_path_buf()];
    let ldd = Command::new("ldd").arg(ssh_add).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(path.into());
        }
    }
    for file in &files {
        let dest = ctx.path().join("sys").join(file.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(file, &dest).unwrap();
    }
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:latest\n\
         COPY sys/ /\n\
         RUN --mount=type=ssh /usr/bin/ssh-add -l > /keys\n",
    )
    .unwrap();
    let out_dir = ctx.path().join("out");
    let build = |ssh: &str| {
        rbuild(root.path())
            .args(["build", "-q", "--ssh", ssh, "-o"])
            .arg(format!("type=local,dest={}", out_dir.display()))
            .arg(ctx.path())
            .output()
            .unwrap()
    };
    ok(build(&format!("default={}", key.display())));
    let listed = std::fs::read_to_string(out_dir.join("keys")).unwrap();
    assert!(
        listed.contains(&fingerprint) && listed.contains("rbuild-cli-key"),
        "the key is listed through the forwarded agent: {listed:?}"
    );
    // The private agent is gone with the build: no socket is left in the store.
    let mut stack = vec![root.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            use std::os::unix::fs::FileTypeExt;
            assert!(!kind.is_socket(), "{} was left", entry.path().display());
            if kind.is_dir() {
                stack.push(entry.path());
            }
        }
    }

    let locked = keygen("rbuild-locked-key", "hunter2xyz");
    let err = fails(build(&format!(
        "default={},{}",
        key.display(),
        locked.display()
    )));
    assert!(err.contains(&locked.display().to_string()), "{err}");
    assert!(err.contains("passphrase"), "{err}");
    assert!(!err.contains("hunter2xyz"), "{err}");
    let err = fails(build("default=/nonexistent/key"));
    assert!(err.contains("/nonexistent/key"), "{err}");
}
