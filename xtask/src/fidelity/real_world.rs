//! The real-world builds of the live comparison: the targets of `testdata/fidelity/debian_apps`
//! (apt-get install, a pip-installed Python app, an `npm ci` Node app, a Rust app built by
//! cargo and copied into a slim stage), built `FROM fidelity-debian:1`, a Debian bookworm
//! minbase that debootstrap makes from this machine's apt mirror, by rbuild and by the
//! reference BuildKit, and compared with `rbuild diff`. They need the network the package
//! managers use, so they cannot be goldens: their packages move.
//!
//! Each target is built a third time in the restricted pod (`rbuild:restricted-debian` as
//! `docker run --user 1000:1000 --cap-drop ALL --security-opt no-new-privileges` under
//! Docker's default seccomp profile, rbuild as the entrypoint, on a private dockerd), and
//! that image is compared with BuildKit's too. The pod has no store to keep, so its builds
//! share the toolchain stage through a registry cache, as CI jobs do.
//!
//! What is ignored and why: `testdata/fidelity-nondeterministic.txt` (what package managers
//! write differently on every run) and `--ignore-timestamps`; the differences left are
//! [`KNOWN`], each explained in docs/fidelity.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use rbuild_testutil::Dockerd;

use super::buildkit::BuildKit;
use super::{rbuild, run, run_ok};

/// The name the Dockerfile builds FROM: the debootstrap base, the same image in both.
const DEBIAN_BASE: &str = "fidelity-debian:1";

/// The CA bundle both builders get as the secret `ca` (with update-ca-certificates'
/// additions, e.g. a proxy's CA): the package managers that speak HTTPS read it.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The targets of `testdata/fidelity/debian_apps/Dockerfile`, one real-world case each.
const TARGETS: &[&str] = &["apt", "python", "node", "rust"];

/// A difference rbuild keeps from BuildKit v0.32 on a real-world case (docs/fidelity.md,
/// "Real-world builds", explains each `why`). Every marker must still match a line of the
/// comparison and every line must match a marker of the case, so a fix or a new difference
/// fails the run until this list is updated.
struct Known {
    target: &'static str,
    why: &'static str,
    markers: &'static [&'static str],
}

const KNOWN: &[Known] = &[];

/// The builder image for restricted pods with a Debian top level, as `cargo xtask
/// builder-image` makes it (scripts/test.sh does, into `$RBUILD_BUILDER_IMAGE_DIR`).
const POD_IMAGE: &str = "rbuild:restricted-debian";

/// A private dockerd with [`POD_IMAGE`] loaded, and the directory the pods write to.
struct Pod {
    daemon: Dockerd,
    /// Mounted at `/out` (world-writable: the pod's user is not root): the CA bundle the
    /// pod reads as its secret, and the archives it writes.
    out: tempfile::TempDir,
    base: String,
    cache: String,
}

impl Pod {
    fn start(root: &Path, base: &str, registry: &str) -> Result<Pod> {
        let dir = std::env::var_os("RBUILD_BUILDER_IMAGE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/builder-image"));
        let archive = dir.join("rbuild-restricted-debian.tar");
        if !archive.is_file() {
            bail!(
                "{} is missing: the real-world builds run in the restricted pod too; make the \
                 builder images first with `cargo xtask builder-image {}` (scripts/test.sh \
                 does) or set RBUILD_BUILDER_IMAGE_DIR",
                archive.display(),
                dir.display()
            );
        }
        let daemon = Dockerd::start();
        daemon.docker_ok(&["load", "-q", "-i", &archive.to_string_lossy()]);
        let out = tempfile::tempdir()?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(out.path(), std::fs::Permissions::from_mode(0o777))?;
        std::fs::copy(CA_BUNDLE, out.path().join("ca.crt"))
            .with_context(|| format!("copying {CA_BUNDLE}"))?;
        Ok(Pod {
            daemon,
            out,
            base: base.to_string(),
            cache: format!("{registry}/fidelity-real-world/pod-cache"),
        })
    }

    /// Builds `target` in a fresh pod (the base pulled from the registry as the named
    /// context the Dockerfile's `FROM` names, the toolchain stage from and to the registry
    /// cache) into a docker archive; returns its path.
    fn build(&self, root: &Path, target: &str) -> Result<PathBuf> {
        let context = format!("{}:/workspace:ro", app_dir(root).display());
        let out = format!("{}:/out", self.out.path().display());
        let base = format!("{DEBIAN_BASE}=docker-image://{}", self.base);
        let dest = format!("type=docker,dest=/out/{target}.tar");
        let cache_from = format!("type=registry,ref={}", self.cache);
        let cache_to = format!("type=registry,ref={},mode=max", self.cache);
        let mut args = vec!["run", "--rm", "--network", "host"];
        args.extend_from_slice(crate::builder_image::RESTRICTED_POD_FLAGS);
        args.extend_from_slice(&[
            "-v",
            &context,
            "-v",
            &out,
            POD_IMAGE,
            "build",
            "--isolation",
            "restricted",
            "--progress",
            "plain",
            "--target",
            target,
            "--secret",
            "id=ca,src=/out/ca.crt",
            "--build-context",
            &base,
            "--cache-from",
            &cache_from,
            "--cache-to",
            &cache_to,
            "-o",
            &dest,
            "/workspace",
        ]);
        let built = self.daemon.docker(&args);
        if !built.status.success() {
            bail!(
                "rbuild in the restricted pod failed ({}):\n{}",
                built.status,
                String::from_utf8_lossy(&built.stderr)
            );
        }
        Ok(self.out.path().join(format!("{target}.tar")))
    }
}

