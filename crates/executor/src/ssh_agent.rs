//! `--ssh ID=PATH[,PATH…]`: what the paths name, and a private `ssh-agent` for key files.
//!
//! As docker buildx, an ssh id is forwarded from one agent socket or from private key
//! files. For key files a private `ssh-agent -D` is started on a socket in a fresh 0700
//! directory, the keys are loaded into it with `ssh-add -` (the key reaches the agent
//! through a pipe from the file; it is never copied, logged or written anywhere), and the
//! agent is stopped and its directory removed when the [`SshAgent`] is dropped, whether the
//! build succeeded or not.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{BuildError, Result};
use crate::scratch::{DirKind, OwnedDir};

/// What the paths of one `--ssh ID=…` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshSource {
    /// An ssh-agent's socket, forwarded as it is.
    Socket(PathBuf),
    /// Private key files, to be loaded into a private agent.
    Keys(Vec<PathBuf>),
}

/// Tells sockets from key files by `stat` (following symlinks, as BuildKit): one socket,
/// or one or more regular files, never both (BuildKit's rules). A missing path is an error
/// naming it.
pub fn classify_ssh_paths(paths: &[PathBuf]) -> Result<SshSource> {
    let mut socket = None;
    let mut keys = Vec::new();
    for path in paths {
        let md = std::fs::metadata(path).map_err(BuildError::io("", path))?;
        if md.file_type().is_socket() {
            if socket.is_some() {
                return Err(BuildError::other(
                    "only a single ssh-agent socket is allowed per id",
                ));
            }
            socket = Some(path.clone());
        } else if md.is_file() {
            keys.push(path.clone());
        } else {
            return Err(BuildError::other(format!(
                "{} is neither an ssh-agent socket nor a private key file",
                path.display()
            )));
        }
    }
    match (socket, keys.is_empty()) {
        (Some(s), true) => Ok(SshSource::Socket(s)),
        (None, false) => Ok(SshSource::Keys(keys)),
        (Some(_), false) => Err(BuildError::other(
            "mixing ssh-agent sockets and key files is not allowed",
        )),
        (None, true) => Err(BuildError::other("no ssh-agent socket or key file given")),
    }
}

/// A private `ssh-agent` holding some keys; stopped (and its socket removed) on drop.
#[derive(Debug)]
pub struct SshAgent {
    /// The shell that keeps the agent (see `start`).
    child: Child,
    /// The agent itself, the shell's child.
    agent_pid: i32,
    /// Locked while the agent runs, so that the next rbuild command removes it should this
    /// process be killed (see `crate::scratch`).
    dir: OwnedDir,
    socket: PathBuf,
}

/// Longest socket path we create: `sun_path` holds 108 bytes with the terminating NUL on
/// Linux, less on other systems.
const MAX_SOCKET_PATH: usize = 100;

