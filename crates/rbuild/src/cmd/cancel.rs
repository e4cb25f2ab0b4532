//! SIGINT, SIGTERM (and SIGHUP, a closed terminal): say the command was cancelled, stop the
//! step's processes, remove the build's directories and secrets, exit 130, 143 (129): 128 +
//! the signal, as a shell reports.
//!
//! The handler itself only writes the signal's number to a pipe (all it may safely do); a
//! thread waiting on the pipe does the rest. The handlers are plain `sigaction`s, so they
//! are reset to the default in every program the build starts (exec does that), and the
//! signal mask is left alone (a blocked mask would be inherited by the steps).

use std::io::{Read as _, Write as _};
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// The pipe's write end, for the handler (-1 until installed).
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
/// Set once a signal has arrived: the main thread then leaves the ending to the watcher.
static CANCELLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    // At once, not when the watcher runs: a Ctrl-C reaches the step's processes too, and
    // the build must not report their death as a failure of its own.
    CANCELLED.store(true, Ordering::SeqCst);
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signal as u8;
        // SAFETY: write(2) is async-signal-safe; one byte from a local into an open pipe.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// Whether a SIGINT or SIGTERM has arrived (the watcher is ending the process).
pub fn cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

/// Installs the handlers and starts the watcher. `what` names the command in the message
/// ("build"). Errors leave the default behaviour (the process dies at once); the next
/// rbuild command then removes what it left.
pub fn install(what: &'static str) -> std::io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-int array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so fds[0] is an open descriptor this function alone owns.
    let read_end = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    PIPE_WRITE.store(fds[1], Ordering::SeqCst);
    let mut reader = std::fs::File::from(read_end);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            if reader.read_exact(&mut byte).is_ok() {
                cancel(what, libc::c_int::from(byte[0]));
            }
        })?;
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: zeroed sigaction structs for the kernel to fill or read; the handler only
        // stores an atomic and calls write(2); sa_mask emptied by sigemptyset before use.
        unsafe {
            // A signal the parent ignores stays ignored (`nohup`, a shell's background job
            // ignoring SIGINT): the user asked for the build to survive it.
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut previous) == 0
                && previous.sa_sigaction == libc::SIG_IGN
            {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

fn cancel(what: &str, signal: libc::c_int) -> ! {
    CANCELLED.store(true, Ordering::SeqCst);
    let name = match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "SIGTERM",
    };
    // Not eprintln!, which panics when stderr is gone (a closed terminal: SIGHUP).
    let doing = if what == "build" {
        ": stopping its steps and removing its files"
    } else {
        ""
    };
    let _ = writeln!(std::io::stderr(), "\n{what} cancelled ({name}){doing}");
    // The build's directories are claimed (and secrets removed) before its steps are
    // stopped, so that the build's own clean-up, running as the steps fail, leaves them to
    // this thread; no step starts from then on.
    rbuild_executor::remove_live_dirs(stop_children);
    std::process::exit(128 + signal);
}

/// SIGKILLs this process's children (the step helpers and the container-root worker; the
/// steps' own processes die with their helper, which they are bound to by PR_SET_PDEATHSIG or
/// a PID namespace) and waits up to two seconds for them to go.
fn stop_children() {
    let children = children();
    for &pid in &children {
        // SAFETY: kill(2) on a pid that is our child (it cannot be reused before we reap it).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let alive = children.iter().any(|&pid| {
            // Dead children are zombies until whoever waits for them reaps them.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|stat| {
                    !stat
                        .rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(false)
        });
        if !alive {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pids of this process's children, from every thread's `children` list.
fn children() -> Vec<libc::pid_t> {
    let mut pids = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return pids;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<libc::pid_t>().ok()),
            );
        }
    }
    pids
}
