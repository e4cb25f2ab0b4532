//! The helper process: rbuild re-executed as `__rbuild-sandbox-helper`, single-threaded, so
//! it may unshare a user namespace and fork freely.

mod asroot;
mod chroot;
mod exec;
mod mounts;
mod userns;

use std::io::BufReader;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

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

/// The helper's entry point; `args` are the arguments after `__rbuild-sandbox-helper`.
pub fn main(args: &[String]) -> ! {
    if args.first().map(String::as_str) == Some("probe") {
        crate::probe::helper_probe();
        std::process::exit(0);
    }
    // Our parent must not leave us running if it dies while we set up.
    let _ = crate::sys::set_pdeathsig(libc::SIGKILL);
    if unsafe { libc::getppid() } == 1 {
        std::process::exit(125);
    }
    if crate::sys::set_cloexec(CONTROL_FD, true).is_err() {
        eprintln!("rbuild sandbox helper: no control socket on fd {CONTROL_FD}; this command is internal to rbuild");
        std::process::exit(125);
    }
    if args.first().map(String::as_str) == Some(crate::asroot::AS_ROOT_ARG) {
        asroot::main();
    }
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
