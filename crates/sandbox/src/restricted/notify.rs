//! Answers one notification of the restricted filter: resolves the file a chown-family or
//! mknod call names in the caller's view and records what it asks for.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use super::table::{Device, DeviceKind, Owner, OwnershipTable};

/// Receives one notification and answers it; errors only when the listener itself fails.
pub(super) fn answer_one(listener: &OwnedFd, table: &mut OwnershipTable) -> io::Result<()> {
    // SAFETY: an all-zero seccomp_notif is what the kernel requires for RECV.
    let mut request: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: RECV fills `request`, a seccomp_notif.
    if unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut request,
        )
    } < 0
    {
        let err = io::Error::last_os_error();
        // ENOENT: the caller died (or was interrupted) before we received it.
        return match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::EINTR) => Ok(()),
            _ => Err(err),
        };
    }
    let nr = request.data.nr as libc::c_long;
    let answer = if super::filter::MKNOD.contains(&nr) {
        record_mknod(listener, &request, table)
    } else {
        record_chown(listener, &request, table).map(|()| Answer::Success)
    };
    let (error, flags) = match answer {
        Ok(Answer::Success) => (0, 0),
        // The kernel runs the call itself, as if unfiltered.
        Ok(Answer::Continue) => (0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
        Err(errno) => (-errno, 0),
    };
    let response = libc::seccomp_notif_resp {
        id: request.id,
        val: 0,
        error,
        flags,
    };
    // SAFETY: SEND reads `response`, a seccomp_notif_resp.
    if unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &response,
        )
    } < 0
    {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOENT) {
            return Err(err);
        }
    }
    Ok(())
}

/// How the supervisor answers a call it does not fail.
enum Answer {
    /// Success without the call having run.
    Success,
    /// Let the kernel run it (nothing to emulate: a FIFO, a socket, a regular file).
    Continue,
}

/// The arguments of a chown-family call, as `fchownat` takes them.
struct ChownCall {
    dirfd: libc::c_int,
    path: Option<u64>,
    uid: u32,
    gid: u32,
    flags: libc::c_int,
}

fn decode(nr: libc::c_long, a: [u64; 6]) -> Option<ChownCall> {
    // Ids are 32-bit; -1 (as u32: u32::MAX) means "unchanged", as in the kernel.
    let id = |v: u64| v as u32;
    let call = match nr {
        libc::SYS_fchownat => ChownCall {
            dirfd: a[0] as libc::c_int,
            path: Some(a[1]),
            uid: id(a[2]),
            gid: id(a[3]),
            flags: a[4] as libc::c_int,
        },
        libc::SYS_fchown => ChownCall {
            dirfd: a[0] as libc::c_int,
            path: None,
            uid: id(a[1]),
            gid: id(a[2]),
            flags: libc::AT_EMPTY_PATH,
        },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_chown | libc::SYS_lchown => ChownCall {
            dirfd: libc::AT_FDCWD,
            path: Some(a[0]),
            uid: id(a[1]),
            gid: id(a[2]),
            flags: if nr == libc::SYS_lchown {
                libc::AT_SYMLINK_NOFOLLOW
            } else {
                0
            },
        },
        _ => return None,
    };
    Some(call)
}

/// Resolves the file a chown-family call names, in the caller's view (its root, cwd and
/// descriptors through /proc), and records the owner it asks for. Errors are the errno the
/// real call would have given.
fn record_chown(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    table: &mut OwnershipTable,
) -> Result<(), i32> {
    let call = decode(request.data.nr as libc::c_long, request.data.args).ok_or(libc::ENOSYS)?;
    if call.flags & !(libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH) != 0 {
        return Err(libc::EINVAL);
    }
    let pid = request.pid;
    let path = match call.path {
        Some(address) => caller_path(listener, request, address)?,
        None => Vec::new(),
    };
    let stat = stat_target(pid, call.dirfd, &path, call.flags)?;
    let current = table.get(stat.st_dev, stat.st_ino).unwrap_or(Owner {
        uid: stat.st_uid,
        gid: stat.st_gid,
    });
    let owner = Owner {
        uid: if call.uid == u32::MAX {
            current.uid
        } else {
            call.uid
        },
        gid: if call.gid == u32::MAX {
            current.gid
        } else {
            call.gid
        },
    };
    table.set_owner((stat.st_dev, stat.st_ino), owner);
    Ok(())
}

/// Reads the path argument at `address` in the caller's memory.
fn caller_path(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    address: u64,
) -> Result<Vec<u8>, i32> {
    let mem = std::fs::File::open(format!("/proc/{}/mem", request.pid)).map_err(errno_of)?;
    // The pid named the caller when the notification arrived; checking the id after
    // opening proves it was not recycled in between.
    // SAFETY: ID_VALID reads a u64.
    if unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &request.id,
        )
    } < 0
    {
        return Err(libc::ENOENT);
    }
    read_c_string(&mem, address)
}

