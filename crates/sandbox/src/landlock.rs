//! Confining a chroot step, which has no namespaces: Landlock limits its file access to its
//! root (mounts are placed inside the root in chroot mode) and, from ABI 6 (Linux 6.12),
//! scopes its signals and abstract unix sockets to itself; the capabilities that break a
//! chroot or reach other processes are dropped before exec.
//!
//! Landlock comes through the `landlock` crate (by the Landlock author, Mickaël Salaün),
//! in its best-effort mode: an older kernel enforces what it has. Where the kernel has no
//! Landlock the step runs unconfined (chroot and dropped capabilities only): the build
//! says so once ([`crate::Sandbox::chroot_confinement_warning`]) and `rbuild info` shows
//! the `landlock` field.

use std::os::fd::BorrowedFd;

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use crate::sys::errno_name;
use crate::SandboxError;

/// The Landlock ABI that scopes signals and abstract unix sockets (Linux 6.12).
pub const SCOPING_ABI: i32 = 6;

/// The ABI the rules are written for; a kernel with less gets what it has.
const TARGET_ABI: ABI = ABI::V6;

/// The Landlock ABI that can refuse TCP (Linux 6.7), for `--network=none` in chroot mode.
pub const TCP_ABI: i32 = 4;

/// Why this machine offers a step no Landlock (a missing feature, not a failure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LandlockUnavailable {
    #[error("the kernel has no Landlock (ENOSYS; Linux 5.13+ with CONFIG_SECURITY_LANDLOCK)")]
    NotInKernel,
    #[error(
        "Landlock is built in but not enabled (EOPNOTSUPP; add landlock to the lsm= boot parameter)"
    )]
    NotEnabled,
    #[error("landlock_create_ruleset is refused (EPERM; a seccomp profile forbids it)")]
    Refused,
    /// Another errno.
    #[error("landlock_create_ruleset: {}", errno_name(&std::io::Error::from_raw_os_error(*.errno)))]
    Failed { errno: i32 },
}

/// The kernel's Landlock ABI version, or why there is none.
pub fn kernel_abi() -> Result<i32, LandlockUnavailable> {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only returns
    // the ABI version; it reads no memory.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    if version >= 1 {
        return Ok(version as i32);
    }
    Err(match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ENOSYS) => LandlockUnavailable::NotInKernel,
        Some(libc::EOPNOTSUPP) => LandlockUnavailable::NotEnabled,
        Some(libc::EPERM) => LandlockUnavailable::Refused,
        errno => LandlockUnavailable::Failed {
            errno: errno.unwrap_or(0),
        },
    })
}

/// What `rbuild info` and the build's warning say about chroot confinement.
pub fn describe(abi: &Result<i32, LandlockUnavailable>) -> String {
    match abi {
        Ok(v) if *v >= SCOPING_ABI => format!("ABI {v}"),
        Ok(v) => format!(
            "ABI {v} (file access only: signals and abstract unix sockets are scoped from ABI {SCOPING_ABI}, Linux 6.12)"
        ),
        Err(why) => format!("unavailable: {why}"),
    }
}

/// The warning a build with chroot isolation prints once, if the confinement is weaker
/// than it should be.
pub fn weak_confinement_warning(abi: &Result<i32, LandlockUnavailable>) -> Option<String> {
    match abi {
        Ok(v) if *v >= SCOPING_ABI => None,
        Ok(v) => Some(format!(
            "chroot isolation: this kernel's Landlock is ABI {v}, so RUN steps are confined to \
             their root for files but may signal other processes of the same user and reach \
             abstract unix sockets (scoping needs ABI {SCOPING_ABI}, Linux 6.12)"
        )),
        Err(why) => Some(format!(
            "chroot isolation without Landlock ({why}): RUN steps are only chrooted, with \
             dangerous capabilities dropped; they may signal other root processes and reach \
             abstract unix sockets. Use user namespaces (e.g. `--security-opt \
             seccomp=unconfined`) or a kernel with Landlock for a confined build"
        )),
    }
}

