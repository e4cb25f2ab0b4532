//! The benchmark's build contexts, each generated on the fly, so the numbers depend on
//! nothing outside this repository and the machine's own package mirrors.

use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};

mod debian;
mod large;
mod layer_tree;

pub use debian::{apt, npm, pip, snapshot, snapshot_script};
pub use large::{large_layer, many_files, toolchain};
pub use layer_tree::layer_tree;

/// Base images the workloads build on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Busybox,
    Debian,
}

/// Writes a context's files into a directory, given the base image reference.
pub type MakeContext = Box<dyn Fn(&Path, &str) -> Result<()>>;

/// A build context: its Dockerfile and files.
pub struct Context {
    pub name: &'static str,
    pub what: String,
    pub base: Base,
    /// Steps that produce a layer (what a warm build can answer from its cache).
    pub cacheable_steps: usize,
    /// The file a "one change" rebuild rewrites.
    pub changed_file: Option<&'static str>,
    /// Build secrets (`id`, source file) every tool passes with `--secret id=ID,src=FILE`.
    pub secrets: &'static [(&'static str, &'static str)],
    pub make: MakeContext,
    /// The same RUN commands for the limit column (a plain chroot, nothing recorded); only
    /// the cold-build rows have one.
    pub limit: Option<Limit>,
}

/// What the limit runs for a context: its stages (in parallel, each in its own copy of the
/// base's root), each with its RUN commands in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub stages: Vec<LimitStage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitStage {
    /// Context paths copied into the stage's root before its commands (untimed), with the
    /// absolute destination: what the stage's COPY steps put there.
    pub copies: Vec<(&'static str, &'static str)>,
    /// Each RUN: the directory it runs in (the stage's WORKDIR) and its shell command.
    pub runs: Vec<(&'static str, String)>,
}

impl Limit {
    /// One stage running `commands` in `/`, nothing copied.
    pub fn commands(commands: Vec<String>) -> Limit {
        Limit {
            stages: vec![LimitStage {
                copies: Vec::new(),
                runs: commands.into_iter().map(|c| ("/", c)).collect(),
            }],
        }
    }
}

/// The sizes the workloads use; `--quick` shrinks the large ones for smoke runs.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Files written by the large-diff RUN (30 KB each).
    pub large_diff_files: usize,
    /// Bytes of each of the two layers of the push/pull image.
    pub push_layer_bytes: u64,
    /// Bytes of the tree the layer-write comparison compresses.
    pub layer_tree_bytes: u64,
    /// `RUN true` steps of the per-step overhead workload.
    pub overhead_steps: usize,
    /// Files of 100 KB the toolchain row's builder stage writes.
    pub toolchain_files: usize,
    /// Megabytes of the large-layer row's one layer.
    pub large_layer_mb: usize,
    /// Files of the many-files row's one layer.
    pub many_files: usize,
}

impl Scale {
    pub fn full() -> Scale {
        Scale {
            large_diff_files: 10_000,
            push_layer_bytes: 250_000_000,
            layer_tree_bytes: 1_000_000_000,
            overhead_steps: 20,
            toolchain_files: 2_000,
            large_layer_mb: 1_000,
            many_files: 200_000,
        }
    }

