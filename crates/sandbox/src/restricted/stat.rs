//! The `stat` family as root sees it: the supervisor performs the call on the step's
//! behalf (the file resolved in the caller's view through /proc) and writes the result into
//! the caller's memory with the owner the image will have: the one recorded in the
//! [`OwnershipTable`], else the disk's, with the build user (this supervisor's own ids)
//! standing for root, as in the layer writer. fakeroot does the same; without it a script
//! that copies an owner it read (ca-certificates' postinst: `chgrp $(stat -L -c %g
//! /usr/local) …`) copies the build user's.
//!
//! Whatever the supervisor cannot do exactly as the kernel would (a missing file, a bad
//! flag, a file in /proc, a path through a magic link, an unreadable buffer) is answered
//! `SECCOMP_USER_NOTIF_FLAG_CONTINUE`: the kernel runs the call itself and gives its own
//! result or errno, with the disk's owner. So an error is never the supervisor's guess.
//!
//! Time of check to time of use: the path is read from the caller's memory, then resolved
//! and stat'ed by the supervisor, then the result written back. Another thread of the
//! caller may change the path's bytes, or the file be renamed, in between: the answer is
//! then that of one of the orders the calls could have run in, as a kernel stat racing
//! with a rename. The result is written only after `SECCOMP_IOCTL_NOTIF_ID_VALID` says the
//! call is still pending, so the pid still names the caller, blocked in its call (a pid
//! recycled between that check and the write would need the caller killed in that window
//! and the pid reused at once; the supervisor runs as the step's own uid, so such a write
//! could reach nothing the step could not).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::creds::write_to_caller;
use super::notify::Answer;
use super::resolve::{caller_path, open_base};
use super::table::{Owner, OwnershipTable};

/// The calls answered here.
#[cfg(target_arch = "x86_64")]
pub(crate) const CALLS: &[libc::c_long] = &[
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
];
#[cfg(target_arch = "aarch64")]
pub(crate) const CALLS: &[libc::c_long] = &[libc::SYS_fstat, libc::SYS_newfstatat, libc::SYS_statx];

/// `statfs.f_type` of procfs: its files are per process (`/proc/self`), so the
/// supervisor's view of them is not the caller's.
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// The kernel's `struct statx` is 256 bytes; the one written back must be the same.
const _: () = assert!(std::mem::size_of::<libc::statx>() == 256);

/// What one call asks, in `fstatat`/`statx` terms.
struct StatCall {
    dirfd: libc::c_int,
    /// The path's address in the caller's memory; `None` for `fstat`.
    path: Option<u64>,
    flags: libc::c_int,
    /// `Some(mask)` for `statx`, which writes a `struct statx`.
    statx_mask: Option<u32>,
    buffer: u64,
}

fn decode(nr: libc::c_long, a: [u64; 6]) -> Option<StatCall> {
    let call = match nr {
        libc::SYS_fstat => StatCall {
            dirfd: a[0] as libc::c_int,
            path: None,
            flags: libc::AT_EMPTY_PATH,
            statx_mask: None,
            buffer: a[1],
        },
        libc::SYS_newfstatat => StatCall {
            dirfd: a[0] as libc::c_int,
            path: Some(a[1]),
            flags: a[3] as libc::c_int,
            statx_mask: None,
            buffer: a[2],
        },
        libc::SYS_statx => StatCall {
            dirfd: a[0] as libc::c_int,
            path: Some(a[1]),
            flags: a[2] as libc::c_int,
            statx_mask: Some(a[3] as u32),
            buffer: a[4],
        },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_stat | libc::SYS_lstat => StatCall {
            dirfd: libc::AT_FDCWD,
            path: Some(a[0]),
            flags: if nr == libc::SYS_lstat {
                libc::AT_SYMLINK_NOFOLLOW
            } else {
                0
            },
            statx_mask: None,
            buffer: a[1],
        },
        _ => return None,
    };
    Some(call)
}

