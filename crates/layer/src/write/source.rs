//! Reading what a changed path is now, from the source root, without following symlinks.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};

/// Xattrs that describe the host or the snapshotter, not the image: SELinux labels are
/// assigned by the host's policy, and overlay's own attributes are upperdir bookkeeping.
const HOST_ONLY_XATTR_PREFIXES: &[&str] =
    &["security.selinux", "trusted.overlay.", "user.overlay."];

/// A changed path's current state.
pub(crate) struct SourceEntry {
    pub kind: FileType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    /// The fraction of a second of `mtime`, in nanoseconds.
    pub mtime_nsec: u32,
    pub size: u64,
    pub rdev: u64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub link_target: Option<Vec<u8>>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Open for reading, for regular files.
    pub file: Option<File>,
}

/// Where a changed path is: the directory holding it, already open (the writer keeps the
/// chain of directories it is in open, so no entry costs a walk from the root), and how to
/// name it.
pub(crate) struct Located<'a> {
    /// The parent directory (an fd reached from the root by `O_NOFOLLOW` opens only).
    pub parent: BorrowedFd<'a>,
    /// The entry's name in `parent`.
    pub name: &'a OsStr,
    /// The entry's path relative to the root, for messages.
    pub shown: &'a dyn Fn() -> String,
    /// The entry's host path, for the xattrs of the entries that have no fd to read them
    /// by (symlinks, devices, fifos, directories this user cannot open for reading).
    pub host_path: &'a dyn Fn() -> PathBuf,
    /// Whether opening a file without updating its access time was refused once (the
    /// writer's files are not all its own): then it is not asked again.
    pub noatime_refused: &'a Cell<bool>,
}

/// Reads the entry `at` names, not following a symlink there. For a directory, also
/// returns it open (for its children, which the plan puts right after it).
pub(crate) fn read_source(
    at: &Located<'_>,
    with_xattrs: bool,
) -> Result<(SourceEntry, Option<OwnedFd>)> {
    let shown = at.shown;
    let (dir, name) = (at.parent, at.name);
    let missing = || Error::Change {
        path: shown(),
        reason: "not found in the source".into(),
    };
    let mut stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return Err(missing()),
        Err(e) => return Err(e).ctx(|| format!("inspecting {:?} in the source", shown())),
    };
    let kind = FileType::from_raw_mode(stat.st_mode);
    let mut file = None;
    let mut opened_dir = None;
    let mut size = 0;
    let mut link_target = None;
    // The descriptor the xattrs are read by, when the entry has a readable one.
    let mut xattr_fd: Option<BorrowedFd<'_>> = None;
    match kind {
        FileType::RegularFile => {
            let fd = open_for_reading(dir, name, &stat, at.noatime_refused)
                .ctx(|| format!("opening {:?} in the source", shown()))?;
            let opened = rustix::fs::fstat(&fd).ctx(|| format!("inspecting {:?}", shown()))?;
            if opened.st_ino != stat.st_ino || opened.st_dev != stat.st_dev {
                return Err(Error::Change {
                    path: shown(),
                    reason: "replaced while the layer was being written".into(),
                });
            }
            size = opened.st_size as u64;
            file = Some(File::from(fd));
        }
        FileType::Directory => {
            // Opened for reading where the mode allows (its xattrs are then read by the
            // fd), else by `O_PATH` (enough to reach its children, as the resolver does).
            let (fd, readable) = match rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => (fd, true),
                Err(Errno::ACCESS) => (
                    rustix::fs::openat(
                        dir,
                        name,
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .ctx(|| format!("opening directory {:?} in the source", shown()))?,
                    false,
                ),
                Err(e) => {
                    return Err(e).ctx(|| format!("opening directory {:?} in the source", shown()))
                }
            };
            // The metadata written is the opened directory's own.
            stat = rustix::fs::fstat(&fd).ctx(|| format!("inspecting {:?}", shown()))?;
            opened_dir = Some((fd, readable));
        }
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(dir, name, Vec::new())
                .ctx(|| format!("reading symlink {:?} in the source", shown()))?;
            link_target = Some(target.into_bytes());
        }
        FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {}
        FileType::Socket | FileType::Unknown => {
            return Err(Error::Change {
                path: shown(),
                reason: "sockets and unknown file types cannot be put in a layer".into(),
            })
        }
    }
    if let Some(f) = &file {
        xattr_fd = Some(f.as_fd());
    }
    if let Some((fd, true)) = &opened_dir {
        xattr_fd = Some(fd.as_fd());
    }
    let xattrs = match (with_xattrs, xattr_fd) {
        (false, _) => BTreeMap::new(),
        (true, Some(fd)) => read_xattrs(&XattrsOf::Fd(fd), shown)?,
        (true, None) => read_xattrs(&XattrsOf::Path(&(at.host_path)()), shown)?,
    };
    let entry = SourceEntry {
        kind,
        mode: stat.st_mode & 0o7777,
        uid: stat.st_uid.into(),
        gid: stat.st_gid.into(),
        mtime: stat.st_mtime,
        mtime_nsec: u32::try_from(stat.st_mtime_nsec).unwrap_or(0),
        size,
        rdev: stat.st_rdev,
        dev: stat.st_dev,
        ino: stat.st_ino,
        nlink: stat.st_nlink,
        link_target,
        xattrs,
        file,
    };
    Ok((entry, opened_dir.map(|(fd, _)| fd)))
}

