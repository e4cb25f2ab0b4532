//! Reading a build input file (the Dockerfile, an ignore file) from inside a directory the
//! way BuildKit does: its local sources are snapshots of a directory, and the frontend reads
//! a file from them with every symlink resolved *inside* that directory (an absolute target
//! restarts at the directory, `..` stops at it). So `Dockerfile -> /proc/self/environ` reads
//! `<dir>/proc/self/environ` (which is normally absent), never the host's file.
//!
//! The kernel does exactly this with `openat2(RESOLVE_IN_ROOT)`; on a kernel or a seccomp
//! profile without `openat2` the same walk is done one component at a time with
//! `O_NOFOLLOW` opens below a directory descriptor.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Why a file could not be read from inside its directory.
#[derive(Debug)]
pub enum InRootError {
    /// No such file inside the directory (after resolving symlinks inside it).
    NotFound,
    /// It exists but is a directory, a FIFO, a device or a socket.
    NotRegular,
    /// Larger than the caller's bound.
    TooLarge { limit: u64 },
    /// Any other failure (permissions, a loop of symlinks, I/O).
    Io(io::Error),
}

impl fmt::Display for InRootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InRootError::NotFound => f.write_str("no such file"),
            InRootError::NotRegular => f.write_str("not a regular file"),
            InRootError::TooLarge { limit } => write!(f, "larger than the limit of {limit} bytes"),
            InRootError::Io(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for InRootError {}

impl From<io::Error> for InRootError {
    fn from(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::NotFound {
            InRootError::NotFound
        } else {
            InRootError::Io(err)
        }
    }
}

impl From<Errno> for InRootError {
    fn from(errno: Errno) -> Self {
        io::Error::from(errno).into()
    }
}

/// Reads the regular file `rel` below `root`, resolving symlinks as if `root` were `/`, and
/// refuses it when it holds more than `max_bytes`. A FIFO is opened without blocking and
/// then refused, so a planted pipe cannot hang the build.
pub fn read_file_in_root(root: &Path, rel: &Path, max_bytes: u64) -> Result<Vec<u8>, InRootError> {
    let file = open_in_root(root, rel)?;
    read_regular(file, max_bytes)
}

/// Opens `rel` below `root` for reading (see [`read_file_in_root`]).
pub fn open_in_root(root: &Path, rel: &Path) -> Result<File, InRootError> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    match open_with_openat2(&root_fd, rel) {
        Err(InRootError::Io(err))
            if matches!(
                err.raw_os_error(),
                Some(libc_errno::ENOSYS) | Some(libc_errno::EPERM)
            ) =>
        {
            open_by_walk(&root_fd, rel)
        }
        other => other,
    }
}

/// The errno values the fallback decision needs (rustix's raw values, no libc dependency).
mod libc_errno {
    pub const ENOSYS: i32 = rustix::io::Errno::NOSYS.raw_os_error();
    pub const EPERM: i32 = rustix::io::Errno::PERM.raw_os_error();
}

fn read_flags() -> OFlags {
    OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC
}

fn open_with_openat2(root: &OwnedFd, rel: &Path) -> Result<File, InRootError> {
    let rel = relative(rel);
    let fd = rustix::fs::openat2(
        root,
        rel.as_path(),
        read_flags(),
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?;
    Ok(File::from(fd))
}

/// `rel` without a leading `/` (it is below the root either way).
fn relative(rel: &Path) -> PathBuf {
    let stripped: PathBuf = rel
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect();
    if stripped.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        stripped
    }
}

/// The same resolution as `RESOLVE_IN_ROOT`, one `O_NOFOLLOW` component at a time: the
/// workspace's one in-root resolver (`rbuild_inroot::open`).
pub(crate) fn open_by_walk(root: &OwnedFd, rel: &Path) -> Result<File, InRootError> {
    match rbuild_inroot::open(root.as_fd(), rel, read_flags()) {
        Ok(fd) => Ok(File::from(fd)),
        Err(e) => Err(io::Error::from(e).into()),
    }
}

