//! `--engine dood` gives the same daemon's BuildKit image: every fidelity case
//! (`testdata/buildkit-cases/fidelity_*`, rbuild's own cases beside BuildKit's ported tests)
//! is built by `rbuild build --engine dood` and by `DOCKER_BUILDKIT=1 docker build` on one
//! private dockerd, and the two images must be equal by `rbuild diff` (the project's own
//! comparison, [`image_diff`]).
//!
//! This checks the dood engine alone, against whatever BuildKit the daemon embeds (Debian's
//! Docker 20.10: BuildKit v0.8). rbuild's native images are compared with BuildKit v0.32 (the
//! reference) elsewhere: with its goldens by `cargo test -p rbuild --test buildkit_cases`, live
//! by `cargo xtask fidelity --reference DIR`, which also builds the real-world Debian apps
//! (docs/fidelity.md).
//!
//! Runs as root (dockerd); needs the Debian packages docker.io and busybox-static.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use rbuild_testutil::{Dockerd, DOCKER_CLI};

mod common;
use common::golden::{base_context, cases, Case, BASE_NAME};

/// The cases this suite builds: the fidelity cases of the golden suite.
const CASE_PREFIX: &str = "fidelity_";

fn output_text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(what: &str, out: Output) -> Output {
    assert!(out.status.success(), "{what} failed: {}", output_text(&out));
    out
}

/// Runs the rbuild binary with a store at `root`, talking to `daemon` for `--engine dood`.
fn rbuild(root: &Path, daemon: &Dockerd) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.arg("--root")
        .arg(root)
        .env("DOCKER_HOST", daemon.host())
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("RBUILD_ENGINE")
        .env_remove("SOURCE_DATE_EPOCH");
    cmd
}

fn docker(daemon: &Dockerd) -> Command {
    let mut cmd = Command::new(DOCKER_CLI);
    cmd.arg("-H").arg(daemon.host());
    cmd
}

/// Makes the cases' base with rbuild (as `buildkit_cases.rs` does) and loads the very same
/// image (same id) into the daemon.
fn make_base(root: &Path, daemon: &Dockerd, work: &Path) {
    let ctx = base_context(work);
    ok(
        "rbuild build (base)",
        rbuild(root, daemon)
            .args(["build", "-q", "-t", BASE_NAME])
            .arg(&ctx)
            .output()
            .unwrap(),
    );
    let archive = work.join("base.tar");
    ok(
        "rbuild save",
        rbuild(root, daemon)
            .args(["save", BASE_NAME, "-o"])
            .arg(&archive)
            .output()
            .unwrap(),
    );
    ok(
        "docker load",
        docker(daemon)
            .arg("load")
            .arg("-i")
            .arg(&archive)
            .output()
            .unwrap(),
    );
    let ours = ok(
        "rbuild inspect",
        rbuild(root, daemon)
            .args(["inspect", BASE_NAME])
            .output()
            .unwrap(),
    );
    let ours: serde_json::Value = serde_json::from_slice(&ours.stdout).unwrap();
    let theirs = daemon.docker_ok(&["image", "inspect", "-f", "{{.Id}}", BASE_NAME]);
    assert_eq!(
        ours[0]["Id"].as_str().unwrap(),
        theirs.trim(),
        "the base must be the same image in both"
    );
}

/// The build options of a case (`case.json`): build args, target, secrets, and the
/// Dockerfile (`-f`, outside the context as in the golden suite).
fn option_args(case: &Case) -> Vec<String> {
    let mut args = vec![
        "-f".to_string(),
        case.dir.join("Dockerfile").display().to_string(),
    ];
    for arg in case.strings("build_args") {
        args.push("--build-arg".to_string());
        args.push(arg);
    }
    if let Some(target) = case.text("target") {
        args.push("--target".into());
        args.push(target.into());
    }
    for id in case.strings("secrets") {
        args.push("--secret".into());
        args.push(format!(
            "id={id},src={}",
            case.dir.join("secrets").join(&id).display()
        ));
    }
    args
}

/// The case's context: `context/`, or an empty directory.
fn context_of(case: &Case, work: &Path) -> std::path::PathBuf {
    let dir = case.dir.join("context");
    if dir.is_dir() {
        return dir;
    }
    let empty = work.join("empty-context");
    std::fs::create_dir_all(&empty).unwrap();
    empty
}