fn app_dir(root: &Path) -> PathBuf {
    root.join("testdata/fidelity/debian_apps")
}

/// Makes [`DEBIAN_BASE`] with rbuild from a fresh debootstrap and pushes it to the
/// registry BuildKit pulls it from; returns the pushed reference.
fn make_debian_base(bin: &Path, store: &Path, work: &Path, registry: &str) -> Result<String> {
    let ctx = work.join("debian-base");
    // Panics with debootstrap's output when it fails (the test helpers' way).
    rbuild_testutil::debian_image_rootfs(&ctx.join("rootfs"));
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nCMD [\"bash\"]\n",
    )?;
    run_ok(
        "rbuild build (the Debian base)",
        rbuild(bin, store)
            .args(["build", "-q", "-t", DEBIAN_BASE])
            .arg(&ctx),
    )?;
    let pushed = format!("{registry}/{DEBIAN_BASE}");
    run_ok(
        "rbuild push (the Debian base)",
        rbuild(bin, store).args(["push", DEBIAN_BASE, &pushed]),
    )?;
    // The root filesystem is in the store now; it is a few hundred MB.
    std::fs::remove_dir_all(&ctx).with_context(|| format!("removing {}", ctx.display()))?;
    Ok(pushed)
}

/// rbuild's image of `target`, kept in the store as `fidelity-real-world/TARGET` (no archive:
/// the toolchain images are large).
fn build_rbuild(bin: &Path, store: &Path, root: &Path, target: &str) -> Result<String> {
    let name = format!("fidelity-real-world/{target}:1");
    run_ok(
        &format!("rbuild build --target {target}"),
        rbuild(bin, store)
            .args(["build", "-q", "--progress", "plain", "-t", &name])
            .args(["--target", target, "--secret"])
            .arg(format!("id=ca,src={CA_BUNDLE}"))
            .arg(app_dir(root)),
    )?;
    Ok(name)
}

/// BuildKit's image of `target` as a docker archive in `work`.
fn build_buildkit(
    buildkit: &BuildKit,
    base: &str,
    root: &Path,
    work: &Path,
    target: &str,
) -> Result<PathBuf> {
    let dest = work.join(format!("real-world-{target}-buildkit.tar"));
    let dir = app_dir(root);
    run_ok(
        &format!("buildctl build --target {target}"),
        buildkit
            .dockerfile_build(&dir, &dir)
            .arg("--opt")
            .arg(format!("context:{DEBIAN_BASE}=docker-image://{base}"))
            .arg("--opt")
            .arg(format!("target={target}"))
            .arg("--secret")
            .arg(format!("id=ca,src={CA_BUNDLE}"))
            .arg("--output")
            .arg(format!(
                "type=docker,name=fidelity-real-world/{target}:1,dest={}",
                dest.display()
            )),
    )?;
    Ok(dest)
}

