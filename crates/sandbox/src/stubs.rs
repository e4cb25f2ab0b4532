//! Removing the placeholders a step's sandbox created (see [`Stub`]).

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use crate::rootpath::{open_in_root, CreateAs};
use crate::spec::{Stub, StubKind};
use crate::sys::{cpath, cvt, fd_path};

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
        let name_c = cpath(Path::new(name))?;
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let found = unsafe {
            libc::fstatat(
                parent_fd.as_raw_fd(),
                name_c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if found != 0 {
            continue;
        }
        let kind = st.st_mode & libc::S_IFMT;
        let (matches, flags) = match stub.kind {
            StubKind::Dir => (kind == libc::S_IFDIR, libc::AT_REMOVEDIR),
            StubKind::File => (kind == libc::S_IFREG, 0),
            StubKind::CharDevice => (kind == libc::S_IFCHR && st.st_rdev != 0, 0),
        };
        if !matches {
            continue;
        }
        // The parent fd is O_PATH, so unlink and utimes go through its /proc/self/fd path.
        let parent_path = cpath(&fd_path(parent_fd.as_fd()))?;
        let target = cpath(&fd_path(parent_fd.as_fd()).join(name))?;
        let removed = unsafe { libc::unlinkat(libc::AT_FDCWD, target.as_ptr(), flags) };
        if removed != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOTEMPTY) {
                continue;
            }
            return Err(err);
        }
        let (sec, nsec) = stub.parent_mtime;
        let times = [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            libc::timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            },
        ];
        cvt(unsafe { libc::utimensat(libc::AT_FDCWD, parent_path.as_ptr(), times.as_ptr(), 0) })?;
    }
    Ok(())
}
