//! The benchmark's build contexts, each generated on the fly, so the numbers depend on
//! nothing outside this repository and the machine's own package mirrors.

use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};

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
}

/// The machine's CA bundle (with update-ca-certificates' additions, e.g. a proxy's CA),
/// given as the secret `ca` to the package managers that speak HTTPS: through a variable of
/// their RUN step only, so it is in no layer and no config.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The apps of the real-world fidelity cases (testdata/fidelity/debian_apps), built here too.
const PYTHON_APP: &[(&str, &str)] = &[
    (
        "app.py",
        include_str!("../../../testdata/fidelity/debian_apps/python/app.py"),
    ),
    (
        "requirements.txt",
        include_str!("../../../testdata/fidelity/debian_apps/python/requirements.txt"),
    ),
];
const NODE_APP: &[(&str, &str)] = &[
    (
        "index.js",
        include_str!("../../../testdata/fidelity/debian_apps/node/index.js"),
    ),
    (
        "package.json",
        include_str!("../../../testdata/fidelity/debian_apps/node/package.json"),
    ),
    (
        "package-lock.json",
        include_str!("../../../testdata/fidelity/debian_apps/node/package-lock.json"),
    ),
];

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
}

impl Scale {
    pub fn full() -> Scale {
        Scale {
            large_diff_files: 10_000,
            push_layer_bytes: 250_000_000,
            layer_tree_bytes: 1_000_000_000,
            overhead_steps: 20,
        }
    }

    pub fn quick() -> Scale {
        Scale {
            large_diff_files: 1_000,
            push_layer_bytes: 25_000_000,
            layer_tree_bytes: 100_000_000,
            overhead_steps: 5,
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
                &format!("FROM {from}\nCOPY hello.txt /hello.txt\nRUN echo built > /built.txt\n"),
            )
        }),
    }
}