/// The owner a step sees for a file the disk gives `disk` (uid, gid): the recorded one,
/// else the disk's with the build user's ids (`own`) shown as root's.
pub(super) fn shown_owner(recorded: Option<Owner>, disk: (u32, u32), own: (u32, u32)) -> Owner {
    recorded.unwrap_or(Owner {
        uid: if disk.0 == own.0 { 0 } else { disk.0 },
        gid: if disk.1 == own.1 { 0 } else { disk.1 },
    })
}

/// Answers one `stat`-family call: performed here and written into the caller's memory
/// with the owner root sees, or left to the kernel (see the module's comment).
pub(super) fn answer_stat(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    table: &OwnershipTable,
) -> Answer {
    match faked(listener, request, table) {
        Some(()) => Answer::Success,
        None => Answer::Continue,
    }
}

fn faked(listener: &OwnedFd, request: &libc::seccomp_notif, table: &OwnershipTable) -> Option<()> {
    let call = decode(request.data.nr as libc::c_long, request.data.args)?;
    let known = libc::AT_SYMLINK_NOFOLLOW
        | libc::AT_EMPTY_PATH
        | libc::AT_NO_AUTOMOUNT
        | libc::AT_STATX_SYNC_TYPE;
    if call.flags & !known != 0 {
        return None;
    }
    let path = match call.path {
        // A NULL path is an empty one with AT_EMPTY_PATH (Linux 6.11).
        Some(0) | None => Vec::new(),
        Some(address) => caller_path(listener, request, address).ok()?,
    };
    let target = open_target(request.pid, call.dirfd, &path, call.flags)?;
    if on_procfs(&target)? {
        return None;
    }
    // SAFETY: geteuid and getegid take no arguments and cannot fail.
    let own = unsafe { (libc::geteuid(), libc::getegid()) };
    match call.statx_mask {
        None => {
            // SAFETY: an all-zero stat is valid; fstat fills it.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: a valid descriptor (O_PATH: fstat is allowed on it) and buffer.
            if unsafe { libc::fstat(target.as_raw_fd(), &mut st) } < 0 {
                return None;
            }
            let owner = shown_owner(table.get(st.st_dev, st.st_ino), (st.st_uid, st.st_gid), own);
            st.st_uid = owner.uid;
            st.st_gid = owner.gid;
            // SAFETY: `st` is a plain C struct of that many initialized bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&st as *const libc::stat).cast::<u8>(),
                    std::mem::size_of::<libc::stat>(),
                )
            };
            write_to_caller(listener, request, call.buffer, bytes).ok()
        }
        Some(mask) => {
            // SAFETY: an all-zero statx is valid; statx fills it.
            let mut stx: libc::statx = unsafe { std::mem::zeroed() };
            let sync = call.flags & libc::AT_STATX_SYNC_TYPE;
            // SAFETY: a valid descriptor, an empty C string with AT_EMPTY_PATH, a valid
            // buffer.
            if unsafe {
                libc::statx(
                    target.as_raw_fd(),
                    c"".as_ptr(),
                    libc::AT_EMPTY_PATH | sync,
                    mask,
                    &mut stx,
                )
            } < 0
            {
                return None;
            }
            let dev = libc::makedev(stx.stx_dev_major, stx.stx_dev_minor);
            let owner = shown_owner(table.get(dev, stx.stx_ino), (stx.stx_uid, stx.stx_gid), own);
            stx.stx_uid = owner.uid;
            stx.stx_gid = owner.gid;
            // SAFETY: `stx` is a plain C struct of that many initialized bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&stx as *const libc::statx).cast::<u8>(),
                    std::mem::size_of::<libc::statx>(),
                )
            };
            write_to_caller(listener, request, call.buffer, bytes).ok()
        }
    }
}