/// Opens the regular file `name` in `dir` (whose `lstat` is `stat`) for reading. A file of
/// this user that its mode keeps even its owner from reading (`COPY --chmod=0`, `RUN chmod
/// 000 f` where no capability overrides modes: a rootless or restricted build) is opened
/// with the owner's read bit added for the moment of the open and its mode put back at once
/// (the entry's mode was read before; the open descriptor stays readable). The mode is
/// changed through an `O_PATH` descriptor of the very inode `stat` describes (by
/// `/proc/self/fd`), never by following a name a symlink could have replaced.
///
/// Opened with `O_NOATIME` where allowed (the file's owner, or `CAP_FOWNER`): reading a
/// file written since its last read updates its access time (`relatime`), a journalled
/// inode write per file that nothing of a layer shows.
fn open_for_reading(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    stat: &rustix::fs::Stat,
    noatime_refused: &Cell<bool>,
) -> rustix::io::Result<rustix::fd::OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    let mut opened = Err(Errno::PERM);
    if !noatime_refused.get() {
        opened = rustix::fs::openat(dir, name, flags | OFlags::NOATIME, Mode::empty());
        if matches!(opened, Err(Errno::PERM)) {
            noatime_refused.set(true);
        }
    }
    if matches!(opened, Err(Errno::PERM)) {
        opened = rustix::fs::openat(dir, name, flags, Mode::empty());
    }
    match opened {
        // Only the owner (or a capability, which would not have met EACCES) may chmod: for
        // anyone else the chmod below fails and the open's error stands.
        Err(Errno::ACCESS) if stat.st_mode & 0o400 == 0 => {
            let path_fd = rustix::fs::openat(
                dir,
                name,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let held = rustix::fs::fstat(&path_fd)?;
            if held.st_ino != stat.st_ino
                || held.st_dev != stat.st_dev
                || FileType::from_raw_mode(held.st_mode) != FileType::RegularFile
            {
                // Replaced since it was inspected: the caller's check names it.
                return Err(Errno::ACCESS);
            }
            let by_fd = format!("/proc/self/fd/{}", path_fd.as_raw_fd());
            let mode = stat.st_mode & 0o7777;
            if rustix::fs::chmod(&by_fd, Mode::from_raw_mode(mode | 0o400)).is_err() {
                return Err(Errno::ACCESS);
            }
            let opened =
                rustix::fs::open(&by_fd, flags.difference(OFlags::NOFOLLOW), Mode::empty());
            // Put back whether or not the open worked: the file keeps the mode it was given.
            let restored = rustix::fs::chmod(&by_fd, Mode::from_raw_mode(mode));
            let fd = opened?;
            restored?;
            Ok(fd)
        }
        other => other,
    }
}

