//! Answers one notification of the restricted filter: resolves the file a chown-family or
//! mknod call names in the caller's view and records what it asks for; identity calls go
//! to the step's credential table (`creds.rs`), the `stat` family to `stat.rs`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use super::copy_up::Groups;
use super::creds::{CredentialTable, IdAnswer};
use super::redirect::TopLevel;
use super::resolve::{
    caller_bytes, caller_path, errno_of, notification_still_valid, open_base, open_parent,
    open_target, refuse_denied, stat_of,
};
use super::stat::StatAnswerer;
use super::table::{Device, DeviceKind, Owner, OwnershipTable};

/// Receives one notification and answers it; errors only when the listener itself fails.
/// A call naming a file in `denied` (rbuild's own, kept from the step) fails with EACCES.
pub(super) fn answer_one(
    listener: &OwnedFd,
    table: &mut OwnershipTable,
    credentials: &mut CredentialTable,
    denied: &[PathBuf],
    top: Option<&TopLevel>,
    stats: &mut StatAnswerer,
    groups: &Groups,
) -> io::Result<()> {
    // SAFETY: an all-zero seccomp_notif is what the kernel requires for RECV.
    let mut request: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: RECV fills `request`, a seccomp_notif.
    if unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut request,
        )
    } < 0
    {
        let err = io::Error::last_os_error();
        // ENOENT: the caller died (or was interrupted) before we received it.
        return match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::EINTR) => Ok(()),
            _ => Err(err),
        };
    }
    let nr = request.data.nr as libc::c_long;
    let copied = if groups.is_empty() {
        Ok(())
    } else {
        copy_up_first(listener, &request, table, stats, groups, top)
    };
    let answer = if let Err(errno) = copied {
        Err(errno)
    } else if super::creds::CALLS.contains(&nr) {
        match credentials.answer(listener, &request) {
            Ok(IdAnswer::Value(value)) => Ok(Answer::Value(value)),
            Ok(IdAnswer::Continue) => Ok(Answer::Continue),
            Err(errno) => Err(errno),
        }
    } else if super::stat::CALLS.contains(&nr) {
        super::stat::answer_stat(listener, &request, table, stats)
    } else if super::filter::MKNOD.contains(&nr) {
        record_mknod(listener, &request, table, denied, top)
    } else if super::xattr::CALLS.contains(&nr) {
        super::xattr::record_xattr(listener, &request, table, denied, top)
    } else if super::attrs::CALLS.contains(&nr) {
        super::attrs::answer(listener, &request, denied, top)
    } else if !super::filter::NOTIFIED.contains(&nr) {
        // Stopped only to copy up (a step with groups and no tracer): the kernel runs it.
        Ok(Answer::Continue)
    } else {
        record_chown(listener, &request, table, denied, top).map(|()| Answer::Success)
    };
    let (val, error, flags) = match answer {
        Ok(Answer::Success) => (0, 0, 0),
        Ok(Answer::Value(value)) => (value, 0, 0),
        // The kernel runs the call itself, as if unfiltered.
        Ok(Answer::Continue) => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
        Err(errno) => (0, -errno, 0),
    };
    send_response(listener, request.id, val, error, flags)
}

/// Answers notification `id`: `val` returned, or `error` (a negative errno), or with
/// `SECCOMP_USER_NOTIF_FLAG_CONTINUE` in `flags` the call run by the kernel. A caller gone
/// meanwhile (ENOENT) is not an error.
pub(super) fn send_response(
    listener: &OwnedFd,
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
) -> io::Result<()> {
    let response = libc::seccomp_notif_resp {
        id,
        val,
        error,
        flags,
    };
    // SAFETY: SEND reads `response`, a seccomp_notif_resp.
    if unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &response,
        )
    } < 0
    {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOENT) {
            return Err(err);
        }
    }
    Ok(())
}