impl SshAgent {
    /// Starts `ssh-agent` on a socket in a new private directory below `parent` (below the
    /// system's temporary directory when that path would be too long for a socket) and
    /// loads `keys` into it. A key protected by a passphrase is an error naming the file;
    /// nothing ever prompts.
    pub fn start(parent: &Path, keys: &[PathBuf]) -> Result<SshAgent> {
        let dir = private_dir(parent)
            .or_else(|_| private_dir(&std::env::temp_dir()))
            .map_err(BuildError::system("creating a directory for the ssh-agent"))?;
        let socket = dir.path().join("agent.sock");
        // Its messages go to a file, not a pipe nobody reads once it runs.
        let log = dir.path().join("agent.log");
        let stderr = match std::fs::File::create(&log) {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_dir_all(dir.path());
                return Err(BuildError::io("creating", &log)(e));
            }
        };
        // ssh-agent is set-group-id on Debian, and executing such a program clears
        // PR_SET_PDEATHSIG: a build killed with SIGKILL would leave the agent running with
        // the keys loaded. So a shell keeps it: it starts the agent, says its pid, and kills
        // it as soon as its stdin — a pipe only this process writes to — reaches its end,
        // which happens when this process drops the agent or dies in any way.
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("rbuild-ssh-agent")
            .arg(&socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .env_remove("SSH_AUTH_SOCK");
        let spawned = command.spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(dir.path());
                return Err(BuildError::system("starting sh for ssh-agent")(e));
            }
        };
        let agent_pid = read_pid(&mut child);
        let Some(agent_pid) = agent_pid else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_dir_all(dir.path());
            return Err(BuildError::other(format!(
                "starting ssh-agent (is openssh-client installed?): {}",
                log.trim()
            )));
        };
        // Stopped by the signal handler too, should the build be cancelled.
        crate::scratch::register_process(agent_pid);
        // From here on, Drop stops the agent and removes the directory on every error.
        let mut agent = SshAgent {
            child,
            agent_pid,
            dir,
            socket,
        };
        agent.wait_for_socket()?;
        for key in keys {
            agent.add(key)?;
        }
        Ok(agent)
    }

    /// The agent's socket, to bind into RUN steps.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.agent_pid.unsigned_abs()
    }

    fn wait_for_socket(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let is_socket =
                std::fs::symlink_metadata(&self.socket).is_ok_and(|md| md.file_type().is_socket());
            if is_socket {
                return Ok(());
            }
            if !crate::scratch::process_alive(self.agent_pid) {
                let log =
                    std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default();
                return Err(BuildError::other(format!(
                    "ssh-agent exited: {}",
                    log.trim()
                )));
            }
            if Instant::now() > deadline {
                return Err(BuildError::other(
                    "ssh-agent did not create its socket within 10s",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ssh-add - < key`: the key goes from the file to ssh-add's stdin (so its mode does
    /// not matter, as with buildx, and no copy is made). ssh-add runs in its own session
    /// without a terminal, askpass or stdin left to read from, so a passphrase cannot be
    /// asked for: it fails instead.
    fn add(&mut self, key: &Path) -> Result<()> {
        let file = std::fs::File::open(key).map_err(BuildError::io("", key))?;
        let mut command = Command::new("ssh-add");
        command
            .arg("-q")
            .arg("-")
            .env("SSH_AUTH_SOCK", &self.socket)
            .env("SSH_ASKPASS_REQUIRE", "never")
            .env_remove("SSH_ASKPASS")
            .env_remove("DISPLAY")
            .stdin(Stdio::from(file))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: setsid is async-signal-safe and touches no memory of this process.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let out = command.output().map_err(BuildError::system(
            "running ssh-add (is openssh-client installed?)",
        ))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("passphrase") {
            return Err(BuildError::other(format!(
                "the ssh key {} is protected by a passphrase, which a build cannot ask for: \
                 load it into an ssh-agent and pass the agent's socket (--ssh ID=SOCKET) instead",
                key.display()
            )));
        }
        // ssh-add names the key "(stdin)"; its messages never contain key material.
        let reason = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("Enter passphrase"))
            .collect::<Vec<_>>()
            .join("; ");
        Err(BuildError::other(format!(
            "loading the ssh key {} into the build's ssh-agent failed (is it a private key \
             file?): {}",
            key.display(),
            reason.replace(" \"(stdin)\"", "").replace("(stdin)", "key")
        )))
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        crate::scratch::unregister_process(self.agent_pid);
        // SIGTERM lets the agent remove its socket; the shell, its stdin closed, makes sure
        // the agent is gone, reaps it and exits.
        // SAFETY: kill has no memory-safety preconditions; the pid is the shell's child,
        // which cannot be reused before the shell (still running) reaps it.
        unsafe { libc::kill(self.agent_pid, libc::SIGTERM) };
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Unless the signal handler took it (and removes it).
        if self.dir.unregister() {
            let _ = std::fs::remove_dir_all(self.dir.path());
        }
    }
}

/// The shell that keeps the agent: `$1` is the socket. Its stdin is a pipe from rbuild; the
/// agent's is /dev/null (an asynchronous command's, without job control), its stdout too
/// (it prints shell commands there, and the pipe the shell says the pid through is closed
/// once read).
const SUPERVISOR: &str = r#"ssh-agent -D -a "$1" >/dev/null &
echo "$!"
exec >/dev/null
read line
kill "$!" 2>/dev/null
wait"#;

/// The agent's pid, the first line the shell writes.
fn read_pid(child: &mut Child) -> Option<i32> {
    use std::io::BufRead;
    let stdout = child.stdout.take()?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).ok()?;
    line.trim().parse().ok().filter(|pid| *pid > 0)
}

/// The prefix of an ssh-agent's directory (not `ssh-`, which OpenSSH's own agents use in
/// the system's temporary directory: the sweep must never take theirs).
pub(crate) const DIR_PREFIX: &str = "rbuild-ssh-";

/// A new directory only we can enter (locked while we live), named so that a socket in it
/// fits in `sun_path`.
fn private_dir(parent: &Path) -> std::io::Result<OwnedDir> {
    std::fs::create_dir_all(parent)?;
    let dir = OwnedDir::create(parent, DIR_PREFIX, 0o700, DirKind::Secrets, None, None)?;
    if dir.path().join("agent.sock").as_os_str().len() > MAX_SOCKET_PATH {
        let _ = std::fs::remove_dir(dir.path());
        return Err(std::io::Error::other("path too long for a socket"));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classified_by_stat() {
        let tmp = std::env::temp_dir().join(format!("rbuild-ssh-classify-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let key = tmp.join("key");
        std::fs::write(&key, "not read here").unwrap();
        let sock = tmp.join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(
            classify_ssh_paths(&[key.clone(), key.clone()]).unwrap(),
            SshSource::Keys(vec![key.clone(), key.clone()])
        );
        assert_eq!(
            classify_ssh_paths(std::slice::from_ref(&sock)).unwrap(),
            SshSource::Socket(sock.clone())
        );
        let message = |paths: &[PathBuf]| classify_ssh_paths(paths).unwrap_err().to_string();
        let err = message(&[sock.clone(), key.clone()]);
        assert!(err.contains("mixing"), "{err}");
        let err = message(&[sock.clone(), sock.clone()]);
        assert!(err.contains("single"), "{err}");
        let missing = tmp.join("missing");
        // A missing path is an I/O error on that path, which callers can match.
        match classify_ssh_paths(std::slice::from_ref(&missing)).unwrap_err() {
            BuildError::Io { path, source, .. } => {
                assert_eq!(path, missing);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("not an I/O error: {other:?}"),
        }
        let err = message(std::slice::from_ref(&missing));
        assert!(err.starts_with(&missing.display().to_string()), "{err}");
        let err = message(std::slice::from_ref(&tmp));
        assert!(err.contains("neither"), "{err}");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