    pub fn quick() -> Scale {
        Scale {
            large_diff_files: 1_000,
            push_layer_bytes: 25_000_000,
            layer_tree_bytes: 100_000_000,
            overhead_steps: 5,
            toolchain_files: 200,
            large_layer_mb: 100,
            many_files: 20_000,
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

const TINY_RUN: &str = "echo built > /built.txt";

pub fn tiny() -> Context {
    Context {
        name: "tiny",
        what: "busybox, one COPY, one RUN: fixed overhead".into(),
        base: Base::Busybox,
        cacheable_steps: 2,
        changed_file: None,
        secrets: &[],
        make: Box::new(|dir, from| {
            write(dir, "hello.txt", "hello\n")?;
            write(
                dir,
                "Dockerfile",
                &format!("FROM {from}\nCOPY hello.txt /hello.txt\nRUN {TINY_RUN}\n"),
            )
        }),
        limit: Some(Limit::commands(vec![TINY_RUN.into()])),
    }
}

/// One RUN writing `files` files of 30 KB of random data (which does not compress) in
/// directories of 100, then a COPY of one small source file (the one a rebuild changes).
pub fn large_diff(files: usize) -> Context {
    let dirs = files.div_ceil(100);
    let run = format!(
        "for i in $(seq 1 {dirs}); do mkdir -p /data/d$i; for j in $(seq 1 100); do \
         head -c 30000 /dev/urandom > /data/d$i/f$j; done; done"
    );
    Context {
        name: "large-diff",
        what: format!(
            "one RUN writing {files} files, {} MB of random data; one COPY",
            files * 30_000 / 1_000_000
        ),
        base: Base::Busybox,
        cacheable_steps: 2,
        changed_file: Some("app.txt"),
        secrets: &[],
        limit: Some(Limit::commands(vec![run.clone()])),
        make: Box::new(move |dir, from| {
            write(dir, "app.txt", "app 0\n")?;
            write(
                dir,
                "Dockerfile",
                &format!("FROM {from}\nRUN {run}\nCOPY app.txt /app.txt\n"),
            )
        }),
    }
}

/// `n` steps alternating COPY of a small file and RUN appending to a log; the file a
/// rebuild changes is copied in the middle, so about half the steps rerun.
pub fn steps(name: &'static str, n: usize) -> Context {
    let files = n.div_ceil(2);
    Context {
        name,
        what: format!("{n} small steps (COPY and RUN alternating)"),
        base: Base::Busybox,
        cacheable_steps: n,
        changed_file: Some(if files >= 15 { "f7.txt" } else { "f2.txt" }),
        secrets: &[],
        limit: Some(Limit::commands(
            (0..n / 2)
                .map(|i| format!("echo step {i} >> /steps.log"))
                .collect(),
        )),
        make: Box::new(move |dir, from| {
            let mut dockerfile = format!("FROM {from}\n");
            for step in 0..n {
                let i = step / 2;
                if step % 2 == 0 {
                    write(dir, &format!("f{i}.txt"), &format!("file {i}\n"))?;
                    dockerfile.push_str(&format!("COPY f{i}.txt /files/f{i}.txt\n"));
                } else {
                    dockerfile.push_str(&format!("RUN echo step {i} >> /steps.log\n"));
                }
            }
            write(dir, "Dockerfile", &dockerfile)
        }),
    }
}

pub fn multi_stage() -> Context {
    let run = |name: &str| {
        format!(
            "for i in $(seq 1 2000); do echo $i > /tmp/{name}-$i; done && tar -cf /{name}.tar /tmp"
        )
    };
    let stage = |name: &str| LimitStage {
        copies: Vec::new(),
        runs: vec![("/", run(name))],
    };
    Context {
        name: "multi-stage",
        what: "two independent builder stages (2,000 files each) and a final stage".into(),
        base: Base::Busybox,
        cacheable_steps: 4,
        changed_file: None,
        secrets: &[],
        limit: Some(Limit {
            stages: vec![stage("one"), stage("two")],
        }),
        make: Box::new(move |dir, from| {
            write(
                dir,
                "Dockerfile",
                &format!(
                    "FROM {from} AS one\nRUN {}\nFROM {from} AS two\nRUN {}\n\
                     FROM {from}\nCOPY --from=one /one.tar /\nCOPY --from=two /two.tar /\n",
                    run("one"),
                    run("two")
                ),
            )
        }),
    }
}

/// Two RUN steps of `bytes` random bytes each: the image pushed and pulled.
pub fn push_image(bytes: u64) -> Context {
    Context {
        name: "push-image",
        what: format!("two layers of {} MB of random data", bytes / 1_000_000),
        base: Base::Busybox,
        cacheable_steps: 2,
        changed_file: None,
        secrets: &[],
        limit: None,
        make: Box::new(move |dir, from| {
            write(
                dir,
                "Dockerfile",
                &format!(
                    "FROM {from}\nRUN head -c {bytes} /dev/urandom > /a.bin\n\
                     RUN head -c {bytes} /dev/urandom > /b.bin\n"
                ),
            )
        }),
    }
}

/// A config-only step and then `run_steps` × `RUN true` (0 for the baseline).
pub fn run_true(run_steps: usize) -> Context {
    Context {
        name: if run_steps == 0 {
            "run-true-0"
        } else {
            "run-true-n"
        },
        what: format!("{run_steps} × RUN true"),
        base: Base::Busybox,
        cacheable_steps: run_steps,
        changed_file: None,
        secrets: &[],
        limit: None,
        make: Box::new(move |dir, from| {
            let mut dockerfile = format!("FROM {from}\nENV BENCH=1\n");
            for _ in 0..run_steps {
                dockerfile.push_str("RUN true\n");
            }
            write(dir, "Dockerfile", &dockerfile)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_context() -> Vec<Context> {
        vec![
            tiny(),
            large_diff(200),
            steps("ten-steps", 10),
            steps("many-steps", 30),
            multi_stage(),
            push_image(1000),
            run_true(0),
            run_true(3),
            apt(),
            pip(),
            npm(),
            snapshot(200),
            toolchain(200),
            large_layer(20),
            many_files(300),
        ]
    }

    /// The RUN commands of a Dockerfile per stage, their `--mount` flags left out, each
    /// with the WORKDIR it runs in.
    fn dockerfile_runs(text: &str) -> Vec<Vec<(String, String)>> {
        let mut stages: Vec<Vec<(String, String)>> = Vec::new();
        let mut workdir = "/".to_string();
        for line in text.lines() {
            if line.starts_with("FROM ") {
                stages.push(Vec::new());
                workdir = "/".into();
            } else if let Some(dir) = line.strip_prefix("WORKDIR ") {
                workdir = dir.to_string();
            } else if let Some(mut cmd) = line.strip_prefix("RUN ") {
                while let Some(rest) = cmd.strip_prefix("--") {
                    cmd = rest.split_once(' ').map(|(_, c)| c).unwrap_or("");
                }
                stages
                    .last_mut()
                    .unwrap()
                    .push((workdir.clone(), cmd.to_string()));
            }
        }
        stages.retain(|s| !s.is_empty());
        stages
    }

    #[test]
    fn the_limit_runs_exactly_the_run_commands_of_the_dockerfile() {
        let mut with_limit = 0;
        for c in every_context() {
            let Some(limit) = &c.limit else { continue };
            with_limit += 1;
            let dir = tempfile::tempdir().unwrap();
            (c.make)(dir.path(), "b").unwrap();
            let text = fs::read_to_string(dir.path().join("Dockerfile")).unwrap();
            let limit_runs: Vec<Vec<(String, String)>> = limit
                .stages
                .iter()
                .map(|s| {
                    s.runs
                        .iter()
                        .map(|(w, c)| (w.to_string(), c.clone()))
                        .collect()
                })
                .collect();
            assert_eq!(limit_runs, dockerfile_runs(&text), "{}:\n{text}", c.name);
            for stage in &limit.stages {
                for (src, _) in &stage.copies {
                    assert!(dir.path().join(src).exists(), "{}: {src}", c.name);
                }
            }
        }
        assert_eq!(with_limit, 11);
    }

    #[test]
    fn every_context_writes_a_dockerfile_that_uses_its_base() {
        for c in every_context() {
            let dir = tempfile::tempdir().unwrap();
            (c.make)(dir.path(), "127.0.0.1:5000/base:1").unwrap();
            let text = fs::read_to_string(dir.path().join("Dockerfile")).unwrap();
            assert!(text.starts_with("FROM 127.0.0.1:5000/base:1"), "{}", c.name);
            if let Some(f) = c.changed_file {
                assert!(dir.path().join(f).exists(), "{}: {f} missing", c.name);
                assert!(
                    text.contains(&format!("COPY {f} ")),
                    "{}: {f} unused",
                    c.name
                );
            }
        }
    }

    #[test]
    fn step_contexts_have_the_steps_they_claim() {
        for c in [
            steps("ten-steps", 10),
            steps("many-steps", 30),
            run_true(4),
            pip(),
            npm(),
        ] {
            let dir = tempfile::tempdir().unwrap();
            (c.make)(dir.path(), "b").unwrap();
            let text = fs::read_to_string(dir.path().join("Dockerfile")).unwrap();
            let layer_steps = text
                .lines()
                .filter(|l| l.starts_with("RUN ") || l.starts_with("COPY "))
                .count();
            assert_eq!(layer_steps, c.cacheable_steps, "{}:\n{text}", c.name);
        }
    }
}
