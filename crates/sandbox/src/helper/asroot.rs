//! The container-root worker (`__rbuild-sandbox-helper as-root`): unshares a user
//! namespace, waits for rbuild to write its id maps, becomes root there and serves
//! filesystem requests until rbuild closes the socket. See `crate::asroot`.

use std::fs::File;
use std::os::fd::OwnedFd;

use rbuild_layer::{
    apply_layer, write_layer as write_layer_to, ApplyOptions, Change, DeviceNodes, Ownership,
    WriteOptions,
};

use crate::asroot::{bytes_path, compression_from_name, recv_packet, send_packet, Reply, Request};
use crate::protocol::CONTROL_FD;
use crate::sys::{cvt, errno_name, set_pdeathsig};

pub fn main() -> ! {
    let code = match serve() {
        Ok(()) => 0,
        Err(message) => {
            let _ = send_packet(CONTROL_FD, &Reply::Failed(message), None);
            1
        }
    };
    std::process::exit(code)
}

fn serve() -> Result<(), String> {
    cvt(unsafe { libc::unshare(libc::CLONE_NEWUSER) })
        .map_err(|e| format!("unshare(CLONE_NEWUSER): {}", errno_name(&e)))?;
    let pid = unsafe { libc::getpid() };
    send_packet(CONTROL_FD, &Reply::Unshared { pid }, None)
        .map_err(|e| format!("writing to rbuild: {e}"))?;
    match recv_packet::<Request>(CONTROL_FD) {
        Ok(Some((Request::Mapped(Ok(_)), _))) => {}
        Ok(Some((Request::Mapped(Err(message)), _))) => return Err(message),
        other => return Err(format!("unexpected message from rbuild: {other:?}")),
    }
    cvt(unsafe { libc::setresgid(0, 0, 0) }).map_err(|e| format!("setresgid(0): {e}"))?;
    cvt(unsafe { libc::setresuid(0, 0, 0) }).map_err(|e| format!("setresuid(0): {e}"))?;
    // The caller's supplementary groups would show as the overflow gid: drop them.
    let _ = unsafe { libc::setgroups(0, std::ptr::null()) };
    // Unsharing and changing credentials both clear the parent-death signal: set it again.
    set_pdeathsig(libc::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
    if !super::parent_alive() {
        return Err("rbuild exited during setup".into());
    }
    send_packet(CONTROL_FD, &Reply::Done, None).map_err(|e| format!("writing to rbuild: {e}"))?;
    let mut changes = Vec::new();
    loop {
        let (request, fd) = match recv_packet::<Request>(CONTROL_FD) {
            Ok(Some(message)) => message,
            // rbuild closed the socket: done.
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let reply = Reply::Failed(format!("reading the request: {e}"));
                send_packet(CONTROL_FD, &reply, None)
                    .map_err(|e| format!("writing to rbuild: {e}"))?;
                continue;
            }
            Err(e) => return Err(format!("reading from rbuild: {e}")),
        };
        let reply = match request {
            Request::LayerChanges {
                first,
                changes: mut more,
            } => {
                if first {
                    changes.clear();
                }
                changes.append(&mut more);
                Reply::Done
            }
            Request::WriteLayer { .. } => {
                write_layer(request, std::mem::take(&mut changes), fd).unwrap_or_else(Reply::Failed)
            }
            _ => match handle(request, fd) {
                Ok(()) => Reply::Done,
                Err(message) => Reply::Failed(message),
            },
        };
        send_packet(CONTROL_FD, &reply, None).map_err(|e| format!("writing to rbuild: {e}"))?;
    }
}

