//! The real services a benchmark run needs, started for the run and stopped when it ends
//! (also on failure: they stop when dropped): a registry on 127.0.0.1 (bases come from it,
//! pushes and caches go to it) and a private dockerd for the BuildKit peer. Base images are
//! made locally: no public registry is reachable here. Missing tools are installed with apt.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use rbuild_testutil::{Dockerd, Registry};

use super::workloads::Base;

/// The programs the benchmark runs, and the Debian package of each.
const PACKAGES: &[(&str, &str)] = &[
    ("/usr/bin/docker-registry", "docker-registry"),
    ("/usr/sbin/dockerd", "docker.io"),
    ("/usr/bin/docker", "docker.io"),
    ("/usr/bin/buildah", "buildah"),
    ("/usr/sbin/runc", "runc"),
    ("/usr/bin/skopeo", "skopeo"),
    ("/usr/bin/pigz", "pigz"),
    ("/usr/sbin/debootstrap", "debootstrap"),
    ("/bin/busybox", "busybox-static"),
];

/// Installs (apt-get) the packages of the programs above that are missing.
pub fn ensure_packages() -> Result<()> {
    let mut missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(bin, _)| !Path::new(bin).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("==> installing {}", missing.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    if !install().context("running apt-get")?.success() {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        if !install().context("running apt-get")?.success() {
            bail!(
                "apt-get install {} failed; install them by hand",
                missing.join(" ")
            );
        }
    }
    Ok(())
}

pub struct Services {
    registry: Registry,
    dockerd: Dockerd,
    bases: RefCell<HashMap<&'static str, String>>,
}

pub fn base_name(base: Base) -> &'static str {
    match base {
        Base::Busybox => "busybox",
        Base::Debian => "debian",
    }
}

impl Services {
    pub fn start() -> Result<Services> {
        eprintln!("==> starting a registry and a private dockerd");
        Ok(Services {
            registry: Registry::start(),
            dockerd: Dockerd::start(),
            bases: RefCell::new(HashMap::new()),
        })
    }

    pub fn docker_host(&self) -> String {
        self.dockerd.host()
    }

    pub fn registry_addr(&self) -> String {
        self.registry.host()
    }

    /// The reference of `base` in the local registry, made on first use.
    pub fn base(&self, base: Base, work: &Path) -> Result<String> {
        let name = base_name(base);
        if let Some(r) = self.bases.borrow().get(name) {
            return Ok(r.clone());
        }
        let rootfs = work.join("bases").join(name);
        let complete = work.join("bases").join(format!("{name}.complete"));
        if !complete.exists() {
            let _ = std::fs::remove_dir_all(&rootfs);
            std::fs::create_dir_all(&rootfs)?;
            match base {
                Base::Busybox => busybox_rootfs(&rootfs)?,
                Base::Debian => debootstrap(&rootfs)?,
            }
            std::fs::write(&complete, b"")?;
        }
        let reference = format!("{}/bench/{name}:latest", self.registry.host());
        self.dockerd.import_rootfs(&rootfs, &reference);
        self.dockerd.docker_ok(&["push", &reference]);
        // Builds start from the registry's copy, like everyone else's.
        self.dockerd.docker_ok(&["rmi", &reference]);
        self.bases.borrow_mut().insert(name, reference.clone());
        Ok(reference)
    }
}

/// A busybox root with every applet linked (the workloads use seq, head, tar, ...).
fn busybox_rootfs(dir: &Path) -> Result<()> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    for d in ["etc", "tmp", "root"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::copy("/bin/busybox", bin.join("busybox")).context("copying /bin/busybox")?;
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .context("busybox --list")?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            symlink("busybox", bin.join(applet))?;
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

/// A minimal Debian bookworm from the machine's own apt mirror (a few minutes, once: the
/// result is kept under target/bench/bases).
fn debootstrap(rootfs: &Path) -> Result<()> {
    let mirror = match std::env::var("RBUILD_BENCH_MIRROR") {
        Ok(m) => m,
        Err(_) => rbuild_testutil::apt_mirror().context(
            "no bookworm mirror found in /etc/apt/sources.list*; set RBUILD_BENCH_MIRROR",
        )?,
    };
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(rootfs)
        .arg(&mirror)
        .status()
        .context("running debootstrap (apt-get install debootstrap)")?;
    if !status.success() {
        bail!("debootstrap of bookworm from {mirror} failed");
    }
    Ok(())
}
