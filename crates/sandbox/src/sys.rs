//! Thin wrappers over the few system calls the helper needs, returning `io::Result`: on
//! rustix where it has the call, raw where it has not or where the call runs between fork
//! and exec.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use rustix::process::{Pid, Signal, WaitOptions};

/// A connected pair of `SOCK_SEQPACKET` Unix sockets (close-on-exec): one message per
/// packet, descriptors passed beside it; the sandbox's helpers and supervisors talk over them.
pub fn seqpacket_pair() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair just returned these two descriptors, owned by nobody else.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

pub fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn cpath(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// Adds `attrs` (`MOUNT_ATTR_*`) to the mount at `target` and every mount below it
/// (mount_setattr(2) with `AT_RECURSIVE`, Linux 5.12): unlike a bind remount it keeps
/// the flags already set, which a user namespace may not clear on mounts it did not make.
pub fn restrict_mounts(target: &Path, attrs: u64) -> io::Result<()> {
    let target = cpath(target)?;
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the path is NUL-terminated and the attribute struct lives across the call,
    // its size passed along; the kernel only reads both. rustix has no mount_setattr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The path by which the kernel resolves a descriptor (for mount targets).
pub fn fd_path(fd: BorrowedFd<'_>) -> std::path::PathBuf {
    format!("/proc/self/fd/{}", fd.as_raw_fd()).into()
}

/// fork(2). Only called from the helper, which is single-threaded.
pub fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: every caller is the helper (or a child it forked), a single-threaded process:
    // no other thread can hold a lock (the allocator's, stdio's) the child would inherit
    // locked, so the child may run ordinary Rust code until it execs or exits. rustix has
    // no fork: it cannot make that promise for its callers.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    }
}

/// Waits for `pid` (-1: any child), retrying on EINTR. With `WNOHANG` and no child ended,
/// returns pid 0.
pub fn waitpid(pid: libc::pid_t, flags: libc::c_int) -> io::Result<(libc::pid_t, libc::c_int)> {
    let options = WaitOptions::from_bits_retain(flags as u32);
    loop {
        let waited = if pid == -1 {
            rustix::process::wait(options)
        } else {
            // waitpid(0) would wait for the process group, which no caller wants.
            let Some(pid) = Pid::from_raw(pid) else {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            };
            rustix::process::waitpid(Some(pid), options)
        };
        match waited {
            Ok(Some((pid, status))) => return Ok((pid.as_raw_nonzero().get(), status.as_raw())),
            Ok(None) => return Ok((0, 0)),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Splits a wait status into (exit code, signal).
pub fn decode_status(status: libc::c_int) -> (Option<i32>, Option<i32>) {
    if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    }
}

/// Asks the kernel to send `sig` to this process when the thread that forked it ends.
pub fn set_pdeathsig(sig: libc::c_int) -> io::Result<()> {
    let signal =
        Signal::from_named_raw(sig).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    rustix::process::set_parent_process_death_signal(Some(signal))?;
    Ok(())
}

/// Sets or clears close-on-exec on descriptor number `fd`, which may not be open (then
/// EBADF). Async-signal-safe (called between fork and exec). Raw `fcntl`, not rustix's: a
/// `BorrowedFd` would claim the descriptor is open, which is what this finds out.
pub fn set_cloexec(fd: libc::c_int, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFD only reads the flags of a descriptor number; one that is not open
    // fails with EBADF and nothing else happens.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    let flags = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: F_SETFD changes only the close-on-exec flag of that descriptor, which no Rust
    // object's invariant depends on.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, flags) })?;
    Ok(())
}

/// Marks every descriptor from `first` on close-on-exec. Async-signal-safe (called between
/// fork and exec): `close_range(CLOSE_RANGE_CLOEXEC)` (Linux 5.11), else one `fcntl` per
/// descriptor up to the soft limit.
pub fn cloexec_from(first: libc::c_int) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC closes nothing: it only marks this
    // process's descriptors close-on-exec, which no Rust object's invariant depends on. A
    // raw syscall because rustix's wrappers are not promised async-signal-safe.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own, which lives across the call. Not
    // rustix's getrlimit: it treats the call as infallible, and a seccomp profile that
    // refuses prlimit64 would leave its result unset (here: 1024 descriptors).
    let last = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(1 << 20) as libc::c_int
    } else {
        1024
    };
    for fd in first..last {
        // SAFETY: fcntl on a descriptor that may not exist fails with EBADF and changes nothing.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

pub fn errno_name(err: &io::Error) -> String {
    let name = match err.raw_os_error() {
        Some(libc::EPERM) => "EPERM",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENOSPC) => "ENOSPC",
        Some(libc::ENOSYS) => "ENOSYS",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::EUSERS) => "EUSERS",
        Some(libc::ENODEV) => "ENODEV",
        _ => return err.to_string(),
    };
    format!("{name} ({err})")
}

/// The children of `parent` (a single-threaded helper: the chroot step's, the restricted step's): from
/// `/proc/PID/task/PID/children` where the kernel has it, else (or when that list, which
/// the kernel does not promise complete while children come and go, is empty) by reading
/// every process's parent from `/proc/*/stat`.
pub fn children_of(parent: libc::pid_t) -> Vec<libc::pid_t> {
    let listed: Vec<libc::pid_t> =
        std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .map(|list| {
                list.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
    if !listed.is_empty() {
        return listed;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // The command name may contain spaces; fields resume after the last ')'.
                    let rest = &stat[stat.rfind(')')? + 2..];
                    rest.split(' ').nth(1)?.parse::<libc::pid_t>().ok()
                })
                == Some(parent)
        })
        .collect()
}
