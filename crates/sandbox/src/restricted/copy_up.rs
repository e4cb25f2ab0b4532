//! Copy-up on demand of a file hard-linked in an earlier layer, as overlayfs does it: a
//! step that writes to one name of such a file (an open for writing, chmod, chown, utimes,
//! truncate, an xattr change) changes that name alone, the others keep the
//! old inode, and the layer records only the name touched. A step running on the stage's
//! own files (chroot isolation) would write into the shared inode instead, changing every
//! name. So the calls that copy up on overlayfs stop in a user-notification supervisor
//! (rbuild's, outside the step) which, if the call names one of the step's pre-step
//! hard-link groups (an input: [`crate::StepSpec::copy_up_inodes`]), copies that name to a
//! new inode first (content, owner, mode, times, every xattr) and renames it over the name,
//! then lets the kernel run the call on the copy (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
//!
//! `link` to such a file is not stopped: overlayfs copies the source up, but a copy-up with
//! nothing changed is no change to its layer (the new name alone is recorded, as a plain
//! file), which is what linking to the shared inode gives here too.
//!
//! Calls on a descriptor (`fchmod`, `fchown`, `fsetxattr`, `futimens`) are not stopped: the
//! file is already open, and a descriptor opened for writing was copied up by its open. One
//! opened read-only and then changed through (`fchmod` of an `O_RDONLY` descriptor) changes
//! the shared inode: documented in docs/fidelity.md.
//!
//! The filter's rules are [`program`], a filter of their own, stacked on the step's.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use super::resolve::{caller_bytes, caller_path, errno_of, notification_still_valid};

/// `setxattrat`/`removexattrat` (Linux 6.13), one number on every architecture; libc does
/// not name them yet.
const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_REMOVEXATTRAT: libc::c_long = 466;

/// The open flags that make an open copy a lower file up on overlayfs.
const WRITE_FLAGS: u32 = (libc::O_WRONLY | libc::O_RDWR | libc::O_TRUNC) as u32;

/// How a stopped call names its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Named {
    /// Index of the directory descriptor argument, `None` for `AT_FDCWD`.
    dirfd: Option<usize>,
    /// Index of the path argument.
    path: usize,
    /// How the final symlink is treated.
    follow: Follow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    Always,
    Never,
    /// Not followed when `flag` is set in argument `arg`.
    UnlessFlag {
        arg: usize,
        flag: u32,
    },
    /// From the open flags (`O_NOFOLLOW`).
    OpenFlags,
}

/// The calls stopped whatever their arguments, and how each names its file.
fn always() -> Vec<(libc::c_long, Named)> {
    let at = |dirfd: usize, path: usize, follow: Follow| Named {
        dirfd: Some(dirfd),
        path,
        follow,
    };
    let plain = |path: usize, follow: Follow| Named {
        dirfd: None,
        path,
        follow,
    };
    let nofollow = libc::AT_SYMLINK_NOFOLLOW as u32;
    #[allow(unused_mut)]
    let mut calls = vec![
        (libc::SYS_openat2, at(0, 1, Follow::OpenFlags)),
        (libc::SYS_fchmodat, at(0, 1, Follow::Always)),
        (
            libc::SYS_fchmodat2,
            at(
                0,
                1,
                Follow::UnlessFlag {
                    arg: 3,
                    flag: nofollow,
                },
            ),
        ),
        (
            libc::SYS_fchownat,
            at(
                0,
                1,
                Follow::UnlessFlag {
                    arg: 4,
                    flag: nofollow,
                },
            ),
        ),
        (
            libc::SYS_utimensat,
            at(
                0,
                1,
                Follow::UnlessFlag {
                    arg: 3,
                    flag: nofollow,
                },
            ),
        ),
        (libc::SYS_truncate, plain(0, Follow::Always)),
        (libc::SYS_setxattr, plain(0, Follow::Always)),
        (libc::SYS_lsetxattr, plain(0, Follow::Never)),
        (libc::SYS_removexattr, plain(0, Follow::Always)),
        (libc::SYS_lremovexattr, plain(0, Follow::Never)),
        (
            SYS_SETXATTRAT,
            at(
                0,
                1,
                Follow::UnlessFlag {
                    arg: 2,
                    flag: nofollow,
                },
            ),
        ),
        (
            SYS_REMOVEXATTRAT,
            at(
                0,
                1,
                Follow::UnlessFlag {
                    arg: 2,
                    flag: nofollow,
                },
            ),
        ),
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        (libc::SYS_creat, plain(0, Follow::Always)),
        (libc::SYS_chmod, plain(0, Follow::Always)),
        (libc::SYS_chown, plain(0, Follow::Always)),
        (libc::SYS_lchown, plain(0, Follow::Never)),
        (libc::SYS_utime, plain(0, Follow::Always)),
        (libc::SYS_utimes, plain(0, Follow::Always)),
        (libc::SYS_futimesat, at(0, 1, Follow::Always)),
    ]);
    calls
}

