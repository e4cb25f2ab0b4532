//! The `stat` family as root sees it: the supervisor performs the call on the step's
//! behalf (the file resolved in the caller's view through /proc) and writes the result into
//! the caller's memory with the owner the image will have: the one recorded in the
//! [`OwnershipTable`], else the disk's, with the build user (this supervisor's own ids)
//! standing for root, as in the layer writer. fakeroot does the same; without it a script
//! that copies an owner it read (ca-certificates' postinst: `chgrp $(stat -L -c %g
//! /usr/local) …`) copies the build user's.
//!
//! Whatever the supervisor cannot do exactly as the kernel would (a missing file, a bad
//! flag, a file in /proc, a path through a magic link, an unreadable buffer) is answered
//! `SECCOMP_USER_NOTIF_FLAG_CONTINUE`: the kernel runs the call itself and gives its own
//! result or errno, with the disk's owner. So an error is never the supervisor's guess.
//!
//! Time of check to time of use: the path is read from the caller's memory, then resolved
//! and stat'ed by the supervisor, then the result written back. Another thread of the
//! caller may change the path's bytes, or the file be renamed, in between: the answer is
//! then that of one of the orders the calls could have run in, as a kernel stat racing
//! with a rename. The result is written only after `SECCOMP_IOCTL_NOTIF_ID_VALID` says the
//! call is still pending, so the pid still names the caller, blocked in its call (a pid
//! recycled between that check and the write would need the caller killed in that window
//! and the pid reused at once; the supervisor runs as the step's own uid, so such a write
//! could reach nothing the step could not).

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::creds::write_to_caller;
use super::notify::Answer;
use super::redirect::TopLevel;
use super::resolve::{caller_path_unchecked, open_base};
use super::table::{Device, Owner, OwnershipTable};

/// The calls answered here.
#[cfg(target_arch = "x86_64")]
pub(crate) const CALLS: &[libc::c_long] = &[
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
];
#[cfg(target_arch = "aarch64")]
pub(crate) const CALLS: &[libc::c_long] = &[libc::SYS_fstat, libc::SYS_newfstatat, libc::SYS_statx];

/// `statfs.f_type` of procfs: its files are per process (`/proc/self`), so the
/// supervisor's view of them is not the caller's.
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// The kernel's `struct statx` is 256 bytes; the one written back must be the same.
const _: () = assert!(std::mem::size_of::<libc::statx>() == 256);

/// What one call asks, in `fstatat`/`statx` terms.
struct StatCall {
    dirfd: libc::c_int,
    /// The path's address in the caller's memory; `None` for `fstat`.
    path: Option<u64>,
    flags: libc::c_int,
    /// `Some(mask)` for `statx`, which writes a `struct statx`.
    statx_mask: Option<u32>,
    buffer: u64,
}

fn decode(nr: libc::c_long, a: [u64; 6]) -> Option<StatCall> {
    let call = match nr {
        libc::SYS_fstat => StatCall {
            dirfd: a[0] as libc::c_int,
            path: None,
            flags: libc::AT_EMPTY_PATH,
            statx_mask: None,
            buffer: a[1],
        },
        libc::SYS_newfstatat => StatCall {
            dirfd: a[0] as libc::c_int,
            path: Some(a[1]),
            flags: a[3] as libc::c_int,
            statx_mask: None,
            buffer: a[2],
        },
        libc::SYS_statx => StatCall {
            dirfd: a[0] as libc::c_int,
            path: Some(a[1]),
            flags: a[2] as libc::c_int,
            statx_mask: Some(a[3] as u32),
            buffer: a[4],
        },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_stat | libc::SYS_lstat => StatCall {
            dirfd: libc::AT_FDCWD,
            path: Some(a[0]),
            flags: if nr == libc::SYS_lstat {
                libc::AT_SYMLINK_NOFOLLOW
            } else {
                0
            },
            statx_mask: None,
            buffer: a[1],
        },
        _ => return None,
    };
    Some(call)
}

/// The owner a step sees for a file the disk gives `disk` (uid, gid): the recorded one,
/// else the disk's with the build user's ids (`own`) shown as root's.
pub(super) fn shown_owner(recorded: Option<Owner>, disk: (u32, u32), own: (u32, u32)) -> Owner {
    recorded.unwrap_or(Owner {
        uid: if disk.0 == own.0 { 0 } else { disk.0 },
        gid: if disk.1 == own.1 { 0 } else { disk.1 },
    })
}

