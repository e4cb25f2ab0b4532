//! Reading and writing another process's memory (a supervised or traced step's), the one
//! place that calls `process_vm_readv`/`process_vm_writev`: allowed by Docker's default
//! profile since Linux 4.8, to a process of the same user that may trace it. Where they are
//! not (an older profile: EPERM, or ENOSYS), callers fall back to `/proc/PID/mem`, each
//! with the checks its caller needs between opening and reading.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set at the first EPERM or ENOSYS: the calls are refused here (a runtime's profile does
/// not change while rbuild runs), so later reads and writes go straight to `/proc/PID/mem`
/// instead of paying a refused call each time.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// `process_vm_readv` of up to `buf.len()` bytes at `address` in `pid`: the bytes read, or
/// `None` when the call is not available here (the caller then reads `/proc/PID/mem`).
pub(super) fn read(pid: libc::pid_t, address: u64, buf: &mut [u8]) -> io::Result<Option<usize>> {
    if REFUSED.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: address as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which has them; the
    // remote range is only read, in the other process, by the kernel, which checks it is
    // mapped there.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    classify(n)
}

/// `process_vm_writev` of `bytes` at `address` in `pid`: the bytes written, or `None`
/// when the call is not available here (the caller then writes `/proc/PID/mem`).
pub(super) fn write(pid: libc::pid_t, address: u64, bytes: &[u8]) -> io::Result<Option<usize>> {
    if REFUSED.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let local = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    let remote = libc::iovec {
        iov_base: address as usize as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: the kernel only reads `bytes.len()` bytes from `bytes`; the remote range is
    // written in the other process by the kernel, which checks it is mapped and writable
    // there (what is written where is the caller's contract with that process).
    let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    classify(n)
}

fn classify(n: isize) -> io::Result<Option<usize>> {
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let err = io::Error::last_os_error();
    if matches!(err.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) {
        // An EPERM for one process that may not be read (not dumpable) would be the same
        // through /proc/PID/mem, which also reads every other process: nothing is lost.
        REFUSED.store(true, Ordering::Relaxed);
        Ok(None)
    } else {
        Err(err)
    }
}

/// Makes this process behave as where the calls are refused (a restricted pod under Docker
/// 20.10's profile), for the tests of the `/proc/PID/mem` path. Every later reader and
/// writer of this test process takes that path: it gives the same answers.
#[cfg(test)]
pub(super) fn refuse_for_tests() {
    REFUSED.store(true, Ordering::Relaxed);
}
