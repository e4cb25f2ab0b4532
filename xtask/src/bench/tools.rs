//! The programs compared: rbuild and the peers found on this machine, each as the command
//! lines a user would type.

use std::path::{Path, PathBuf};
use std::process::Command;

mod cleanup;
mod logs;
mod reference;
pub mod restricted;
mod rootless;

pub use cleanup::remove_tree;
pub use restricted::{restricted, EMPTY_STORE, RESTRICTED};
pub use rootless::RunAs;

/// Debian's docker client: the newer one earlier on some PATHs lacks the builder bits the
/// daemon of Debian's docker.io expects.
/// The label (key, value) of images the docker peer's reset keeps on the shared private
/// dockerd (Kaniko's executor image).
pub const KEEP_LABEL: (&str, &str) = ("rbuild-bench.keep", "true");

pub const DEBIAN_DOCKER: &str = "/usr/bin/docker";

/// How a build uses its cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache<'a> {
    /// No build cache at all (`--no-cache`).
    Off,
    /// The tool's local cache, as a plain rebuild uses it.
    Local,
    /// Build (with the local cache) and export the cache to this registry reference.
    ExportTo(&'a str),
    /// Build importing the cache from this registry reference.
    ImportFrom(&'a str),
}

/// What a builder is asked to do, for [`Builder::cannot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Build,
    /// Push an image already in the tool's store.
    Push,
    /// Pull an image into the tool's store.
    Pull,
}

/// A builder under test.
#[derive(Clone)]
pub struct Builder {
    pub name: String,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Rbuild {
        bin: PathBuf,
        root: PathBuf,
        isolation: Option<&'static str>,
    },
    Docker {
        docker: PathBuf,
        host: String,
    },
    Buildah {
        root: PathBuf,
        runroot: PathBuf,
        /// Run as this unprivileged user (rootless Buildah) instead of root.
        user: Option<RunAs>,
    },
    /// The reference BuildKit's `buildctl`, talking to its private `buildkitd` (rootful,
    /// or rootless under rootlesskit as `user`).
    BuildKit {
        buildctl: PathBuf,
        addr: String,
        /// Run buildctl as this unprivileged user (rootless BuildKit's own).
        user: Option<RunAs>,
        /// Where each build's `--metadata-file` goes (checked for the image's digest).
        meta_dir: PathBuf,
    },
    /// The reference Kaniko executor image, run with `docker run` on the private dockerd.
    Kaniko {
        docker: PathBuf,
        host: String,
        image: String,
        /// Mounted at /out: each build's `--digest-file` (checked for the digest).
        out_dir: PathBuf,
    },
    /// rbuild in the builder image for restricted pods, run with `docker run` and the
    /// restricted pod's flags on the private dockerd (`restricted.rs`).
    Restricted {
        docker: PathBuf,
        host: String,
    },
    /// A peer that cannot run on this machine; every cell says why.
    Skipped {
        why: String,
    },
}

impl Builder {
    pub fn rbuild(bin: PathBuf, root: PathBuf) -> Builder {
        Builder {
            name: "rbuild".into(),
            kind: Kind::Rbuild {
                bin,
                root,
                isolation: None,
            },
        }
    }

    /// rbuild forced to one isolation (`userns` or `chroot`), named `rbuild-<isolation>`.
    pub fn rbuild_isolated(bin: PathBuf, root: PathBuf, isolation: &'static str) -> Builder {
        Builder {
            name: format!("rbuild-{isolation}"),
            kind: Kind::Rbuild {
                bin,
                root,
                isolation: Some(isolation),
            },
        }
    }

    pub fn docker_buildkit(docker: PathBuf, host: String) -> Builder {
        Builder {
            name: "docker-buildkit".into(),
            kind: Kind::Docker { docker, host },
        }
    }

