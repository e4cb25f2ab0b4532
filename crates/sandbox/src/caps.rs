//! Docker's default capability set: what a step's root keeps, and dropping the rest.

use std::io;

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

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const PR_CAP_AMBIENT: libc::c_int = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: libc::c_ulong = 4;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Leaves this process (and whatever it execs) with Docker's default capabilities at most:
/// every other one is dropped from the bounding set (so no setuid program or file
/// capability gets it back), the ambient set is cleared, the inheritable set emptied (as
/// Docker does since 20.10), and effective and permitted become Docker's set (less what
/// this process did not have). Call as root, before switching to the step's user, with
/// CAP_SETPCAP still held. Async-signal-safe: no allocation, system calls only.
pub fn drop_to_docker_caps() -> io::Result<()> {
    drop_all_but(docker_cap_mask())
}

/// Leaves this process with the capabilities of `keep` (a bit mask) at most: the others are
/// dropped from the bounding set, the ambient set is cleared, the inheritable set emptied,
/// and effective and permitted become `keep` (less what this process did not have). A
/// capability already out of the bounding set is not dropped again (that would need
/// CAP_SETPCAP, which a container may lack). Async-signal-safe: no allocation.
pub fn drop_all_but(keep: u64) -> io::Result<()> {
    for cap in 0..64u32 {
        if keep & (1 << cap) != 0 {
            continue;
        }
        // 1: in the bounding set; 0: not; -1: past the last capability this kernel knows.
        // SAFETY: prctl with integer arguments only reads this process's bounding set.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) } != 1 {
            continue;
        }
        // SAFETY: prctl with integer arguments only changes this process's bounding set.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: as above, for the ambient set. EINVAL: a kernel before 4.3, which has none.
    let r = unsafe { libc::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
        return Err(io::Error::last_os_error());
    }
    let (mut header, mut data) = capget()?;
    for (i, slot) in data.iter_mut().enumerate() {
        let keep_half = (keep >> (32 * i)) as u32;
        let permitted = slot.permitted & keep_half;
        *slot = CapData {
            effective: permitted,
            permitted,
            inheritable: 0,
        };
    }
    // SAFETY: capset only reads the header and the two data structs.
    if unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// This process's capability sets (capget, version 3).
fn capget() -> io::Result<(CapHeader, [CapData; 2])> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills two CapData structs for version 3, which `data` provides.
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok((header, data))
}

/// This process's effective capability set, as a bit mask.
pub fn effective() -> io::Result<u64> {
    let (_, data) = capget()?;
    Ok(u64::from(data[0].effective) | (u64::from(data[1].effective) << 32))
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
