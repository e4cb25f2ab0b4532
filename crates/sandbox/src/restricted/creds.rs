//! Per-process fake credentials, as fakeroot keeps them: a step starts as root (every id
//! 0), and the identity changes it makes (`setresuid`, `setgroups`, …) are recorded for
//! its process by the supervisor and shown back by the identity queries (`getuid`,
//! `getresuid`, `getgroups`, …), with the kernel's rules for who may change to what. The
//! kernel's credentials stay the build user's.
//!
//! Why: apt drops privileges to `_apt` for its download methods (setgroups, setresgid,
//! setresuid to uid 100, then checks getuid/geteuid/getgid/getegid and getresuid answer
//! them, and refuses to run otherwise), and chowns its `partial/` directories to `_apt`
//! only when it will drop. Faking the calls as plain successes made the check fail;
//! setting `APT::Sandbox::User=root` would make the `partial/` owners differ from
//! BuildKit's image. See docs/sandbox.md, "Identity changes".
//!
//! A process is known by its thread group id and start time (a recycled pid is another
//! process). A process that has not made an identity call yet takes, at its first one, the
//! credentials of its nearest known ancestor (a fork inherits them): what its parent has
//! *then*, not at the fork — the difference shows only if a parent changes identity after
//! forking a child that has not asked yet.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use super::resolve::{caller_bytes, notification_still_valid};

/// The identity calls answered from the table.
pub(crate) const CALLS: &[libc::c_long] = &[
    libc::SYS_setuid,
    libc::SYS_setgid,
    libc::SYS_setreuid,
    libc::SYS_setregid,
    libc::SYS_setresuid,
    libc::SYS_setresgid,
    libc::SYS_setfsuid,
    libc::SYS_setfsgid,
    libc::SYS_setgroups,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
];

/// The kernel's `NGROUPS_MAX`.
const GROUPS_MAX: usize = 65536;

/// How far up the process tree a new process's credentials are looked for.
const ANCESTRY_LIMIT: usize = 512;

/// One kind of id (user or group) of a process: real, effective, saved and file-system.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Ids {
    pub real: u32,
    pub effective: u32,
    pub saved: u32,
    pub fs: u32,
}

/// What a step's process believes it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Credentials {
    pub uids: Ids,
    pub gids: Ids,
    /// The supplementary groups it set; `None` (never set): the kernel answers `getgroups`.
    pub groups: Option<Vec<u32>>,
}

/// How an identity call is answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum IdAnswer {
    /// The call returns this value.
    Value(i64),
    /// The kernel answers (`getgroups` of a process that never set its groups).
    Continue,
}

/// "Unchanged" in the set*id calls; never a valid id.
const UNCHANGED: u32 = u32::MAX;

impl Ids {
    fn holds(&self, id: u32) -> bool {
        id == self.real || id == self.effective || id == self.saved
    }

    /// `setuid`/`setgid`: with the capability every id, else the effective (and
    /// file-system) one, to the real or saved id only.
    pub(super) fn set(&mut self, privileged: bool, id: u32) -> Result<(), i32> {
        if id == UNCHANGED {
            return Err(libc::EINVAL);
        }
        if privileged {
            *self = Ids {
                real: id,
                effective: id,
                saved: id,
                fs: id,
            };
        } else if id == self.real || id == self.saved {
            self.effective = id;
            self.fs = id;
        } else {
            return Err(libc::EPERM);
        }
        Ok(())
    }

    /// `setreuid`/`setregid`, as `kernel/sys.c` does it.
    pub(super) fn set_re(
        &mut self,
        privileged: bool,
        real: u32,
        effective: u32,
    ) -> Result<(), i32> {
        let old = *self;
        let mut new = old;
        if real != UNCHANGED {
            if !privileged && real != old.real && real != old.effective {
                return Err(libc::EPERM);
            }
            new.real = real;
        }
        if effective != UNCHANGED {
            if !privileged && !old.holds(effective) {
                return Err(libc::EPERM);
            }
            new.effective = effective;
        }
        if real != UNCHANGED || (effective != UNCHANGED && effective != old.real) {
            new.saved = new.effective;
        }
        new.fs = new.effective;
        *self = new;
        Ok(())
    }

