//! The limit column: a context's RUN commands in a plain chroot of its base's root file
//! system, nothing recorded (no snapshot, no layer, no image), so that a builder's time
//! above it is what the builder itself costs. Each timed run gets a fresh copy of the base
//! (made untimed before the run); the commands get what a builder's RUN gets: /dev, /proc,
//! the host's network and resolv.conf, the build secrets under /run/secrets, the default
//! PATH and HOME=/root, `/bin/sh -c` in the step's WORKDIR. Stages run in parallel, each
//! in its own copy, as a builder runs independent stages.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};

use super::tools::remove_tree;
use super::workloads::Limit;

/// The PATH a Dockerfile's RUN gets when the image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One row's limit: where its roots and scripts live.
pub struct LimitRun {
    dir: PathBuf,
    base_rootfs: PathBuf,
    context: PathBuf,
    limit: Limit,
    /// Earlier runs' roots are moved here and removed after the section, not between runs:
    /// freeing thousands of inodes just before a run writes thousands slows that run on
    /// ext4 (see docs/benchmarks.md), and this run is the floor the others are measured by.
    trash: PathBuf,
    runs: usize,
}

/// The name of stage `stage`'s step `step`'s file.
fn step_file(stage: usize, step: usize) -> String {
    format!("step-{stage}-{step}.sh")
}

/// `s` quoted for the shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl LimitRun {
    /// Writes the row's scripts under `dir`; `secrets` are (id, source file) pairs.
    pub fn new(
        dir: &Path,
        base_rootfs: &Path,
        context: &Path,
        limit: &Limit,
        secrets: &[(&str, &str)],
        trash: &Path,
    ) -> Result<LimitRun> {
        super::fresh_dir(dir)?;
        let run = LimitRun {
            dir: dir.to_path_buf(),
            base_rootfs: base_rootfs.to_path_buf(),
            context: context.to_path_buf(),
            limit: limit.clone(),
            trash: trash.to_path_buf(),
            runs: 0,
        };
        for (i, stage) in run.limit.stages.iter().enumerate() {
            for (j, (workdir, command)) in stage.runs.iter().enumerate() {
                let file = dir.join(step_file(i, j));
                fs::write(
                    &file,
                    format!("cd {} || exit 1\n{command}\n", quote(workdir)),
                )
                .with_context(|| format!("writing {}", file.display()))?;
            }
        }
        fs::write(dir.join("run.sh"), run.script(secrets))?;
        Ok(run)
    }

    /// The directory of the step files (`step-STAGE-STEP.sh`) and `run.sh`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The context the stages' COPY sources are in.
    pub fn context(&self) -> &Path {
        &self.context
    }

    pub fn limit(&self) -> &Limit {
        &self.limit
    }

    /// Stage `stage`'s RUN steps as one shell command: each step file run by `/bin/sh -c`
    /// with only the default PATH and HOME=/root, each only if the one before succeeded.
    /// `enter` goes before the shell (`chroot ROOT ` for the limit, nothing in a container
    /// that is already the stage's root); `steps_dir` is where the step files are seen
    /// from where the command runs.
    pub fn steps_command(&self, stage: usize, enter: &str, steps_dir: &str) -> String {
        let runs = self.limit.stages.get(stage).map_or(0, |s| s.runs.len());
        (0..runs)
            .map(|j| {
                let file = quote(&format!("{steps_dir}/{}", step_file(stage, j)));
                format!("env -i PATH={DEFAULT_PATH} HOME=/root {enter}/bin/sh -c \"$(cat {file})\"")
            })
            .collect::<Vec<_>>()
            .join(" && ")
    }

    fn root(&self, stage: usize) -> PathBuf {
        self.dir.join("roots").join(stage.to_string())
    }

    /// The script the timed command runs (in a private mount namespace).
    fn script(&self, secrets: &[(&str, &str)]) -> String {
        let mut s = String::from("set -u\n");
        let steps_dir = self.dir.display().to_string();
        for i in 0..self.limit.stages.len() {
            let root = self.root(i).display().to_string();
            let r = quote(&root);
            s.push_str(&format!(
                "mount --rbind /dev {r}/dev && mount -t proc proc {r}/proc || exit 1\n"
            ));
            for (id, src) in secrets {
                let target = quote(&format!("{root}/run/secrets/{id}"));
                s.push_str(&format!(
                    "touch {target} && mount --bind -o ro {} {target} || exit 1\n",
                    quote(src)
                ));
            }
            let steps = self.steps_command(i, &format!("chroot {r} "), &steps_dir);
            s.push_str(&format!("( {steps} ) &\npid{i}=$!\n"));
        }
        s.push_str("status=0\n");
        for i in 0..self.limit.stages.len() {
            s.push_str(&format!("wait $pid{i} || status=1\n"));
        }
        s.push_str("exit $status\n");
        s
    }

    /// Untimed, before each run: a fresh copy of the base for every stage, with what the
    /// stage's COPY steps put there, its mount points and the host's resolv.conf.
    pub fn prepare(&mut self) -> Result<()> {
        let roots = self.dir.join("roots");
        if roots.exists() {
            fs::create_dir_all(&self.trash)?;
            let dest = self.trash.join(format!(
                "{}-{}",
                self.dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("row"),
                self.runs
            ));
            remove_tree(&dest)?;
            fs::rename(&roots, &dest)
                .with_context(|| format!("moving {} to the trash", roots.display()))?;
        }
        self.runs += 1;
        for (i, stage) in self.limit.stages.iter().enumerate() {
            let root = self.root(i);
            fs::create_dir_all(root.parent().context("a stage root has a parent")?)?;
            copy_tree(&self.base_rootfs, &root)?;
            for d in ["dev", "proc", "run/secrets", "etc", "tmp"] {
                fs::create_dir_all(root.join(d))?;
            }
            if let Ok(resolv) = fs::read("/etc/resolv.conf") {
                let dest = root.join("etc/resolv.conf");
                let _ = fs::remove_file(&dest);
                fs::write(&dest, resolv)?;
            }
            for (src, dest) in &stage.copies {
                let target = root.join(dest.trim_start_matches('/'));
                fs::create_dir_all(&target)?;
                copy_tree(&self.context.join(src), &target)?;
            }
            for (workdir, _) in &stage.runs {
                fs::create_dir_all(root.join(workdir.trim_start_matches('/')))?;
            }
        }
        Ok(())
    }

    /// The timed command: the script in a private mount namespace, whose mounts go away
    /// with it.
    pub fn command(&self) -> Command {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--fork", "sh"])
            .arg(self.dir.join("run.sh"));
        c
    }
}

