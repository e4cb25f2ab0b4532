//! The command lines of the reference peers: BuildKit v0.32 (`buildctl build` against its
//! private rootful `buildkitd`) and Kaniko v1.28 (its executor image under `docker run`).
//! Neither leaves an image where a later command could look for it, so each build also
//! writes its image digest to a file of its own, and a last command checks that file: a
//! build that exits 0 without an image fails its run instead of being timed.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Cache;

/// Numbers the digest files, so that no run can pass on an earlier run's file.
static OUTPUTS: AtomicUsize = AtomicUsize::new(0);

fn next_output() -> usize {
    OUTPUTS.fetch_add(1, Ordering::Relaxed)
}

/// A command that fails unless `file` exists and contains `needle`.
fn check_digest(file: &Path, needle: &str, tool: &str) -> Command {
    let mut c = Command::new("sh");
    c.args([
        "-c",
        "grep -q \"$2\" \"$1\" 2>/dev/null || { echo \"error: $3 exited 0 but wrote no image \
         digest to $1\" >&2; exit 1; }",
        "sh",
    ])
    .arg(file)
    .args([needle, tool]);
    c
}

/// `buildctl build` of `context` (its Dockerfile too) into BuildKit's image store as
/// `tag` (`--output type=image,name=TAG`, not pushed), then the check of its metadata file.
pub(super) fn buildkit_build(
    mut c: Command,
    meta_dir: &Path,
    context: &Path,
    tag: &str,
    cache: Cache,
    secrets: &[(&str, &str)],
) -> Vec<Command> {
    let meta = meta_dir.join(format!("build-{}.json", next_output()));
    crate::fidelity::buildkit::dockerfile_build_args(&mut c, context, context);
    c.arg("--output")
        .arg(format!("type=image,name={tag}"))
        .arg("--metadata-file")
        .arg(&meta);
    match cache {
        Cache::Off => {
            c.arg("--no-cache");
        }
        Cache::Local => {}
        Cache::ExportTo(r) => {
            c.arg("--export-cache")
                .arg(format!("type=registry,ref={r},mode=max"));
        }
        Cache::ImportFrom(r) => {
            c.arg("--import-cache")
                .arg(format!("type=registry,ref={r}"));
        }
    }
    for (id, src) in secrets {
        c.arg("--secret").arg(format!("id={id},src={src}"));
    }
    vec![
        c,
        check_digest(&meta, "containerimage.digest", "buildctl build"),
    ]
}

/// Where the secret `id` is mounted in Kaniko's container.
fn kaniko_secret_path(id: &str) -> String {
    format!("/kaniko-secrets/{id}")
}

/// `docker run` of the Kaniko executor on `context` (mounted read-only at /workspace),
/// `--no-push`, its digest written to `out_dir` (mounted at /out), then the check of that
/// file. Its only cache is a registry repository: a "local" rebuild uses one derived from
/// `tag`, the registry-cache rows the repository given.
pub(super) fn kaniko_build(
    mut c: Command,
    image: &str,
    out_dir: &Path,
    context: &Path,
    tag: &str,
    cache: Cache,
    secrets: &[(&str, &str)],
) -> Vec<Command> {
    let digest = format!("build-{}.digest", next_output());
    // The private dockerd has no bridge; host networking reaches the local registry and
    // is what the other tools' RUN steps get.
    c.args(["run", "--rm", "--network", "host", "-v"])
        .arg(format!("{}:/workspace:ro", context.display()))
        .arg("-v")
        .arg(format!("{}:/out", out_dir.display()));
    for (id, src) in secrets {
        c.arg("-v")
            .arg(format!("{src}:{}:ro", kaniko_secret_path(id)));
    }
    c.arg(image)
        .args([
            "--context",
            "dir:///workspace",
            "--dockerfile",
            "/workspace/Dockerfile",
            "--destination",
            tag,
            "--no-push",
            // The base images and the cache repository are on the plain-http registry.
            "--insecure",
            "--insecure-pull",
            "--digest-file",
        ])
        .arg(format!("/out/{digest}"));
    let local_repo = format!(
        "{}/kaniko-cache",
        tag.rsplit_once(':').map(|(repo, _)| repo).unwrap_or(tag)
    );
    let repo = match cache {
        Cache::Off => None,
        Cache::Local => Some(local_repo.as_str()),
        Cache::ExportTo(r) | Cache::ImportFrom(r) => Some(r),
    };
    match repo {
        Some(r) => {
            c.args(["--cache=true", "--cache-copy-layers", "--cache-repo", r]);
        }
        None => {
            c.arg("--cache=false");
        }
    }
    for (id, _) in secrets {
        c.arg("--secret")
            .arg(format!("id={id},src={}", kaniko_secret_path(id)));
    }
    vec![c, check_digest(&out_dir.join(&digest), "sha256:", "kaniko")]
}

