//! A private `dockerd` for one build (`--engine dind`): its own data root under the storage
//! directory, its own exec root, pid file and socket in a temporary directory, stopped and
//! cleaned up however the build ends.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::host::DaemonAddress;

/// Debian's daemon binary (package `docker.io`).
pub const DOCKERD: &str = "/usr/sbin/dockerd";

/// How a private daemon is started.
#[derive(Debug, Clone)]
pub struct DindOptions {
    /// Holds the daemon's data root (`<storage>/data`); kept between builds as the cache.
    pub storage: PathBuf,
    pub registry_mirrors: Vec<String>,
    pub insecure_registries: Vec<String>,
    pub dockerd: PathBuf,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
}

impl DindOptions {
    pub fn new(storage: PathBuf) -> Self {
        DindOptions {
            storage,
            registry_mirrors: Vec::new(),
            insecure_registries: Vec::new(),
            dockerd: PathBuf::from(DOCKERD),
            start_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(20),
        }
    }
}

/// An exclusive `flock` on the storage directory, held while its daemon runs: two daemons
/// on one data root would corrupt it.
struct StorageLock {
    file: fs::File,
}

impl StorageLock {
    fn acquire(storage: &Path, mut on_wait: impl FnMut(&str)) -> Result<Self> {
        let path = storage.join(".rbuild-dind.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            on_wait(&format!(
                "waiting for another dind build that uses {}",
                storage.display()
            ));
            // SAFETY: as above; this call blocks until the other build releases the lock.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        Ok(StorageLock { file })
    }
}