/// One RUN writing `files` files of 30 KB of random data (which does not compress) in
/// directories of 100, then a COPY of one small source file (the one a rebuild changes).
pub fn large_diff(files: usize) -> Context {
    let dirs = files.div_ceil(100);
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
        make: Box::new(move |dir, from| {
            write(dir, "app.txt", "app 0\n")?;
            write(
                dir,
                "Dockerfile",
                &format!(
                    "FROM {from}\nRUN for i in $(seq 1 {dirs}); do mkdir -p /data/d$i; \
                     for j in $(seq 1 100); do head -c 30000 /dev/urandom > /data/d$i/f$j; \
                     done; done\nCOPY app.txt /app.txt\n"
                ),
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
    Context {
        name: "multi-stage",
        what: "two independent builder stages (2,000 files each) and a final stage".into(),
        base: Base::Busybox,
        cacheable_steps: 4,
        changed_file: None,
        secrets: &[],
        make: Box::new(|dir, from| {
            write(
                dir,
                "Dockerfile",
                &format!(
                    "FROM {from} AS one\nRUN for i in $(seq 1 2000); do echo $i > /tmp/one-$i; \
                     done && tar -cf /one.tar /tmp\n\
                     FROM {from} AS two\nRUN for i in $(seq 1 2000); do echo $i > /tmp/two-$i; \
                     done && tar -cf /two.tar /tmp\n\
                     FROM {from}\nCOPY --from=one /one.tar /\nCOPY --from=two /two.tar /\n"
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
        make: Box::new(move |dir, from| {
            let mut dockerfile = format!("FROM {from}\nENV BENCH=1\n");
            for _ in 0..run_steps {
                dockerfile.push_str("RUN true\n");
            }
            write(dir, "Dockerfile", &dockerfile)
        }),
    }
}

/// The script of the snapshot workload: `files` files of 25 KB of random data in
/// directories of 100 under `root` (250 MB for 10,000 files).
pub fn snapshot_script(root: &str, files: usize) -> String {
    let dirs = files.div_ceil(100);
    format!(
        "for i in $(seq 1 {dirs}); do mkdir -p {root}/data/d$i; for j in $(seq 1 100); do \
         head -c 25000 /dev/urandom > {root}/data/d$i/f$j; done; done"
    )
}

/// A step writing `files` files of 25 KB on top of Debian: what a snapshot has to find and
/// turn into a layer.
pub fn snapshot(files: usize) -> Context {
    Context {
        name: "snapshot",
        what: format!(
            "Debian + one RUN writing {files} files, {} MB",
            files * 25_000 / 1_000_000
        ),
        base: Base::Debian,
        cacheable_steps: 1,
        changed_file: None,
        secrets: &[],
        make: Box::new(move |dir, from| {
            write(
                dir,
                "Dockerfile",
                &format!("FROM {from}\nRUN {}\n", snapshot_script("", files)),
            )
        }),
    }
}

pub fn apt() -> Context {
    Context {
        name: "apt",
        what: "apt-get install curl into Debian (network: the apt mirror)".into(),
        base: Base::Debian,
        cacheable_steps: 1,
        changed_file: None,
        secrets: &[],
        make: Box::new(|dir, from| {
            write(
                dir,
                "Dockerfile",
                &format!(
                    "FROM {from}\nRUN apt-get update -qq && \
                     apt-get install -y -qq --no-install-recommends curl ca-certificates && \
                     rm -rf /var/lib/apt/lists/*\n"
                ),
            )
        }),
    }
}

/// A Python app on Debian: pip from apt, then `pip install -r requirements.txt` from the
/// package index (over HTTPS, hence the CA secret), checked by running the app in the same
/// step.
pub fn pip() -> Context {
    debian_app(
        "pip",
        "apt-get install python3-pip, then pip install of a small app's requirements \
         (network: the apt mirror and the package index)",
        "python3-pip",
        PYTHON_APP,
        "PIP_CERT=/run/secrets/ca \
         pip install --no-cache-dir --break-system-packages -r requirements.txt \
         && python3 app.py",
    )
}

/// A Node app on Debian: nodejs and npm from apt, then `npm ci` from package-lock.json
/// (over HTTPS, hence the CA secret), checked by running the app in the same step.
pub fn npm() -> Context {
    debian_app(
        "npm",
        "apt-get install nodejs npm, then npm ci of a small app \
         (network: the apt mirror and the package registry)",
        "nodejs npm",
        NODE_APP,
        "npm_config_cafile=/run/secrets/ca \
         npm ci --no-audit --no-fund --no-update-notifier \
         && rm -rf /root/.npm && node index.js",
    )
}

/// An app on Debian: `packages` from apt, the app's `files` copied to /app, then `install`
/// (its package manager, with the CA bundle as the build secret `ca`) in one step.
fn debian_app(
    name: &'static str,
    what: &str,
    packages: &'static str,
    files: &'static [(&'static str, &'static str)],
    install: &'static str,
) -> Context {
    Context {
        name,
        what: what.into(),
        base: Base::Debian,
        cacheable_steps: 3,
        changed_file: None,
        secrets: &[("ca", CA_BUNDLE)],
        make: Box::new(move |dir, from| {
            for (name, text) in files {
                write(dir, &format!("app/{name}"), text)?;
            }
            write(
                dir,
                "Dockerfile",
                &format!(
                    "FROM {from}\nRUN apt-get update -qq && \
                     apt-get install -y -qq --no-install-recommends {packages} && \
                     rm -rf /var/lib/apt/lists/*\nWORKDIR /app\nCOPY app/ ./\n\
                     RUN --mount=type=secret,id=ca {install}\n"
                ),
            )
        }),
    }
}

/// Makes the tree of the layer-write comparison: the regular files of `source` (this
/// machine's /usr/lib: binaries, libraries, scripts, data, as in a real image) in path
/// order, until `bytes` bytes are reached, hard-linked (copied across file systems) with
/// their relative paths. Returns the tree's file count and size.
pub fn layer_tree(dir: &Path, source: &Path, bytes: u64) -> Result<(u64, u64)> {
    let marker = dir.with_extension("complete");
    if let Ok(text) = fs::read_to_string(&marker) {
        if let Some((n, size)) = text.trim().split_once(' ') {
            return Ok((n.parse()?, size.parse()?));
        }
    }
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    let (mut files, mut total) = (0u64, 0u64);
    link_in_path_order(source, source, dir, bytes, &mut files, &mut total)?;
    anyhow::ensure!(
        total >= bytes,
        "{} has only {total} bytes of regular files, less than {bytes}",
        source.display()
    );
    fs::write(&marker, format!("{files} {total}\n"))?;
    Ok((files, total))
}

fn link_in_path_order(
    source: &Path,
    dir: &Path,
    dest_root: &Path,
    bytes: u64,
    files: &mut u64,
    total: &mut u64,
) -> Result<()> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(());
    };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if *total >= bytes {
            break;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            link_in_path_order(source, &path, dest_root, bytes, files, total)?;
        } else if meta.is_file() {
            let dest = dest_root.join(path.strip_prefix(source)?);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)?;
            }
            if fs::hard_link(&path, &dest).is_err() {
                fs::copy(&path, &dest).with_context(|| format!("copying {}", path.display()))?;
            }
            *files += 1;
            *total += meta.len();
        }
    }
    Ok(())
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
        ]
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

    #[test]
    fn real_world_apps_are_the_fidelity_apps_and_get_the_ca_only_as_a_secret() {
        let apps = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/fidelity/debian_apps");
        for (c, app, files, installer) in [
            (
                pip(),
                "python",
                &["app.py", "requirements.txt"][..],
                "pip install",
            ),
            (
                npm(),
                "node",
                &["index.js", "package.json", "package-lock.json"][..],
                "npm ci",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            (c.make)(dir.path(), "b").unwrap();
            for f in files {
                assert_eq!(
                    fs::read(dir.path().join("app").join(f)).unwrap(),
                    fs::read(apps.join(app).join(f)).unwrap(),
                    "{}: {f}",
                    c.name
                );
            }
            assert_eq!(c.secrets, &[("ca", CA_BUNDLE)], "{}", c.name);
            let text = fs::read_to_string(dir.path().join("Dockerfile")).unwrap();
            let run = text
                .lines()
                .find(|l| l.contains(installer))
                .unwrap_or_else(|| panic!("{}: no {installer} in\n{text}", c.name));
            // The bundle is mounted for this step only and never copied into the image.
            assert!(
                run.starts_with("RUN --mount=type=secret,id=ca "),
                "{}: {run}",
                c.name
            );
            assert!(run.contains("=/run/secrets/ca "), "{}: {run}", c.name);
            assert!(!text.contains("ca-certificates.crt"), "{}", c.name);
            assert_eq!(c.base, Base::Debian, "{}", c.name);
        }
    }

    #[test]
    fn layer_tree_takes_files_in_path_order_up_to_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for (name, len) in [("a/1", 400), ("a/2", 400), ("b/1", 400), ("c", 400)] {
            let p = src.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, vec![b'x'; len]).unwrap();
        }
        std::os::unix::fs::symlink("c", src.join("d")).unwrap();
        let tree = dir.path().join("t");
        let (files, total) = layer_tree(&tree, &src, 1000).unwrap();
        assert_eq!((files, total), (3, 1200));
        assert_eq!(walk_sizes(&tree), 1200);
        assert!(tree.join("b/1").exists() && !tree.join("c").exists());
        // The second call finds the tree made.
        assert_eq!(layer_tree(&tree, &src, 1000).unwrap(), (3, 1200));
        assert!(layer_tree(&dir.path().join("u"), &src, 10_000).is_err());
    }

    fn walk_sizes(dir: &Path) -> u64 {
        let mut total = 0;
        for e in fs::read_dir(dir).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                total += walk_sizes(&e.path());
            } else {
                total += m.len();
            }
        }
        total
    }
}
