//! The chroot isolation, for root inside a container whose seccomp profile forbids user
//! namespaces: no mounts at all. Device nodes and /etc files the rootfs lacks are created
//! as stubs (removed by the snapshotter); the helper is a child subreaper so it can kill
//! whatever the step leaves behind.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::fs::{open, Mode, OFlags};
use rustix::process::{
    chdir, chroot, fchdir, getpid, kill_process, kill_process_group, set_child_subreaper, setsid,
    Pid, Signal,
};

use crate::protocol::{send, FromHelper};
use crate::rootpath::{open_in_root, CreateAs};
use crate::spec::{IdMapping, Network, Rootfs, StepSpec, Stub};
use crate::sys::{cvt, decode_status, errno_name, fork, set_pdeathsig, waitpid};

use super::{exec::exec_command, HelperError};

/// (name, major, minor) of the nodes a step gets when the rootfs lacks them.
const DEV_NODES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// A signal set of `signals`, for sigprocmask and signalfd (rustix has neither: its signal
/// masks are for runtimes that own all signal handling).
fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is a plain bit array, for which all zeroes is a valid value (the
    // empty set, which sigemptyset makes it anyway).
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigemptyset and sigaddset only write into the set we own; a number that is no
    // signal fails with EINVAL and changes nothing.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: as above.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

/// Creates what the rootfs lacks for the step; returns the stubs.
fn prepare_rootfs(root: &OwnedFd, spec: &StepSpec) -> Result<Vec<Stub>, HelperError> {
    let mut stubs = Vec::new();
    let mut ignored = Vec::new();
    // The mount points the userns path creates, in its order, so that one Dockerfile gives
    // one image whatever the isolation (the build keeps these three, as BuildKit's runc
    // leaves them). Nothing is mounted on them here.
    for dir in ["/proc", "/dev", "/sys"] {
        open_in_root(root.as_fd(), dir, CreateAs::Dir, &mut stubs)
            .map_err(|e| HelperError::new("mount points", format!("{dir}: {e}")))?;
    }
    for (name, major, minor) in DEV_NODES {
        let path = format!("/dev/{name}");
        if open_in_root(root.as_fd(), &path, CreateAs::Nothing, &mut ignored).is_ok() {
            continue;
        }
        // Without CAP_MKNOD the step simply has no such node.
        let _ = open_in_root(
            root.as_fd(),
            &path,
            CreateAs::CharDevice(libc::makedev(major, minor)),
            &mut stubs,
        );
    }
    for file in &spec.etc_files {
        if open_in_root(root.as_fd(), &file.target, CreateAs::Nothing, &mut ignored).is_ok() {
            // An existing file is left as the image has it: there is no way to overlay it.
            continue;
        }
        let content = std::fs::read(&file.source).map_err(|e| {
            HelperError::new("etc files", format!("{}: {e}", file.source.display()))
        })?;
        let fd = open_in_root(root.as_fd(), &file.target, CreateAs::File, &mut stubs)
            .map_err(|e| HelperError::new("etc files", format!("{}: {e}", file.target)))?;
        let path = crate::sys::fd_path(fd.as_fd());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&content))
            .map_err(|e| HelperError::new("etc files", format!("{}: {e}", file.target)))?;
    }
    let mut cwd_created = Vec::new();
    open_in_root(root.as_fd(), &spec.cwd, CreateAs::Dir, &mut cwd_created)
        .map_err(|e| HelperError::new("working directory", format!("{}: {e}", spec.cwd)))?;
    Ok(stubs)
}

/// SIGKILLs every remaining descendant (they are re-parented to us as subreaper) and reaps
/// them all.
fn kill_descendants(pgid: libc::pid_t) {
    if let Some(group) = Pid::from_raw(pgid) {
        // ESRCH: the group is gone already.
        let _ = kill_process_group(group, Signal::KILL);
    }
    let me = getpid().as_raw_nonzero().get();
    loop {
        // No child left means no descendant left (an orphan is re-parented to us, the
        // subreaper, before its parent is gone): the usual case, with no /proc to read.
        match waitpid(-1, libc::WNOHANG) {
            Err(_) => break,
            Ok((0, _)) => {}
            Ok(_) => continue,
        }
        for pid in crate::sys::children_of(me)
            .into_iter()
            .filter_map(Pid::from_raw)
        {
            let _ = kill_process(pid, Signal::KILL);
        }
        match waitpid(-1, 0) {
            Ok(_) => continue,
            Err(_) => break, // ECHILD: nothing left.
        }
    }
}

