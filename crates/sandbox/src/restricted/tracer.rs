//! The tracer of top-level redirection (see `redirect.rs`): a process between the
//! supervisor and the step that traces the step and all its descendants
//! (`PTRACE_TRACEME` and `PTRACE_O_TRACEFORK|TRACEVFORK|TRACECLONE`). The restricted
//! filter returns `SECCOMP_RET_TRACE` for the path-taking calls ([`TRACED`]); at each such
//! stop the tracer reads the first bytes of each path argument, and only when its first
//! component is not a name of `/` writes the redirected path into the step's stack (below
//! its red zone) and points the argument there, restoring the registers at syscall exit.
//! `getcwd` and `readlink` of `/proc/…` are fixed up at exit so that the step sees
//! `/NAME`, never the redirection directory.
//!
//! A step whose stage has no redirected entry yet (`TopLevel::creating_only`) has a filter
//! that traces only the calls that create a name ([`CREATING`]): until one of them
//! redirects, every other call on a name `/` lacks fails the same either way. At that
//! call the tracer stops every process of the step and traces every call from then on
//! ([`Tracer::every_call`]). docs/sandbox.md, "Tracing only the calls that create a name".
//!
//! Why a process of its own: ptrace stops are reported through `waitpid`, which the
//! supervisor's loop (polling its listener) cannot wait in; and with `PTRACE_O_EXITKILL`
//! the tracer's end kills whatever the step left running, as the supervisor does.
//!
//! Emulation, not a boundary: the tracer runs as the build user, outside Landlock, and
//! only rewrites paths into other paths the step could name itself; Landlock decides what
//! they reach.

use std::collections::{HashMap, HashSet};
use std::io;

use super::memory::Generation;
use super::redirect::{base_is_root, FirstComponent, TopLevel};
use crate::sys::{fork, waitpid};

/// `__WALL`: wait for every kind of child, threads included.
const WALL: libc::c_int = 0x4000_0000;
/// The SysV x86_64 ABI's red zone: 128 bytes below the stack pointer a leaf function may
/// use without moving it.
const RED_ZONE: u64 = 128;
/// Enough bytes to see the first component of almost every path in one read.
const PREFIX: usize = 256;
const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
const PTRACE_SYSCALL_INFO_EXIT: u8 = 2;

/// Where a call's paths are: `(dirfd argument, path argument)`, `None` for `AT_FDCWD`.
type PathArgs = &'static [(Option<usize>, usize)];

/// The calls that stop in the tracer, and their path arguments. The calls the supervisor
/// answers (the `chown` family, `mknod`, the `stat` family, `setxattr`/`removexattr`)
/// translate there instead; a symlink's target text is stored as given.
pub(crate) const TRACED: &[(libc::c_long, PathArgs)] = &[
    (libc::SYS_open, &[(None, 0)]),
    (libc::SYS_creat, &[(None, 0)]),
    (libc::SYS_openat, &[(Some(0), 1)]),
    (libc::SYS_openat2, &[(Some(0), 1)]),
    (libc::SYS_access, &[(None, 0)]),
    (libc::SYS_faccessat, &[(Some(0), 1)]),
    (libc::SYS_faccessat2, &[(Some(0), 1)]),
    (libc::SYS_mkdir, &[(None, 0)]),
    (libc::SYS_mkdirat, &[(Some(0), 1)]),
    (libc::SYS_unlink, &[(None, 0)]),
    (libc::SYS_unlinkat, &[(Some(0), 1)]),
    (libc::SYS_rmdir, &[(None, 0)]),
    (libc::SYS_rename, &[(None, 0), (None, 1)]),
    (libc::SYS_renameat, &[(Some(0), 1), (Some(2), 3)]),
    (libc::SYS_renameat2, &[(Some(0), 1), (Some(2), 3)]),
    (libc::SYS_link, &[(None, 0), (None, 1)]),
    (libc::SYS_linkat, &[(Some(0), 1), (Some(2), 3)]),
    (libc::SYS_symlink, &[(None, 1)]),
    (libc::SYS_symlinkat, &[(Some(1), 2)]),
    (libc::SYS_readlink, &[(None, 0)]),
    (libc::SYS_readlinkat, &[(Some(0), 1)]),
    (libc::SYS_chdir, &[(None, 0)]),
    (libc::SYS_execve, &[(None, 0)]),
    (libc::SYS_execveat, &[(Some(0), 1)]),
    (libc::SYS_truncate, &[(None, 0)]),
    (libc::SYS_utime, &[(None, 0)]),
    (libc::SYS_utimes, &[(None, 0)]),
    (libc::SYS_futimesat, &[(Some(0), 1)]),
    (libc::SYS_utimensat, &[(Some(0), 1)]),
    (libc::SYS_chmod, &[(None, 0)]),
    (libc::SYS_fchmodat, &[(Some(0), 1)]),
    (libc::SYS_fchmodat2, &[(Some(0), 1)]),
    (libc::SYS_getxattr, &[(None, 0)]),
    (libc::SYS_lgetxattr, &[(None, 0)]),
    (libc::SYS_listxattr, &[(None, 0)]),
    (libc::SYS_llistxattr, &[(None, 0)]),
    (libc::SYS_statfs, &[(None, 0)]),
    (libc::SYS_inotify_add_watch, &[(None, 1)]),
    (libc::SYS_name_to_handle_at, &[(Some(0), 1)]),
    (libc::SYS_fanotify_mark, &[(Some(3), 4)]),
    (libc::SYS_getcwd, &[]),
];