/// `cp -a SRC/. DEST` (reflinked where the file system can).
fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    fs::create_dir_all(dest)?;
    let status = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(format!("{}/.", src.display()))
        .arg(dest)
        .status()
        .context("running cp")?;
    anyhow::ensure!(
        status.success(),
        "copying {} to {} failed",
        src.display(),
        dest.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workloads::LimitStage;

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(quote("a'b c"), "'a'\\''b c'");
        let out = Command::new("sh")
            .args(["-c", &format!("printf %s {}", quote("it's $HOME"))])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's $HOME");
    }

    #[test]
    fn the_limit_runs_each_stage_in_its_own_copy_of_the_base_with_its_files() {
        rbuild_testutil::require_root("chroot and mounts in a private mount namespace");
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        fs::create_dir_all(base.join("bin")).unwrap();
        fs::copy("/bin/busybox", base.join("bin/busybox")).unwrap();
        for applet in ["sh", "cat", "echo", "ls", "head", "wc"] {
            std::os::unix::fs::symlink("busybox", base.join("bin").join(applet)).unwrap();
        }
        let ctx = dir.path().join("ctx");
        fs::create_dir_all(ctx.join("app")).unwrap();
        fs::write(ctx.join("app/in.txt"), "from the context\n").unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, "s3cret\n").unwrap();
        let limit = Limit {
            stages: vec![
                LimitStage {
                    copies: vec![("app", "/app")],
                    runs: vec![
                        (
                            "/app",
                            "cat in.txt /run/secrets/ca > /app/out.txt && echo \"$HOME $PATH\" >> /app/out.txt".into(),
                        ),
                        ("/", "head -c 10 /dev/zero | wc -c > /zeros && ls /proc/self > /dev/null".into()),
                    ],
                },
                LimitStage {
                    copies: Vec::new(),
                    runs: vec![("/", "echo 'two' > /two.txt".into())],
                },
            ],
        };
        let mut run = LimitRun::new(
            &dir.path().join("limit"),
            &base,
            &ctx,
            &limit,
            &[("ca", secret.to_str().unwrap())],
            &dir.path().join("trash"),
        )
        .unwrap();
        run.prepare().unwrap();
        let status = run.command().status().unwrap();
        assert!(status.success());
        let first = dir.path().join("limit/roots/0");
        assert_eq!(
            fs::read_to_string(first.join("app/out.txt")).unwrap(),
            format!("from the context\ns3cret\n/root {DEFAULT_PATH}\n")
        );
        assert_eq!(
            fs::read_to_string(first.join("zeros")).unwrap().trim(),
            "10"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("limit/roots/1/two.txt")).unwrap(),
            "two\n"
        );
        // The base itself is untouched, the secret is not left in the root, nothing stays
        // mounted, and the next run starts from a fresh copy.
        assert!(!base.join("two.txt").exists());
        assert_eq!(fs::read(first.join("run/secrets/ca")).unwrap(), b"");
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&dir.path().display().to_string()));
        run.prepare().unwrap();
        assert!(!first.join("app/out.txt").exists());
        assert!(dir.path().join("trash/limit-1/0/app/out.txt").exists());
    }

    #[test]
    fn a_failing_command_fails_the_limit() {
        rbuild_testutil::require_root("chroot and mounts in a private mount namespace");
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        fs::create_dir_all(base.join("bin")).unwrap();
        fs::copy("/bin/busybox", base.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", base.join("bin/sh")).unwrap();
        let limit = Limit {
            stages: vec![
                LimitStage {
                    copies: Vec::new(),
                    runs: vec![("/", "true".into())],
                },
                LimitStage {
                    copies: Vec::new(),
                    runs: vec![("/", "exit 3".into()), ("/", "true".into())],
                },
            ],
        };
        let mut run = LimitRun::new(
            &dir.path().join("limit"),
            &base,
            dir.path(),
            &limit,
            &[],
            &dir.path().join("trash"),
        )
        .unwrap();
        run.prepare().unwrap();
        assert!(!run.command().status().unwrap().success());
    }
}