pub fn run(spec: &StepSpec, control: &UnixStream) -> Result<(), HelperError> {
    let Rootfs::Dir(rootfs) = &spec.rootfs else {
        return Err(HelperError::new(
            "chroot",
            "an overlay rootfs needs userns isolation (use the copy snapshotter with chroot)",
        ));
    };
    // No mount(2) here: the caller puts a mount's content in the rootfs itself (rbuild's
    // build crate does for RUN --mount). Never drop one silently.
    if let Some(bind) = spec.binds.first() {
        return Err(HelperError::new(
            "mounts",
            format!(
                "chroot isolation cannot mount {} on {}: it uses no mount(2); place the content in the root instead",
                bind.source.display(),
                bind.target
            ),
        ));
    }
    // SIGTERM, not SIGKILL, on rbuild's death: we must live long enough to kill the step.
    set_pdeathsig(libc::SIGTERM).map_err(|e| HelperError::new("prctl", e.to_string()))?;
    set_child_subreaper(Some(getpid())).map_err(|e| HelperError::new("prctl", e.to_string()))?;
    let handled = signal_set(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD]);
    // SAFETY: as in signal_set: the empty set is a valid sigset_t.
    let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigprocmask reads one set and writes the other, both ours and alive across
    // the call; blocking signals in this single-threaded helper breaks no Rust invariant
    // (they are read from the signalfd instead).
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &handled, &mut old_mask) };
    // SAFETY: signalfd(-1, ...) only reads the set and returns a new descriptor.
    let sigfd = cvt(unsafe { libc::signalfd(-1, &handled, libc::SFD_CLOEXEC) })
        .map_err(|e| HelperError::new("signalfd", e.to_string()))?;
    // SAFETY: `sigfd` was just returned by signalfd and is owned by nothing else.
    let sigfd = unsafe { OwnedFd::from_raw_fd(sigfd) };

    let root_fd = open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| HelperError::new("chroot", format!("{}: {e}", rootfs.display())))?;
    let stubs = prepare_rootfs(&root_fd, spec)?;
    send(control, &FromHelper::Stubs(stubs))
        .map_err(|e| HelperError::new("control", e.to_string()))?;

    // Pre-step hard-link groups: the step runs under the copy-up filter, whose listener
    // comes back over this pair (`restricted::copy_up`). None: no filter, no cost.
    let copy_up = if spec.copy_up_inodes.is_empty() {
        None
    } else {
        Some((
            crate::restricted::copy_up::Groups::new(&spec.copy_up_inodes),
            listener_pair()?,
        ))
    };
    let child = fork().map_err(|e| HelperError::new("fork", e.to_string()))?;
    if child == 0 {
        // SAFETY: restores the mask saved above (a valid set, alive across the call); the
        // command must not start with our signals blocked.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
        // EPERM only if we lead a group already, which a fresh child does not.
        let _ = setsid();
        let _ = set_pdeathsig(libc::SIGKILL);
        // The seccomp filter before Landlock and the capability drop: as real root it then
        // needs no no_new_privs of its own.
        let e = match chroot_into(&root_fd)
            .and_then(|()| match &copy_up {
                Some((_, (_, theirs))) => install_copy_up(theirs),
                None => Ok(()),
            })
            .and_then(|()| {
                crate::seccomp::install_step_filter()
                    .map_err(|e| HelperError::new("seccomp", e.to_string()))
            })
            .and_then(|()| confine(&root_fd, spec.network))
        {
            Ok(()) => exec_command(spec, IdMapping::None),
            Err(e) => e,
        };
        let _ = send(control, &e.into_message());
        // SAFETY: _exit ends this forked child at once, without running the parent's
        // atexit handlers or flushing buffers it shares with the helper.
        unsafe { libc::_exit(127) };
    }

    let (groups, mut listener) = match copy_up {
        Some((groups, (ours, theirs))) => {
            drop(theirs);
            // Nothing back: the child failed before the step and reports why itself.
            let listener = match crate::restricted::recv_status(ours.as_raw_fd()) {
                Ok((0, Some(listener))) => Some(listener),
                _ => None,
            };
            (groups, listener)
        }
        None => Default::default(),
    };
    loop {
        if let Some(l) = &listener {
            let mut pfds = [
                libc::pollfd {
                    fd: sigfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: l.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds; no timeout: a signal (the step's end among them)
            // or a notification wakes it.
            if unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) } < 0 {
                continue;
            }
            if pfds[1].revents & libc::POLLIN != 0 {
                if let Err(e) = crate::restricted::copy_up::serve_one(l, &groups) {
                    kill_descendants(child);
                    return Err(HelperError::new("copy-up supervisor", e.to_string()));
                }
                continue;
            }
            if pfds[1].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                // No process holds the filter any more.
                listener = None;
            }
            if pfds[0].revents & libc::POLLIN == 0 {
                continue;
            }
        }
        // One `struct signalfd_siginfo` per read; its first field is `ssi_signo` (u32).
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        match rustix::io::read(&sigfd, &mut info) {
            Ok(n) if n == info.len() => {}
            _ => continue,
        }
        let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
        if signo as libc::c_int != libc::SIGCHLD {
            kill_descendants(child);
            return Err(HelperError::new("signal", "the build was interrupted"));
        }
        // Reap everything that ended; stop when the command itself did.
        while let Ok((pid, status)) = waitpid(-1, libc::WNOHANG) {
            if pid == 0 {
                break;
            }
            if pid == child {
                kill_descendants(child);
                let (code, signal) = decode_status(status);
                let _ = send(control, &FromHelper::Exited { code, signal });
                return Ok(());
            }
        }
    }
}

