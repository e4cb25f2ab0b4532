//! `cargo xtask bench`: runs the workloads with rbuild and with each peer on this machine,
//! alternating runs (A B A B ...) so that the machine's drift cancels out, and writes a
//! Markdown report of medians and per-pair ratios.

mod header;
mod limit;
mod measure;
mod plan;
mod pod_limit;
mod reference;
mod report;
mod sections;
mod services;
mod tools;
mod workloads;

// The fidelity check's rootless mode runs rbuild as a user made as the bench makes its own.
pub(crate) use services::rootless_user;
pub(crate) use tools::{as_user, RunAs};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use tools::Builder;

/// Every row group the harness knows, in the order it runs them.
pub const WORKLOADS: &[(&str, &str)] = &[
    ("tiny", "cold build: busybox, one COPY, one RUN"),
    (
        "large-diff",
        "cold build: one RUN writing 10,000 files, 300 MB",
    ),
    ("many-steps", "cold build: 30 small COPY/RUN steps"),
    ("multi-stage", "cold build: two independent builder stages"),
    (
        "toolchain",
        "cold build: multi-stage, a 200 MB builder stage never shipped",
    ),
    ("large-layer", "cold build: one RUN writing 1 GB, one layer"),
    ("many-files", "cold build: one RUN writing 200,000 files"),
    (
        "apt",
        "cold build: apt-get install into Debian (slow: debootstrap once)",
    ),
    (
        "pip",
        "cold build: apt-get install python3-pip, pip install of an app (slow)",
    ),
    (
        "npm",
        "cold build: apt-get install nodejs npm, npm ci of an app (slow)",
    ),
    (
        "step-overhead",
        "RUN true × N against none: per-step cost, userns and chroot",
    ),
    (
        "snapshot",
        "10,000 files, 250 MB on Debian: overlay (userns) and walk (chroot) snapshots",
    ),
    (
        "cache-ten-steps",
        "cold, warm, one change, registry cache: 10-step Dockerfile",
    ),
    (
        "cache-large-diff",
        "cold, warm, one change, registry cache: large-diff build",
    ),
    (
        "push",
        "push of a 500 MB image to an empty local registry (and skopeo copy)",
    ),
    (
        "pull",
        "pull of a 500 MB image into an empty store (and skopeo copy)",
    ),
    (
        "layer-write",
        "one layer of a 1 GB tree against tar | gzip and tar | pigz",
    ),
];

/// The peers rbuild is compared with (all by default; `--peers` picks some).
const PEERS: &[&str] = &[
    "docker-buildkit",
    "buildah",
    "buildah-rootless",
    reference::BUILDKIT,
    reference::BUILDKIT_ROOTLESS,
    reference::KANIKO,
];

/// Peers run only when named with `--peers`: rbuild in a restricted pod (for the rows on
/// Debian: apt, pip, npm; its images need patchelf for a dynamically linked rbuild).
const OPT_IN_PEERS: &[&str] = &[tools::RESTRICTED];

/// Left out unless named, or unless the run is a full one.
const SLOW: &[&str] = &["apt", "pip", "npm"];

pub struct Options {
    pub quick: bool,
    /// Timed runs of the cheap rows.
    pub runs: usize,
    /// Timed runs of the rows that move hundreds of megabytes.
    pub heavy_runs: usize,
    pub peers: Vec<String>,
    pub out: PathBuf,
    pub only: Vec<String>,
    /// Use the rbuild binary and layer_bench example in this directory instead of building.
    pub bin_dir: Option<PathBuf>,
    /// The reference builders' directory (buildkit/, kaniko/); by default
    /// `../shared/reference` beside the repository.
    pub reference: Option<PathBuf>,
}

const USAGE_OPTIONS: &str = "--quick, --runs N, --heavy-runs N, --peers a,b, --out FILE, \
                             --bin-dir DIR, --reference DIR, --list";