    /// `setresuid`/`setresgid`: without the capability, each id to one of the three.
    pub(super) fn set_res(&mut self, privileged: bool, ids: [u32; 3]) -> Result<(), i32> {
        if !privileged && ids.iter().any(|id| *id != UNCHANGED && !self.holds(*id)) {
            return Err(libc::EPERM);
        }
        let [real, effective, saved] = ids;
        let keep = |new: u32, old: u32| if new == UNCHANGED { old } else { new };
        self.real = keep(real, self.real);
        self.effective = keep(effective, self.effective);
        self.saved = keep(saved, self.saved);
        self.fs = self.effective;
        Ok(())
    }

    /// `setfsuid`/`setfsgid`: returns the old file-system id whether or not it changed.
    pub(super) fn set_fs(&mut self, privileged: bool, id: u32) -> u32 {
        let old = self.fs;
        if id != UNCHANGED && (privileged || self.holds(id) || id == self.fs) {
            self.fs = id;
        }
        old
    }
}

/// Every process's recorded credentials during one step.
#[derive(Default)]
pub(super) struct CredentialTable {
    by_process: HashMap<(i32, u64), Credentials>,
    /// The process each thread that made an identity call belongs to, with the thread's
    /// own start time: a later call of the same thread (same id, same start) is known by
    /// one read of `/proc/TID/stat` instead of its `status` and its group's `stat` (bash
    /// asks four ids as it starts, and a maintainer script starts many).
    threads: HashMap<u32, (u64, Process)>,
    /// A pidfd of each process recorded with credentials other than root's (the ones a
    /// step starts with), while it may be alive. When none is, every process of the step
    /// is root (a process not recorded takes its nearest recorded ancestor's credentials,
    /// and none is left that is not root's), so an identity query is answered without
    /// reading /proc (see [`CredentialTable::every_process_is_root`]).
    not_root: HashMap<(i32, u64), OwnedFd>,
    /// A process that is not root's could not be watched (`pidfd_open` refused): queries
    /// are always answered from /proc.
    unwatched: bool,
}

/// The identity queries: what they answer depends only on the caller's credentials.
const QUERIES: &[libc::c_long] = &[
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
];

impl CredentialTable {
    /// Answers one identity call of the notification `request`; `Err` is the errno the call
    /// fails with.
    pub(super) fn answer(
        &mut self,
        listener: &OwnedFd,
        request: &libc::seccomp_notif,
    ) -> Result<IdAnswer, i32> {
        // Most queries come while no process has changed identity (bash asks four ids as
        // it starts, dpkg's maintainer scripts start many): root's answer, at once.
        if QUERIES.contains(&(request.data.nr as libc::c_long)) && self.every_process_is_root() {
            return apply(&mut Credentials::default(), listener, request);
        }
        let process = self.process_of_thread(request.pid).ok_or(libc::ESRCH)?;
        let key = (process.tgid, process.start);
        let mut creds = match self.by_process.get(&key) {
            Some(creds) => creds.clone(),
            None => self.inherited(process.parent),
        };
        let answer = apply(&mut creds, listener, request)?;
        if creds != Credentials::default() {
            self.watch(key);
        }
        self.by_process.insert(key, creds);
        Ok(answer)
    }

