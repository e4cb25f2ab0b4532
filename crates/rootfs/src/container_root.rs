//! [`ContainerRoot`]: rbuild's end of the container-root worker (see the crate doc).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rbuild_layer::{Change, IdMap, LayerInfo, WriteOptions};
use rbuild_sandbox::{recv_packet, send_packet, MappedWorker, Sandbox, Stub, MAX_PACKET};

use crate::error::{Result, RootfsError};
use crate::task::{compression_name, decode_changes, path_bytes, CopyFrom, Reply, RootTask};

/// A process that is root in a user namespace mapped like the userns steps (container 0 →
/// the caller, 1.. → its subordinate ranges), doing filesystem work for the caller. Only
/// for unprivileged callers with a subordinate range (see [`rbuild_sandbox::subid_map`]).
/// Dropping it ends the worker. Keep the thread that started it alive as long as it is
/// used: the worker dies with that thread (PR_SET_PDEATHSIG).
#[derive(Debug)]
pub struct ContainerRoot {
    /// The worker; the lock keeps one request (and its answer) on the socket at a time.
    worker: Mutex<MappedWorker>,
    map: IdMap,
}

impl ContainerRoot {
    /// Starts the worker with `sandbox`'s helper executable, whose `main` must call
    /// [`crate::maybe_run_worker`].
    pub fn start(sandbox: &Sandbox) -> Result<ContainerRoot> {
        let worker = sandbox.start_mapped_worker(crate::WORKER_ARG)?;
        let map = worker.id_map().clone();
        Ok(ContainerRoot {
            worker: Mutex::new(worker),
            map,
        })
    }

    /// The container → host id map of the worker's namespace (and of every userns step).
    pub fn id_map(&self) -> &IdMap {
        &self.map
    }

    /// Extracts `blob` (a gzip/zstd/plain layer) onto `dir` with the owners it records
    /// (container ids, which land on disk as the mapped host ids). Device nodes are skipped:
    /// mknod is not permitted in a user namespace.
    pub fn apply_layer(&self, blob: &File, dir: &Path) -> Result<()> {
        let task = RootTask::ApplyLayer {
            dir: path_bytes(dir),
        };
        self.call(&task, Some(blob.as_raw_fd()))
    }

    /// Fills the empty directory `dst` with hard links to the files under `src` and copies
    /// of its directories ([`rbuild_layer::link_tree`]), as container root: linking files
    /// of other container users is permitted there, and not to the caller.
    pub fn link_tree(&self, src: &Path, dst: &Path) -> Result<()> {
        let task = RootTask::LinkTree {
            src: path_bytes(src),
            dst: path_bytes(dst),
        };
        self.call(&task, None)
    }

    /// `lchown` to container ids `uid:gid`; fails clearly for an id outside the mapping.
    pub fn lchown(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        self.check_mapped(path, uid, gid)?;
        let task = RootTask::Lchown {
            path: path_bytes(path),
            uid,
            gid,
        };
        self.call(&task, None).map_err(|e| {
            RootfsError::Task(format!("chown of {} to {uid}:{gid}: {e}", path.display()))
        })
    }

    /// Removes `path` and everything below it, whoever of the mapped ids owns it.
    pub fn remove_all(&self, path: &Path) -> Result<()> {
        let task = RootTask::RemoveAll {
            path: path_bytes(path),
        };
        self.call(&task, None)
            .map_err(|e| RootfsError::Task(format!("removing {}: {e}", path.display())))
    }

    /// Creates directory `path` with `mode` (owned by container root).
    pub fn create_dir(&self, path: &Path, mode: u32) -> Result<()> {
        let task = RootTask::CreateDir {
            path: path_bytes(path),
            mode,
        };
        self.call(&task, None)
    }

    /// Removes the non-directory at `path` (or, with `dir`, the empty directory).
    pub fn remove(&self, path: &Path, dir: bool) -> Result<()> {
        let task = RootTask::Remove {
            path: path_bytes(path),
            dir,
        };
        self.call(&task, None)
    }