impl Drop for StorageLock {
    fn drop(&mut self) {
        // SAFETY: unlocking our own descriptor (closing it would release the lock as well).
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// A running private daemon. Dropping it stops the daemon and removes its traces.
pub struct PrivateDaemon {
    child: Option<Child>,
    runtime_dir: Option<tempfile::TempDir>,
    storage: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    stop_timeout: Duration,
    _lock: StorageLock,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Checks that a private daemon can be started here at all: root, and dockerd installed.
pub fn preflight(options: &DindOptions) -> Result<()> {
    if !is_root() {
        bail!(
            "--engine dind starts a private dockerd, which needs root (this process runs \
                 as uid {}); use --engine native (rootless) or --engine dood with an existing \
                 daemon",
            // SAFETY: geteuid has no preconditions.
            unsafe { libc::geteuid() }
        );
    }
    if !options.dockerd.is_file() {
        bail!(
            "--engine dind needs {} (Debian package docker.io), which is not installed",
            options.dockerd.display()
        );
    }
    Ok(())
}

impl PrivateDaemon {
    /// Starts dockerd (without waiting for it: see [`PrivateDaemon::wait_ready`]).
    pub fn spawn(options: &DindOptions, on_wait: impl FnMut(&str)) -> Result<Self> {
        preflight(options)?;
        fs::create_dir_all(&options.storage).with_context(|| {
            format!(
                "cannot create the dind storage directory {}",
                options.storage.display()
            )
        })?;
        let lock = StorageLock::acquire(&options.storage, on_wait)?;
        let runtime_dir = tempfile::Builder::new()
            .prefix("rbuild-dind-")
            .tempdir()
            .context("cannot create a temporary directory for dockerd")?;
        let run = runtime_dir.path();
        let socket = run.join("docker.sock");
        let log = run.join("dockerd.log");
        let log_file =
            fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = Command::new(&options.dockerd);
        cmd.arg("--data-root")
            .arg(options.storage.join("data"))
            .arg("--exec-root")
            .arg(run.join("exec"))
            .arg("--pidfile")
            .arg(run.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            // No docker0 bridge and no iptables rules: they would clash with a host daemon's,
            // and a build daemon needs neither (RUN steps get the host network, see
            // docs/engines.md).
            .arg("--bridge=none")
            .arg("--iptables=false")
            .arg("--ip-masq=false");
        for mirror in &options.registry_mirrors {
            cmd.arg("--registry-mirror").arg(mirror);
        }
        for registry in &options.insecure_registries {
            cmd.arg("--insecure-registry").arg(registry);
        }
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            // Its own process group, so a terminal's Ctrl-C reaches rbuild only and rbuild
            // decides how the daemon stops.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; it makes the kernel send SIGTERM to dockerd if
        // rbuild dies without cleaning up (SIGKILL), so no daemon outlives it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", options.dockerd.display()))?;
        Ok(PrivateDaemon {
            child: Some(child),
            runtime_dir: Some(runtime_dir),
            storage: options.storage.clone(),
            socket,
            log,
            stop_timeout: options.stop_timeout,
            _lock: lock,
        })
    }

    /// The daemon's address.
    pub fn address(&self) -> DaemonAddress {
        DaemonAddress::Unix(self.socket.clone())
    }

    /// The daemon's process ID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines of the daemon's log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let Ok(mut f) = fs::File::open(&self.log) else {
            return String::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
        let mut text = String::new();
        let _ = f.read_to_string(&mut text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until `/_ping` answers on the socket.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "the private dockerd exited during start-up ({status}); its log ends \
                         with:\n{}",
                        self.log_tail(20)
                    );
                }
            }
            if self.socket.exists() {
                if let Ok(docker) = crate::host::connect(&self.address()).await {
                    if docker.ping().await.is_ok() {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the private dockerd did not answer /_ping within {} s; its log ends \
                     with:\n{}",
                    timeout.as_secs(),
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the daemon (SIGTERM, then SIGKILL after the timeout), unmounts whatever it left
    /// mounted under the storage and runtime directories, and removes the runtime directory.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as libc::pid_t;
            // SAFETY: signalling our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + self.stop_timeout;
            let mut exited = false;
            while Instant::now() < deadline {
                if child.try_wait()?.is_some() {
                    exited = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let mut roots = vec![self.storage.clone()];
        if let Some(dir) = &self.runtime_dir {
            roots.push(dir.path().to_path_buf());
        }
        unmount_under(&roots)?;
        if let Some(dir) = self.runtime_dir.take() {
            let path = dir.path().to_path_buf();
            dir.close()
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
        Ok(())
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            eprintln!("warning: cleaning up the private dockerd: {err:#}");
        }
    }
}

/// Mount points under any of `roots`, deepest first, from /proc/self/mountinfo.
pub fn mounts_under(roots: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let info =
        fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    let roots: Vec<PathBuf> = roots
        .iter()
        .map(|r| fs::canonicalize(r).unwrap_or_else(|_| r.clone()))
        .collect();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| roots.iter().any(|r| p.starts_with(r)))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn unmount_under(roots: &[PathBuf]) -> Result<()> {
    for mount in mounts_under(roots)? {
        let c = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes())
            .context("mount point with a NUL byte")?;
        // SAFETY: c is a valid NUL-terminated path; MNT_DETACH also handles busy mounts.
        let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINVAL) {
                return Err(err).with_context(|| format!("cannot unmount {}", mount.display()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }

    #[test]
    fn a_daemon_that_dies_at_start_up_is_reported_with_its_log() {
        assert!(
            is_root(),
            "this test starts a (fake) daemon through the root-only path: run it as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-dockerd");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho \"fake dockerd: cannot start, args $*\" >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut options = DindOptions::new(dir.path().join("storage"));
        options.dockerd = fake;
        let mut daemon = PrivateDaemon::spawn(&options, |_| {}).unwrap();
        let runtime_dir = daemon.runtime_dir.as_ref().unwrap().path().to_path_buf();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt
            .block_on(daemon.wait_ready(Duration::from_secs(10)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("exited during start-up"), "{err}");
        assert!(err.contains("fake dockerd: cannot start"), "{err}");
        assert!(err.contains("--bridge=none"), "{err}");
        daemon.stop().unwrap();
        assert!(
            !runtime_dir.exists(),
            "the runtime directory must be removed"
        );
    }

    #[test]
    fn a_second_lock_on_the_same_storage_waits() {
        let dir = tempfile::tempdir().unwrap();
        let first = StorageLock::acquire(dir.path(), |_| {}).unwrap();
        let path = dir.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let mut waited = false;
            let _second = StorageLock::acquire(&path, |_| waited = true).unwrap();
            tx.send(waited).unwrap();
        });
        // The second acquirer must still be blocked while the first lock is held.
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        drop(first);
        assert!(rx.recv_timeout(Duration::from_secs(5)).unwrap());
        handle.join().unwrap();
    }
}
