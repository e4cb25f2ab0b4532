//! The seccomp filter of a restricted step: root-only calls answered by the kernel (fake
//! success) or by the supervisor (recorded ownership), everything else left to the filters
//! already in place (Docker's default profile, which still refuses mount, unshare, chroot).

/// `AUDIT_ARCH_*` of the architecture this binary runs on: the filter answers only native
/// syscalls; others (i386 or x32 on x86_64) pass through to the outer filters and the
/// kernel, which refuse root-only calls with EPERM (a failed step, never a wrong image).
#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xc000_00b7;

/// The calls the supervisor answers and records (see `supervisor`): ownership changes and
/// the creation of nodes (devices need root).
#[cfg(target_arch = "x86_64")]
pub(crate) const NOTIFIED: &[libc::c_long] = &[
    libc::SYS_chown,
    libc::SYS_lchown,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_mknod,
    libc::SYS_mknodat,
];
#[cfg(target_arch = "aarch64")]
pub(crate) const NOTIFIED: &[libc::c_long] =
    &[libc::SYS_fchown, libc::SYS_fchownat, libc::SYS_mknodat];

/// The node-creating calls among [`NOTIFIED`].
#[cfg(target_arch = "x86_64")]
pub(crate) const MKNOD: &[libc::c_long] = &[libc::SYS_mknod, libc::SYS_mknodat];
#[cfg(target_arch = "aarch64")]
pub(crate) const MKNOD: &[libc::c_long] = &[libc::SYS_mknodat];

/// Calls that succeed without doing anything, so a step believes it has every capability:
/// `capset` (what daemons do when dropping privileges). The identity calls
/// (`creds::CALLS`: set*id, get*id, groups) go to the supervisor, which keeps each
/// process's fake ids, so a step starts as root and a privilege drop (apt's to `_apt`)
/// shows.
pub(crate) const FAKED: &[libc::c_long] = &[libc::SYS_capset];

/// Calls that force written data to disk: answered success without doing it (ERRNO 0), as
/// a step's `fsync` is on the `volatile` overlay of the other isolations
/// (`helper/mounts.rs`). A step's files matter only once rbuild has made them a layer,
/// which it writes durably itself; a crash of the build loses the step either way. dpkg
/// fsyncs every file it unpacks before renaming it into place, and on the runtime's overlay
/// each one waits for the disk; `sync` would flush every file system of the node. Unlike
/// the kernel's, the answer is success for a descriptor that is not open too.
pub(crate) const NOT_FORCED: &[libc::c_long] = &[
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_sync_file_range,
    libc::SYS_syncfs,
    libc::SYS_sync,
];

/// Calls that cannot be emulated without privileges (mounting, new namespaces, changing the
/// root, kernel modules): refused with EPERM, as Docker's default profile refuses them to a
/// process without capabilities, so a step fails the same way wherever rbuild runs (as
/// root on a host too) and never changes the builder's own mounts or root.
pub(crate) const REFUSED: &[libc::c_long] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_chroot,
    libc::SYS_pivot_root,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
];

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump_if_equal(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: BPF_JEQ_K,
        jt,
        jf,
        k,
    }
}

/// Which calls of a step stop in the tracer (top-level redirection, `tracer.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tracing {
    /// No tracer: no call is traced.
    Off,
    /// The stage has no redirected entry yet: only the calls that can create a name stop
    /// (every other call on a path to redirect fails the same either way, with nothing
    /// there to find); the tracer traces every call from the first one that redirects.
    Creating,
    /// Every path-taking call of [`super::tracer::TRACED`] stops.
    Full,
}

/// The path-taking calls the tracer rewrites (top-level redirection, `tracer.rs`).
#[cfg(target_arch = "x86_64")]
fn traced() -> impl Iterator<Item = libc::c_long> {
    super::tracer::TRACED.iter().map(|(nr, _)| *nr)
}
#[cfg(not(target_arch = "x86_64"))]
fn traced() -> impl Iterator<Item = libc::c_long> {
    std::iter::empty()
}

