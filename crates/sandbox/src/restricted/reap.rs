//! Ending what a restricted step left running. In the helper, which is a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`), every orphan of the step is re-parented to it, including
//! processes that left the step's process group (`setsid`, a daemonizing double fork): they
//! are its children and can be killed and reaped. Elsewhere (the probe, unit tests) only the
//! step's process group is reached.

use std::io;

use crate::sys::waitpid;

/// Whether this process is a child subreaper.
pub(super) fn is_subreaper() -> bool {
    let mut flag: libc::c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int through the pointer.
    let r = unsafe {
        libc::prctl(
            libc::PR_GET_CHILD_SUBREAPER,
            &mut flag as *mut libc::c_int,
            0,
            0,
            0,
        )
    };
    r == 0 && flag != 0
}

/// Makes this process a child subreaper.
pub(super) fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with plain values.
    crate::sys::cvt(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }).map(|_| ())
}

/// SIGKILLs the process group `pgid` and, as subreaper, every child of this process; reaps
/// the children that are gone without waiting. Returns whether no child is left.
pub(super) fn kill_and_reap(pgid: libc::pid_t, subreaper: bool) -> bool {
    // SAFETY: signals the step's own process group (the step's pid is its id, and the
    // zombie or live leader keeps the id from being reused).
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if !subreaper {
        return true;
    }
    // No child left means no descendant left (an orphan is re-parented to us, the
    // subreaper, before its parent is gone): the usual case, with no /proc to read.
    loop {
        match waitpid(-1, libc::WNOHANG) {
            Ok((0, _)) => break,
            Ok(_) => continue,
            Err(_) => return true,
        }
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    for pid in crate::sys::children_of(me) {
        // SAFETY: a child of ours, not yet reaped (so its pid is not reused).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    loop {
        match waitpid(-1, libc::WNOHANG) {
            Ok((0, _)) => return false,
            Ok(_) => continue,
            // ECHILD: nothing left.
            Err(_) => return true,
        }
    }
}

/// As subreaper, reaps the children that have exited other than `step` (orphans of the
/// step re-parented here), without waiting, while the step runs: a build that daemonizes
/// many short-lived processes must not fill the pod's pid limit with zombies. `step`
/// itself is left for the caller, who needs its status.
pub(super) fn reap_orphans(step: libc::pid_t) {
    loop {
        // SAFETY: an all-zero siginfo_t is valid; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own children with a valid siginfo_t; WNOWAIT leaves the
        // child waitable, so the step's status is not taken here.
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: waitid succeeded; si_pid is 0 if no child changed state.
        let pid = if r == 0 { unsafe { info.si_pid() } } else { 0 };
        if pid == 0 || pid == step {
            // Nothing exited, or the step itself is the first waitable one: the caller
            // reaps it (and the rest after it).
            return;
        }
        if waitpid(pid, libc::WNOHANG).is_err() {
            return;
        }
    }
}
