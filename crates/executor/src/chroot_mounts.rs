//! `RUN --mount` without mount(2), for chroot isolation (root in a default `docker run`,
//! whose seccomp profile refuses mount(2) without CAP_SYS_ADMIN). Each mount's content is
//! put at its target in the step's root before the step and taken away after it, before
//! the step's changes are read, so none of it reaches the layer:
//!
//! * a cache directory is moved into place (rename) and moved back after the step;
//! * a tmpfs, a bind source (always a copy made for this step in chroot mode), a heredoc
//!   script: moved into place and removed after;
//! * a secret: written as a file with the owner and mode asked (0400 root by default),
//!   removed after;
//! * an ssh agent: a socket at the target whose connections rbuild forwards to the agent.
//!
//! Whatever was at a target is moved aside for the step and put back after it (with its
//! parent's mtime); parents the target lacked are created and removed again like the
//! sandbox's stubs. Every path is resolved inside the root (symlinks never lead out).
//! What cannot be done fails the step naming the mount: a cache on another filesystem
//! than the build's root cannot be moved into it.
//!
//! Differences from real mounts (docs/sandbox.md): a read-only mount is writable (the
//! writes are thrown away, except in a cache), and a step could rename a placed directory
//! (which a mount point forbids): the cache then starts empty.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use rbuild_sandbox::rootpath::{open_in_root, CreateAs};
use rbuild_sandbox::{BindMount, Stub};

/// Why a mount could not be put in place without mount(2), or taken away after its step.
#[derive(Debug, thiserror::Error)]
pub enum MountPlaceError {
    /// Putting the mount `label` (the `--mount=` flag as written) at `target`.
    #[error(
        "{label}: chroot isolation (no mount(2)) could not put it at {target}: {doing}: {source}"
    )]
    Place {
        label: String,
        target: String,
        doing: String,
        #[source]
        source: io::Error,
    },
    /// Taking the mount `label` away from `target` after the step.
    #[error("{label}: taking it away from {target} after the step: {source}")]
    Restore {
        label: String,
        target: String,
        #[source]
        source: io::Error,
    },
    /// Removing the parents created for the targets.
    #[error("removing the mount targets' parents: {0}")]
    Stubs(#[source] io::Error),
}

/// How a mount's content gets to its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MountKind {
    /// A cache directory: moved into place for the step and back after it.
    Cache,
    /// A directory or file made for this step alone (tmpfs, a copy of a bind source, a
    /// heredoc script): moved into place and removed after.
    Scratch,
    /// A secret: a file with this owner and mode holding the source's content.
    Secret { uid: u32, gid: u32, mode: u32 },
    /// An ssh-agent socket with this owner and mode: connections to the target are
    /// forwarded to the source socket.
    SshAgent { uid: u32, gid: u32, mode: u32 },
}

/// A mount of the step and how to realise it without mount(2).
#[derive(Debug, Clone)]
pub(crate) struct MountPlan {
    pub kind: MountKind,
    /// The `--mount=` flag as written, for error messages.
    pub label: String,
}

/// One mount placed in the root.
struct Placed {
    /// The target with symlinks resolved inside the root (container path).
    target: String,
    source: PathBuf,
    kind: MountKind,
    label: String,
    /// Where the target's previous content waits for the step to end.
    stashed: Option<PathBuf>,
    parent_mtime: (i64, i64),
    proxy: Option<AgentProxy>,
}

/// The mounts of one step, placed in its root; [`PlacedMounts::restore`] takes them away.
pub(crate) struct PlacedMounts {
    /// The build records owners instead of chowning (restricted isolation).
    owners_recorded: bool,
    root: PathBuf,
    placed: Vec<Placed>,
    /// Parents created for targets.
    stubs: Vec<Stub>,
}

fn root_fd(root: &Path) -> io::Result<OwnedFd> {
    Ok(std::fs::File::open(root)?.into())
}

/// The path by which the kernel reaches an open directory.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Splits a container path into its parent and last component.
fn split_target(target: &str) -> Option<(String, String)> {
    let (parent, name) = target.rsplit_once('/')?;
    if name.is_empty() || name == "." || name == ".." {
        return None;
    }
    Some((
        if parent.is_empty() { "/" } else { parent }.to_string(),
        name.to_string(),
    ))
}