/// The calls that always create a name (or may: `openat2`'s flags are behind a pointer a
/// filter cannot read), traced under [`Tracing::Creating`].
#[cfg(target_arch = "x86_64")]
fn creating() -> impl Iterator<Item = libc::c_long> {
    super::tracer::CREATING.iter().copied()
}
#[cfg(not(target_arch = "x86_64"))]
fn creating() -> impl Iterator<Item = libc::c_long> {
    std::iter::empty()
}

const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;

/// Offset of the low 32 bits of argument `index` in `struct seccomp_data` (little-endian).
fn arg_low(index: u32) -> u32 {
    16 + 8 * index
}

/// Under [`Tracing::Creating`]: `open`/`openat` stop in the tracer only with one of
/// `flags` (`O_CREAT`, and the write flags when the step copies up) in their flags
/// (argument `flags_arg`); without them they run untraced.
fn trace_if_creating(p: &mut Vec<libc::sock_filter>, nr: libc::c_long, flags_arg: u32, flags: u32) {
    p.push(jump_if_equal(nr as u32, 0, 4));
    p.push(stmt(BPF_LD_W_ABS, arg_low(flags_arg)));
    p.push(libc::sock_filter {
        code: BPF_JSET_K,
        jt: 0,
        jf: 1,
        k: flags,
    });
    p.push(stmt(BPF_RET_K, libc::SECCOMP_RET_TRACE));
    p.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
}

/// Under [`Tracing::Creating`]: a device `mknod` (argument `mode_arg`) goes to the
/// supervisor, which emulates it; any other kind (FIFO, socket, file) stops in the tracer,
/// which redirects it as `mkdir`, and the kernel makes it.
fn mknod_by_kind(p: &mut Vec<libc::sock_filter>, nr: libc::c_long, mode_arg: u32) {
    p.push(jump_if_equal(nr as u32, 0, 6));
    p.push(stmt(BPF_LD_W_ABS, arg_low(mode_arg)));
    p.push(stmt(BPF_AND_K, libc::S_IFMT));
    p.push(jump_if_equal(libc::S_IFCHR, 2, 0));
    p.push(jump_if_equal(libc::S_IFBLK, 1, 0));
    p.push(stmt(BPF_RET_K, libc::SECCOMP_RET_TRACE));
    p.push(stmt(BPF_RET_K, libc::SECCOMP_RET_USER_NOTIF));
}

/// Offset of the high 32 bits of argument `index` in `struct seccomp_data`.
fn arg_high(index: u32) -> u32 {
    arg_low(index) + 4
}

/// The calls of `attrs::CALLS` go to the supervisor; `utimensat` only with a path (its
/// argument 1): `futimens`, a descriptor's call, falls through to the rules after these.
fn attribute_changes(p: &mut Vec<libc::sock_filter>) {
    for nr in super::attrs::CALLS {
        if *nr == libc::SYS_utimensat {
            continue;
        }
        p.push(jump_if_equal(*nr as u32, 0, 1));
        p.push(stmt(BPF_RET_K, libc::SECCOMP_RET_USER_NOTIF));
    }
    p.push(jump_if_equal(libc::SYS_utimensat as u32, 0, 5));
    p.push(stmt(BPF_LD_W_ABS, arg_low(1)));
    p.push(jump_if_equal(0, 0, 2));
    p.push(stmt(BPF_LD_W_ABS, arg_high(1)));
    p.push(jump_if_equal(0, 1, 0));
    p.push(stmt(BPF_RET_K, libc::SECCOMP_RET_USER_NOTIF));
    // The accumulator holds the call's number again for the rules after these.
    p.push(stmt(BPF_LD_W_ABS, DATA_NR));
}

/// The filter as classic BPF: two instructions per syscall (compare, answer), a few more
/// for the calls decided by an argument. `tracing`: which calls stop in the tracer
/// (`SECCOMP_RET_TRACE`; without a tracer they would fail with ENOSYS, so only for a
/// traced step).
#[cfg(test)]
pub(crate) fn program(tracing: Tracing) -> Vec<libc::sock_filter> {
    program_with(tracing, false)
}