/// Before a call that copies up on overlayfs (a `chown`, an xattr change, and without a
/// tracer every such call): copies the name it gives up if it is one of `groups`' files
/// (`copy_up.rs`), and records the new inode's copy-up. `Err` is the errno the call gets
/// (the copy-up failed); a path that cannot be read is left to the call itself.
fn copy_up_first(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    table: &mut OwnershipTable,
    stats: &mut StatAnswerer,
    groups: &Groups,
    top: Option<&TopLevel>,
) -> Result<(), i32> {
    let nr = request.data.nr as libc::c_long;
    let args = request.data.args;
    let how_flags = || {
        let bytes = caller_bytes(listener, request, args[2], 8).ok()?;
        Some(u64::from_ne_bytes(
            <[u8; 8]>::try_from(bytes.as_slice()).ok()?,
        ))
    };
    let Some(call) = super::copy_up::named_call(nr, args, how_flags) else {
        return Ok(());
    };
    let Ok(path) = caller_path(listener, request, call.path) else {
        return Ok(());
    };
    let path = translated(top, request.pid, call.dirfd, path);
    let copied = super::copy_up::copy_up_path(request.pid, nr, &call, &path, groups, || {
        notification_still_valid(listener, request)
    })?;
    if let Some(copied) = copied {
        table.copied_up(copied.old, copied.new);
        stats.copied_up(copied.old, copied.new);
    }
    Ok(())
}

/// `path` of `pid` (relative to `dirfd`) after top-level redirection, if any.
pub(super) fn translated(
    top: Option<&TopLevel>,
    pid: u32,
    dirfd: libc::c_int,
    path: Vec<u8>,
) -> Vec<u8> {
    match top {
        Some(top) => top.translate(pid, dirfd, path),
        None => path,
    }
}

/// How the supervisor answers a call it does not fail.
pub(super) enum Answer {
    /// Success without the call having run.
    Success,
    /// The call returns this value (an identity query).
    Value(i64),
    /// Let the kernel run it (nothing to emulate: a FIFO, a socket, a regular file).
    Continue,
}

/// The arguments of a chown-family call, as `fchownat` takes them.
struct ChownCall {
    dirfd: libc::c_int,
    path: Option<u64>,
    uid: u32,
    gid: u32,
    flags: libc::c_int,
}

fn decode(nr: libc::c_long, a: [u64; 6]) -> Option<ChownCall> {
    // Ids are 32-bit; -1 (as u32: u32::MAX) means "unchanged", as in the kernel.
    let id = |v: u64| v as u32;
    let call = match nr {
        libc::SYS_fchownat => ChownCall {
            dirfd: a[0] as libc::c_int,
            path: Some(a[1]),
            uid: id(a[2]),
            gid: id(a[3]),
            flags: a[4] as libc::c_int,
        },
        libc::SYS_fchown => ChownCall {
            dirfd: a[0] as libc::c_int,
            path: None,
            uid: id(a[1]),
            gid: id(a[2]),
            flags: libc::AT_EMPTY_PATH,
        },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_chown | libc::SYS_lchown => ChownCall {
            dirfd: libc::AT_FDCWD,
            path: Some(a[0]),
            uid: id(a[1]),
            gid: id(a[2]),
            flags: if nr == libc::SYS_lchown {
                libc::AT_SYMLINK_NOFOLLOW
            } else {
                0
            },
        },
        _ => return None,
    };
    Some(call)
}