/// Restricts this process (the forked step, before exec) to `root`: every file right
/// beneath it except creating device nodes, nothing elsewhere; signals and abstract unix
/// sockets scoped to the step; with `no_tcp`, no TCP bind or connect at all (the caller
/// checks the kernel has ABI [`TCP_ABI`]). Sets no_new_privs only without CAP_SYS_ADMIN
/// (where Landlock requires it). Returns whether the kernel enforced all of it.
pub fn restrict_to_root(root: BorrowedFd<'_>, no_tcp: bool) -> Result<bool, SandboxError> {
    let holds_sys_admin = crate::caps::effective()
        .map(|caps| caps & (1 << crate::caps::CAP_SYS_ADMIN) != 0)
        .unwrap_or(false);
    let all = AccessFs::from_all(TARGET_ABI);
    let devices: BitFlags<AccessFs> = AccessFs::MakeChar | AccessFs::MakeBlock;
    let tcp: BitFlags<AccessNet> = if no_tcp {
        AccessNet::from_all(ABI::V4)
    } else {
        BitFlags::empty()
    };
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .and_then(|r| if no_tcp { r.handle_access(tcp) } else { Ok(r) })
        .and_then(|r| r.scope(Scope::AbstractUnixSocket | Scope::Signal))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rule(PathBeneath::new(root, all & !devices)))
        // Landlock needs no_new_privs only from a caller without CAP_SYS_ADMIN; as real root
        // (a host) it is left unset, so setuid programs work in the step as under
        // `docker build`.
        .map(|r| r.no_new_privs(!holds_sys_admin))
        .and_then(|r| r.restrict_self())?;
    Ok(status.ruleset == RulesetStatus::FullyEnforced)
}

/// CAP_MKNOD and CAP_SYS_CHROOT, which chroot steps lose beyond Docker's set:
/// CAP_SYS_CHROOT is what a chroot escape needs (chroot into a subdirectory, then walk up);
/// device nodes a step could create in its root would reach the host's devices (the
/// sandbox creates /dev/null & co. itself, before the step).
const CAP_MKNOD: u32 = 27;
const CAP_SYS_CHROOT: u32 = 18;
const CAP_NET_RAW: u32 = 13;

/// The capabilities a chroot step keeps, as a bit mask.
fn chroot_caps(no_network: bool) -> u64 {
    let mut keep =
        crate::caps::docker_cap_mask() & !(1u64 << CAP_MKNOD) & !(1u64 << CAP_SYS_CHROOT);
    if no_network {
        keep &= !(1u64 << CAP_NET_RAW);
    }
    keep
}

/// Leaves this process (the forked step, before exec) with Docker's default capabilities
/// less CAP_MKNOD and CAP_SYS_CHROOT: gone are, among others, CAP_SYS_ADMIN (mount, e.g. a
/// fresh /proc to reach /proc/1/root), CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_SYS_RAWIO,
/// CAP_DAC_READ_SEARCH (open_by_handle_at escapes), CAP_NET_ADMIN, CAP_BPF.
/// With `no_network`, CAP_NET_RAW goes too (raw sockets would bypass the TCP rules).
pub fn drop_capabilities(no_network: bool) -> Result<(), SandboxError> {
    crate::caps::drop_all_but(chroot_caps(no_network)).map_err(SandboxError::Capabilities)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_names_the_abi_or_the_reason() {
        assert_eq!(describe(&Ok(6)), "ABI 6");
        assert!(describe(&Ok(4)).contains("ABI 4 (file access only"));
        assert_eq!(
            describe(&Err(LandlockUnavailable::NotInKernel)),
            "unavailable: the kernel has no Landlock (ENOSYS; Linux 5.13+ with CONFIG_SECURITY_LANDLOCK)"
        );
        assert_eq!(weak_confinement_warning(&Ok(7)), None);
        assert!(weak_confinement_warning(&Err(LandlockUnavailable::Refused))
            .unwrap()
            .contains("without Landlock (landlock_create_ruleset is refused (EPERM;"));
        assert_eq!(
            LandlockUnavailable::Failed {
                errno: libc::EINVAL
            }
            .to_string(),
            format!(
                "landlock_create_ruleset: EINVAL ({})",
                std::io::Error::from_raw_os_error(libc::EINVAL)
            )
        );
    }

    #[test]
    fn kept_capabilities_exclude_the_dangerous_ones() {
        for dangerous in [21, 19, 16, 17, 22, 25, 2, 32, 33, 12, 34, 39, 38, 27, 18] {
            assert_eq!(
                chroot_caps(false) & (1 << dangerous),
                0,
                "{dangerous} is kept"
            );
        }
        assert_eq!(chroot_caps(false).count_ones(), 12);
        assert_eq!(chroot_caps(true) & (1 << CAP_NET_RAW), 0);
    }
}
