//! File capabilities (`security.capability`, what `setcap` writes): only a process with
//! CAP_SETFCAP may set them, so the supervisor validates the value as the kernel would and
//! records it in the [`OwnershipTable`] for the layer writer. Other xattrs run as they are
//! (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`): `user.*` works for the owner, `trusted.*` fails
//! with EPERM as for any unprivileged process. Without this, iputils' postinst (`setcap
//! cap_net_raw+p /bin/ping`, falling back to a setuid bit when setcap fails) would give an
//! image that differs from BuildKit's.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use super::notify::translated;
use super::notify::Answer;
use super::redirect::TopLevel;
use super::resolve::{caller_bytes, caller_path, open_target, refuse_denied, stat_of};
use super::table::OwnershipTable;

/// The xattr calls the supervisor sees.
pub(crate) const CALLS: &[libc::c_long] = &[
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
];

const CAPABILITY: &[u8] = b"security.capability";

/// `struct vfs_cap_data` sizes and revisions (linux/capability.h): revision 2 (20 bytes)
/// and revision 3 (24 bytes, with the root uid of a user namespace).
const REVISION_MASK: u32 = 0xff00_0000;
const REVISION_2: u32 = 0x0200_0000;
const REVISION_3: u32 = 0x0300_0000;
const SIZE_2: usize = 20;
const SIZE_3: usize = 24;

/// One decoded xattr call.
struct XattrCall {
    dirfd: libc::c_int,
    path: Option<u64>,
    name: u64,
    /// `(value address, size, flags)` for a set, `None` for a remove.
    set: Option<(u64, usize, libc::c_int)>,
    at_flags: libc::c_int,
}

fn decode(nr: libc::c_long, a: [u64; 6]) -> Option<XattrCall> {
    let by_path = |at_flags| XattrCall {
        dirfd: libc::AT_FDCWD,
        path: Some(a[0]),
        name: a[1],
        set: None,
        at_flags,
    };
    let by_fd = XattrCall {
        dirfd: a[0] as libc::c_int,
        path: None,
        name: a[1],
        set: None,
        at_flags: libc::AT_EMPTY_PATH,
    };
    let set = Some((a[2], a[3] as usize, a[4] as libc::c_int));
    Some(match nr {
        libc::SYS_setxattr => XattrCall { set, ..by_path(0) },
        libc::SYS_lsetxattr => XattrCall {
            set,
            ..by_path(libc::AT_SYMLINK_NOFOLLOW)
        },
        libc::SYS_fsetxattr => XattrCall { set, ..by_fd },
        libc::SYS_removexattr => by_path(0),
        libc::SYS_lremovexattr => by_path(libc::AT_SYMLINK_NOFOLLOW),
        libc::SYS_fremovexattr => by_fd,
        _ => return None,
    })
}

/// Answers one xattr call: records a `security.capability` set or removal, lets the kernel
/// run any other.
pub(super) fn record_xattr(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    table: &mut OwnershipTable,
    denied: &[PathBuf],
    top: Option<&TopLevel>,
) -> Result<Answer, i32> {
    let call = decode(request.data.nr as libc::c_long, request.data.args).ok_or(libc::ENOSYS)?;
    // Other names run in the kernel with the path as given: a path to redirect is
    // refused (EXDEV) rather than set on whatever the untranslated path names.
    if caller_path(listener, request, call.name)? != CAPABILITY {
        if let (Some(top), Some(address)) = (top, call.path) {
            let path = caller_path(listener, request, address)?;
            if translated(Some(top), request.pid, call.dirfd, path.clone()) != path {
                return Err(libc::EXDEV);
            }
        }
        return Ok(Answer::Continue);
    }
    let path = match call.path {
        Some(address) => translated(
            top,
            request.pid,
            call.dirfd,
            caller_path(listener, request, address)?,
        ),
        None => Vec::new(),
    };
    let target = open_target(request.pid, call.dirfd, &path, call.at_flags)?;
    refuse_denied(&target, denied)?;
    let stat = stat_of(&target)?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        // Capabilities belong to executables; let the kernel give its answer.
        return Ok(Answer::Continue);
    }
    let key = (stat.st_dev, stat.st_ino);
    let present = matches!(table.capability(key), Some(Some(_)));
    let Some((value, size, flags)) = call.set else {
        if !present {
            return Err(libc::ENODATA);
        }
        table.set_capability(key, None);
        return Ok(Answer::Success);
    };
    if flags & !(libc::XATTR_CREATE | libc::XATTR_REPLACE) != 0 {
        return Err(libc::EINVAL);
    }
    if flags & libc::XATTR_CREATE != 0 && present {
        return Err(libc::EEXIST);
    }
    if flags & libc::XATTR_REPLACE != 0 && !present {
        return Err(libc::ENODATA);
    }
    if size != SIZE_2 && size != SIZE_3 {
        return Err(libc::EINVAL);
    }
    let bytes = caller_bytes(listener, request, value, size)?;
    let magic = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let expected = if size == SIZE_2 {
        REVISION_2
    } else {
        REVISION_3
    };
    if magic & REVISION_MASK != expected {
        return Err(libc::EINVAL);
    }
    table.set_capability(key, Some(bytes));
    Ok(Answer::Success)
}
