//! The benchmark workloads: each one a build context generated on the fly, so the numbers
//! depend on nothing outside this repository and the machine's own package mirrors.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

/// How a workload is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A build with no build cache (`--no-cache`); base images are already local.
    Cold,
    /// A rebuild with nothing changed, after one priming build.
    Warm,
    /// A rebuild after one source file changed, after one priming build.
    OneChange,
    /// Pushing an already built image to the local registry.
    Push,
}

/// One workload of the benchmark.
pub struct Workload {
    pub name: &'static str,
    pub what: &'static str,
    pub mode: Mode,
    /// Base image this workload builds on (`busybox` or `debian`).
    pub base: Base,
    /// Left out by `--quick`.
    pub slow: bool,
    /// Writes the context (Dockerfile and files); `from` is the full base image reference.
    pub make: fn(dir: &Path, from: &str) -> Result<()>,
    /// The file `OneChange` rewrites between the priming build and the timed one.
    pub changed_file: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Busybox,
    Debian,
}

pub fn all() -> Vec<Workload> {
    vec![
        Workload {
            name: "tiny",
            what: "busybox, one COPY, one RUN: fixed overhead",
            mode: Mode::Cold,
            base: Base::Busybox,
            slow: false,
            make: tiny,
            changed_file: None,
        },
        Workload {
            name: "large-diff",
            what: "one RUN writing 10,000 files, ~300 MB",
            mode: Mode::Cold,
            base: Base::Busybox,
            slow: false,
            make: large_diff,
            changed_file: None,
        },
        Workload {
            name: "many-steps",
            what: "30 small RUN/COPY steps",
            mode: Mode::Cold,
            base: Base::Busybox,
            slow: false,
            make: many_steps,
            changed_file: None,
        },
        Workload {
            name: "multi-stage",
            what: "two independent builder stages and a final stage",
            mode: Mode::Cold,
            base: Base::Busybox,
            slow: false,
            make: multi_stage,
            changed_file: None,
        },
        Workload {
            name: "warm",
            what: "many-steps rebuilt with nothing changed",
            mode: Mode::Warm,
            base: Base::Busybox,
            slow: false,
            make: many_steps,
            changed_file: None,
        },
        Workload {
            name: "one-change",
            what: "many-steps rebuilt after one copied file changed",
            mode: Mode::OneChange,
            base: Base::Busybox,
            slow: false,
            make: many_steps,
            changed_file: Some("f15.txt"),
        },
        Workload {
            name: "push",
            what: "push of a ~500 MB image to a local registry",
            mode: Mode::Push,
            base: Base::Busybox,
            slow: true,
            make: push_500mb,
            changed_file: None,
        },
        Workload {
            name: "apt",
            what: "apt-get install into Debian",
            mode: Mode::Cold,
            base: Base::Debian,
            slow: true,
            make: apt,
            changed_file: None,
        },
    ]
}

fn write(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

fn tiny(dir: &Path, from: &str) -> Result<()> {
    write(dir, "hello.txt", "hello\n")?;
    write(
        dir,
        "Dockerfile",
        &format!("FROM {from}\nCOPY hello.txt /hello.txt\nRUN echo built > /built.txt\n"),
    )
}

fn large_diff(dir: &Path, from: &str) -> Result<()> {
    // 100 directories x 100 files x 30 KB of random data = ~300 MB that does not compress,
    // like the peers' published figure for this workload.
    write(
        dir,
        "Dockerfile",
        &format!(
            "FROM {from}\nRUN for i in $(seq 1 100); do mkdir -p /data/d$i; \
             for j in $(seq 1 100); do head -c 30000 /dev/urandom > /data/d$i/f$j; done; done\n"
        ),
    )
}

fn many_steps(dir: &Path, from: &str) -> Result<()> {
    let mut dockerfile = format!("FROM {from}\n");
    for i in 0..15 {
        write(dir, &format!("f{i}.txt"), &format!("file {i}\n"))?;
        dockerfile.push_str(&format!("COPY f{i}.txt /files/f{i}.txt\n"));
        dockerfile.push_str(&format!("RUN echo step {i} >> /steps.log\n"));
    }
    write(dir, "f15.txt", "file 15\n")?;
    dockerfile.push_str("COPY f15.txt /files/f15.txt\n");
    write(dir, "Dockerfile", &dockerfile)
}

fn multi_stage(dir: &Path, from: &str) -> Result<()> {
    write(
        dir,
        "Dockerfile",
        &format!(
            "FROM {from} AS one\nRUN for i in $(seq 1 2000); do echo $i > /tmp/one-$i; done && \
             tar -cf /one.tar /tmp\n\
             FROM {from} AS two\nRUN for i in $(seq 1 2000); do echo $i > /tmp/two-$i; done && \
             tar -cf /two.tar /tmp\n\
             FROM {from}\nCOPY --from=one /one.tar /\nCOPY --from=two /two.tar /\n"
        ),
    )
}

fn push_500mb(dir: &Path, from: &str) -> Result<()> {
    write(
        dir,
        "Dockerfile",
        &format!(
            "FROM {from}\nRUN head -c 250000000 /dev/urandom > /a.bin\n\
             RUN head -c 250000000 /dev/urandom > /b.bin\n"
        ),
    )
}

fn apt(dir: &Path, from: &str) -> Result<()> {
    write(
        dir,
        "Dockerfile",
        &format!(
            "FROM {from}\nRUN apt-get update -qq && \
             apt-get install -y -qq --no-install-recommends curl ca-certificates && \
             rm -rf /var/lib/apt/lists/*\n"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_writes_a_dockerfile_that_uses_its_base() {
        for w in all() {
            let dir = tempfile::tempdir().unwrap();
            (w.make)(dir.path(), "127.0.0.1:5000/base:1").unwrap();
            let text = fs::read_to_string(dir.path().join("Dockerfile")).unwrap();
            assert!(text.starts_with("FROM 127.0.0.1:5000/base:1"), "{}", w.name);
            if let Some(f) = w.changed_file {
                assert!(dir.path().join(f).exists(), "{}: {f} missing", w.name);
            }
        }
    }

    #[test]
    fn workload_names_are_unique() {
        let mut names: Vec<_> = all().iter().map(|w| w.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
}