/// The opens stopped only with a write access mode or `O_TRUNC`: (call, how it names its
/// file, index of its flags argument).
fn opens() -> Vec<(libc::c_long, Named, usize)> {
    #[allow(unused_mut)]
    let mut calls = vec![(
        libc::SYS_openat,
        Named {
            dirfd: Some(0),
            path: 1,
            follow: Follow::OpenFlags,
        },
        2,
    )];
    #[cfg(target_arch = "x86_64")]
    calls.push((
        libc::SYS_open,
        Named {
            dirfd: None,
            path: 0,
            follow: Follow::OpenFlags,
        },
        1,
    ));
    calls
}

fn named(nr: libc::c_long) -> Option<(Named, Option<usize>)> {
    if let Some((_, n)) = always().into_iter().find(|(c, _)| *c == nr) {
        return Some((n, None));
    }
    opens()
        .into_iter()
        .find(|(c, _, _)| *c == nr)
        .map(|(_, n, flags)| (n, Some(flags)))
}

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const BPF_ALU_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
/// The open flags of an open that only ever creates a file.
const CREATE_ONLY: u32 = (libc::O_CREAT | libc::O_EXCL) as u32;
/// Offsets in `struct seccomp_data`: nr, arch, then the arguments (u64 each, from 16; the
/// low half first on a little-endian machine).
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
#[cfg(target_endian = "little")]
fn arg_low(index: usize) -> u32 {
    16 + 8 * index as u32
}
#[cfg(target_endian = "big")]
fn arg_low(index: usize) -> u32 {
    16 + 8 * index as u32 + 4
}
#[cfg(target_endian = "little")]
fn arg_high(index: usize) -> u32 {
    16 + 8 * index as u32 + 4
}
#[cfg(target_endian = "big")]
fn arg_high(index: usize) -> u32 {
    16 + 8 * index as u32
}

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xc000_00b7;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The copy-up filter as classic BPF: the calls in [`always`] go to the supervisor, the
/// opens in [`opens`] when their flags ask for writing or truncation, everything else is
/// left to the other filters. A foreign architecture's calls are not stopped (their numbers
/// differ): a 32-bit program writing to a shared file changes every name.
pub(crate) fn program() -> Vec<libc::sock_filter> {
    let allow = libc::SECCOMP_RET_ALLOW;
    let mut p = vec![
        insn(BPF_LD_W_ABS, 0, 0, DATA_ARCH),
        insn(BPF_JEQ_K, 1, 0, NATIVE_ARCH),
        insn(BPF_RET_K, 0, 0, allow),
        insn(BPF_LD_W_ABS, 0, 0, DATA_NR),
    ];
    p.extend(rules(libc::SECCOMP_RET_USER_NOTIF, |_| true, true));
    p.push(insn(BPF_RET_K, 0, 0, allow));
    p
}

/// The copy-up rules, for a filter whose accumulator holds the call's number: `action` for
/// the calls of [`always`] that `include` keeps and, with `opens`, for the opens of
/// [`opens`] whose flags ask for writing or truncation (their other flags allowed). A call
/// not matched falls through with the accumulator unchanged. The restricted filter uses
/// them too (`filter::program`), for the calls it does not already stop.
pub(crate) fn rules(
    action: u32,
    include: impl Fn(libc::c_long) -> bool,
    opens: bool,
) -> Vec<libc::sock_filter> {
    let allow = libc::SECCOMP_RET_ALLOW;
    let mut p = Vec::new();
    for (nr, named) in always().into_iter().filter(|(nr, _)| include(*nr)) {
        if nr == libc::SYS_utimensat {
            // `futimens` is `utimensat(fd, NULL, …)`, a descriptor's call, which copies
            // nothing (see the module's comment): a NULL path goes on unstopped, so that a
            // step setting the times of every file it extracts (dpkg, tar) pays no stop
            // for each. Not this call: skip its six instructions.
            p.push(insn(BPF_JEQ_K, 0, 6, nr as u32));
            p.push(insn(BPF_LD_W_ABS, 0, 0, arg_low(named.path)));
            p.push(insn(BPF_JEQ_K, 0, 3, 0));
            p.push(insn(BPF_LD_W_ABS, 0, 0, arg_high(named.path)));
            p.push(insn(BPF_JEQ_K, 0, 1, 0));
            p.push(insn(BPF_RET_K, 0, 0, allow));
            p.push(insn(BPF_RET_K, 0, 0, action));
            continue;
        }
        p.push(insn(BPF_JEQ_K, 0, 1, nr as u32));
        p.push(insn(BPF_RET_K, 0, 0, action));
    }
    if !opens {
        return p;
    }
    for (nr, _, flags) in self::opens() {
        // Not this call: skip its six instructions. This call: the answer depends on its
        // flags only (the accumulator no longer holds the number after the load). An open
        // that creates a file or fails (`O_CREAT | O_EXCL`, how dpkg and tar make files)
        // never opens an existing one, so it goes on without a round trip.
        p.push(insn(BPF_JEQ_K, 0, 6, nr as u32));
        p.push(insn(BPF_LD_W_ABS, 0, 0, arg_low(flags)));
        p.push(insn(BPF_JSET_K, 0, 3, WRITE_FLAGS));
        p.push(insn(BPF_ALU_AND_K, 0, 0, CREATE_ONLY));
        p.push(insn(BPF_JEQ_K, 1, 0, CREATE_ONLY));
        p.push(insn(BPF_RET_K, 0, 0, action));
        p.push(insn(BPF_RET_K, 0, 0, allow));
    }
    p
}

