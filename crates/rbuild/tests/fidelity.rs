//! The fidelity suite: every case in `testdata/fidelity/` is built three ways against one
//! private dockerd, and the images are compared with `rbuild diff` (the project's own
//! comparison, [`image_diff`]):
//!
//! (a) `rbuild build` with the native engine (`-o type=docker`),
//! (b) `DOCKER_BUILDKIT=1 docker build` (the daemon's own BuildKit), then `docker save`,
//! (c) `rbuild build --engine dood` (`-o type=docker`).
//!
//! (a) must equal (b), except for the entries of [`KNOWN_DIFFERENCES`], each of which must
//! still differ in the documented way (so fixing one fails this test until the list is
//! updated); (c) must equal (b): `--engine dood` builds through the same daemon's BuildKit. What is compared and what is ignored is
//! explained at [`image_diff`] and in docs/fidelity.md.
//!
//! [`real_world_debian_images_equal_docker_buildkit_images`] does (a) vs (b) for real
//! applications (apt, pip, npm, cargo) on a Debian base made by debootstrap.
//!
//! Runs as root (dockerd); needs the Debian packages docker.io, busybox-static and
//! debootstrap, and (the Debian test) the package registries' network.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rbuild_testutil::{busybox_rootfs, debian_image_rootfs, Dockerd, DOCKER_CLI};

/// The base every case builds FROM, made by rbuild and loaded into the daemon.
const BASE: &str = "fidelity-base:1";

/// The secret `run_mounts` reads.
const SECRET: &str = "fidelity-token\n";

/// A case's build options (its directory holds only the Dockerfile and its context).
struct Case {
    name: &'static str,
    /// The directory under testdata/fidelity (several Debian cases share one).
    dir: &'static str,
    build_args: &'static [&'static str],
    target: Option<&'static str>,
    secret: bool,
    /// Gets [`CA_BUNDLE`] as the secret `ca` (the real-world cases download over HTTPS).
    ca_secret: bool,
}

const fn case(name: &'static str) -> Case {
    Case {
        name,
        dir: name,
        build_args: &[],
        target: None,
        secret: false,
        ca_secret: false,
    }
}

const CASES: &[Case] = &[
    case("add_tar"),
    Case {
        build_args: &["OVERRIDDEN=from-cli", "NODEFAULT=given"],
        ..case("arg_build_args")
    },
    case("cmd_entrypoint_exec"),
    case("cmd_entrypoint_shell"),
    case("copy_chown_chmod"),
    case("copy_files"),
    case("dockerignore"),
    case("env_forms"),
    case("from_stage_config"),
    case("healthcheck"),
    case("healthcheck_none"),
    case("kaniko_arg_multi"),
    case("kaniko_copy_symlink"),
    case("kaniko_copyadd_chmod"),
    case("kaniko_dangling_symlink"),
    case("kaniko_mv_add"),
    case("kaniko_replace_folder_with_link"),
    case("label_expose_volume"),
    Case {
        target: Some("middle"),
        ..case("multistage_target")
    },
    case("onbuild_maintainer"),
    case("run_deletions"),
    case("run_files"),
    Case {
        secret: true,
        ..case("run_mounts")
    },
    case("shell_stopsignal"),
    case("user_workdir"),
];

/// The base the real-world cases build FROM: a Debian bookworm minbase from debootstrap.
const DEBIAN_BASE: &str = "fidelity-debian:1";

/// The real-world cases ([`real_world_debian_images_equal_docker_buildkit_images`]): targets
/// of `testdata/fidelity/debian_apps`, built FROM [`DEBIAN_BASE`]. Each gets the secret `ca`,
/// this machine's CA bundle, for the package managers that speak HTTPS.
const DEBIAN_CASES: &[Case] = &[
    debian_case("debian_apt", "apt"),
    debian_case("debian_python", "python"),
    debian_case("debian_node", "node"),
    debian_case("debian_rust", "rust"),
];

const fn debian_case(name: &'static str, target: &'static str) -> Case {
    Case {
        dir: "debian_apps",
        target: Some(target),
        ca_secret: true,
        ..case(name)
    }
}

/// The CA bundle the Debian cases get as the secret `ca` (with update-ca-certificates'
/// additions, e.g. a proxy's CA).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Which two images a comparison is between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pair {
    /// (a) rbuild native vs (b) docker build with BuildKit.
    NativeVsDocker,
    /// (c) rbuild --engine dood vs (b) docker build with BuildKit, on the same daemon.
    DoodVsDocker,
}