/// What xattrs are read from: an open descriptor (regular files, directories), or, for the
/// entries that have none, the path (not following a symlink at it; its parents were
/// reached by `O_NOFOLLOW` opens and the source tree is quiescent while a layer is written).
enum XattrsOf<'a> {
    Fd(BorrowedFd<'a>),
    Path(&'a Path),
}

/// Room for the names of a typical entry's xattrs: one `flistxattr` call with it answers
/// most entries (an empty list, the common case, costs no further call).
const XATTR_LIST_ROOM: usize = 1024;

impl XattrsOf<'_> {
    /// The raw, NUL-separated list of names; `None` where the filesystem has no xattrs.
    fn names(&self) -> std::io::Result<Option<Vec<u8>>> {
        let list = |buf: &mut [u8]| match self {
            XattrsOf::Fd(fd) => rustix::fs::flistxattr(fd, buf),
            XattrsOf::Path(path) => rustix::fs::llistxattr(*path, buf),
        };
        let mut room = [0u8; XATTR_LIST_ROOM];
        loop {
            match list(&mut room) {
                Ok(n) => return Ok(Some(room[..n].to_vec())),
                Err(Errno::NOTSUP) => return Ok(None),
                Err(Errno::RANGE) => {}
                Err(e) => return Err(e.into()),
            }
            // Longer than the room: ask for the size (which can change between calls).
            let size = match self {
                XattrsOf::Fd(fd) => rustix::fs::flistxattr_query(fd),
                XattrsOf::Path(path) => rustix::fs::llistxattr_query(*path),
            }?;
            let mut names = vec![0u8; size];
            match list(&mut names) {
                Ok(n) => {
                    names.truncate(n);
                    return Ok(Some(names));
                }
                Err(Errno::RANGE) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The value of `name`; `None` when it is gone.
    fn value(&self, name: &CStr) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            let size = match self {
                XattrsOf::Fd(fd) => rustix::fs::fgetxattr_query(fd, name),
                XattrsOf::Path(path) => rustix::fs::lgetxattr_query(*path, name),
            };
            let size = match size {
                Ok(size) => size,
                Err(Errno::NODATA) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let mut value = vec![0u8; size];
            let got = match self {
                XattrsOf::Fd(fd) => rustix::fs::fgetxattr(fd, name, &mut value[..]),
                XattrsOf::Path(path) => rustix::fs::lgetxattr(*path, name, &mut value[..]),
            };
            match got {
                Ok(n) => {
                    value.truncate(n);
                    return Ok(Some(value));
                }
                Err(Errno::NODATA) => return Ok(None),
                // Grew between the calls: ask again.
                Err(Errno::RANGE) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The image-relevant xattrs of an entry: one list call, and a value read only for the
/// names kept (none at all when the list is empty, as it is for most files).
fn read_xattrs(of: &XattrsOf<'_>, shown: &dyn Fn() -> String) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut xattrs = BTreeMap::new();
    let names = match of.names() {
        Ok(Some(names)) => names,
        Ok(None) => return Ok(xattrs),
        Err(e) => return Err(e).ctx(|| format!("listing xattrs of {:?}", shown())),
    };
    for raw in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(raw) else {
            continue;
        };
        if HOST_ONLY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        // Cannot fail: `raw` holds no NUL (the list was split at them).
        let c_name = CString::new(raw).expect("xattr names hold no NUL");
        let value = of
            .value(&c_name)
            .ctx(|| format!("reading xattr {name} of {:?}", shown()))?;
        if let Some(value) = value {
            xattrs.insert(name.to_owned(), value);
        }
    }
    Ok(xattrs)
}
