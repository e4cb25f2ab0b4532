//! A real `dockerd` on a private socket and data root, for one test.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Debian's daemon (package `docker.io`).
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's client from the same package (not a newer client elsewhere on PATH, whose API
/// version the 20.10 daemon may refuse).
pub const DOCKER_CLI: &str = "/usr/bin/docker";

/// Extra settings for [`Dockerd::start_with`].
#[derive(Debug, Clone, Default)]
pub struct DockerdOptions {
    /// Added to the command line, e.g. `-H tcp://127.0.0.1:PORT --tlsverify ...`.
    pub extra_args: Vec<String>,
}

/// A running private daemon; stopped (SIGTERM, then SIGKILL) and removed on drop.
pub struct Dockerd {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    socket: PathBuf,
}

fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
}

impl Dockerd {
    /// Starts a daemon with default settings.
    pub fn start() -> Dockerd {
        Self::start_with(DockerdOptions::default())
    }

    /// Starts a daemon and waits until `/_ping` answers on its unix socket.
    pub fn start_with(options: DockerdOptions) -> Dockerd {
        crate::require_binary(DOCKERD, "docker.io");
        crate::require_binary(DOCKER_CLI, "docker.io");
        crate::require_root("starting dockerd");
        let dir = tempfile::Builder::new()
            .prefix("rbuild-test-dockerd-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let socket = dir.path().join("docker.sock");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let child = Command::new(DOCKERD)
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            // No docker0 and no iptables: several test daemons (and a host daemon) coexist.
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
            .args(&options.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {DOCKERD}: {e}"));
        let mut daemon = Dockerd {
            child: Some(child),
            dir: Some(dir),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ping(&daemon.socket) {
                return daemon;
            }
            let exited = daemon.child.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                let log = daemon.log();
                panic!("the test dockerd did not come up ({exited:?}); its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `unix:///.../docker.sock`, for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        let dir = self.dir.as_ref().expect("daemon directory");
        std::fs::read_to_string(dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Runs Debian's docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER_CLI)
            .arg("-H")
            .arg(self.host())
            .args(args)
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {DOCKER_CLI}: {e}"))
    }

    /// Like [`Dockerd::docker`], panicking with stderr when the command fails; returns stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Makes image `name` from a root filesystem directory (no registry needed):
    /// `tar -C dir -c . | docker import - name`.
    pub fn import_rootfs(&self, dir: &Path, name: &str) {
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(dir)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot run tar");
        let out = Command::new(DOCKER_CLI)
            .arg("-H")
            .arg(self.host())
            .args(["import", "-", name])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .expect("cannot run docker import");
        assert!(
            tar.wait().unwrap().success(),
            "tar of {} failed",
            dir.display()
        );
        assert!(
            out.status.success(),
            "docker import {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own unreaped child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            detach_mounts_under(dir.path());
            let _ = dir.close();
        }
    }
}

/// Lazily unmounts whatever a killed daemon left mounted under `root`, deepest first, so
/// the directory can be removed.
fn detach_mounts_under(root: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut mounts: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(root))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        if let Ok(c) = std::ffi::CString::new(m) {
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