/// The open flags that make an open copy a lower file up (a write access mode or
/// `O_TRUNC`), for the restricted filter's own open rules.
pub(crate) const OPEN_WRITE_FLAGS: u32 = WRITE_FLAGS;

/// Installs [`program`] in this (forked, single-threaded) process with a new listener, and
/// returns the listener. Real root needs no no_new_privs for it (chroot steps).
pub(crate) fn install() -> io::Result<OwnedFd> {
    let program = program();
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "filter too long"))?,
        filter: program.as_ptr().cast_mut(),
    };
    let install = || {
        // SAFETY: seccomp reads `fprog`, which points at `program`, alive across the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &fprog as *const libc::sock_fprog,
            )
        };
        fd as libc::c_int
    };
    let mut fd = install();
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EACCES) {
        // Root without CAP_SYS_ADMIN (a default `docker run`): as for the step's own
        // filter (`seccomp::install_step_filter`), no_new_privs is what the kernel asks.
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        fd = install();
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned by the kernel, owned here only.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The step's hard-link groups from before it ran: inode numbers on its root's file system.
#[derive(Debug, Clone, Default)]
pub(crate) struct Groups {
    inodes: HashSet<u64>,
    /// Restricted isolation: where a copy-up may rename ([`Area`]). `None` (chroot
    /// isolation): anywhere in the step's root, which is the stage's rootfs alone.
    area: Option<Area>,
}

impl Groups {
    pub(crate) fn new(inodes: &[u64]) -> Self {
        Groups {
            inodes: inodes.iter().copied().collect(),
            area: None,
        }
    }

    /// These groups copied up only within `area`.
    pub(crate) fn within(mut self, area: Area) -> Self {
        self.area = Some(area);
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.inodes.is_empty()
    }
}

/// Where a restricted step's copy-up may rename. Its root is the builder's `/`, where
/// rbuild's own files live too, and the copy-up (by the tracer or the supervisor, neither
/// under the step's Landlock rules) happens before the kernel applies those rules to the
/// call: a name of a hard-link group in rbuild's directory (the stage's own `/etc/hosts`
/// put aside there shares its inode with the stage's other names) would be copied and
/// renamed over there before the kernel refused the call. So a copy-up happens only for a
/// name (resolved: its directory's real path) below one of the stage's top-level names or
/// the redirection directory, and never inside a path Landlock keeps from the step; any
/// other name is left to the kernel.
#[derive(Debug, Clone, Default)]
pub(crate) struct Area {
    /// The top-level names of `/` whose trees are the stage's (rbuild's own directory not
    /// among them). `None`: every name (no top-level redirection).
    names: Option<Vec<Vec<u8>>>,
    /// The redirection directory (absolute, no trailing slash): below it is the stage's.
    redirect: Option<Vec<u8>>,
    /// The resolved paths the step's Landlock rules keep from it.
    denied: Vec<std::path::PathBuf>,
}

impl Area {
    pub(crate) fn new(
        names: Option<Vec<Vec<u8>>>,
        redirect: Option<Vec<u8>>,
        denied: Vec<std::path::PathBuf>,
    ) -> Self {
        Area {
            names,
            redirect,
            denied,
        }
    }

    /// Whether `name` in directory `parent` (below the step's `root`) may be copied up:
    /// decided on the directory's real path, so a symlink on the way counts where it leads.
    fn holds(&self, root: &OwnedFd, parent: &OwnedFd, name: &CStr) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let (Some(root), Some(mut full)) = (fd_path(root), fd_path(parent)) else {
            return false;
        };
        if full.last() != Some(&b'/') {
            full.push(b'/');
        }
        full.extend_from_slice(name.to_bytes());
        let real = std::path::Path::new(std::ffi::OsStr::from_bytes(&full));
        if self.denied.iter().any(|denied| real.starts_with(denied)) {
            return false;
        }
        // The name as the step sees it, from its root.
        let inner = if root == b"/" {
            full.as_slice()
        } else {
            match full.strip_prefix(root.as_slice()) {
                Some(rest) if rest.first() == Some(&b'/') => rest,
                _ => return false,
            }
        };
        if let Some(redirect) = &self.redirect {
            if inner
                .strip_prefix(redirect.as_slice())
                .map(|rest| rest.first())
                == Some(Some(&b'/'))
            {
                return true;
            }
        }
        let Some(names) = &self.names else {
            return true;
        };
        let first = inner[1..].split(|b| *b == b'/').next().unwrap_or_default();
        names.iter().any(|n| n.as_slice() == first)
    }
}

/// The path a descriptor was opened at, as this process sees it (`/proc/self/fd`).
fn fd_path(fd: &OwnedFd) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    Some(link.into_os_string().into_vec())
}

/// Receives one notification of the copy-up filter and answers it: the call fails only
/// when a copy-up it needed failed (as on overlayfs). Errors only when the listener itself
/// fails.
pub(crate) fn serve_one(listener: &OwnedFd, groups: &Groups) -> io::Result<()> {
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
    let (error, flags) = match copy_up_if_shared(listener, &request, groups) {
        Ok(_) => (0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
        Err(errno) => (-errno, 0),
    };
    super::notify::send_response(listener, request.id, 0, error, flags)
}

/// A copy-up made: the old and the new inode (for a side table keyed by inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopiedUp {
    pub(crate) old: (u64, u64),
    pub(crate) new: (u64, u64),
}

