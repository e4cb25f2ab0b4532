//! The pod-limit column, beside the restricted pod's (`tools/restricted.rs`): the row's
//! limit (`limit.rs`: its RUN commands, nothing recorded) run in a plain container of the
//! row's base image on the bench's private dockerd instead of a chroot on the host. The
//! container is what any runtime gives a step: root, Docker's default seccomp profile and
//! capabilities, `--network host`, its overlay2 root; no builder at all. So the pod's time
//! above it is what rbuild costs in the pod, as the host's rbuild's time above the limit is
//! what it costs on the host; the pod's time above the host's is mostly this floor's (the
//! container's environment), not rbuild's.
//!
//! Every timed run is a fresh container per stage, timed like the restricted pod's:
//! `docker create`, `docker start -a`, `docker rm -v` apart (`measure::Sample::parts`),
//! the cell their sum. The stages run one after another (the rows the pod runs have one).
//! The container runs the limit's own step files (mounted read-only at [`STEPS_DIR`]) with
//! the limit's own command line ([`LimitRun::steps_command`]); the stage's COPY sources
//! come read-only at [`CONTEXT_DIR`] and are copied in first, inside the timed start (a
//! few small files), since a container's files can only be put in by it or by `docker cp`
//! after its creation. Secrets are mounted read-only under /run/secrets, as a RUN
//! `--mount=type=secret` gets them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use super::limit::{quote, LimitRun};

/// The column's name.
pub const POD_LIMIT: &str = "pod-limit";

/// Where the container sees the limit's step files.
const STEPS_DIR: &str = "/rbuild-limit";

/// Where the container sees the build context (the stages' COPY sources).
const CONTEXT_DIR: &str = "/rbuild-context";

/// One row's pod-limit: the limit whose step files it runs, and the dockerd it runs on.
pub struct PodLimit {
    docker: PathBuf,
    host: String,
    image: String,
    secrets: Vec<(String, String)>,
    /// The shell script of each stage's container.
    scripts: Vec<String>,
    steps_dir: PathBuf,
    context: PathBuf,
}

