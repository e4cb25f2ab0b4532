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

use super::tools::RunAs;
use super::workloads::Base;

/// The programs the benchmark runs, and the Debian package of each.
const PACKAGES: &[(&str, &str)] = &[
    ("/usr/bin/docker-registry", "docker-registry"),
    ("/usr/sbin/dockerd", "docker.io"),
    ("/usr/bin/docker", "docker.io"),
    ("/usr/bin/buildah", "buildah"),
    // Rootless Buildah maps its user's subordinate ids with these.
    ("/usr/bin/newuidmap", "uidmap"),
    ("/usr/bin/newgidmap", "uidmap"),
    // Rootless BuildKit runs under it.
    ("/usr/bin/rootlesskit", "rootlesskit"),
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

/// The root file system `base` is made from (under the bench's work directory), as
/// [`Services::base`] leaves it: what the limit column copies.
pub fn base_rootfs(base: Base, work: &Path) -> std::path::PathBuf {
    work.join("bases").join(base_name(base))
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
        let rootfs = base_rootfs(base, work);
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

/// The unprivileged user rootless Buildah runs as.
pub const ROOTLESS_USER: &str = "rbuild-bench";

/// Where the subordinate id ranges handed out here start at the least (useradd's own
/// default), and how many ids each gets (a whole 16-bit range, as useradd gives).
const SUB_ID_MIN: u64 = 100_000;
const SUB_ID_COUNT: u64 = 65_536;

/// The user rootless Buildah runs as, made ready: created if missing (with a home), given
/// a subordinate uid and gid range if it has none, and its `XDG_RUNTIME_DIR`
/// (`/run/user/UID`, mode 0700, its own) made.
pub fn rootless_user(name: &str) -> Result<RunAs> {
    if passwd_entry(name)?.is_none() {
        eprintln!("==> creating the user {name} (a rootless builder runs as it)");
        run_ok(
            Command::new("useradd")
                .args(["--create-home", "--shell", "/usr/sbin/nologin"])
                .arg(name),
        )?;
    }
    let (uid, gid, home) =
        passwd_entry(name)?.with_context(|| format!("the user {name} is missing after useradd"))?;
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    let subgid = std::fs::read_to_string("/etc/subgid").unwrap_or_default();
    let has_uids = has_sub_ids(&subuid, name, uid);
    let has_gids = has_sub_ids(&subgid, name, uid);
    if !has_uids || !has_gids {
        let start = free_sub_ids(&[&subuid, &subgid]);
        let range = format!("{start}-{}", start + SUB_ID_COUNT - 1);
        eprintln!("==> giving {name} the subordinate ids {range}");
        let mut c = Command::new("usermod");
        if !has_uids {
            c.args(["--add-subuids", &range]);
        }
        if !has_gids {
            c.args(["--add-subgids", &range]);
        }
        run_ok(c.arg(name))?;
    }
    let runtime_dir = Path::new("/run/user").join(uid.to_string());
    std::fs::create_dir_all(&runtime_dir)
        .with_context(|| format!("creating {}", runtime_dir.display()))?;
    std::os::unix::fs::chown(&runtime_dir, Some(uid), Some(gid))?;
    std::fs::set_permissions(&runtime_dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(RunAs {
        name: name.to_string(),
        uid,
        gid,
        home: home.into(),
        runtime_dir,
    })
}

/// uid, gid and home of `name` from the user database, or None if there is no such user.
fn passwd_entry(name: &str) -> Result<Option<(u32, u32, String)>> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .output()
        .context("running getent")?;
    if !out.status.success() {
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let f: Vec<&str> = line.split(':').collect();
    anyhow::ensure!(f.len() >= 6, "unexpected passwd entry {line:?}");
    let id = |s: &str| {
        s.parse::<u32>()
            .with_context(|| format!("bad id in passwd entry {line:?}"))
    };
    Ok(Some((id(f[2])?, id(f[3])?, f[5].to_string())))
}

/// Whether an /etc/subuid or /etc/subgid text gives the user (by name or uid) a range.
fn has_sub_ids(text: &str, name: &str, uid: u32) -> bool {
    let uid = uid.to_string();
    text.lines().any(|l| {
        let f: Vec<&str> = l.trim().split(':').collect();
        f.len() == 3 && (f[0] == name || f[0] == uid) && f[2].parse::<u64>().is_ok_and(|n| n > 0)
    })
}

/// The start of a range of [`SUB_ID_COUNT`] ids above every range of the given
/// /etc/subuid and /etc/subgid texts (and at least [`SUB_ID_MIN`]).
fn free_sub_ids(texts: &[&str]) -> u64 {
    texts
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(':').collect();
            let start = f.get(1)?.parse::<u64>().ok()?;
            let count = f.get(2)?.parse::<u64>().ok()?;
            Some(start + count)
        })
        .fold(SUB_ID_MIN, u64::max)
}

fn run_ok(c: &mut Command) -> Result<()> {
    let out = c
        .output()
        .with_context(|| format!("running {:?}", c.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            c,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_id_ranges_are_found_by_name_or_uid() {
        let text = "alice:100000:65536\n1005:165536:65536\nempty:231072:0\n";
        assert!(has_sub_ids(text, "alice", 1000));
        assert!(has_sub_ids(text, "bob", 1005));
        assert!(!has_sub_ids(text, "bob", 1006));
        assert!(!has_sub_ids(text, "empty", 1007));
        assert!(!has_sub_ids("", "alice", 1000));
    }

    #[test]
    fn a_new_sub_id_range_starts_above_every_range_of_both_files() {
        assert_eq!(free_sub_ids(&["", ""]), SUB_ID_MIN);
        let uids = "a:100000:65536\nb:400000:65536\n";
        let gids = "a:100000:65536\nc:500000:1000\n# comment\n";
        assert_eq!(free_sub_ids(&[uids, gids]), 501_000);
    }
}