/// A copy-up's record on the tracer's pipe to the supervisor: the old inode's device and
/// number, then the new one's, native u64s. Written whole (below `PIPE_BUF`, so atomic).
pub(crate) type CopyRecord = [u8; CopiedUp::RECORD_LEN];

impl CopiedUp {
    pub(crate) const RECORD_LEN: usize = 32;

    pub(crate) fn encode(&self) -> CopyRecord {
        let mut record = [0u8; Self::RECORD_LEN];
        let words = [self.old.0, self.old.1, self.new.0, self.new.1];
        for (chunk, word) in record.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        record
    }

    pub(crate) fn decode(record: &CopyRecord) -> CopiedUp {
        let word = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&record[8 * i..8 * i + 8]);
            u64::from_ne_bytes(bytes)
        };
        CopiedUp {
            old: (word(0), word(1)),
            new: (word(2), word(3)),
        }
    }
}

/// If the call in `request` names one of `groups`' files (still shared), copies that name
/// up. `Ok(None)` when nothing needed copying: the kernel then runs the call and reports
/// its own errors (a missing file, a bad descriptor). `Err` is the errno the call gets.
pub(crate) fn copy_up_if_shared(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    groups: &Groups,
) -> Result<Option<CopiedUp>, i32> {
    let nr = request.data.nr as libc::c_long;
    let args = request.data.args;
    let how_flags = || {
        let read = || caller_bytes(listener, request, args[2], 8).ok();
        let bytes = as_the_caller(request.pid, read)?;
        Some(u64::from_ne_bytes(
            <[u8; 8]>::try_from(bytes.as_slice()).ok()?,
        ))
    };
    let Some(call) = named_call(nr, args, how_flags) else {
        return Ok(None);
    };
    let read = || caller_path(listener, request, call.path).ok();
    let Some(path) = as_the_caller(request.pid, read) else {
        return Ok(None);
    };
    copy_up_path(request.pid, nr, &call, &path, groups, || {
        notification_still_valid(listener, request)
    })
}

/// The name a call changes the way overlayfs copies up for, from its number and
/// arguments: `None` for a call that copies nothing up (one not listed, an open for
/// reading, a call on a descriptor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NamedCall {
    /// `AT_FDCWD` or the caller's directory descriptor.
    pub(crate) dirfd: libc::c_int,
    /// The path argument's index and address in the caller.
    pub(crate) path_arg: usize,
    pub(crate) path: u64,
    /// Whether a final symlink is followed.
    pub(crate) follow: bool,
}

/// [`NamedCall`] of call `nr` with `args`; `how_flags` reads `openat2`'s flags (the first
/// field of its `struct open_how`, in the caller's memory), `None` when unreadable.
pub(crate) fn named_call(
    nr: libc::c_long,
    args: [u64; 6],
    how_flags: impl FnOnce() -> Option<u64>,
) -> Option<NamedCall> {
    let (named, open_flags_arg) = named(nr)?;
    let mut follow = match named.follow {
        Follow::Always | Follow::OpenFlags => true,
        Follow::Never => false,
        Follow::UnlessFlag { arg, flag } => args[arg] as u32 & flag == 0,
    };
    if named.follow == Follow::OpenFlags {
        let flags = match open_flags_arg {
            Some(arg) => args[arg],
            None => how_flags()?,
        };
        // No write flag: nothing copies up. `O_CREAT | O_EXCL` (how dpkg and tar make
        // every file) creates a file or fails, never opening an existing one: no lookup
        // of the name either, as the chroot filter lets those opens run unseen.
        if flags as u32 & WRITE_FLAGS == 0 || flags as u32 & CREATE_ONLY == CREATE_ONLY {
            return None;
        }
        follow = flags as libc::c_int & libc::O_NOFOLLOW == 0;
    }
    let path = args[named.path];
    if path == 0 {
        // A descriptor's call (`futimens` is `utimensat(fd, NULL, …)`).
        return None;
    }
    Some(NamedCall {
        dirfd: named
            .dirfd
            .map_or(libc::AT_FDCWD, |i| args[i] as libc::c_int),
        path_arg: named.path,
        path,
        follow,
    })
}

/// Copies up the file `call` names by `path` (as the caller `pid` sees it, after any
/// top-level redirection) if it is one of `groups`' files and still shared, and the
/// caller may make the change. `still_valid` is asked right before the copy: whether the
/// caller is still blocked in this call (the names resolved were its own).
pub(crate) fn copy_up_path(
    pid: u32,
    nr: libc::c_long,
    call: &NamedCall,
    path: &[u8],
    groups: &Groups,
    still_valid: impl FnOnce() -> Result<(), i32>,
) -> Result<Option<CopiedUp>, i32> {
    if path.is_empty() {
        // `AT_EMPTY_PATH`: the descriptor itself (see the module's comment).
        return Ok(None);
    }
    let Some(shared) = find_shared(pid, call.dirfd, path, call.follow, groups) else {
        return Ok(None);
    };
    if !caller_may(pid, nr, &shared) {
        // The kernel refuses the call before overlayfs would copy anything up.
        return Ok(None);
    }
    still_valid()?;
    copy_up(&shared).map(Some)
}