fn parse_options(args: &[String]) -> Result<Option<Options>> {
    let mut o = Options {
        quick: false,
        runs: 3,
        heavy_runs: 0,
        peers: PEERS.iter().map(|p| p.to_string()).collect(),
        out: PathBuf::from("docs/benchmarks.md"),
        only: Vec::new(),
        bin_dir: None,
        reference: None,
    };
    let number = |v: Option<&String>, flag: &str| -> Result<usize> {
        v.with_context(|| format!("{flag} needs a number"))?
            .parse()
            .with_context(|| format!("{flag} needs a number"))
    };
    let mut runs_given = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--runs" => {
                o.runs = number(it.next(), "--runs")?;
                runs_given = true;
            }
            "--heavy-runs" => o.heavy_runs = number(it.next(), "--heavy-runs")?,
            "--peers" => {
                o.peers = it
                    .next()
                    .context("--peers needs a list")?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            "--out" => o.out = PathBuf::from(it.next().context("--out needs a file")?),
            "--bin-dir" => {
                o.bin_dir = Some(PathBuf::from(it.next().context("--bin-dir needs a dir")?))
            }
            "--reference" => {
                o.reference = Some(PathBuf::from(
                    it.next().context("--reference needs a directory")?,
                ))
            }
            "--help" | "-h" => {
                println!(
                    "usage: cargo xtask bench [OPTIONS] [WORKLOAD...]\n\noptions: \
                     {USAGE_OPTIONS}\npeers (--peers, all by default): {}; only when named: {}\n\nworkloads:",
                    PEERS.join(", "),
                    OPT_IN_PEERS.join(", ")
                );
                for (name, what) in WORKLOADS {
                    println!("  {name:<18} {what}");
                }
                return Ok(None);
            }
            "--list" => {
                for (name, what) in WORKLOADS {
                    println!("{name:<18} {what}");
                }
                return Ok(None);
            }
            flag if flag.starts_with('-') => {
                bail!("unknown option {flag} (known: {USAGE_OPTIONS})")
            }
            name => {
                if !WORKLOADS.iter().any(|(n, _)| *n == name) {
                    bail!(
                        "unknown workload {name} (known: {})",
                        WORKLOADS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                o.only.push(name.to_string())
            }
        }
    }
    if o.quick && !runs_given {
        o.runs = 1;
    }
    if o.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if o.heavy_runs == 0 {
        o.heavy_runs = o.runs;
    }
    for p in &o.peers {
        if !PEERS.contains(&p.as_str()) && !OPT_IN_PEERS.contains(&p.as_str()) {
            bail!(
                "unknown peer {p} (known: {}, {})",
                PEERS.join(", "),
                OPT_IN_PEERS.join(", ")
            );
        }
    }
    Ok(Some(o))
}

impl Options {
    pub fn selected(&self, name: &str) -> bool {
        if self.only.is_empty() {
            !(self.quick && SLOW.contains(&name))
        } else {
            self.only.iter().any(|n| n == name)
        }
    }
}

/// Everything the sections need.
pub struct Bench<'a> {
    pub opts: &'a Options,
    pub work: PathBuf,
    pub logs: PathBuf,
    pub services: &'a services::Services,
    pub rbuild_bin: PathBuf,
    pub layer_bench_bin: PathBuf,
    pub rbuild: Builder,
    pub peers: Vec<Builder>,
    pub scale: workloads::Scale,
}

/// Holds `work`'s lock until dropped: a second `cargo xtask bench` on the same directory
/// would share its stores, bases and scratch trees with the first, and the first's clean-up
/// removing trees under a running build made that build fail (dpkg's "Stale file handle"
/// on the overlay's lower directories). The lock goes with the process, however it ends.
fn lock_work_dir(work: &Path) -> Result<fs::File> {
    use std::os::fd::AsRawFd;
    fs::create_dir_all(work)?;
    let path = work.join(".lock");
    let file = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!(
                "another `cargo xtask bench` is running on {} (it would share this run's \
                 stores and scratch trees); wait for it or set CARGO_TARGET_DIR",
                work.display()
            );
        }
        return Err(err).with_context(|| format!("locking {}", path.display()));
    }
    Ok(file)
}

