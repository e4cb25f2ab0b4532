//! The container-root worker's serving loop: this executable started again as
//! `WORKER_ARG --parent=PID`, root of a user namespace mapped like the userns steps
//! (`rbuild_sandbox::become_container_root`), doing one [`RootTask`] at a time until rbuild
//! closes the socket.

use std::fs::File;
use std::io::Write;
use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;

use rbuild_layer::{apply_layer, ApplyOptions, Change, DeviceNodes, Ownership, WriteOptions};
use rbuild_sandbox::{recv_packet, send_packet};

use crate::error::{Result, RootfsError};
use crate::task::{
    bytes_path, change_from, compression_from_name, encode_changes, Reply, RootTask,
};

/// Serves tasks on `socket` until rbuild closes it, then exits.
pub(crate) fn serve(socket: RawFd, copy_from: crate::CopyFromFn) -> ! {
    let code = match serve_loop(socket, copy_from) {
        Ok(()) => 0,
        Err(e) => {
            let _ = send_packet(socket, &Reply::Failed(e.to_string()), None);
            1
        }
    };
    std::process::exit(code)
}

fn serve_loop(socket: RawFd, copy_from: crate::CopyFromFn) -> Result<()> {
    let channel = |context, source| RootfsError::Channel { context, source };
    let mut changes: Vec<(char, Vec<u8>)> = Vec::new();
    loop {
        let (task, fd) = match recv_packet::<RootTask>(socket) {
            Ok(Some(message)) => message,
            // rbuild closed the socket: done.
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let reply = Reply::Failed(format!("reading the request: {e}"));
                send_packet(socket, &reply, None).map_err(|e| channel("writing to", e))?;
                continue;
            }
            Err(e) => return Err(channel("reading from", e)),
        };
        let reply = match task {
            RootTask::LayerChanges {
                first,
                changes: mut more,
            } => {
                if first {
                    changes.clear();
                }
                changes.append(&mut more);
                Ok(Reply::Done)
            }
            RootTask::WriteLayer { .. } => write_layer(task, std::mem::take(&mut changes), fd),
            task => run(task, fd, copy_from).map(|()| Reply::Done),
        };
        let reply = reply.unwrap_or_else(|e| Reply::Failed(e.to_string()));
        send_packet(socket, &reply, None).map_err(|e| channel("writing to", e))?;
    }
}

/// A failure of the task itself, as the message rbuild shows.
fn failed(context: &str, e: impl std::fmt::Display) -> RootfsError {
    if context.is_empty() {
        RootfsError::Task(e.to_string())
    } else {
        RootfsError::Task(format!("{context}: {e}"))
    }
}

fn descriptor(fd: Option<OwnedFd>, what: &str) -> Result<File> {
    fd.map(File::from)
        .ok_or_else(|| RootfsError::Protocol(format!("a request without its {what}")))
}

