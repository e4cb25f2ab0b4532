//! Reading what a changed path is now, from the source root, without following symlinks.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};
use crate::path::{join, open_dir_in_root, ParentSymlinks};

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

/// Reads `components` below `root` (whose host path is `root_path`, used only for xattr
/// calls that have no fd form). A symlink at a parent position is an error: the change set
/// must name real paths.
pub(crate) fn read_source(
    root: BorrowedFd<'_>,
    root_path: &Path,
    components: &[OsString],
    with_xattrs: bool,
) -> Result<SourceEntry> {
    let shown = || join(components).display().to_string();
    let (name, parents) = components.split_last().ok_or_else(|| Error::Change {
        path: "/".into(),
        reason: "the root has no entry of its own".into(),
    })?;
    let missing = || Error::Change {
        path: shown(),
        reason: format!("not found under {}", root_path.display()),
    };
    let parent = open_dir_in_root(root, parents, false, ParentSymlinks::Refuse)
        .map_err(|e| Error::Change {
            path: shown(),
            reason: e.to_string(),
        })?
        .ok_or_else(missing)?;
    let dir = parent.fd.as_fd();
    let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return Err(missing()),
        Err(e) => return Err(e).ctx(|| format!("inspecting {:?} in the source", shown())),
    };
    let kind = FileType::from_raw_mode(stat.st_mode);
    let mut file = None;
    let mut size = 0;
    let mut link_target = None;
    match kind {
        FileType::RegularFile => {
            let fd = open_for_reading(dir, name, &stat)
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
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(dir, name, Vec::new())
                .ctx(|| format!("reading symlink {:?} in the source", shown()))?;
            link_target = Some(target.into_bytes());
        }
        FileType::Directory
        | FileType::CharacterDevice
        | FileType::BlockDevice
        | FileType::Fifo => {}
        FileType::Socket | FileType::Unknown => {
            return Err(Error::Change {
                path: shown(),
                reason: "sockets and unknown file types cannot be put in a layer".into(),
            })
        }
    }
    let xattrs = if with_xattrs {
        read_xattrs(&root_path.join(join(components)))?
    } else {
        BTreeMap::new()
    };
    Ok(SourceEntry {
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
    })
}

/// Opens the regular file `name` in `dir` (whose `lstat` is `stat`) for reading. A file of
/// this user that its mode keeps even its owner from reading (`COPY --chmod=0`, `RUN chmod
/// 000 f` where no capability overrides modes: a rootless or restricted build) is opened
/// with the owner's read bit added for the moment of the open and its mode put back at once
/// (the entry's mode was read before; the open descriptor stays readable). The mode is
/// changed through an `O_PATH` descriptor of the very inode `stat` describes (by
/// `/proc/self/fd`), never by following a name a symlink could have replaced.
fn open_for_reading(
    dir: BorrowedFd<'_>,
    name: &OsString,
    stat: &rustix::fs::Stat,
) -> rustix::io::Result<rustix::fd::OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    match rustix::fs::openat(dir, name, flags, Mode::empty()) {
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

/// The image-relevant xattrs of `path`, not following a symlink at it. The parent chain was
/// just checked to be symlink-free by fd walk; the source tree is quiescent while a layer is
/// written, so the path form is acceptable here (there is no fd form for symlinks).
fn read_xattrs(path: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut xattrs = BTreeMap::new();
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(xattrs),
        Err(e) => return Err(e).ctx(|| format!("listing xattrs of {}", path.display())),
    };
    for name in names {
        let Some(name) = name.to_str().map(str::to_owned) else {
            continue;
        };
        if HOST_ONLY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        if let Some(value) =
            xattr::get(path, &name).ctx(|| format!("reading xattr {name} of {}", path.display()))?
        {
            xattrs.insert(name, value);
        }
    }
    Ok(xattrs)
}
