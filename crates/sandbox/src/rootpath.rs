//! Resolving container paths inside a rootfs with chroot semantics: symlinks (absolute or
//! relative) and `..` never leave the root.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use crate::spec::{Stub, StubKind};

/// Symlinks followed before giving up, as the kernel does (ELOOP).
const MAX_SYMLINKS: usize = 40;

fn split(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// The host path of `rel` inside `root` with every symlink resolved inside the root, or
/// `None` when a component does not exist. For reading (e.g. /etc/passwd): a path can be
/// swapped for a symlink between this call and its use, so writes go through descriptors
/// ([`open_in_root`]). The resolution is [`open_in_root`]'s, one component at a time
/// through descriptors, never following a symlink outside the root.
pub fn host_path_in_root(root: &Path, rel: &str) -> io::Result<Option<PathBuf>> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let root_fd: OwnedFd = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(root)
    {
        Ok(file) => file.into(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match resolve_in_root(root_fd.as_fd(), rel, CreateAs::Nothing, &mut Vec::new()) {
        Ok((_, names)) => Ok(Some(
            std::iter::once(root.as_os_str().to_os_string())
                .chain(names)
                .collect(),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What to create when the last component of a path is missing (missing parents become dirs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateAs {
    Nothing,
    Dir,
    File,
    /// A character device with this `dev_t` (chroot mode's /dev nodes).
    CharDevice(libc::dev_t),
}

fn cstring(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn openat_path(dir: BorrowedFd<'_>, name: &CString) -> io::Result<OwnedFd> {
    // SAFETY: `dir` is an open descriptor and `name` a NUL-terminated string, both alive
    // across the call; openat only reads them.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by openat and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: `stat` is plain integers, for which all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let empty = c"";
    // SAFETY: an open descriptor, an empty NUL-terminated path (AT_EMPTY_PATH: the
    // descriptor itself) and a struct we own for the kernel to fill, all alive across the call.
    cvt(unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            empty.as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<OsString> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    let empty = c"";
    // SAFETY: an open descriptor, an empty NUL-terminated path (the descriptor's own link)
    // and a buffer of `buf.len()` bytes we own; the kernel writes at most that many.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            empty.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(OsString::from_vec(buf))
}

fn create_entry(dir: BorrowedFd<'_>, name: &CString, kind: CreateAs) -> io::Result<StubKind> {
    match kind {
        CreateAs::Dir | CreateAs::Nothing => {
            // SAFETY: an open directory descriptor and a NUL-terminated name, alive across
            // the call.
            cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) })?;
            Ok(StubKind::Dir)
        }
        CreateAs::File => {
            // SAFETY: an open directory descriptor and a NUL-terminated name, alive across
            // the call.
            let fd = cvt(unsafe {
                libc::openat(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o644,
                )
            })?;
            // SAFETY: `fd` was just returned by openat and is owned by nothing else.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            Ok(StubKind::File)
        }
        CreateAs::CharDevice(dev) => {
            // SAFETY: an open directory descriptor and a NUL-terminated name, alive across
            // the call.
            cvt(unsafe {
                libc::mknodat(dir.as_raw_fd(), name.as_ptr(), libc::S_IFCHR | 0o666, dev)
            })?;
            // mknod is subject to the umask; device nodes must be usable by everyone.
            // SAFETY: as for mknodat above.
            cvt(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), 0o666, 0) })?;
            Ok(StubKind::CharDevice)
        }
    }
}

/// Opens `path` (absolute, container view) inside the directory `root` as an `O_PATH`
/// descriptor, resolving symlinks and `..` as if `root` were `/`. Missing components are
/// created when `create` says so (parents as directories); each created path is appended to
/// `created` so it can be cleaned away after the step. The final component is never followed
/// if it is a symlink that dangles and `create` is set: it is resolved like any other.
pub fn open_in_root(
    root: BorrowedFd<'_>,
    path: &str,
    create: CreateAs,
    created: &mut Vec<Stub>,
) -> io::Result<OwnedFd> {
    resolve_in_root(root, path, create, created).map(|(fd, _)| fd)
}

/// [`open_in_root`], also returning the names of the resolved path below the root (no
/// symlink among them).
fn resolve_in_root(
    root: BorrowedFd<'_>,
    path: &str,
    create: CreateAs,
    created: &mut Vec<Stub>,
) -> io::Result<(OwnedFd, Vec<OsString>)> {
    let mut pending = split(Path::new(path));
    // The chain of open directories from the root down; `..` pops it, never past the root.
    let mut chain: Vec<(OsString, OwnedFd)> = Vec::new();
    let root_dup = root.try_clone_to_owned()?;
    let mut links = 0;
    while let Some(comp) = pending.pop_front() {
        if comp == ".." {
            chain.pop();
            continue;
        }
        let parent = chain.last().map(|(_, fd)| fd).unwrap_or(&root_dup);
        let name = cstring(&comp)?;
        let fd = match openat_path(parent.as_fd_ref(), &name) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create != CreateAs::Nothing => {
                let parent_st = fstat(parent.as_fd_ref())?;
                let kind = if pending.is_empty() {
                    create
                } else {
                    CreateAs::Dir
                };
                let stub_kind = create_entry(parent.as_fd_ref(), &name, kind)?;
                let mut container_path = String::new();
                for (n, _) in &chain {
                    container_path.push('/');
                    container_path.push_str(&n.to_string_lossy());
                }
                container_path.push('/');
                container_path.push_str(&comp.to_string_lossy());
                created.push(Stub {
                    path: container_path,
                    kind: stub_kind,
                    parent_mtime: (parent_st.st_mtime, parent_st.st_mtime_nsec),
                });
                openat_path(parent.as_fd_ref(), &name)?
            }
            Err(e) => return Err(e),
        };
        let st = fstat(fd.as_fd_ref())?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFLNK => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = readlink_fd(fd.as_fd_ref())?;
                if Path::new(&target).is_absolute() {
                    chain.clear();
                }
                for (i, c) in split(Path::new(&target)).into_iter().enumerate() {
                    pending.insert(i, c);
                }
            }
            libc::S_IFDIR => chain.push((comp, fd)),
            _ if pending.is_empty() => {
                let mut names: Vec<OsString> = chain.into_iter().map(|(n, _)| n).collect();
                names.push(comp);
                return Ok((fd, names));
            }
            _ => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        }
    }
    let fd = match chain.last() {
        Some((_, fd)) => fd.try_clone()?,
        None => root_dup,
    };
    Ok((fd, chain.into_iter().map(|(n, _)| n).collect()))
}