/// The calls of [`TRACED`] that create a name whatever their arguments (`openat2` may:
/// its flags are behind a pointer), the ones a step with no redirected entry yet stops at
/// (`filter::Tracing::Creating`), beside `open`/`openat` with `O_CREAT` and `mknod` of
/// anything but a device, which the filter picks by their arguments. Every other call on
/// a path to redirect fails the same redirected or not while nothing is there.
pub(crate) const CREATING: &[libc::c_long] = &[
    libc::SYS_creat,
    libc::SYS_openat2,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_symlink,
    libc::SYS_symlinkat,
];

/// `mknod` of a FIFO, socket or file: traced only by the creating calls' filter (the full
/// one sends every `mknod` to the supervisor, which translates its path itself).
const MKNOD_PATHS: &[(libc::c_long, PathArgs)] = &[
    (libc::SYS_mknod, &[(None, 0)]),
    (libc::SYS_mknodat, &[(Some(0), 1)]),
];

/// What the tracer needs to copy up a shared file's name before a call it stops changes
/// it (`copy_up.rs`): the step's hard-link groups, and a pipe to the supervisor, which
/// gets a [`CopyRecord`](super::copy_up::CopyRecord) for each copy-up (for its table,
/// keyed by inode) before the call goes on.
pub(crate) struct CopyUp<'a> {
    pub(crate) groups: &'a super::copy_up::Groups,
    pub(crate) report: libc::c_int,
}

/// What to do at a traced call's exit.
#[derive(Debug, Clone, Copy)]
enum Fixup {
    None,
    /// The call was skipped (a copy-up it needed failed): it returns `-errno`.
    Fail {
        errno: i32,
    },
    /// `getcwd(buf, size)`.
    Getcwd {
        buf: u64,
        size: u64,
    },
    /// `readlink(at)` of a `/proc` link into `buf` of `size` bytes.
    Readlink {
        buf: u64,
        size: u64,
    },
}

/// A call stopped at entry that needs its exit: the arguments to restore and the fixup.
#[derive(Debug, Clone, Copy)]
struct Pending {
    args: Option<[u64; 6]>,
    fixup: Fixup,
}

fn args_of(regs: &libc::user_regs_struct) -> [u64; 6] {
    [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9]
}

fn set_arg(regs: &mut libc::user_regs_struct, index: usize, value: u64) {
    match index {
        0 => regs.rdi = value,
        1 => regs.rsi = value,
        2 => regs.rdx = value,
        3 => regs.r10 = value,
        4 => regs.r8 = value,
        _ => regs.r9 = value,
    }
}

/// Runs in the forked child of the supervisor (which is `supervisor`): forks the step,
/// which runs `body` traced, traces it and its descendants until it ends, then ends the
/// same way (so the supervisor sees the step's status). Never returns.
pub(crate) fn run(
    top: &TopLevel,
    supervisor: libc::pid_t,
    copy_up: Option<CopyUp<'_>>,
    generation: &Generation,
    body: impl FnOnce() -> i32,
) -> ! {
    // SAFETY: prctl with plain values; getppid has no preconditions.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != supervisor {
            libc::_exit(126);
        }
    }
    let step = match fork() {
        Ok(pid) => pid,
        // SAFETY: leaving the forked child without running the parent's destructors.
        Err(_) => unsafe { libc::_exit(126) },
    };
    if step == 0 {
        // SAFETY: plain syscalls in the forked step, which leaves with _exit.
        unsafe {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                libc::_exit(126);
            }
            generation.unmap_in_child();
            // Wait for the tracer's options (EXITKILL before anything runs).
            libc::raise(libc::SIGSTOP);
            libc::_exit(body())
        }
    }
    let status = match trace(top, step, copy_up, generation) {
        Ok(status) => status,
        Err(e) => {
            let message = format!("rbuild: tracing the step for top-level redirection: {e}\n");
            // SAFETY: writes a buffer of that length to stderr, then leaves (EXITKILL ends
            // the step).
            unsafe {
                libc::write(2, message.as_ptr().cast(), message.len());
                libc::_exit(126)
            }
        }
    };
    end_like(status)
}

/// Ends this process as the step ended: its exit code, or its signal (without a core).
fn end_like(status: libc::c_int) -> ! {
    // SAFETY: plain process-level calls; the process is leaving.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::prctl(libc::PR_SET_DUMPABLE, 0);
            libc::signal(signal, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), signal);
            libc::_exit(128 + signal);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}

fn ptrace_error(what: &str) -> io::Error {
    let err = io::Error::last_os_error();
    io::Error::new(err.kind(), format!("ptrace({what}): {err}"))
}

