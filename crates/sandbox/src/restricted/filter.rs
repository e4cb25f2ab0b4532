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

/// The path-taking calls the tracer rewrites (top-level redirection, `tracer.rs`).
#[cfg(target_arch = "x86_64")]
fn traced() -> impl Iterator<Item = libc::c_long> {
    super::tracer::TRACED.iter().map(|(nr, _)| *nr)
}
#[cfg(not(target_arch = "x86_64"))]
fn traced() -> impl Iterator<Item = libc::c_long> {
    std::iter::empty()
}

/// The filter as classic BPF: two instructions per syscall (compare, answer). `traced`:
/// the path-taking calls stop in the tracer (`SECCOMP_RET_TRACE`; without a tracer they
/// would fail with ENOSYS, so only for a traced step).
pub(crate) fn program(traced: bool) -> Vec<libc::sock_filter> {
    let mut p = vec![
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        // A foreign architecture is left to the outer filters and the kernel.
        jump_if_equal(NATIVE_ARCH, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
        stmt(BPF_LD_W_ABS, DATA_NR),
    ];
    let answers = NOTIFIED
        .iter()
        .chain(super::xattr::CALLS)
        .chain(super::creds::CALLS)
        .chain(super::stat::CALLS)
        .map(|nr| (*nr, libc::SECCOMP_RET_USER_NOTIF))
        .chain(FAKED.iter().map(|nr| (*nr, libc::SECCOMP_RET_ERRNO)))
        .chain(
            REFUSED
                .iter()
                .map(|nr| (*nr, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32)),
        )
        .chain(
            self::traced()
                .filter(move |_| traced)
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
        let p = program(false);
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
        let p = program(true);
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
        for nr in FAKED {
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
        for nr in traced() {
            let at = p
                .iter()
                .position(|i| i.code == BPF_JEQ_K && i.k == nr as u32);
            let at = at.unwrap_or_else(|| panic!("syscall {nr} not compared"));
            assert_eq!(p[at + 1].k, libc::SECCOMP_RET_TRACE, "syscall {nr} traced");
        }
        assert!(
            !program(false)
                .iter()
                .any(|i| i.code == BPF_RET_K && i.k == libc::SECCOMP_RET_TRACE),
            "an untraced step has no TRACE answer (it would be ENOSYS)"
        );
    }
}
