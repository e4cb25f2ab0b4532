//! BuildKit's own Dockerfile frontend tests, ported: every case of `testdata/buildkit-cases/`
//! (a Dockerfile, a context, a `case.json` and a `golden.json`) is built with rbuild (native
//! engine) and its image's description (`rbuild_diff::describe`: every entry of the layers the
//! build made, the runtime config, the history; no times) must equal the golden one, which
//! `cargo xtask fidelity --reference DIR --update` made with BuildKit v0.32.2. A case whose
//! `case.json` has `error` must fail with that text in rbuild's message; one with
//! `known_difference` must still differ from its golden (so a fix shows up). No BuildKit is
//! needed here. Runs as root (CI does); needs the Debian package busybox-static.
//!
//! The base every case builds `FROM` (`buildkit-cases-base`) is made here exactly as the xtask
//! makes it: the machine's static busybox with all its applets, and the cases' `base/etc`
//! files, `FROM scratch` + `COPY rootfs/ /`. Its layers are not part of the goldens.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rbuild_diff::describe::BaseCounts;
use rbuild_testutil::require_root;

mod common;
use common::golden::{
    base_context, base_counts, cases, cases_dir, judge_with, start_servers, Case, BASE_NAME,
};
use rbuild_testutil::CaseServers;

fn rbuild(store: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.arg("--root")
        .arg(store)
        .env_remove("RBUILD_ENGINE")
        .env_remove("SOURCE_DATE_EPOCH");
    cmd
}

/// Builds the base into `store` on the host.
fn make_base(store: &Path, work: &Path) -> BaseCounts {
    let ctx = base_context(work);
    let out = rbuild(store)
        .args(["build", "-q", "-t", BASE_NAME])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building the base: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    base_counts(store)
}