/// Lets `OwnedFd` and `BorrowedFd` be used alike above.
trait AsFdRef {
    fn as_fd_ref(&self) -> BorrowedFd<'_>;
}

impl AsFdRef for OwnedFd {
    fn as_fd_ref(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.as_fd()
    }
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

    #[test]
    fn host_path_resolution_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/real"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/real", dir.path().join("etc/passwd")).unwrap();
        let p = host_path_in_root(dir.path(), "etc/passwd")
            .unwrap()
            .unwrap();
        assert_eq!(p, dir.path().join("etc/real"));
        assert_eq!(
            host_path_in_root(dir.path(), "../../etc/nothing").unwrap(),
            None
        );
    }

    #[test]
    fn host_path_resolution_of_relative_links_out_of_the_root_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(dir.path().join("secret"), "host").unwrap();
        std::os::unix::fs::symlink("../../../secret", root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../..", root.join("etc/up")).unwrap();
        // The host's file of that name is never the answer.
        assert_eq!(host_path_in_root(&root, "/etc/passwd").unwrap(), None);
        std::fs::write(root.join("secret"), "image").unwrap();
        assert_eq!(
            host_path_in_root(&root, "/etc/passwd").unwrap(),
            Some(root.join("secret"))
        );
        assert_eq!(
            host_path_in_root(&root, "/etc/up/etc").unwrap(),
            Some(root.join("etc"))
        );
        assert_eq!(host_path_in_root(&root, "/").unwrap(), Some(root.clone()));
        let err = host_path_in_root(&root, "/secret/x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
        assert_eq!(
            host_path_in_root(&dir.path().join("gone"), "/etc").unwrap(),
            None
        );
    }
}
