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

/// What confines a step, as `rbuild info` reports it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Confinement {
    /// The isolation this describes (what `auto` picks); `None` when nothing works.
    pub isolation: Option<crate::Isolation>,
    /// How the step's ids relate to the host's.
    pub id_mapping: String,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    /// The step's `/sys`.
    pub sys: String,
    /// Which mounts carry `nodev`.
    pub nodev: String,
    /// The step root's capabilities (also its bounding set).
    pub capabilities: Vec<String>,
    /// Whether the step gets a cgroup namespace.
    pub cgroup_namespace: bool,
    /// The step's system call filter (filled by the seccomp support; `None` if none).
    pub seccomp: Option<String>,
    /// The step's Landlock rules (filled by the Landlock support; `None` if none).
    pub landlock: Option<String>,
}

/// The filter a step of `isolation` runs under, in a few words.
fn seccomp_line(isolation: crate::Isolation) -> String {
    match crate::seccomp::summary() {
        Ok(s) if isolation == crate::Isolation::Chroot => format!(
            "{} ({} syscalls allowed), and ptrace, process_vm_*, chroot refused",
            s.profile, s.allowed_syscalls
        ),
        Ok(s) => format!("{} ({} syscalls allowed)", s.profile, s.allowed_syscalls),
        Err(e) => format!("unavailable: {e}"),
    }
}

impl Confinement {
    /// The confinement a step gets on this machine with the isolation `auto` picks.
    pub fn of(caps: &crate::Capabilities) -> Confinement {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        match caps.auto {
            Ok(crate::Isolation::Userns) => Confinement {
                isolation: Some(crate::Isolation::Userns),
                id_mapping: if caps.euid == 0 {
                    crate::root_range::describe()
                } else if caps.full_id_range() {
                    format!(
                        "container 0 = host uid {}, 1.. = the subordinate ranges of {}",
                        caps.euid, caps.user
                    )
                } else {
                    format!(
                        "single id: container 0 = host uid {}, no other id",
                        caps.euid
                    )
                },
                masked_paths: owned(MASKED_PATHS),
                readonly_paths: owned(READONLY_PATHS),
                sys: SYS_MOUNT.into(),
                nodev: "the rootfs and every bind mount (images, stages, the context, caches, \
                        secrets)"
                    .into(),
                capabilities: crate::caps::DOCKER_CAPS
                    .iter()
                    .map(|(_, name)| name.to_string())
                    .collect(),
                cgroup_namespace: caps.checks.cgroupns.ok,
                seccomp: Some(seccomp_line(crate::Isolation::Userns)),
                landlock: Some("not used: the step's mount namespace holds it in its root".into()),
            },
            Ok(crate::Isolation::Chroot) => Confinement {
                isolation: Some(crate::Isolation::Chroot),
                id_mapping: "none: container ids are host ids (no user namespace)".into(),
                sys: "none unless the rootfs has one".into(),
                nodev: "none".into(),
                capabilities: crate::caps::DOCKER_CAPS
                    .iter()
                    .map(|(_, name)| name.to_string())
                    .filter(|name| !name.ends_with("MKNOD") && !name.ends_with("SYS_CHROOT"))
                    .collect(),
                seccomp: Some(seccomp_line(crate::Isolation::Chroot)),
                landlock: Some(crate::landlock::describe(&caps.landlock)),
                ..Confinement::default()
            },
            _ => Confinement {
                id_mapping: "no isolation works here".into(),
                ..Confinement::default()
            },
        }
    }
}
