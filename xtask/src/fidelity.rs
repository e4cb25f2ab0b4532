//! `cargo xtask fidelity --reference DIR [--update] [CASE...]`: builds every case of
//! `testdata/buildkit-cases/` with the reference BuildKit (`DIR/start.sh`, a private
//! buildkitd) and with rbuild, from the same base image, and
//!
//! - with `--update`, writes each case's `golden.json` from BuildKit's image;
//! - without it, checks that every golden is current (BuildKit still makes that image) and
//!   that rbuild's image is BuildKit's, but for the cases whose `case.json` names a known
//!   difference, which must still differ (so a fix shows up).
//!
//! The base is made by rbuild from files in the repository (`base/` of the cases beside the
//! machine's static busybox), pushed to a private local registry and handed to BuildKit as
//! the named context `buildkit-cases-base`, so both builders start from the very same image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use rbuild_diff::describe::{self, BaseCounts};
use rbuild_diff::{read_image, ImageSource};
use rbuild_testutil::{busybox_rootfs, Registry};
use serde_json::Value;

pub(crate) mod buildkit;
mod builds;
mod cases;
mod real_world;
mod rootless;

pub use buildkit::buildkit_error_line;
pub(crate) use buildkit::{lock_state, BuildKit};
use builds::{
    build_buildkit, build_rbuild, describe_archive, golden_of, make_oci_layouts, unplace_json,
    Built,
};
use cases::{cases_dir, read_cases};
pub(crate) use cases::{json_strings, json_text};
use rootless::RootlessUser;

/// The name every case's Dockerfile builds `FROM`.
pub const BASE_NAME: &str = "buildkit-cases-base";

const USAGE: &str = "usage: cargo xtask fidelity --reference DIR [--update] [CASE...|real-world]";

/// The name that selects the real-world builds ([`real_world`]) among the cases.
const REAL_WORLD: &str = "real-world";

/// The modes the live comparison builds rbuild's images in, beside BuildKit's one build of
/// each case, as `(mode, --isolation)`: as root, the user namespace (the default as root)
/// and chroot (what a default `docker run` allows), as `cargo test -p rbuild --test
/// buildkit_cases` does; and `rootless`, the user namespace as an unprivileged user with a
/// subordinate id range ([`rootless`]). A case's `known_difference_<mode>` overrides its
/// `known_difference` for one mode.
const MODES: &[(&str, &str)] = &[
    ("userns", "userns"),
    ("chroot", "chroot"),
    (ROOTLESS, "userns"),
];

/// The mode run by the unprivileged user.
const ROOTLESS: &str = "rootless";

struct Options {
    reference: PathBuf,
    update: bool,
    cases: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut reference = None;
    let mut update = false;
    let mut cases = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--reference" => {
                let dir = it
                    .next()
                    .ok_or_else(|| anyhow!("--reference needs a DIR\n{USAGE}"))?;
                reference = Some(PathBuf::from(dir));
            }
            "--update" => update = true,
            flag if flag.starts_with('-') => bail!("unknown option {flag}\n{USAGE}"),
            case => cases.push(case.to_string()),
        }
    }
    let reference = reference.ok_or_else(|| anyhow!("--reference DIR is required\n{USAGE}"))?;
    Ok(Options {
        reference,
        update,
        cases,
    })
}

/// The `rbuild diff --ignore` patterns of `testdata/fidelity-nondeterministic.txt` (what two
/// builds of the same step by the same builder write differently).
pub(crate) fn nondeterministic_ignores(root: &Path) -> Result<Vec<String>> {
    let path = root.join("testdata/fidelity-nondeterministic.txt");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

pub(crate) fn run(what: &str, cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("starting {what} ({:?})", cmd.get_program()))?;
    Ok(out)
}

