//! rbuild as PID 1 (a container's entrypoint, a Kubernetes Job's `command:`): the kernel
//! sends PID 1 no signal it has no handler for (so `docker stop` would wait out its
//! timeout), and every orphan in the container is re-parented to PID 1, which must reap it.
//! So when rbuild finds itself PID 1 it forks: the child is rbuild proper, the parent a
//! minimal init that forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to it,
//! reaps every process that ends, and exits with the child's status (128 + the signal when
//! it was killed), as tini and `docker run --init` do.

/// The signals the init passes on to rbuild.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// If this process is PID 1, becomes the init described above and never returns in that
/// process; returns in the forked child (and in any process that is not PID 1). Must run
/// while the process is single-threaded (first thing in `main`).
pub fn become_init_if_pid1() {
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != 1 {
        return;
    }
    // SAFETY: the sigset functions only write the set they are given; all pointers are to
    // local, initialised values.
    let (wanted, old_mask) = unsafe {
        let mut wanted: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut wanted);
        for signal in FORWARDED {
            libc::sigaddset(&mut wanted, signal);
        }
        libc::sigaddset(&mut wanted, libc::SIGCHLD);
        let mut old_mask: libc::sigset_t = std::mem::zeroed();
        // Blocked before the fork, so that no signal is lost between the fork and the
        // first wait; the child restores the old mask.
        libc::sigprocmask(libc::SIG_BLOCK, &wanted, &mut old_mask);
        (wanted, old_mask)
    };
    // SAFETY: the process is single-threaded here (called first thing in main), so the
    // child may do anything.
    let child = unsafe { libc::fork() };
    if child < 0 {
        // Running on as PID 1 is still better than not building at all.
        eprintln!(
            "rbuild: warning: as PID 1 without an init: fork failed ({}); orphans will not be \
             reaped and SIGTERM will not stop the build",
            std::io::Error::last_os_error()
        );
        // SAFETY: restores the mask saved above.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
        return;
    }
    if child == 0 {
        // SAFETY: restores the mask saved above.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
        return;
    }
    std::process::exit(supervise(child, &wanted));
}

/// The init's loop: forwards signals to `child`, reaps everything, returns the exit code.
fn supervise(child: libc::pid_t, wanted: &libc::sigset_t) -> i32 {
    loop {
        // SAFETY: `wanted` is a valid set; a null siginfo pointer is allowed.
        let signal = unsafe { libc::sigwaitinfo(wanted, std::ptr::null_mut()) };
        if signal < 0 {
            continue; // EINTR
        }
        if signal != libc::SIGCHLD {
            // SAFETY: kill has no memory preconditions; the child may already be gone.
            unsafe { libc::kill(child, signal) };
            continue;
        }
        loop {
            let mut status = 0;
            // SAFETY: `status` is a valid out pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == child {
                // What is left in the container dies with PID 1 (the kernel kills it).
                return if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else if libc::WIFSIGNALED(status) {
                    128 + libc::WTERMSIG(status)
                } else {
                    1
                };
            }
        }
    }
}
