//! The seccomp user-notification supervisor: runs a child under the restricted filter
//! (`filter::program`) and answers its ownership calls, recording the owner each call asks
//! for in an [`OwnershipTable`] instead of changing the file (which an unprivileged user
//! cannot do). The disk keeps the build user's ids; the table says what the image gets.
//!
//! This is emulation, not a security boundary: a step runs as the same uid as its
//! supervisor, so nothing it could do through a wrong answer is more than it can do anyway.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::copy_up::Groups;
use super::creds::CredentialTable;
use super::memory::Generation;
use super::notify::answer_one;
use super::redirect::TopLevel;
use super::stat::StatAnswerer;
use super::table::OwnershipTable;
use crate::sys::{cvt, fork, waitpid};

/// How a supervised child ended, and what it chowned.
#[derive(Debug)]
pub struct Finished {
    /// The raw wait status of the child.
    pub status: libc::c_int,
    pub table: OwnershipTable,
}

impl Finished {
    /// The exit code, or `None` if a signal ended the child.
    pub fn exit_code(&self) -> Option<i32> {
        crate::sys::decode_status(self.status).0
    }
}

/// Runs `argv[0]` (an absolute path) with `argv` under the restricted filter, supervised.
/// Blocking; returns once the command and every process that inherited the filter are gone.
pub fn run_command(argv: &[&str]) -> io::Result<Finished> {
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(*a).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL)))
        .collect::<io::Result<_>>()?;
    let Some(program) = args.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no command"));
    };
    let mut pointers: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    pointers.push(std::ptr::null());
    // Everything the child touches is built before the fork: it may be a copy of a
    // multi-threaded process, where only async-signal-safe calls are allowed.
    run_supervised(|| {
        // SAFETY: `program` and `pointers` (NUL-terminated, pointing into `args`) outlive
        // the call; execv returns only on failure.
        unsafe { libc::execv(program.as_ptr(), pointers.as_ptr()) };
        127
    })
}

/// Forks a child that installs the restricted filter, hands its listener to this process
/// and runs `body` (its return value is the exit code); then answers the child's
/// notifications until it is gone. `body` must be async-signal-safe (no allocation) when
/// the caller is multi-threaded.
pub(crate) fn run_supervised(body: impl FnOnce() -> i32) -> io::Result<Finished> {
    run_supervised_until(body, None, &[], OwnershipTable::default(), None)
}

/// [`run_supervised`], killing the step when `interrupt` (a signalfd) becomes readable, and
/// refusing (EACCES) the calls that name a file in `denied` (canonical paths the step must
/// not reach: the supervisor works outside the step's Landlock rules). `shown`: owners the
/// step's `stat` shows where it recorded none itself (files placed for it that the build
/// user could not chown); they are not in the table returned. `top`: top-level
/// redirection (`redirect.rs`), the step then traced by a tracer process between this one
/// and the step (`tracer.rs`).
pub(crate) fn run_supervised_until(
    body: impl FnOnce() -> i32,
    interrupt: Option<BorrowedFd<'_>>,
    denied: &[PathBuf],
    shown: OwnershipTable,
    top: Option<&TopLevel>,
) -> io::Result<Finished> {
    run_supervised_copying_up(body, interrupt, denied, shown, top, &Groups::default())
}

