//! Filesystem work done as root of a user namespace with the same id mapping the userns
//! steps get: extracting layers with their owners, chown, removing trees of files owned by
//! subordinate ids. An unprivileged user cannot give a file to one of its subordinate ids
//! from outside (no CAP_CHOWN there), but container root inside such a namespace can, and
//! the kernel translates container ids to host ids on the way to the disk.
//!
//! The work runs in a helper (`__rbuild-sandbox-helper as-root`, single-threaded, so it may
//! unshare a user namespace) that lives as long as its [`ContainerRoot`] and serves one
//! request at a time over a `SOCK_SEQPACKET` socket on fd 3: one JSON message per packet,
//! a layer blob travelling as a file descriptor beside its request (`SCM_RIGHTS`).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use rbuild_layer::{Change, Compression, IdMap, LayerInfo, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::spec::IdMapping;
use crate::SandboxError;

/// The helper argument (after `__rbuild-sandbox-helper`) that starts the worker.
pub(crate) const AS_ROOT_ARG: &str = "as-root";

/// Largest message: a request holds at most a path or two.
const MAX_PACKET: usize = 64 * 1024;

/// parent → worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Request {
    /// The worker's user namespace got its id maps (or could not: the message says why).
    Mapped(Result<IdMapping, String>),
    /// Apply the layer blob sent as the packet's descriptor onto `dir`, owners kept.
    ApplyLayer {
        dir: Vec<u8>,
    },
    /// Fill the empty directory `dst` with hard links to `src`'s files (`link_tree`).
    LinkTree {
        src: Vec<u8>,
        dst: Vec<u8>,
    },
    /// Run the registered task `name` on `input`; its output goes to the file sent as the
    /// packet's descriptor.
    Task {
        name: String,
        input: String,
    },
    /// `lchown(path, uid, gid)` with container ids.
    Lchown {
        path: Vec<u8>,
        uid: u32,
        gid: u32,
    },
    /// Remove `path` and everything below it (never following symlinks).
    RemoveAll {
        path: Vec<u8>,
    },
    /// `mkdir(path, mode)` (then chmod, so the umask does not matter).
    CreateDir {
        path: Vec<u8>,
        mode: u32,
    },
    /// Remove a non-directory, or an empty directory.
    Remove {
        path: Vec<u8>,
        dir: bool,
    },
    Symlink {
        target: Vec<u8>,
        path: Vec<u8>,
    },
    /// Create `path` (which must not exist, mode 0600) with the content of the file sent
    /// as the packet's descriptor.
    CopyFile {
        path: Vec<u8>,
        /// Then as `SetMeta` (one round trip for a COPY's file).
        owner: Option<(u32, u32)>,
        mode: Option<u32>,
        mtime: Option<(i64, i64)>,
    },
    /// Part of the change set of the next `WriteLayer` (a change set can be larger than a
    /// packet): (kind: `u` upsert, `d` delete, `o` opaque dir; path).
    /// `first` starts a new set (whatever a failed earlier request left is dropped).
    LayerChanges {
        first: bool,
        changes: Vec<(char, Vec<u8>)>,
    },
    /// Write the layer of the changes sent before under `root` to the pipe sent as the
    /// packet's descriptor; the reply is `Reply::Layer`.
    WriteLayer {
        root: Vec<u8>,
        compression: String,
        level: Option<u32>,
        source_date_epoch: Option<i64>,
        threads: usize,
        no_xattrs: bool,
    },
    /// Owner (lchown), then mode (not on a symlink), then mtime (never following).
    SetMeta {
        path: Vec<u8>,
        owner: Option<(u32, u32)>,
        mode: Option<u32>,
        mtime: Option<(i64, i64)>,
    },
}