/// Resumes `pid` with `request` (`PTRACE_CONT` or `PTRACE_SYSCALL`), delivering `signal`.
/// ESRCH (the tracee was killed meanwhile) is not an error: its exit comes next.
///
/// Through `syscall`, each argument a full `c_long`: glibc's `ptrace` hands its `request`
/// (a 32-bit enum) to the kernel in a 64-bit register without clearing the upper half,
/// which the caller need not clear either (the x86_64 ABI leaves it undefined), and the
/// kernel compares all 64 bits. In the static release build the half held the signal
/// (`ptrace(0x1100000007, …)`): EIO at the first SIGCHLD of a traced step.
fn resume(pid: libc::pid_t, request: libc::c_uint, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: ptrace on a stopped tracee of ours with plain values.
    if unsafe {
        libc::syscall(
            libc::SYS_ptrace,
            libc::c_long::from(request),
            libc::c_long::from(pid),
            0 as libc::c_long,
            libc::c_long::from(signal),
        )
    } != 0
    {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(ptrace_error("resume"));
        }
    }
    Ok(())
}

/// Traces `step` (stopped by its own SIGSTOP) and every descendant until `step` ends;
/// returns its wait status.
fn trace(
    top: &TopLevel,
    step: libc::pid_t,
    copy_up: Option<CopyUp<'_>>,
    generation: &Generation,
) -> io::Result<libc::c_int> {
    let (_, status) = waitpid(step, WALL)?;
    if !libc::WIFSTOPPED(status) {
        return Ok(status);
    }
    let options = libc::PTRACE_O_TRACESECCOMP
        | libc::PTRACE_O_TRACEFORK
        | libc::PTRACE_O_TRACEVFORK
        | libc::PTRACE_O_TRACEVFORKDONE
        | libc::PTRACE_O_TRACECLONE
        | libc::PTRACE_O_TRACEEXEC
        | libc::PTRACE_O_TRACESYSGOOD
        | libc::PTRACE_O_EXITKILL;
    // SAFETY: ptrace on our stopped tracee with a plain options word.
    if unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, step, 0, options) } != 0 {
        return Err(ptrace_error("PTRACE_SETOPTIONS"));
    }
    let mut tracer = Tracer {
        top,
        copy_up,
        generation,
        every_call: false,
        pending: HashMap::new(),
        entered: HashSet::new(),
        tracees: HashSet::from([step]),
        in_vfork: HashSet::new(),
        switching: None,
        stops: Stops::default(),
    };
    resume(step, libc::PTRACE_CONT, 0)?;
    let status = tracer.run(step);
    if let Some(fd) = top.stop_report {
        let line = format!(
            "seccomp={} syscall={} switched={}",
            tracer.stops.seccomp,
            tracer.stops.syscall,
            u8::from(tracer.every_call)
        );
        // SAFETY: writes a buffer of that length to a descriptor the test gave.
        unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
    }
    status
}

/// How long the switch to tracing every call may wait for the step's processes to stop
/// (each is sent SIGSTOP, which a running process takes within microseconds): past it
/// the step fails rather than go on with a process that may not be traced.
const SWITCH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// The stops seen, for the test hook ([`TopLevel::stop_report`]).
#[derive(Debug, Default)]
struct Stops {
    seccomp: u64,
    syscall: u64,
}

/// The switch to tracing every call (see [`Tracer::every_call`]) under way: every known
/// process of the step must stop once before any goes on.
struct Switch {
    /// Tracees sent SIGSTOP that have not stopped since.
    awaiting: HashSet<libc::pid_t>,
    /// Stopped tracees, kept stopped until `awaiting` is empty, with the signal to deliver.
    held: Vec<(libc::pid_t, libc::c_int)>,
    started: std::time::Instant,
}

struct Tracer<'a> {
    top: &'a TopLevel,
    /// Moved on at every exec and end of a tracee: the supervisor's kept descriptors of
    /// the step's memory are good only while it has not moved (`memory.rs`).
    generation: &'a Generation,
    /// Set when the step's root has files hard-linked in earlier layers.
    copy_up: Option<CopyUp<'a>>,
    /// Every call of every tracee stops (`PTRACE_SYSCALL`), the calls of [`TRACED`]
    /// handled at their syscall-entry stop: set when a step started under
    /// `Tracing::Creating` (only the creating calls stop, as seccomp stops) makes its first
    /// redirection, since a redirected entry may exist from then on, and every later call
    /// of the step on it must be redirected, whatever filter its process has.
    every_call: bool,
    /// Calls whose exit must be seen.
    pending: HashMap<libc::pid_t, Pending>,
    /// Tracees whose current call was handled at its syscall-entry stop: its seccomp stop
    /// (the creating calls' filter still traces them) must not handle it again.
    entered: HashSet<libc::pid_t>,
    /// Every tracee known alive.
    tracees: HashSet<libc::pid_t>,
    /// Tracees waiting for a vfork child to exec or exit: they cannot stop for a switch
    /// (the kernel's wait is not interruptible) and cannot run either; they stop at
    /// `PTRACE_EVENT_VFORK_DONE` before running on.
    in_vfork: HashSet<libc::pid_t>,
    switching: Option<Switch>,
    stops: Stops,
}