    /// Whether every process recorded with credentials other than root's has exited (a
    /// zombie's children are already its reaper's, so none inherits from it any more).
    fn every_process_is_root(&mut self) -> bool {
        if self.unwatched {
            return false;
        }
        if self.not_root.is_empty() {
            return true;
        }
        let mut polled: Vec<libc::pollfd> = self
            .not_root
            .values()
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `polled` holds that many valid pollfds (descriptors owned by the map);
        // a zero timeout only asks.
        let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, 0) };
        if n < 0 {
            return false;
        }
        // A pidfd is readable once its process has exited.
        let exited: Vec<libc::c_int> = polled
            .iter()
            .filter(|p| p.revents & libc::POLLIN != 0)
            .map(|p| p.fd)
            .collect();
        self.not_root
            .retain(|_, fd| !exited.contains(&fd.as_raw_fd()));
        self.not_root.is_empty()
    }

    /// Keeps a pidfd of the process `key` (its credentials are not root's) until it exits.
    fn watch(&mut self, key: (i32, u64)) {
        if self.not_root.contains_key(&key) {
            return;
        }
        // SAFETY: pidfd_open takes a pid and flags; the result is a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, key.0, 0) } as libc::c_int;
        if fd < 0 {
            // ESRCH: it has exited already, nothing to watch. Anything else: it cannot be
            // watched, so its exit would go unseen.
            let errno = std::io::Error::last_os_error().raw_os_error();
            if errno != Some(libc::ESRCH) {
                self.unwatched = true;
            }
            return;
        }
        // SAFETY: a descriptor just returned by the kernel, owned here only.
        self.not_root
            .insert(key, unsafe { OwnedFd::from_raw_fd(fd) });
    }

    /// [`process_of`] `tid`, from [`CredentialTable::threads`] when that thread has been
    /// seen (a recycled thread id has another start time).
    fn process_of_thread(&mut self, tid: u32) -> Option<Process> {
        let thread = thread_of(tid)?;
        if let Some((start, process)) = self.threads.get(&tid) {
            if *start == thread.start {
                return Some(Process {
                    parent: thread.parent,
                    ..*process
                });
            }
        }
        let process = process_of(tid)?;
        self.threads.insert(tid, (thread.start, process));
        Some(process)
    }

    /// The credentials of the nearest ancestor of `parent` (itself included) this table
    /// knows; root's when none is known up to the supervisor.
    fn inherited(&self, mut parent: i32) -> Credentials {
        let supervisor = std::process::id() as i32;
        for _ in 0..ANCESTRY_LIMIT {
            if parent <= 1 || parent == supervisor {
                break;
            }
            let Some(process) = process_of(parent as u32) else {
                break;
            };
            if let Some(creds) = self.by_process.get(&(process.tgid, process.start)) {
                return creds.clone();
            }
            parent = process.parent;
        }
        Credentials::default()
    }
}