    /// Buildah as root on overlay, with its own storage under `dir`.
    pub fn buildah(dir: &Path) -> Builder {
        Builder {
            name: "buildah".into(),
            kind: Kind::Buildah {
                root: dir.join("root"),
                runroot: dir.join("runroot"),
                user: None,
            },
        }
    }

    /// Buildah run as the unprivileged `user` (its user namespace maps the user's
    /// subordinate ids; overlay is the kernel's own, mounted inside that namespace), with
    /// its own storage under `dir`, which [`Builder::prepare_store`] makes the user's.
    pub fn buildah_rootless(dir: &Path, user: RunAs) -> Builder {
        Builder {
            name: "buildah-rootless".into(),
            kind: Kind::Buildah {
                root: dir.join("root"),
                runroot: dir.join("runroot"),
                user: Some(user),
            },
        }
    }

    /// The reference BuildKit (`buildctl` of a running `buildkitd` at `addr`; rootless
    /// when `user`, whose daemon it is, is given).
    pub fn buildkit(
        name: &str,
        buildctl: PathBuf,
        addr: String,
        meta_dir: PathBuf,
        user: Option<RunAs>,
    ) -> Builder {
        Builder {
            name: name.into(),
            kind: Kind::BuildKit {
                buildctl,
                addr,
                user,
                meta_dir,
            },
        }
    }

    /// The reference Kaniko: its executor `image`, loaded into the dockerd at `host`.
    pub fn kaniko(docker: PathBuf, host: String, image: String, out_dir: PathBuf) -> Builder {
        Builder {
            name: "kaniko".into(),
            kind: Kind::Kaniko {
                docker,
                host,
                image,
                out_dir,
            },
        }
    }

    /// A peer named `name` that is not run, because `why`.
    pub fn skipped(name: &str, why: String) -> Builder {
        Builder {
            name: name.into(),
            kind: Kind::Skipped { why },
        }
    }

    /// Why this builder cannot do `op` here, if it cannot: a skipped peer does nothing;
    /// BuildKit and Kaniko push only as the end of a build and pull only a build's base.
    pub fn cannot(&self, op: Op) -> Option<String> {
        match (&self.kind, op) {
            (Kind::Skipped { why }, _) => Some(format!("skipped: {why}")),
            (Kind::BuildKit { .. }, Op::Push) => Some(
                "buildctl pushes only as the end of a build (`--output ...,push=true`), not \
                 an image it stored"
                    .into(),
            ),
            (Kind::Kaniko { .. }, Op::Push) => {
                Some("Kaniko has no image store: it pushes only as the end of a build".into())
            }
            (Kind::BuildKit { .. } | Kind::Kaniko { .. }, Op::Pull) => {
                Some("no pull command: it pulls only a build's base image".into())
            }
            (Kind::Restricted { .. }, Op::Push | Op::Pull) => {
                Some("each run is a fresh pod: an image or base it stored is gone with it".into())
            }
            _ => None,
        }
    }

    pub fn is_rbuild(&self) -> bool {
        matches!(self.kind, Kind::Rbuild { .. })
    }

