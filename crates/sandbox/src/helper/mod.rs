//! The helper process: rbuild re-executed as `__rbuild-sandbox-helper`, single-threaded, so
//! it may unshare a user namespace and fork freely.

pub(crate) mod asroot;
mod chroot;
pub(crate) mod exec;
mod mounts;
mod userns;

use std::io::BufReader;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::protocol::{recv, send, FromHelper, ToHelper, CONTROL_FD};
use crate::spec::Isolation;

/// A setup failure inside the helper, reported to rbuild as `FromHelper::Error`.
#[derive(Debug)]
pub struct HelperError {
    stage: String,
    message: String,
}

impl HelperError {
    pub fn new(stage: &str, message: impl Into<String>) -> Self {
        HelperError {
            stage: stage.to_string(),
            message: message.into(),
        }
    }

    pub fn into_message(self) -> FromHelper {
        FromHelper::Error {
            stage: self.stage,
            message: self.message,
        }
    }
}

/// The pid of the process that started the helper (`--parent=PID`), 0 when not given.
static EXPECTED_PARENT: AtomicI32 = AtomicI32::new(0);

/// Whether the process that started the helper is still its parent. A parent that died is
/// replaced by a reaper (init, a subreaper): comparing with the pid it had, not with 1,
/// keeps this right when rbuild itself is PID 1 (a container's entrypoint). Without a
/// `--parent=` argument only the parent-death signal guards.
pub(crate) fn parent_alive() -> bool {
    let expected = EXPECTED_PARENT.load(Ordering::Relaxed);
    let parent = rustix::process::getppid().map_or(0, |pid| pid.as_raw_nonzero().get());
    expected == 0 || parent == expected
}

/// Records the pid given by `--parent=PID` (-1, which no parent has, when it is not a
/// number).
pub(crate) fn set_expected_parent(pid: &str) {
    EXPECTED_PARENT.store(pid.parse().unwrap_or(-1), Ordering::Relaxed);
}

/// The helper's entry point; `args` are the arguments after `__rbuild-sandbox-helper`.
pub fn main(args: &[String]) -> ! {
    let args = match args.first().and_then(|a| a.strip_prefix(crate::PARENT_ARG)) {
        Some(pid) => {
            set_expected_parent(pid);
            &args[1..]
        }
        None => args,
    };
    if args.first().map(String::as_str) == Some("probe") {
        crate::probe::helper_probe();
        std::process::exit(0);
    }
    // Our parent must not leave us running if it dies while we set up.
    let _ = crate::sys::set_pdeathsig(libc::SIGKILL);
    if !parent_alive() {
        std::process::exit(125);
    }
    if crate::sys::set_cloexec(CONTROL_FD, true).is_err() {
        eprintln!("rbuild sandbox helper: no control socket on fd {CONTROL_FD}; this command is internal to rbuild");
        std::process::exit(125);
    }
    // SAFETY: fd 3 is open (set_cloexec above succeeded on it): rbuild hands the helper its
    // end of the control socket there, and nothing else in this process owns or closes it.
    let control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    let Ok(read_half) = control.try_clone() else {
        std::process::exit(125);
    };
    let mut reader = BufReader::new(read_half);
    let spec = match recv::<ToHelper>(&mut reader) {
        Ok(Some(ToHelper::Run(spec, seccomp))) => {
            crate::seccomp::set_step_filter(seccomp);
            spec
        }
        _ => std::process::exit(125),
    };
    let result = match spec.isolation {
        Isolation::Userns => userns::run(&spec, &control, &mut reader),
        Isolation::Chroot => chroot::run(&spec, &control),
        Isolation::Restricted => crate::restricted::step::run(&spec, &control, &mut reader),
        Isolation::Auto => Err(HelperError::new(
            "isolation",
            "rbuild must resolve `auto` before starting the helper",
        )),
    };
    if let Err(e) = result {
        let _ = send(&control, &e.into_message());
    }
    std::process::exit(0);
}
