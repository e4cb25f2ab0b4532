//! The one resolver of paths inside a root filesystem, with chroot semantics: a symlink
//! (absolute or relative) and `..` never lead out of the root.
//!
//! Nothing here hands the kernel a host path below the root: the walk opens one component
//! at a time with `openat(parent_fd, name, O_PATH | O_NOFOLLOW)`, so a symlink met on the
//! way, or swapped in while the walk runs, is read and resolved inside the root (or refused)
//! instead of being followed by the kernel. `..` pops the chain of open directories and stops
//! at the root; an absolute symlink target restarts at the root.
//!
//! Callers:
//! - the sandbox's mount targets and placeholders (`rbuild_sandbox::rootpath::open_in_root`),
//! - layer extraction's parent directories (`rbuild-layer`'s `path.rs`),
//! - the executor's COPY/WORKDIR directories and reads of the image's files (`fsops.rs`),
//!   and chroot mode's mount targets (`chroot_mounts.rs`);
//! - build inputs read from the context (`rbuild-ignore`'s `in_root.rs`, when `openat2`'s
//!   `RESOLVE_IN_ROOT` is not available).
//!
//! Operations:
//! - [`resolve`]: the walk, optionally creating what is missing through a caller's function
//!   (which decides kind, mode and owner, and records what it made);
//! - [`resolve_parent`]: the directory holding a path's final component and that name, the
//!   final component not followed (to replace or create it through the directory's fd);
//! - [`open`]: a file opened with the caller's flags, the final open never following a
//!   symlink swapped in meanwhile;
//! - [`resolve_existing`]: the real path as far as it exists, the rest as written (where a
//!   path would be created);
//! - [`host_path_in_root`]: the host path of a resolved path, for reading only.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::Mode;
/// Open flags for [`open`] (rustix's, re-exported for callers without rustix).
pub use rustix::fs::OFlags;

/// What a resolved path is (rustix's type, re-exported for callers without rustix).
pub use rustix::fs::FileType;
use rustix::io::Errno;

/// Symlinks followed by one resolution before it fails, as the kernel's limit (ELOOP).
pub const MAX_SYMLINKS: usize = 40;

/// What to do with a symlink met before the end of the walk (or at its end: [`resolve`]
/// follows a final symlink; [`resolve_parent`] does not reach it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// Follow it inside the root, as a chroot would.
    ResolveInRoot,
    /// Fail with [`Error::Symlink`]: where a symlink means the caller's view is wrong.
    Refuse,
}

/// A path reached inside the root.
#[derive(Debug)]
pub struct Resolved {
    /// An `O_PATH` descriptor of it.
    pub fd: OwnedFd,
    /// Its real path relative to the root (no symlink among the components; empty for the
    /// root itself).
    pub path: PathBuf,
    /// What it is (never a symlink).
    pub file_type: FileType,
}

/// A component the walk found missing, handed to the caller's create function.
pub struct Missing<'a> {
    /// The directory it is missing from (an `O_PATH` descriptor).
    pub parent: BorrowedFd<'a>,
    /// That directory's real path relative to the root.
    pub parent_path: &'a Path,
    /// The missing name (one component).
    pub name: &'a OsStr,
    /// Whether it is the last component of the path (the others must become directories).
    pub last: bool,
}

impl Missing<'_> {
    /// Its real path relative to the root.
    pub fn path(&self) -> PathBuf {
        self.parent_path.join(self.name)
    }
}

/// What a caller does with a missing component: creates it (the walk then opens it like any
/// other, without following it) or fails. `EEXIST` counts as created (another writer won).
pub type Create<'a> = &'a mut dyn FnMut(&Missing<'_>) -> io::Result<()>;

/// Why a resolution failed. Paths are relative to the root, as resolved so far.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A component does not exist (and nothing was to create it).
    #[error("{path:?} does not exist")]
    NotFound { path: PathBuf },
    /// A component that must be a directory is something else.
    #[error("{path:?} is not a directory")]
    NotADirectory { path: PathBuf },
    /// A symlink where [`Symlinks::Refuse`] allows none.
    #[error("{path:?} is a symlink")]
    Symlink { path: PathBuf },
    /// More than [`MAX_SYMLINKS`] symlinks on the way.
    #[error("too many levels of symbolic links at {path:?}")]
    TooManySymlinks { path: PathBuf },
    /// A system call failed.
    #[error("{action} {path:?}: {source}")]
    Io {
        action: Action,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What the walk was doing when a system call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Opening,
    Inspecting,
    ReadingLink,
    Creating,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Opening => "opening",
            Action::Inspecting => "inspecting",
            Action::ReadingLink => "reading symlink",
            Action::Creating => "creating",
        })
    }
}

impl Error {
    /// The path the error is about (relative to the root).
    pub fn path(&self) -> &Path {
        match self {
            Error::NotFound { path }
            | Error::NotADirectory { path }
            | Error::Symlink { path }
            | Error::TooManySymlinks { path }
            | Error::Io { path, .. } => path,
        }
    }