pub fn main(args: &[String]) -> Result<()> {
    let Some(opts) = parse_options(args)? else {
        return Ok(());
    };
    let repo = repo_root()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { repo.join(t) })
        .unwrap_or_else(|| repo.join("target"));
    let work = target.join("bench");
    let _only_bench = lock_work_dir(&work)?;
    let logs = work.join("logs");
    let _ = fs::remove_dir_all(&logs);
    fs::create_dir_all(&logs)?;

    services::ensure_packages()?;
    let bins = match &opts.bin_dir {
        Some(dir) => dir.clone(),
        None => {
            eprintln!("==> building rbuild and layer_bench (release)");
            let status = Command::new(env!("CARGO"))
                .current_dir(&repo)
                .args([
                    "build",
                    "--release",
                    "--quiet",
                    "-p",
                    "rbuild",
                    "--bin",
                    "rbuild",
                ])
                .args(["-p", "rbuild-layer", "--example", "layer_bench"])
                .status()?;
            if !status.success() {
                bail!("building rbuild failed");
            }
            target.join("release")
        }
    };
    let rbuild_bin = bins.join("rbuild");
    let layer_bench_bin = bins.join("examples/layer_bench");
    if !rbuild_bin.is_file() {
        bail!("{} is missing", rbuild_bin.display());
    }

    let started = Instant::now();
    let load_before = header::load_average();
    let svc = services::Services::start()?;
    let store = work.join("stores");
    tools::remove_tree(&store)?;
    let reference_dir = opts
        .reference
        .clone()
        .unwrap_or_else(|| repo.join("../shared/reference"));
    // The reference BuildKit's daemons run until the report is written.
    let mut buildkitd = None;
    let mut rootless_buildkitd = None;
    let mut peers = Vec::new();
    for p in &opts.peers {
        let peer = match p.as_str() {
            reference::BUILDKIT => {
                eprintln!("==> starting the reference BuildKit");
                let made = reference::buildkit(
                    &reference_dir,
                    &work.join(reference::BUILDKIT),
                    &svc.registry_addr(),
                )
                .map(|(builder, daemon)| {
                    buildkitd = Some(daemon);
                    builder
                });
                reference::or_skipped(p, made)
            }
            reference::BUILDKIT_ROOTLESS => {
                eprintln!("==> starting the reference BuildKit rootless");
                let made = services::rootless_user(services::ROOTLESS_USER)
                    .context("setting up the user of rootless BuildKit")
                    .and_then(|user| {
                        reference::buildkit_rootless(
                            &reference_dir,
                            &work.join(reference::BUILDKIT_ROOTLESS),
                            &svc.registry_addr(),
                            &user,
                        )
                    })
                    .map(|(builder, daemon)| {
                        rootless_buildkitd = Some(daemon);
                        builder
                    });
                reference::or_skipped(p, made)
            }
            reference::KANIKO => {
                eprintln!("==> loading the reference Kaniko's executor image");
                let made =
                    reference::kaniko(&reference_dir, &svc.docker_host(), &work.join("kaniko-out"));
                reference::or_skipped(p, made)
            }
            tools::RESTRICTED => {
                eprintln!("==> building the restricted pod's builder images");
                let made = tools::restricted(&rbuild_bin, &svc.docker_host(), &work);
                reference::or_skipped(p, made)
            }
            "docker-buildkit" => {
                Builder::docker_buildkit(PathBuf::from(tools::DEBIAN_DOCKER), svc.docker_host())
            }
            "buildah-rootless" => {
                let user = services::rootless_user(services::ROOTLESS_USER).context(
                    "setting up the user of rootless Buildah (leave it out with --peers \
                     docker-buildkit,buildah)",
                )?;
                Builder::buildah_rootless(&store.join("buildah-rootless"), user)
            }
            _ => Builder::buildah(&store.join("buildah")),
        };
        peer.prepare_store()?;
        peers.push(peer);
    }
    let bench = Bench {
        opts: &opts,
        logs: logs.clone(),
        services: &svc,
        rbuild: Builder::rbuild(rbuild_bin.clone(), store.join("rbuild")),
        rbuild_bin,
        layer_bench_bin,
        peers,
        scale: if opts.quick {
            workloads::Scale::quick()
        } else {
            workloads::Scale::full()
        },
        work: work.clone(),
    };
    let result = sections::run_all(&bench);
    let versions = header::versions(&bench);
    let elapsed = started.elapsed();
    // Leave no overlay mounts of Buildah's behind; the services stop when dropped.
    let _ = tools::remove_tree(&store);
    drop(buildkitd);
    drop(rootless_buildkitd);
    drop(svc);
    let sections = result?;
    let load = format!(
        "{load_before} at the start, {} at the end",
        header::load_average()
    );
    let text = header::render(&sections, &versions, &opts, elapsed.as_secs(), &load);
    let out = repo.join(&opts.out);
    let old = fs::read_to_string(&out).unwrap_or_default();
    let text = match report::kept_part(&old) {
        Some(kept) => format!("{text}{kept}"),
        None => format!("{text}{}\n", report::KEEP_MARKER),
    };
    fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("{text}");
    eprintln!(
        "==> wrote {} (logs in {})",
        opts.out.display(),
        logs.display()
    );
    Ok(())
}

