//! Removing the placeholders a step's sandbox created (see [`Stub`]).

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{
    statat, unlinkat, utimensat, AtFlags, FileType, Timespec, Timestamps, CWD, UTIME_OMIT,
};
use rustix::io::Errno;

use crate::rootpath::{open_in_root, CreateAs};
use crate::spec::{Stub, StubKind};
use crate::sys::fd_path;

/// Removes `stubs` from `root` (the rootfs the step ran on, or the overlay upperdir), newest
/// first, each only if it is still the kind that was created (a directory only if empty:
/// anything the step put inside makes it a real change), and restores each parent's mtime.
/// Paths are resolved inside `root`, never following a symlink out of it.
pub fn remove_stubs(root: &Path, stubs: &[Stub]) -> io::Result<()> {
    let root_fd = std::fs::File::open(root)?;
    for stub in stubs.iter().rev() {
        let path = Path::new(&stub.path);
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            continue;
        };
        let mut ignored = Vec::new();
        let parent_fd = match open_in_root(
            root_fd.as_fd(),
            &parent.to_string_lossy(),
            CreateAs::Nothing,
            &mut ignored,
        ) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        let Ok(st) = statat(&parent_fd, name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let kind = FileType::from_raw_mode(st.st_mode);
        let (matches, flags) = match stub.kind {
            StubKind::Dir => (kind == FileType::Directory, AtFlags::REMOVEDIR),
            StubKind::File => (kind == FileType::RegularFile, AtFlags::empty()),
            StubKind::CharDevice => (
                kind == FileType::CharacterDevice && st.st_rdev != 0,
                AtFlags::empty(),
            ),
        };
        if !matches {
            continue;
        }
        // The parent fd is O_PATH, so unlink and utimes go through its /proc/self/fd path.
        let parent_path = fd_path(parent_fd.as_fd());
        match unlinkat(CWD, parent_path.join(name), flags) {
            Ok(()) => {}
            Err(Errno::NOTEMPTY) => continue,
            Err(e) => return Err(e.into()),
        }
        let (sec, nsec) = stub.parent_mtime;
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_OMIT,
            },
            last_modification: Timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            },
        };
        match utimensat(CWD, &parent_path, &times, AtFlags::empty()) {
            // Only an owner may set times: a parent that is another user's and only group
            // writable (the restricted isolation's builder directories under OpenShift's
            // random uid) keeps the new mtime, and the step's layer shows the directory.
            Err(Errno::PERM)
                if rustix::fs::fstat(&parent_fd)
                    .is_ok_and(|p| p.st_uid != rustix::process::geteuid().as_raw()) => {}
            other => other?,
        }
    }
    Ok(())
}
