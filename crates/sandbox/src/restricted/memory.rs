//! The step's memory through `/proc/TID/mem`, where `process_vm_readv`/`writev` are refused
//! (Docker 20.10's default profile refuses them without CAP_SYS_PTRACE, i.e. in every
//! restricted pod it runs). Opening `/proc/TID/mem` is the costly part of a read there (a
//! procfs lookup and a ptrace access check, every time), and the supervisor reads a path
//! and writes a result for most of the calls it answers, hundreds of thousands in an
//! `apt-get install`. So the descriptors are kept:
//!
//! - **In the tracer**, which sees every event of its tracees: a tracee's descriptor is
//!   dropped when it execs (a new address space; a vfork child's descriptor was its parent's
//!   memory until then) or ends (its tid may name another process later).
//! - **In the supervisor**, which does not see those events: only while the tracer's
//!   [`Generation`] (a counter in memory the two share, moved on by every exec and every
//!   end of a tracee, before that tracee or a process reusing its tid can make another
//!   call) has not moved; without a tracer, only within one notification (the path read
//!   and the result written through one descriptor).
//!
//! A descriptor's address space is the one its process had when it was opened; one is
//! kept only after the notification it was opened for was checked still pending, so it
//! was the caller's.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::resolve::{errno_of, notification_still_valid};

/// More descriptors than a step has processes making calls at once: the cache is emptied
/// when it reaches this, which bounds the supervisor's and the tracer's descriptors.
const KEPT: usize = 256;

/// A counter in a page the supervisor maps shared before it forks the tracer: the tracer
/// moves it on at every exec and every end of a tracee, the supervisor keeps its
/// descriptors only while it has not moved.
pub(crate) struct Generation {
    page: NonNull<AtomicU64>,
}

impl Generation {
    pub(crate) fn new() -> io::Result<Generation> {
        // SAFETY: an anonymous shared mapping of one page, at an address the kernel picks.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // The page is zeroed: an AtomicU64 of 0, aligned (a page is).
        let page = NonNull::new(at.cast::<AtomicU64>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Generation { page })
    }

    fn counter(&self) -> &AtomicU64 {
        // SAFETY: the page is mapped until `self` is dropped, and only ever accessed as
        // this atomic (by this process and the tracer forked from it).
        unsafe { self.page.as_ref() }
    }

    /// The tracer: a tracee exec'd or ended. Called before it (or a process that gets its
    /// tid) runs on.
    pub(crate) fn advance(&self) {
        self.counter().fetch_add(1, Ordering::SeqCst);
    }

    fn current(&self) -> u64 {
        self.counter().load(Ordering::SeqCst)
    }

    /// In the step, before it runs anything of its own: the step must not be able to hold
    /// the counter still (its address space is replaced at exec anyway).
    pub(crate) fn unmap_in_child(&self) {
        // SAFETY: the page this value mapped; it is not used in this process afterwards
        // (the caller only execs or exits from here on).
        unsafe { libc::munmap(self.page.as_ptr().cast(), 4096) };
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        // SAFETY: the page mapped in `new`, unmapped once.
        unsafe { libc::munmap(self.page.as_ptr().cast(), 4096) };
    }
}

/// When the supervisor's descriptors were opened.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Epoch {
    /// Under the tracer's generation of that value.
    Generation(u64),
    /// For that notification only (no tracer).
    Notification(u64),
}

struct Kept {
    epoch: Option<Epoch>,
    files: HashMap<u32, Rc<File>>,
}

thread_local! {
    /// The supervisor's descriptors, and the tracer's generation it trusts them by. A
    /// supervisor is one thread answering one step at a time (tests run several, one per
    /// thread).
    static SUPERVISOR: RefCell<(Option<Rc<Generation>>, Kept)> = RefCell::new((
        None,
        Kept { epoch: None, files: HashMap::new() },
    ));
    /// The tracer's descriptors (a process of its own, one thread).
    static TRACER: RefCell<HashMap<libc::pid_t, Rc<File>>> = RefCell::new(HashMap::new());
}

/// The supervisor starts answering a step traced by a tracer that moves `generation` on
/// (`None`: no tracer). Whatever was kept for an earlier step is dropped.
pub(super) fn supervise_with(generation: Option<Rc<Generation>>) {
    SUPERVISOR.with(|s| {
        let mut s = s.borrow_mut();
        s.0 = generation;
        s.1.epoch = None;
        s.1.files.clear();
    });
}

/// `/proc/PID/mem` of `pid` for reading and writing (one descriptor serves both).
fn open(pid: impl std::fmt::Display) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{pid}/mem"))
}

/// Runs `access` on the caller's `/proc/TID/mem`, kept or opened now (then checked to be
/// the caller's: the notification still pending). A kept descriptor that fails is dropped
/// and the access tried once more on a fresh one, so a descriptor kept too long costs a
/// retry, never a wrong answer of its own making.
pub(super) fn with_caller_memory<T>(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    mut access: impl FnMut(&File) -> Result<T, i32>,
) -> Result<T, i32> {
    let pid = request.pid;
    let kept = SUPERVISOR.with(|s| {
        let mut s = s.borrow_mut();
        let epoch = match &s.0 {
            Some(generation) => Epoch::Generation(generation.current()),
            None => Epoch::Notification(request.id),
        };
        let (_, kept) = &mut *s;
        if kept.epoch != Some(epoch) || kept.files.len() >= KEPT {
            kept.files.clear();
            kept.epoch = Some(epoch);
        }
        kept.files.get(&pid).cloned()
    });
    if let Some(file) = kept {
        match access(&file) {
            Ok(value) => return Ok(value),
            Err(_) => {
                SUPERVISOR.with(|s| s.borrow_mut().1.files.remove(&pid));
            }
        }
    }
    let file = Rc::new(open(pid).map_err(errno_of)?);
    notification_still_valid(listener, request)?;
    SUPERVISOR.with(|s| s.borrow_mut().1.files.insert(pid, file.clone()));
    access(&file)
}

/// The tracer: runs `access` on a stopped tracee's `/proc/PID/mem`, kept or opened now.
pub(super) fn with_tracee_memory<T>(
    pid: libc::pid_t,
    mut access: impl FnMut(&File) -> io::Result<T>,
) -> io::Result<T> {
    let kept = TRACER.with(|t| t.borrow().get(&pid).cloned());
    if let Some(file) = kept {
        match access(&file) {
            Ok(value) => return Ok(value),
            Err(_) => {
                TRACER.with(|t| t.borrow_mut().remove(&pid));
            }
        }
    }
    let file = Rc::new(open(pid)?);
    TRACER.with(|t| {
        let mut t = t.borrow_mut();
        if t.len() >= KEPT {
            t.clear();
        }
        t.insert(pid, file.clone());
    });
    access(&file)
}

/// The tracer: `pid` exec'd or ended; what was kept for it is not its memory any more.
/// On an exec every descriptor goes (the exec of a thread other than the leader takes the
/// leader's tid).
pub(super) fn tracee_changed(pid: libc::pid_t, exec: bool) {
    TRACER.with(|t| {
        let mut t = t.borrow_mut();
        if exec {
            t.clear();
        } else {
            t.remove(&pid);
        }
    });
}