/// `mknod`/`mknodat` of a character or block device: an unprivileged user cannot create
/// one, so the supervisor creates an empty regular file in its place (owner-writable) and
/// records the device; other kinds run as they are.
fn record_mknod(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    table: &mut OwnershipTable,
) -> Result<Answer, i32> {
    let a = request.data.args;
    let nr = request.data.nr as libc::c_long;
    let (dirfd, address, mode, dev) = if nr == libc::SYS_mknodat {
        (a[0] as libc::c_int, a[1], a[2] as u32, a[3] as u32)
    } else {
        (libc::AT_FDCWD, a[0], a[1] as u32, a[2] as u32)
    };
    let kind = match mode & libc::S_IFMT {
        libc::S_IFCHR => DeviceKind::Char,
        libc::S_IFBLK => DeviceKind::Block,
        _ => return Ok(Answer::Continue),
    };
    let path = caller_path(listener, request, address)?;
    if path.is_empty() {
        return Err(libc::ENOENT);
    }
    let (base, relative) = open_base(request.pid, dirfd, &path)?;
    if relative.as_bytes().is_empty() {
        // The caller named its root directory.
        return Err(libc::EEXIST);
    }
    let umask = caller_umask(request.pid).unwrap_or(0o022);
    // SAFETY: valid descriptor and C string; a regular file needs no device number.
    if unsafe {
        libc::mknodat(
            base.as_raw_fd(),
            relative.as_ptr(),
            libc::S_IFREG | 0o600,
            0,
        )
    } < 0
    {
        return Err(errno_of(io::Error::last_os_error()));
    }
    // SAFETY: an all-zero stat is valid; fstatat fills it.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, C string and stat buffer.
    if unsafe {
        libc::fstatat(
            base.as_raw_fd(),
            relative.as_ptr(),
            &mut stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } < 0
    {
        return Err(errno_of(io::Error::last_os_error()));
    }
    // The kernel's 32-bit device number encoding (new_decode_dev).
    let device = Device {
        kind,
        major: (dev & 0xfff00) >> 8,
        minor: (dev & 0xff) | ((dev >> 12) & 0xfff00),
        mode: mode & 0o7777 & !umask,
    };
    table.set_device((stat.st_dev, stat.st_ino), device);
    Ok(Answer::Success)
}

/// The caller's umask, from /proc/PID/status.
pub(super) fn caller_umask(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

fn errno_of(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Reads a NUL-terminated string from the caller's memory, a page at a time (a string may
/// end just before an unmapped page).
fn read_c_string(mem: &std::fs::File, address: u64) -> Result<Vec<u8>, i32> {
    const CHUNK: u64 = 4096;
    let limit = libc::PATH_MAX as usize;
    let mut out = Vec::new();
    let mut at = address;
    while out.len() < limit {
        let mut buf = vec![0u8; (CHUNK - at % CHUNK) as usize];
        let n = mem.read_at(&mut buf, at).map_err(|_| libc::EFAULT)?;
        if n == 0 {
            return Err(libc::EFAULT);
        }
        if let Some(end) = buf[..n].iter().position(|b| *b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    Err(libc::ENAMETOOLONG)
}

/// Opens the directory a path argument is relative to, in the caller's view (its root, cwd
/// or descriptor through /proc), and returns it with the rest of the path.
fn open_base(pid: u32, dirfd: libc::c_int, path: &[u8]) -> Result<(OwnedFd, CString), i32> {
    let (base, relative) = if path.first() == Some(&b'/') {
        let start = path.iter().position(|b| *b != b'/').unwrap_or(path.len());
        (format!("/proc/{pid}/root"), &path[start..])
    } else if dirfd == libc::AT_FDCWD {
        (format!("/proc/{pid}/cwd"), path)
    } else if dirfd < 0 {
        return Err(libc::EBADF);
    } else {
        (format!("/proc/{pid}/fd/{dirfd}"), path)
    };
    let base = CString::new(base).map_err(|_| libc::EINVAL)?;
    // No interior NUL: read_c_string stopped at the first one.
    let relative = CString::new(relative).map_err(|_| libc::EINVAL)?;
    // SAFETY: open takes a valid C string; the descriptor is owned right away.
    let base_fd = unsafe { libc::open(base.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if base_fd < 0 {
        return Err(errno_of(io::Error::last_os_error()));
    }
    // SAFETY: just opened, owned here only.
    Ok((unsafe { OwnedFd::from_raw_fd(base_fd) }, relative))
}

fn stat_target(
    pid: u32,
    dirfd: libc::c_int,
    path: &[u8],
    flags: libc::c_int,
) -> Result<libc::stat, i32> {
    if path.is_empty() && flags & libc::AT_EMPTY_PATH == 0 {
        return Err(libc::ENOENT);
    }
    let (base_fd, relative) = open_base(pid, dirfd, path)?;
    let mut at_flags = flags & libc::AT_SYMLINK_NOFOLLOW;
    if relative.as_bytes().is_empty() {
        at_flags |= libc::AT_EMPTY_PATH;
    }
    // SAFETY: an all-zero stat is valid; fstatat fills it.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, C string and stat buffer.
    if unsafe { libc::fstatat(base_fd.as_raw_fd(), relative.as_ptr(), &mut stat, at_flags) } < 0 {
        return Err(errno_of(io::Error::last_os_error()));
    }
    Ok(stat)
}