/// worker → parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reply {
    /// The worker (this host pid) unshared its user namespace and waits for its id maps.
    Unshared {
        pid: i32,
    },
    /// The request (or the setup) succeeded.
    Done,
    Failed(String),
    /// A layer was written: its digests (`sha256:...`) and sizes.
    Layer {
        diff_id: String,
        digest: String,
        size: u64,
        uncompressed_size: u64,
    },
}

/// Work a library above this crate gives the container-root worker: reading trees that
/// other container users keep private (0700 directories the caller cannot list), say. Input
/// and output are the task's own encoding.
pub type RootTask = fn(&str) -> Result<Vec<u8>, String>;

static ROOT_TASKS: std::sync::OnceLock<&'static [(&'static str, RootTask)]> =
    std::sync::OnceLock::new();

/// Registers the tasks [`ContainerRoot::run_task`] can run. The worker is this executable
/// started again, so call it in `main` before [`crate::maybe_run_helper`]. The first call
/// wins.
pub fn register_root_tasks(tasks: &'static [(&'static str, RootTask)]) {
    let _ = ROOT_TASKS.set(tasks);
}

pub(crate) fn root_task(name: &str) -> Option<RootTask> {
    ROOT_TASKS
        .get()
        .and_then(|tasks| tasks.iter().find(|(n, _)| *n == name).map(|(_, t)| *t))
}

/// A process that is root in a user namespace mapped like the userns steps (container 0 →
/// the caller, 1.. → its subordinate ranges), doing filesystem work for the caller. Only
/// for unprivileged callers with a subordinate range (see [`crate::subid_map`]). Dropping it
/// ends the worker. Keep the thread that started it alive as long as it is used: like the
/// step helper, the worker dies with that thread (PR_SET_PDEATHSIG).
#[derive(Debug)]
pub struct ContainerRoot {
    socket: Mutex<OwnedFd>,
    child: Mutex<Child>,
    map: IdMap,
}

impl ContainerRoot {
    pub(crate) fn start(program: &Path, args: &[String]) -> Result<ContainerRoot, SandboxError> {
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
            .args(args)
            .arg(AS_ROOT_ARG)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        crate::protocol::prepare_helper_command(&mut command, Some(theirs_raw), &["TMPDIR"]);
        let child = command.spawn().map_err(|e| {
            SandboxError::io(
                format!("starting the sandbox helper {}", program.display()),
                e,
            )
        })?;
        drop(theirs);
        let root = ContainerRoot {
            socket: Mutex::new(ours),
            child: Mutex::new(child),
            map,
        };
        root.handshake()?;
        Ok(root)
    }

    fn handshake(&self) -> Result<(), SandboxError> {
        let setup = |message: String| SandboxError::Helper {
            stage: "container root".into(),
            message,
        };
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        let pid = match recv_packet::<Reply>(socket.as_raw_fd()) {
            Ok(Some((Reply::Unshared { pid }, _))) => pid,
            Ok(Some((Reply::Failed(message), _))) => return Err(setup(message)),
            Ok(other) => {
                return Err(setup(format!(
                    "the helper ended or answered {other:?} instead of starting"
                )))
            }
            Err(e) => return Err(setup(format!("reading from the helper: {e}"))),
        };
        let mapped = match crate::idmap::write_maps(pid, None) {
            Ok(IdMapping::SubIds) => Ok(IdMapping::SubIds),
            Ok(other) => Err(format!(
                "the user namespace got a {other:?} id mapping, not the subordinate ranges"
            )),
            Err(e) => Err(e),
        };
        let failure = mapped.as_ref().err().cloned();
        send_packet(socket.as_raw_fd(), &Request::Mapped(mapped), None)
            .map_err(|e| setup(format!("writing to the helper: {e}")))?;
        if let Some(message) = failure {
            return Err(setup(message));
        }
        match recv_packet::<Reply>(socket.as_raw_fd()) {
            Ok(Some((Reply::Done, _))) => Ok(()),
            Ok(Some((Reply::Failed(message), _))) => Err(setup(message)),
            Ok(other) => Err(setup(format!("unexpected answer {other:?}"))),
            Err(e) => Err(setup(format!("reading from the helper: {e}"))),
        }
    }