    /// The rbuild store (an OCI layout) this builder writes, if it is rbuild.
    pub fn rbuild_root(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Rbuild { root, .. } => Some(root),
            _ => None,
        }
    }

    /// The same builder on another, private store (for "empty store" runs); docker keeps
    /// its daemon (its reset empties the daemon instead).
    pub fn with_store(&self, dir: &Path) -> Builder {
        let kind = match &self.kind {
            Kind::Rbuild { bin, isolation, .. } => Kind::Rbuild {
                bin: bin.clone(),
                root: dir.join("root"),
                isolation: *isolation,
            },
            Kind::Buildah { user, .. } => Kind::Buildah {
                root: dir.join("root"),
                runroot: dir.join("runroot"),
                user: user.clone(),
            },
            // The daemons' tools and the skipped keep their kind: no store of their own here.
            _ => self.kind.clone(),
        };
        Builder {
            name: self.name.clone(),
            kind,
        }
    }

    fn base_command(&self) -> Command {
        match &self.kind {
            Kind::Rbuild { bin, root, .. } => {
                let mut c = Command::new(bin);
                c.arg("--root").arg(root);
                c
            }
            Kind::Docker { docker, host } => {
                let mut c = Command::new(docker);
                c.env("DOCKER_BUILDKIT", "1").args(["-H", host]);
                c
            }
            Kind::BuildKit {
                buildctl,
                addr,
                user,
                ..
            } => {
                let mut c = match user {
                    None => Command::new(buildctl),
                    Some(u) => {
                        let mut c = as_user(u);
                        c.arg(buildctl);
                        c
                    }
                };
                c.arg("--addr").arg(addr);
                c
            }
            Kind::Kaniko { docker, host, .. } | Kind::Restricted { docker, host } => {
                let mut c = Command::new(docker);
                c.args(["-H", host]);
                c
            }
            Kind::Skipped { why } => refusal(why),
            Kind::Buildah {
                root,
                runroot,
                user,
            } => {
                let mut c = match user {
                    None => Command::new("buildah"),
                    Some(u) => {
                        let mut c = as_user(u);
                        c.arg("buildah");
                        c
                    }
                };
                c.arg("--root")
                    .arg(root)
                    .arg("--runroot")
                    .arg(runroot)
                    .args(["--storage-driver", "overlay"]);
                c
            }
        }
    }

    /// The commands that build `context` as `tag` (one, except docker's cache export,
    /// which is a build with the inline cache and a push).
    pub fn build(&self, context: &Path, tag: &str, cache: Cache) -> Vec<Command> {
        self.build_with_secrets(context, tag, cache, &[])
    }

    /// [`Builder::build`] with build secrets (`id`, source file) for
    /// `RUN --mount=type=secret`: every tool takes `--secret id=ID,src=FILE`.
    pub fn build_with_secrets(
        &self,
        context: &Path,
        tag: &str,
        cache: Cache,
        secrets: &[(&str, &str)],
    ) -> Vec<Command> {
        let mut c = self.base_command();
        let mut after = Vec::new();
        match &self.kind {
            Kind::BuildKit { meta_dir, .. } => {
                return reference::buildkit_build(c, meta_dir, context, tag, cache, secrets)
            }
            Kind::Kaniko { image, out_dir, .. } => {
                return reference::kaniko_build(c, image, out_dir, context, tag, cache, secrets)
            }
            Kind::Restricted { .. } => {
                return restricted::restricted_build(c, context, tag, cache, secrets)
            }
            Kind::Skipped { .. } => return vec![c],
            Kind::Rbuild { isolation, .. } => {
                c.args(["build", "--progress", "plain"]);
                if let Some(i) = isolation {
                    c.args(["--isolation", i]);
                }
                match cache {
                    Cache::Off => {
                        c.arg("--no-cache");
                    }
                    Cache::Local => {}
                    Cache::ExportTo(r) => {
                        c.arg("--cache-to")
                            .arg(format!("type=registry,ref={r},mode=max"));
                    }
                    Cache::ImportFrom(r) => {
                        c.arg("--cache-from").arg(format!("type=registry,ref={r}"));
                    }
                }
                c.args(["-t", tag]);
            }
            Kind::Docker { .. } => {
                // The private dockerd has no bridge (several daemons coexist), and host
                // networking is what rbuild's RUN steps get by default.
                c.args(["build", "--progress", "plain", "--network", "host"]);
                match cache {
                    Cache::Off => {
                        c.arg("--no-cache");
                    }
                    Cache::Local => {}
                    // Debian's docker 20.10 has no buildx, hence no --cache-to: the cache
                    // travels inline in the pushed image (mode=min, every layer of the
                    // final stage).
                    Cache::ExportTo(r) => {
                        c.args(["--build-arg", "BUILDKIT_INLINE_CACHE=1", "-t", r]);
                        let mut push = self.base_command();
                        push.args(["push", r]);
                        after.push(push);
                    }
                    Cache::ImportFrom(r) => {
                        c.args(["--cache-from", r]);
                    }
                }
                c.args(["-t", tag]);
            }
            Kind::Buildah { .. } => {
                c.args(["bud", "--runtime", "runc", "--network", "host"])
                    .args(["--tls-verify=false", "--layers"]);
                match cache {
                    Cache::Off => {
                        c.arg("--no-cache");
                    }
                    Cache::Local => {}
                    Cache::ExportTo(r) => {
                        c.args(["--cache-to", r]);
                    }
                    Cache::ImportFrom(r) => {
                        c.args(["--cache-from", r]);
                    }
                }
                c.args(["-t", tag]);
            }
        }
        for (id, src) in secrets {
            c.arg("--secret").arg(format!("id={id},src={src}"));
        }
        c.arg(context);
        let mut all = vec![c];
        all.extend(after);
        all
    }

    /// Where this tool's registry cache for `repo` lives: a tagged reference, except for
    /// Buildah, whose `--cache-to/--cache-from` take a repository.
    pub fn cache_ref(&self, repo: &str) -> String {
        match &self.kind {
            Kind::Buildah { .. } | Kind::Kaniko { .. } => repo.to_string(),
            _ => format!("{repo}:cache"),
        }
    }

    /// The commands that push the stored image `source` to `dest` (a reference into a
    /// local registry).
    pub fn push(&self, source: &str, dest: &str) -> Vec<Command> {
        if let Some(why) = self.cannot(Op::Push) {
            return vec![refusal(&why)];
        }
        let mut c = self.base_command();
        match &self.kind {
            Kind::Rbuild { .. } => {
                c.args(["push", source, dest]);
                vec![c]
            }
            Kind::Docker { .. } => {
                let mut tag = self.base_command();
                tag.args(["tag", source, dest]);
                c.args(["push", dest]);
                vec![tag, c]
            }
            Kind::Buildah { .. } => {
                c.args(["push", "--tls-verify=false", source])
                    .arg(format!("docker://{dest}"));
                vec![c]
            }
            _ => vec![c],
        }
    }

    /// The command that pulls `reference` into the tool's store.
    pub fn pull(&self, reference: &str) -> Command {
        if let Some(why) = self.cannot(Op::Pull) {
            return refusal(&why);
        }
        let mut c = self.base_command();
        match &self.kind {
            Kind::Rbuild { .. } => c.args(["pull", reference]),
            Kind::Docker { .. } => c.args(["pull", reference]),
            Kind::Buildah { .. } => c.args(["pull", "--tls-verify=false", reference]),
            _ => &mut c,
        };
        c
    }

    /// The command that prints the tool's version, for the report.
    pub fn version(&self) -> Command {
        let mut c = self.base_command();
        match &self.kind {
            Kind::Rbuild { .. } | Kind::Buildah { .. } => c.arg("--version"),
            Kind::Docker { .. } => c.args(["version", "--format", "{{.Server.Version}}"]),
            Kind::BuildKit { .. } => c.arg("--version"),
            Kind::Kaniko { image, .. } => c.args(["run", "--rm", image, "version"]),
            Kind::Restricted { .. } => c.args(["run", "--rm", restricted::IMAGE, "--version"]),
            Kind::Skipped { .. } => &mut c,
        };
        c
    }
}

