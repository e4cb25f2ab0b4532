//! `chmod` and the `utime` family by path, done by the supervisor. Landlock has no right
//! for a file's mode or times, so left to the kernel a step could change them on files
//! rbuild keeps from it (its store and scratch belong to the build user, as the step
//! does). The supervisor resolves the name in the caller's view, pins the file with an
//! `O_PATH` descriptor, refuses it if it is one of rbuild's (`resolve::refuse_denied`),
//! and makes the change through that descriptor: a name swapped after the check cannot
//! redirect the change. The supervisor runs as the step's real user, so the kernel's own
//! permission checks (owner, write access for "now") give the step's answer.
//! `futimens` and `fchmod` (a descriptor, no name) are left to the kernel: a step cannot
//! open a file Landlock hides.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use super::notify::{translated, Answer};
use super::redirect::TopLevel;
use super::resolve::{
    caller_bytes, caller_path, errno_of, open_base, open_parent, open_target, refuse_denied,
    stat_of,
};

/// The calls answered here. `utimensat` only with a path: the filter lets `futimens`
/// (`utimensat(fd, NULL, …)`) through (`filter::program_with`).
#[cfg(target_arch = "x86_64")]
pub(crate) const CALLS: &[libc::c_long] = &[
    libc::SYS_chmod,
    libc::SYS_fchmodat,
    libc::SYS_fchmodat2,
    libc::SYS_utime,
    libc::SYS_utimes,
    libc::SYS_futimesat,
    libc::SYS_utimensat,
];
#[cfg(target_arch = "aarch64")]
pub(crate) const CALLS: &[libc::c_long] =
    &[libc::SYS_fchmodat, libc::SYS_fchmodat2, libc::SYS_utimensat];

/// What the call asks for.
enum Change {
    Mode(libc::mode_t),
    /// `None`: both times "now".
    Times(Option<[libc::timespec; 2]>),
}

/// Where the times are in the caller's memory, and in which layout.
enum TimesAt {
    Now,
    /// `struct timespec[2]` (`utimensat`).
    Timespecs(u64),
    /// `struct timeval[2]` (`utimes`, `futimesat`).
    Timevals(u64),
    /// `struct utimbuf` (`utime`): two `time_t`.
    Utimbuf(u64),
}

struct AttrCall {
    dirfd: libc::c_int,
    path: u64,
    flags: libc::c_int,
    mode: Option<libc::mode_t>,
    times: TimesAt,
}

fn decode(nr: libc::c_long, a: [u64; 6]) -> Option<AttrCall> {
    let times_at = |address: u64, layout: fn(u64) -> TimesAt| {
        if address == 0 {
            TimesAt::Now
        } else {
            layout(address)
        }
    };
    let call = match nr {
        #[cfg(target_arch = "x86_64")]
        libc::SYS_chmod => AttrCall {
            dirfd: libc::AT_FDCWD,
            path: a[0],
            flags: 0,
            mode: Some(a[1] as libc::mode_t),
            times: TimesAt::Now,
        },
        libc::SYS_fchmodat => AttrCall {
            dirfd: a[0] as libc::c_int,
            path: a[1],
            flags: 0,
            mode: Some(a[2] as libc::mode_t),
            times: TimesAt::Now,
        },
        libc::SYS_fchmodat2 => AttrCall {
            dirfd: a[0] as libc::c_int,
            path: a[1],
            flags: a[3] as libc::c_int,
            mode: Some(a[2] as libc::mode_t),
            times: TimesAt::Now,
        },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_utime => AttrCall {
            dirfd: libc::AT_FDCWD,
            path: a[0],
            flags: 0,
            mode: None,
            times: times_at(a[1], TimesAt::Utimbuf),
        },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_utimes => AttrCall {
            dirfd: libc::AT_FDCWD,
            path: a[0],
            flags: 0,
            mode: None,
            times: times_at(a[1], TimesAt::Timevals),
        },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_futimesat => AttrCall {
            dirfd: a[0] as libc::c_int,
            path: a[1],
            flags: 0,
            mode: None,
            times: times_at(a[2], TimesAt::Timevals),
        },
        libc::SYS_utimensat => AttrCall {
            dirfd: a[0] as libc::c_int,
            path: a[1],
            flags: a[3] as libc::c_int,
            mode: None,
            times: times_at(a[2], TimesAt::Timespecs),
        },
        _ => return None,
    };
    Some(call)
}

/// The `i`th native-endian `i64` of `bytes` (0 past its end).
fn word(bytes: &[u8], i: usize) -> i64 {
    bytes
        .get(i * 8..i * 8 + 8)
        .and_then(|w| w.try_into().ok())
        .map_or(0, i64::from_ne_bytes)
}

/// Two native-endian `i64` pairs from `bytes` (32 bytes).
fn pairs(bytes: &[u8]) -> [(i64, i64); 2] {
    [
        (word(bytes, 0), word(bytes, 1)),
        (word(bytes, 2), word(bytes, 3)),
    ]
}

fn timespec(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as _,
    }
}