/// What the supervisor keeps from one `stat` to the next, so that an answer costs as few
/// system calls as it can (see docs/sandbox.md, "Owners as root sees them": each one is
/// paid on every `stat` a step makes).
pub(super) struct StatAnswerer {
    /// `/` of the step, opened once: absolute paths are resolved from it instead of from
    /// `/proc/PID/root` opened for each call. `None` when the step's root is not the
    /// supervisor's (it never changes: `chroot` and `pivot_root` are refused by the filter,
    /// and the step is forked from the supervisor, but that is checked, not assumed).
    root: Option<OwnedFd>,
    /// This supervisor's effective uid and gid: the build user, shown as root.
    own: (u32, u32),
    /// Whether a device (`st_dev`, one per mounted file system) is a procfs: answered by
    /// `fstatfs` once per device instead of once per call.
    procfs_devices: HashMap<u64, bool>,
    /// Owners shown where the step's own table has none: files rbuild placed for the step
    /// (`run_supervised_until`'s `shown`).
    shown: OwnershipTable,
    /// Top-level redirection: paths translated before they are resolved.
    top: Option<TopLevel>,
}

impl StatAnswerer {
    /// For the steps of `child`, whose root is compared with this process's own.
    pub(super) fn new(child: libc::pid_t, shown: OwnershipTable, top: Option<TopLevel>) -> Self {
        // SAFETY: geteuid and getegid take no arguments and cannot fail.
        let own = unsafe { (libc::geteuid(), libc::getegid()) };
        // SAFETY: a valid C string; the descriptor is owned right away.
        let root = owned(unsafe { libc::open(c"/".as_ptr(), libc::O_PATH | libc::O_CLOEXEC) });
        let same = |root: &OwnedFd| {
            let theirs = std::fs::metadata(format!("/proc/{child}/root/")).ok()?;
            let ours = std::fs::metadata(format!("/proc/self/fd/{}/", root.as_raw_fd())).ok()?;
            use std::os::unix::fs::MetadataExt;
            Some((theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()))
        };
        StatAnswerer {
            root: root.filter(|root| same(root) == Some(true)),
            own,
            procfs_devices: HashMap::new(),
            shown,
            top,
        }
    }

    /// A name of `old` was copied up to `new` (`copy_up.rs`): the copy shows the owner
    /// shown for `old`.
    pub(super) fn copied_up(&mut self, old: (u64, u64), new: (u64, u64)) {
        self.shown.copied_up(old, new);
    }

    /// The owner recorded for `(dev, ino)`: by the step (`table`), else shown for a file
    /// placed for it.
    fn recorded(&self, table: &OwnershipTable, dev: u64, ino: u64) -> Option<Owner> {
        table.get(dev, ino).or_else(|| self.shown.get(dev, ino))
    }

    /// Whether `dev` is a procfs, asked of the kernel through `fd` (a file on it) the first
    /// time; `None` if that cannot be told.
    fn on_procfs(&mut self, dev: u64, fd: &OwnedFd) -> Option<bool> {
        if let Some(known) = self.procfs_devices.get(&dev) {
            return Some(*known);
        }
        let procfs = on_procfs(fd)?;
        self.procfs_devices.insert(dev, procfs);
        Some(procfs)
    }
}

/// Answers one `stat`-family call: performed here and written into the caller's memory
/// with the owner root sees, or left to the kernel (see the module's comment).
pub(super) fn answer_stat(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    table: &OwnershipTable,
    answerer: &mut StatAnswerer,
) -> Result<Answer, i32> {
    let mut redirected_absent = None;
    match faked(listener, request, table, answerer, &mut redirected_absent) {
        Some(()) => Ok(Answer::Success),
        // Left to the kernel, the call would find the untranslated name (the builder's
        // directory of a name `/` has and the stage lacks): the redirected one's error.
        None => redirected_absent.map_or(Ok(Answer::Continue), Err),
    }
}