/// Where a stopped call is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopAt {
    /// A seccomp stop (`SECCOMP_RET_TRACE`).
    Seccomp,
    /// A syscall-entry stop (`PTRACE_SYSCALL`, the tracee traced in full).
    SyscallEntry,
}

impl Tracer<'_> {
    /// The resume request after a stop that needs nothing more.
    fn carry_on(&self) -> libc::c_uint {
        if self.every_call {
            libc::PTRACE_SYSCALL
        } else {
            libc::PTRACE_CONT
        }
    }

    fn run(&mut self, step: libc::pid_t) -> io::Result<libc::c_int> {
        loop {
            let (pid, status) = if self.switching.is_some() {
                let (pid, status) = waitpid(-1, WALL | libc::WNOHANG)?;
                if pid == 0 {
                    self.drop_unstoppable()?;
                    std::thread::sleep(std::time::Duration::from_micros(200));
                    continue;
                }
                (pid, status)
            } else {
                waitpid(-1, WALL)?
            };
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                self.gone(pid)?;
                if pid == step {
                    return Ok(status);
                }
                continue;
            }
            if !libc::WIFSTOPPED(status) {
                continue;
            }
            self.tracees.insert(pid);
            if let Some((request, signal)) = self.stopped(pid, status)? {
                self.resume_or_hold(pid, request, signal)?;
            }
        }
    }

    /// A tracee has ended.
    fn gone(&mut self, pid: libc::pid_t) -> io::Result<()> {
        // Before anything is resumed: a process that gets this tid later is a new tracee,
        // stopped until this tracer lets it run.
        self.generation.advance();
        super::memory::tracee_changed(pid, false);
        self.pending.remove(&pid);
        self.entered.remove(&pid);
        self.tracees.remove(&pid);
        self.in_vfork.remove(&pid);
        if let Some(switch) = &mut self.switching {
            switch.awaiting.remove(&pid);
        }
        self.release_if_all_stopped()
    }

    /// Handles a stop of `pid`: how to resume it, `None` when it is gone.
    fn stopped(
        &mut self,
        pid: libc::pid_t,
        status: libc::c_int,
    ) -> io::Result<Option<(libc::c_uint, libc::c_int)>> {
        let signal = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        let carry_on = self.carry_on();
        if signal == libc::SIGTRAP && event == libc::PTRACE_EVENT_SECCOMP {
            self.stops.seccomp += 1;
            let already = self.entered.remove(&pid);
            let copy_up = self.copy_up.as_ref();
            let stop = match entry(self.top, copy_up, pid, StopAt::Seccomp, already) {
                Ok(stop) => stop,
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
                Err(e) => return Err(e),
            };
            let Some(stop) = stop else {
                return Ok(Some((carry_on, 0)));
            };
            let redirected = stop.args.is_some();
            self.pending.insert(pid, stop);
            if redirected && self.top.creating_only && !self.every_call {
                self.trace_every_call(pid)?;
            }
            return Ok(Some((libc::PTRACE_SYSCALL, 0)));
        }
        if signal == (libc::SIGTRAP | 0x80) {
            self.stops.syscall += 1;
            if at_exit(pid) {
                self.entered.remove(&pid);
                if let Some(stop) = self.pending.remove(&pid) {
                    match exit(self.top, pid, stop) {
                        Err(e) if e.raw_os_error() != Some(libc::ESRCH) => return Err(e),
                        _ => {}
                    }
                }
                return Ok(Some((carry_on, 0)));
            }
            if !self.every_call {
                // Not expected (a kept call's next stop is its exit): seen through to it.
                let request = if self.pending.contains_key(&pid) {
                    libc::PTRACE_SYSCALL
                } else {
                    carry_on
                };
                return Ok(Some((request, 0)));
            }
            self.entered.insert(pid);
            match entry(
                self.top,
                self.copy_up.as_ref(),
                pid,
                StopAt::SyscallEntry,
                false,
            ) {
                Ok(Some(stop)) => {
                    self.pending.insert(pid, stop);
                }
                Ok(None) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
                Err(e) => return Err(e),
            }
            return Ok(Some((libc::PTRACE_SYSCALL, 0)));
        }
        if signal == libc::SIGTRAP && event == libc::PTRACE_EVENT_EXEC {
            // A successful execve: the registers are the new program's, nothing to restore.
            self.pending.remove(&pid);
            // A new address space: what was kept of the old one is not this process's.
            self.generation.advance();
            super::memory::tracee_changed(pid, true);
            return Ok(Some((carry_on, 0)));
        }
        if signal == libc::SIGTRAP && event == libc::PTRACE_EVENT_VFORK_DONE {
            self.in_vfork.remove(&pid);
            return Ok(Some((carry_on, 0)));
        }
        if signal == libc::SIGTRAP && event != 0 {
            // Fork, vfork, clone: the new tracee reports its own first stop (before it runs
            // anything), but is known from now on.
            let mut child: libc::c_ulong = 0;
            // SAFETY: ptrace on our stopped tracee, writing one c_ulong into `child`.
            if unsafe { libc::ptrace(libc::PTRACE_GETEVENTMSG, pid, 0, &mut child) } == 0 {
                self.tracees.insert(child as libc::pid_t);
            }
            if event == libc::PTRACE_EVENT_VFORK {
                self.in_vfork.insert(pid);
            }
            return Ok(Some((carry_on, 0)));
        }
        if signal == libc::SIGSTOP {
            // A new tracee's first stop, the switch's own SIGSTOP, and a step's own
            // SIGSTOP (see docs/sandbox.md): suppressed.
            return Ok(Some((carry_on, 0)));
        }
        // A signal for the tracee: delivered; a group-stop (no siginfo) is resumed.
        // SAFETY: an all-zero siginfo_t is valid; GETSIGINFO fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: ptrace on our stopped tracee with a siginfo_t buffer.
        let delivered = unsafe { libc::ptrace(libc::PTRACE_GETSIGINFO, pid, 0, &mut info) } == 0;
        Ok(Some((carry_on, if delivered { signal } else { 0 })))
    }

    /// Starts tracing every call: `redirecting` (stopped at a creating call about to make
    /// a redirected entry) is held while every other tracee is stopped (SIGSTOP, which the
    /// tracer suppresses), so that no process makes one more call untraced once the entry
    /// can exist; all are then resumed with `PTRACE_SYSCALL`.
    fn trace_every_call(&mut self, redirecting: libc::pid_t) -> io::Result<()> {
        self.every_call = true;
        let mut awaiting = HashSet::new();
        for &pid in &self.tracees {
            if pid == redirecting || self.in_vfork.contains(&pid) {
                continue;
            }
            // SAFETY: tkill with a thread id of a tracee and a signal number.
            if unsafe { libc::syscall(libc::SYS_tkill, pid, libc::SIGSTOP) } == 0 {
                awaiting.insert(pid);
            }
        }
        self.switching = Some(Switch {
            awaiting,
            held: Vec::new(),
            started: std::time::Instant::now(),
        });
        Ok(())
    }

    /// Resumes `pid`, or holds it while a switch waits for the others.
    fn resume_or_hold(
        &mut self,
        pid: libc::pid_t,
        request: libc::c_uint,
        signal: libc::c_int,
    ) -> io::Result<()> {
        match &mut self.switching {
            None => resume(pid, request, signal),
            Some(switch) => {
                switch.awaiting.remove(&pid);
                switch.held.push((pid, signal));
                self.release_if_all_stopped()
            }
        }
    }

    /// Ends the switch once no tracee is awaited: every held one resumed, traced in full.
    fn release_if_all_stopped(&mut self) -> io::Result<()> {
        if !self
            .switching
            .as_ref()
            .is_some_and(|s| s.awaiting.is_empty())
        {
            return Ok(());
        }
        let Some(switch) = self.switching.take() else {
            return Ok(());
        };
        for (pid, signal) in switch.held {
            resume(pid, libc::PTRACE_SYSCALL, signal)?;
        }
        Ok(())
    }

    /// While a switch waits: stops awaiting the tracees that cannot stop and cannot run
    /// either (a zombie thread-group leader whose exit is reported only after its
    /// threads', a vfork parent), and fails past [`SWITCH_DEADLINE`].
    fn drop_unstoppable(&mut self) -> io::Result<()> {
        let Some(switch) = &mut self.switching else {
            return Ok(());
        };
        let in_vfork = &self.in_vfork;
        switch
            .awaiting
            .retain(|pid| !in_vfork.contains(pid) && !cannot_run(*pid));
        if !switch.awaiting.is_empty() && switch.started.elapsed() > SWITCH_DEADLINE {
            return Err(io::Error::other(format!(
                "processes {:?} of the step did not stop within {} s for tracing every call \
                 after a new top-level entry",
                switch.awaiting,
                SWITCH_DEADLINE.as_secs()
            )));
        }
        self.release_if_all_stopped()
    }
}