/// A difference we know about and have not fixed (docs/fidelity.md explains each `why`).
/// Every `markers` entry must still match a line of the comparison (or the failed build's
/// output), and every line must be matched by a marker of the case's known differences:
/// fixing one, or a new difference, fails the test until this list is updated.
struct Known {
    case: &'static str,
    pair: Pair,
    why: &'static str,
    markers: &'static [&'static str],
}

const fn known(
    case: &'static str,
    pair: Pair,
    why: &'static str,
    markers: &'static [&'static str],
) -> Known {
    Known {
        case,
        pair,
        why,
        markers,
    }
}

use Pair::NativeVsDocker as DOCKER;

const KNOWN_DIFFERENCES: &[Known] = &[
    // rbuild follows current BuildKit where the daemon's BuildKit v0.8 (docker 20.10) differs.
    known(
        "arg_build_args",
        DOCKER,
        "arg-history",
        &["created_by: 'ARG "],
    ),
    known(
        "kaniko_arg_multi",
        DOCKER,
        "arg-history",
        &["created_by: 'ARG "],
    ),
    known(
        "kaniko_arg_multi",
        DOCKER,
        "shared-step-copy",
        &["only in B: /myFile.txt"],
    ),
    known(
        "healthcheck",
        DOCKER,
        "healthcheck-history",
        &["created_by: 'HEALTHCHECK "],
    ),
    known(
        "healthcheck_none",
        DOCKER,
        "healthcheck-history",
        &["created_by: 'HEALTHCHECK "],
    ),
    known(
        "copy_chown_chmod",
        DOCKER,
        "copy-flags-history",
        &["created_by: 'COPY --ch", "created_by: 'ADD --ch"],
    ),
    known(
        "kaniko_copyadd_chmod",
        DOCKER,
        "copy-flags-history",
        &["created_by: 'COPY --ch", "created_by: 'ADD --ch"],
    ),
    known(
        "run_mounts",
        DOCKER,
        "mount-stubs",
        &[
            "only in B: /mnt",
            "only in B: /run",
            "only in B: /scratch",
            "only in B: /var",
        ],
    ),
    known(
        "label_expose_volume",
        DOCKER,
        "expose-history",
        &["created_by: 'EXPOSE "],
    ),
    known(
        "from_stage_config",
        DOCKER,
        "expose-history",
        &["created_by: 'EXPOSE "],
    ),
    // Not fixed yet.
    known(
        "copy_chown_chmod",
        DOCKER,
        "chmod-dest-dir",
        &["/dir-600: mode 0600 -> 0755"],
    ),
    known(
        "kaniko_copyadd_chmod",
        DOCKER,
        "chmod-dest-dir",
        &["/dir777: mode 0777 -> 0755"],
    ),
    known(
        "run_deletions",
        DOCKER,
        "redundant-opaque",
        &["only in B: /tree/keep/.wh..wh..opq"],
    ),
    // The real-world cases: dpkg's new directories (in BuildKit's layers, each new
    // directory of a package gets an opaque marker) and v0.8's RUN --mount stubs.
    known(
        "debian_apt",
        DOCKER,
        "redundant-opaque",
        &["/.wh..wh..opq  [opaque]"],
    ),
    known(
        "debian_python",
        DOCKER,
        "redundant-opaque",
        &["/.wh..wh..opq  [opaque]"],
    ),
    known(
        "debian_python",
        DOCKER,
        "mount-stubs",
        &["only in B: /run/secrets  [dir"],
    ),
    known(
        "debian_node",
        DOCKER,
        "redundant-opaque",
        &["/.wh..wh..opq  [opaque]"],
    ),
    known(
        "debian_node",
        DOCKER,
        "mount-stubs",
        &[
            "only in B: /run/secrets  [dir",
            "only in B: /root/.npm  [dir",
        ],
    ),
    // Files a step opened for writing but left as they were (dpkg's lock, debconf's
    // databases): overlayfs copied them up; v0.8 ships them, v0.32 and rbuild do not.
    known(
        "debian_apt",
        DOCKER,
        "unchanged-copy-up",
        &[
            "only in B: /var/cache/debconf/",
            "only in B: /var/lib/dpkg/lock-frontend",
        ],
    ),
    known(
        "debian_python",
        DOCKER,
        "unchanged-copy-up",
        &[
            "only in B: /var/cache/debconf/",
            "only in B: /var/lib/dpkg/lock-frontend",
        ],
    ),
    known(
        "debian_node",
        DOCKER,
        "unchanged-copy-up",
        &[
            "only in B: /var/cache/debconf/",
            "only in B: /var/lib/dpkg/lock-frontend",
        ],
    ),
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cases_dir() -> PathBuf {
    repo_root().join("testdata/fidelity")
}

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

/// A root filesystem with every busybox applet (the kaniko cases use `stat`, `ln`, ...) and
/// a user `app` (1000:1000) for USER and --chown by name.
fn base_rootfs(dir: &Path) {
    busybox_rootfs(dir);
    let list = ok(
        "busybox --list",
        Command::new(dir.join("bin/busybox"))
            .arg("--list")
            .output()
            .unwrap(),
    );
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        let link = dir.join("bin").join(applet);
        if applet != "busybox" && std::fs::symlink_metadata(&link).is_err() {
            symlink("busybox", link).unwrap();
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
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

/// Makes [`BASE`] with rbuild and loads the very same image (same id) into the daemon.
fn make_base(root: &Path, daemon: &Dockerd, work: &Path) {
    let ctx = work.join("base");
    base_rootfs(&ctx.join("rootfs"));
    import_base(root, daemon, &ctx, BASE, "sh");
}

/// Makes [`DEBIAN_BASE`] from a fresh debootstrap, the same image in rbuild and the daemon.
fn make_debian_base(root: &Path, daemon: &Dockerd, work: &Path) {
    let ctx = work.join("debian-base");
    let rootfs = ctx.join("rootfs");
    debian_image_rootfs(&rootfs);
    import_base(root, daemon, &ctx, DEBIAN_BASE, "bash");
}

/// Builds `FROM scratch` + `COPY rootfs/ /` of `ctx` as `tag` with rbuild and loads the very
/// same image (same id) into the daemon.
fn import_base(root: &Path, daemon: &Dockerd, ctx: &Path, tag: &str, shell: &str) {
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nCOPY rootfs/ /\nCMD [\"{shell}\"]\n"),
    )
    .unwrap();

    ok(
        "rbuild build (base)",
        rbuild(root, daemon)
            .args(["build", "-q", "-t", tag])
            .arg(ctx)
            .output()
            .unwrap(),
    );
    let archive = ctx.join("base.tar");
    ok(
        "rbuild save",
        rbuild(root, daemon)
            .args(["save", tag, "-o"])
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
            .args(["inspect", tag])
            .output()
            .unwrap(),
    );
    let ours: serde_json::Value = serde_json::from_slice(&ours.stdout).unwrap();
    let theirs = daemon.docker_ok(&["image", "inspect", "-f", "{{.Id}}", tag]);
    assert_eq!(
        ours[0]["Id"].as_str().unwrap(),
        theirs.trim(),
        "the base must be the same image in both"
    );
}

fn option_args(case: &Case, secret_file: &Path) -> Vec<String> {
    let mut args = Vec::new();
    for arg in case.build_args {
        args.push("--build-arg".to_string());
        args.push(arg.to_string());
    }
    if let Some(target) = case.target {
        args.push("--target".into());
        args.push(target.into());
    }
    if case.secret {
        args.push("--secret".into());
        args.push(format!("id=token,src={}", secret_file.display()));
    }
    if case.ca_secret {
        args.push("--secret".into());
        args.push(format!("id=ca,src={CA_BUNDLE}"));
    }
    args
}

/// (a): the native engine, written as a docker archive.
fn build_native(root: &Path, daemon: &Dockerd, case: &Case, args: &[String], dest: &Path) {
    ok(
        &format!("rbuild build {}", case.name),
        rbuild(root, daemon)
            .args(["build", "-q", "--progress", "plain"])
            .args(args)
            .arg("-o")
            .arg(format!("type=docker,dest={}", dest.display()))
            .arg(cases_dir().join(case.dir))
            .output()
            .unwrap(),
    );
}

/// (a) kept in the store `root` as `name` (no archive: the real-world images are large).
fn build_native_in_store(root: &Path, daemon: &Dockerd, case: &Case, args: &[String], name: &str) {
    ok(
        &format!("rbuild build {}", case.name),
        rbuild(root, daemon)
            .args(["build", "-q", "--progress", "plain", "-t", name])
            .args(args)
            .arg(cases_dir().join(case.dir))
            .output()
            .unwrap(),
    );
}

/// Removes what [`build_docker`] tagged (its layers stay in the daemon's build cache).
fn remove_docker_image(daemon: &Dockerd, case: &Case) {
    ok(
        "docker rmi",
        docker(daemon)
            .args(["rmi", &format!("fidelity-docker/{}", case.name)])
            .output()
            .unwrap(),
    );
}

/// (b): the daemon's BuildKit (`--network host`: the test daemon has no bridge).
fn build_docker(daemon: &Dockerd, case: &Case, args: &[String], dest: &Path) {
    let tag = format!("fidelity-docker/{}", case.name);
    ok(
        &format!("docker build {}", case.name),
        docker(daemon)
            .env("DOCKER_BUILDKIT", "1")
            .args(["build", "-q", "--network", "host", "-t", &tag])
            .args(args)
            .arg(cases_dir().join(case.dir))
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

/// (c): `--engine dood` (`--network host` as (b): the test daemon has no bridge); Err(the
/// build's output) when it fails.
fn build_dood(
    root: &Path,
    daemon: &Dockerd,
    case: &Case,
    args: &[String],
    dest: &Path,
) -> Result<(), String> {
    let out = rbuild(root, daemon)
        .args(["build", "--engine", "dood", "--network", "host", "-q"])
        .args(["-t", &format!("fidelity-dood/{}", case.name)])
        .args(args)
        .arg("-o")
        .arg(format!("type=docker,dest={}", dest.display()))
        .arg(cases_dir().join(case.dir))
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
///
/// `ignores` are paths left out: the real-world cases ignore what package managers write
/// differently on every run (testdata/fidelity-nondeterministic.txt).
fn image_diff(a: &Path, b: &Path, ignores: &[String]) -> Vec<String> {
    let a = format!("docker-archive:{}", a.display());
    diff_images(None, &a, b, ignores)
}

/// [`image_diff`] of `a`, an image reference `rbuild diff` takes (with `root`: a name in that
/// store), and the docker archive `b`.
fn diff_images(root: Option<&Path>, a: &str, b: &Path, ignores: &[String]) -> Vec<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.args(["diff", "--json", "--ignore-timestamps"]);
    if let Some(root) = root {
        cmd.arg("--root").arg(root);
    }
    for path in ignores {
        cmd.arg("--ignore").arg(path);
    }
    let out = cmd
        .arg(a)
        .arg(format!("docker-archive:{}", b.display()))
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "rbuild diff failed: {}",
        output_text(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("rbuild diff's JSON: {e}: {}", output_text(&out)));
    let lines = render_report(&report);
    assert_eq!(
        lines.is_empty(),
        report["equal"] == true,
        "rbuild diff's verdict and its sections disagree: {report}"
    );
    without_rerecorded_dirs(lines)
}

/// A JSON value as a difference line shows it: strings bare, the rest as JSON.
fn shown(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One line per difference of an `rbuild diff --json` report:
/// `[files] only in A: PATH  [KIND MODE UID:GID]`, `[files] PATH: FIELD A -> B`, the same
/// per layer as `[layer[i]] ...`, `[layers] layer count: A != B`, `[config] KEY: A != B`,
/// `[history] [i] FIELD: 'A' != 'B'`, `[history] history entries: A != B`.
fn render_report(report: &serde_json::Value) -> Vec<String> {
    let entry_line = |prefix: &str, what: &str, a: &serde_json::Value, b: &serde_json::Value| {
        let side = |v: &serde_json::Value| {
            let kind = v["kind"].as_str().unwrap_or("?");
            if kind == "opaque" || kind == "whiteout" {
                format!("[{kind}]")
            } else {
                format!("[{kind} {} {}]", shown(&v["mode"]), shown(&v["owner"]))
            }
        };
        if a.is_null() {
            format!("{prefix} only in B: {what}  {}", side(b))
        } else if b.is_null() {
            format!("{prefix} only in A: {what}  {}", side(a))
        } else {
            let (path, field) = what.rsplit_once(' ').unwrap_or((what, "?"));
            format!("{prefix} {path}: {field} {} -> {}", shown(a), shown(b))
        }
    };
    let mut lines = Vec::new();
    let changes = |section: &str| report[section].as_array().cloned().unwrap_or_default();
    for c in changes("files") {
        let what = c["what"].as_str().unwrap_or("?");
        lines.push(entry_line("[files]", what, &c["a"], &c["b"]));
    }
    for c in changes("layers") {
        let what = c["what"].as_str().unwrap_or("?");
        if what == "layers" {
            lines.push(format!("[layers] layer count: {} != {}", c["a"], c["b"]));
        } else if let Some((index, rest)) = what.strip_prefix('[').and_then(|w| w.split_once("] "))
        {
            lines.push(entry_line(
                &format!("[layer[{index}]]"),
                rest,
                &c["a"],
                &c["b"],
            ));
        } else {
            lines.push(format!("[layers] {what}: {} != {}", c["a"], c["b"]));
        }
    }
    for c in changes("config") {
        let what = c["what"].as_str().unwrap_or("?");
        lines.push(format!("[config] {what}: {} != {}", c["a"], c["b"]));
    }
    // `empty_layer` flags are reported as one sequence (entries that differ in count differ
    // in sequence too).
    let mut empty_layers_differ = Vec::new();
    for c in changes("history") {
        let what = c["what"].as_str().unwrap_or("?");
        if what == "entries" {
            lines.push(format!(
                "[history] history entries: {} != {}",
                c["a"], c["b"]
            ));
            empty_layers_differ.push("count".to_string());
            continue;
        }
        if let Some(index) = what.strip_suffix(" empty_layer") {
            empty_layers_differ.push(index.to_string());
            continue;
        }
        let quoted = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => format!("'{s}'"),
            other => other.to_string(),
        };
        lines.push(format!(
            "[history] {what}: {} != {}",
            quoted(&c["a"]),
            quoted(&c["b"])
        ));
    }
    if !empty_layers_differ.is_empty() {
        lines.push(format!(
            "[history] empty_layer sequence differs ({})",
            empty_layers_differ.join(", ")
        ));
    }
    lines
}

/// Drops `[layer[i]] only in A|B: PATH  [dir ...]` when the flattened trees agree on PATH
/// (no `[files]` line names it): one builder's layer re-records a directory that the layer
/// does not change but whose mtime moved. BuildKit's runc does that to `/etc` in every RUN
/// layer (it creates and removes the /etc/hosts and /etc/resolv.conf mount points there).
/// That is an mtime difference, which the suite ignores; a directory the layer really adds
/// or changes also shows in `[files]` and is kept.
fn without_rerecorded_dirs(lines: Vec<String>) -> Vec<String> {
    let rerecorded_dir = |line: &str| -> Option<String> {
        let rest = line.strip_prefix("[layer[")?;
        let (_, rest) = rest.split_once("]] only in ")?;
        let rest = rest
            .strip_prefix("A: ")
            .or_else(|| rest.strip_prefix("B: "))?;
        let (path, kind) = rest.split_once("  [")?;
        kind.starts_with("dir ").then(|| path.to_string())
    };
    let names_in_files = |path: &str| {
        lines.iter().any(|l| {
            l.starts_with("[files] ")
                && (l.contains(&format!(": {path}  ")) || l.contains(&format!(": {path}:")))
        })
    };
    lines
        .iter()
        .filter(|l| rerecorded_dir(l).is_none_or(|path| names_in_files(&path)))
        .cloned()
        .collect()
}

/// What one comparison found, checked against [`KNOWN_DIFFERENCES`].
fn judge(case: &str, pair: Pair, found: &[String], problems: &mut Vec<String>) -> String {
    let known: Vec<&Known> = KNOWN_DIFFERENCES
        .iter()
        .filter(|k| k.case == case && k.pair == pair)
        .collect();
    if known.is_empty() {
        if found.is_empty() {
            return "equal".into();
        }
        problems.push(format!(
            "{case} {pair:?}: the images differ:\n  {}",
            found.join("\n  ")
        ));
        return "DIFFERENT".into();
    }
    for k in &known {
        for marker in k.markers {
            if !found.iter().any(|line| line.contains(marker)) {
                problems.push(format!(
                    "{case} {pair:?}: the known difference {} ({marker:?}) is gone (fixed? then \
                     update KNOWN_DIFFERENCES and docs/fidelity.md); found:\n  {}",
                    k.why,
                    found.join("\n  ")
                ));
            }
        }
    }
    let unexplained: Vec<&String> = found
        .iter()
        .filter(|line| {
            !known
                .iter()
                .any(|k| k.markers.iter().any(|m| line.contains(m)))
        })
        .collect();
    if !unexplained.is_empty() {
        problems.push(format!(
            "{case} {pair:?}: differences beyond the known ones:\n  {}",
            unexplained
                .iter()
                .map(|l| l.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        ));
    }
    let whys: BTreeSet<&str> = known.iter().map(|k| k.why).collect();
    format!("known: {}", whys.into_iter().collect::<Vec<_>>().join(", "))
}

#[test]
fn native_and_dood_images_equal_docker_buildkit_images() {
    let listed: BTreeSet<&str> = CASES.iter().chain(DEBIAN_CASES).map(|c| c.dir).collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        listed,
        on_disk.iter().map(String::as_str).collect(),
        "every directory of testdata/fidelity needs an entry in CASES or DEBIAN_CASES"
    );
    let names: BTreeSet<&str> = CASES.iter().chain(DEBIAN_CASES).map(|c| c.name).collect();
    for k in KNOWN_DIFFERENCES {
        assert!(names.contains(k.case), "unknown case {}", k.case);
    }

    let daemon = Dockerd::start();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    make_base(&root, &daemon, work.path());
    let secret_file = work.path().join("secret");
    std::fs::write(&secret_file, SECRET).unwrap();

    let mut problems = Vec::new();
    let mut table = String::from("| case | native vs docker | dood vs docker |\n|---|---|---|\n");
    for case in CASES {
        let args = option_args(case, &secret_file);
        let dir = work.path().join(case.name);
        std::fs::create_dir_all(&dir).unwrap();
        let (native, buildkit, dood) = (
            dir.join("native.tar"),
            dir.join("docker.tar"),
            dir.join("dood.tar"),
        );
        // (a) and (b) share nothing: run them side by side.
        std::thread::scope(|scope| {
            let docker = scope.spawn(|| build_docker(&daemon, case, &args, &buildkit));
            build_native(&root, &daemon, case, &args, &native);
            docker.join().expect("docker build panicked");
        });
        let vs_docker = judge(
            case.name,
            Pair::NativeVsDocker,
            &image_diff(&native, &buildkit, &[]),
            &mut problems,
        );
        let found = match build_dood(&root, &daemon, case, &args, &dood) {
            Ok(()) => image_diff(&dood, &buildkit, &[]),
            Err(output) => vec![format!("[build] the dood build failed: {output}")],
        };
        let dood_vs_docker = judge(case.name, Pair::DoodVsDocker, &found, &mut problems);
        writeln!(table, "| {} | {vs_docker} | {dood_vs_docker} |", case.name).unwrap();
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

/// The real-world cases: apt-get install, a pip-installed Python app, an `npm ci` Node app
/// and a Rust app built by cargo in a builder stage and copied into a slim stage, all on a
/// Debian bookworm minbase made by debootstrap from this machine's apt mirror. rbuild native
/// vs the daemon's BuildKit only (the light cases check `--engine dood`). Needs the network the package managers use (apt's
/// mirror, PyPI, npm, crates.io) and the Debian package debootstrap.
#[test]
fn real_world_debian_images_equal_docker_buildkit_images() {
    // Only the list of what package managers write differently on every run: these cases
    // need no further ignore.
    let ignore_file = repo_root().join("testdata/fidelity-nondeterministic.txt");
    let ignores: Vec<String> = std::fs::read_to_string(&ignore_file)
        .unwrap_or_else(|e| panic!("{}: {e}", ignore_file.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();

    let daemon = Dockerd::start();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    make_debian_base(&root, &daemon, work.path());
    let unused_secret = work.path().join("secret");

    let mut problems = Vec::new();
    let mut table = String::from("| case | native vs docker |\n|---|---|\n");
    for case in DEBIAN_CASES {
        let args = option_args(case, &unused_secret);
        let dir = work.path().join(case.name);
        std::fs::create_dir_all(&dir).unwrap();
        let buildkit = dir.join("docker.tar");
        let native = format!("fidelity-native/{}:latest", case.name);
        std::thread::scope(|scope| {
            let docker = scope.spawn(|| build_docker(&daemon, case, &args, &buildkit));
            build_native_in_store(&root, &daemon, case, &args, &native);
            docker.join().expect("docker build panicked");
        });
        let found = diff_images(Some(&root), &native, &buildkit, &ignores);
        // These images are gigabytes (a toolchain stage): a case's archive and the daemon's
        // image go as soon as they are compared, so that the cases' sizes do not add up.
        std::fs::remove_dir_all(&dir).unwrap();
        remove_docker_image(&daemon, case);
        let verdict = judge(case.name, Pair::NativeVsDocker, &found, &mut problems);
        writeln!(table, "| {} | {verdict} |", case.name).unwrap();
    }
    println!("{table}");
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}\n\n{table}",
        problems.len(),
        problems.join("\n")
    );
}
