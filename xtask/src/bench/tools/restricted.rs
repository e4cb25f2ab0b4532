//! The peer `rbuild-restricted`: rbuild in a Kubernetes "restricted" pod, i.e. the builder
//! image for restricted pods run by `docker run --user 1000:1000 --cap-drop ALL
//! --security-opt no-new-privileges` (Docker's default seccomp profile) on the bench's
//! private dockerd, rbuild as the entrypoint, `--isolation restricted`. The images are the
//! repository Dockerfile's `restricted` (busybox bases) and `restricted-debian` (usrmerge
//! bases) targets, built from the bench's rbuild binary; a build uses the one that fits its
//! base. Compared with rbuild's user-namespace mode on the host (issue 20: ≤ 1.5×).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{Builder, Cache, Kind};

pub const RESTRICTED: &str = "rbuild-restricted";

/// The restricted pod's `securityContext` as `docker run` flags
/// (docs/ci/kubernetes-restricted.md).
const POD_FLAGS: &[&str] = &[
    "--user",
    "1000:1000",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
];

/// The two images' tags in the bench's dockerd.
pub(super) const IMAGE: &str = "rbuild-bench/restricted:latest";
const DEBIAN_IMAGE: &str = "rbuild-bench/restricted-debian:latest";

/// Where a dynamically linked rbuild's loader and libraries go in the images: under
/// /rbuild, which is never a stage's (under /usr/lib they would collide with a Debian
/// stage's own).
const LIB_IN_IMAGE: &str = "/rbuild/lib";

/// Builds both images with `rbuild_bin` into the dockerd at `docker_host`, under `work`.
pub fn restricted(rbuild_bin: &Path, docker_host: &str, work: &Path) -> Result<Builder> {
    let dir = super::super::fresh_dir(&work.join("restricted-images"))?;
    let context = dir.join("context");
    let ca = std::fs::read(crate::builder_image::CA_BUNDLE).unwrap_or_default();
    for (target, top_level, tag) in [
        (
            "restricted",
            crate::builder_image::RESTRICTED_TOP_LEVEL,
            IMAGE,
        ),
        (
            "restricted-debian",
            crate::builder_image::RESTRICTED_DEBIAN_TOP_LEVEL,
            DEBIAN_IMAGE,
        ),
    ] {
        let root = context.join(target);
        crate::builder_image::lay_out_restricted(&root, rbuild_bin, &ca, top_level)?;
        if crate::builder_image::has_interpreter(rbuild_bin)? {
            bundle_libraries(rbuild_bin, &root)?;
        }
        let archive = dir.join(format!("{target}.tar"));
        run(Command::new(rbuild_bin)
            .arg("--root")
            .arg(dir.join("store"))
            .args(["build", "-q", "--target", target, "-t", tag, "-f"])
            .arg(repo_dockerfile()?)
            .arg("-o")
            .arg(format!("type=docker,dest={}", archive.display()))
            .arg(&context))?;
        run(Command::new(super::DEBIAN_DOCKER)
            .args(["-H", docker_host, "load", "-i"])
            .arg(&archive))?;
    }
    super::remove_tree(&dir)?;
    Ok(Builder {
        name: RESTRICTED.into(),
        kind: Kind::Restricted {
            docker: PathBuf::from(super::DEBIAN_DOCKER),
            host: docker_host.to_string(),
        },
    })
}

fn repo_dockerfile() -> Result<PathBuf> {
    Ok(super::super::repo_root()?.join("Dockerfile"))
}

fn run(command: &mut Command) -> Result<()> {
    let out = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Copies the loader and libraries `ldd` lists for `binary` to `root`/rbuild/lib and points
/// `root`/rbuild/bin/rbuild at them (patchelf).
fn bundle_libraries(binary: &Path, root: &Path) -> Result<()> {
    let lib = root.join(LIB_IN_IMAGE.trim_start_matches('/'));
    std::fs::create_dir_all(&lib)?;
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut loader = None;
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')).map(Path::new) else {
            continue;
        };
        let name = path.file_name().context("a library without a name")?;
        std::fs::copy(path, lib.join(name))
            .with_context(|| format!("copying {}", path.display()))?;
        if name.to_string_lossy().starts_with("ld-") {
            loader = Some(Path::new(LIB_IN_IMAGE).join(name));
        }
    }
    let loader = loader.context("ldd listed no dynamic loader for rbuild")?;
    run(Command::new("patchelf")
        .arg("--set-interpreter")
        .arg(loader)
        .args(["--set-rpath", LIB_IN_IMAGE])
        .arg(root.join("rbuild/bin/rbuild")))
    .context("patchelf (Debian package patchelf) pointing rbuild at /rbuild/lib")
}

/// `docker run` of the image that fits `context`'s base, as the restricted pod runs it:
/// the context read-only at /workspace, secrets read-only under /rbuild-secrets.
pub(super) fn restricted_build(
    mut c: Command,
    context: &Path,
    tag: &str,
    cache: Cache,
    secrets: &[(&str, &str)],
) -> Vec<Command> {
    // The bench's Debian base is `…/bench/debian:latest`; every other is busybox.
    let dockerfile = std::fs::read_to_string(context.join("Dockerfile")).unwrap_or_default();
    let debian = dockerfile
        .lines()
        .find(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM"))
        .is_some_and(|l| l.contains("/bench/debian"));
    c.args(["run", "--rm", "--network", "host"])
        .args(POD_FLAGS)
        .arg("-v")
        .arg(format!("{}:/workspace:ro", context.display()));
    for (id, src) in secrets {
        c.arg("-v").arg(format!("{src}:/rbuild-secrets/{id}:ro"));
    }
    c.arg(if debian { DEBIAN_IMAGE } else { IMAGE }).args([
        "build",
        "--isolation",
        "restricted",
        "--progress",
        "plain",
    ]);
    // Each run is a fresh pod: its store starts empty, so there is no local cache to skip.
    if cache == Cache::Off {
        c.arg("--no-cache");
    }
    for (id, _) in secrets {
        c.arg("--secret")
            .arg(format!("id={id},src=/rbuild-secrets/{id}"));
    }
    c.args(["-t", tag, "/workspace"]);
    vec![c]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_build_runs_as_the_restricted_pod_in_the_image_that_fits_its_base() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            "# syntax\nFROM 127.0.0.1:5000/bench/debian:latest\nRUN true\n",
        )
        .unwrap();
        let built = restricted_build(
            Command::new("docker"),
            dir.path(),
            "t:1",
            Cache::Off,
            &[("ca", "/etc/ca.crt")],
        );
        let a = args(&built[0]);
        let joined = a.join(" ");
        assert!(
            joined.contains("--user 1000:1000 --cap-drop ALL --security-opt no-new-privileges"),
            "{joined}"
        );
        assert!(a.contains(&DEBIAN_IMAGE.to_string()), "{joined}");
        assert!(joined.contains("--isolation restricted"), "{joined}");
        assert!(joined.contains("--no-cache"), "{joined}");
        assert!(
            joined.contains("/etc/ca.crt:/rbuild-secrets/ca:ro"),
            "{joined}"
        );
        assert!(
            joined.contains("--secret id=ca,src=/rbuild-secrets/ca"),
            "{joined}"
        );

        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM 127.0.0.1:5000/bench/busybox:latest\n",
        )
        .unwrap();
        let built = restricted_build(Command::new("docker"), dir.path(), "t:1", Cache::Local, &[]);
        let a = args(&built[0]);
        assert!(a.contains(&IMAGE.to_string()), "{a:?}");
        assert!(!a.contains(&"--no-cache".to_string()), "{a:?}");
    }
}