/// [`run_supervised_until`] for a step whose root has files hard-linked in earlier layers
/// (`groups`, empty for none): a call that would copy one of their names up on overlayfs
/// copies it up first (`copy_up.rs`), in the tracer for the calls it stops, here for the
/// others; the table says which new inode came from which (`OwnershipTable::copies`).
pub(crate) fn run_supervised_copying_up(
    body: impl FnOnce() -> i32,
    interrupt: Option<BorrowedFd<'_>>,
    denied: &[PathBuf],
    shown: OwnershipTable,
    top: Option<&TopLevel>,
    groups: &Groups,
) -> io::Result<Finished> {
    if top.is_some() && !cfg!(target_arch = "x86_64") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "top-level redirection (entries of / the builder image lacks) is implemented for \
             x86_64 only",
        ));
    }
    // Which calls stop in the tracer is decided now, after the helper made the working
    // directory and rbuild placed the mount targets (either may be a redirected entry).
    let top = top.map(TopLevel::for_step).transpose()?;
    let top = top.as_ref();
    let tracing = match top {
        None => super::filter::Tracing::Off,
        Some(top) if top.creating_only => super::filter::Tracing::Creating,
        Some(_) => super::filter::Tracing::Full,
    };
    let program = super::filter::program_with(tracing, !groups.is_empty());
    // The tracer's copy-ups come back through a pipe, each before the call that made it
    // goes on, so before any later call of the step reaches this supervisor.
    let copies = if top.is_some() && !groups.is_empty() {
        Some(copies_pipe()?)
    } else {
        None
    };
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "filter too long"))?,
        filter: program.as_ptr().cast_mut(),
    };
    let (ours, theirs) = crate::sys::seqpacket_pair()?;
    // Shared with the tracer, which moves it on at every exec and end of a tracee.
    let generation = match top {
        Some(_) => Some(Rc::new(Generation::new()?)),
        None => None,
    };
    // SAFETY: getpid has no preconditions.
    let supervisor = unsafe { libc::getpid() };
    let pid = fork()?;
    if pid == 0 {
        drop(ours);
        // Its own process group, so whatever it leaves running can be ended with it.
        // SAFETY: setpgid on ourselves.
        unsafe { libc::setpgid(0, 0) };
        #[cfg(target_arch = "x86_64")]
        if let (Some(top), Some(generation)) = (top, &generation) {
            let copy_up = copies.as_ref().map(|(_, write)| super::tracer::CopyUp {
                groups,
                report: write.as_raw_fd(),
            });
            super::tracer::run(top, supervisor, copy_up, generation, || {
                start(&fprog, &theirs, body)
            });
        }
        let _ = supervisor;
        let code = start(&fprog, &theirs, body);
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    drop(theirs);
    let copies = copies.map(|(read, _)| read);
    let received = recv_status(ours.as_raw_fd());
    let listener = match received {
        Ok((0, Some(fd))) => fd,
        other => {
            let _ = waitpid(pid, 0);
            let why = match other {
                Ok((errno, _)) if errno != 0 => {
                    crate::sys::errno_name(&io::Error::from_raw_os_error(errno))
                }
                Ok(_) => "no listener descriptor came back".to_string(),
                Err(e) => e.to_string(),
            };
            return Err(io::Error::other(format!(
                "seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER): {why}"
            )));
        }
    };
    let seen = Seen {
        groups,
        copies: copies.as_ref(),
    };
    super::memory::supervise_with(generation);
    let finished = supervise(pid, &listener, interrupt, denied, shown, top, seen);
    super::memory::supervise_with(None);
    if finished.is_err() {
        // Nobody answers the step any more: end it rather than leave it blocked.
        super::reap::kill_and_reap(pid, super::reap::is_subreaper());
        let _ = waitpid(pid, libc::WNOHANG);
    }
    finished
}

/// In the step's process: installs the restricted filter, hands its listener to the
/// supervisor through `theirs`, and runs `body`; returns the exit code.
fn start(fprog: &libc::sock_fprog, theirs: &OwnedFd, body: impl FnOnce() -> i32) -> i32 {
    // SAFETY: prctl and seccomp take plain values and `fprog`, which points at the
    // caller's program, alive until exec or exit.
    let listener = unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            -1
        } else {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                fprog as *const libc::sock_fprog,
            ) as libc::c_int
        }
    };
    if listener < 0 {
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        send_status(theirs.as_raw_fd(), errno, None);
        return 126;
    }
    let sent = send_status(theirs.as_raw_fd(), 0, Some(listener));
    // SAFETY: the listener must not stay in the child: a step could answer its own
    // notifications with it.
    unsafe { libc::close(listener) };
    // SAFETY: our copy of the socket is of no use to the step.
    unsafe { libc::close(theirs.as_raw_fd()) };
    if !sent {
        return 126;
    }
    body()
}