/// The times the caller passed, read from its memory as the kernel would.
fn read_times(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    at: &TimesAt,
) -> Result<Option<[libc::timespec; 2]>, i32> {
    Ok(match *at {
        TimesAt::Now => None,
        TimesAt::Timespecs(address) => {
            let [a, m] = pairs(&caller_bytes(listener, request, address, 32)?);
            // The kernel checks the nanoseconds (UTIME_NOW and UTIME_OMIT pass).
            Some([timespec(a.0, a.1), timespec(m.0, m.1)])
        }
        TimesAt::Timevals(address) => {
            let [a, m] = pairs(&caller_bytes(listener, request, address, 32)?);
            let valid = |usec: i64| (0..1_000_000).contains(&usec);
            if !valid(a.1) || !valid(m.1) {
                return Err(libc::EINVAL);
            }
            Some([timespec(a.0, a.1 * 1000), timespec(m.0, m.1 * 1000)])
        }
        TimesAt::Utimbuf(address) => {
            let bytes = caller_bytes(listener, request, address, 16)?;
            Some([timespec(word(&bytes, 0), 0), timespec(word(&bytes, 1), 0)])
        }
    })
}

/// Answers a call of [`CALLS`]: the change made on the named file unless it is one of
/// `denied` (EACCES); the errno the kernel gives the supervisor otherwise.
pub(super) fn answer(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    denied: &[PathBuf],
    top: Option<&TopLevel>,
) -> Result<Answer, i32> {
    let nr = request.data.nr as libc::c_long;
    let call = decode(nr, request.data.args).ok_or(libc::ENOSYS)?;
    if call.path == 0 {
        // A descriptor's call: no name to check (the filter passes these by; a step
        // cannot hold a descriptor of a hidden file).
        return Ok(Answer::Continue);
    }
    if call.flags & !(libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH) != 0 {
        return Err(libc::EINVAL);
    }
    let change = match call.mode {
        Some(mode) => Change::Mode(mode & 0o7777),
        None => Change::Times(read_times(listener, request, &call.times)?),
    };
    let pid = request.pid;
    let path = translated(
        top,
        pid,
        call.dirfd,
        caller_path(listener, request, call.path)?,
    );
    let target = open_target(pid, call.dirfd, &path, call.flags)?;
    refuse_denied(&target, denied)?;
    let is_symlink = stat_of(&target)?.st_mode & libc::S_IFMT == libc::S_IFLNK;
    match change {
        // A symlink's own mode cannot be changed on Linux.
        Change::Mode(_) if is_symlink => Err(libc::EOPNOTSUPP),
        Change::Mode(mode) => {
            let through = through_descriptor(&target)?;
            // SAFETY: a valid C string; fchmodat with AT_FDCWD and no flags is chmod.
            let rc = unsafe { libc::fchmodat(libc::AT_FDCWD, through.as_ptr(), mode, 0) };
            done(rc)
        }
        Change::Times(times) if is_symlink => {
            // Only reached with AT_SYMLINK_NOFOLLOW (else open_target followed it). The
            // link is changed by its name in its pinned, checked directory.
            let (base, relative) = open_base(pid, call.dirfd, &path)?;
            let (parent, name) = open_parent(base, &relative)?;
            refuse_denied(&parent, denied)?;
            set_times(parent.as_raw_fd(), &name, times, libc::AT_SYMLINK_NOFOLLOW)
        }
        Change::Times(times) => {
            let through = through_descriptor(&target)?;
            set_times(libc::AT_FDCWD, &through, times, 0)
        }
    }
}

/// `/proc/self/fd/N` of `fd`: opening or changing it reaches the pinned file itself.
fn through_descriptor(fd: &OwnedFd) -> Result<CString, i32> {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|_| libc::EINVAL)
}

fn set_times(
    dirfd: libc::c_int,
    name: &CString,
    times: Option<[libc::timespec; 2]>,
    flags: libc::c_int,
) -> Result<Answer, i32> {
    let times_ptr = times.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
    // SAFETY: a valid descriptor (or AT_FDCWD), C string, and either null or two
    // timespecs alive for the call.
    let rc = unsafe { libc::utimensat(dirfd, name.as_ptr(), times_ptr, flags) };
    done(rc)
}

fn done(rc: libc::c_int) -> Result<Answer, i32> {
    if rc < 0 {
        return Err(errno_of(std::io::Error::last_os_error()));
    }
    Ok(Answer::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn each_call_is_decoded_with_its_path_and_change() {
        let chmod = decode(libc::SYS_chmod, [10, 0o4755, 0, 0, 0, 0]).unwrap();
        assert_eq!(
            (chmod.dirfd, chmod.path, chmod.mode),
            (libc::AT_FDCWD, 10, Some(0o4755))
        );
        let at2 = decode(libc::SYS_fchmodat2, [3, 10, 0o600, 0x100, 0, 0]).unwrap();
        assert_eq!((at2.dirfd, at2.flags, at2.mode), (3, 0x100, Some(0o600)));
        let utimens = decode(libc::SYS_utimensat, [3, 10, 20, 0x100, 0, 0]).unwrap();
        assert!(matches!(utimens.times, TimesAt::Timespecs(20)));
        assert_eq!(utimens.flags, 0x100);
        let now = decode(libc::SYS_utimes, [10, 0, 0, 0, 0, 0]).unwrap();
        assert!(matches!(now.times, TimesAt::Now));
        let utime = decode(libc::SYS_utime, [10, 30, 0, 0, 0, 0]).unwrap();
        assert!(matches!(utime.times, TimesAt::Utimbuf(30)));
        let futimesat = decode(libc::SYS_futimesat, [4, 10, 40, 0, 0, 0]).unwrap();
        assert_eq!(futimesat.dirfd, 4);
        assert!(matches!(futimesat.times, TimesAt::Timevals(40)));
        assert!(decode(libc::SYS_fchown, [0; 6]).is_none());
    }
}
