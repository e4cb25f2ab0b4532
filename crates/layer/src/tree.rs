//! A tree of hard links: a private view of a read-only extracted tree that costs a
//! directory per directory and a link per file, not a copy of every file's data.
//!
//! The new tree's directories are its own (owner, mode, xattrs and times copied), so
//! entries can be added, removed and renamed in it freely; its files, symlinks and special
//! files are the source's inodes. Whoever writes into it must therefore replace a file
//! (unlink, then create) rather than write into it in place — which is what layer
//! extraction, COPY and moving an overlay upper directory into place all do.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Timespec, Timestamps};

/// What [`link_tree`] made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    pub dirs: u64,
    pub links: u64,
}

/// Fills the existing empty directory `dst` with hard links to every non-directory under
/// `src` and copies of its directories (owner, mode, xattrs, times). `dst`'s own metadata is
/// left as it is. Symlinks are linked, never followed. Both trees must be on one file
/// system.
pub fn link_tree(src: &Path, dst: &Path) -> io::Result<LinkStats> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let src_fd = rustix::fs::open(src, flags, Mode::empty())
        .map_err(|e| context(e.into(), "opening", &src.display().to_string()))?;
    let dst_fd = rustix::fs::open(dst, flags, Mode::empty())
        .map_err(|e| context(e.into(), "opening", &dst.display().to_string()))?;
    let mut stats = LinkStats::default();
    link_dir(
        src_fd.as_fd(),
        dst_fd.as_fd(),
        &src.display().to_string(),
        &mut stats,
    )?;
    Ok(stats)
}

fn context(e: io::Error, what: &str, shown: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {shown}: {e}"))
}

fn link_dir(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    shown: &str,
    stats: &mut LinkStats,
) -> io::Result<()> {
    let mut names = Vec::new();
    let dup = rustix::io::fcntl_dupfd_cloexec(src, 0)?;
    for entry in Dir::new(dup).map_err(|e| context(e.into(), "reading", shown))? {
        let entry = entry.map_err(|e| context(e.into(), "reading", shown))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        names.push((entry.file_name().to_owned(), entry.file_type()));
    }
    for (name, kind) in names {
        let child_shown = format!("{shown}/{}", name.to_string_lossy());
        let kind = if kind == FileType::Unknown {
            let st = rustix::fs::statat(src, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| context(e.into(), "reading", &child_shown))?;
            FileType::from_raw_mode(st.st_mode)
        } else {
            kind
        };
        if kind == FileType::Directory {
            let st = rustix::fs::statat(src, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| context(e.into(), "reading", &child_shown))?;
            rustix::fs::mkdirat(dst, name.as_c_str(), Mode::from_raw_mode(0o700))
                .map_err(|e| context(e.into(), "creating", &child_shown))?;
            let open = |fd: BorrowedFd<'_>| -> io::Result<OwnedFd> {
                rustix::fs::openat(
                    fd,
                    name.as_c_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| context(e.into(), "opening", &child_shown))
            };
            let (from, to) = (open(src)?, open(dst)?);
            stats.dirs += 1;
            link_dir(from.as_fd(), to.as_fd(), &child_shown, stats)?;
            copy_dir_metadata(from.as_fd(), to.as_fd(), &st, &child_shown)?;
        } else {
            rustix::fs::linkat(src, name.as_c_str(), dst, name.as_c_str(), AtFlags::empty())
                .map_err(|e| context(e.into(), "linking", &child_shown))?;
            stats.links += 1;
        }
    }
    Ok(())
}

/// Owner, then mode (chown clears setuid/setgid), xattrs, and times last (after the
/// directory's entries were made).
fn copy_dir_metadata(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    st: &rustix::fs::Stat,
    shown: &str,
) -> io::Result<()> {
    let owner = |id: u32| Some(rustix::fs::Uid::from_raw(id));
    rustix::fs::fchown(
        to,
        owner(st.st_uid),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
    )
    .map_err(|e| context(e.into(), "chown of", shown))?;
    rustix::fs::fchmod(to, Mode::from_raw_mode(st.st_mode & 0o7777))
        .map_err(|e| context(e.into(), "chmod of", shown))?;
    copy_xattrs(from, to, shown)?;
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    };
    rustix::fs::futimens(to, &times).map_err(|e| context(e.into(), "setting times of", shown))
}

fn copy_xattrs(from: BorrowedFd<'_>, to: BorrowedFd<'_>, shown: &str) -> io::Result<()> {
    use xattr::FileExt;
    let (from, to) = (
        std::fs::File::from(from.try_clone_to_owned()?),
        std::fs::File::from(to.try_clone_to_owned()?),
    );
    let names = match from.list_xattr() {
        Ok(names) => names,
        // A file system without xattrs has none to copy.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(context(e, "listing xattrs of", shown)),
    };
    for name in names {
        if let Some(value) = from
            .get_xattr(&name)
            .map_err(|e| context(e, "reading xattrs of", shown))?
        {
            to.set_xattr(&name, &value).map_err(|e| {
                context(
                    e,
                    &format!("setting xattr {} on", OsStr::new(&name).to_string_lossy()),
                    shown,
                )
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn links_files_and_copies_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir_all(src.join("etc/deep")).unwrap();
        std::fs::write(src.join("etc/passwd"), "root:x:0:0\n").unwrap();
        std::fs::write(src.join("etc/deep/f"), "f").unwrap();
        std::os::unix::fs::symlink("/nowhere", src.join("dangling")).unwrap();
        std::os::unix::fs::symlink("etc", src.join("etc-link")).unwrap();
        std::fs::set_permissions(src.join("etc/deep"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        let mtime = std::fs::metadata(src.join("etc/deep")).unwrap().mtime();
        std::fs::create_dir(&dst).unwrap();

        let stats = link_tree(&src, &dst).unwrap();
        assert_eq!(stats, LinkStats { dirs: 2, links: 4 });
        let (a, b) = (
            std::fs::metadata(src.join("etc/passwd")).unwrap(),
            std::fs::metadata(dst.join("etc/passwd")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "files are links to the source's inodes");
        assert_eq!(b.nlink(), 2);
        let (a, b) = (
            std::fs::metadata(src.join("etc/deep")).unwrap(),
            std::fs::metadata(dst.join("etc/deep")).unwrap(),
        );
        assert_ne!(a.ino(), b.ino(), "directories are the view's own");
        assert_eq!(b.mode() & 0o7777, 0o750);
        assert_eq!(b.mtime(), mtime);
        assert_eq!(
            std::fs::read_link(dst.join("dangling")).unwrap(),
            Path::new("/nowhere"),
            "a symlink is linked, not followed"
        );
        assert!(std::fs::symlink_metadata(dst.join("etc-link"))
            .unwrap()
            .file_type()
            .is_symlink());

        // Replacing a file in the view leaves the source as it was.
        std::fs::remove_file(dst.join("etc/passwd")).unwrap();
        std::fs::write(dst.join("etc/passwd"), "changed\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(src.join("etc/passwd")).unwrap(),
            "root:x:0:0\n"
        );
    }

    #[test]
    fn a_missing_source_is_named_in_the_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = link_tree(&tmp.path().join("absent"), tmp.path()).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }
}
