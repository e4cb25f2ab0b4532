//! Entry-name normalisation and fd-based resolution of directories inside a root.
//!
//! Nothing here builds an absolute host path and hands it to the kernel: directories are
//! resolved by the one in-root resolver (`rbuild-inroot`), one `openat(parent_fd, component,
//! O_NOFOLLOW)` at a time, so a symlink planted by an earlier entry (or present in the
//! target) can never redirect a write outside the root. A symlink met at a *parent* position
//! is either resolved inside the root, like a chroot would (`..` clamps at the root,
//! absolute targets restart at the root), or refused.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{show, Error, IoContext, Result};

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

/// Opens the directory `components` below `root` with the one in-root resolver
/// (`rbuild-inroot`), never following a symlink outside it. With `create_missing`, missing
/// directories are created with mode 0755 (as containerd does for parents a layer did not
/// list). Returns `Ok(None)` when a component is missing and `create_missing` is false.
pub(crate) fn open_dir_in_root(
    root: BorrowedFd<'_>,
    components: &[OsString],
    create_missing: bool,
    symlinks: ParentSymlinks,
) -> Result<Option<ResolvedDir>> {
    let shown = || show(join(components).as_os_str().as_bytes());
    let mut mkdir = |missing: &rbuild_inroot::Missing<'_>| -> std::io::Result<()> {
        Ok(rustix::fs::mkdirat(
            missing.parent,
            missing.name,
            Mode::from_raw_mode(0o755),
        )?)
    };
    let create: Option<rbuild_inroot::Create<'_>> = if create_missing {
        Some(&mut mkdir)
    } else {
        None
    };
    let symlinks = match symlinks {
        ParentSymlinks::ResolveInRoot => rbuild_inroot::Symlinks::ResolveInRoot,
        ParentSymlinks::Refuse => rbuild_inroot::Symlinks::Refuse,
    };
    let resolved = match rbuild_inroot::resolve(root, &join(components), symlinks, create) {
        Ok(resolved) => resolved,
        Err(rbuild_inroot::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(resolve_error(e, &shown())),
    };
    if resolved.file_type != FileType::Directory {
        return Err(not_a_directory(resolved.path.file_name(), shown()));
    }
    Ok(Some(ResolvedDir {
        fd: resolved.fd,
        path: resolved.path,
    }))
}

fn not_a_directory(name: Option<&OsStr>, entry: String) -> Error {
    Error::UnsafeEntry {
        entry,
        reason: format!(
            "parent component {:?} is not a directory",
            name.unwrap_or_default()
        ),
    }
}

/// The resolver's error as this crate has always told it, naming the entry.
fn resolve_error(e: rbuild_inroot::Error, shown: &str) -> Error {
    let name = e.path().file_name().unwrap_or_default().to_os_string();
    let refused = |reason: String| Error::UnsafeEntry {
        entry: shown.to_string(),
        reason,
    };
    match e {
        rbuild_inroot::Error::NotADirectory { .. } => not_a_directory(Some(&name), shown.into()),
        rbuild_inroot::Error::Symlink { .. } => {
            refused(format!("parent component {name:?} is a symlink"))
        }
        rbuild_inroot::Error::TooManySymlinks { .. } => {
            refused("too many levels of symlinks".into())
        }
        rbuild_inroot::Error::NotFound { .. } => refused(format!("{name:?} vanished")),
        rbuild_inroot::Error::Io { action, source, .. } => Error::Io {
            context: match action {
                rbuild_inroot::Action::Creating => {
                    format!("creating missing parent {name:?} of {shown:?}")
                }
                rbuild_inroot::Action::ReadingLink => {
                    format!("reading symlink {name:?} while resolving {shown:?}")
                }
                rbuild_inroot::Action::Inspecting => {
                    format!("inspecting {name:?} while resolving {shown:?}")
                }
                rbuild_inroot::Action::Opening => {
                    format!("opening directory {name:?} of {shown:?}")
                }
            },
            source,
        },
    }
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
    Ok(sorted_dir_entries(dir)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// The names in the directory open at `dir` (without `.` and `..`), sorted by their bytes
/// (the order of `Path` components), each with the type its entry reports (which may be
/// `Unknown` on file systems that do not fill it in). One read of the directory, no call
/// per entry: what a walk of many small files needs.
pub fn sorted_dir_entries(
    dir: BorrowedFd<'_>,
) -> rustix::io::Result<Vec<(OsString, rustix::fs::FileType)>> {
    let mut reader = rustix::fs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push((OsStr::from_bytes(name).to_os_string(), entry.file_type()));
        }
    }
    names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
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