    /// Whether a component was missing.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } => true,
            Error::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// The errno a path syscall would have given, for callers that speak `io::Error`; a failed
/// system call keeps its own error.
impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::NotFound { .. } => io::Error::from(Errno::NOENT),
            Error::NotADirectory { .. } => io::Error::from(Errno::NOTDIR),
            Error::Symlink { .. } | Error::TooManySymlinks { .. } => io::Error::from(Errno::LOOP),
            Error::Io { source, .. } => source,
        }
    }
}

/// Opens `root` (a host directory) as the `O_PATH` descriptor the walk starts from.
pub fn open_root(root: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Resolves `path` (absolute or relative to the root; `..` clamps at the root) inside the
/// directory `root`, following symlinks inside the root (or refusing them), the final
/// component included. With `create`, a missing component is handed to it and then opened
/// without following; without, it is [`Error::NotFound`].
pub fn resolve(
    root: BorrowedFd<'_>,
    path: &Path,
    symlinks: Symlinks,
    create: Option<Create<'_>>,
) -> Result<Resolved, Error> {
    match walk(root, split(path), symlinks, create, false)? {
        Walked::Found(resolved) => Ok(resolved),
        // Only a walk asked to stop at the first missing component stops there.
        Walked::Missing(path) => Err(Error::NotFound { path }),
    }
}

/// The real path (relative to the root) of `path` as far as it exists, every symlink on
/// the way resolved inside the root, and from the first missing component on the rest as
/// written (`..` applied to the path so far): where the path would be created. For a path
/// that is walked again when used (the chroot mode's mount targets), not for writing
/// through.
pub fn resolve_existing(root: BorrowedFd<'_>, path: &Path) -> Result<PathBuf, Error> {
    match walk(root, split(path), Symlinks::ResolveInRoot, None, true)? {
        Walked::Found(resolved) => Ok(resolved.path),
        Walked::Missing(path) => Ok(path),
    }
}

/// Resolves the directory holding `path`'s final component, which is not followed nor
/// required to exist: returns that directory (created as [`resolve`] would, with `create`)
/// and the final name, or `None` for a name when `path` names the root itself.
pub fn resolve_parent(
    root: BorrowedFd<'_>,
    path: &Path,
    symlinks: Symlinks,
    create: Option<Create<'_>>,
) -> Result<(Resolved, Option<OsString>), Error> {
    let mut components = split(path);
    if components.back().is_some_and(|c| c == "..") {
        // The path ends by leaving a directory: it names a directory, not an entry of one.
        let dir = resolve_components(root, components, symlinks, create)?;
        return match dir.file_type {
            FileType::Directory => Ok((dir, None)),
            _ => Err(Error::NotADirectory { path: dir.path }),
        };
    }
    let Some(name) = components.pop_back() else {
        return Ok((reopen_root(root)?, None));
    };
    let dir = resolve_components(root, components, symlinks, create)?;
    if dir.file_type != FileType::Directory {
        return Err(Error::NotADirectory { path: dir.path });
    }
    Ok((dir, Some(name)))
}

/// Opens `path` inside `root` with `flags` (`O_RDONLY | O_NONBLOCK`, say), every symlink
/// resolved inside the root; the final open goes through the parent's descriptor with
/// `O_NOFOLLOW`, so a symlink swapped in after the resolution is refused (`ELOOP`), never
/// followed.
pub fn open(root: BorrowedFd<'_>, path: &Path, flags: OFlags) -> Result<OwnedFd, Error> {
    let resolved = resolve(root, path, Symlinks::ResolveInRoot, None)?;
    let Some(name) = resolved.path.file_name().map(OsStr::to_os_string) else {
        // The root itself.
        return rustix::fs::openat(root, ".", flags | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| io_error(Action::Opening, PathBuf::new(), e));
    };
    // The real path has no symlink in it: one appearing now was swapped in.
    let parent_path = resolved.path.parent().unwrap_or(Path::new(""));
    let parent = resolve(root, parent_path, Symlinks::Refuse, None)?;
    rustix::fs::openat(
        &parent.fd,
        &name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_error(Action::Opening, resolved.path.clone(), e))
}

/// The host path of `path` inside the host directory `root` with every symlink resolved
/// inside the root, or `None` when a component (or the root) does not exist. For reading
/// (an image's `/etc/passwd`): a path can be swapped for a symlink between this call and its
/// use, so writes go through descriptors ([`resolve`], [`resolve_parent`]).
pub fn host_path_in_root(root: &Path, path: impl AsRef<Path>) -> io::Result<Option<PathBuf>> {
    let root_fd = match open_root(root) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match resolve(
        root_fd.as_fd(),
        path.as_ref(),
        Symlinks::ResolveInRoot,
        None,
    ) {
        Ok(resolved) => Ok(Some(root.join(resolved.path))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `path`'s components as the walk takes them: normal names and `..` (the root and `.` say
/// nothing: every path starts at the root).
fn split(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn reopen_root(root: BorrowedFd<'_>) -> Result<Resolved, Error> {
    let fd = open_nofollow(root, OsStr::new(".")).map_err(|e| Error::Io {
        action: Action::Opening,
        path: PathBuf::new(),
        source: e.into(),
    })?;
    Ok(Resolved {
        fd,
        path: PathBuf::new(),
        file_type: FileType::Directory,
    })
}

/// `openat(dir, name, O_PATH | O_NOFOLLOW)`: a symlink is opened itself, never followed.
fn open_nofollow(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn resolve_components(
    root: BorrowedFd<'_>,
    components: VecDeque<OsString>,
    symlinks: Symlinks,
    create: Option<Create<'_>>,
) -> Result<Resolved, Error> {
    match walk(root, components, symlinks, create, false)? {
        Walked::Found(resolved) => Ok(resolved),
        Walked::Missing(path) => Err(Error::NotFound { path }),
    }
}

/// Where a walk ended.
enum Walked {
    Found(Resolved),
    /// [`resolve_existing`]'s answer: the path below the root, existing part resolved.
    Missing(PathBuf),
}

fn walk(
    root: BorrowedFd<'_>,
    mut pending: VecDeque<OsString>,
    symlinks: Symlinks,
    mut create: Option<Create<'_>>,
    stop_at_missing: bool,
) -> Result<Walked, Error> {
    // The open directories from the root down; `..` pops, never past the root.
    let mut chain: Vec<(OsString, OwnedFd)> = Vec::new();
    let mut followed = 0usize;
    let chain_path = |chain: &[(OsString, OwnedFd)]| -> PathBuf {
        chain.iter().map(|(name, _)| name.as_os_str()).collect()
    };
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            chain.pop();
            continue;
        }
        let parent = chain.last().map(|(_, fd)| fd.as_fd()).unwrap_or(root);
        let here = || chain_path(&chain).join(&name);
        let fd = match open_nofollow(parent, &name) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                if stop_at_missing {
                    // The rest is taken as written, `..` popping what came before.
                    let mut names: Vec<OsString> = chain.into_iter().map(|(n, _)| n).collect();
                    names.push(name);
                    for component in pending {
                        if component == ".." {
                            names.pop();
                        } else {
                            names.push(component);
                        }
                    }
                    return Ok(Walked::Missing(names.iter().collect()));
                }
                let Some(create) = create.as_mut() else {
                    return Err(Error::NotFound { path: here() });
                };
                let parent_path = chain_path(&chain);
                let missing = Missing {
                    parent,
                    parent_path: &parent_path,
                    name: &name,
                    last: pending.is_empty(),
                };
                match create(&missing) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(source) => {
                        return Err(Error::Io {
                            action: Action::Creating,
                            path: here(),
                            source,
                        })
                    }
                }
                // Opened like any component: if a symlink took its place meanwhile, it is
                // resolved inside the root below, not followed by the kernel.
                match open_nofollow(parent, &name) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) => return Err(Error::NotFound { path: here() }),
                    Err(e) => return Err(io_error(Action::Opening, here(), e)),
                }
            }
            Err(e) => return Err(io_error(Action::Opening, here(), e)),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| io_error(Action::Inspecting, here(), e))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Symlink => {
                if symlinks == Symlinks::Refuse {
                    return Err(Error::Symlink { path: here() });
                }
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(Error::TooManySymlinks { path: here() });
                }
                // An O_PATH descriptor of the link itself: the empty path reads it.
                let target = rustix::fs::readlinkat(&fd, "", Vec::new())
                    .map_err(|e| io_error(Action::ReadingLink, here(), e))?;
                let target = PathBuf::from(OsString::from(
                    <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(target.as_bytes()),
                ));
                if target.is_absolute() {
                    chain.clear();
                }
                for (i, component) in split(&target).into_iter().enumerate() {
                    pending.insert(i, component);
                }
            }
            FileType::Directory => chain.push((name, fd)),
            file_type if pending.is_empty() => {
                let path = here();
                return Ok(Walked::Found(Resolved {
                    fd,
                    path,
                    file_type,
                }));
            }
            _ => return Err(Error::NotADirectory { path: here() }),
        }
    }
    let path = chain_path(&chain);
    match chain.pop() {
        Some((_, fd)) => Ok(Walked::Found(Resolved {
            fd,
            path,
            file_type: FileType::Directory,
        })),
        None => reopen_root(root).map(Walked::Found),
    }
}

fn io_error(action: Action, path: PathBuf, errno: Errno) -> Error {
    Error::Io {
        action,
        path,
        source: errno.into(),
    }
}

#[cfg(test)]
mod tests;