#[cfg(test)]
mod tests {
    use super::super::{Builder, Op};
    use super::*;

    fn argv(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn buildkit() -> Builder {
        Builder::buildkit(
            "buildkit-v032",
            "buildctl".into(),
            "unix:///b.sock".into(),
            "/meta".into(),
            None,
        )
    }

    fn kaniko() -> Builder {
        Builder::kaniko(
            "/usr/bin/docker".into(),
            "unix:///d.sock".into(),
            "kaniko:1".into(),
            "/host-out".into(),
        )
    }

    #[test]
    fn buildkit_builds_into_its_image_store_and_checks_the_digest() {
        let b = buildkit();
        let cmds = b.build(Path::new("/ctx"), "r/x:1", Cache::Off);
        assert_eq!(cmds.len(), 2);
        let a = argv(&cmds[0]);
        assert_eq!(a[..3], ["--addr", "unix:///b.sock", "build"]);
        assert!(a.windows(2).any(|w| w == ["--frontend", "dockerfile.v0"]));
        assert!(a.windows(2).any(|w| w == ["--local", "context=/ctx"]));
        assert!(a.windows(2).any(|w| w == ["--local", "dockerfile=/ctx"]));
        assert!(a
            .windows(2)
            .any(|w| w == ["--output", "type=image,name=r/x:1"]));
        assert!(a.contains(&"--no-cache".to_string()));
        let meta = &a[a.iter().position(|x| x == "--metadata-file").unwrap() + 1];
        assert!(meta.starts_with("/meta/build-"), "{meta}");
        assert_eq!(argv(&cmds[1])[3], *meta);
        // Each build checks a file of its own.
        let again = argv(&b.build(Path::new("/ctx"), "r/x:1", Cache::Off)[0]);
        assert!(!again.contains(meta));
        let warm = argv(&b.build(Path::new("/ctx"), "r/x:1", Cache::Local)[0]);
        assert!(!warm.contains(&"--no-cache".to_string()));
        let export = argv(&b.build(Path::new("/c"), "t", Cache::ExportTo("r/c:cache"))[0]);
        assert!(export
            .windows(2)
            .any(|w| w == ["--export-cache", "type=registry,ref=r/c:cache,mode=max"]));
        let import = argv(&b.build(Path::new("/c"), "t", Cache::ImportFrom("r/c:cache"))[0]);
        assert!(import
            .windows(2)
            .any(|w| w == ["--import-cache", "type=registry,ref=r/c:cache"]));
        let secret =
            argv(&b.build_with_secrets(Path::new("/c"), "t", Cache::Off, &[("ca", "/f")])[0]);
        assert!(secret.windows(2).any(|w| w == ["--secret", "id=ca,src=/f"]));
        assert_eq!(b.cache_ref("r/c"), "r/c:cache");
    }

    #[test]
    fn kaniko_runs_its_image_on_the_context_without_pushing() {
        let k = kaniko();
        let cmds = k.build(Path::new("/ctx"), "r/bench/x-kaniko:latest", Cache::Off);
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[0].get_program(), "/usr/bin/docker");
        let a = argv(&cmds[0]);
        assert_eq!(
            a[..9],
            [
                "-H",
                "unix:///d.sock",
                "run",
                "--rm",
                "--network",
                "host",
                "-v",
                "/ctx:/workspace:ro",
                "-v"
            ]
        );
        let image = a.iter().position(|x| x == "kaniko:1").unwrap();
        for flag in [
            "--no-push",
            "--insecure",
            "--insecure-pull",
            "--cache=false",
        ] {
            assert!(a[image..].contains(&flag.to_string()), "{flag}: {a:?}");
        }
        assert!(!a.iter().any(|x| x.starts_with("--cache-repo")));
        let digest = &a[a.iter().position(|x| x == "--digest-file").unwrap() + 1];
        assert!(digest.starts_with("/out/build-"), "{digest}");
        let on_host = digest.replacen("/out/", "/host-out/", 1);
        assert_eq!(argv(&cmds[1])[3], on_host);

        let warm = argv(&k.build(Path::new("/ctx"), "r/bench/x-kaniko:latest", Cache::Local)[0]);
        assert!(warm
            .windows(2)
            .any(|w| w == ["--cache-repo", "r/bench/x-kaniko/kaniko-cache"]));
        assert!(warm.contains(&"--cache=true".to_string()));
        let export = argv(&k.build(Path::new("/c"), "t", Cache::ExportTo("r/cache/x"))[0]);
        assert!(export
            .windows(2)
            .any(|w| w == ["--cache-repo", "r/cache/x"]));
        let import = argv(&k.build(Path::new("/c"), "t", Cache::ImportFrom("r/cache/x"))[0]);
        assert!(import
            .windows(2)
            .any(|w| w == ["--cache-repo", "r/cache/x"]));
        assert_eq!(k.cache_ref("r/cache/x"), "r/cache/x");

        // A secret is mounted read-only into the container and named there.
        let s = argv(
            &k.build_with_secrets(Path::new("/c"), "t", Cache::Off, &[("ca", "/etc/ca.crt")])[0],
        );
        assert!(s
            .windows(2)
            .any(|w| w == ["-v", "/etc/ca.crt:/kaniko-secrets/ca:ro"]));
        assert!(s
            .windows(2)
            .any(|w| w == ["--secret", "id=ca,src=/kaniko-secrets/ca"]));
    }

