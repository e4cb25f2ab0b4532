//! What a userns step is confined to, as Docker (runc) confines a container by default:
//! masked and read-only paths, a read-only `/sys`, `nodev` on every file system taken from
//! an image, a stage or the context, Docker's default capability set. The helper applies
//! it; `rbuild info` reports it.

/// Covered in every step (Docker's default `MaskedPaths`): a file gets `/dev/null` bound
/// over it, a directory an empty read-only tmpfs. Paths missing on this kernel are skipped.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Bound onto themselves read-only in every step (Docker's default `ReadonlyPaths`): the
/// kernel's tunables (`/proc/sys`: sysctls such as `kernel.core_pattern`), `sysrq-trigger`,
/// interrupt affinity, bus and file system settings.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Where a step's `/sys` comes from and what it may do there.
pub const SYS_MOUNT: &str = "the host's /sys bound read-only (nosuid, nodev, noexec), submounts \
                             (cgroupfs included) too";

/// The device nodes a step's `/dev` (a tmpfs) holds, bound from the host's; beside them
/// `pts` (a new devpts instance), `ptmx`, `shm` and the `fd`/`stdin`/`stdout`/`stderr` links.
pub const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