fn repo_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf())
}

/// Untimed, after the harness removed large trees: writes back the freed inodes and waits
/// out the minute in which ext4 without a journal (this machine's root file system) will
/// not reuse them. Until then every file created in their block group skips each of them
/// one by one (`recently_deleted` in the kernel's inode allocator: 80% of the time of a
/// create loop, measured with `perf`), so 10,000 files made right after 10,000 were removed
/// took 3.3–4.5x as long. Other file systems lose a minute of the bench, nothing else; a
/// `--quick` smoke run (small trees, numbers not kept) does not wait.
pub fn settle_freed_inodes(b: &Bench) -> Result<()> {
    let status = std::process::Command::new("sync").status()?;
    anyhow::ensure!(
        status.success(),
        "sync after removing trees failed: {status}"
    );
    if !b.opts.quick {
        std::thread::sleep(std::time::Duration::from_secs(61));
    }
    Ok(())
}

/// `dir` made empty.
pub fn fresh_dir(dir: &Path) -> Result<PathBuf> {
    tools::remove_tree(dir)?;
    fs::create_dir_all(dir)?;
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Result<Option<Options>> {
        parse_options(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn a_second_bench_on_the_same_directory_is_refused_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("bench");
        let first = lock_work_dir(&work).unwrap();
        let err = lock_work_dir(&work).unwrap_err().to_string();
        assert!(err.contains("another `cargo xtask bench`"), "{err}");
        assert!(
            lock_work_dir(&dir.path().join("other")).is_ok(),
            "another directory"
        );
        drop(first);
        assert!(lock_work_dir(&work).is_ok(), "free once the first ends");
    }

    #[test]
    fn options_parse_and_reject_unknown_flags_and_workloads() {
        let o = opts(&["--quick", "tiny"]).unwrap().unwrap();
        assert!(o.quick);
        assert_eq!(o.only, vec!["tiny".to_string()]);
        assert_eq!(o.runs, 1);
        assert!(o.selected("tiny") && !o.selected("push"));
        assert!(opts(&["--bogus"]).is_err());
        assert!(opts(&["no-such-workload"]).is_err());
        assert!(opts(&["--runs", "0"]).is_err());
        let o = opts(&["--peers", "buildah", "--runs", "5"])
            .unwrap()
            .unwrap();
        assert_eq!(o.peers, vec!["buildah".to_string()]);
        assert_eq!((o.runs, o.heavy_runs), (5, 5));
        assert!(opts(&["--peers", "kaniko-v1"]).is_err());
        let o = opts(&["--peers", "rbuild-restricted", "apt"])
            .unwrap()
            .unwrap();
        assert_eq!(o.peers, vec!["rbuild-restricted".to_string()]);
        let o = opts(&[]).unwrap().unwrap();
        assert_eq!(
            o.peers,
            [
                "docker-buildkit",
                "buildah",
                "buildah-rootless",
                "buildkit-v032",
                "buildkit-v032-rootless",
                "kaniko"
            ]
        );
        assert_eq!(o.reference, None);
        let o = opts(&["--peers", "buildkit-v032,kaniko", "--reference", "/r"])
            .unwrap()
            .unwrap();
        assert_eq!(o.peers, ["buildkit-v032", "kaniko"]);
        assert_eq!(o.reference, Some(PathBuf::from("/r")));
        assert!(opts(&["--reference"]).is_err());
        assert!(opts(&["--help"]).unwrap().is_none());
        let o = opts(&["--peers", "buildah-rootless"]).unwrap().unwrap();
        assert_eq!(o.peers, ["buildah-rootless"]);
    }

    #[test]
    fn quick_leaves_out_the_slow_workloads_unless_named() {
        let o = opts(&["--quick"]).unwrap().unwrap();
        assert!(!o.selected("apt") && o.selected("tiny"));
        let o = opts(&["--quick", "apt"]).unwrap().unwrap();
        assert!(o.selected("apt"));
        let o = opts(&[]).unwrap().unwrap();
        assert!(o.selected("apt"));
        for slow in ["pip", "npm"] {
            assert!(
                !opts(&["--quick"]).unwrap().unwrap().selected(slow),
                "{slow}"
            );
            let o = opts(&["--quick", slow]).unwrap().unwrap();
            assert!(o.selected(slow) && !o.selected("apt"), "{slow}");
            assert!(opts(&[]).unwrap().unwrap().selected(slow), "{slow}");
        }
    }
}