    /// Creates symlink `path` pointing at `target`.
    pub fn symlink(&self, target: &Path, path: &Path) -> Result<()> {
        let task = RootTask::Symlink {
            target: path_bytes(target),
            path: path_bytes(path),
        };
        self.call(&task, None)
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
    ) -> Result<()> {
        if let Some((uid, gid)) = owner {
            self.check_mapped(path, uid, gid)?;
        }
        let task = RootTask::CopyFile {
            path: path_bytes(path),
            owner,
            mode,
            mtime,
        };
        self.call(&task, Some(source.as_raw_fd()))
    }

    /// Sets what is given of owner (container ids), mode (ignored for a symlink) and mtime
    /// of `path`, in that order (chown clears setuid bits), never following a symlink.
    pub fn set_metadata(
        &self,
        path: &Path,
        owner: Option<(u32, u32)>,
        mode: Option<u32>,
        mtime: Option<(i64, i64)>,
    ) -> Result<()> {
        if let Some((uid, gid)) = owner {
            self.check_mapped(path, uid, gid)?;
        }
        let task = RootTask::SetMeta {
            path: path_bytes(path),
            owner,
            mode,
            mtime,
        };
        self.call(&task, None)
    }

    /// The changes an overlay step made (`rbuild_snapshot::overlay_changes`), read as
    /// container root: a RUN of `apt-get update` leaves `/var/lib/apt/lists/partial` owned
    /// by `_apt` with mode 0700, which the user itself cannot list.
    pub fn overlay_changes(
        &self,
        upper: &Path,
        lowers: &[PathBuf],
        stubs: &[Stub],
    ) -> Result<Vec<Change>> {
        let task = RootTask::OverlayChanges {
            upper: path_bytes(upper),
            lowers: lowers.iter().map(|l| path_bytes(l)).collect(),
            stubs: stubs.to_vec(),
        };
        decode_changes(&self.call_with_output(&task)?)
    }

    /// The walk snapshotter's index of `root` (`rbuild_snapshot::walk`), walked as
    /// container root.
    pub fn scan(&self, root: &Path) -> Result<rbuild_snapshot::Entries> {
        let task = RootTask::Scan {
            root: path_bytes(root),
        };
        let encoded = self.call_with_output(&task)?;
        rbuild_snapshot::decode_entries(&encoded)
            .map_err(|e| RootfsError::Protocol(format!("an index of {}: {e}", root.display())))
    }