/// Performs the call; `None` leaves it to the kernel, except that a redirected path that
/// cannot be opened sets `redirected_absent` to the error (ENOENT, mostly).
fn faked(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    table: &OwnershipTable,
    answerer: &mut StatAnswerer,
    redirected_absent: &mut Option<i32>,
) -> Option<()> {
    let call = decode(request.data.nr as libc::c_long, request.data.args)?;
    let known = libc::AT_SYMLINK_NOFOLLOW
        | libc::AT_EMPTY_PATH
        | libc::AT_NO_AUTOMOUNT
        | libc::AT_STATX_SYNC_TYPE;
    if call.flags & !known != 0 {
        return None;
    }
    // The notification is checked once, just before the result is written: still pending
    // then means the caller was blocked in this call all along, so the path read here was
    // its own. Until then nothing is changed anywhere (an O_PATH open and a stat), so a
    // path read from a recycled pid costs nothing but the call answered by the kernel.
    let path = match call.path {
        // A NULL path is an empty one with AT_EMPTY_PATH (Linux 6.11).
        Some(0) | None => Vec::new(),
        Some(address) => caller_path_unchecked(listener, request, address).ok()?,
    };
    let (path, redirected) = match &answerer.top {
        Some(top) => {
            // Copied only for a name `/` lacks or hides (rare), to tell whether it moved.
            let absent = matches!(
                top.first_component(&path, true),
                super::redirect::FirstComponent::Absent { .. }
            );
            let asked = absent.then(|| path.clone());
            let path = top.translate(request.pid, call.dirfd, path);
            let redirected = asked.is_some_and(|asked| asked != path);
            (path, redirected)
        }
        None => (path, false),
    };
    let Some(target) = open_target(
        request.pid,
        answerer.root.as_ref(),
        call.dirfd,
        &path,
        call.flags,
    ) else {
        if redirected {
            let errno = std::io::Error::last_os_error().raw_os_error();
            *redirected_absent = Some(errno.filter(|e| *e != 0).unwrap_or(libc::ENOENT));
        }
        return None;
    };
    let own = answerer.own;
    match call.statx_mask {
        None => {
            // SAFETY: an all-zero stat is valid; fstat fills it.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: a valid descriptor (O_PATH: fstat is allowed on it) and buffer.
            if unsafe { libc::fstat(target.as_raw_fd(), &mut st) } < 0 {
                return None;
            }
            if answerer.on_procfs(st.st_dev, &target)? {
                return None;
            }
            let recorded = answerer.recorded(table, st.st_dev, st.st_ino);
            let owner = shown_owner(recorded, (st.st_uid, st.st_gid), own);
            st.st_uid = owner.uid;
            st.st_gid = owner.gid;
            if let Some(device) = stand_in(table, st.st_dev, st.st_ino, st.st_mode) {
                st.st_mode = device.st_mode();
                st.st_rdev = libc::makedev(device.major, device.minor);
            }
            // SAFETY: `st` is a plain C struct of that many initialized bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&st as *const libc::stat).cast::<u8>(),
                    std::mem::size_of::<libc::stat>(),
                )
            };
            write_to_caller(listener, request, call.buffer, bytes).ok()
        }
        Some(mask) => {
            // SAFETY: an all-zero statx is valid; statx fills it.
            let mut stx: libc::statx = unsafe { std::mem::zeroed() };
            let sync = call.flags & libc::AT_STATX_SYNC_TYPE;
            // SAFETY: a valid descriptor, an empty C string with AT_EMPTY_PATH, a valid
            // buffer.
            if unsafe {
                libc::statx(
                    target.as_raw_fd(),
                    c"".as_ptr(),
                    libc::AT_EMPTY_PATH | sync,
                    mask,
                    &mut stx,
                )
            } < 0
            {
                return None;
            }
            let dev = libc::makedev(stx.stx_dev_major, stx.stx_dev_minor);
            if answerer.on_procfs(dev, &target)? {
                return None;
            }
            let recorded = answerer.recorded(table, dev, stx.stx_ino);
            let owner = shown_owner(recorded, (stx.stx_uid, stx.stx_gid), own);
            stx.stx_uid = owner.uid;
            stx.stx_gid = owner.gid;
            let disk_mode = u32::from(stx.stx_mode);
            if let Some(device) = stand_in(table, dev, stx.stx_ino, disk_mode) {
                // The type and permission bits fit in 16 bits (S_IFMT is 0o170000).
                stx.stx_mode = device.st_mode() as u16;
                stx.stx_rdev_major = device.major;
                stx.stx_rdev_minor = device.minor;
            }
            // SAFETY: `stx` is a plain C struct of that many initialized bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&stx as *const libc::statx).cast::<u8>(),
                    std::mem::size_of::<libc::statx>(),
                )
            };
            write_to_caller(listener, request, call.buffer, bytes).ok()
        }
    }
}