/// Resolves the file a chown-family call names, in the caller's view (its root, cwd and
/// descriptors through /proc), and records the owner it asks for. Errors are the errno the
/// real call would have given. As the kernel does on a real chown (even by root), the
/// setuid bit, and the setgid bit of a group-executable file, are cleared on the disk.
fn record_chown(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    table: &mut OwnershipTable,
    denied: &[PathBuf],
    top: Option<&TopLevel>,
) -> Result<(), i32> {
    let call = decode(request.data.nr as libc::c_long, request.data.args).ok_or(libc::ENOSYS)?;
    if call.flags & !(libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH) != 0 {
        return Err(libc::EINVAL);
    }
    let pid = request.pid;
    let path = match call.path {
        Some(address) => translated(
            top,
            pid,
            call.dirfd,
            caller_path(listener, request, address)?,
        ),
        None => Vec::new(),
    };
    let target = open_target(pid, call.dirfd, &path, call.flags)?;
    refuse_denied(&target, denied)?;
    let stat = stat_of(&target)?;
    clear_setid_bits(&target, &stat)?;
    // Nothing recorded: the disk's owner, where the build user (this supervisor's own
    // ids) stands for root, as in the layer writer. `chgrp staff d` of a directory the
    // step made must leave it root's, not the build user's.
    // SAFETY: geteuid and getegid take no arguments and cannot fail.
    let (own_uid, own_gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let as_root = |id: u32, own: u32| if id == own { 0 } else { id };
    let current = table.get(stat.st_dev, stat.st_ino).unwrap_or(Owner {
        uid: as_root(stat.st_uid, own_uid),
        gid: as_root(stat.st_gid, own_gid),
    });
    let owner = Owner {
        uid: if call.uid == u32::MAX {
            current.uid
        } else {
            call.uid
        },
        gid: if call.gid == u32::MAX {
            current.gid
        } else {
            call.gid
        },
    };
    table.set_owner((stat.st_dev, stat.st_ino), owner);
    // A real chown of a non-directory drops its file capabilities too.
    if stat.st_mode & libc::S_IFMT != libc::S_IFDIR
        && matches!(table.capability((stat.st_dev, stat.st_ino)), Some(Some(_)))
    {
        table.set_capability((stat.st_dev, stat.st_ino), None);
    }
    Ok(())
}

/// What `chown_common` in the kernel does to a non-directory: clears S_ISUID, and S_ISGID
/// when the group may execute (otherwise it marks mandatory locking, and stays).
fn clear_setid_bits(target: &OwnedFd, stat: &libc::stat) -> Result<(), i32> {
    let kind = stat.st_mode & libc::S_IFMT;
    if kind == libc::S_IFDIR || kind == libc::S_IFLNK {
        return Ok(());
    }
    let mut cleared = libc::S_ISUID;
    if stat.st_mode & libc::S_IXGRP != 0 {
        cleared |= libc::S_ISGID;
    }
    if stat.st_mode & cleared == 0 {
        return Ok(());
    }
    let through = format!("/proc/self/fd/{}", target.as_raw_fd());
    let mode = stat.st_mode & 0o7777 & !cleared;
    std::fs::set_permissions(&through, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(errno_of)
}

/// `mknod`/`mknodat` of a character or block device: an unprivileged user cannot create
/// one, so the supervisor creates an empty regular file in its place (owner-writable) and
/// records the device; other kinds run as they are.
fn record_mknod(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    table: &mut OwnershipTable,
    denied: &[PathBuf],
    top: Option<&TopLevel>,
) -> Result<Answer, i32> {
    let a = request.data.args;
    let nr = request.data.nr as libc::c_long;
    let (dirfd, address, mode, dev) = if nr == libc::SYS_mknodat {
        (a[0] as libc::c_int, a[1], a[2] as u32, a[3] as u32)
    } else {
        (libc::AT_FDCWD, a[0], a[1] as u32, a[2] as u32)
    };
    let kind = match mode & libc::S_IFMT {
        libc::S_IFCHR => DeviceKind::Char,
        libc::S_IFBLK => DeviceKind::Block,
        _ if top.is_none() => return Ok(Answer::Continue),
        _ => return make_redirected_node(listener, request, denied, top, (dirfd, address, mode)),
    };
    let asked = caller_path(listener, request, address)?;
    let path = translated(top, request.pid, dirfd, asked.clone());
    if path.is_empty() {
        return Err(libc::ENOENT);
    }
    if let Some(top) = top.filter(|t| t.creating_only && path != asked) {
        device_needs_a_traced_step(top, &asked)?;
    }
    let (base, relative) = open_base(request.pid, dirfd, &path)?;
    let (base, relative) = open_parent(base, &relative)?;
    refuse_denied(&base, denied)?;
    let umask = caller_umask(request.pid).unwrap_or(0o022);
    // SAFETY: valid descriptor and C string; a regular file needs no device number.
    if unsafe {
        libc::mknodat(
            base.as_raw_fd(),
            relative.as_ptr(),
            libc::S_IFREG | 0o600,
            0,
        )
    } < 0
    {
        return Err(errno_of(io::Error::last_os_error()));
    }
    // SAFETY: an all-zero stat is valid; fstatat fills it.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, C string and stat buffer.
    if unsafe {
        libc::fstatat(
            base.as_raw_fd(),
            relative.as_ptr(),
            &mut stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } < 0
    {
        return Err(errno_of(io::Error::last_os_error()));
    }
    // The kernel's 32-bit device number encoding (new_decode_dev).
    let device = Device {
        kind,
        major: (dev & 0xfff00) >> 8,
        minor: (dev & 0xff) | ((dev >> 12) & 0xfff00),
        mode: mode & 0o7777 & !umask,
    };
    table.set_device((stat.st_dev, stat.st_ino), device);
    Ok(Answer::Success)
}

/// A device at a path to redirect, in a step traced only for the calls that create a name
/// (`filter::Tracing::Creating`): the tracer does not see this call (the supervisor
/// answers it), so it cannot start tracing every call before the node exists, and the
/// step's later calls on it would not be redirected. Refused (EPERM, and why on stderr)
/// unless the redirection directory already holds an entry, which only a traced creating
/// call, after which the step is traced in full, can have made.
fn device_needs_a_traced_step(top: &TopLevel, asked: &[u8]) -> Result<(), i32> {
    if !top.is_empty_now().map_err(errno_of)? {
        return Ok(());
    }
    let message = format!(
        "rbuild: mknod of the device {}: a device node as a new top-level entry is not \
         supported while the stage has no redirected entry (the step's later calls on it \
         would not be redirected): create another new top-level entry first, such as a \
         directory for it\n",
        String::from_utf8_lossy(asked)
    );
    // SAFETY: writes a buffer of that length to stderr.
    unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
    Err(libc::EPERM)
}

/// `mknod` of a FIFO, socket or regular file under top-level redirection: the kernel runs it
/// as it is unless the path is to be redirected, which the kernel would not do; then the
/// supervisor makes the node at the redirected path itself, with the caller's umask.
fn make_redirected_node(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    denied: &[PathBuf],
    top: Option<&TopLevel>,
    (dirfd, address, mode): (libc::c_int, u64, u32),
) -> Result<Answer, i32> {
    let path = caller_path(listener, request, address)?;
    let redirected = translated(top, request.pid, dirfd, path.clone());
    if redirected == path {
        return Ok(Answer::Continue);
    }
    let (base, relative) = open_base(request.pid, dirfd, &redirected)?;
    let (base, relative) = open_parent(base, &relative)?;
    refuse_denied(&base, denied)?;
    let umask = caller_umask(request.pid).unwrap_or(0o022);
    let kind = match mode & libc::S_IFMT {
        0 => libc::S_IFREG,
        kind => kind,
    };
    // SAFETY: valid descriptor and C string; a FIFO, socket or file needs no device number.
    if unsafe {
        libc::mknodat(
            base.as_raw_fd(),
            relative.as_ptr(),
            kind | (mode & 0o7777 & !umask),
            0,
        )
    } < 0
    {
        return Err(errno_of(io::Error::last_os_error()));
    }
    Ok(Answer::Success)
}

/// The caller's umask, from /proc/PID/status.
pub(super) fn caller_umask(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}