/// Sends `errno` and, if given, a descriptor (SCM_RIGHTS). Async-signal-safe.
pub(crate) fn send_status(sock: libc::c_int, errno: i32, fd: Option<libc::c_int>) -> bool {
    let payload = errno.to_ne_bytes();
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    // Room for one cmsghdr and an int, 8-byte aligned.
    let mut control = [0u64; 4];
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive sendmsg, and the
    // cmsg writes stay inside `control` (CMSG_SPACE(4) = 24 <= 32 bytes).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(fd) = fd {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd);
        }
        libc::sendmsg(sock, &msg, 0) == payload.len() as isize
    }
}

/// Receives what [`send_status`] sent.
pub(crate) fn recv_status(sock: libc::c_int) -> io::Result<(i32, Option<OwnedFd>)> {
    let mut payload = [0u8; 4];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: as in send_status; the received descriptor (if any) is taken into an OwnedFd
    // exactly once.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != payload.len() {
            return Err(io::Error::other("the filtered child died before reporting"));
        }
        let mut fd = None;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if !cmsg.is_null()
            && (*cmsg).cmsg_level == libc::SOL_SOCKET
            && (*cmsg).cmsg_type == libc::SCM_RIGHTS
        {
            let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
            fd = Some(OwnedFd::from_raw_fd(raw));
        }
        Ok((i32::from_ne_bytes(payload), fd))
    }
}

/// How long what a step left running may take to die after SIGKILL (a process blocked in
/// uninterruptible sleep on a hung file system may take long): past it the step fails.
const LEFTOVER_DEADLINE: Duration = Duration::from_secs(30);

/// A pipe for the tracer's copy-ups (`tracer::CopyUp`): the read end non-blocking.
fn copies_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = crate::asroot::pipe()?;
    // SAFETY: fcntl on a descriptor of ours with plain flags.
    cvt(unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) })?;
    Ok((read, write))
}

/// Takes in the copy-ups the tracer reported so far ([`CopyRecord`]s), for the table and
/// what `stat` shows.
///
/// [`CopyRecord`]: super::copy_up::CopyRecord
fn take_copies(
    copies: Option<&OwnedFd>,
    table: &mut OwnershipTable,
    stats: &mut StatAnswerer,
) -> io::Result<()> {
    let Some(copies) = copies else {
        return Ok(());
    };
    let mut record: super::copy_up::CopyRecord = [0u8; super::copy_up::CopiedUp::RECORD_LEN];
    loop {
        // SAFETY: reads at most `record.len()` bytes into `record`.
        let n = unsafe { libc::read(copies.as_raw_fd(), record.as_mut_ptr().cast(), record.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) => Ok(()),
                Some(libc::EINTR) => continue,
                _ => Err(err),
            };
        }
        if n == 0 {
            return Ok(());
        }
        if n as usize != record.len() {
            // Writes of a record are atomic (below PIPE_BUF): a short one is a bug.
            return Err(io::Error::other("a partial copy-up record from the tracer"));
        }
        let copied = super::copy_up::CopiedUp::decode(&record);
        table.copied_up(copied.old, copied.new);
        stats.copied_up(copied.old, copied.new);
    }
}

/// What the supervisor needs for copy-ups: the step's hard-link groups, and the tracer's
/// copy-up reports.
struct Seen<'a> {
    groups: &'a Groups,
    copies: Option<&'a OwnedFd>,
}

