//! The GitHub Actions recipe (docs/ci/github-actions.md), run as written: its first workflow's
//! steps are read from the document and their `run:` scripts executed as GitHub's runner
//! does (`bash --noprofile --norc -eo pipefail`, the job's and step's `env:`, `$GITHUB_PATH`
//! added to the next steps' PATH), as an unprivileged user with subordinate ids, in a checkout
//! of a small project. What the test changes, and only that: `${{ … }}` expressions get the
//! test's values, `ghcr.io` is a local registry with a password, and the download address is
//! a local file server handing out the rbuild binary under test.
//!
//! Runs as root (creates the user); needs curl, runuser, docker-registry and apache2-utils.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rbuild_testutil::{busybox_rootfs, require_binary, require_root, Registry};

mod common;
use common::workflow::{expand, parse_job, yaml_blocks};
use common::{ok, rbuild, test_user, user_workspace};

const USER: &str = "rbuildgh";
const SUB_START: u32 = 700_000;
const ACTOR: &str = "octo-builder";
const TOKEN: &str = "ghs_token-of-the-test-never-printed";
const REPOSITORY: &str = "team/gh";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// What GitHub fills in for the test's repository.
const EXPRESSIONS: &[(&str, &str)] = &[
    ("secrets.GITHUB_TOKEN", TOKEN),
    ("github.actor", ACTOR),
    ("github.repository", REPOSITORY),
    ("github.sha", SHA),
];

/// Serves `file` at every path ending in `/rbuild` (404 otherwise) on a local port, one
/// request after another, until the test ends.
fn serve_binary(file: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut header = String::new();
            while reader
                .read_line(&mut header)
                .map(|n| n > 2)
                .unwrap_or(false)
            {
                header.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("");
            if path.ends_with("/rbuild") {
                let body = std::fs::read(&file).unwrap();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
            } else {
                let _ = write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        }
    });
    port
}