/// Applies the call of `request` to `creds`.
fn apply(
    creds: &mut Credentials,
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
) -> Result<IdAnswer, i32> {
    let a = request.data.args;
    let id = |v: u64| v as u32;
    // CAP_SETUID and CAP_SETGID: root's while the effective uid is 0 (a process dropping to
    // another uid loses them, and regains them by going back to a saved 0).
    let privileged = creds.uids.effective == 0;
    let done = Ok(IdAnswer::Value(0));
    match request.data.nr as libc::c_long {
        libc::SYS_getuid => Ok(IdAnswer::Value(creds.uids.real.into())),
        libc::SYS_geteuid => Ok(IdAnswer::Value(creds.uids.effective.into())),
        libc::SYS_getgid => Ok(IdAnswer::Value(creds.gids.real.into())),
        libc::SYS_getegid => Ok(IdAnswer::Value(creds.gids.effective.into())),
        nr @ (libc::SYS_getresuid | libc::SYS_getresgid) => {
            let ids = if nr == libc::SYS_getresuid {
                creds.uids
            } else {
                creds.gids
            };
            for (address, value) in
                [a[0], a[1], a[2]]
                    .into_iter()
                    .zip([ids.real, ids.effective, ids.saved])
            {
                write_to_caller(listener, request, address, &value.to_ne_bytes())?;
            }
            done
        }
        libc::SYS_getgroups => {
            let Some(groups) = &creds.groups else {
                return Ok(IdAnswer::Continue);
            };
            let size = a[0] as i32;
            if size < 0 {
                return Err(libc::EINVAL);
            }
            if size > 0 {
                if (size as usize) < groups.len() {
                    return Err(libc::EINVAL);
                }
                let bytes: Vec<u8> = groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
                write_to_caller(listener, request, a[1], &bytes)?;
            }
            Ok(IdAnswer::Value(groups.len() as i64))
        }
        libc::SYS_setuid => creds.uids.set(privileged, id(a[0])).and(done),
        libc::SYS_setgid => creds.gids.set(privileged, id(a[0])).and(done),
        libc::SYS_setreuid => creds.uids.set_re(privileged, id(a[0]), id(a[1])).and(done),
        libc::SYS_setregid => creds.gids.set_re(privileged, id(a[0]), id(a[1])).and(done),
        libc::SYS_setresuid => creds
            .uids
            .set_res(privileged, [id(a[0]), id(a[1]), id(a[2])])
            .and(done),
        libc::SYS_setresgid => creds
            .gids
            .set_res(privileged, [id(a[0]), id(a[1]), id(a[2])])
            .and(done),
        libc::SYS_setfsuid => Ok(IdAnswer::Value(
            creds.uids.set_fs(privileged, id(a[0])).into(),
        )),
        libc::SYS_setfsgid => Ok(IdAnswer::Value(
            creds.gids.set_fs(privileged, id(a[0])).into(),
        )),
        libc::SYS_setgroups => {
            if !privileged {
                return Err(libc::EPERM);
            }
            let count = a[0] as i32;
            if count < 0 || count as usize > GROUPS_MAX {
                return Err(libc::EINVAL);
            }
            let count = count as usize;
            let bytes = if count == 0 {
                Vec::new()
            } else {
                caller_bytes(listener, request, a[1], count * 4)?
            };
            let mut groups: Vec<u32> = bytes
                .chunks_exact(4)
                .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            // The kernel keeps them sorted (groups_sort), as getgroups then shows.
            groups.sort_unstable();
            creds.groups = Some(groups);
            done
        }
        _ => Err(libc::ENOSYS),
    }
}

/// A process as /proc shows it.
#[derive(Clone, Copy)]
struct Process {
    tgid: i32,
    start: u64,
    parent: i32,
}

/// The process of thread `tid`: its thread group, that group's start time and its parent.
fn process_of(tid: u32) -> Option<Process> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let field = |name: &str| -> Option<i32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    let tgid = field("Tgid:")?;
    let parent = field("PPid:")?;
    let start = thread_of(tgid as u32)?.start;
    Some(Process {
        tgid,
        start,
        parent,
    })
}

/// What `/proc/TID/stat` says of one thread.
struct Thread {
    /// When it started (clock ticks after boot).
    start: u64,
    /// Its process's parent.
    parent: i32,
}

fn thread_of(tid: u32) -> Option<Thread> {
    let stat = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    parse_stat(&stat)
}

/// The start time and parent from the text of `/proc/TID/stat`.
fn parse_stat(stat: &str) -> Option<Thread> {
    // The command name (field 2) may hold spaces and parentheses: fields after its last
    // `)` start at field 3; the parent is field 4, the start time field 22.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let parent = fields.nth(4 - 3)?.parse().ok()?;
    let start = fields.nth(22 - 4 - 1)?.parse().ok()?;
    Some(Thread { start, parent })
}