/// Whether thread `tid` is dead or a zombie (`/proc/TID/stat`'s state): it runs nothing.
fn cannot_run(tid: libc::pid_t) -> bool {
    let Ok(stat) = std::fs::read(format!("/proc/{tid}/stat")) else {
        return true;
    };
    // The state follows the command's closing parenthesis (the command may hold any).
    let Some(close) = stat.iter().rposition(|b| *b == b')') else {
        return false;
    };
    matches!(stat.get(close + 2), Some(b'Z' | b'X' | b'x'))
}

/// Whether `pid`'s syscall stop is at the call's exit.
fn at_exit(pid: libc::pid_t) -> bool {
    let mut info = [0u8; 88];
    // SAFETY: the kernel writes at most `info.len()` bytes into `info`.
    let got = unsafe { libc::ptrace(PTRACE_GET_SYSCALL_INFO, pid, info.len(), info.as_mut_ptr()) };
    got > 0 && info[0] == PTRACE_SYSCALL_INFO_EXIT
}

fn get_regs(pid: libc::pid_t) -> io::Result<libc::user_regs_struct> {
    // SAFETY: an all-zero user_regs_struct is valid; GETREGS fills it.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: ptrace on our stopped tracee with a user_regs_struct buffer.
    if unsafe { libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut regs) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(regs)
}

