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
use std::process::{Command, Output};
use std::time::Instant;

use rbuild_diff::describe::{self, BaseCounts};
use rbuild_diff::{read_image, ImageSource};
use rbuild_testutil::{busybox_rootfs, require_root};
use serde_json::Value;

const BASE_NAME: &str = "buildkit-cases-base";

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/buildkit-cases")
}

fn rbuild(store: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.arg("--root")
        .arg(store)
        .env_remove("RBUILD_ENGINE")
        .env_remove("SOURCE_DATE_EPOCH");
    cmd
}

fn ok(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct Case {
    name: String,
    dir: PathBuf,
    spec: Value,
}

impl Case {
    fn strings(&self, key: &str) -> Vec<String> {
        self.spec[key]
            .as_array()
            .map(|v| v.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.spec[key].as_str()
    }
}

fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").is_file())
        .map(|dir| {
            let text = std::fs::read_to_string(dir.join("case.json")).unwrap();
            let spec: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.join("case.json").display()));
            Case {
                name: dir.file_name().unwrap().to_string_lossy().into_owned(),
                dir,
                spec,
            }
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

fn make_base(store: &Path, work: &Path) -> BaseCounts {
    let ctx = work.join("base");
    let rootfs = ctx.join("rootfs");
    busybox_rootfs(&rootfs);
    let list = ok(
        "busybox --list",
        Command::new(rootfs.join("bin/busybox"))
            .arg("--list")
            .output()
            .unwrap(),
    );
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        let link = rootfs.join("bin").join(applet);
        if applet != "busybox" && std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    for file in ["passwd", "group"] {
        std::fs::copy(
            cases_dir().join("base/etc").join(file),
            rootfs.join("etc").join(file),
        )
        .unwrap();
    }
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nCMD [\"sh\"]\n",
    )
    .unwrap();
    ok(
        "rbuild build (the base)",
        rbuild(store)
            .args(["build", "-q", "-t", BASE_NAME])
            .arg(&ctx)
            .output()
            .unwrap(),
    );
    let opened = rbuild_store::Store::open(store).unwrap();
    let base = read_image(&ImageSource::Store(BASE_NAME.into()), Some(&opened)).unwrap();
    BaseCounts::of(&base)
}

/// Builds a case; `Ok(archive)` or `Err(stderr)`.
fn build(store: &Path, case: &Case, work: &Path, isolation: &str) -> Result<PathBuf, String> {
    let dest = work.join(format!("{}-{isolation}.tar", case.name));
    let context = case.dir.join("context");
    let context = if context.is_dir() {
        context
    } else {
        let empty = work.join(format!("{}-context", case.name));
        std::fs::create_dir_all(&empty).unwrap();
        empty
    };
    let mut cmd = rbuild(store);
    cmd.args([
        "build",
        "-q",
        "--progress",
        "plain",
        "--isolation",
        isolation,
        "-f",
    ])
    .arg(case.dir.join("Dockerfile"))
    .arg("-o")
    .arg(format!("type=docker,dest={}", dest.display()));
    for arg in case.strings("build_args") {
        cmd.arg("--build-arg").arg(arg);
    }
    if let Some(target) = case.text("target") {
        cmd.arg("--target").arg(target);
    }
    for id in case.strings("secrets") {
        let path = case.dir.join("secrets").join(&id);
        cmd.arg("--secret")
            .arg(format!("id={id},src={}", path.display()));
    }
    let out = cmd.arg(&context).output().unwrap();
    if out.status.success() {
        Ok(dest)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Whether rbuild did what BuildKit did (`Ok`: the verdict) or not (`Err`: how it differs).
fn compare(
    case: &Case,
    built: Result<PathBuf, String>,
    base: BaseCounts,
) -> Result<String, String> {
    let golden_path = case.dir.join("golden.json");
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(&golden_path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", golden_path.display()));
    match (built, case.text("error")) {
        (_, Some(_)) if golden.get("error").is_none() => {
            panic!(
                "{}: case.json expects an error but golden.json is an image",
                case.name
            )
        }
        (Err(stderr), Some(wanted)) if stderr.contains(wanted) => Ok("same error".into()),
        (Err(stderr), Some(wanted)) => {
            Err(format!("the error does not contain {wanted:?}:\n{stderr}"))
        }
        (Err(stderr), None) => Err(format!("rbuild failed:\n{stderr}")),
        (Ok(_), Some(wanted)) => Err(format!("rbuild built it; BuildKit fails ({wanted:?})")),
        (Ok(archive), None) => {
            let image = read_image(&ImageSource::Archive(archive, None), None).unwrap();
            let mut found = describe::describe(&image, base).unwrap();
            if case.spec["times"].as_bool() == Some(true) {
                describe::add_times(&mut found, &image, base);
            }
            let differences = describe::differences(&golden, &found);
            if differences.is_empty() {
                Ok("equal".into())
            } else {
                Err(format!(
                    "differs from BuildKit's image:\n  {}",
                    differences.join("\n  ")
                ))
            }
        }
    }
}

/// The verdict for the summary, and the failure, if any: a case must match its golden, and
/// a case with a known difference must still differ.
fn judge(
    case: &Case,
    built: Result<PathBuf, String>,
    base: BaseCounts,
    isolation: &str,
) -> (String, Option<String>) {
    // `known_difference_<isolation>` overrides `known_difference` for one isolation
    // (`null`: none there).
    let known = match case.spec.get(format!("known_difference_{isolation}")) {
        Some(value) => value.as_str(),
        None => case.text("known_difference"),
    };
    match (compare(case, built, base), known) {
        (Ok(verdict), None) => (verdict, None),
        (Err(problem), None) => ("different".into(), Some(problem)),
        (Err(_), Some(reason)) => (format!("known: {reason}"), None),
        (Ok(verdict), Some(reason)) => (
            verdict,
            Some(format!(
                "the known difference ({reason}) is gone: remove `known_difference` from \
                 case.json and from docs/fidelity.md"
            )),
        ),
    }
}

#[test]
fn every_case_has_a_dockerfile_a_spec_and_a_golden() {
    let cases = cases();
    assert!(cases.len() >= 20, "only {} cases", cases.len());
    for case in &cases {
        assert!(case.dir.join("Dockerfile").is_file(), "{}", case.name);
        assert!(case.dir.join("golden.json").is_file(), "{}", case.name);
        assert!(
            case.text("ports").is_some_and(|p| p.contains("test")),
            "{}: case.json must name the BuildKit test it ports (`ports`)",
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
    for case in cases() {
        let built = build(&store, &case, work.path(), isolation);
        let (verdict, problem) = judge(&case, built, base, isolation);
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
