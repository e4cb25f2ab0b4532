//! Removing the placeholders a step's sandbox created (see [`Stub`]).

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{
    statat, unlinkat, utimensat, AtFlags, FileType, Timespec, Timestamps, CWD, UTIME_OMIT,
};
use rustix::io::Errno;

use crate::spec::{Stub, StubKind};
use crate::sys::fd_path;

/// Removes `stubs` from `root` (the rootfs the step ran on, or the overlay upperdir), newest
/// first, each only if it is still the kind that was created (a directory only if empty:
/// anything the step put inside makes it a real change), and restores each parent's mtime.
/// Paths are resolved inside `root`, never following a symlink out of it.
pub fn remove_stubs(root: &Path, stubs: &[Stub]) -> io::Result<()> {
    let root_fd = rbuild_inroot::open_root(root)?;
    for stub in stubs.iter().rev() {
        // The stub itself is never followed: a step may have replaced it with a symlink.
        let (parent, name) = match rbuild_inroot::resolve_parent(
            root_fd.as_fd(),
            Path::new(&stub.path),
            rbuild_inroot::Symlinks::ResolveInRoot,
            None,
        ) {
            Ok((parent, Some(name))) => (parent, name),
            Ok((_, None)) => continue,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let parent_fd = parent.fd;
        let name = name.as_os_str();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stub(path: &str, kind: StubKind) -> Stub {
        Stub {
            path: path.into(),
            kind,
            parent_mtime: (0, 0),
        }
    }

    #[test]
    fn stubs_are_removed_inside_the_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("proc")).unwrap();
        std::fs::create_dir_all(outside.join("proc")).unwrap();
        std::fs::write(outside.join("hosts"), "host").unwrap();
        // The step replaced /etc (where a stub was made) with a link out of the root, and
        // the stub file itself with a link to a host file.
        std::os::unix::fs::symlink(&outside, root.join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.join("hosts"), root.join("hosts")).unwrap();
        let stubs = [
            stub("/proc", StubKind::Dir),
            stub("/etc/proc", StubKind::Dir),
            stub("/hosts", StubKind::File),
            stub("/missing/x", StubKind::File),
        ];
        remove_stubs(&root, &stubs).unwrap();
        assert!(!root.join("proc").exists(), "the real stub goes");
        // `/etc` resolved inside the root names nothing there: the host's directory stays.
        assert!(outside.join("proc").is_dir());
        // A stub replaced by a symlink is not what was created: neither it nor its target
        // is removed.
        assert!(root.join("hosts").is_symlink());
        assert_eq!(
            std::fs::read_to_string(outside.join("hosts")).unwrap(),
            "host"
        );
    }
}