fn set_regs(pid: libc::pid_t, regs: &libc::user_regs_struct) -> io::Result<()> {
    // SAFETY: ptrace on our stopped tracee, reading a user_regs_struct.
    if unsafe { libc::ptrace(libc::PTRACE_SETREGS, pid, 0, regs) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A call's entry (`at`): redirects its path arguments that need it. `Some` when the
/// call's exit must be seen (arguments to restore, a result to fix up). `entered`: the
/// call already stopped at its syscall-entry stop, where a call of [`TRACED`] was handled.
fn entry(
    top: &TopLevel,
    copy_up: Option<&CopyUp<'_>>,
    pid: libc::pid_t,
    at: StopAt,
    entered: bool,
) -> io::Result<Option<Pending>> {
    let mut regs = get_regs(pid)?;
    let nr = regs.orig_rax as libc::c_long;
    let listed = TRACED.iter().find(|(n, _)| *n == nr);
    let paths = match (at, listed) {
        (StopAt::Seccomp, Some(_)) if entered => return Ok(None),
        (_, Some((_, paths))) => paths,
        (StopAt::Seccomp, None) => match MKNOD_PATHS.iter().find(|(n, _)| *n == nr) {
            Some((_, paths)) => paths,
            None => return Ok(None),
        },
        (StopAt::SyscallEntry, None) => return Ok(None),
    };
    let original = args_of(&regs);
    let mut fixup = match nr {
        libc::SYS_getcwd => Fixup::Getcwd {
            buf: original[0],
            size: original[1],
        },
        _ => Fixup::None,
    };
    let mut below = regs.rsp.wrapping_sub(RED_ZONE);
    let mut changed = false;
    // The paths rewritten, by argument: where a copy-up looks.
    let mut rewritten: Vec<(usize, Vec<u8>)> = Vec::new();
    for (dirfd_arg, path_arg) in paths.iter() {
        let address = original[*path_arg];
        if address == 0 {
            continue;
        }
        let mut prefix_buf = [0u8; PREFIX];
        let (prefix, complete) = match read_prefix(pid, address, &mut prefix_buf) {
            Ok(read) => read,
            // An unreadable path: the kernel fails the call with EFAULT itself.
            Err(e) if e.raw_os_error() == Some(libc::EFAULT) => continue,
            Err(e) => return Err(e),
        };
        if matches!(nr, libc::SYS_readlink | libc::SYS_readlinkat) && prefix.starts_with(b"/proc/")
        {
            let (buf, size) = if nr == libc::SYS_readlink {
                (original[1], original[2])
            } else {
                (original[2], original[3])
            };
            fixup = Fixup::Readlink { buf, size };
        }
        let needs_whole = match top.first_component(prefix, complete) {
            FirstComponent::Real => continue,
            FirstComponent::Absent { .. } => !complete,
            FirstComponent::Unknown => true,
        };
        let whole;
        let path = if needs_whole {
            let (read, complete) = read_string(pid, address, libc::PATH_MAX as usize)?;
            if !complete {
                continue;
            }
            whole = read;
            &whole[..]
        } else {
            prefix
        };
        let FirstComponent::Absent { rest } = top.first_component(path, true) else {
            continue;
        };
        if !path.starts_with(b"/") {
            let dirfd = dirfd_arg.map_or(libc::AT_FDCWD, |i| original[i] as libc::c_int);
            if !base_is_root(pid, dirfd) {
                continue;
            }
        }
        let mut redirected = top.redirected(rest);
        redirected.push(0);
        below = below.wrapping_sub(redirected.len() as u64) & !15;
        if let Err(e) = write_memory(pid, below, &redirected) {
            let message = format!(
                "rbuild: could not redirect {} to {} in process {pid}: {e}\n",
                String::from_utf8_lossy(path),
                String::from_utf8_lossy(&redirected[..redirected.len() - 1]),
            );
            // SAFETY: writes a buffer of that length to stderr.
            unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
            continue;
        }
        set_arg(&mut regs, *path_arg, below);
        changed = true;
        redirected.pop();
        rewritten.push((*path_arg, redirected));
    }
    let failed = match (copy_up, listed) {
        (Some(copy_up), Some(_)) => copy_up_at_entry(copy_up, pid, nr, &original, &rewritten)?,
        _ => None,
    };
    if let Some(errno) = failed {
        // Skipped (number -1): the exit stop gives it `-errno`.
        regs.orig_rax = u64::MAX;
        fixup = Fixup::Fail { errno };
    }
    if changed || failed.is_some() {
        set_regs(pid, &regs)?;
    }
    if !changed && matches!(fixup, Fixup::None) {
        return Ok(None);
    }
    Ok(Some(Pending {
        args: changed.then_some(original),
        fixup,
    }))
}

/// Before call `nr` of `pid` runs: if it changes a name of one of the step's hard-link
/// groups the way overlayfs copies up for, copies that name up (`copy_up.rs`) and reports
/// it to the supervisor. The name is the one the kernel will see: the redirected path
/// where [`entry`] rewrote it. `Some(errno)` when the copy-up failed: the call fails with
/// it, as on overlayfs.
fn copy_up_at_entry(
    copy_up: &CopyUp<'_>,
    pid: libc::pid_t,
    nr: libc::c_long,
    args: &[u64; 6],
    rewritten: &[(usize, Vec<u8>)],
) -> io::Result<Option<i32>> {
    let how_flags = || {
        let mut flags = [0u8; 8];
        let n = read_memory(pid, args[2], &mut flags).ok()?;
        (n == flags.len()).then(|| u64::from_ne_bytes(flags))
    };
    let Some(call) = super::copy_up::named_call(nr, *args, how_flags) else {
        return Ok(None);
    };
    let path = match rewritten.iter().find(|(arg, _)| *arg == call.path_arg) {
        Some((_, path)) => path.clone(),
        // Unreadable or too long: the kernel fails the call itself.
        None => match read_string(pid, call.path, libc::PATH_MAX as usize) {
            Ok((path, true)) => path,
            _ => return Ok(None),
        },
    };
    // The caller is stopped in this call: no notification to check.
    let copied =
        super::copy_up::copy_up_path(pid as u32, nr, &call, &path, copy_up.groups, || Ok(()));
    match copied {
        Ok(Some(copied)) => {
            report_copy(copy_up.report, &copied.encode())?;
            Ok(None)
        }
        Ok(None) => Ok(None),
        Err(errno) => Ok(Some(errno)),
    }
}

/// Writes one record to the supervisor's pipe (atomic: below `PIPE_BUF`).
fn report_copy(fd: libc::c_int, record: &super::copy_up::CopyRecord) -> io::Result<()> {
    loop {
        // SAFETY: writes `record.len()` bytes from `record` to a descriptor of ours.
        let n = unsafe { libc::write(fd, record.as_ptr().cast(), record.len()) };
        if n == record.len() as isize {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if n >= 0 || err.raw_os_error() != Some(libc::EINTR) {
            return Err(io::Error::other(format!(
                "reporting a copy-up to the supervisor: {err}"
            )));
        }
    }
}

/// A syscall-exit stop of a call [`entry`] kept: the result shown, the arguments back.
fn exit(top: &TopLevel, pid: libc::pid_t, stop: Pending) -> io::Result<()> {
    let mut regs = get_regs(pid)?;
    let result = regs.rax as i64;
    match stop.fixup {
        Fixup::None => {}
        Fixup::Getcwd { buf, size } if result > 0 => {
            // The kernel's getcwd returns the length with the NUL.
            let (real, _) = read_string(pid, buf, result as usize)?;
            if let Some(mut shown) = top.shown(&real) {
                shown.push(0);
                if shown.len() as u64 <= size {
                    write_memory(pid, buf, &shown)?;
                    regs.rax = shown.len() as u64;
                }
            }
        }
        Fixup::Readlink { buf, size } if result > 0 && (result as u64) <= size => {
            let mut real = vec![0u8; result as usize];
            read_memory(pid, buf, &mut real)?;
            if let Some(shown) = top.shown(&real) {
                write_memory(pid, buf, &shown)?;
                regs.rax = shown.len() as u64;
            }
        }
        Fixup::Fail { errno } => regs.rax = (-(errno as i64)) as u64,
        Fixup::Getcwd { .. } | Fixup::Readlink { .. } => {}
    }
    if let Some(args) = stop.args {
        for (i, value) in args.iter().enumerate() {
            set_arg(&mut regs, i, *value);
        }
    }
    set_regs(pid, &regs)
}

/// Reads up to `limit` bytes of the NUL-terminated string at `address` in `pid`, a page at
/// a time (a string may end just before an unmapped page); says whether its end was seen.
fn read_string(pid: libc::pid_t, address: u64, limit: usize) -> io::Result<(Vec<u8>, bool)> {
    const PAGE: u64 = 4096;
    let mut out = Vec::new();
    let mut at = address;
    while out.len() < limit {
        let want = ((PAGE - at % PAGE) as usize).min(limit - out.len());
        let mut buf = vec![0u8; want];
        let n = read_memory(pid, at, &mut buf)?;
        if let Some(end) = buf[..n].iter().position(|b| *b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Ok((out, true));
        }
        out.extend_from_slice(&buf[..n]);
        if n < want {
            break;
        }
        at += n as u64;
    }
    Ok((out, false))
}

/// The fast path of every stop: up to `buf.len()` bytes of the string at `address` in one
/// `process_vm_readv` and no allocation (two remote pieces split at the page boundary, so
/// a string ending just before an unmapped page is still read: the kernel stops at a
/// piece it cannot read). Returns the bytes before the NUL and whether the NUL was seen.
fn read_prefix(
    pid: libc::pid_t,
    address: u64,
    buf: &mut [u8; PREFIX],
) -> io::Result<(&[u8], bool)> {
    const PAGE: u64 = 4096;
    let first = ((PAGE - address % PAGE) as usize).min(PREFIX);
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: PREFIX,
    };
    let remote = [
        libc::iovec {
            iov_base: address as usize as *mut libc::c_void,
            iov_len: first,
        },
        libc::iovec {
            iov_base: address.wrapping_add(first as u64) as usize as *mut libc::c_void,
            iov_len: PREFIX - first,
        },
    ];
    let pieces = if first == PREFIX { 1 } else { 2 };
    // SAFETY: writes at most `PREFIX` bytes (the remote pieces' total) into `buf`, which
    // holds `PREFIX`; the remote ranges are only read, in the other process, by the kernel.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, remote.as_ptr(), pieces, 0) };
    let n = if n >= 0 {
        n as usize
    } else {
        let err = io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) {
            return Err(err);
        }
        // No process_vm_readv here: the slower reader, through /proc/PID/mem, where an
        // unmapped address is EIO rather than EFAULT.
        let (read, complete) = read_string(pid, address, PREFIX).map_err(|e| {
            if e.raw_os_error() == Some(libc::EIO) {
                io::Error::from_raw_os_error(libc::EFAULT)
            } else {
                e
            }
        })?;
        buf[..read.len()].copy_from_slice(&read);
        return Ok((&buf[..read.len()], complete));
    };
    let bytes = &buf[..n];
    match bytes.iter().position(|b| *b == 0) {
        Some(end) => Ok((&bytes[..end], true)),
        None => Ok((bytes, false)),
    }
}

/// Up to `buf.len()` bytes at `address` in `pid`, through `/proc/PID/mem` where
/// `process_vm_readv` is not allowed.
fn read_memory(pid: libc::pid_t, address: u64, buf: &mut [u8]) -> io::Result<usize> {
    if let Some(n) = super::remote::read(pid, address, buf)? {
        return Ok(n);
    }
    use std::os::unix::fs::FileExt;
    super::memory::with_tracee_memory(pid, |mem| {
        let n = mem.read_at(buf, address)?;
        if n == 0 && !buf.is_empty() {
            // A kept descriptor of an address space that is gone reads nothing.
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(n)
    })
}

/// `bytes` at `address` in `pid` (stopped, below its stack pointer and red zone, where
/// nothing of its lives), through `/proc/PID/mem` where `process_vm_writev` is not allowed.
fn write_memory(pid: libc::pid_t, address: u64, bytes: &[u8]) -> io::Result<()> {
    match super::remote::write(pid, address, bytes)? {
        Some(n) if n == bytes.len() => return Ok(()),
        Some(_) => return Err(io::Error::other("short write into the tracee")),
        None => {}
    }
    use std::os::unix::fs::FileExt;
    super::memory::with_tracee_memory(pid, |mem| mem.write_all_at(bytes, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two anonymous pages, the second unmapped: strings placed to end at the first's end.
    struct Pages(*mut u8);

    impl Pages {
        fn new() -> Pages {
            // SAFETY: a fresh anonymous mapping of two pages; its second page is unmapped
            // again so that reads past the first fault.
            unsafe {
                let at = libc::mmap(
                    std::ptr::null_mut(),
                    8192,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                assert_ne!(at, libc::MAP_FAILED);
                assert_eq!(libc::munmap(at.cast::<u8>().add(4096).cast(), 4096), 0);
                Pages(at.cast())
            }
        }

        /// Writes `bytes` so that they end at the mapped page's last byte; their address.
        fn at_end(&self, bytes: &[u8]) -> u64 {
            // SAFETY: `bytes.len()` ≤ 4096 bytes written inside the mapped first page.
            unsafe {
                let to = self.0.add(4096 - bytes.len());
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), to, bytes.len());
                to as u64
            }
        }
    }

    impl Drop for Pages {
        fn drop(&mut self) {
            // SAFETY: unmaps the first page mapped in `new`.
            unsafe { libc::munmap(self.0.cast(), 4096) };
        }
    }

    #[test]
    fn a_prefix_ending_before_an_unmapped_page_is_read_whole() {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        let pages = Pages::new();
        let mut buf = [0u8; PREFIX];
        let address = pages.at_end(b"/newtop/f\0");
        assert_eq!(
            read_prefix(me, address, &mut buf).unwrap(),
            (&b"/newtop/f"[..], true)
        );
        // No NUL before the unmapped page: what was readable, not complete.
        let address = pages.at_end(b"/newtop/ff");
        assert_eq!(
            read_prefix(me, address, &mut buf).unwrap(),
            (&b"/newtop/ff"[..], false)
        );
        // A long string: the first PREFIX bytes, not complete.
        let long = [b'a'; 1000];
        let address = pages.at_end(&long);
        assert_eq!(
            read_prefix(me, address, &mut buf).unwrap(),
            (&long[..PREFIX], false)
        );
        // Unmapped from its first byte: EFAULT (the call's own result).
        let err = read_prefix(me, address + 1000, &mut buf).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EFAULT));
    }
}