/// Whether the kernel would let the caller make the change `nr` asks for: overlayfs checks
/// permission before it copies up, so a refused call copies nothing. Root (with the
/// capabilities a chroot step keeps) may; another user needs write permission for an open
/// or a truncation, to own the file for a change of its metadata, and either for the
/// `utime` family (`touch` with no times needs only write permission).
fn caller_may(pid: u32, nr: libc::c_long, shared: &Shared) -> bool {
    let Some((uid, gid)) = effective_ids(pid) else {
        return true;
    };
    if uid == 0 {
        return true;
    }
    let owner = uid == shared.stat.st_uid;
    let writable = || {
        // SAFETY: as in as_the_caller: this thread's file-system ids, put back below.
        unsafe {
            libc::setfsgid(gid);
            libc::setfsuid(uid);
        }
        // SAFETY: a valid directory descriptor and C string; AT_EACCESS checks with the
        // file-system ids just set.
        let ok = unsafe {
            libc::faccessat(
                shared.parent.as_raw_fd(),
                shared.name.as_ptr(),
                libc::W_OK,
                libc::AT_EACCESS,
            )
        } == 0;
        // SAFETY: as above.
        unsafe {
            libc::setfsuid(0);
            libc::setfsgid(0);
        }
        ok
    };
    let opens = [libc::SYS_openat, libc::SYS_openat2, libc::SYS_truncate];
    #[cfg(target_arch = "x86_64")]
    let opens = [opens.as_slice(), &[libc::SYS_open, libc::SYS_creat]].concat();
    let times = [libc::SYS_utimensat];
    #[cfg(target_arch = "x86_64")]
    let times = [
        times.as_slice(),
        &[libc::SYS_utime, libc::SYS_utimes, libc::SYS_futimesat],
    ]
    .concat();
    if opens.contains(&nr) {
        writable()
    } else if times.contains(&nr) {
        owner || writable()
    } else {
        owner
    }
}

/// A file of a pre-step hard-link group, found by name.
struct Shared {
    /// Its directory, resolved inside the caller's root.
    parent: OwnedFd,
    name: CString,
    stat: libc::stat,
}

/// How many symlinks a name may go through (the kernel's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Resolves `path` as the caller `pid` sees it (relative to `dirfd` or its cwd), never
/// leaving its root (`RESOLVE_IN_ROOT`: `..` and absolute symlinks stop at the root, as
/// in the caller's chroot), and returns it if it is a regular file of `groups` that still
/// has another name. `None` for anything else, a name that does not resolve included.
fn find_shared(
    pid: u32,
    dirfd: libc::c_int,
    path: &[u8],
    follow: bool,
    groups: &Groups,
) -> Option<Shared> {
    let (root, mut inner) = as_the_caller(pid, || {
        let root = open_path(&format!("/proc/{pid}/root"))?;
        if path.first() == Some(&b'/') {
            return Some((root, path.to_vec()));
        }
        let base = if dirfd == libc::AT_FDCWD {
            format!("/proc/{pid}/cwd")
        } else if dirfd >= 0 {
            format!("/proc/{pid}/fd/{dirfd}")
        } else {
            return None;
        };
        let mut inner = path_in_root(pid, &base)?;
        inner.push(b'/');
        inner.extend_from_slice(path);
        Some((root, inner))
    })?;
    let root_stat = fstat(&root).ok()?;
    for _ in 0..=MAX_SYMLINKS {
        let (dir, name) = split_last(&inner)?;
        let parent = open_in_root(&root, &dir)?;
        let name = CString::new(name).ok()?;
        let stat = fstatat_nofollow(&parent, &name).ok()?;
        match stat.st_mode & libc::S_IFMT {
            libc::S_IFLNK if follow => {
                let target = readlinkat(&parent, &name)?;
                inner = if target.first() == Some(&b'/') {
                    target
                } else {
                    let mut joined = dir;
                    joined.push(b'/');
                    joined.extend_from_slice(&target);
                    joined
                };
            }
            libc::S_IFREG
                if stat.st_dev == root_stat.st_dev
                    && stat.st_nlink > 1
                    && groups.inodes.contains(&stat.st_ino) =>
            {
                if let Some(area) = &groups.area {
                    if !area.holds(&root, &parent, &name) {
                        return None;
                    }
                }
                return Some(Shared { parent, name, stat });
            }
            _ => return None,
        }
    }
    None
}

/// Runs `f` (reads of the caller's memory and of its /proc links); if it finds nothing
/// and this supervisor is root and the caller is not, runs it again with this thread's
/// file-system ids set to the caller's effective ones: root in a default `docker run` has
/// no CAP_SYS_PTRACE, so the kernel lets it read another user's process (/proc/PID/mem,
/// cwd, root) only as that user. A root caller (the usual one) costs no /proc read.
fn as_the_caller<T>(pid: u32, f: impl Fn() -> Option<T>) -> Option<T> {
    if let Some(found) = f() {
        return Some(found);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let (uid, gid) = effective_ids(pid)?;
    if uid == 0 {
        return None;
    }
    // SAFETY: setfsgid/setfsuid change this thread's file-system ids only (the helper is
    // single-threaded); they are put back to root's below, whatever `f` returned.
    unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
    }
    let result = f();
    // SAFETY: as above.
    unsafe {
        libc::setfsuid(0);
        libc::setfsgid(0);
    }
    result
}