/// Landlock to the root and the capabilities a chroot step must not have (see
/// `crate::landlock`). A kernel without Landlock leaves the chroot and the dropped
/// capabilities (the build warned once); a Landlock that is there but fails is an error.
/// There is no network namespace here: `Network::None` refuses TCP through Landlock
/// (ABI 4) and drops CAP_NET_RAW, and is an error where the kernel cannot.
fn confine(root: &OwnedFd, network: Network) -> Result<(), HelperError> {
    let abi = crate::landlock::kernel_abi();
    let no_network = network == Network::None;
    if no_network {
        let enough = matches!(abi, Ok(v) if v >= crate::landlock::TCP_ABI);
        if !enough {
            return Err(HelperError::new(
                "network",
                format!(
                    "--network=none with chroot isolation refuses TCP through Landlock ABI {} (Linux 6.7), \
                     and this kernel has {}; use userns isolation for a network namespace",
                    crate::landlock::TCP_ABI,
                    crate::landlock::describe(&abi)
                ),
            ));
        }
    }
    if abi.is_ok() {
        crate::landlock::restrict_to_root(root.as_fd(), no_network)
            .map_err(|e| HelperError::new("landlock", e.to_string()))?;
    }
    crate::landlock::drop_capabilities(no_network)
        .map_err(|e| HelperError::new("capabilities", e.to_string()))
}

/// The socket pair the copy-up filter's listener crosses from the step's process to the
/// helper.
fn listener_pair() -> Result<(OwnedFd, OwnedFd), HelperError> {
    crate::sys::seqpacket_pair()
        .map_err(|e| HelperError::new("copy-up", format!("socketpair: {e}")))
}

/// In the step's process, after the chroot: installs the copy-up filter and hands its
/// listener to the helper through `theirs`.
fn install_copy_up(theirs: &OwnedFd) -> Result<(), HelperError> {
    match crate::restricted::copy_up::install() {
        Ok(listener) => {
            if crate::restricted::send_status(theirs.as_raw_fd(), 0, Some(listener.as_raw_fd())) {
                Ok(())
            } else {
                Err(HelperError::new(
                    "copy-up",
                    "could not hand the filter's listener to the helper",
                ))
            }
        }
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            crate::restricted::send_status(theirs.as_raw_fd(), errno, None);
            Err(HelperError::new(
                "copy-up",
                format!(
                    "seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER): {}",
                    errno_name(&e)
                ),
            ))
        }
    }
}

fn chroot_into(root: &OwnedFd) -> Result<(), HelperError> {
    fchdir(root)
        .map_err(|e| HelperError::new("chroot", format!("fchdir: {}", io::Error::from(e))))?;
    chroot(c".").map_err(|e| {
        HelperError::new(
            "chroot",
            format!("chroot: {}", errno_name(&io::Error::from(e))),
        )
    })?;
    chdir(c"/")
        .map_err(|e| HelperError::new("chroot", format!("chdir /: {}", io::Error::from(e))))?;
    Ok(())
}