fn handle(request: Request, fd: Option<OwnedFd>) -> Result<(), String> {
    match request {
        Request::Mapped(_) => Err("the id maps were already written".into()),
        Request::WriteLayer { .. } | Request::LayerChanges { .. } => {
            Err("layer requests are handled by the loop".into())
        }
        Request::ApplyLayer { dir } => {
            let blob = File::from(fd.ok_or("no layer blob came with the request")?);
            let options = ApplyOptions {
                // Inside the namespace the recorded ids are the ones to give.
                ownership: Ownership::Preserve,
                device_nodes: DeviceNodes::SkipIfNotPermitted,
            };
            apply_layer(std::io::BufReader::new(blob), &bytes_path(dir), &options)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Request::Task { name, input } => {
            use std::io::Write;
            let task = crate::asroot::root_task(&name)
                .ok_or_else(|| format!("this executable has no task {name:?}"))?;
            let output = task(&input)?;
            let mut file = File::from(fd.ok_or("no output file came with the request")?);
            file.write_all(&output)
                .map_err(|e| format!("writing the output of {name}: {e}"))
        }
        Request::LinkTree { src, dst } => {
            rbuild_layer::link_tree(&bytes_path(src), &bytes_path(dst))
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Request::Lchown { path, uid, gid } => {
            std::os::unix::fs::lchown(bytes_path(path), Some(uid), Some(gid))
                .map_err(|e| e.to_string())
        }
        Request::CreateDir { path, mode } => {
            use std::os::unix::fs::PermissionsExt;
            let path = bytes_path(path);
            std::fs::create_dir(&path).map_err(|e| e.to_string())?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| e.to_string())
        }
        Request::Remove { path, dir } => if dir {
            std::fs::remove_dir(bytes_path(path))
        } else {
            std::fs::remove_file(bytes_path(path))
        }
        .map_err(|e| e.to_string()),
        Request::Symlink { target, path } => {
            std::os::unix::fs::symlink(bytes_path(target), bytes_path(path))
                .map_err(|e| e.to_string())
        }
        Request::CopyFile {
            path,
            owner,
            mode,
            mtime,
        } => {
            let path = bytes_path(path);
            use std::os::unix::fs::OpenOptionsExt;
            let mut source = File::from(fd.ok_or("no source file came with the request")?);
            let mut target = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("creating: {e}"))?;
            std::io::copy(&mut source, &mut target).map_err(|e| format!("copying: {e}"))?;
            drop(target);
            set_meta(&path, owner, mode, mtime)
        }
        Request::SetMeta {
            path,
            owner,
            mode,
            mtime,
        } => set_meta(&bytes_path(path), owner, mode, mtime),
        Request::RemoveAll { path } => {
            let path = bytes_path(path);
            match std::fs::symlink_metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Ok(md) if md.is_dir() => remove_dir_all_forced(&path),
                _ => std::fs::remove_file(&path).map_err(|e| e.to_string()),
            }
        }
    }
}

fn write_layer(
    request: Request,
    changes: Vec<(char, Vec<u8>)>,
    fd: Option<OwnedFd>,
) -> Result<Reply, String> {
    let Request::WriteLayer {
        root,
        compression,
        level,
        source_date_epoch,
        threads,
        no_xattrs,
    } = request
    else {
        return Err("not a layer request".into());
    };
    let out = File::from(fd.ok_or("no pipe came with the request")?);
    let changes = changes
        .into_iter()
        .map(|(kind, path)| {
            let path = bytes_path(path);
            match kind {
                'u' => Ok(Change::Upsert(path)),
                'd' => Ok(Change::Delete(path)),
                'o' => Ok(Change::OpaqueDir(path)),
                other => Err(format!("unknown change kind {other:?}")),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = WriteOptions {
        compression: compression_from_name(&compression)?,
        level,
        source_date_epoch,
        threads,
        no_xattrs,
        ..WriteOptions::default()
    };
    // `out` is moved in and closed when the layer is complete.
    let info =
        write_layer_to(&bytes_path(root), &changes, out, &options).map_err(|e| e.to_string())?;
    Ok(Reply::Layer {
        diff_id: info.diff_id.to_string(),
        digest: info.digest.to_string(),
        size: info.size,
        uncompressed_size: info.uncompressed_size,
    })
}

fn set_meta(
    path: &std::path::Path,
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
    mtime: Option<(i64, i64)>,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(|e| format!("chown to {uid}:{gid}: {e}"))?;
    }
    let is_link = std::fs::symlink_metadata(path)
        .map_err(|e| e.to_string())?
        .file_type()
        .is_symlink();
    if let (Some(mode), false) = (mode, is_link) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {mode:o}: {e}"))?;
    }
    if let Some((secs, nanos)) = mtime {
        let c = crate::sys::cpath(path).map_err(|e| e.to_string())?;
        let t = libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: nanos as _,
        };
        let times = [t, t];
        // SAFETY: `c` is a valid NUL-terminated path and `times` two valid timespecs.
        cvt(unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map_err(|e| format!("setting mtime: {e}"))?;
    }
    Ok(())
}

/// `remove_dir_all`, first making unreadable directories readable (overlayfs leaves its
/// `work/work` with mode 000, and a step may leave others). As root of the namespace the
/// mode would not stop us for mapped owners; an unmapped owner's directory would.
fn remove_dir_all_forced(path: &std::path::Path) -> Result<(), String> {
    if std::fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    open_up_dirs(path);
    std::fs::remove_dir_all(path).map_err(|e| e.to_string())
}

/// Gives every directory under `path` mode 0700, top down, so each can be read.
fn open_up_dirs(path: &std::path::Path) {
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