/// `path` (absolute, container view) with every symlink that exists resolved inside
/// `root`; components from the first missing one on are kept as written (`..` applied).
/// The one in-root resolver's [`rbuild_inroot::resolve_existing`].
fn resolve_in_root(root: &Path, path: &str) -> io::Result<String> {
    let root = rbuild_inroot::open_root(root)?;
    let resolved = rbuild_inroot::resolve_existing(root.as_fd(), Path::new(path))?;
    Ok(format!("/{}", resolved.to_string_lossy()))
}

fn mtime_of(path: &Path) -> io::Result<(i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.mtime(), m.mtime_nsec()))
}

/// Removes whatever is at `path` (a symlink itself, never its target).
fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    }
}

/// Places `binds` (with `plans`, one each) in `root`; the targets' previous content goes
/// to new entries of `stash`. On failure, what was placed is taken away again.
/// `owners_recorded`: the restricted isolation, whose build user cannot chown and records
/// owners instead (`Owners::Recorded`).
pub(crate) fn place(
    root: &Path,
    binds: &[BindMount],
    plans: &[MountPlan],
    stash: &Path,
    owners_recorded: bool,
) -> Result<PlacedMounts, MountPlaceError> {
    let mut placed = PlacedMounts {
        owners_recorded,
        root: root.to_path_buf(),
        placed: Vec::new(),
        stubs: Vec::new(),
    };
    for (index, (bind, plan)) in binds.iter().zip(plans).enumerate() {
        if let Err(e) = placed.place_one(index, bind, plan, stash) {
            let _ = placed.restore();
            return Err(e);
        }
    }
    Ok(placed)
}