    /// The container → host id map of the worker's namespace (and of every userns step).
    pub fn id_map(&self) -> &IdMap {
        &self.map
    }

    /// Extracts `blob` (a gzip/zstd/plain layer) onto `dir` with the owners it records
    /// (container ids, which land on disk as the mapped host ids). Device nodes are skipped:
    /// mknod is not permitted in a user namespace.
    pub fn apply_layer(&self, blob: &File, dir: &Path) -> Result<(), String> {
        self.call(
            &Request::ApplyLayer {
                dir: path_bytes(dir),
            },
            Some(blob.as_raw_fd()),
        )
    }

    /// Fills the empty directory `dst` with hard links to the files under `src` and copies
    /// of its directories ([`rbuild_layer::link_tree`]), as container root: linking files
    /// of other container users is permitted there, and not to the caller.
    pub fn link_tree(&self, src: &Path, dst: &Path) -> Result<(), String> {
        self.call(
            &Request::LinkTree {
                src: path_bytes(src),
                dst: path_bytes(dst),
            },
            None,
        )
    }

    /// Runs the task `name` (see [`register_root_tasks`]) on `input` as container root and
    /// returns its output.
    pub fn run_task(&self, name: &str, input: &str) -> Result<Vec<u8>, String> {
        use std::io::{Read, Seek};
        // SAFETY: a NUL-terminated name; the descriptor returned is owned here.
        let fd = unsafe { libc::memfd_create(c"rbuild-task".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let mut output = unsafe { File::from_raw_fd(fd) };
        self.call(
            &Request::Task {
                name: name.to_string(),
                input: input.to_string(),
            },
            Some(output.as_raw_fd()),
        )?;
        let mut bytes = Vec::new();
        output
            .seek(std::io::SeekFrom::Start(0))
            .and_then(|_| output.read_to_end(&mut bytes))
            .map_err(|e| format!("reading the output of {name}: {e}"))?;
        Ok(bytes)
    }

    /// `lchown` to container ids `uid:gid`; fails clearly for an id outside the mapping.
    pub fn lchown(&self, path: &Path, uid: u32, gid: u32) -> Result<(), String> {
        self.check_mapped(path, uid, gid)?;
        self.call(
            &Request::Lchown {
                path: path_bytes(path),
                uid,
                gid,
            },
            None,
        )
        .map_err(|e| format!("chown of {} to {uid}:{gid}: {e}", path.display()))
    }

    /// Removes `path` and everything below it, whoever of the mapped ids owns it.
    pub fn remove_all(&self, path: &Path) -> Result<(), String> {
        self.call(
            &Request::RemoveAll {
                path: path_bytes(path),
            },
            None,
        )
        .map_err(|e| format!("removing {}: {e}", path.display()))
    }

    /// Creates directory `path` with `mode` (owned by container root).
    pub fn create_dir(&self, path: &Path, mode: u32) -> Result<(), String> {
        self.call(
            &Request::CreateDir {
                path: path_bytes(path),
                mode,
            },
            None,
        )
    }

    /// Removes the non-directory at `path` (or, with `dir`, the empty directory).
    pub fn remove(&self, path: &Path, dir: bool) -> Result<(), String> {
        self.call(
            &Request::Remove {
                path: path_bytes(path),
                dir,
            },
            None,
        )
    }

    /// Creates symlink `path` pointing at `target`.
    pub fn symlink(&self, target: &Path, path: &Path) -> Result<(), String> {
        self.call(
            &Request::Symlink {
                target: path_bytes(target),
                path: path_bytes(path),
            },
            None,
        )
    }

    /// Creates `path` (it must not exist; mode 0600, owned by container root) holding the
    /// content of `source`, read from its current offset, then sets what is given of its
    /// owner, mode and mtime as [`ContainerRoot::set_metadata`] does.
    pub fn copy_file(
        &self,
        source: &File,
        path: &Path,
        owner: Option<(u32, u32)>,
        mode: Option<u32>,
        mtime: Option<(i64, i64)>,
    ) -> Result<(), String> {
        if let Some((uid, gid)) = owner {
            self.check_mapped(path, uid, gid)?;
        }
        self.call(
            &Request::CopyFile {
                path: path_bytes(path),
                owner,
                mode,
                mtime,
            },
            Some(source.as_raw_fd()),
        )
    }

    /// Sets what is given of owner (container ids), mode (ignored for a symlink) and mtime
    /// of `path`, in that order (chown clears setuid bits), never following a symlink.
    pub fn set_metadata(
        &self,
        path: &Path,
        owner: Option<(u32, u32)>,
        mode: Option<u32>,
        mtime: Option<(i64, i64)>,
    ) -> Result<(), String> {
        if let Some((uid, gid)) = owner {
            self.check_mapped(path, uid, gid)?;
        }
        self.call(
            &Request::SetMeta {
                path: path_bytes(path),
                owner,
                mode,
                mtime,
            },
            None,
        )
    }

    /// Writes the layer of `changes` under `root` to `out` as [`rbuild_layer::write_layer`]
    /// does, but reading the files as container root: it may read what the image's other
    /// users keep private, and it sees owners (and file capabilities) as the container's
    /// ids, so the layer is the one a root build writes (`options.id_map` is not used).
    pub fn write_layer<W: std::io::Write + Send>(
        &self,
        root: &Path,
        changes: &[Change],
        mut out: W,
        options: &WriteOptions,
    ) -> Result<LayerInfo, String> {
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0;
        let mut first = true;
        for (i, change) in changes.iter().enumerate() {
            let kind = match change {
                Change::Upsert(_) => 'u',
                Change::Delete(_) => 'd',
                Change::OpaqueDir(_) => 'o',
            };
            let path = path_bytes(change.path());
            // JSON writes a byte as at most 4 characters (`255,`).
            chunk_bytes += 4 * path.len() + 16;
            chunk.push((kind, path));
            if chunk_bytes > MAX_PACKET / 8 || i + 1 == changes.len() {
                let request = Request::LayerChanges {
                    first,
                    changes: std::mem::take(&mut chunk),
                };
                self.call(&request, None)?;
                chunk_bytes = 0;
                first = false;
            }
        }
        if first {
            let request = Request::LayerChanges {
                first,
                changes: Vec::new(),
            };
            self.call(&request, None)?;
        }
        let request = Request::WriteLayer {
            root: path_bytes(root),
            compression: compression_name(options.compression).to_string(),
            level: options.level,
            source_date_epoch: options.source_date_epoch,
            threads: options.threads,
            no_xattrs: options.no_xattrs,
        };
        let (read, write) = pipe().map_err(|e| format!("pipe: {e}"))?;
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        let (copied, reply) = std::thread::scope(|scope| {
            let copier = scope.spawn(move || std::io::copy(&mut File::from(read), &mut out));
            let reply = send_packet(socket.as_raw_fd(), &request, Some(write.as_raw_fd()))
                .map_err(|e| format!("writing to the container-root helper: {e}"))
                .and_then(|()| {
                    // Our copy of the write end must go, or the copier never sees the end.
                    drop(write);
                    recv_packet::<Reply>(socket.as_raw_fd())
                        .map_err(|e| format!("reading from the container-root helper: {e}"))
                });
            (copier.join(), reply)
        });
        // A store that cannot take the layer (a full disk) ends the copier first, and the
        // helper then fails on a broken pipe: the copier's error is the cause.
        if let (Ok(Err(e)), Err(_) | Ok(Some((Reply::Failed(_), _)))) = (&copied, &reply) {
            return Err(format!("storing the layer: {e}"));
        }
        let layer = match reply? {
            Some((
                Reply::Layer {
                    diff_id,
                    digest,
                    size,
                    uncompressed_size,
                },
                _,
            )) => (diff_id, digest, size, uncompressed_size),
            Some((Reply::Failed(message), _)) => return Err(message),
            Some((other, _)) => return Err(format!("unexpected answer {other:?}")),
            None => return Err("the container-root helper ended".into()),
        };
        match copied {
            Ok(Ok(n)) if n == layer.2 => {}
            Ok(Ok(n)) => return Err(format!("the layer was {} bytes but {n} arrived", layer.2)),
            Ok(Err(e)) => return Err(format!("storing the layer: {e}")),
            Err(_) => return Err("the layer copier panicked".into()),
        }
        Ok(LayerInfo {
            diff_id: layer.0.parse().map_err(|e| format!("bad diff id: {e}"))?,
            digest: layer.1.parse().map_err(|e| format!("bad digest: {e}"))?,
            size: layer.2,
            uncompressed_size: layer.3,
            media_type: options.compression.oci_media_type(),
        })
    }

    fn check_mapped(&self, path: &Path, uid: u32, gid: u32) -> Result<(), String> {
        if self.map.host_uid(uid.into()).is_none() || self.map.host_gid(gid.into()).is_none() {
            return Err(format!(
                "chown of {} to {uid}:{gid}: the id is outside this user's subordinate \
                 ranges (container ids 0..={} are mapped)",
                path.display(),
                self.max_container_id()
            ));
        }
        Ok(())
    }

    /// The largest container uid the map covers.
    fn max_container_id(&self) -> u64 {
        self.map
            .uids
            .iter()
            .map(|r| u64::from(r.container_start) + u64::from(r.len) - 1)
            .max()
            .unwrap_or(0)
    }

    fn call(&self, request: &Request, fd: Option<RawFd>) -> Result<(), String> {
        let socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        send_packet(socket.as_raw_fd(), request, fd)
            .map_err(|e| format!("writing to the container-root helper: {e}"))?;
        match recv_packet::<Reply>(socket.as_raw_fd()) {
            Ok(Some((Reply::Done, _))) => Ok(()),
            Ok(Some((Reply::Failed(message), _))) => Err(message),
            Ok(Some((other, _))) => Err(format!("unexpected answer {other:?}")),
            Ok(None) => Err("the container-root helper ended".into()),
            Err(e) => Err(format!("reading from the container-root helper: {e}")),
        }
    }
}

impl Drop for ContainerRoot {
    fn drop(&mut self) {
        // Closing our end is the worker's signal to exit.
        let socket = self.socket.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_RDWR) };
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.wait();
    }
}

pub(crate) fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
        Compression::None => "none",
    }
}

pub(crate) fn compression_from_name(name: &str) -> Result<Compression, String> {
    match name {
        "gzip" => Ok(Compression::Gzip),
        "zstd" => Ok(Compression::Zstd),
        "none" => Ok(Compression::None),
        other => Err(format!("unknown compression {other:?}")),
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    crate::sys::cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 just returned these two descriptors, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn path_bytes(path: &Path) -> Vec<u8> {
    path.as_os_str().as_bytes().to_vec()
}

pub(crate) fn bytes_path(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0 as libc::c_int; 2];
    crate::sys::cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })
    .map_err(|e| SandboxError::io("socketpair(SOCK_SEQPACKET)", e))?;
    // SAFETY: socketpair just returned these two descriptors, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends `msg` as one packet, with `fd` attached when given.
pub(crate) fn send_packet<T: Serialize>(
    socket: RawFd,
    msg: &T,
    fd: Option<RawFd>,
) -> std::io::Result<()> {
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
pub(crate) fn recv_packet<T: for<'de> Deserialize<'de>>(
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
