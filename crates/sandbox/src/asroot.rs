//! A process that is root of a user namespace with the same id mapping the userns steps get
//! (container 0 → the caller, 1.. → its subordinate ranges): the start and handshake of the
//! container-root worker, whose requests (extracting layers with their owners, chown,
//! writing layers as container root) are `rbuild-rootfs`'s. An unprivileged user cannot
//! give a file to one of its subordinate ids from outside (no CAP_CHOWN there), but
//! container root inside such a namespace can, and the kernel translates container ids to
//! host ids on the way to the disk.
//!
//! The worker is this executable started again with the worker's own first argument (the
//! binary's `main` dispatches it to `rbuild_rootfs`), single-threaded, so it may unshare a
//! user namespace. It talks over a `SOCK_SEQPACKET` socket on fd 3: one JSON message per
//! packet ([`send_packet`], [`recv_packet`]), a file descriptor travelling beside a message
//! when needed (`SCM_RIGHTS`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rbuild_idmap::IdMap;
use serde::{Deserialize, Serialize};

use crate::spec::IdMapping;
use crate::SandboxError;

/// Largest message: a request holds at most a path or two, or a chunk of a change list.
pub const MAX_PACKET: usize = 64 * 1024;

/// The handshake between rbuild and a starting worker, before its requests.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Handshake {
    /// worker → rbuild: it (this host pid) unshared its user namespace and waits for its
    /// id maps.
    Unshared { pid: i32 },
    /// rbuild → worker: the namespace got its id maps (or could not: the message says why).
    Mapped(Result<IdMapping, String>),
    /// worker → rbuild: it is container root now and serves requests.
    Ready,
    /// worker → rbuild: the setup failed.
    Failed(String),
}

/// A started worker that is root in a user namespace mapped like the userns steps. Dropping
/// it closes the socket (the worker's signal to exit) and waits for the worker. Keep the
/// thread that started it alive as long as it is used: the worker dies with that thread
/// (PR_SET_PDEATHSIG).
#[derive(Debug)]
pub struct MappedWorker {
    socket: OwnedFd,
    child: Child,
    map: IdMap,
}

impl MappedWorker {
    /// Starts `program worker_arg parent_arg` with the socket on fd 3 and maps its user
    /// namespace once it has unshared one.
    pub(crate) fn start(
        program: &Path,
        worker_arg: &str,
        parent_arg: &str,
    ) -> Result<MappedWorker, SandboxError> {
        let map = crate::idmap::subid_map().ok_or_else(|| {
            SandboxError::Unavailable(format!(
                "no subordinate id range for {} (or no newuidmap/newgidmap): files can only \
                 belong to container root",
                crate::idmap::current_user_label()
            ))
        })?;
        let (ours, theirs) = seqpacket_pair()?;
        let theirs_raw = theirs.as_raw_fd();
        let mut command = Command::new(program);
        command
            .arg(worker_arg)
            .arg(parent_arg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        crate::protocol::prepare_helper_command(&mut command, Some(theirs_raw), &["TMPDIR"]);
        let child = command.spawn().map_err(|e| {
            SandboxError::io(
                format!("starting the container-root worker {}", program.display()),
                e,
            )
        })?;
        drop(theirs);
        let worker = MappedWorker {
            socket: ours,
            child,
            map,
        };
        worker.handshake()?;
        Ok(worker)
    }

    fn handshake(&self) -> Result<(), SandboxError> {
        let setup = |message: String| SandboxError::Helper {
            stage: "container root".into(),
            message,
        };
        let socket = self.socket.as_raw_fd();
        let pid = match recv_packet::<Handshake>(socket) {
            Ok(Some((Handshake::Unshared { pid }, _))) => pid,
            Ok(Some((Handshake::Failed(message), _))) => return Err(setup(message)),
            Ok(other) => {
                return Err(setup(format!(
                    "the worker ended or answered {other:?} instead of starting"
                )))
            }
            Err(e) => return Err(setup(format!("reading from the worker: {e}"))),
        };
        let mapped = match crate::idmap::write_maps(pid, None) {
            Ok(IdMapping::SubIds) => Ok(IdMapping::SubIds),
            Ok(other) => Err(format!(
                "the user namespace got a {other:?} id mapping, not the subordinate ranges"
            )),
            Err(e) => Err(e),
        };
        let failure = mapped.as_ref().err().cloned();
        send_packet(socket, &Handshake::Mapped(mapped), None)
            .map_err(|e| setup(format!("writing to the worker: {e}")))?;
        if let Some(message) = failure {
            return Err(setup(message));
        }
        match recv_packet::<Handshake>(socket) {
            Ok(Some((Handshake::Ready, _))) => Ok(()),
            Ok(Some((Handshake::Failed(message), _))) => Err(setup(message)),
            Ok(other) => Err(setup(format!("unexpected answer {other:?}"))),
            Err(e) => Err(setup(format!("reading from the worker: {e}"))),
        }
    }

    /// The container → host id map of the worker's namespace (and of every userns step).
    pub fn id_map(&self) -> &IdMap {
        &self.map
    }

    /// The socket to the worker, for [`send_packet`] and [`recv_packet`]. One request at a
    /// time: the caller serialises its requests.
    pub fn socket(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl Drop for MappedWorker {
    fn drop(&mut self) {
        // Closing our end is the worker's signal to exit.
        // SAFETY: shutdown on a descriptor this struct owns; no memory is involved.
        let _ = unsafe { libc::shutdown(self.socket.as_raw_fd(), libc::SHUT_RDWR) };
        let _ = self.child.wait();
    }
}

/// A pipe (both ends close-on-exec): the read end first.
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    crate::sys::cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 just returned these two descriptors, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    crate::sys::seqpacket_pair().map_err(|e| SandboxError::io("socketpair(SOCK_SEQPACKET)", e))
}

/// Sends `msg` as one packet, with `fd` attached when given.
pub fn send_packet<T: Serialize>(socket: RawFd, msg: &T, fd: Option<RawFd>) -> std::io::Result<()> {
    let data = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the sendmsg call.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = space as _;
        // SAFETY: the control buffer holds `space` bytes (64 ≥ CMSG_SPACE(4)), so the first
        // header and its data fit.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&header);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        }
    }
    loop {
        // SAFETY: `header` describes valid buffers.
        let n = unsafe { libc::sendmsg(socket, &header, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Receives one packet and the descriptor attached to it, if any; `None` at end of stream.
pub fn recv_packet<T: for<'de> Deserialize<'de>>(
    socket: RawFd,
) -> std::io::Result<Option<(T, Option<OwnedFd>)>> {
    let mut data = vec![0u8; MAX_PACKET];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: as in send_packet.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // SAFETY: `header` describes valid buffers.
        let n = unsafe { libc::recvmsg(socket, &mut header, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let mut fd = None;
    // SAFETY: the kernel filled `control` up to msg_controllen; CMSG_* walk only that.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            cmsg = libc::CMSG_NXTHDR(&header, cmsg);
        }
    }
    if n == 0 {
        return Ok(None);
    }
    // InvalidData: this message was bad, the stream is still in step (SEQPACKET drops a
    // truncated packet's rest).
    if header.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "message larger than a packet",
        ));
    }
    let msg = serde_json::from_slice(&data[..n]).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad message: {e}"))
    })?;
    Ok(Some((msg, fd)))
}
