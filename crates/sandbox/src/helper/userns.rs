//! The userns isolation: unshare, wait for id maps, fork the PID namespace's init, which
//! builds the mounts and runs the command as its child.

use std::io::BufRead;
use std::os::unix::net::UnixStream;

use crate::protocol::{recv, send, FromHelper, ToHelper};
use crate::spec::{IdMapping, Network, StepSpec};
use crate::sys::{cvt, decode_status, errno_name, fork, set_pdeathsig, waitpid};

use super::{exec::exec_command, mounts, HelperError};

/// Runs the step; returns when the PID namespace's init has ended (the result itself was
/// sent by init).
pub fn run(
    spec: &StepSpec,
    control: &UnixStream,
    reader: &mut impl BufRead,
) -> Result<(), HelperError> {
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    if spec.network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    // A cgroup namespace: the step sees its own cgroup as the root (/proc/self/cgroup),
    // as in a Docker container; its cgroupfs is read-only either way (mounts.rs).
    // SAFETY: unshare takes flags only.
    let unshared = cvt(unsafe { libc::unshare(flags | libc::CLONE_NEWCGROUP) });
    let unshared = match unshared {
        // A kernel built without cgroup namespaces: the rest still holds.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // SAFETY: as above.
            cvt(unsafe { libc::unshare(flags) })
        }
        other => other,
    };
    unshared.map_err(|e| {
        HelperError::new(
            "unshare",
            format!(
                "unshare(CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWPID|...): {}",
                errno_name(&e)
            ),
        )
    })?;
    send(
        control,
        &FromHelper::Unshared {
            pid: unsafe { libc::getpid() },
        },
    )
    .map_err(|e| HelperError::new("control", e.to_string()))?;
    let mapping = match recv::<ToHelper>(reader) {
        Ok(Some(ToHelper::Mapped(m))) => m,
        Ok(Some(ToHelper::MapFailed(msg))) => return Err(HelperError::new("id map", msg)),
        other => {
            return Err(HelperError::new(
                "id map",
                format!("unexpected reply from rbuild: {other:?}"),
            ))
        }
    };
    cvt(unsafe { libc::setresgid(0, 0, 0) })
        .map_err(|e| HelperError::new("id map", format!("setresgid(0): {e}")))?;
    cvt(unsafe { libc::setresuid(0, 0, 0) })
        .map_err(|e| HelperError::new("id map", format!("setresuid(0): {e}")))?;
    // Unsharing and changing credentials both clear the parent-death signal: set it again.
    set_pdeathsig(libc::SIGKILL).map_err(|e| HelperError::new("prctl", e.to_string()))?;
    if !super::parent_alive() {
        // Re-parented to a reaper: rbuild is already gone.
        return Err(HelperError::new("prctl", "rbuild exited during setup"));
    }
    let hostname = spec.hostname.as_bytes();
    cvt(unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) })
        .map_err(|e| HelperError::new("hostname", format!("{:?}: {e}", spec.hostname)))?;

    let init = fork().map_err(|e| HelperError::new("fork", e.to_string()))?;
    if init == 0 {
        let code = run_init(spec, control, mapping);
        unsafe { libc::_exit(code) };
    }
    let (_, status) = waitpid(init, 0).map_err(|e| HelperError::new("wait", e.to_string()))?;
    match decode_status(status) {
        (Some(0), _) => Ok(()),
        (code, signal) => Err(HelperError::new(
            "init",
            format!("the step's init process ended abnormally (code {code:?}, signal {signal:?})"),
        )),
    }
}

/// PID 1 of the step: sets up mounts, runs the command, reaps everything, and reports the
/// command's status. When it returns, the kernel kills whatever the step left running.
fn run_init(spec: &StepSpec, control: &UnixStream, mapping: IdMapping) -> i32 {
    let report = |e: HelperError| {
        let _ = send(control, &e.into_message());
        0
    };
    // If the helper dies (rbuild killed), the whole PID namespace goes with us.
    if let Err(e) = set_pdeathsig(libc::SIGKILL) {
        return report(HelperError::new("prctl", e.to_string()));
    }
    // The step's processes share our uid. Non-dumpable, we are out of their reach: no
    // ptrace or pidfd_getfd (our control socket), no /proc/1/environ, mem or fd; that needs
    // CAP_SYS_PTRACE over the namespace our memory was created in, the host's.
    // SAFETY: prctl with integer arguments only changes a flag of this process.
    if let Err(e) = cvt(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }) {
        return report(HelperError::new("prctl", format!("PR_SET_DUMPABLE: {e}")));
    }
    let stubs = match mounts::setup(spec) {
        Ok(stubs) => stubs,
        Err(e) => return report(e),
    };
    if send(control, &FromHelper::Stubs(stubs)).is_err() {
        return 1;
    }
    let child = match fork() {
        Ok(pid) => pid,
        Err(e) => return report(HelperError::new("fork", e.to_string())),
    };
    if child == 0 {
        unsafe { libc::setsid() };
        // Docker's default set and no more, before the user switch (which needs SETUID and
        // SETGID, both kept): the step's root, and any setuid program its user runs, gets
        // at most these. Init keeps its own (it reaps, nothing more).
        // The seccomp filter first: with CAP_SYS_ADMIN (still held here) it needs no
        // no_new_privs, so setuid programs keep working in the step.
        let e = match crate::seccomp::install_step_filter()
            .map_err(|e| HelperError::new("seccomp", e))
            .and_then(|()| {
                crate::caps::drop_to_docker_caps().map_err(|e| {
                    HelperError::new("capabilities", format!("dropping to Docker's set: {e}"))
                })
            }) {
            Ok(()) => exec_command(spec, mapping),
            Err(e) => e,
        };
        let _ = send(control, &e.into_message());
        unsafe { libc::_exit(127) };
    }
    loop {
        match waitpid(-1, 0) {
            Ok((pid, status)) if pid == child => {
                let (code, signal) = decode_status(status);
                let _ = send(control, &FromHelper::Exited { code, signal });
                return 0;
            }
            Ok(_) => continue,
            Err(e) => return report(HelperError::new("wait", e.to_string())),
        }
    }
}
