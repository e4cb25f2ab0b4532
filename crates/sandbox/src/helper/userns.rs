//! The userns isolation: unshare, wait for id maps, fork the PID namespace's init, which
//! builds the mounts and runs the command as its child.

use std::io::{self, BufRead};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use rustix::fs::{open, Mode, OFlags};
use rustix::process::{getpid, set_dumpable_behavior, setsid, DumpableBehavior};
use rustix::system::sethostname;
use rustix::thread::{set_thread_res_gid, set_thread_res_uid, Gid, Uid};

use crate::protocol::{recv, send, FromHelper, ToHelper};
use crate::spec::{IdMapping, Network, Rootfs, StepSpec};
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
    // SAFETY: unshare takes flags only, and none of them (no CLONE_FILES, CLONE_FS or
    // CLONE_VM) changes what this process's memory or descriptors are: new namespaces only
    // change what later calls see. (rustix's unshare is unsafe for that very reason.)
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
            pid: getpid().as_raw_nonzero().get(),
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
    let pinned;
    let spec = if mapping == IdMapping::RootRange {
        pinned = pin_paths(spec)?;
        &pinned.0
    } else {
        spec
    };
    // This thread's credentials only (libc's calls change every thread's): the same in the
    // single-threaded helper.
    set_thread_res_gid(Gid::ROOT, Gid::ROOT, Gid::ROOT)
        .map_err(|e| HelperError::new("id map", format!("setresgid(0): {}", io::Error::from(e))))?;
    set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT)
        .map_err(|e| HelperError::new("id map", format!("setresuid(0): {}", io::Error::from(e))))?;
    // Unsharing and changing credentials both clear the parent-death signal: set it again.
    set_pdeathsig(libc::SIGKILL).map_err(|e| HelperError::new("prctl", e.to_string()))?;
    if !super::parent_alive() {
        // Re-parented to a reaper: rbuild is already gone.
        return Err(HelperError::new("prctl", "rbuild exited during setup"));
    }
    sethostname(spec.hostname.as_bytes()).map_err(|e| {
        HelperError::new(
            "hostname",
            format!("{:?}: {}", spec.hostname, io::Error::from(e)),
        )
    })?;

    let init = fork().map_err(|e| HelperError::new("fork", e.to_string()))?;
    if init == 0 {
        let code = run_init(spec, control, mapping);
        // SAFETY: _exit ends this forked child at once, without running the helper's
        // atexit handlers or flushing buffers it shares with the helper.
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

/// A root build's step is root of a namespace whose ids are unprivileged host ids: once it
/// takes them (setresuid below) it cannot walk the store (0700, host root's) or rbuild's
/// scratch directories to the paths its mounts need. Until then it still has host root's
/// uid (its capabilities count only in the new namespace, so only what host root owns
/// opens): every such path is opened now and used as `/proc/self/fd/N` from then on, a
/// link walked without checking the directories above it. Opened after
/// unshare(CLONE_NEWNS), they belong to the step's mount namespace, as overlayfs requires
/// of its layers. A directory that gets a mount on top and is opened again afterwards (the
/// rootfs, the overlay's merged directory) is named through its parent instead, since
/// only a lookup by name crosses into the mount: that parent must be open to the range's
/// root (rbuild makes it so). The descriptors are close-on-exec: the command gets none.
fn pin_paths(spec: &StepSpec) -> Result<(StepSpec, Vec<OwnedFd>), HelperError> {
    let mut fds = Vec::new();
    let mut pinned = spec.clone();
    pinned.rootfs = match &spec.rootfs {
        Rootfs::Dir(dir) => Rootfs::Dir(pin_in_parent(dir, &mut fds)?),
        Rootfs::Overlay {
            lowerdirs,
            upperdir,
            workdir,
            merged,
        } => Rootfs::Overlay {
            lowerdirs: lowerdirs
                .iter()
                .map(|d| pin(d, &mut fds))
                .collect::<Result<_, _>>()?,
            upperdir: pin(upperdir, &mut fds)?,
            workdir: pin(workdir, &mut fds)?,
            merged: pin_in_parent(merged, &mut fds)?,
        },
    };
    for file in &mut pinned.etc_files {
        file.source = pin(&file.source, &mut fds)?;
    }
    for bind in &mut pinned.binds {
        // A source to unlink after mounting is named through its directory, which the
        // unlink needs.
        bind.source = if bind.remove_source {
            pin_in_parent(&bind.source, &mut fds)?
        } else {
            pin(&bind.source, &mut fds)?
        };
    }
    Ok((pinned, fds))
}

/// Opens `path` (`O_PATH`, close-on-exec) into `fds`; returns its `/proc/self/fd/N` name.
fn pin(path: &Path, fds: &mut Vec<OwnedFd>) -> Result<PathBuf, HelperError> {
    let fd = open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| pin_error(path, e.into()))?;
    let name = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    fds.push(fd);
    Ok(name)
}

/// `path` named through its pinned parent directory.
fn pin_in_parent(path: &Path, fds: &mut Vec<OwnedFd>) -> Result<PathBuf, HelperError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(HelperError::new(
            "id map",
            format!("{} has no parent directory", path.display()),
        ));
    };
    Ok(pin(parent, fds)?.join(name))
}

fn pin_error(path: &Path, e: std::io::Error) -> HelperError {
    HelperError::new(
        "id map",
        format!(
            "opening {} before taking the build's id range: {}",
            path.display(),
            errno_name(&e)
        ),
    )
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
    if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        return report(HelperError::new(
            "prctl",
            format!("PR_SET_DUMPABLE: {}", io::Error::from(e)),
        ));
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
        // EPERM only if we lead a group already, which a fresh child does not.
        let _ = setsid();
        // Docker's default set and no more, before the user switch (which needs SETUID and
        // SETGID, both kept): the step's root, and any setuid program its user runs, gets
        // at most these. Init keeps its own (it reaps, nothing more).
        // The seccomp filter first: with CAP_SYS_ADMIN (still held here) it needs no
        // no_new_privs, so setuid programs keep working in the step.
        let e = match crate::seccomp::install_step_filter()
            .map_err(|e| HelperError::new("seccomp", e.to_string()))
            .and_then(|()| {
                crate::caps::drop_to_docker_caps().map_err(|e| {
                    HelperError::new("capabilities", format!("dropping to Docker's set: {e}"))
                })
            }) {
            Ok(()) => exec_command(spec, mapping),
            Err(e) => e,
        };
        let _ = send(control, &e.into_message());
        // SAFETY: as for init above: end this forked child without the helper's atexit
        // handlers.
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
