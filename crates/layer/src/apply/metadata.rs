//! Setting owner, mode, xattrs and times on extracted entries. Order matters: chown first
//! (it clears setuid bits and `security.capability`), then mode, then xattrs, then times.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::fs::{AtFlags, Mode, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::apply::options::{ApplyStats, Ownership};
use crate::entry::EntryInfo;
use crate::error::{Error, IoContext, Result};

/// The host owner for an entry, or `None` when ownership is ignored.
pub(crate) fn host_owner(
    ownership: &Ownership,
    info: &EntryInfo,
    shown: &str,
) -> Result<Option<(u32, u32)>> {
    let unmapped = |kind, id| Error::UnmappedId {
        entry: shown.to_string(),
        kind,
        id,
    };
    match ownership {
        Ownership::Ignore => Ok(None),
        Ownership::Preserve => {
            let uid = u32::try_from(info.uid).map_err(|_| unmapped("uid", info.uid))?;
            let gid = u32::try_from(info.gid).map_err(|_| unmapped("gid", info.gid))?;
            Ok(Some((uid, gid)))
        }
        Ownership::Map(map) => {
            let uid = map
                .host_uid(info.uid)
                .ok_or_else(|| unmapped("uid", info.uid))?;
            let gid = map
                .host_gid(info.gid)
                .ok_or_else(|| unmapped("gid", info.gid))?;
            Ok(Some((uid, gid)))
        }
    }
}

fn timestamps(info: &EntryInfo) -> Timestamps {
    let at = Timespec {
        tv_sec: info.mtime,
        tv_nsec: info.mtime_nanos.into(),
    };
    Timestamps {
        last_access: at,
        last_modification: at,
    }
}

fn owner_ids(owner: (u32, u32)) -> (rustix::fs::Uid, rustix::fs::Gid) {
    (
        rustix::fs::Uid::from_raw(owner.0),
        rustix::fs::Gid::from_raw(owner.1),
    )
}

/// Metadata for an entry open as a readable/writable fd (regular files, directories).
pub(crate) fn set_on_fd(
    fd: BorrowedFd<'_>,
    info: &EntryInfo,
    owner: Option<(u32, u32)>,
    shown: &str,
    stats: &mut ApplyStats,
) -> Result<()> {
    if let Some(owner) = owner {
        let (uid, gid) = owner_ids(owner);
        rustix::fs::fchown(fd, Some(uid), Some(gid)).ctx(|| format!("chown of {shown:?}"))?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(info.mode)).ctx(|| format!("chmod of {shown:?}"))?;
    for (name, value) in &info.xattrs {
        let result = rustix::fs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty());
        xattr_result(result, name, shown, stats)?;
    }
    rustix::fs::futimens(fd, &timestamps(info)).ctx(|| format!("setting mtime of {shown:?}"))
}

/// Metadata for an entry that must not be opened (symlinks, device nodes, fifos): set
/// through its parent directory fd without following it.
pub(crate) fn set_at(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    info: &EntryInfo,
    owner: Option<(u32, u32)>,
    is_symlink: bool,
    shown: &str,
    stats: &mut ApplyStats,
) -> Result<()> {
    if let Some(owner) = owner {
        let (uid, gid) = owner_ids(owner);
        rustix::fs::chownat(
            parent,
            name,
            Some(uid),
            Some(gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .ctx(|| format!("chown of {shown:?}"))?;
    }
    if !is_symlink {
        // Not a symlink (we just created it with mknod), so following is harmless; Linux has
        // no fchmodat(AT_SYMLINK_NOFOLLOW).
        rustix::fs::chmodat(
            parent,
            name,
            Mode::from_raw_mode(info.mode),
            AtFlags::empty(),
        )
        .ctx(|| format!("chmod of {shown:?}"))?;
    }
    if !info.xattrs.is_empty() {
        // There is no fd-based lsetxattr; the parent's /proc fd link pins the directory we
        // resolved safely, and lsetxattr does not follow the last component.
        let via_proc = std::path::Path::new("/proc/self/fd")
            .join(parent.as_raw_fd().to_string())
            .join(name);
        for (key, value) in &info.xattrs {
            let result = rustix::fs::lsetxattr(&via_proc, key.as_str(), value, XattrFlags::empty());
            xattr_result(result, key, shown, stats)?;
        }
    }
    rustix::fs::utimensat(parent, name, &timestamps(info), AtFlags::SYMLINK_NOFOLLOW)
        .ctx(|| format!("setting mtime of {shown:?}"))
}

/// An xattr the filesystem or our privileges cannot take is a counted warning (trusted.* and
/// security.* need CAP_SYS_ADMIN / CAP_SETFCAP; user.* is refused on symlinks and some
/// filesystems); anything else is an error.
fn xattr_result(
    result: rustix::io::Result<()>,
    name: &str,
    shown: &str,
    stats: &mut ApplyStats,
) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e @ (Errno::PERM | Errno::ACCESS | Errno::NOTSUP | Errno::NOENT)) => {
            stats.skipped_xattrs += 1;
            stats.warn(format!("xattr {name} not set on {shown:?}: {e}"));
            Ok(())
        }
        Err(e) => Err(e).ctx(|| format!("setting xattr {name} on {shown:?}")),
    }
}
