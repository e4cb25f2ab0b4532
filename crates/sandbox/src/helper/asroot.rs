//! The worker side of `crate::asroot`: the process unshares a user namespace, waits for
//! rbuild to write its id maps and becomes root there; then `rbuild-rootfs` serves its
//! requests on the socket.

use std::os::fd::RawFd;

use crate::asroot::{recv_packet, send_packet, Handshake};
use crate::protocol::CONTROL_FD;
use crate::sys::{cvt, errno_name, set_pdeathsig};

/// Call in the worker process (started by [`crate::Sandbox::start_mapped_worker`]) with the
/// argument that followed the worker's own first argument (`--parent=PID`). Returns the
/// socket to rbuild once this process is root of its mapped user namespace; on a failure,
/// reports it to rbuild and exits.
pub fn become_container_root(parent_arg: Option<&str>) -> RawFd {
    if let Some(pid) = parent_arg.and_then(|a| a.strip_prefix(crate::PARENT_ARG)) {
        super::set_expected_parent(pid);
    }
    // Our parent must not leave us running if it dies while we set up.
    let _ = set_pdeathsig(libc::SIGKILL);
    if !super::parent_alive() {
        std::process::exit(125);
    }
    if crate::sys::set_cloexec(CONTROL_FD, true).is_err() {
        eprintln!(
            "rbuild container-root worker: no control socket on fd {CONTROL_FD}; this command \
             is internal to rbuild"
        );
        std::process::exit(125);
    }
    match enter() {
        Ok(()) => CONTROL_FD,
        Err(message) => {
            let _ = send_packet(CONTROL_FD, &Handshake::Failed(message), None);
            std::process::exit(1)
        }
    }
}

fn enter() -> Result<(), String> {
    // SAFETY: unshare takes flags only; this process is single-threaded (just started).
    cvt(unsafe { libc::unshare(libc::CLONE_NEWUSER) })
        .map_err(|e| format!("unshare(CLONE_NEWUSER): {}", errno_name(&e)))?;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    send_packet(CONTROL_FD, &Handshake::Unshared { pid }, None)
        .map_err(|e| format!("writing to rbuild: {e}"))?;
    match recv_packet::<Handshake>(CONTROL_FD) {
        Ok(Some((Handshake::Mapped(Ok(_)), _))) => {}
        Ok(Some((Handshake::Mapped(Err(message)), _))) => return Err(message),
        other => return Err(format!("unexpected message from rbuild: {other:?}")),
    }
    // SAFETY: setresgid/setresuid take ids only.
    cvt(unsafe { libc::setresgid(0, 0, 0) }).map_err(|e| format!("setresgid(0): {e}"))?;
    // SAFETY: as above.
    cvt(unsafe { libc::setresuid(0, 0, 0) }).map_err(|e| format!("setresuid(0): {e}"))?;
    // The caller's supplementary groups would show as the overflow gid: drop them.
    // SAFETY: an empty list (size 0): the null pointer is not read.
    let _ = unsafe { libc::setgroups(0, std::ptr::null()) };
    // Unsharing and changing credentials both clear the parent-death signal: set it again.
    set_pdeathsig(libc::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
    if !super::parent_alive() {
        return Err("rbuild exited during setup".into());
    }
    send_packet(CONTROL_FD, &Handshake::Ready, None).map_err(|e| format!("writing to rbuild: {e}"))
}