/// The device node a regular file on the disk stands for (`mknod` of a device, recorded
/// by the supervisor): a step's `stat` shows the node the image will have, as `test -c`,
/// `ls -l` or a postinst checking `/dev/null` expect. A file that is no longer a regular
/// file (replaced by another kind under the same inode number) shows as it is.
fn stand_in(table: &OwnershipTable, dev: u64, ino: u64, disk_mode: u32) -> Option<Device> {
    if disk_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    table.device(dev, ino)
}

/// Opens (`O_PATH`) the file the call names in the caller's view: the descriptor or cwd
/// itself for an empty path with `AT_EMPTY_PATH`, else the path from the caller's root
/// (`root` when known, see [`StatAnswerer::root`]), cwd or descriptor. No magic link
/// (`/proc/PID/fd/N`, `/proc/self/exe`) is followed on the way: through /proc the
/// supervisor would reach its own files, not the caller's.
fn open_target(
    pid: u32,
    root: Option<&OwnedFd>,
    dirfd: libc::c_int,
    path: &[u8],
    flags: libc::c_int,
) -> Option<OwnedFd> {
    if path.is_empty() {
        if flags & libc::AT_EMPTY_PATH == 0 {
            return None;
        }
        let own = if dirfd == libc::AT_FDCWD {
            format!("/proc/{pid}/cwd")
        } else if dirfd < 0 {
            return None;
        } else {
            format!("/proc/{pid}/fd/{dirfd}")
        };
        let own = CString::new(own).ok()?;
        // SAFETY: a valid C string; the descriptor is owned right away.
        return owned(unsafe { libc::open(own.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) });
    }
    let opened;
    let (base, relative) = match (root, path.first()) {
        (Some(root), Some(b'/')) => {
            let start = path.iter().position(|b| *b != b'/').unwrap_or(path.len());
            // No interior NUL: the path was read up to the first one.
            (root, CString::new(&path[start..]).ok()?)
        }
        _ => {
            let (base, relative) = open_base(pid, dirfd, path).ok()?;
            opened = base;
            (&opened, relative)
        }
    };
    if relative.as_bytes().is_empty() {
        // SAFETY: F_DUPFD_CLOEXEC of a valid descriptor; the copy is owned right away.
        return owned(unsafe { libc::fcntl(base.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) });
    }
    let mut open_flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    if flags & libc::AT_SYMLINK_NOFOLLOW != 0 {
        open_flags |= libc::O_NOFOLLOW as u64;
    }
    let how = OpenHow {
        flags: open_flags,
        mode: 0,
        resolve: libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a valid directory descriptor, C string and open_how of the
    // size given; the result is a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            base.as_raw_fd(),
            relative.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    owned(fd as libc::c_int)
}

/// The kernel's `struct open_how` (libc's is non-exhaustive: it cannot be built).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn owned(fd: libc::c_int) -> Option<OwnedFd> {
    // SAFETY: a descriptor just returned by the kernel, owned here only.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `fd` is a file of procfs; `None` if that cannot be told.
fn on_procfs(fd: &OwnedFd) -> Option<bool> {
    // SAFETY: an all-zero statfs is valid; fstatfs fills it.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and buffer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut fs) } < 0 {
        return None;
    }
    Some(fs.f_type as i64 == PROC_SUPER_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_owner_wins_and_the_build_users_ids_show_as_root() {
        let own = (1000, 1000);
        let recorded = Some(Owner { uid: 7, gid: 8 });
        assert_eq!(
            shown_owner(recorded, (1000, 1000), own),
            Owner { uid: 7, gid: 8 }
        );
        assert_eq!(
            shown_owner(None, (1000, 1000), own),
            Owner { uid: 0, gid: 0 }
        );
        assert_eq!(shown_owner(None, (1000, 0), own), Owner { uid: 0, gid: 0 });
        assert_eq!(
            shown_owner(None, (100, 65534), own),
            Owner {
                uid: 100,
                gid: 65534
            },
            "another user's file keeps its ids"
        );
    }

    fn open_path(path: &std::ffi::CStr) -> OwnedFd {
        // SAFETY: a valid C string; the result is owned by `owned`.
        owned(unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) }).unwrap()
    }

    fn file_id(fd: &OwnedFd) -> (u64, u64) {
        let st = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        use std::os::unix::fs::MetadataExt;
        (st.dev(), st.ino())
    }

    #[test]
    fn a_devices_file_system_type_is_asked_once() {
        let mut answerer = StatAnswerer::new(
            std::process::id() as libc::pid_t,
            OwnershipTable::default(),
            None,
        );
        let (proc_dir, root) = (open_path(c"/proc"), open_path(c"/"));
        let (proc_dev, root_dev) = (file_id(&proc_dir).0, file_id(&root).0);
        assert_eq!(answerer.on_procfs(proc_dev, &proc_dir), Some(true));
        assert_eq!(answerer.on_procfs(root_dev, &root), Some(false));
        // Asked again with a descriptor of another file system (a pipe's): the first
        // answers stay, the kernel is not asked again.
        let (read_end, _write_end) = std::io::pipe().unwrap();
        let read_end = OwnedFd::from(read_end);
        assert_eq!(on_procfs(&read_end), Some(false));
        assert_eq!(answerer.on_procfs(proc_dev, &read_end), Some(true));
        assert_eq!(answerer.procfs_devices.len(), 2);
    }

    #[test]
    fn absolute_paths_start_from_the_steps_root_opened_once() {
        let pid = std::process::id();
        let answerer = StatAnswerer::new(pid as libc::pid_t, OwnershipTable::default(), None);
        let root = answerer
            .root
            .as_ref()
            .expect("the same root as this process's");
        // A pid with no /proc entry: only the cached root can resolve absolute paths.
        let gone = u32::MAX;
        for path in [&b"/etc/passwd"[..], b"//etc/../etc/passwd", b"/"] {
            let through_root = open_target(gone, Some(root), libc::AT_FDCWD, path, 0)
                .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(path)));
            let through_proc = open_target(pid, None, libc::AT_FDCWD, path, 0).unwrap();
            assert_eq!(file_id(&through_root), file_id(&through_proc));
        }
        assert!(open_target(gone, None, libc::AT_FDCWD, b"/etc/passwd", 0).is_none());
        // Magic links stay refused from the cached root too.
        let magic = b"/proc/self/root/etc";
        assert!(open_target(gone, Some(root), libc::AT_FDCWD, magic, 0).is_none());
        // Relative paths still name the caller's cwd, never this root.
        assert!(open_target(gone, Some(root), libc::AT_FDCWD, b"etc/passwd", 0).is_none());
    }

    #[test]
    fn every_stat_call_decodes_its_buffer_and_flags() {
        let args = [
            3,
            0x1000,
            0x2000,
            libc::AT_SYMLINK_NOFOLLOW as u64,
            0x7ff,
            0x3000,
        ];
        let at = decode(libc::SYS_newfstatat, args).unwrap();
        assert_eq!((at.dirfd, at.path, at.buffer), (3, Some(0x1000), 0x2000));
        assert_eq!(at.flags, libc::AT_SYMLINK_NOFOLLOW);
        assert!(at.statx_mask.is_none());
        // statx(dirfd, path, flags, mask, buffer)
        let statx_args = [4, 0x1000, libc::AT_EMPTY_PATH as u64, 0x7ff, 0x3000, 0];
        let x = decode(libc::SYS_statx, statx_args).unwrap();
        assert_eq!(
            (x.dirfd, x.path, x.flags),
            (4, Some(0x1000), libc::AT_EMPTY_PATH)
        );
        assert_eq!((x.statx_mask, x.buffer), (Some(0x7ff), 0x3000));
        let f = decode(libc::SYS_fstat, args).unwrap();
        assert_eq!((f.dirfd, f.path, f.buffer), (3, None, 0x1000));
        assert_eq!(f.flags, libc::AT_EMPTY_PATH);
        assert!(decode(libc::SYS_fchown, args).is_none());
    }
}