    /// Copies one `COPY --from` source as container root (see [`CopyFrom`]).
    pub fn copy_from(&self, task: &CopyFrom) -> Result<()> {
        self.call(&RootTask::CopyFrom(task.clone()), None)
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
    ) -> Result<LayerInfo> {
        let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        let socket = worker.socket();
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0;
        let mut first = true;
        for (i, change) in changes.iter().enumerate() {
            let path = path_bytes(change.path());
            // JSON writes a byte as at most 4 characters (`255,`).
            chunk_bytes += 4 * path.len() + 16;
            chunk.push((crate::task::change_kind(change), path));
            if chunk_bytes > MAX_PACKET / 8 || i + 1 == changes.len() {
                let task = RootTask::LayerChanges {
                    first,
                    changes: std::mem::take(&mut chunk),
                };
                expect_done(exchange(socket, &task, None)?)?;
                chunk_bytes = 0;
                first = false;
            }
        }
        if first {
            let task = RootTask::LayerChanges {
                first,
                changes: Vec::new(),
            };
            expect_done(exchange(socket, &task, None)?)?;
        }
        let task = RootTask::WriteLayer {
            root: path_bytes(root),
            compression: compression_name(options.compression).to_string(),
            level: options.level,
            source_date_epoch: options.source_date_epoch,
            threads: options.threads,
            no_xattrs: options.no_xattrs,
        };
        let (read, write) = rbuild_sandbox::pipe().map_err(|e| RootfsError::io("pipe", e))?;
        let (copied, reply) = std::thread::scope(|scope| {
            let copier = scope.spawn(move || std::io::copy(&mut File::from(read), &mut out));
            let reply = send_packet(socket, &task, Some(write.as_raw_fd()))
                .map_err(|source| RootfsError::Channel {
                    context: "writing to",
                    source,
                })
                .and_then(|()| {
                    // Our copy of the write end must go, or the copier never sees the end.
                    drop(write);
                    receive(socket)
                });
            (copier.join(), reply)
        });
        // A store that cannot take the layer (a full disk) ends the copier first, and the
        // worker then fails on a broken pipe: the copier's error is the cause.
        if let (Ok(Err(e)), Err(_) | Ok(Reply::Failed(_))) = (&copied, &reply) {
            return Err(RootfsError::io(
                "storing the layer",
                std::io::Error::new(e.kind(), e.to_string()),
            ));
        }
        let (diff_id, digest, size, uncompressed_size) = match reply? {
            Reply::Layer {
                diff_id,
                digest,
                size,
                uncompressed_size,
            } => (diff_id, digest, size, uncompressed_size),
            Reply::Failed(message) => return Err(RootfsError::Task(message)),
            other => return Err(RootfsError::Protocol(format!("{other:?}"))),
        };
        match copied {
            Ok(Ok(n)) if n == size => {}
            Ok(Ok(n)) => {
                return Err(RootfsError::Protocol(format!(
                    "a layer of {size} bytes but {n} arrived"
                )))
            }
            Ok(Err(e)) => return Err(RootfsError::io("storing the layer", e)),
            Err(_) => {
                return Err(RootfsError::Protocol(
                    "nothing: the layer copier panicked".into(),
                ))
            }
        }
        Ok(LayerInfo {
            diff_id: diff_id
                .parse()
                .map_err(|e| RootfsError::Protocol(format!("a bad diff id: {e}")))?,
            digest: digest
                .parse()
                .map_err(|e| RootfsError::Protocol(format!("a bad digest: {e}")))?,
            size,
            uncompressed_size,
            media_type: options.compression.oci_media_type(),
        })
    }

    fn check_mapped(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        if self.map.host_uid(uid.into()).is_none() || self.map.host_gid(gid.into()).is_none() {
            return Err(RootfsError::Unmapped {
                path: path.display().to_string(),
                uid,
                gid,
                max: self.max_container_id(),
            });
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

    /// Runs `task`, handing it a fresh anonymous file for its output, and returns what it
    /// wrote there.
    fn call_with_output(&self, task: &RootTask) -> Result<Vec<u8>> {
        use std::io::{Read, Seek};
        // SAFETY: a NUL-terminated name and flags only; the descriptor returned is owned
        // by the File made next.
        let fd = unsafe { libc::memfd_create(c"rbuild-task".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(RootfsError::io(
                "memfd_create",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let mut output = unsafe { File::from_raw_fd(fd) };
        self.call(task, Some(output.as_raw_fd()))?;
        let mut bytes = Vec::new();
        output
            .seek(std::io::SeekFrom::Start(0))
            .and_then(|_| output.read_to_end(&mut bytes))
            .map_err(|e| RootfsError::io("reading the output of the container-root task", e))?;
        Ok(bytes)
    }

    fn call(&self, task: &RootTask, fd: Option<RawFd>) -> Result<()> {
        let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        expect_done(exchange(worker.socket(), task, fd)?)
    }
}

/// Sends `task` and reads the answer; the caller holds the worker's lock.
fn exchange(socket: RawFd, task: &RootTask, fd: Option<RawFd>) -> Result<Reply> {
    send_packet(socket, task, fd).map_err(|source| RootfsError::Channel {
        context: "writing to",
        source,
    })?;
    receive(socket)
}

fn receive(socket: RawFd) -> Result<Reply> {
    match recv_packet::<Reply>(socket) {
        Ok(Some((reply, _))) => Ok(reply),
        Ok(None) => Err(RootfsError::Channel {
            context: "reading from",
            source: std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "it ended"),
        }),
        Err(source) => Err(RootfsError::Channel {
            context: "reading from",
            source,
        }),
    }
}

fn expect_done(reply: Reply) -> Result<()> {
    match reply {
        Reply::Done => Ok(()),
        Reply::Failed(message) => Err(RootfsError::Task(message)),
        other => Err(RootfsError::Protocol(format!("{other:?}"))),
    }
}
