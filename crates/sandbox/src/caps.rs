//! Docker's default capability set: what a step's root keeps, and dropping the rest.

use std::io;

use rustix::io::Errno;
use rustix::thread::{
    capabilities, capability_is_in_bounding_set, clear_ambient_capability_set,
    remove_capability_from_bounding_set, set_capabilities, CapabilitySet, CapabilitySets,
};

/// Docker's (and BuildKit's) default capabilities, by number and name.
pub const DOCKER_CAPS: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (13, "CAP_NET_RAW"),
    (18, "CAP_SYS_CHROOT"),
    (27, "CAP_MKNOD"),
    (29, "CAP_AUDIT_WRITE"),
    (31, "CAP_SETFCAP"),
];

/// [`DOCKER_CAPS`] as a bit mask (`0xa80425fb`, what `CapBnd` in /proc/PID/status shows).
pub fn docker_cap_mask() -> u64 {
    DOCKER_CAPS.iter().fold(0, |mask, (cap, _)| mask | 1 << cap)
}

/// Leaves this process (and whatever it execs) with Docker's default capabilities at most:
/// every other one is dropped from the bounding set (so no setuid program or file
/// capability gets it back), the ambient set is cleared, the inheritable set emptied (as
/// Docker does since 20.10), and effective and permitted become Docker's set (less what
/// this process did not have). Call as root, before switching to the step's user, with
/// CAP_SETPCAP still held. No allocation, system calls only.
pub fn drop_to_docker_caps() -> io::Result<()> {
    drop_all_but(docker_cap_mask())
}

/// Leaves this process with the capabilities of `keep` (a bit mask) at most: the others are
/// dropped from the bounding set, the ambient set is cleared, the inheritable set emptied,
/// and effective and permitted become `keep` (less what this process did not have). A
/// capability already out of the bounding set is not dropped again (that would need
/// CAP_SETPCAP, which a container may lack). No allocation. The calls act on the calling
/// thread: the helper's forked step is single-threaded.
pub fn drop_all_but(keep: u64) -> io::Result<()> {
    for cap in 0..64u32 {
        if keep & (1 << cap) != 0 {
            continue;
        }
        let one = CapabilitySet::from_bits_retain(1 << cap);
        // EINVAL: past the last capability this kernel knows.
        if !capability_is_in_bounding_set(one).unwrap_or(false) {
            continue;
        }
        remove_capability_from_bounding_set(one)?;
    }
    // EINVAL: a kernel before 4.3, which has no ambient set.
    match clear_ambient_capability_set() {
        Ok(()) | Err(Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    let current = capabilities(None)?;
    let permitted = current.permitted & CapabilitySet::from_bits_retain(keep);
    set_capabilities(
        None,
        CapabilitySets {
            effective: permitted,
            permitted,
            inheritable: CapabilitySet::empty(),
        },
    )?;
    Ok(())
}

/// This process's effective capability set, as a bit mask.
pub fn effective() -> io::Result<u64> {
    Ok(capabilities(None)?.effective.bits())
}

/// CAP_SYS_ADMIN's number.
pub const CAP_SYS_ADMIN: u32 = 21;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_is_dockers() {
        assert_eq!(docker_cap_mask(), 0xa804_25fb);
    }
}