/// Builds a case; `Ok(archive)` or `Err(stderr)`. A case with servers gets its Dockerfile
/// and build arguments with their address in place of the placeholder.
fn build(
    store: &Path,
    case: &Case,
    work: &Path,
    isolation: &str,
    servers: Option<&CaseServers>,
) -> Result<PathBuf, String> {
    let dest = work.join(format!("{}-{isolation}.tar", case.name));
    let context = case.dir.join("context");
    let context = if context.is_dir() {
        context
    } else {
        let empty = work.join(format!("{}-context", case.name));
        std::fs::create_dir_all(&empty).unwrap();
        empty
    };
    // How the Dockerfile and the context reach rbuild: `-f` beside a directory (the
    // default), or as BuildKit's tests `testTarContext` and `testSymlinkedDockerfile` give
    // them (BuildKit's golden is the directory's: the same build).
    let (context, dockerfile) = match (case.text("remote_context"), case.text("source")) {
        // A context URL (`rbuild build URL`), `-f` the name of the Dockerfile inside it.
        (Some(url), _) => {
            let servers = servers.expect("a remote_context needs http_files or git_repos");
            let dockerfile = case.text("dockerfile_name").map(PathBuf::from);
            (PathBuf::from(servers.substitute(url)), dockerfile)
        }
        (None, source) => match source {
            None => match servers {
                Some(servers) => {
                    let text = std::fs::read_to_string(case.dir.join("Dockerfile")).unwrap();
                    let dockerfile = work.join(format!("{}-{isolation}.Dockerfile", case.name));
                    std::fs::write(&dockerfile, servers.substitute(&text)).unwrap();
                    (context, Some(dockerfile))
                }
                None => (context, Some(case.dir.join("Dockerfile"))),
            },
            Some("tar") => (tar_context(case, &context, work), None),
            Some("symlinked-dockerfile") => (symlinked_dockerfile(case, &context, work), None),
            Some("socket") => {
                // A copy of the context with a Unix socket (`testCopySocket`), as the xtask
                // gives BuildKit; the socket file stays when the listener closes.
                let dir = work.join(format!("{}-socket-context", case.name));
                let _ = std::fs::remove_dir_all(&dir);
                copy_tree(&context, &dir);
                std::os::unix::net::UnixListener::bind(dir.join("socket.sock")).unwrap();
                (dir, Some(case.dir.join("Dockerfile")))
            }
            Some(other) => panic!("{}: unknown source {other:?}", case.name),
        },
    };
    let mut cmd = rbuild(store);
    cmd.args([
        "build",
        "-q",
        "--progress",
        "plain",
        "--isolation",
        isolation,
    ]);
    if let Some(dockerfile) = dockerfile {
        cmd.arg("-f").arg(dockerfile);
    }
    // BuildKit's image exporter attributes (`rewrite-timestamp=`, `source-date-epoch=`).
    let attrs: String = case
        .strings("exporter_attrs")
        .iter()
        .map(|a| format!(",{a}"))
        .collect();
    cmd.arg("-o")
        .arg(format!("type=docker,dest={}{attrs}", dest.display()));
    for arg in case.strings("build_args") {
        let arg = servers.map_or(arg.clone(), |s| s.substitute(&arg));
        cmd.arg("--build-arg").arg(arg);
    }
    if let Some(target) = case.text("target") {
        cmd.arg("--target").arg(target);
    }
    // The build-wide network (buildx's `--network`; BuildKit's `force-network-mode`).
    if let Some(network) = case.text("network") {
        cmd.arg("--network").arg(network);
    }
    for id in case.strings("secrets") {
        let path = case.dir.join("secrets").join(&id);
        cmd.arg("--secret")
            .arg(format!("id={id},src={}", path.display()));
    }
    if case.spec.get("ssh").and_then(|v| v.as_bool()) == Some(true) {
        // An agent holding a key made now (the xtask gives BuildKit one the same way).
        let key = work.join(format!("{}-{isolation}-ssh-key", case.name));
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success(), "ssh-keygen");
        cmd.arg("--ssh").arg(format!("default={}", key.display()));
    }
    // Named contexts: `docker-image://REF` as it is (the base is a name in the store
    // here), `local:DIR` a directory of the case, `oci-layout:DIR` the OCI layout rbuild
    // makes of a directory of the case (the xtask gives BuildKit the same).
    if let Some(contexts) = case.spec.get("named_contexts").and_then(|v| v.as_object()) {
        for (name, value) in contexts {
            let value = value.as_str().unwrap();
            let value = if let Some(dir) = value.strip_prefix("local:") {
                case.dir.join(dir).display().to_string()
            } else if let Some(dir) = value.strip_prefix("oci-layout:") {
                let (layout, digest) = oci_layout(store, case, dir, work, isolation);
                format!("oci-layout://{}@{digest}", layout.display())
            } else {
                // A URL of the case's server (`{{HTTP}}/...`), or an image.
                servers.map_or(value.to_string(), |s| s.substitute(value))
            };
            cmd.arg("--build-context").arg(format!("{name}={value}"));
        }
    }
    let out = cmd.arg(&context).output().unwrap();
    if out.status.success() {
        Ok(dest)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The OCI layout of the case's directory `dir` (its Dockerfile built `FROM` the base,
/// exported with `-o type=oci` and unpacked) and the digest of its one manifest, made once
/// per isolation: what `"oci-layout:DIR"` named contexts read (BuildKit's tests export a
/// layout from an earlier build the same way).
fn oci_layout(
    store: &Path,
    case: &Case,
    dir: &str,
    work: &Path,
    isolation: &str,
) -> (PathBuf, String) {
    let layout = work.join(format!("{}-{dir}-{isolation}-layout", case.name));
    if !layout.join("index.json").is_file() {
        let archive = work.join(format!("{}-{dir}-{isolation}-layout.tar", case.name));
        let out = rbuild(store)
            .args(["build", "-q", "--isolation", isolation, "-o"])
            .arg(format!("type=oci,dest={}", archive.display()))
            .arg(case.dir.join(dir))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: building the OCI layout of {dir}: {}",
            case.name,
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::create_dir_all(&layout).unwrap();
        tar::Archive::new(std::fs::File::open(&archive).unwrap())
            .unpack(&layout)
            .unwrap();
        std::fs::remove_file(&archive).unwrap();
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    (layout, digest)
}

/// The case's context with its Dockerfile inside, as one tar archive (`testTarContext`).
fn tar_context(case: &Case, context: &Path, work: &Path) -> PathBuf {
    let dir = work.join(format!("{}-tar-src", case.name));
    let _ = std::fs::remove_dir_all(&dir);
    copy_tree(context, &dir);
    std::fs::copy(case.dir.join("Dockerfile"), dir.join("Dockerfile")).unwrap();
    let archive = work.join(format!("{}-context.tar", case.name));
    let status = Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar of {}", dir.display());
    archive
}

/// The case's context with `Dockerfile` a link to `Dockerfile.web`, the case's Dockerfile
/// (`testSymlinkedDockerfile`).
fn symlinked_dockerfile(case: &Case, context: &Path, work: &Path) -> PathBuf {
    let dir = work.join(format!("{}-linked", case.name));
    let _ = std::fs::remove_dir_all(&dir);
    copy_tree(context, &dir);
    std::fs::copy(case.dir.join("Dockerfile"), dir.join("Dockerfile.web")).unwrap();
    std::os::unix::fs::symlink("Dockerfile.web", dir.join("Dockerfile")).unwrap();
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

#[test]
fn every_case_has_a_dockerfile_a_spec_and_a_golden() {
    let cases = cases();
    assert!(cases.len() >= 20, "only {} cases", cases.len());
    for case in &cases {
        assert!(case.dir.join("Dockerfile").is_file(), "{}", case.name);
        assert!(case.dir.join("golden.json").is_file(), "{}", case.name);
        assert!(
            case.text("ports").is_some_and(|p| p.contains("test"))
                || case
                    .text("origin")
                    .is_some_and(|o| o.starts_with("rbuild's own case")),
            "{}: case.json must name the BuildKit test it ports (`ports`), or say it is \
             rbuild's own (`origin`)",
            case.name
        );
        assert!(
            case.text("description").is_some(),
            "{}: no description",
            case.name
        );
    }
    // Every directory is a case (a directory without case.json would be silently skipped).
    for entry in std::fs::read_dir(cases_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() && name != "base" {
            assert!(path.join("case.json").is_file(), "{name} has no case.json");
        }
    }
}

/// Builds every case with `isolation` and compares it with its golden.
fn every_case_with(isolation: &str) {
    require_root("native builds of the BuildKit cases");
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let base = make_base(&store, work.path());
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    let started = Instant::now();
    // `RBUILD_CASES=a,b` builds only those cases (while working on them).
    let only = std::env::var("RBUILD_CASES").ok();
    for case in cases() {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|n| n == case.name))
        {
            continue;
        }
        let servers = start_servers(&case);
        let built = build(&store, &case, work.path(), isolation, servers.as_ref());
        let (verdict, problem) = judge_with(&case, built, base, isolation, servers.as_ref());
        if let Some(problem) = problem {
            failures.push(format!("{}: {problem}", case.name));
        }
        rows.push(format!("| {} | {verdict} |", case.name));
    }
    eprintln!(
        "{} cases in {:.0} s ({isolation})\n| case | rbuild vs BuildKit |\n|---|---|\n{}",
        rows.len(),
        started.elapsed().as_secs_f64(),
        rows.join("\n")
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases fail with --isolation {isolation}:\n\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n\n")
    );
}

#[test]
fn rbuild_images_equal_buildkit_goldens() {
    every_case_with("userns");
}

/// The isolation of root in a default `docker run` (no namespaces, no mounts: RUN --mount
/// realised by copies and moves), forced on the host: the same images.
#[test]
fn rbuild_images_in_chroot_mode_equal_buildkit_goldens() {
    every_case_with("chroot");
}

/// `rbuild build --check` (buildx's `--check`): the build checks alone, on stdout, exit 1
/// when one is found; nothing is built or pulled (the base of the cases is not in the
/// store). `check_rules_warn` breaks several rules; `check_skip` skips them all.
#[test]
fn check_flag_reports_the_warnings_and_builds_nothing() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let case = cases_dir().join("check_rules_warn");
    let out = rbuild(&store)
        .args(["build", "--check", "-t", "never:built", "-f"])
        .arg(case.join("Dockerfile"))
        .arg(case.join("context"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with("Check complete, 8 warnings have been found!\n"),
        "{stdout}"
    );
    for line in [
        "Dockerfile:2: LegacyKeyValueFormat: \"ENV key=value\" should be used instead of legacy \"ENV key value\" format",
        "Dockerfile:3: SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ARG \"SECRET_TOKEN\")",
        "Dockerfile:4: WorkdirRelativePath: Relative workdir \"relative\" can have unexpected results",
        "Dockerfile:5: JSONArgsRecommended: JSON arguments recommended for CMD",
        "Dockerfile:11: MultipleInstructionsDisallowed: Multiple ENTRYPOINT instructions",
    ] {
        assert!(stdout.contains(line), "{line}\n{stdout}");
    }
    let images = rbuild(&store).args(["images"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&images.stdout).contains("never"),
        "--check built an image"
    );

    let case = cases_dir().join("check_skip");
    let out = rbuild(&store)
        .args(["build", "--check", "-f"])
        .arg(case.join("Dockerfile"))
        .arg(work.path())
        .output()
        .unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (Some(0), "Check complete, no warnings found.\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Seconds since the Unix epoch of an RFC 3339 time in UTC (`2024-01-02T03:04:05.5Z`), as
/// image configs write `created`.
fn rfc3339_seconds(text: &str) -> f64 {
    let (date, time) = text.split_once('T').expect("a date and a time");
    let time = time.strip_suffix('Z').expect("a UTC time");
    let mut date = date.split('-').map(|p| p.parse::<i64>().unwrap());
    let (year, month, day) = (
        date.next().unwrap(),
        date.next().unwrap(),
        date.next().unwrap(),
    );
    // Days from 1970-01-01 to the civil date (Howard Hinnant's `days_from_civil`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut clock = time.split(':');
    let hours: f64 = clock.next().unwrap().parse().unwrap();
    let minutes: f64 = clock.next().unwrap().parse().unwrap();
    let seconds: f64 = clock.next().unwrap().parse().unwrap();
    days as f64 * 86_400.0 + hours * 3600.0 + minutes * 60.0 + seconds
}

/// `testNamedImageContextTimestamps`: a build `FROM` an image named context
/// (`--build-context NAME=docker-image://REF`) gets its own `created`, later than the
/// context image's and within minutes of it, not the context's time. (Goldens keep no
/// times without `SOURCE_DATE_EPOCH`, so this is no golden case.)
#[test]
fn a_build_on_an_image_context_gets_its_own_created_time() {
    require_root("native builds of the BuildKit cases");
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    make_base(&store, work.path());
    let dir = work.path().join("ctx");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM alpine\nRUN echo foo >> /test\n",
    )
    .unwrap();
    let build = |tag: &str, context: &str| {
        let out = rbuild(&store)
            .args(["build", "-q", "-t", tag, "--build-context"])
            .arg(format!("alpine=docker-image://{context}"))
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building {tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    build("first", BASE_NAME);
    // `created` has at least a second's resolution in some writers: a second apart.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build("derived", "first");
    let handle = rbuild_store::Store::open(&store).unwrap();
    let created = |name: &str| {
        let image = rbuild_diff::read_image(
            &rbuild_diff::ImageSource::Store(name.to_string()),
            Some(&handle),
        )
        .unwrap();
        let text = image.config["created"].as_str().unwrap().to_string();
        (text.clone(), rfc3339_seconds(&text))
    };
    let (first_text, first) = created("first");
    let (derived_text, derived) = created("derived");
    assert_ne!(first_text, derived_text);
    let later = derived - first;
    assert!(
        later > 0.0 && later < 600.0,
        "derived {derived_text} is not within 10 minutes after first {first_text}"
    );
    assert_eq!(rfc3339_seconds("1970-01-02T00:00:01.5Z"), 86_401.5);
    assert_eq!(rfc3339_seconds("2000-03-01T00:00:00Z"), 951_868_800.0);
}

/// A client of the ssh-agent protocol for a step: connects to `$SSH_AUTH_SOCK`, asks for
/// the identities, reads the reply's length and closes (built static: the cases' base is
/// busybox, which has no client for a Unix socket).
const AGENT_PING_C: &str = r#"
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int main(void) {
    const char *path = getenv("SSH_AUTH_SOCK");
    if (!path) return 2;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) return 3;
    unsigned char request[5] = {0, 0, 0, 1, 11};
    if (write(fd, request, 5) != 5) return 4;
    unsigned char header[4];
    if (read(fd, header, 4) != 4) return 5;
    close(fd);
    return 0;
}
"#;

/// `testSSHFileDescriptorsClosed`: a step that talks to the forwarded agent three times in
/// a row leaves no connection open between the talks: `ssh-agent -d` serves every request
/// on its first connection slot ("process_message: socket 1"), never a second one, both
/// when the agent's socket is bound into the step and when the step gets a socket of its
/// own relaying to it (`mode=0666`). The step waits a little between the talks, as `ssh -T`
/// in BuildKit's test takes its time: the agent notices a closed connection on its next
/// poll, and a client that connects again at once could get the second slot while the first
/// is only closing. No golden: BuildKit's test reads the agent's log.
#[test]
fn ssh_agent_connections_are_closed_after_each_use() {
    require_root("native builds of the BuildKit cases");
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    make_base(&store, work.path());
    let ctx = work.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(work.path().join("agentping.c"), AGENT_PING_C).unwrap();
    let compiled = Command::new("cc")
        .args(["-static", "-O", "-o"])
        .arg(ctx.join("agentping"))
        .arg(work.path().join("agentping.c"))
        .output()
        .expect("cc (a C compiler with a static libc: Debian's gcc and libc6-dev)");
    assert!(
        compiled.status.success(),
        "cc -static: {}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let socket = work.path().join("agent.sock");
    let log_path = work.path().join("agent.log");
    let mut agent = Command::new("ssh-agent")
        .arg("-d")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("ssh-agent (Debian's openssh-client)");
    let started = Instant::now();
    while !socket.exists() {
        assert!(started.elapsed().as_secs() < 10, "ssh-agent made no socket");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut failures = Vec::new();
    for mount in ["type=ssh", "type=ssh,mode=0666"] {
        std::fs::write(
            ctx.join("Dockerfile"),
            format!(
                "FROM {BASE_NAME}\nCOPY agentping /agentping\n\
                 RUN --mount={mount} for i in 1 2 3; do /agentping || exit 1; sleep 0.3; done\n"
            ),
        )
        .unwrap();
        let out = rbuild(&store)
            .args(["build", "-q", "--no-cache", "--ssh"])
            .arg(format!("default={}", socket.display()))
            .arg(&ctx)
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "--mount={mount}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(failures.is_empty(), "{failures:?}\n{log}");
    assert_eq!(
        log.matches("process_message: socket 1 ").count(),
        6,
        "three requests per build, each on the first slot:\n{log}"
    );
    assert!(
        !log.contains("process_message: socket 2") && !log.contains("process_message: socket 3"),
        "a connection was left open:\n{log}"
    );
}

/// `testAddGitChecksumCache`: `ADD --checksum=<commit>` of a git source keys its step as the
/// same ADD without it, so a second build (with the checksum) reuses the first one's steps:
/// the file a RUN after it wrote from /dev/urandom is the first build's. A third build with
/// `--no-cache` writes another one (the RUN is random indeed). Two builds into one store
/// cannot be a golden case.
#[test]
fn a_git_checksum_keeps_the_add_steps_cache_key() {
    require_root("native builds of the BuildKit cases");
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    make_base(&store, work.path());
    // The repository of `add_git` (tags v0.0.1 to v0.0.3, fixed commit ids).
    let servers = CaseServers::start(
        &cases_dir().join("add_git"),
        &[],
        &cases_dir().join("add_git/repos"),
        &[("repo".to_string(), rbuild_testutil::ObjectFormat::Sha1)],
    )
    .unwrap();
    let v2 = "52376956f403e94fd4da68e9ef595b1278be571d";
    let build = |name: &str, checksum: &str, extra: &[&str]| -> String {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("Dockerfile"),
            format!(
                "FROM {BASE_NAME} AS src\n\
                 ADD --keep-git-dir {checksum}{}/git/repo.git#v0.0.2 /repo\n\
                 RUN head -c 16 /dev/urandom | base64 > /repo/unique.txt\n\
                 FROM scratch\n\
                 COPY --from=src /repo/unique.txt /\n",
                servers.url()
            ),
        )
        .unwrap();
        let out = rbuild(&store)
            .args(["build", "-q", "--progress", "plain", "-o"])
            .arg(format!("type=local,dest={}", dir.join("out").display()))
            .args(extra)
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(dir.join("out/unique.txt")).unwrap()
    };
    let first = build("plain", "", &[]);
    let with_checksum = build("checksum", &format!("--checksum={v2} "), &[]);
    assert_eq!(
        first, with_checksum,
        "the checksum changed the ADD's cache key"
    );
    let fresh = build("fresh", &format!("--checksum={v2} "), &["--no-cache"]);
    assert_ne!(
        first, fresh,
        "the RUN is not random: the test proves nothing"
    );
}

/// Hostile context URLs: an HTTP archive whose entry climbs out (`../escape`) is refused and
/// writes nothing outside its directory; a git context whose subdirectory is a link to the
/// host's `/etc` is refused; the password of a URL shows in no message. Each fails before
/// any step (no base is needed).
#[test]
fn hostile_context_urls_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    // An archive with `../escape`, written header by header (the tar crate refuses `..`).
    let mut archive = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut archive);
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..9].copy_from_slice(b"../escape");
        header.set_size(6);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, &b"owned\n"[..]).unwrap();
        builder.finish().unwrap();
    }
    let case = work.path().join("case");
    std::fs::create_dir_all(case.join("repos")).unwrap();
    std::fs::write(case.join("escape.tar"), &archive).unwrap();
    std::fs::write(
        case.join("repos/repo.sh"),
        "echo 'FROM scratch' >Dockerfile\nln -s /etc out\ngit add Dockerfile out\ngit commit -qm links\n",
    )
    .unwrap();
    let servers = CaseServers::start(
        &case,
        &[rbuild_testutil::CaseFile {
            path: "/escape.tar".into(),
            file: "escape.tar".into(),
            headers: Vec::new(),
        }],
        &case.join("repos"),
        &[("repo".to_string(), rbuild_testutil::ObjectFormat::Sha1)],
    )
    .unwrap();
    // Where `../escape` would land: beside the context's directory, in the temporary
    // directory rbuild fetches into (TMPDIR, private to this test).
    let tmp = work.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let build = |context: &str| -> String {
        let out = rbuild(&store)
            .env("TMPDIR", &tmp)
            .args(["build", "-q", "--progress", "plain"])
            .arg(context)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{context} built");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = build(&format!("{}/escape.tar", servers.url()));
    assert!(err.contains("unpacking the context"), "{err}");
    let escaped: Vec<_> = walk_names(&tmp);
    assert!(
        !escaped.iter().any(|n| n == "escape"),
        "the archive wrote outside its directory: {escaped:?}"
    );
    let err = build(&format!("{}/git/repo.git#:out", servers.url()));
    assert!(err.contains("resolves outside the repository"), "{err}");
    let url = servers
        .url()
        .replace("http://", "http://user:hunter2secret@");
    let err = build(&format!("{url}/git/missing.git"));
    assert!(err.contains("xxxxx@"), "{err}");
    assert!(!err.contains("hunter2secret"), "the password leaked: {err}");
    // Nothing fetched is left behind.
    assert!(walk_names(&tmp).is_empty(), "{:?}", walk_names(&tmp));
}

/// The names of every entry below `dir`.
fn walk_names(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            names.push(entry.file_name().to_string_lossy().into_owned());
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    names
}

/// `-o …,rewrite-timestamp=true` without any epoch: BuildKit's exporter warns ("rewrite-timestamp
/// is specified, but no source-date-epoch was found") and rewrites nothing; rbuild says the
/// same and annotates no layer. Outputs asking for different epochs are refused before
/// anything is built, naming the option.
#[test]
fn rewrite_timestamp_without_an_epoch_warns_and_conflicting_epochs_are_refused() {
    require_root("a native build");
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let context = work.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("Dockerfile"), "FROM scratch\nCOPY f /\n").unwrap();
    std::fs::write(context.join("f"), "data").unwrap();
    let archive = work.path().join("out.tar");
    let out = rbuild(&store)
        .args(["build", "--progress", "plain", "-o"])
        .arg(format!(
            "type=docker,dest={},rewrite-timestamp=true",
            archive.display()
        ))
        .arg(&context)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("rewrite-timestamp is specified, but no source-date-epoch was found"),
        "{stderr}"
    );
    assert_eq!(
        common::golden::rewritten_timestamps(&archive),
        serde_json::json!([null])
    );

    let out = rbuild(&store)
        .args(["build", "-q", "-o"])
        .arg(format!(
            "type=docker,dest={},source-date-epoch=1",
            archive.display()
        ))
        .arg("-o")
        .arg(format!(
            "type=oci,dest={}.oci,source-date-epoch=2",
            archive.display()
        ))
        .arg(&context)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("different source-date-epoch values (1, 2)"),
        "{stderr}"
    );
}