fn run(task: RootTask, fd: Option<OwnedFd>, copy_from: crate::CopyFromFn) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match task {
        RootTask::WriteLayer { .. } | RootTask::LayerChanges { .. } => Err(RootfsError::Protocol(
            "layer requests are handled by the loop".into(),
        )),
        RootTask::ApplyLayer { dir } => {
            let blob = descriptor(fd, "layer blob")?;
            let options = ApplyOptions {
                // Inside the namespace the recorded ids are the ones to give.
                ownership: Ownership::Preserve,
                device_nodes: DeviceNodes::SkipIfNotPermitted,
            };
            apply_layer(std::io::BufReader::new(blob), &bytes_path(dir), &options)
                .map(|_| ())
                .map_err(|e| failed("", e))
        }
        RootTask::LinkTree { src, dst } => {
            rbuild_layer::link_tree(&bytes_path(src), &bytes_path(dst))
                .map(|_| ())
                .map_err(|e| failed("", e))
        }
        RootTask::Lchown { path, uid, gid } => {
            std::os::unix::fs::lchown(bytes_path(path), Some(uid), Some(gid))
                .map_err(|e| failed("", e))
        }
        RootTask::CreateDir { path, mode } => {
            let path = bytes_path(path);
            std::fs::create_dir(&path).map_err(|e| failed("", e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| failed("", e))
        }
        RootTask::Remove { path, dir } => if dir {
            std::fs::remove_dir(bytes_path(path))
        } else {
            std::fs::remove_file(bytes_path(path))
        }
        .map_err(|e| failed("", e)),
        RootTask::Symlink { target, path } => {
            std::os::unix::fs::symlink(bytes_path(target), bytes_path(path))
                .map_err(|e| failed("", e))
        }
        RootTask::CopyFile {
            path,
            owner,
            mode,
            mtime,
        } => {
            use std::os::unix::fs::OpenOptionsExt;
            let path = bytes_path(path);
            let mut source = descriptor(fd, "source file")?;
            let mut target = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&path)
                .map_err(|e| failed("creating", e))?;
            std::io::copy(&mut source, &mut target).map_err(|e| failed("copying", e))?;
            drop(target);
            set_meta(&path, owner, mode, mtime)
        }
        RootTask::SetMeta {
            path,
            owner,
            mode,
            mtime,
        } => set_meta(&bytes_path(path), owner, mode, mtime),
        RootTask::RemoveAll { path } => {
            let path = bytes_path(path);
            match std::fs::symlink_metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Ok(md) if md.is_dir() => remove_dir_all_forced(&path),
                _ => std::fs::remove_file(&path).map_err(|e| failed("", e)),
            }
        }
        RootTask::OverlayChanges {
            upper,
            lowers,
            stubs,
        } => {
            let lowers: Vec<_> = lowers.into_iter().map(bytes_path).collect();
            let changes = rbuild_snapshot::overlay_changes(&bytes_path(upper), &lowers, &stubs)
                .map_err(|e| failed("", e))?;
            descriptor(fd, "output file")?
                .write_all(&encode_changes(&changes))
                .map_err(|e| failed("writing the changes", e))
        }
        RootTask::Scan { root } => {
            let entries = rbuild_snapshot::walk(&bytes_path(root)).map_err(|e| failed("", e))?;
            descriptor(fd, "output file")?
                .write_all(&rbuild_snapshot::encode_entries(&entries))
                .map_err(|e| failed("writing the index", e))
        }
        RootTask::CopyFrom(task) => copy_from(&task),
    }
}

fn write_layer(
    task: RootTask,
    changes: Vec<(char, Vec<u8>)>,
    fd: Option<OwnedFd>,
) -> Result<Reply> {
    let RootTask::WriteLayer {
        root,
        compression,
        level,
        source_date_epoch,
        threads,
        no_xattrs,
    } = task
    else {
        return Err(RootfsError::Protocol("not a layer request".into()));
    };
    let out = descriptor(fd, "pipe")?;
    let changes = changes
        .into_iter()
        .map(|(kind, path)| change_from(kind, bytes_path(path)))
        .collect::<Result<Vec<Change>>>()?;
    let options = WriteOptions {
        compression: compression_from_name(&compression)?,
        level,
        source_date_epoch,
        threads,
        no_xattrs,
        ..WriteOptions::default()
    };
    // `out` is moved in and closed when the layer is complete.
    let info = rbuild_layer::write_layer(&bytes_path(root), &changes, out, &options)
        .map_err(|e| failed("", e))?;
    Ok(Reply::Layer {
        diff_id: info.diff_id.to_string(),
        digest: info.digest.to_string(),
        size: info.size,
        uncompressed_size: info.uncompressed_size,
    })
}

fn set_meta(
    path: &Path,
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
    mtime: Option<(i64, i64)>,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(|e| failed(&format!("chown to {uid}:{gid}"), e))?;
    }
    let is_link = std::fs::symlink_metadata(path)
        .map_err(|e| failed("", e))?
        .file_type()
        .is_symlink();
    if let (Some(mode), false) = (mode, is_link) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| failed(&format!("chmod {mode:o}"), e))?;
    }
    if let Some((secs, nanos)) = mtime {
        crate::set_mtime(path, secs, nanos).map_err(|e| failed("setting mtime", e))?;
    }
    Ok(())
}

/// `remove_dir_all`, first making unreadable directories readable (overlayfs leaves its
/// `work/work` with mode 000, and a step may leave others). As root of the namespace the
/// mode would not stop us for mapped owners; an unmapped owner's directory would.
fn remove_dir_all_forced(path: &Path) -> Result<()> {
    if std::fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    open_up_dirs(path);
    std::fs::remove_dir_all(path).map_err(|e| failed("", e))
}

/// Gives every directory under `path` mode 0700, top down, so each can be read.
fn open_up_dirs(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut out = vec![path.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let _ = std::fs::set_permissions(&out[i], std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.push(entry.path());
                }
            }
        }
        i += 1;
    }
}