fn describe(out: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn chown_tree(uid: u32, gid: u32, paths: &[&Path]) {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .args(paths)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_github_actions_workflow_builds_and_pushes_as_written() {
    require_root("creating the runner's user");
    require_binary("/usr/bin/curl", "curl");
    let (uid, gid) = test_user(USER, Some((SUB_START, 65_536)));

    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ci/github-actions.md"),
    )
    .unwrap();
    let job = parse_job(&yaml_blocks(&doc)[0]);
    assert!(job.steps.len() >= 3, "{job:?}");

    // The registry standing in for ghcr.io, holding the project's base image (pushed by root
    // with its own credentials file).
    let registry = Registry::start_with_htpasswd(ACTOR, TOKEN);
    let host = registry.host();
    let root_config = tempfile::tempdir().unwrap();
    std::fs::write(
        root_config.path().join("config.json"),
        registry.docker_config_json(),
    )
    .unwrap();
    let base_ctx = tempfile::tempdir().unwrap();
    busybox_rootfs(&base_ctx.path().join("rootfs"));
    std::fs::write(
        base_ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\n",
    )
    .unwrap();
    let root_store = tempfile::tempdir().unwrap();
    ok(rbuild(root_store.path())
        .env("DOCKER_CONFIG", root_config.path())
        .args(["build", "-q", "--push", "-t"])
        .arg(format!("{host}/base/busybox:1"))
        .arg(base_ctx.path())
        .output()
        .unwrap());

    // The runner: the user's home, the checkout, $GITHUB_PATH and $RUNNER_TEMP, all in one
    // world-traversable directory; the binary served for the install step.
    let (work, bin) = user_workspace();
    let home = work.path().join("home");
    let checkout = work.path().join("checkout");
    let temp = work.path().join("runner-temp");
    for dir in [&home, &checkout, &temp] {
        std::fs::create_dir(dir).unwrap();
    }
    let github_path = temp.join("github_path");
    std::fs::write(&github_path, "").unwrap();
    std::fs::write(
        checkout.join("Dockerfile"),
        format!("FROM {host}/base/busybox:1\nCOPY app.txt /app.txt\nRUN id -u > /built-as.txt && echo ran > /run.txt\n"),
    )
    .unwrap();
    std::fs::write(checkout.join("app.txt"), "from the checkout\n").unwrap();
    chown_tree(uid, gid, &[&home, &checkout, &temp]);
    let port = serve_binary(bin.clone());
    let download = format!("http://127.0.0.1:{port}/rbuild/latest/rbuild");

    let mut logs = String::new();
    for (n, step) in job.steps.iter().enumerate() {
        if let Some(uses) = &step.uses {
            assert!(
                uses.starts_with("actions/checkout@"),
                "step {n} uses {uses}: only the checkout is emulated"
            );
            continue;
        }
        let script = step
            .run
            .as_deref()
            .unwrap_or_else(|| panic!("step {n} has neither uses nor run"));
        let script = expand(script, EXPRESSIONS).replace("ghcr.io", &host);
        let script_file = temp.join(format!("step-{n}.sh"));
        std::fs::write(&script_file, &script).unwrap();
        std::fs::set_permissions(&script_file, std::fs::Permissions::from_mode(0o644)).unwrap();

        let added: Vec<String> = std::fs::read_to_string(&github_path)
            .unwrap()
            .lines()
            .rev()
            .map(str::to_string)
            .collect();
        let mut path = added.join(":");
        if !path.is_empty() {
            path.push(':');
        }
        path.push_str("/usr/sbin:/usr/bin:/sbin:/bin");
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", USER, "--", "env", "-i"])
            .arg(format!("HOME={}", home.display()))
            .arg(format!("PATH={path}"))
            .arg(format!("GITHUB_PATH={}", github_path.display()))
            .arg(format!("GITHUB_WORKSPACE={}", checkout.display()))
            .arg(format!("RUNNER_TEMP={}", temp.display()))
            .arg("CI=true")
            .arg("GITHUB_ACTIONS=true");
        for (key, value) in job.env.iter().chain(step.env.iter()) {
            let value = expand(value, EXPRESSIONS);
            let value = if key == "RBUILD_URL" {
                assert!(value.starts_with("https://"), "{value}");
                download.clone()
            } else {
                value
            };
            cmd.arg(format!("{key}={value}"));
        }
        cmd.args(["bash", "--noprofile", "--norc", "-eo", "pipefail"])
            .arg(&script_file)
            .current_dir(&checkout);
        let out = cmd.output().expect("runuser (util-linux) is needed");
        let text = describe(&out);
        assert!(
            out.status.success(),
            "step {n} ({:?}) failed:\n{script}\n{text}",
            step.name
        );
        logs.push_str(&text);
    }

    // The install step put the served binary on the PATH of later steps.
    let installed = home.join(".local/bin/rbuild");
    assert_eq!(
        std::fs::metadata(&installed).unwrap().len(),
        std::fs::metadata(&bin).unwrap().len()
    );
    assert!(
        logs.contains("isolation"),
        "rbuild info printed nothing:\n{logs}"
    );
    assert!(!logs.contains(TOKEN), "the token was printed:\n{logs}");

    // The image and its registry cache were pushed; the image holds the RUN step's output,
    // made as root of the build's user namespace.
    let status = |repo: &str, tag: &str| registry.manifest_status_logged_in(repo, tag);
    assert_eq!(status(REPOSITORY, SHA), Some(200), "{logs}");
    assert_eq!(
        status(&format!("{REPOSITORY}/cache"), "buildcache"),
        Some(200),
        "the registry cache was not pushed:\n{logs}"
    );
    let check_ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        check_ctx.path().join("Dockerfile"),
        format!("FROM {host}/{REPOSITORY}:{SHA}\n"),
    )
    .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    ok(rbuild(root_store.path())
        .env("DOCKER_CONFIG", root_config.path())
        .args(["build", "-q", "-o"])
        .arg(format!("type=local,dest={}", out_dir.path().display()))
        .arg(check_ctx.path())
        .output()
        .unwrap());
    let read = |p: &str| std::fs::read_to_string(out_dir.path().join(p)).unwrap();
    assert_eq!(read("run.txt"), "ran\n");
    assert_eq!(read("built-as.txt"), "0\n");
    assert_eq!(read("app.txt"), "from the checkout\n");
    // The login's credentials stayed in the runner's home, out of the image.
    assert!(home.join(".docker/config.json").exists());
    assert!(!out_dir.path().join("root/.docker").exists());
}