/// Opens (`O_PATH`) the file the call names in the caller's view: the descriptor or cwd
/// itself for an empty path with `AT_EMPTY_PATH`, else the path from the caller's root,
/// cwd or descriptor. No magic link (`/proc/PID/fd/N`, `/proc/self/exe`) is followed on the
/// way: through /proc the supervisor would reach its own files, not the caller's.
fn open_target(pid: u32, dirfd: libc::c_int, path: &[u8], flags: libc::c_int) -> Option<OwnedFd> {
    if path.is_empty() {
        if flags & libc::AT_EMPTY_PATH == 0 {
            return None;
        }
        let own = if dirfd == libc::AT_FDCWD {
            format!("/proc/{pid}/cwd")
        } else if dirfd < 0 {
            return None;
        } else {
            format!("/proc/{pid}/fd/{dirfd}")
        };
        let own = CString::new(own).ok()?;
        // SAFETY: a valid C string; the descriptor is owned right away.
        return owned(unsafe { libc::open(own.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) });
    }
    let (base, relative) = open_base(pid, dirfd, path).ok()?;
    if relative.as_bytes().is_empty() {
        return Some(base);
    }
    let mut open_flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
        open_flags |= libc::O_NOFOLLOW as u64;
    }
    let how = OpenHow {
        flags: open_flags,
        mode: 0,
        resolve: libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a valid directory descriptor, C string and open_how of the
    // size given; the result is a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            base.as_raw_fd(),
            relative.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    owned(fd as libc::c_int)
}

/// The kernel's `struct open_how` (libc's is non-exhaustive: it cannot be built).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn owned(fd: libc::c_int) -> Option<OwnedFd> {
    // SAFETY: a descriptor just returned by the kernel, owned here only.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `fd` is a file of procfs; `None` if that cannot be told.
fn on_procfs(fd: &OwnedFd) -> Option<bool> {
    // SAFETY: an all-zero statfs is valid; fstatfs fills it.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and buffer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut fs) } < 0 {
        return None;
    }
    Some(fs.f_type as i64 == PROC_SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_owner_wins_and_the_build_users_ids_show_as_root() {
        let own = (1000, 1000);
        let recorded = Some(Owner { uid: 7, gid: 8 });
        assert_eq!(
            shown_owner(recorded, (1000, 1000), own),
            Owner { uid: 7, gid: 8 }
        );
        assert_eq!(
            shown_owner(None, (1000, 1000), own),
            Owner { uid: 0, gid: 0 }
        );
        assert_eq!(shown_owner(None, (1000, 0), own), Owner { uid: 0, gid: 0 });
        assert_eq!(
            shown_owner(None, (100, 65534), own),
            Owner {
                uid: 100,
                gid: 65534
            },
            "another user's file keeps its ids"
        );
    }

    #[test]
    fn every_stat_call_decodes_its_buffer_and_flags() {
        let args = [
            3,
            0x1000,
            0x2000,
            libc::AT_SYMLINK_NOFOLLOW as u64,
            0x7ff,
            0x3000,
        ];
        let at = decode(libc::SYS_newfstatat, args).unwrap();
        assert_eq!((at.dirfd, at.path, at.buffer), (3, Some(0x1000), 0x2000));
        assert_eq!(at.flags, libc::AT_SYMLINK_NOFOLLOW);
        assert!(at.statx_mask.is_none());
        // statx(dirfd, path, flags, mask, buffer)
        let statx_args = [4, 0x1000, libc::AT_EMPTY_PATH as u64, 0x7ff, 0x3000, 0];
        let x = decode(libc::SYS_statx, statx_args).unwrap();
        assert_eq!(
            (x.dirfd, x.path, x.flags),
            (4, Some(0x1000), libc::AT_EMPTY_PATH)
        );
        assert_eq!((x.statx_mask, x.buffer), (Some(0x7ff), 0x3000));
        let f = decode(libc::SYS_fstat, args).unwrap();
        assert_eq!((f.dirfd, f.path, f.buffer), (3, None, 0x1000));
        assert_eq!(f.flags, libc::AT_EMPTY_PATH);
        assert!(decode(libc::SYS_fchown, args).is_none());
    }
}