pub(crate) fn run_ok(what: &str, cmd: &mut Command) -> Result<Output> {
    let out = run(what, cmd)?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Busybox with a link for every applet in `dir/bin` (the busybox image's /bin).
pub(crate) fn busybox_full(dir: &Path) -> Result<()> {
    busybox_rootfs(dir);
    let list = run_ok(
        "busybox --list",
        Command::new(dir.join("bin/busybox")).arg("--list"),
    )?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = dir.join("bin").join(applet);
        if applet != "busybox" && std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("busybox", &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    Ok(())
}

/// The base's root filesystem: busybox with all its applets, and `base/etc` of the cases.
fn base_rootfs(root: &Path, dir: &Path) -> Result<()> {
    busybox_full(dir)?;
    for file in ["passwd", "group"] {
        let source = cases_dir(root).join("base/etc").join(file);
        std::fs::copy(&source, dir.join("etc").join(file))
            .with_context(|| format!("copying {}", source.display()))?;
    }
    Ok(())
}

pub(crate) fn rbuild(bin: &Path, store: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--root")
        .arg(store)
        .env_remove("RBUILD_ENGINE")
        .env_remove("SOURCE_DATE_EPOCH");
    cmd
}

/// The checkout this xtask was built from.
pub(crate) fn repository_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .context("finding the repository")
}

pub fn main(args: &[String]) -> Result<()> {
    let options = parse(args)?;
    let root = repository_root()?;
    let reference = options
        .reference
        .canonicalize()
        .with_context(|| format!("--reference {}", options.reference.display()))?;
    let mut cases = read_cases(&root)?;
    // The real-world builds need the network and take minutes: they run with no CASE named
    // (and no --update: they have no golden), or when `real-world` is named.
    let real_world = if options.cases.is_empty() {
        !options.update
    } else {
        options.cases.iter().any(|c| c == REAL_WORLD)
    };
    let wanted_cases: Vec<&String> = options.cases.iter().filter(|c| *c != REAL_WORLD).collect();
    if !options.cases.is_empty() {
        for wanted in &wanted_cases {
            if !cases.iter().any(|c| &c.name == *wanted) {
                bail!("no case {wanted:?} in {}", cases_dir(&root).display());
            }
        }
        cases.retain(|c| wanted_cases.contains(&&c.name));
    }
    let started = Instant::now();

    eprintln!("fidelity: building rbuild");
    let (bin, target_dir) = compile_rbuild(&root)?;

    let work = tempfile::tempdir().context("creating a work directory")?;
    let work = work.path();
    let store = work.join("store");
    let registry = Registry::start();
    let state = target_dir.join("xtask-fidelity/buildkit");
    let _lock = lock_state(&state)?;
    eprintln!("fidelity: starting the reference BuildKit");
    let buildkit = BuildKit::start(&reference, &state, &registry.host())?;

    eprintln!("fidelity: making the base image");
    let base_ctx = work.join("base");
    base_rootfs(&root, &base_ctx.join("rootfs"))?;
    std::fs::write(
        base_ctx.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nCMD [\"sh\"]\n",
    )?;
    run_ok(
        "rbuild build (the base)",
        rbuild(&bin, &store)
            .args(["build", "-q", "-t", BASE_NAME])
            .arg(&base_ctx),
    )?;
    // One store per mode, each with the base: in a shared store the second mode's builds
    // would take the first one's steps from the cache and test nothing.
    let root_stores: Vec<(&str, PathBuf)> = MODES
        .iter()
        .filter(|(mode, _)| *mode != ROOTLESS)
        .map(|(mode, _)| (*mode, work.join(format!("store-{mode}"))))
        .collect();
    for (mode, mode_store) in &root_stores {
        run_ok(
            &format!("rbuild build (the base, the {mode} store)"),
            rbuild(&bin, mode_store)
                .args(["build", "-q", "-t", BASE_NAME])
                .arg(&base_ctx),
        )?;
    }
    eprintln!("fidelity: preparing the rootless mode's user");
    let rootless = RootlessUser::prepare(&bin, &cases_dir(&root), work)?;
    rootless.build_base(&bin, &store, &base_ctx)?;
    let pushed = format!("{}/{BASE_NAME}:1", registry.host());
    run_ok(
        "rbuild push (the base)",
        rbuild(&bin, &store).args(["push", BASE_NAME, &pushed]),
    )?;
    let store_handle = rbuild_store::Store::open(&store).context("opening the store")?;
    let base_image = read_image(&ImageSource::Store(BASE_NAME.into()), Some(&store_handle))
        .context("reading the base")?;
    let base = BaseCounts::of(&base_image);

    let mut problems = Vec::new();
    let mut rows = Vec::new();
    for case in &cases {
        let case_started = Instant::now();
        // The case's HTTP and git server, on 127.0.0.1 (BuildKit runs on the host network).
        let servers = case.servers()?;
        make_oci_layouts(&bin, &store, case, work)?;
        let theirs = build_buildkit(&buildkit, &pushed, case, work, servers.as_ref())?;
        // A case built FROM scratch alone (`"base": "scratch"`) is described whole.
        let base = match case.text("base").as_deref() {
            Some("scratch") => BaseCounts {
                layers: 0,
                history: 0,
            },
            _ => base,
        };
        let golden = unplace_json(servers.as_ref(), golden_of(&theirs, base, case)?)?;
        let golden_path = case.dir.join("golden.json");
        let expected_error = case.text("error");
        match (&theirs, &expected_error) {
            (Built::Failed(stderr), None) => problems.push(format!(
                "{}: BuildKit failed: {}",
                case.name,
                buildkit_error_line(stderr)
            )),
            (Built::Image(_), Some(_)) => problems.push(format!(
                "{}: case.json expects an error, but BuildKit built the image",
                case.name
            )),
            _ => {}
        }
        if options.update {
            std::fs::write(&golden_path, describe::to_golden_text(&golden))
                .with_context(|| format!("writing {}", golden_path.display()))?;
        } else {
            let stored: Value = std::fs::read_to_string(&golden_path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null);
            let stale = describe::differences(&stored, &golden);
            if !stale.is_empty() {
                problems.push(format!(
                    "{}: golden.json is not what BuildKit makes now (cargo xtask fidelity --reference DIR --update {}):\n  {}",
                    case.name,
                    case.name,
                    stale.join("\n  ")
                ));
            }
        }
        for (mode, isolation) in MODES {
            let ours = if *mode == ROOTLESS {
                // The user's copy of the case; the ssh key root made for BuildKit, given.
                let users_case = rootless.case(case);
                if let Some(key) = users_case.ssh_key(work)? {
                    rootless.give(&key)?;
                }
                build_rbuild(
                    rootless.rbuild(),
                    rootless
                        .out_dir()
                        .join(format!("{}-rbuild-{mode}.tar", case.name)),
                    &users_case,
                    work,
                    servers.as_ref(),
                    isolation,
                )?
            } else {
                let mode_store = root_stores
                    .iter()
                    .find(|(name, _)| name == mode)
                    .map(|(_, store)| store)
                    .ok_or_else(|| anyhow!("no store for the mode {mode}"))?;
                build_rbuild(
                    rbuild(&bin, mode_store),
                    work.join(format!("{}-rbuild-{mode}.tar", case.name)),
                    case,
                    work,
                    servers.as_ref(),
                    isolation,
                )?
            };
            let outcome: std::result::Result<String, String> = match (&ours, &expected_error) {
                (Built::Failed(stderr), Some(wanted)) if stderr.contains(wanted.as_str()) => {
                    Ok("same error".into())
                }
                (Built::Failed(stderr), Some(wanted)) => Err(format!(
                    "rbuild's error does not contain {wanted:?}:\n{stderr}"
                )),
                (Built::Failed(stderr), None) => Err(format!("rbuild failed:\n{stderr}")),
                (Built::Image(_), Some(_)) => Err("rbuild built what must fail".into()),
                (Built::Image(path), None) => {
                    let found =
                        unplace_json(servers.as_ref(), describe_archive(path, base, case)?)?;
                    // The description is made; the next build needs the disk.
                    let _ = std::fs::remove_file(path);
                    let differences = describe::differences(&golden, &found);
                    if differences.is_empty() {
                        Ok("equal".into())
                    } else {
                        Err(format!(
                            "rbuild's image differs from BuildKit's:\n  {}",
                            differences.join("\n  ")
                        ))
                    }
                }
            };
            // `known_difference_<mode>` overrides `known_difference` (`null`: none).
            let known = match case.spec.get(format!("known_difference_{mode}")) {
                Some(value) => value.as_str().map(str::to_string),
                None => case.text("known_difference"),
            };
            let name = format!("{} ({mode})", case.name);
            let verdict = match (outcome, known) {
                (Ok(verdict), None) => verdict,
                (Err(problem), None) => {
                    problems.push(format!("{name}: {problem}"));
                    "different".to_string()
                }
                (Err(_), Some(reason)) => format!("known: {reason}"),
                (Ok(verdict), Some(reason)) => {
                    problems.push(format!(
                        "{name}: the known difference ({reason}) is gone: remove it from case.json and docs/fidelity.md"
                    ));
                    verdict
                }
            };
            eprintln!(
                "fidelity: {name:<48} {verdict} ({:.1} s)",
                case_started.elapsed().as_secs_f64()
            );
            rows.push((name, verdict));
        }
    }
    if real_world {
        rows.extend(real_world::compare(
            &bin,
            &store,
            &buildkit,
            &registry.host(),
            &root,
            work,
            &mut problems,
        )?);
    }
    drop(buildkit);

    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, verdict) in &rows {
        *counts
            .entry(verdict.split(':').next().unwrap_or(""))
            .or_default() += 1;
    }
    eprintln!(
        "fidelity: {} cases in {:.0} s: {counts:?}",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    if problems.is_empty() {
        Ok(())
    } else {
        for p in &problems {
            eprintln!("fidelity: {p}");
        }
        bail!("{} problems (above)", problems.len())
    }
}

/// Builds the debug rbuild binary of the checkout at `root`; its path and the target
/// directory (`CARGO_TARGET_DIR`, relative to `root`, or `root/target`).
pub(crate) fn compile_rbuild(root: &Path) -> Result<(PathBuf, PathBuf)> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_ok(
        "cargo build -p rbuild",
        Command::new(cargo)
            .current_dir(root)
            .args(["build", "-q", "-p", "rbuild", "--bin", "rbuild"]),
    )?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"));
    Ok((target_dir.join("debug/rbuild"), target_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_need_a_reference() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(parse(&args(&["--update"])).is_err());
        let o = parse(&args(&["--reference", "r", "--update", "a", "b"])).unwrap();
        assert!(o.update);
        assert_eq!(o.reference, PathBuf::from("r"));
        assert_eq!(o.cases, ["a", "b"]);
        assert!(parse(&args(&["--reference", "r", "--bogus"])).is_err());
    }

    #[test]
    fn the_error_line_is_buildkits_last_error() {
        let stderr = "#1 [internal] load\n#5 ERROR: process \"/bin/sh -c false\" did not complete successfully: exit code: 1\n------\n > [2/2] RUN false:\n------\nerror: failed to solve: process \"/bin/sh -c false\" did not complete successfully: exit code: 1\n";
        assert_eq!(
            buildkit_error_line(stderr),
            "error: failed to solve: process \"/bin/sh -c false\" did not complete successfully: exit code: 1"
        );
    }

    #[test]
    fn random_snapshot_ids_are_left_out_of_error_lines() {
        let stderr = "error: failed to solve: failed to compute cache key: failed to calculate checksum of ref v57rgy::m9kaw: \"/x\": not found\n";
        assert_eq!(
            buildkit_error_line(stderr),
            "error: failed to solve: failed to compute cache key: failed to calculate checksum of ref <ref>: \"/x\": not found"
        );
    }

    #[test]
    fn lint_rules_are_listed_in_one_order() {
        for stderr in [
            "error: failed to solve: lint violation found for rules: WorkdirRelativePath, LegacyKeyValueFormat\n",
            "error: failed to solve: lint violation found for rules: LegacyKeyValueFormat, WorkdirRelativePath\n",
        ] {
            assert_eq!(
                buildkit_error_line(stderr),
                "error: failed to solve: lint violation found for rules: LegacyKeyValueFormat, WorkdirRelativePath"
            );
        }
    }

    #[test]
    fn every_case_has_a_spec_and_a_golden() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cases = read_cases(&root).unwrap();
        assert!(!cases.is_empty());
        for case in cases {
            assert!(case.dir.join("Dockerfile").is_file(), "{}", case.name);
            assert!(case.dir.join("golden.json").is_file(), "{}", case.name);
            assert!(
                case.text("ports").is_some() || case.text("origin").is_some(),
                "{}: no `ports` nor `origin`",
                case.name
            );
        }
    }
}