fn read_regular(file: File, max_bytes: u64) -> Result<Vec<u8>, InRootError> {
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(InRootError::NotRegular);
    }
    if meta.len() > max_bytes {
        return Err(InRootError::TooLarge { limit: max_bytes });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte over the limit tells a file that grew while being read.
    file.take(max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(InRootError::TooLarge { limit: max_bytes });
    }
    Ok(bytes)
}

/// A path for messages: the directory joined with the name as given.
pub fn display_in_root(root: &Path, rel: &Path) -> String {
    let joined = root.join(relative(rel));
    String::from_utf8_lossy(joined.as_os_str().as_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root_fd(dir: &Path) -> OwnedFd {
        rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap()
    }

    fn read_walk(dir: &Path, rel: &str) -> Result<Vec<u8>, InRootError> {
        let file = open_by_walk(&root_fd(dir), Path::new(rel))?;
        read_regular(file, 1 << 20)
    }

    #[test]
    fn both_resolutions_keep_symlinks_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host secret").unwrap();
        let ctx = tempfile::tempdir().unwrap();
        let root = ctx.path();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/real"), "inside").unwrap();
        symlink(outside.path().join("secret"), root.join("abs")).unwrap();
        symlink("../../../../../../../secret", root.join("dotdot")).unwrap();
        symlink("sub/real", root.join("rel")).unwrap();
        symlink("/sub/real", root.join("abs_inside")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        for rel in ["abs", "dotdot"] {
            assert!(
                matches!(read_walk(root, rel), Err(InRootError::NotFound)),
                "walk {rel}"
            );
            assert!(
                matches!(
                    read_file_in_root(root, Path::new(rel), 100),
                    Err(InRootError::NotFound)
                ),
                "openat2 {rel}"
            );
        }
        for rel in ["rel", "abs_inside", "sub/../rel"] {
            assert_eq!(read_walk(root, rel).unwrap(), b"inside", "walk {rel}");
            assert_eq!(
                read_file_in_root(root, Path::new(rel), 100).unwrap(),
                b"inside",
                "openat2 {rel}"
            );
        }
        assert!(matches!(read_walk(root, "loop"), Err(InRootError::Io(_))));
        assert!(matches!(
            read_file_in_root(root, Path::new("loop"), 100),
            Err(InRootError::Io(_))
        ));
        // A secret placed inside the root under the absolute target's name is what is read.
        std::fs::create_dir_all(root.join(outside.path().strip_prefix("/").unwrap())).unwrap();
        std::fs::write(
            root.join(outside.path().strip_prefix("/").unwrap())
                .join("secret"),
            "shadowed",
        )
        .unwrap();
        assert_eq!(read_walk(root, "abs").unwrap(), b"shadowed");
    }

    #[test]
    fn fifos_directories_and_large_files_are_refused() {
        let ctx = tempfile::tempdir().unwrap();
        let root = ctx.path();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            root.join("fifo"),
            Mode::from_raw_mode(0o600),
        )
        .unwrap();
        std::fs::create_dir(root.join("dir")).unwrap();
        std::fs::write(root.join("big"), vec![b'x'; 101]).unwrap();
        assert!(matches!(
            read_file_in_root(root, Path::new("fifo"), 100),
            Err(InRootError::NotRegular)
        ));
        assert!(matches!(
            read_walk(root, "fifo"),
            Err(InRootError::NotRegular)
        ));
        assert!(matches!(
            read_file_in_root(root, Path::new("dir"), 100),
            Err(InRootError::NotRegular)
        ));
        assert!(matches!(
            read_file_in_root(root, Path::new("big"), 100),
            Err(InRootError::TooLarge { limit: 100 })
        ));
        assert_eq!(
            read_file_in_root(root, Path::new("big"), 101)
                .unwrap()
                .len(),
            101
        );
    }
}