    #[test]
    fn the_digest_check_fails_without_the_file_or_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("d");
        let ok = |c: &mut Command| c.output().unwrap().status.success();
        assert!(!ok(&mut check_digest(&file, "sha256:", "kaniko")));
        std::fs::write(&file, "").unwrap();
        let out = check_digest(&file, "sha256:", "kaniko").output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr)
            .contains("kaniko exited 0 but wrote no image digest"));
        std::fs::write(&file, "sha256:ab").unwrap();
        assert!(ok(&mut check_digest(&file, "sha256:", "kaniko")));
    }

    #[test]
    fn reference_peers_refuse_push_and_pull_and_a_skipped_peer_everything() {
        for b in [buildkit(), kaniko()] {
            assert_eq!(b.cannot(Op::Build), None, "{}", b.name);
            for op in [Op::Push, Op::Pull] {
                assert!(b.cannot(op).is_some(), "{} {op:?}", b.name);
            }
            let out = b.push("a", "b")[0].output().unwrap();
            assert!(!out.status.success());
            assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
            assert!(!b.pull("a").output().unwrap().status.success());
        }
        let s = Builder::skipped("kaniko", "no executor.xz".into());
        assert_eq!(
            s.cannot(Op::Build).as_deref(),
            Some("skipped: no executor.xz")
        );
        assert!(!s.build(Path::new("/c"), "t", Cache::Off)[0]
            .output()
            .unwrap()
            .status
            .success());
        s.reset().unwrap();
    }

    #[test]
    fn reference_peers_count_cached_steps_in_their_own_logs() {
        let log = "#5 [2/3] COPY a /a\n#5 CACHED\n#6 [3/3] RUN true\n#6 DONE 0.1s\n";
        assert_eq!(buildkit().cached_steps(log), 1);
        let klog = "INFO[0001] Using caching version of cmd: RUN echo 1\n\
                    INFO[0001] No cached layer found for cmd RUN echo 2\n";
        assert_eq!(kaniko().cached_steps(klog), 1);
    }
}