/// Builds and compares every target; returns its table rows and pushes what fails to
/// `problems`.
pub(super) fn compare(
    bin: &Path,
    store: &Path,
    buildkit: &BuildKit,
    registry: &str,
    root: &Path,
    work: &Path,
    problems: &mut Vec<String>,
) -> Result<Vec<(String, String)>> {
    let ignores = super::nondeterministic_ignores(root)?;
    eprintln!("fidelity: making the Debian base (debootstrap)");
    let base = make_debian_base(bin, store, work, registry)?;
    let pod = Pod::start(root, &base, registry)?;
    let mut rows = Vec::new();
    for target in TARGETS {
        let started = Instant::now();
        // The two builders share nothing but the base: build side by side.
        let (ours, theirs) = std::thread::scope(|scope| {
            let theirs = scope.spawn(|| build_buildkit(buildkit, &base, root, work, target));
            let ours = build_rbuild(bin, store, root, target);
            let theirs = theirs
                .join()
                .unwrap_or_else(|_| Err(anyhow!("the BuildKit build panicked")));
            (ours, theirs)
        });
        let name = format!("real-world {target}");
        let in_pod = pod.build(root, target);
        let pod_name = format!("real-world {target} (restricted pod)");
        let (verdict, pod_verdict) = match (ours, in_pod, theirs) {
            (ours, in_pod, Ok(theirs)) => {
                let mut compare_with = |which: &str, built: Result<String>| match built {
                    Ok(image) => {
                        let found = diff(bin, store, &image, &theirs, &ignores);
                        found.map(|found| judge(target, &found, problems))
                    }
                    Err(failed) => {
                        problems.push(format!("{which}: {failed:#}"));
                        Ok("failed".to_string())
                    }
                };
                let verdict = compare_with(&name, ours);
                let in_pod = in_pod.map(|p| format!("docker-archive:{}", p.display()));
                let pod_verdict = compare_with(&pod_name, in_pod);
                // The archives are compared; the next target needs the disk.
                let _ = std::fs::remove_file(&theirs);
                let _ = std::fs::remove_file(pod.out.path().join(format!("{target}.tar")));
                (verdict?, pod_verdict?)
            }
            (_, _, Err(theirs)) => {
                let _ = std::fs::remove_file(pod.out.path().join(format!("{target}.tar")));
                problems.push(format!("{name}: {theirs:#}"));
                ("failed".to_string(), "failed".to_string())
            }
        };
        eprintln!(
            "fidelity: {name:<40} {verdict} ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        eprintln!("fidelity: {pod_name:<40} {pod_verdict}");
        rows.push((name, verdict));
        rows.push((pod_name, pod_verdict));
    }
    // The toolchain layers are gigabytes: BuildKit's cache of them goes with the run.
    let _ = run(
        "buildctl prune",
        buildkit.buildctl().args(["prune", "--all"]),
    );
    Ok(rows)
}

/// `rbuild diff --json --ignore-timestamps` of rbuild's image `ours` (a name in `store`) and
/// BuildKit's archive; one line per difference (empty: equal).
fn diff(
    bin: &Path,
    store: &Path,
    ours: &str,
    theirs: &Path,
    ignores: &[String],
) -> Result<Vec<String>> {
    let mut cmd = Command::new(bin);
    cmd.args(["diff", "--json", "--ignore-timestamps", "--root"])
        .arg(store);
    for path in ignores {
        cmd.arg("--ignore").arg(path);
    }
    cmd.arg(ours)
        .arg(format!("docker-archive:{}", theirs.display()));
    let out = run("rbuild diff", &mut cmd)?;
    if !matches!(out.status.code(), Some(0 | 1)) {
        bail!(
            "rbuild diff failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report: rbuild_diff::Report =
        serde_json::from_slice(&out.stdout).context("rbuild diff's JSON")?;
    if report.is_equal() != report.equal {
        bail!("rbuild diff's verdict and its sections disagree: {report:?}");
    }
    Ok(report.without_rerecorded_dirs().lines())
}

/// What one comparison found, checked against [`KNOWN`].
fn judge(target: &str, found: &[String], problems: &mut Vec<String>) -> String {
    let known: Vec<&Known> = KNOWN.iter().filter(|k| k.target == target).collect();
    for k in &known {
        for marker in k.markers {
            if !found.iter().any(|line| line.contains(marker)) {
                problems.push(format!(
                    "real-world {target}: the known difference {} ({marker:?}) is gone (fixed? \
                     then update KNOWN in xtask/src/fidelity/real_world.rs and docs/fidelity.md)",
                    k.why
                ));
            }
        }
    }
    let unexplained: Vec<&str> = found
        .iter()
        .filter(|line| {
            !known
                .iter()
                .any(|k| k.markers.iter().any(|m| line.contains(m)))
        })
        .map(String::as_str)
        .collect();
    if !unexplained.is_empty() {
        problems.push(format!(
            "real-world {target}: rbuild's image differs from BuildKit's:\n  {}",
            unexplained.join("\n  ")
        ));
        return "different".into();
    }
    if known.is_empty() {
        return "equal".into();
    }
    let whys: BTreeSet<&str> = known.iter().map(|k| k.why).collect();
    format!("known: {}", whys.into_iter().collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_difference_names_a_target() {
        for k in KNOWN {
            assert!(TARGETS.contains(&k.target), "{}", k.target);
            assert!(!k.markers.is_empty(), "{}: no marker", k.why);
        }
    }

    #[test]
    fn unexplained_differences_are_problems() {
        let mut problems = Vec::new();
        let verdict = judge(
            "unlisted",
            &["[files] /x: mode 0644 -> 0600".into()],
            &mut problems,
        );
        assert_eq!(verdict, "different");
        assert_eq!(problems.len(), 1);
        let mut problems = Vec::new();
        assert_eq!(judge("unlisted", &[], &mut problems), "equal");
        assert!(problems.is_empty());
    }
}