impl PlacedMounts {
    fn place_one(
        &mut self,
        index: usize,
        bind: &BindMount,
        plan: &MountPlan,
        stash: &Path,
    ) -> Result<(), MountPlaceError> {
        let fail = |what: &str, e: &io::Error| MountPlaceError::Place {
            label: plan.label.clone(),
            target: bind.target.clone(),
            doing: what.to_string(),
            source: io::Error::new(e.kind(), e.to_string()),
        };
        let target = resolve_in_root(&self.root, &bind.target)
            .map_err(|e| fail("resolving the target", &e))?;
        let (parent, name) = split_target(&target).ok_or_else(|| {
            fail(
                "the target",
                &io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "cannot mount over the root directory",
                ),
            )
        })?;
        let root = root_fd(&self.root).map_err(|e| fail("opening the root", &e))?;
        let parent_fd = open_in_root(root.as_fd(), &parent, CreateAs::Dir, &mut self.stubs)
            .map_err(|e| fail(&format!("creating {parent}"), &e))?;
        let parent_path = fd_path(&parent_fd);
        let at = parent_path.join(&name);
        let parent_mtime = mtime_of(&parent_path).map_err(|e| fail("reading its parent", &e))?;
        let stashed = match std::fs::symlink_metadata(&at) {
            Ok(_) => {
                let aside = stash.join(format!("{index}"));
                std::fs::rename(&at, &aside)
                    .map_err(|e| fail("moving the existing content aside", &e))?;
                Some(aside)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(fail("reading the existing target", &e)),
        };
        // Recorded before placing, so that a failure below still puts the old content back.
        self.placed.push(Placed {
            target: target.clone(),
            source: bind.source.clone(),
            kind: plan.kind.clone(),
            label: plan.label.clone(),
            stashed,
            parent_mtime,
            proxy: None,
        });
        match &plan.kind {
            MountKind::Cache | MountKind::Scratch => {
                std::fs::rename(&bind.source, &at).map_err(|e| {
                    if e.raw_os_error() == Some(libc::EXDEV) {
                        fail(
                            &format!(
                                "{} is on another filesystem than the build's root, so it cannot be moved in",
                                bind.source.display()
                            ),
                            &e,
                        )
                    } else {
                        fail(&format!("moving {} in", bind.source.display()), &e)
                    }
                })?;
            }
            MountKind::Secret { uid, gid, mode } => {
                let content = std::fs::read(&bind.source).map_err(|e| {
                    // The secret's path is the user's; its content never goes in a message.
                    fail("reading the secret", &e)
                })?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o400)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&at)
                    .map_err(|e| fail("creating the secret file", &e))?;
                file.write_all(&content)
                    .map_err(|e| fail("writing the secret file", &e))?;
                // Restricted isolation: the build user cannot chown, and its steps are that
                // user (shown as root), so the file is already the step's.
                if !self.owners_recorded {
                    std::os::unix::fs::fchown(&file, Some(*uid), Some(*gid))
                        .map_err(|e| fail(&format!("giving it to {uid}:{gid}"), &e))?;
                }
                file.set_permissions(std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| fail(&format!("chmod {mode:o}"), &e))?;
            }
            MountKind::SshAgent { uid, gid, mode } => {
                let listener =
                    UnixListener::bind(&at).map_err(|e| fail("creating the agent socket", &e))?;
                // Restricted isolation: as for a secret, the socket is already the step's
                // (the build user, shown as root), and the build user cannot chown.
                if !self.owners_recorded {
                    std::os::unix::fs::lchown(&at, Some(*uid), Some(*gid)).map_err(|e| {
                        fail(&format!("giving the agent socket to {uid}:{gid}"), &e)
                    })?;
                }
                std::fs::set_permissions(&at, std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| fail(&format!("chmod {mode:o} of the agent socket"), &e))?;
                let proxy = AgentProxy::start(listener, bind.source.clone())
                    .map_err(|e| fail("forwarding the agent", &e))?;
                if let Some(last) = self.placed.last_mut() {
                    last.proxy = Some(proxy);
                }
            }
        }
        Ok(())
    }

    /// Takes every mount away (last placed first): a cache goes back where it came from,
    /// the rest is removed, each target gets its previous content and its parent its mtime
    /// back, and created parents go. Carries on after a failure and reports the first.
    pub(crate) fn restore(mut self) -> Result<(), MountPlaceError> {
        let mut first_error: Option<MountPlaceError> = None;
        while let Some(mut placed) = self.placed.pop() {
            if let Some(proxy) = placed.proxy.take() {
                proxy.stop();
            }
            if let Err(source) = self.restore_one(&placed) {
                first_error.get_or_insert(MountPlaceError::Restore {
                    label: placed.label.clone(),
                    target: placed.target.clone(),
                    source,
                });
            }
        }
        // BuildKit leaves the /dev, /proc and /sys mount points it had to create (as the
        // userns path does, see run.rs); the others go.
        self.stubs
            .retain(|s| !matches!(s.path.as_str(), "/dev" | "/proc" | "/sys"));
        if let Err(e) = rbuild_sandbox::remove_stubs(&self.root, &self.stubs) {
            first_error.get_or_insert(MountPlaceError::Stubs(e));
        }
        first_error.map_or(Ok(()), Err)
    }

    fn restore_one(&self, placed: &Placed) -> io::Result<()> {
        let Some((parent, name)) = split_target(&placed.target) else {
            return Ok(());
        };
        let root = root_fd(&self.root)?;
        let mut ignored = Vec::new();
        let parent_fd = match open_in_root(root.as_fd(), &parent, CreateAs::Nothing, &mut ignored) {
            Ok(fd) => Some(fd),
            // The step removed the parent: nothing to take away, nowhere to put back.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
            Err(e) => return Err(e),
        };
        let at = parent_fd.as_ref().map(|fd| fd_path(fd).join(&name));
        let mut result = Ok(());
        match placed.kind {
            MountKind::Cache => {
                let is_dir = at
                    .as_ref()
                    .and_then(|at| std::fs::symlink_metadata(at).ok())
                    .is_some_and(|m| m.is_dir());
                match (&at, is_dir) {
                    (Some(at), true) => result = std::fs::rename(at, &placed.source),
                    _ => {
                        // The step removed or replaced the cache directory (a mount point
                        // would have refused): the cache starts over, empty.
                        if let Some(at) = &at {
                            result = remove_any(at);
                        }
                        let created = std::fs::create_dir(&placed.source);
                        if result.is_ok() {
                            result = created;
                        }
                    }
                }
            }
            MountKind::Scratch | MountKind::Secret { .. } | MountKind::SshAgent { .. } => {
                if let Some(at) = &at {
                    result = remove_any(at);
                }
            }
        }
        if let Some(stashed) = &placed.stashed {
            match &at {
                Some(at) => {
                    remove_any(at)?;
                    std::fs::rename(stashed, at)?;
                }
                None => remove_any(stashed)?,
            }
        }
        if let Some(fd) = &parent_fd {
            let (secs, nanos) = placed.parent_mtime;
            match set_mtime_follow(&fd_path(fd), secs, nanos) {
                // Restricted isolation as OpenShift's random uid: the builder image's own
                // directories (`/tmp`) are group 0's, not this uid's, and only an owner may
                // set times. The directory then counts as changed by the step.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) && self.owners_recorded => {}
                other => other?,
            }
        }
        result
    }
}