/// Answers notifications until the child has been reaped and no process holds the filter.
/// `interrupt` (a signalfd) readable means the build was interrupted: the step is killed.
fn supervise(
    child: libc::pid_t,
    listener: &OwnedFd,
    interrupt: Option<BorrowedFd<'_>>,
    denied: &[PathBuf],
    shown: OwnershipTable,
    top: Option<&TopLevel>,
    seen: Seen<'_>,
) -> io::Result<Finished> {
    let subreaper = super::reap::is_subreaper();
    wake_the_supervisor_on_the_callers_cpu(listener);
    // Readable when the child exits, so its end is seen at once rather than at the next
    // poll timeout; where pidfd_open is refused (an old seccomp profile) the timeout does.
    // SAFETY: pidfd_open takes a pid and flags; the result is a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child, 0) } as libc::c_int;
    // SAFETY: a descriptor just returned by the kernel, owned here only.
    let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    let mut table = OwnershipTable::default();
    let mut credentials = CredentialTable::default();
    let mut stats = StatAnswerer::new(child, shown, top.cloned());
    let mut status = None;
    let mut ending: Option<Instant> = None;
    let mut interrupted = false;
    loop {
        let mut pfds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: interrupt.map_or(-1, |fd| fd.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // Once the child is reaped its pidfd stays readable: no longer polled.
                fd: match (&pidfd, status) {
                    (Some(fd), None) => fd.as_raw_fd(),
                    _ => -1,
                },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // The timeout is for reaping: a zombie still holds the filter, so the listener
        // hangs up only once every process that had it is reaped.
        // SAFETY: three valid pollfds (a negative fd is ignored by poll).
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), 3, 20) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(err);
        }
        take_copies(seen.copies, &mut table, &mut stats)?;
        if pfds[0].revents & libc::POLLIN != 0 {
            answer_one(
                listener,
                &mut table,
                &mut credentials,
                denied,
                top,
                &mut stats,
                seen.groups,
            )?;
            continue;
        }
        if subreaper && status.is_none() {
            super::reap::reap_orphans(child);
        }
        if pfds[1].revents & libc::POLLIN != 0 && !interrupted {
            interrupted = true;
            ending.get_or_insert_with(Instant::now);
        }
        if status.is_none() && (interrupted || exited(child)?) {
            // As when a container's init exits: what the step left running ends with it,
            // or it would keep the filter, and this loop, alive. The zombie still holds the
            // group id, so no other process has it.
            super::reap::kill_and_reap(child, false);
            let (_, st) = waitpid(child, 0)?;
            status = Some(st);
            ending.get_or_insert_with(Instant::now);
        }
        let Some(status) = status else { continue };
        let all_reaped = super::reap::kill_and_reap(child, subreaper);
        let hung_up = pfds[0].revents & (libc::POLLHUP | libc::POLLERR) != 0;
        if all_reaped && hung_up {
            if interrupted {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the build was interrupted: the step was killed",
                ));
            }
            take_copies(seen.copies, &mut table, &mut stats)?;
            return Ok(Finished { status, table });
        }
        if ending.is_some_and(|since| since.elapsed() > LEFTOVER_DEADLINE) {
            return Err(io::Error::other(format!(
                "processes the step left running were still there {}s after SIGKILL",
                LEFTOVER_DEADLINE.as_secs()
            )));
        }
    }
}

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux 6.6): the kernel's own name for the flag
/// (libc has the ioctl, not the flag).
const SYNC_WAKE_UP: u64 = 1;

/// Asks the kernel to switch straight from a notifying step to this supervisor on the same
/// CPU and back (`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`), instead of waking it wherever the
/// scheduler finds room: the caller is blocked until the answer anyway, and on a busy
/// machine the wake-up was most of a `stat`'s round trip (see docs/sandbox.md, "Owners as
/// root sees them"). Before Linux 6.6 the ioctl is EINVAL and notifications are delivered
/// as before, only slower: nothing to report.
fn wake_the_supervisor_on_the_callers_cpu(listener: &OwnedFd) {
    // SAFETY: SET_FLAGS takes the flags by value; it changes only how this listener wakes.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            SYNC_WAKE_UP,
        )
    };
}

/// Whether `child` has exited, without reaping it.
fn exited(child: libc::pid_t) -> io::Result<bool> {
    // SAFETY: an all-zero siginfo_t is valid; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child with a valid siginfo_t.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            child as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if r < 0 {
        let err = io::Error::last_os_error();
        return if err.raw_os_error() == Some(libc::EINTR) {
            Ok(false)
        } else {
            Err(err)
        };
    }
    // SAFETY: waitid succeeded; si_pid is 0 if no child changed state.
    Ok(unsafe { info.si_pid() } == child)
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