/// Writes `bytes` at `address` in the caller's memory (what a `get*` call returns through a
/// pointer): with `process_vm_writev`, else through `/proc/PID/mem`. The notification is
/// checked to be pending first, so the pid still names the caller, blocked in its call.
pub(super) fn write_to_caller(
    listener: &OwnedFd,
    request: &libc::seccomp_notif,
    address: u64,
    bytes: &[u8],
) -> Result<(), i32> {
    notification_still_valid(listener, request)?;
    let pid = request.pid as libc::pid_t;
    let Some(n) = super::remote::write(pid, address, bytes).map_err(|_| libc::EFAULT)? else {
        return super::memory::with_caller_memory(listener, request, |mem| {
            mem.write_all_at(bytes, address).map_err(|_| libc::EFAULT)
        });
    };
    if n != bytes.len() {
        return Err(libc::EFAULT);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(real: u32, effective: u32, saved: u32) -> Ids {
        Ids {
            real,
            effective,
            saved,
            fs: effective,
        }
    }

    #[test]
    fn a_threads_start_and_parent_are_read_past_an_odd_command_name() {
        let stat = "4242 (a) b) (c) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 200 18446744073709551615";
        let thread = parse_stat(stat).unwrap();
        assert_eq!((thread.parent, thread.start), (17, 987654));
        let own = thread_of(std::process::id()).unwrap();
        assert_eq!(own.parent as u32, std::os::unix::process::parent_id());
        assert_eq!(
            process_of(std::process::id()).unwrap().start,
            own.start,
            "a process's start is its main thread's"
        );
    }

    #[test]
    fn the_kernels_rules_for_who_may_change_to_what() {
        // apt's drop: root sets every id; unprivileged then, it cannot go back.
        let mut uids = Ids::default();
        uids.set_res(true, [100, 100, 100]).unwrap();
        assert_eq!(uids, ids(100, 100, 100));
        assert_eq!(uids.set_res(false, [0, 0, 0]), Err(libc::EPERM));
        assert_eq!(uids.set(false, 0), Err(libc::EPERM));
        assert_eq!(uids, ids(100, 100, 100), "a refused call changes nothing");
        // seteuid (setresuid(-1, e, -1)) keeps a saved 0 to return to.
        let mut uids = Ids::default();
        uids.set_res(true, [UNCHANGED, 100, UNCHANGED]).unwrap();
        assert_eq!(uids, ids(0, 100, 0));
        uids.set_res(false, [UNCHANGED, 0, UNCHANGED]).unwrap();
        assert_eq!(uids, ids(0, 0, 0));
        // setuid as root sets all; unprivileged, only the effective to the real or saved.
        let mut uids = Ids::default();
        uids.set(true, 7).unwrap();
        assert_eq!(uids, ids(7, 7, 7));
        assert_eq!(uids.set(true, UNCHANGED), Err(libc::EINVAL));
        let mut uids = ids(5, 6, 7);
        uids.set(false, 7).unwrap();
        assert_eq!(uids, ids(5, 7, 7));
        // setreuid: a new real id (or an effective one other than the real) sets the saved.
        let mut uids = ids(5, 6, 7);
        assert_eq!(uids.set_re(false, 7, UNCHANGED), Err(libc::EPERM));
        uids.set_re(false, 6, 5).unwrap();
        assert_eq!(uids, ids(6, 5, 5));
        let mut uids = ids(5, 6, 7);
        uids.set_re(false, UNCHANGED, 5).unwrap();
        assert_eq!(uids, ids(5, 5, 7), "effective back to the real: saved kept");
        // setfsuid answers the old id, changing it only when allowed.
        let mut uids = ids(5, 6, 7);
        assert_eq!(uids.set_fs(false, 9), 6);
        assert_eq!(uids.fs, 6);
        assert_eq!(uids.set_fs(false, 7), 6);
        assert_eq!(uids.fs, 7);
        assert_eq!(uids.set_fs(true, 9), 7);
        assert_eq!(uids.fs, 9);
    }

    #[test]
    fn queries_skip_proc_only_while_no_live_process_has_changed_identity() {
        let mut table = CredentialTable::default();
        assert!(table.every_process_is_root(), "a step starts as root");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let key = (child.id() as i32, 1);
        table.watch(key);
        table.watch(key);
        assert_eq!(table.not_root.len(), 1, "one watch per process");
        assert!(
            !table.every_process_is_root(),
            "a live process dropped its ids"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(table.every_process_is_root(), "that process has exited");
        assert!(table.not_root.is_empty());
        // A process that exited before it could be watched needs no watch.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id() as i32;
        gone.wait().unwrap();
        table.watch((gone_pid, 2));
        assert!(table.every_process_is_root());
        assert!(!table.unwatched);
    }
}
