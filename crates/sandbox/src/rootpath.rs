//! The sandbox's placeholders on the one in-root resolver (`rbuild-inroot`): mount targets
//! and chroot-mode files are created where missing, each recorded as a [`Stub`] so it can be
//! removed after the step. Container paths resolve with chroot semantics: symlinks (absolute
//! or relative) and `..` never leave the root.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};

use crate::spec::{Stub, StubKind};

pub use rbuild_inroot::host_path_in_root;

/// What to create when the last component of a path is missing (missing parents become dirs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateAs {
    Nothing,
    Dir,
    File,
    /// A character device with this `dev_t` (chroot mode's /dev nodes).
    CharDevice(libc::dev_t),
}

/// `fstat` of a descriptor (an `O_PATH` one too).
pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<rustix::fs::Stat> {
    Ok(rustix::fs::fstat(fd)?)
}

fn create_entry(missing: &rbuild_inroot::Missing<'_>, kind: CreateAs) -> io::Result<StubKind> {
    let (dir, name) = (missing.parent, missing.name);
    match kind {
        CreateAs::Dir | CreateAs::Nothing => {
            rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755))?;
            Ok(StubKind::Dir)
        }
        CreateAs::File => {
            rustix::fs::openat(
                dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )?;
            Ok(StubKind::File)
        }
        CreateAs::CharDevice(dev) => {
            rustix::fs::mknodat(
                dir,
                name,
                rustix::fs::FileType::CharacterDevice,
                Mode::from_raw_mode(0o666),
                dev,
            )?;
            // mknod is subject to the umask; device nodes must be usable by everyone. A
            // fresh node (mknodat fails on an existing name), so nothing to follow.
            rustix::fs::chmodat(
                dir,
                name,
                Mode::from_raw_mode(0o666),
                rustix::fs::AtFlags::empty(),
            )?;
            Ok(StubKind::CharDevice)
        }
    }
}

/// Opens `path` (absolute, container view) inside the directory `root` as an `O_PATH`
/// descriptor, resolving symlinks and `..` as if `root` were `/`. Missing components are
/// created when `create` says so (parents as directories); each created path is appended to
/// `created` so it can be cleaned away after the step. A final symlink that dangles is
/// resolved like any other, and with `create` its target is created inside the root.
pub fn open_in_root(
    root: BorrowedFd<'_>,
    path: &str,
    create: CreateAs,
    created: &mut Vec<Stub>,
) -> io::Result<OwnedFd> {
    let mut record = |missing: &rbuild_inroot::Missing<'_>| -> io::Result<()> {
        let parent = fstat(missing.parent)?;
        let kind = if missing.last { create } else { CreateAs::Dir };
        let stub_kind = create_entry(missing, kind)?;
        created.push(Stub {
            path: format!("/{}", missing.path().to_string_lossy()),
            kind: stub_kind,
            parent_mtime: (parent.st_mtime as i64, parent.st_mtime_nsec as i64),
        });
        Ok(())
    };
    let create_fn: Option<rbuild_inroot::Create<'_>> = match create {
        CreateAs::Nothing => None,
        _ => Some(&mut record),
    };
    let resolved = rbuild_inroot::resolve(
        root,
        Path::new(path),
        rbuild_inroot::Symlinks::ResolveInRoot,
        create_fn,
    )?;
    debug_assert_ne!(resolved.file_type, FileType::Symlink);
    Ok(resolved.fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn open_dir(p: &Path) -> OwnedFd {
        std::fs::File::open(p).unwrap().into()
    }

    #[test]
    fn absolute_and_dotdot_links_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/../../..", root.join("etc/up")).unwrap();
        std::os::unix::fs::symlink("../../../../outside", root.join("etc/hosts")).unwrap();
        let root_fd = open_dir(&root);
        let mut created = Vec::new();
        let fd = open_in_root(root_fd.as_fd(), "/etc/hosts", CreateAs::File, &mut created).unwrap();
        // The dangling link was resolved inside the root and its target created there.
        assert!(root.join("outside").is_file());
        assert!(!dir.path().join("outside").exists());
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].path, "/outside");
        assert_eq!(created[0].kind, StubKind::File);
        assert_eq!(
            fstat(fd.as_fd()).unwrap().st_mode & libc::S_IFMT,
            libc::S_IFREG
        );
        let fd = open_in_root(
            root_fd.as_fd(),
            "/etc/up/etc",
            CreateAs::Nothing,
            &mut created,
        )
        .unwrap();
        let st = fstat(fd.as_fd()).unwrap();
        let etc = std::fs::metadata(root.join("etc")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(st.st_ino, etc.ino());
    }

    #[test]
    fn creates_missing_parents_as_dirs_and_records_them() {
        let dir = tempfile::tempdir().unwrap();
        let root_fd = open_dir(dir.path());
        let mut created = Vec::new();
        open_in_root(root_fd.as_fd(), "/a/b/c", CreateAs::File, &mut created).unwrap();
        let paths: Vec<_> = created.iter().map(|s| (s.path.as_str(), s.kind)).collect();
        assert_eq!(
            paths,
            vec![
                ("/a", StubKind::Dir),
                ("/a/b", StubKind::Dir),
                ("/a/b/c", StubKind::File)
            ]
        );
        let err =
            open_in_root(root_fd.as_fd(), "/a/b/c/d", CreateAs::Nothing, &mut created).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
    }
}
