//! `rbuild build` with the native engine, end to end through the binary: a base image made
//! by rbuild itself (`FROM scratch` + a busybox rootfs), pushed to a real registry, then
//! pulled by a build in an empty store. Runs as root (CI does); needs the Debian packages
//! busybox-static and docker-registry.

use std::path::Path;
use std::process::{Command, Output};

use rbuild_testutil::{busybox_rootfs, require_root, Registry};

fn rbuild(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.arg("--root")
        .arg(root)
        .env_remove("RBUILD_ENGINE")
        .env_remove("SOURCE_DATE_EPOCH");
    cmd
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "rbuild failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "rbuild should have failed:\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A store holding `busybox:latest`, built by rbuild from a local rootfs.
fn store_with_busybox() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let ctx = tempfile::tempdir().unwrap();
    busybox_rootfs(&ctx.path().join("rootfs"));
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD [\"sh\"]\n",
    )
    .unwrap();
    ok(rbuild(root.path())
        .args(["-q", "-t", "busybox:latest"])
        .arg(ctx.path())
        .output()
        .unwrap());
    root
}

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