/// The calls the supervisor answers that may name a shared file (`chown`, `setxattr`):
/// it copies up there itself (`notify::answer_one`).
fn answered_by_the_supervisor(nr: libc::c_long) -> bool {
    NOTIFIED.contains(&nr) || super::xattr::CALLS.contains(&nr)
}

/// [`program`], for a step with hard-link groups from earlier layers when `copy_up`
/// (`copy_up.rs`): every call that copies up on overlayfs must be seen before it runs.
/// Under [`Tracing::Full`] they all stop in the tracer already; under
/// [`Tracing::Creating`] the write-opens and the `chmod`, `truncate` and `utime` families
/// stop there too; without a tracer they go to the supervisor. Nothing changes without
/// groups.
pub(crate) fn program_with(tracing: Tracing, copy_up: bool) -> Vec<libc::sock_filter> {
    let mut p = vec![
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        // A foreign architecture is left to the outer filters and the kernel.
        jump_if_equal(NATIVE_ARCH, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
        stmt(BPF_LD_W_ABS, DATA_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    if tracing == Tracing::Creating {
        // Before the plain answers below, which would otherwise match these first.
        let flags = if copy_up {
            libc::O_CREAT as u32 | super::copy_up::OPEN_WRITE_FLAGS
        } else {
            libc::O_CREAT as u32
        };
        trace_if_creating(&mut p, libc::SYS_open, 1, flags);
        trace_if_creating(&mut p, libc::SYS_openat, 2, flags);
        mknod_by_kind(&mut p, libc::SYS_mknod, 1);
        mknod_by_kind(&mut p, libc::SYS_mknodat, 2);
        // Each block above ends in a return: the accumulator is reloaded for the rest.
    }
    // Before the copy-up and tracing rules, which would otherwise take these first: a
    // mode or times change by name goes to the supervisor (`attrs.rs`), which keeps it off
    // rbuild's files (Landlock has no right for them).
    attribute_changes(&mut p);
    if copy_up {
        match tracing {
            Tracing::Off => p.extend(super::copy_up::rules(
                libc::SECCOMP_RET_USER_NOTIF,
                |nr| !answered_by_the_supervisor(nr),
                true,
            )),
            // The tracer copies up what it handles (`tracer::TRACED`).
            Tracing::Creating => p.extend(super::copy_up::rules(
                libc::SECCOMP_RET_TRACE,
                |nr| !answered_by_the_supervisor(nr) && traced().any(|t| t == nr),
                false,
            )),
            Tracing::Full => {}
        }
    }
    let traced_calls: Vec<libc::c_long> = match tracing {
        Tracing::Off => Vec::new(),
        Tracing::Creating => creating().collect(),
        Tracing::Full => traced().collect(),
    };
    let answers = NOTIFIED
        .iter()
        .chain(super::xattr::CALLS)
        .chain(super::creds::CALLS)
        .chain(super::stat::CALLS)
        .map(|nr| (*nr, libc::SECCOMP_RET_USER_NOTIF))
        .chain(
            FAKED
                .iter()
                .chain(NOT_FORCED)
                .map(|nr| (*nr, libc::SECCOMP_RET_ERRNO)),
        )
        .chain(
            REFUSED
                .iter()
                .map(|nr| (*nr, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32)),
        )
        .chain(
            traced_calls
                .into_iter()
                .map(|nr| (nr, libc::SECCOMP_RET_TRACE)),
        );
    for (nr, action) in answers {
        p.push(jump_if_equal(nr as u32, 0, 1));
        p.push(stmt(BPF_RET_K, action));
    }
    p.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_architecture_is_allowed_and_the_native_one_checked() {
        let p = program(Tracing::Off);
        assert_eq!((p[0].code, p[0].k), (BPF_LD_W_ABS, DATA_ARCH));
        assert_eq!(
            (p[1].code, p[1].k, p[1].jt, p[1].jf),
            (BPF_JEQ_K, NATIVE_ARCH, 1, 0)
        );
        assert_eq!((p[2].code, p[2].k), (BPF_RET_K, libc::SECCOMP_RET_ALLOW));
        assert_eq!((p[3].code, p[3].k), (BPF_LD_W_ABS, DATA_NR));
        let last = p.last().unwrap();
        assert_eq!((last.code, last.k), (BPF_RET_K, libc::SECCOMP_RET_ALLOW));
    }

    #[test]
    fn every_listed_call_has_its_answer() {
        let p = program(Tracing::Full);
        for nr in NOTIFIED
            .iter()
            .chain(super::super::xattr::CALLS)
            .chain(super::super::creds::CALLS)
            .chain(super::super::stat::CALLS)
        {
            let at = p
                .iter()
                .position(|i| i.code == BPF_JEQ_K && i.k == *nr as u32);
            let at = at.unwrap_or_else(|| panic!("syscall {nr} not compared"));
            assert_eq!(p[at + 1].k, libc::SECCOMP_RET_USER_NOTIF);
        }
        for nr in FAKED.iter().chain(NOT_FORCED) {
            let at = p
                .iter()
                .position(|i| i.code == BPF_JEQ_K && i.k == *nr as u32);
            let at = at.unwrap_or_else(|| panic!("syscall {nr} not compared"));
            assert_eq!(
                p[at + 1].k,
                libc::SECCOMP_RET_ERRNO,
                "ERRNO with data 0: success"
            );
        }
        for nr in REFUSED {
            let at = p
                .iter()
                .position(|i| i.code == BPF_JEQ_K && i.k == *nr as u32);
            let at = at.unwrap_or_else(|| panic!("syscall {nr} not compared"));
            assert_eq!(
                p[at + 1].k,
                libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
                "refused with EPERM"
            );
        }
        for nr in traced().filter(|nr| !super::super::attrs::CALLS.contains(nr)) {
            let at = p
                .iter()
                .position(|i| i.code == BPF_JEQ_K && i.k == nr as u32);
            let at = at.unwrap_or_else(|| panic!("syscall {nr} not compared"));
            assert_eq!(p[at + 1].k, libc::SECCOMP_RET_TRACE, "syscall {nr} traced");
        }
        assert!(
            !program(Tracing::Off)
                .iter()
                .any(|i| i.code == BPF_RET_K && i.k == libc::SECCOMP_RET_TRACE),
            "an untraced step has no TRACE answer (it would be ENOSYS)"
        );
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn with_hard_link_groups_every_copying_call_is_seen_and_without_nothing_changes() {
        let as_tuples = |p: Vec<libc::sock_filter>| -> Vec<(u16, u8, u8, u32)> {
            p.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect()
        };
        for tracing in [Tracing::Off, Tracing::Creating, Tracing::Full] {
            assert_eq!(
                as_tuples(program_with(tracing, false)),
                as_tuples(program(tracing)),
                "{tracing:?} without groups"
            );
        }
        assert_eq!(
            as_tuples(program_with(Tracing::Full, true)),
            as_tuples(program(Tracing::Full)),
            "the full filter traces every copying call already"
        );
        let (trace, allow) = (libc::SECCOMP_RET_TRACE, libc::SECCOMP_RET_ALLOW);
        let notify = libc::SECCOMP_RET_USER_NOTIF;
        let flags = |f: libc::c_int| f as u64;
        let create_only = flags(libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY);
        let copying = [
            libc::SYS_chmod,
            libc::SYS_fchmodat,
            libc::SYS_fchmodat2,
            libc::SYS_truncate,
            libc::SYS_utimensat,
            libc::SYS_utimes,
            libc::SYS_creat,
            libc::SYS_openat2,
        ];
        // In the tracer under Creating: the write-opens (not only O_CREAT) and the rest.
        let creating = program_with(Tracing::Creating, true);
        for open_flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_TRUNC, libc::O_CREAT] {
            let open_flags = flags(open_flags);
            assert_eq!(
                run(&creating, libc::SYS_openat, [0, 0, open_flags, 0, 0, 0]),
                trace
            );
            assert_eq!(
                run(&creating, libc::SYS_open, [0, open_flags, 0, 0, 0, 0]),
                trace
            );
        }
        assert_eq!(run(&creating, libc::SYS_openat, [0; 6]), allow, "a read");
        // A path in the first two arguments (where each of these takes it).
        let named = [1, 1, 0, 0, 0, 0];
        // A mode or times change by name goes to the supervisor (`attrs.rs`), which copies
        // up there; the others stop in the tracer.
        for nr in copying {
            let by = if super::super::attrs::CALLS.contains(&nr) {
                notify
            } else {
                trace
            };
            assert_eq!(run(&creating, nr, named), by, "syscall {nr}");
        }
        // `futimens` (utimensat with a NULL path): a descriptor's call, untraced; a path
        // in the high half alone is still one.
        assert_eq!(
            run(&creating, libc::SYS_utimensat, [3, 0, 0, 0, 0, 0]),
            allow
        );
        assert_eq!(
            run(&creating, libc::SYS_utimensat, [3, 1 << 32, 0, 0, 0, 0]),
            notify
        );
        for nr in [libc::SYS_fchownat, libc::SYS_setxattr, libc::SYS_newfstatat] {
            assert_eq!(run(&creating, nr, [0; 6]), notify, "syscall {nr}");
        }
        assert_eq!(run(&creating, libc::SYS_access, [0; 6]), allow);
        // Without a tracer: the supervisor gets them, and nothing is traced.
        let off = program_with(Tracing::Off, true);
        assert_eq!(
            run(
                &off,
                libc::SYS_openat,
                [0, 0, flags(libc::O_WRONLY), 0, 0, 0]
            ),
            notify
        );
        assert_eq!(
            run(&off, libc::SYS_openat, [0, 0, create_only, 0, 0, 0]),
            allow
        );
        assert_eq!(run(&off, libc::SYS_openat, [0; 6]), allow, "a read");
        for nr in copying
            .into_iter()
            .chain([libc::SYS_fchownat, libc::SYS_setxattr])
        {
            assert_eq!(run(&off, nr, named), notify, "syscall {nr}");
        }
        assert_eq!(run(&off, libc::SYS_utimensat, [3, 0, 0, 0, 0, 0]), allow);
        assert!(!off.iter().any(|i| i.code == BPF_RET_K && i.k == trace));
    }

    #[test]
    fn a_mode_or_times_change_by_name_goes_to_the_supervisor_in_every_mode() {
        let notify = libc::SECCOMP_RET_USER_NOTIF;
        for tracing in [Tracing::Off, Tracing::Creating, Tracing::Full] {
            for copy_up in [false, true] {
                let p = program_with(tracing, copy_up);
                for nr in super::super::attrs::CALLS {
                    // A path in the first two arguments (where each call takes it).
                    assert_eq!(run(&p, *nr, [1, 1, 1, 0, 0, 0]), notify, "syscall {nr}");
                }
                // `futimens`: no name, the rules after these decide (never the supervisor).
                assert_ne!(
                    run(&p, libc::SYS_utimensat, [3, 0, 0, 0, 0, 0]),
                    notify,
                    "{tracing:?}"
                );
                assert_eq!(
                    run(&p, libc::SYS_utimensat, [3, 1 << 32, 0, 0, 0, 0]),
                    notify
                );
                // The number is loaded again: the calls after them keep their answers.
                assert_eq!(run(&p, libc::SYS_fchownat, [0; 6]), notify);
                assert_eq!(run(&p, libc::SYS_capset, [0; 6]), libc::SECCOMP_RET_ERRNO);
            }
        }
    }

    /// Runs classic BPF `p` (the instructions this module emits) on a `seccomp_data` of
    /// the native architecture with `nr` and `args`: the action returned.
    fn run(p: &[libc::sock_filter], nr: libc::c_long, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend_from_slice(&(nr as u32).to_ne_bytes());
        data.extend_from_slice(&NATIVE_ARCH.to_ne_bytes());
        data.extend_from_slice(&0u64.to_ne_bytes());
        for a in args {
            data.extend_from_slice(&a.to_ne_bytes());
        }
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            pc += 1;
            match i.code {
                BPF_LD_W_ABS => {
                    let at = i.k as usize;
                    acc = u32::from_ne_bytes(data[at..at + 4].try_into().unwrap());
                }
                BPF_AND_K => acc &= i.k,
                BPF_JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
                BPF_JSET_K => pc += usize::from(if acc & i.k != 0 { i.jt } else { i.jf }),
                BPF_RET_K => return i.k,
                other => panic!("instruction {other:#x} not emitted by this module"),
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn only_calls_that_create_a_name_are_traced_until_a_redirection() {
        let p = program(Tracing::Creating);
        let trace = libc::SECCOMP_RET_TRACE;
        let allow = libc::SECCOMP_RET_ALLOW;
        let notify = libc::SECCOMP_RET_USER_NOTIF;
        let creat = libc::O_CREAT as u64;
        let wronly = libc::O_WRONLY as u64;
        // Reading, stat-ing, executing, changing directory: untraced.
        assert_eq!(run(&p, libc::SYS_openat, [0, 0, 0, 0, 0, 0]), allow);
        assert_eq!(run(&p, libc::SYS_openat, [0, 0, wronly, 0, 0, 0]), allow);
        assert_eq!(run(&p, libc::SYS_open, [0, 0, 0, 0, 0, 0]), allow);
        for nr in [
            libc::SYS_access,
            libc::SYS_faccessat2,
            libc::SYS_execve,
            libc::SYS_chdir,
            libc::SYS_readlink,
            libc::SYS_unlinkat,
            libc::SYS_getcwd,
        ] {
            assert_eq!(run(&p, nr, [0; 6]), allow, "syscall {nr}");
        }
        // The supervisor's stat answers stay.
        assert_eq!(run(&p, libc::SYS_newfstatat, [0; 6]), notify);
        // O_CREAT (in the flags argument of each) is traced; O_TMPFILE alone is not.
        assert_eq!(
            run(&p, libc::SYS_openat, [0, 0, creat | wronly, 0, 0, 0]),
            trace
        );
        assert_eq!(run(&p, libc::SYS_open, [0, creat, 0, 0, 0, 0]), trace);
        assert_eq!(
            run(
                &p,
                libc::SYS_openat,
                [0, 0, libc::O_TMPFILE as u64, 0, 0, 0]
            ),
            allow
        );
        // The open flags are not read from another argument.
        assert_eq!(run(&p, libc::SYS_openat, [0, creat, 0, 0, 0, 0]), allow);
        for nr in [
            libc::SYS_mkdir,
            libc::SYS_mkdirat,
            libc::SYS_symlink,
            libc::SYS_symlinkat,
            libc::SYS_link,
            libc::SYS_linkat,
            libc::SYS_rename,
            libc::SYS_renameat,
            libc::SYS_renameat2,
            libc::SYS_creat,
            libc::SYS_openat2,
        ] {
            assert_eq!(run(&p, nr, [0; 6]), trace, "syscall {nr}");
        }
        // mknod: a FIFO or file is traced, a device goes to the supervisor.
        let fifo = u64::from(libc::S_IFIFO | 0o644);
        let chr = u64::from(libc::S_IFCHR | 0o644);
        let blk = u64::from(libc::S_IFBLK | 0o644);
        assert_eq!(run(&p, libc::SYS_mknod, [0, fifo, 0, 0, 0, 0]), trace);
        assert_eq!(run(&p, libc::SYS_mknod, [0, 0o644, 0, 0, 0, 0]), trace);
        assert_eq!(run(&p, libc::SYS_mknod, [0, chr, 0, 0, 0, 0]), notify);
        assert_eq!(run(&p, libc::SYS_mknodat, [0, 0, blk, 0, 0, 0]), notify);
        assert_eq!(run(&p, libc::SYS_mknodat, [0, 0, fifo, 0, 0, 0]), trace);
        // The full filter traces every listed call, whatever its flags.
        let full = program(Tracing::Full);
        assert_eq!(run(&full, libc::SYS_openat, [0; 6]), trace);
        assert_eq!(run(&full, libc::SYS_access, [0; 6]), trace);
        assert_eq!(run(&full, libc::SYS_mknod, [0, fifo, 0, 0, 0, 0]), notify);
        assert_eq!(run(&program(Tracing::Off), libc::SYS_mkdir, [0; 6]), allow);
    }
}