/// `-o type=registry,rewrite-timestamp=true`: what reaches the registry is the rewritten
/// manifest (the build's layer annotated with the epoch, its blob compressed for the push),
/// which a pull into an empty store gets back; the store keeps the build's own image.
#[test]
fn a_push_with_rewrite_timestamp_sends_the_annotated_manifest() {
    require_root("a native build");
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let context = work.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("Dockerfile"), "FROM scratch\nCOPY f /\n").unwrap();
    std::fs::write(context.join("f"), "data").unwrap();
    let registry = rbuild_testutil::Registry::start();
    let tag = format!("{}/rewrite/pushed:1", registry.host());
    let metadata = work.path().join("metadata.json");
    let out = rbuild(&store)
        .args([
            "build",
            "-q",
            "--source-date-epoch",
            "1700000000",
            "-t",
            &tag,
        ])
        .args([
            "-o",
            "type=registry,rewrite-timestamp=true",
            "--metadata-file",
        ])
        .arg(&metadata)
        .arg(&context)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metadata).unwrap()).unwrap();
    let pushed = metadata["containerimage.digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        registry.manifest_status("rewrite/pushed", &pushed),
        Some(200)
    );

    let local = rbuild_store::Store::open(&store).unwrap();
    let built = local.resolve(&tag).unwrap();
    assert_ne!(
        built.manifest.digest.to_string(),
        pushed,
        "the push is the rewritten one"
    );
    let built: rbuild_image::Manifest = local.read_manifest(&built.manifest.digest).unwrap();
    assert!(
        built.layers[0].annotations.is_empty(),
        "the stored image is the build's"
    );

    let pulled_store = work.path().join("pulled");
    let out = rbuild(&pulled_store)
        .args(["pull", "-q", &tag])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pulled = rbuild_store::Store::open(&pulled_store).unwrap();
    let record = pulled.resolve(&tag).unwrap();
    assert_eq!(record.manifest.digest.to_string(), pushed);
    let manifest: rbuild_image::Manifest = pulled.read_manifest(&record.manifest.digest).unwrap();
    assert_eq!(
        manifest.layers[0]
            .annotations
            .get("buildkit/rewritten-timestamp")
            .map(String::as_str),
        Some("1700000000")
    );
    assert!(
        manifest.layers[0].media_type.ends_with("+gzip"),
        "{:?}",
        manifest.layers[0]
    );
}