/// The effective uid and gid of `pid`, from /proc/PID/status.
fn effective_ids(pid: u32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| -> Option<u32> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(2)?.parse().ok()
    };
    Some((field("Uid:")?, field("Gid:")?))
}

/// The path of a /proc magic link (`/proc/PID/cwd`, `/proc/PID/fd/N`) inside the caller's
/// root: the link's target with the root's own path taken off. `None` when it is not below
/// the root (or no longer exists).
fn path_in_root(pid: u32, link: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    let root = std::fs::read_link(format!("/proc/{pid}/root"))
        .ok()?
        .into_os_string()
        .into_vec();
    let target = std::fs::read_link(link).ok()?.into_os_string().into_vec();
    if root == b"/" {
        return Some(target);
    }
    let rest = target.strip_prefix(root.as_slice())?;
    match rest.first() {
        None => Some(b"/".to_vec()),
        Some(b'/') => Some(rest.to_vec()),
        Some(_) => None,
    }
}

/// The directory part and the last component of `path` (trailing slashes dropped). `None`
/// when the last component names a directory by itself (`.`, `..`, the root, a trailing
/// slash): no regular file.
fn split_last(path: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    if path.last() == Some(&b'/') {
        return None;
    }
    let (dir, name) = match path.iter().rposition(|b| *b == b'/') {
        Some(slash) => (&path[..slash], &path[slash + 1..]),
        None => (&b""[..], path),
    };
    if name.is_empty() || name == b"." || name == b".." {
        return None;
    }
    let dir = if dir.is_empty() {
        b"/".to_vec()
    } else {
        dir.to_vec()
    };
    Some((dir, name.to_vec()))
}

fn open_path(path: &str) -> Option<OwnedFd> {
    let path = CString::new(path).ok()?;
    // SAFETY: a valid C string; the descriptor is owned right away.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    // SAFETY: a descriptor just returned by the kernel, owned here only.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens (`O_PATH`) directory `dir` below `root`, resolved as if `root` were `/`.
fn open_in_root(root: &OwnedFd, dir: &[u8]) -> Option<OwnedFd> {
    let dir = CString::new(dir).ok()?;
    // SAFETY: open_how is three integers, for which zeroes are valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 reads the C string and `how` (its size given), both alive across
    // the call; the result is a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            dir.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    } as libc::c_int;
    // SAFETY: a descriptor just returned by the kernel, owned here only.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> Result<libc::stat, i32> {
    // SAFETY: an all-zero stat is valid; fstat fills it.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and stat buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } < 0 {
        return Err(errno_of(io::Error::last_os_error()));
    }
    Ok(stat)
}

fn fstatat_nofollow(dir: &OwnedFd, name: &CStr) -> Result<libc::stat, i32> {
    // SAFETY: an all-zero stat is valid; fstatat fills it.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid directory descriptor, C string and stat buffer.
    if unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } < 0
    {
        return Err(errno_of(io::Error::last_os_error()));
    }
    Ok(stat)
}

fn readlinkat(dir: &OwnedFd, name: &CStr) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n <= 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

fn check(r: libc::c_int) -> Result<libc::c_int, i32> {
    if r < 0 {
        Err(errno_of(io::Error::last_os_error()))
    } else {
        Ok(r)
    }
}