impl PodLimit {
    /// `image` is the row's base in the bench's registry; `secrets` (id, source file).
    pub fn new(
        limit: &LimitRun,
        docker: &Path,
        host: &str,
        image: &str,
        secrets: &[(&str, &str)],
    ) -> PodLimit {
        let scripts = limit
            .limit()
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                let mut s = String::from("set -u\n");
                for (src, dest) in &stage.copies {
                    let from = quote(&format!("{CONTEXT_DIR}/{src}/."));
                    let to = quote(dest);
                    s.push_str(&format!("mkdir -p {to} && cp -a {from} {to} || exit 1\n"));
                }
                for (workdir, _) in &stage.runs {
                    s.push_str(&format!("mkdir -p {} || exit 1\n", quote(workdir)));
                }
                s.push_str(&limit.steps_command(i, "", STEPS_DIR));
                s.push('\n');
                s
            })
            .collect();
        PodLimit {
            docker: docker.to_path_buf(),
            host: host.to_string(),
            image: image.to_string(),
            secrets: secrets
                .iter()
                .map(|(id, src)| (id.to_string(), src.to_string()))
                .collect(),
            scripts,
            steps_dir: limit.dir().to_path_buf(),
            context: limit.context().to_path_buf(),
        }
    }

    fn docker(&self) -> Command {
        let mut c = Command::new(&self.docker);
        c.args(["-H", &self.host]);
        c
    }

    /// Untimed, before each run: the base image in the dockerd (pulled from the registry
    /// once; again only if a docker peer's reset removed it).
    pub fn prepare(&self) -> Result<()> {
        let present = self
            .docker()
            .args(["image", "inspect", "--format", "{{.Id}}", &self.image])
            .output()
            .context("running docker image inspect")?
            .status
            .success();
        if present {
            return Ok(());
        }
        let out = self
            .docker()
            .args(["pull", "-q", &self.image])
            .output()
            .context("running docker pull")?;
        anyhow::ensure!(
            out.status.success(),
            "docker pull {} failed: {}",
            self.image,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// The timed commands of one run: every stage's `docker create`, then their `docker
    /// start -a` one after another, then their `docker rm -v` (parts [`part_kind`]).
    pub fn commands(&self) -> Vec<Command> {
        let names: Vec<String> = (0..self.scripts.len()).map(container_name).collect();
        let mut creates = Vec::new();
        let mut starts = Vec::new();
        let mut removes = Vec::new();
        for (name, script) in names.iter().zip(&self.scripts) {
            let mut create = self.docker();
            create
                .args(["create", "--name", name, "--network", "host"])
                .arg("-v")
                .arg(format!("{}:{STEPS_DIR}:ro", self.steps_dir.display()))
                .arg("-v")
                .arg(format!("{}:{CONTEXT_DIR}:ro", self.context.display()));
            for (id, src) in &self.secrets {
                create.arg("-v").arg(format!("{src}:/run/secrets/{id}:ro"));
            }
            create.arg(&self.image).args(["/bin/sh", "-c", script]);
            creates.push(create);
            let mut start = self.docker();
            start.args(["start", "--attach", name]);
            starts.push(start);
            let mut remove = self.docker();
            remove.args(["rm", "--volumes", name]);
            removes.push(remove);
        }
        creates.into_iter().chain(starts).chain(removes).collect()
    }
}

/// Which of the three kinds (0 create, 1 start, 2 rm, as `restricted::PARTS`) part `i`
/// of a run of `parts` parts is: [`PodLimit::commands`] gives each kind for every stage.
pub fn part_kind(i: usize, parts: usize) -> usize {
    let stages = (parts / 3).max(1);
    (i / stages).min(2)
}

/// A container name no other run of this process has used (a failed run leaves its
/// containers behind, in the bench's private dockerd, removed with it).
fn container_name(stage: usize) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    format!(
        "rbuild-bench-pod-limit-{}-{run}-{stage}",
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workloads::{Limit, LimitStage};

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn two_stages(dir: &Path) -> LimitRun {
        let limit = Limit {
            stages: vec![
                LimitStage {
                    copies: vec![("app", "/app")],
                    runs: vec![
                        ("/", "apt-get update".into()),
                        ("/app", "cat /run/secrets/ca > it's".into()),
                    ],
                },
                LimitStage {
                    copies: Vec::new(),
                    runs: vec![("/", "echo two > /two".into())],
                },
            ],
        };
        LimitRun::new(
            &dir.join("limit"),
            &dir.join("base"),
            &dir.join("ctx"),
            &limit,
            &[("ca", "/etc/ca.crt")],
            &dir.join("trash"),
        )
        .unwrap()
    }

    #[test]
    fn a_two_stage_row_with_a_secret_runs_the_limits_steps_in_plain_containers() {
        let dir = tempfile::tempdir().unwrap();
        let limit = two_stages(dir.path());
        let pod = PodLimit::new(
            &limit,
            Path::new("/usr/bin/docker"),
            "unix:///d.sock",
            "127.0.0.1:5000/bench/debian:latest",
            &[("ca", "/etc/ca.crt")],
        );
        let cmds = pod.commands();
        assert_eq!(cmds.len(), 6, "create, start and rm for each of two stages");
        for c in &cmds {
            assert_eq!(c.get_program(), "/usr/bin/docker");
            assert_eq!(
                args(c)[..2],
                ["-H", "unix:///d.sock"],
                "the bench's dockerd"
            );
        }
        let create = args(&cmds[0]);
        assert_eq!(create[2..4], ["create", "--name"]);
        let name = create[4].clone();
        assert!(name.starts_with("rbuild-bench-pod-limit-"), "{create:?}");
        let second = args(&cmds[1]);
        assert_ne!(second[4], name, "each stage has its own container");
        assert_eq!(
            args(&cmds[2]),
            ["-H", "unix:///d.sock", "start", "--attach", &name]
        );
        assert_eq!(args(&cmds[3])[4], second[4]);
        assert_eq!(
            args(&cmds[4]),
            ["-H", "unix:///d.sock", "rm", "--volumes", &name]
        );
        // A plain container: root, Docker's default seccomp profile and capabilities, the
        // host's network; nothing of the restricted pod's flags.
        let joined = create.join(" ");
        for flag in ["--user", "--cap-drop", "--security-opt", "--privileged"] {
            assert!(!create.contains(&flag.to_string()), "{joined}");
        }
        assert!(joined.contains("--network host"), "{joined}");
        let steps = format!("{}:/rbuild-limit:ro", limit.dir().display());
        let ctx = format!("{}:/rbuild-context:ro", dir.path().join("ctx").display());
        assert!(create.windows(2).any(|w| w == ["-v", &steps]), "{joined}");
        assert!(create.windows(2).any(|w| w == ["-v", &ctx]), "{joined}");
        assert!(
            create
                .windows(2)
                .any(|w| w == ["-v", "/etc/ca.crt:/run/secrets/ca:ro"]),
            "{joined}"
        );
        let image = create
            .iter()
            .position(|a| a == "127.0.0.1:5000/bench/debian:latest")
            .unwrap();
        assert_eq!(create[image + 1..image + 3], ["/bin/sh", "-c"]);
        assert_eq!(create.len(), image + 4, "{joined}");
        // The first stage copies its COPY source, makes its WORKDIRs and runs the limit's
        // step files in order, as the limit's chroot does.
        let script = &create[image + 3];
        let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        assert_eq!(
            script,
            &format!(
                "set -u\nmkdir -p '/app' && cp -a '/rbuild-context/app/.' '/app' || exit 1\n\
                 mkdir -p '/' || exit 1\nmkdir -p '/app' || exit 1\n\
                 env -i PATH={path} HOME=/root /bin/sh -c \"$(cat '/rbuild-limit/step-0-0.sh')\" && \
                 env -i PATH={path} HOME=/root /bin/sh -c \"$(cat '/rbuild-limit/step-0-1.sh')\"\n"
            )
        );
        let second_script = second.last().unwrap();
        assert!(
            second_script.ends_with("/bin/sh -c \"$(cat '/rbuild-limit/step-1-0.sh')\"\n"),
            "{second_script}"
        );
        assert!(!second_script.contains("step-0-"), "{second_script}");
        // The step files the containers read are the limit's own.
        assert_eq!(
            std::fs::read_to_string(limit.dir().join("step-0-1.sh")).unwrap(),
            "cd '/app' || exit 1\ncat /run/secrets/ca > it's\n"
        );
        let run_sh = std::fs::read_to_string(limit.dir().join("run.sh")).unwrap();
        assert!(
            run_sh.contains(&format!(
                "chroot '{}' /bin/sh -c \"$(cat '{}')\"",
                dir.path().join("limit/roots/0").display(),
                limit.dir().join("step-0-1.sh").display()
            )),
            "{run_sh}"
        );
    }

    #[test]
    fn parts_are_grouped_by_kind_for_any_number_of_stages() {
        let kinds: Vec<usize> = (0..3).map(|i| part_kind(i, 3)).collect();
        assert_eq!(kinds, [0, 1, 2]);
        let kinds: Vec<usize> = (0..6).map(|i| part_kind(i, 6)).collect();
        assert_eq!(kinds, [0, 0, 1, 1, 2, 2]);
    }
}