/// Sets the mtime of the directory `path` names (a `/proc/self/fd` link, followed).
fn set_mtime_follow(path: &Path, secs: i64, nanos: i64) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: nanos as _,
        },
    ];
    // SAFETY: `c` is a valid NUL-terminated path and `times` two valid timespecs.
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A socket in the step's root whose connections are forwarded to an ssh agent's socket
/// (which is outside the root, and may be on another filesystem, so it cannot be linked).
pub(crate) struct AgentProxy {
    /// Written to stop the accepting thread.
    stop: OwnedFd,
    thread: std::thread::JoinHandle<()>,
}

impl AgentProxy {
    pub(crate) fn start(listener: UnixListener, agent: PathBuf) -> io::Result<AgentProxy> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are open descriptors we now own.
        let (wake, stop) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let thread = std::thread::spawn(move || accept_loop(listener, wake, agent));
        Ok(AgentProxy { stop, thread })
    }

    pub(crate) fn stop(self) {
        // SAFETY: writes one byte from a valid buffer to a pipe we own.
        unsafe { libc::write(self.stop.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        let _ = self.thread.join();
    }
}

fn accept_loop(listener: UnixListener, wake: OwnedFd, agent: PathBuf) {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is an array of two initialised pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        if fds[0].revents == 0 {
            continue;
        }
        let Ok((client, _)) = listener.accept() else {
            continue;
        };
        let Ok(upstream) = UnixStream::connect(&agent) else {
            // The step sees the connection closed, as with an agent that went away.
            continue;
        };
        forward(client, upstream);
    }
}

/// Copies both ways between the step's connection and the agent until either side ends.
fn forward(client: UnixStream, upstream: UnixStream) {
    let (Ok(client2), Ok(upstream2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    std::thread::spawn(move || pump(client, upstream));
    std::thread::spawn(move || pump(upstream2, client2));
}

fn pump(mut from: UnixStream, mut to: UnixStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../real", root.join("up")).unwrap();
        assert_eq!(resolve_in_root(root, "/abs/dir/x").unwrap(), "/real/dir/x");
        assert_eq!(resolve_in_root(root, "/up/dir").unwrap(), "/real/dir");
        assert_eq!(
            resolve_in_root(root, "/missing/../real/./y").unwrap(),
            "/real/y"
        );
        assert_eq!(resolve_in_root(root, "/../../etc").unwrap(), "/etc");
        assert_eq!(split_target("/"), None);
        assert_eq!(
            split_target("/run/secrets/ca"),
            Some(("/run/secrets".into(), "ca".into()))
        );
        assert_eq!(split_target("/x"), Some(("/".into(), "x".into())));
    }

    #[test]
    fn a_placed_cache_goes_back_and_the_target_gets_its_content_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let stash = dir.path().join("stash");
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(root.join("var/cache")).unwrap();
        std::fs::write(root.join("var/cache/original"), "image").unwrap();
        std::fs::create_dir_all(&stash).unwrap();
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join("kept"), "cached").unwrap();
        let before = mtime_of(&root.join("var")).unwrap();
        let binds = [BindMount {
            source: cache.clone(),
            target: "/var/cache".into(),
            readonly: false,
            remove_source: false,
            tmpfs_size: None,
        }];
        let plans = [MountPlan {
            kind: MountKind::Cache,
            label: "--mount=type=cache,target=/var/cache".into(),
        }];
        let placed = place(&root, &binds, &plans, &stash, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("var/cache/kept")).unwrap(),
            "cached"
        );
        assert!(!root.join("var/cache/original").exists());
        std::fs::write(root.join("var/cache/new"), "step").unwrap();
        placed.restore().unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("var/cache/original")).unwrap(),
            "image"
        );
        assert!(!root.join("var/cache/kept").exists());
        assert_eq!(std::fs::read_to_string(cache.join("new")).unwrap(), "step");
        assert_eq!(mtime_of(&root.join("var")).unwrap(), before);
    }
}
