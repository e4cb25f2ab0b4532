//! Finding the file a notified call names, in the caller's view (its root, cwd and
//! descriptors through /proc), and refusing the ones rbuild keeps from its steps: the
//! supervisor is not under the step's Landlock rules, so it must not become the step's way
//! around them (a device placeholder created in rbuild's store, setuid bits cleared there).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// Reads the path argument at `address` in the caller's memory: with
/// `process_vm_readv` (one syscall a page, allowed by Docker's profile since Linux 4.8),
/// else through `/proc/PID/mem`.
pub(super) fn caller_path(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    address: u64,
) -> Result<Vec<u8>, i32> {
    let path = caller_path_unchecked(listener, request, address)?;
    // The pid named the caller when the notification arrived; the notification still
    // pending after the read proves the caller is still there, blocked in its call (not
    // exited and recycled, not exec'd), so the bytes were its own.
    notification_still_valid(listener, request)?;
    Ok(path)
}

/// [`caller_path`] without the final check that the notification is still pending: for a
/// caller that checks it before anything the path leads to has an effect (the `stat`
/// family, whose only effect is the answer written back after that check).
pub(super) fn caller_path_unchecked(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    address: u64,
) -> Result<Vec<u8>, i32> {
    let pid = request.pid as libc::pid_t;
    let direct = read_c_string(address, |buf, at| match super::remote::read(pid, at, buf) {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err(io::Error::from_raw_os_error(libc::EPERM)),
        Err(e) => Err(e),
    });
    match direct {
        Err(ReadError::Unavailable) => {
            super::memory::with_caller_memory(listener, request, |mem| {
                read_c_string(address, |buf, at| mem.read_at(buf, at)).map_err(ReadError::errno)
            })
        }
        other => other.map_err(ReadError::errno),
    }
}

/// Reads `len` bytes at `address` in the caller's memory (an xattr value), checking the
/// notification is still pending afterwards as [`caller_path`] does.
pub(super) fn caller_bytes(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    address: u64,
    len: usize,
) -> Result<Vec<u8>, i32> {
    let pid = request.pid as libc::pid_t;
    let mut buf = vec![0u8; len];
    let Some(n) = super::remote::read(pid, address, &mut buf).map_err(|_| libc::EFAULT)? else {
        super::memory::with_caller_memory(listener, request, |mem| {
            mem.read_exact_at(&mut buf, address)
                .map_err(|_| libc::EFAULT)
        })?;
        return Ok(buf);
    };
    if n != len {
        return Err(libc::EFAULT);
    }
    notification_still_valid(listener, request)?;
    Ok(buf)
}

pub(super) fn notification_still_valid(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
) -> Result<(), i32> {
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
    Ok(())
}