/// The daemon's own BuildKit (`--network host`: the test daemon has no bridge), saved as a
/// docker archive.
fn build_docker(daemon: &Dockerd, case: &Case, args: &[String], context: &Path, dest: &Path) {
    let tag = format!("fidelity-docker/{}", case.name);
    ok(
        &format!("docker build {}", case.name),
        docker(daemon)
            .env("DOCKER_BUILDKIT", "1")
            .args(["build", "-q", "--network", "host", "-t", &tag])
            .args(args)
            .arg(context)
            .output()
            .unwrap(),
    );
    ok(
        "docker save",
        docker(daemon)
            .args(["save", "-o"])
            .arg(dest)
            .arg(&tag)
            .output()
            .unwrap(),
    );
}

/// `--engine dood` (`--network host` as the daemon's build: the test daemon has no bridge);
/// Err(the build's output) when it fails.
fn build_dood(
    root: &Path,
    daemon: &Dockerd,
    case: &Case,
    args: &[String],
    context: &Path,
    dest: &Path,
) -> Result<(), String> {
    let out = rbuild(root, daemon)
        .args(["build", "--engine", "dood", "--network", "host", "-q"])
        .args(["-t", &format!("fidelity-dood/{}", case.name)])
        .args(args)
        .arg("-o")
        .arg(format!("type=docker,dest={}", dest.display()))
        .arg(context)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(output_text(&out))
    }
}

/// Compares two docker archives; returns the differences, one per line (empty = equal).
///
/// `rbuild diff` compares the flattened file tree (type, mode, uid, gid, size, sha256, link
/// target, device numbers, xattrs, hardlink groups), each layer entry by entry (same layer
/// boundaries, same whiteouts), the runtime config fields and the platform, the history
/// entries (`created_by`, `empty_layer`, `comment`, `author`), and checks every layer
/// against `rootfs.diff_ids`.
///
/// Ignored (`--ignore-timestamps`), because they differ between two runs of the same
/// builder: file mtimes (RUN and WORKDIR stamp the time of the build), the config's and the
/// history's `created`, and the diff ids and image id, which follow from the mtimes.
fn image_diff(a: &Path, b: &Path) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(["diff", "--json", "--ignore-timestamps"])
        .arg(format!("docker-archive:{}", a.display()))
        .arg(format!("docker-archive:{}", b.display()))
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "rbuild diff failed: {}",
        output_text(&out)
    );
    let report: rbuild_diff::Report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("rbuild diff's JSON: {e}: {}", output_text(&out)));
    assert_eq!(
        report.is_equal(),
        report.equal,
        "rbuild diff's verdict and its sections disagree: {report:?}"
    );
    report.without_rerecorded_dirs().lines()
}

#[test]
fn dood_images_equal_the_same_daemons_buildkit_images() {
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| c.name.starts_with(CASE_PREFIX))
        .collect();
    assert!(
        cases.len() >= 20,
        "only {} fidelity cases in testdata/buildkit-cases",
        cases.len()
    );

    let daemon = Dockerd::start();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    make_base(&root, &daemon, work.path());

    let mut problems = Vec::new();
    let mut table = String::from("| case | dood vs docker |\n|---|---|\n");
    for case in &cases {
        let args = option_args(case);
        let context = context_of(case, work.path());
        let dir = work.path().join(&case.name);
        std::fs::create_dir_all(&dir).unwrap();
        let (buildkit, dood) = (dir.join("docker.tar"), dir.join("dood.tar"));
        build_docker(&daemon, case, &args, &context, &buildkit);
        let found = match build_dood(&root, &daemon, case, &args, &context, &dood) {
            Ok(()) => image_diff(&dood, &buildkit),
            Err(output) => vec![format!("[build] the dood build failed: {output}")],
        };
        let verdict = if found.is_empty() {
            "equal"
        } else {
            problems.push(format!(
                "{}: the images differ:\n  {}",
                case.name,
                found.join("\n  ")
            ));
            "DIFFERENT"
        };
        writeln!(table, "| {} | {verdict} |", case.name).unwrap();
        // The archives are compared; the next case needs the disk.
        std::fs::remove_dir_all(&dir).unwrap();
    }
    println!("{table}");
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}\n\n{table}",
        problems.len(),
        problems.join("\n")
    );
}