fn owned(fd: libc::c_int) -> Result<OwnedFd, i32> {
    check(fd)?;
    // SAFETY: a descriptor just returned by the kernel, owned here only.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Tells copies made at the same time apart.
static COPIES: AtomicU64 = AtomicU64::new(0);

/// Copies `shared` to a new file in its directory and renames it over its name; the
/// directory's times are restored (a copy-up does not change the directory on overlayfs).
fn copy_up(shared: &Shared) -> Result<CopiedUp, i32> {
    let parent = shared.parent.as_raw_fd();
    // SAFETY: a valid directory descriptor and C string.
    let source = owned(unsafe {
        libc::openat(
            parent,
            shared.name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    let source_stat = fstat(&source)?;
    if (source_stat.st_dev, source_stat.st_ino) != (shared.stat.st_dev, shared.stat.st_ino) {
        // Renamed in between: the caller's call goes to whatever is there now.
        return Err(libc::EAGAIN);
    }
    let dir_stat = fstat(&shared.parent)?;
    let temporary = CString::new(format!(
        ".rbuild-copy-up.{}.{}.{}",
        shared.stat.st_ino,
        std::process::id(),
        COPIES.fetch_add(1, Ordering::Relaxed)
    ))
    .map_err(|_| libc::EINVAL)?;
    let create = || {
        // SAFETY: a valid directory descriptor and C string.
        owned(unsafe {
            libc::openat(
                parent,
                temporary.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600,
            )
        })
    };
    let mut opened_up = false;
    let copy = match create() {
        // A directory its owner may not write (mode 0555), the owner being this process
        // without the privilege to write there anyway (the restricted isolation's build
        // user): overlayfs copies up with the mounter's privileges whatever the mode, so
        // the owner's write bit is added for the copy-up alone.
        Err(libc::EACCES) if open_up(&shared.parent, &dir_stat) => {
            opened_up = true;
            create()
        }
        created => created,
    };
    let copy = copy.inspect_err(|_| {
        if opened_up {
            set_mode(&shared.parent, dir_stat.st_mode);
        }
    })?;
    let filled = fill(&source, &copy, &source_stat);
    let renamed = filled.and_then(|()| {
        // SAFETY: a valid directory descriptor and two C strings.
        check(unsafe { libc::renameat(parent, temporary.as_ptr(), parent, shared.name.as_ptr()) })
    });
    if renamed.is_err() {
        // SAFETY: a valid directory descriptor and C string.
        unsafe { libc::unlinkat(parent, temporary.as_ptr(), 0) };
    }
    if opened_up {
        set_mode(&shared.parent, dir_stat.st_mode);
    }
    renamed?;
    restore_times(&shared.parent, &dir_stat);
    let copy_stat = fstat(&copy)?;
    Ok(CopiedUp {
        old: (source_stat.st_dev, source_stat.st_ino),
        new: (copy_stat.st_dev, copy_stat.st_ino),
    })
}

/// Adds the owner's write and search bits to directory `dir` (`O_PATH`) if this process
/// owns it and they are missing: whether it did.
fn open_up(dir: &OwnedFd, stat: &libc::stat) -> bool {
    // SAFETY: geteuid has no preconditions.
    let owner = unsafe { libc::geteuid() } == stat.st_uid;
    owner && stat.st_mode & 0o300 != 0o300 && set_mode(dir, stat.st_mode | 0o300)
}

/// Sets the permission bits of `dir` (`O_PATH`, through its /proc link); whether it did.
fn set_mode(dir: &OwnedFd, mode: libc::mode_t) -> bool {
    let Ok(link) = CString::new(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
        return false;
    };
    // SAFETY: a valid C string and a mode.
    unsafe { libc::chmod(link.as_ptr(), mode & 0o7777) == 0 }
}

/// Gives `copy` the content, owner, xattrs, mode and times of `source`. The owner goes
/// before the capability xattr and the mode, both of which a chown clears.
fn fill(source: &OwnedFd, copy: &OwnedFd, stat: &libc::stat) -> Result<(), i32> {
    {
        use std::fs::File;
        use std::mem::ManuallyDrop;
        // SAFETY: borrowed as a File without taking ownership (ManuallyDrop: never closed
        // here); the OwnedFd outlives it.
        let mut from = ManuallyDrop::new(unsafe { File::from_raw_fd(source.as_raw_fd()) });
        // SAFETY: as above.
        let mut to = ManuallyDrop::new(unsafe { File::from_raw_fd(copy.as_raw_fd()) });
        io::copy(&mut *from, &mut *to).map_err(errno_of)?;
    }
    // SAFETY: a valid descriptor and plain ids.
    let chowned = unsafe { libc::fchown(copy.as_raw_fd(), stat.st_uid, stat.st_gid) };
    if chowned < 0 {
        let new = fstat(copy)?;
        // Without privilege (the restricted isolation) the copy can only be the caller's
        // own: fine when the original is too (the owner rbuild shows is in its table).
        if (new.st_uid, new.st_gid) != (stat.st_uid, stat.st_gid)
            // SAFETY: geteuid has no preconditions.
            && unsafe { libc::geteuid() } == 0
        {
            return Err(errno_of(io::Error::last_os_error()));
        }
    }
    for (name, value) in xattrs(source)? {
        // SAFETY: a valid descriptor, a C string and a buffer of `value.len()` bytes.
        check(unsafe {
            libc::fsetxattr(
                copy.as_raw_fd(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        })?;
    }
    // SAFETY: a valid descriptor and a mode.
    check(unsafe { libc::fchmod(copy.as_raw_fd(), stat.st_mode & 0o7777) })?;
    let times = [
        libc::timespec {
            tv_sec: stat.st_atime,
            tv_nsec: stat.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: stat.st_mtime,
            tv_nsec: stat.st_mtime_nsec,
        },
    ];
    // SAFETY: a valid descriptor and two timespecs.
    check(unsafe { libc::futimens(copy.as_raw_fd(), times.as_ptr()) })?;
    Ok(())
}

/// Every extended attribute of `fd` (name, value); `security.capability` last.
fn xattrs(fd: &OwnedFd) -> Result<Vec<(CString, Vec<u8>)>, i32> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        // SAFETY: the kernel writes at most `names.len()` bytes into `names`.
        let n = unsafe { libc::flistxattr(fd.as_raw_fd(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::ERANGE) if names.len() < 1 << 20 => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(errno_of(io::Error::last_os_error())),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = CString::new(name).map_err(|_| libc::EINVAL)?;
        let mut value = vec![0u8; 256];
        loop {
            // SAFETY: the kernel writes at most `value.len()` bytes into `value`.
            let got = unsafe {
                libc::fgetxattr(
                    fd.as_raw_fd(),
                    name.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if got >= 0 {
                value.truncate(got as usize);
                break;
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::ERANGE) if value.len() < 1 << 20 => value.resize(value.len() * 16, 0),
                _ => return Err(errno_of(io::Error::last_os_error())),
            }
        }
        out.push((name, value));
    }
    out.sort_by_key(|(name, _)| name.as_bytes() == b"security.capability");
    Ok(out)
}

/// Puts back a directory's access and modification times (through its `O_PATH`
/// descriptor's /proc link, which utimensat follows).
fn restore_times(dir: &OwnedFd, stat: &libc::stat) {
    let times = [
        libc::timespec {
            tv_sec: stat.st_atime,
            tv_nsec: stat.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: stat.st_mtime,
            tv_nsec: stat.st_mtime_nsec,
        },
    ];
    let Ok(link) = CString::new(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
        return;
    };
    // SAFETY: a valid C string and two timespecs. A failure leaves the directory's mtime
    // moved: it is then recorded in the layer, as a directory the step changed.
    unsafe { libc::utimensat(libc::AT_FDCWD, link.as_ptr(), times.as_ptr(), 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_record_decodes_to_the_copy_up_encoded() {
        let copied = CopiedUp {
            old: (1, u64::MAX),
            new: (0x0102_0304_0506_0708, 42),
        };
        assert_eq!(CopiedUp::decode(&copied.encode()), copied);
        assert_ne!(copied.encode(), [0u8; CopiedUp::RECORD_LEN]);
    }

    #[test]
    fn an_open_that_only_creates_names_no_file_to_copy_up() {
        let open_args = |flags: libc::c_int| {
            let mut args = [0u64; 6];
            args[1] = 0x1000; // a non-NULL path pointer
            args[2] = flags as u64;
            args
        };
        let never = || -> Option<u64> { panic!("openat's flags are an argument") };
        for flags in [
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            libc::O_RDONLY,
        ] {
            assert!(
                named_call(libc::SYS_openat, open_args(flags), never).is_none(),
                "flags {flags:#o}"
            );
        }
        for flags in [
            libc::O_WRONLY,
            libc::O_WRONLY | libc::O_CREAT,
            libc::O_RDONLY | libc::O_TRUNC,
            libc::O_RDWR | libc::O_EXCL,
        ] {
            let call = named_call(libc::SYS_openat, open_args(flags), never)
                .unwrap_or_else(|| panic!("flags {flags:#o} may write an existing file"));
            assert_eq!(call.path_arg, 1);
        }
    }

    #[test]
    fn every_stopped_call_is_compared_and_notified() {
        let p = program();
        for (nr, named) in always() {
            let at = p
                .iter()
                .position(|i| i.code == BPF_JEQ_K && i.k == nr as u32)
                .unwrap_or_else(|| panic!("syscall {nr} not compared"));
            if nr == libc::SYS_utimensat {
                // A NULL path (`futimens`) allowed, any other notified.
                assert_eq!((p[at].jt, p[at].jf), (0, 6), "skips its own block");
                assert_eq!(p[at + 1].k, arg_low(named.path));
                assert_eq!((p[at + 2].k, p[at + 2].jf), (0, 3));
                assert_eq!(p[at + 3].k, arg_high(named.path));
                assert_eq!((p[at + 4].k, p[at + 4].jf), (0, 1));
                assert_eq!(p[at + 5].k, libc::SECCOMP_RET_ALLOW);
                assert_eq!(p[at + 6].k, libc::SECCOMP_RET_USER_NOTIF);
                continue;
            }
            assert_eq!(p[at + 1].k, libc::SECCOMP_RET_USER_NOTIF);
        }
        for (nr, _, flags) in opens() {
            let at = p
                .iter()
                .position(|i| i.code == BPF_JEQ_K && i.k == nr as u32)
                .unwrap_or_else(|| panic!("open {nr} not compared"));
            assert_eq!((p[at].jt, p[at].jf), (0, 6), "skips its own block");
            assert_eq!(p[at + 1].k, arg_low(flags));
            assert_eq!((p[at + 2].code, p[at + 2].k), (BPF_JSET_K, WRITE_FLAGS));
            assert_eq!(p[at + 2].jf, 3, "no write flag: allowed");
            assert_eq!((p[at + 3].code, p[at + 3].k), (BPF_ALU_AND_K, CREATE_ONLY));
            assert_eq!(
                (p[at + 4].code, p[at + 4].jt),
                (BPF_JEQ_K, 1),
                "create-only: allowed"
            );
            assert_eq!(p[at + 5].k, libc::SECCOMP_RET_USER_NOTIF);
            assert_eq!(p[at + 6].k, libc::SECCOMP_RET_ALLOW);
        }
        let last = p.last().unwrap();
        assert_eq!((last.code, last.k), (BPF_RET_K, libc::SECCOMP_RET_ALLOW));
    }

    #[test]
    fn a_name_that_is_a_directory_by_itself_has_no_last_component() {
        assert_eq!(split_last(b"/o/a"), Some((b"/o".to_vec(), b"a".to_vec())));
        assert_eq!(split_last(b"/a"), Some((b"/".to_vec(), b"a".to_vec())));
        assert_eq!(split_last(b"a"), Some((b"/".to_vec(), b"a".to_vec())));
        assert_eq!(split_last(b"/o/"), None);
        assert_eq!(split_last(b"/o/.."), None);
        assert_eq!(split_last(b"/"), None);
    }
}
