//! The builders compared: rbuild and the peers found on this machine, each as the command
//! lines a user would type.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A builder under test.
pub struct Tool {
    pub name: &'static str,
    kind: Kind,
}

enum Kind {
    Rbuild { bin: PathBuf, root: PathBuf },
    DockerBuildkit { docker: PathBuf, host: String },
    Buildah { root: PathBuf, runroot: PathBuf },
}

impl Tool {
    pub fn rbuild(bin: PathBuf, root: PathBuf) -> Tool {
        Tool {
            name: "rbuild",
            kind: Kind::Rbuild { bin, root },
        }
    }

    pub fn docker_buildkit(docker: PathBuf, host: String) -> Tool {
        Tool {
            name: "docker-buildkit",
            kind: Kind::DockerBuildkit { docker, host },
        }
    }

    pub fn buildah(work: &Path) -> Tool {
        Tool {
            name: "buildah",
            kind: Kind::Buildah {
                root: work.join("buildah-root"),
                runroot: work.join("buildah-runroot"),
            },
        }
    }

    pub fn is_rbuild(&self) -> bool {
        matches!(self.kind, Kind::Rbuild { .. })
    }

    /// The command that builds `context` as `tag`, without build cache when `no_cache`.
    pub fn build(&self, context: &Path, tag: &str, no_cache: bool) -> Command {
        match &self.kind {
            Kind::Rbuild { bin, root } => {
                let mut c = Command::new(bin);
                c.arg("--root")
                    .arg(root)
                    .args(["build", "--progress", "plain"]);
                if no_cache {
                    c.arg("--no-cache");
                }
                c.args(["-t", tag]).arg(context);
                c
            }
            Kind::DockerBuildkit { docker, host } => {
                let mut c = Command::new(docker);
                c.env("DOCKER_BUILDKIT", "1")
                    .args(["-H", host, "build", "--progress", "plain"]);
                if no_cache {
                    c.arg("--no-cache");
                }
                c.args(["-t", tag]).arg(context);
                c
            }
            Kind::Buildah { root, runroot } => {
                let mut c = Command::new("buildah");
                c.arg("--root")
                    .arg(root)
                    .arg("--runroot")
                    .arg(runroot)
                    .args(["--storage-driver", "overlay", "bud", "--runtime", "runc"])
                    .args(["--tls-verify=false", "--layers"]);
                if no_cache {
                    c.arg("--no-cache");
                }
                c.args(["-t", tag]).arg(context);
                c
            }
        }
    }

    /// The command that pushes `tag` (a reference into the local registry).
    pub fn push(&self, tag: &str) -> Command {
        match &self.kind {
            Kind::Rbuild { bin, root } => {
                let mut c = Command::new(bin);
                c.arg("--root").arg(root).args(["push", tag]);
                c
            }
            Kind::DockerBuildkit { docker, host } => {
                let mut c = Command::new(docker);
                c.args(["-H", host, "push", tag]);
                c
            }
            Kind::Buildah { root, runroot } => {
                let mut c = Command::new("buildah");
                c.arg("--root")
                    .arg(root)
                    .arg("--runroot")
                    .arg(runroot)
                    .args(["--storage-driver", "overlay", "push", "--tls-verify=false"])
                    .arg(tag)
                    .arg(format!("docker://{tag}"));
                c
            }
        }
    }

    /// The command that prints the tool's version, for the report.
    pub fn version(&self) -> Command {
        match &self.kind {
            Kind::Rbuild { bin, .. } => {
                let mut c = Command::new(bin);
                c.arg("--version");
                c
            }
            Kind::DockerBuildkit { docker, host } => {
                let mut c = Command::new(docker);
                c.args(["-H", host, "version", "--format", "{{.Server.Version}}"]);
                c
            }
            Kind::Buildah { .. } => {
                let mut c = Command::new("buildah");
                c.arg("--version");
                c
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn cold_builds_disable_the_cache_for_every_tool() {
        let tools = [
            Tool::rbuild("rbuild".into(), "/r".into()),
            Tool::docker_buildkit("docker".into(), "unix:///d.sock".into()),
            Tool::buildah(Path::new("/w")),
        ];
        for t in &tools {
            let cold = argv(&t.build(Path::new("/ctx"), "x:1", true));
            let warm = argv(&t.build(Path::new("/ctx"), "x:1", false));
            assert!(cold.contains(&"--no-cache".to_string()), "{}", t.name);
            assert!(!warm.contains(&"--no-cache".to_string()), "{}", t.name);
            assert_eq!(cold.last().unwrap(), "/ctx");
        }
    }

    #[test]
    fn buildah_uses_runc_because_crun_refuses_cgroup_v1() {
        let a = argv(&Tool::buildah(Path::new("/w")).build(Path::new("/c"), "t", false));
        let i = a.iter().position(|x| x == "--runtime").unwrap();
        assert_eq!(a[i + 1], "runc");
    }
}