pub(super) fn errno_of(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Why a string could not be read from the caller's memory.
enum ReadError {
    /// `process_vm_readv` is not allowed here (an older seccomp profile, or ENOSYS).
    Unavailable,
    /// The errno the call gets.
    Errno(i32),
}

impl ReadError {
    fn errno(self) -> i32 {
        match self {
            ReadError::Unavailable => libc::EFAULT,
            ReadError::Errno(errno) => errno,
        }
    }
}

/// Reads a NUL-terminated string from the caller's memory with `read_at`, a page at a time
/// (a string may end just before an unmapped page).
fn read_c_string(
    address: u64,
    mut read_at: impl FnMut(&mut [u8], u64) -> io::Result<usize>,
) -> Result<Vec<u8>, ReadError> {
    const CHUNK: u64 = 4096;
    let limit = libc::PATH_MAX as usize;
    let mut out = Vec::new();
    let mut at = address;
    while out.len() < limit {
        let mut buf = vec![0u8; (CHUNK - at % CHUNK) as usize];
        let n = match read_at(&mut buf, at) {
            Ok(n) => n,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) => {
                return Err(ReadError::Unavailable)
            }
            Err(_) => return Err(ReadError::Errno(libc::EFAULT)),
        };
        if n == 0 {
            return Err(ReadError::Errno(libc::EFAULT));
        }
        if let Some(end) = buf[..n].iter().position(|b| *b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        at += n as u64;
    }
    Err(ReadError::Errno(libc::ENAMETOOLONG))
}

/// Opens the directory a path argument is relative to, in the caller's view (its root, cwd
/// or descriptor through /proc), and returns it with the rest of the path.
pub(super) fn open_base(
    pid: u32,
    dirfd: libc::c_int,
    path: &[u8],
) -> Result<(OwnedFd, CString), i32> {
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

fn owned(fd: libc::c_int) -> Result<OwnedFd, i32> {
    if fd < 0 {
        return Err(errno_of(io::Error::last_os_error()));
    }
    // SAFETY: a descriptor just returned by the kernel, owned here only.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens (`O_PATH`) the file a chown-family call names: `path` relative to `dirfd` in the
/// caller's view, a final symlink followed unless `AT_SYMLINK_NOFOLLOW`, the descriptor
/// itself for an empty path with `AT_EMPTY_PATH`.
pub(super) fn open_target(
    pid: u32,
    dirfd: libc::c_int,
    path: &[u8],
    flags: libc::c_int,
) -> Result<OwnedFd, i32> {
    if path.is_empty() && flags & libc::AT_EMPTY_PATH == 0 {
        return Err(libc::ENOENT);
    }
    let (base, relative) = open_base(pid, dirfd, path)?;
    if relative.as_bytes().is_empty() {
        return Ok(base);
    }
    let mut open_flags = libc::O_PATH | libc::O_CLOEXEC;
    if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
        open_flags |= libc::O_NOFOLLOW;
    }
    // SAFETY: a valid directory descriptor and C string.
    owned(unsafe { libc::openat(base.as_raw_fd(), relative.as_ptr(), open_flags) })
}

/// Opens (`O_PATH`) the directory in which `relative` (from [`open_base`]) would be
/// created, and returns it with the last component. `EEXIST` when nothing is left to
/// create (the caller named its root or a bare run of slashes).
pub(super) fn open_parent(base: OwnedFd, relative: &CString) -> Result<(OwnedFd, CString), i32> {
    let bytes = relative.as_bytes();
    let end = bytes.iter().rposition(|b| *b != b'/').map_or(0, |i| i + 1);
    let trimmed = &bytes[..end];
    if trimmed.is_empty() {
        return Err(libc::EEXIST);
    }
    let (dir, name) = match trimmed.iter().rposition(|b| *b == b'/') {
        Some(slash) => (&trimmed[..slash + 1], &trimmed[slash + 1..]),
        None => (&b""[..], trimmed),
    };
    let name = CString::new(name).map_err(|_| libc::EINVAL)?;
    if dir.is_empty() {
        return Ok((base, name));
    }
    let dir = CString::new(dir).map_err(|_| libc::EINVAL)?;
    let open_flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: a valid directory descriptor and C string.
    let parent = owned(unsafe { libc::openat(base.as_raw_fd(), dir.as_ptr(), open_flags) })?;
    Ok((parent, name))
}

/// `EACCES` if `fd` is (or is below) a path the step must not reach, or its path cannot
/// be told. The descriptor pins the file: a later rename cannot move the check's target.
pub(super) fn refuse_denied(fd: &OwnedFd, denied: &[PathBuf]) -> Result<(), i32> {
    if denied.is_empty() {
        return Ok(());
    }
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| libc::EACCES)?;
    if denied.iter().any(|d| real.starts_with(d)) {
        return Err(libc::EACCES);
    }
    Ok(())
}

/// `fstat` of an `O_PATH` descriptor.
pub(super) fn stat_of(fd: &OwnedFd) -> Result<libc::stat, i32> {
    // SAFETY: an all-zero stat is valid; fstat fills it.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and stat buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } < 0 {
        return Err(errno_of(io::Error::last_os_error()));
    }
    Ok(stat)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake address space: `memory` mapped at 0x1000 (so its second page is 0x2000).
    fn reader(memory: &[u8]) -> impl FnMut(&mut [u8], u64) -> io::Result<usize> + '_ {
        move |buf, at| {
            let offset = (at as usize)
                .checked_sub(0x1000)
                .filter(|o| *o < memory.len())
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
            let n = buf.len().min(memory.len() - offset);
            buf[..n].copy_from_slice(&memory[offset..offset + n]);
            Ok(n)
        }
    }

    #[test]
    fn a_string_across_a_page_boundary_is_read_a_page_at_a_time() {
        let mut memory = vec![b'x'; 0x1000 + 10];
        memory[0x1000 + 5] = 0;
        let mut sizes = Vec::new();
        let mut inner = reader(&memory);
        let got = read_c_string(0x1ffe, |buf, at| {
            sizes.push(buf.len());
            inner(buf, at)
        });
        assert_eq!(got.ok(), Some(b"xxxxxxx".to_vec()));
        assert_eq!(
            sizes,
            vec![2, 4096],
            "first up to the page end, then a page"
        );
    }

    #[test]
    fn a_refused_reader_falls_back_and_a_bad_address_is_efault() {
        let refused = read_c_string(0x1000, |_, _| {
            Err(io::Error::from_raw_os_error(libc::EPERM))
        });
        assert!(matches!(refused, Err(ReadError::Unavailable)));
        let memory = b"no terminator".to_vec();
        let unterminated = read_c_string(0x1000, reader(&memory));
        assert!(matches!(unterminated, Err(ReadError::Errno(libc::EFAULT))));
    }
}
