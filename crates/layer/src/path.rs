//! Entry-name normalisation and fd-based resolution of directories inside a root.
//!
//! Nothing here builds an absolute host path and hands it to the kernel: every step is an
//! `openat(parent_fd, one_component, O_NOFOLLOW | O_DIRECTORY)`, so a symlink planted by an
//! earlier entry (or present in the target) can never redirect a write outside the root.
//! A symlink met at a *parent* position is either resolved inside the root, like a chroot
//! would (`..` clamps at the root, absolute targets restart at the root), or refused.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{show, Error, IoContext, Result};

/// How many symlinks one resolution may follow before it is refused (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// Splits a tar entry name into its components: a leading `/` and `.` components are dropped
/// (as containerd does), and any `..` component is refused rather than clamped, because a
/// layer that names `..` is either broken or hostile.
pub(crate) fn normalize_entry_name(raw: &[u8]) -> Result<Vec<OsString>> {
    let mut components = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(Error::UnsafeEntry {
                    entry: show(raw),
                    reason: "path has a `..` component".into(),
                })
            }
            _ => components.push(OsStr::from_bytes(part).to_os_string()),
        }
    }
    Ok(components)
}

/// What to do with a symlink found where a directory is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParentSymlinks {
    /// Follow it, but inside the root (chroot semantics).
    ResolveInRoot,
    /// Fail: used where a symlink parent means the caller's view is wrong.
    Refuse,
}

/// A directory reached from the root: an `O_PATH` fd and its real path relative to the root.
pub(crate) struct ResolvedDir {
    pub fd: OwnedFd,
    pub path: PathBuf,
}

/// Opens the directory `components` below `root`, never following a symlink outside it.
/// With `create_missing`, missing directories are created with mode 0755 (as containerd does
/// for parents a layer did not list). Returns `Ok(None)` when a component is missing and
/// `create_missing` is false.
pub(crate) fn open_dir_in_root(
    root: BorrowedFd<'_>,
    components: &[OsString],
    create_missing: bool,
    symlinks: ParentSymlinks,
) -> Result<Option<ResolvedDir>> {
    let mut queue: std::collections::VecDeque<OsString> = components.iter().cloned().collect();
    let mut stack: Vec<(OsString, OwnedFd)> = Vec::new();
    let mut followed = 0usize;
    let shown = || show(join(components).as_os_str().as_bytes());

    while let Some(name) = queue.pop_front() {
        if name.is_empty() || name == "." {
            continue;
        }
        if name == ".." {
            // Only symlink targets can bring `..` here; it clamps at the root like a chroot.
            stack.pop();
            continue;
        }
        let current = stack.last().map(|(_, fd)| fd.as_fd()).unwrap_or(root);
        match open_dir_nofollow(current, &name) {
            Ok(fd) => stack.push((name, fd)),
            Err(Errno::NOENT) if create_missing => {
                match rustix::fs::mkdirat(current, &name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => {
                        return Err(e)
                            .ctx(|| format!("creating missing parent {:?} of {:?}", name, shown()))
                    }
                }
                queue.push_front(name);
            }
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                let stat = rustix::fs::statat(current, &name, AtFlags::SYMLINK_NOFOLLOW)
                    .ctx(|| format!("inspecting {:?} while resolving {:?}", name, shown()))?;
                if FileType::from_raw_mode(stat.st_mode) != FileType::Symlink {
                    return Err(Error::UnsafeEntry {
                        entry: shown(),
                        reason: format!("parent component {name:?} is not a directory"),
                    });
                }
                if symlinks == ParentSymlinks::Refuse {
                    return Err(Error::UnsafeEntry {
                        entry: shown(),
                        reason: format!("parent component {name:?} is a symlink"),
                    });
                }
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(Error::UnsafeEntry {
                        entry: shown(),
                        reason: "too many levels of symlinks".into(),
                    });
                }
                let target = rustix::fs::readlinkat(current, &name, Vec::new())
                    .ctx(|| format!("reading symlink {:?} while resolving {:?}", name, shown()))?;
                let target = target.as_bytes();
                if target.starts_with(b"/") {
                    stack.clear();
                }
                for part in target.split(|&b| b == b'/').rev() {
                    queue.push_front(OsStr::from_bytes(part).to_os_string());
                }
            }
            Err(e) => {
                return Err(e).ctx(|| format!("opening directory {:?} of {:?}", name, shown()))
            }
        }
    }

    let path: PathBuf = stack.iter().map(|(name, _)| name.as_os_str()).collect();
    let fd = match stack.pop() {
        Some((_, fd)) => fd,
        None => open_dir_nofollow(root, OsStr::new(".")).ctx(|| "reopening the root".into())?,
    };
    Ok(Some(ResolvedDir { fd, path }))
}

/// `openat(dir, name, O_PATH | O_DIRECTORY | O_NOFOLLOW)`: fails on symlinks and non-dirs.
fn open_dir_nofollow(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens a directory entry for reading its contents or changing its metadata, refusing
/// symlinks.
pub(crate) fn open_dir_for_update(
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Components joined with `/` (for messages and the record of extracted paths).
pub(crate) fn join(components: &[OsString]) -> PathBuf {
    components.iter().collect()
}

/// Removes `name` in `dir` and, for a directory, everything below it, without following
/// symlinks. A missing entry is not an error (whiteouts of absent paths are harmless).
pub(crate) fn remove_all_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    shown: &dyn Fn() -> String,
) -> Result<()> {
    let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e).ctx(|| format!("inspecting {:?} to remove it", shown())),
    };
    if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
        let child_dir = open_dir_for_update(dir, name)
            .ctx(|| format!("opening directory {:?} to remove it", shown()))?;
        for child in list_dir(child_dir.as_fd()).ctx(|| format!("listing {:?}", shown()))? {
            remove_all_at(child_dir.as_fd(), &child, shown)?;
        }
        match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e).ctx(|| format!("removing directory {:?}", shown())),
        }
    } else {
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e).ctx(|| format!("removing {:?}", shown())),
        }
    }
}

/// The names in a directory (without `.` and `..`), sorted so that work is deterministic.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> rustix::io::Result<Vec<OsString>> {
    let mut reader = rustix::fs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_strips_leading_slash_and_dots() {
        let got = normalize_entry_name(b"/./usr//bin/./ls").unwrap();
        assert_eq!(got, vec![OsString::from("usr"), "bin".into(), "ls".into()]);
        assert!(normalize_entry_name(b"./").unwrap().is_empty());
    }

    #[test]
    fn normalize_refuses_dotdot_anywhere() {
        for bad in [&b"../../etc/passwd"[..], b"/abs/../../x", b"a/.."] {
            let err = normalize_entry_name(bad).unwrap_err();
            assert!(err.to_string().contains("`..`"), "{err}");
        }
    }
}