/// `runuser -u USER -- env HOME=… XDG_RUNTIME_DIR=…`, to which the program is appended:
/// runuser keeps root's environment, and the rootless tools keep their state under the
/// user's HOME and XDG_RUNTIME_DIR.
pub fn as_user(u: &RunAs) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", &u.name, "--", "env"])
        .arg(format!("HOME={}", u.home.display()))
        .arg(format!("XDG_RUNTIME_DIR={}", u.runtime_dir.display()));
    c
}

/// A command that fails saying `why`: what a builder runs for what it cannot do, so that
/// the cell shows the reason.
pub fn refusal(why: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", "echo \"error: $1\" >&2; exit 1", "sh", why]);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn all() -> Vec<Builder> {
        vec![
            Builder::rbuild("rbuild".into(), "/r".into()),
            Builder::docker_buildkit("docker".into(), "unix:///d.sock".into()),
            Builder::buildah(Path::new("/w")),
            Builder::buildah_rootless(Path::new("/u"), bench_user()),
        ]
    }

    fn bench_user() -> RunAs {
        RunAs {
            name: "bench".into(),
            uid: 1005,
            gid: 1006,
            home: "/home/bench".into(),
            runtime_dir: "/run/user/1005".into(),
        }
    }

    #[test]
    fn cold_builds_disable_the_cache_for_every_tool() {
        for t in &all() {
            let cold = argv(&t.build(Path::new("/ctx"), "x:1", Cache::Off)[0]);
            let warm = argv(&t.build(Path::new("/ctx"), "x:1", Cache::Local)[0]);
            assert!(cold.contains(&"--no-cache".to_string()), "{}", t.name);
            assert!(!warm.contains(&"--no-cache".to_string()), "{}", t.name);
            assert_eq!(cold.last().unwrap(), "/ctx");
        }
    }

    #[test]
    fn registry_cache_flags_per_tool() {
        let tools = all();
        let export = |t: &Builder| {
            t.build(Path::new("/c"), "t", Cache::ExportTo("r/c:1"))
                .iter()
                .map(argv)
                .collect::<Vec<_>>()
        };
        let rbuild = export(&tools[0]);
        assert!(rbuild[0].contains(&"type=registry,ref=r/c:1,mode=max".to_string()));
        let docker = export(&tools[1]);
        assert!(docker[0].contains(&"BUILDKIT_INLINE_CACHE=1".to_string()));
        assert_eq!(docker[1][docker[1].len() - 2..], ["push", "r/c:1"]);
        let buildah = export(&tools[2]);
        assert!(buildah[0].windows(2).any(|w| w == ["--cache-to", "r/c:1"]));
        let import = argv(&tools[0].build(Path::new("/c"), "t", Cache::ImportFrom("r/c:1"))[0]);
        assert!(import.contains(&"type=registry,ref=r/c:1".to_string()));
    }

    #[test]
    fn every_tool_passes_build_secrets_as_id_and_source() {
        for t in &all() {
            let plain = argv(&t.build(Path::new("/ctx"), "x:1", Cache::Off)[0]);
            assert!(!plain.contains(&"--secret".to_string()), "{}", t.name);
            let a = argv(
                &t.build_with_secrets(
                    Path::new("/ctx"),
                    "x:1",
                    Cache::Off,
                    &[("ca", "/certs/ca.crt"), ("token", "/t")],
                )[0],
            );
            assert!(
                a.windows(2)
                    .any(|w| w == ["--secret", "id=ca,src=/certs/ca.crt"]),
                "{}: {a:?}",
                t.name
            );
            assert!(
                a.windows(2).any(|w| w == ["--secret", "id=token,src=/t"]),
                "{}: {a:?}",
                t.name
            );
            assert_eq!(a.last().unwrap(), "/ctx", "{}", t.name);
        }
    }

    #[test]
    fn buildah_uses_runc_because_crun_refuses_cgroup_v1() {
        for b in [&all()[2], &all()[3]] {
            let a = argv(&b.build(Path::new("/c"), "t", Cache::Local)[0]);
            let i = a.iter().position(|x| x == "--runtime").unwrap();
            assert_eq!(a[i + 1], "runc", "{}", b.name);
        }
    }

    #[test]
    fn a_private_store_changes_only_the_store() {
        let r = Builder::rbuild("rbuild".into(), "/r".into()).with_store(Path::new("/e"));
        assert_eq!(r.rbuild_root(), Some(Path::new("/e/root")));
        assert_eq!(r.name, "rbuild");
    }
}
