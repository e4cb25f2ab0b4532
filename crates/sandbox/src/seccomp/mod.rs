//! The seccomp filter a step runs under: Docker's default profile (moby's
//! `profiles/seccomp/default.json`, vendored as `docker-default.json`, Apache-2.0, see
//! `NOTICE` in this directory), evaluated against Docker's default capability set and
//! compiled to BPF with `seccompiler` once per process. The helper installs it in the
//! step's process just before the command's `execve`. See docs/sandbox.md, "Seccomp".

mod profile;
#[cfg(target_arch = "x86_64")]
mod syscalls_x86_64;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::spec::Isolation;

pub use profile::{Allow, ArgCondition, Cmp, Rules};

/// moby's default profile, unchanged.
const DOCKER_DEFAULT_JSON: &str = include_str!("docker-default.json");

/// The capabilities a `docker build` RUN step has (Docker's default set); the profile's
/// capability-conditional groups are evaluated against these, whatever the step holds in
/// its own user namespace.
pub const DOCKER_DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Refused in chroot isolation on top of the profile. A chroot step shares the PID, mount
/// and user namespaces of rbuild, so what Docker allows inside its own namespaces would
/// reach outside here: `ptrace`/`process_vm_*` could read or steer rbuild itself (same
/// uid), and `chroot` by root is the classic way out of a chroot. The rest is already
/// refused by the profile under Docker's capabilities; listing it keeps that true if the
/// profile or the capability set changes.
pub const CHROOT_REFUSED: &[&str] = &[
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "pidfd_getfd",
    "kcmp",
    "chroot",
    "mount",
    "umount2",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fspick",
    "fsconfig",
    "pivot_root",
    "unshare",
    "setns",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "open_by_handle_at",
];

/// Which seccomp filter steps run under (`--security-opt seccomp=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Seccomp {
    /// Docker's default profile (plus [`CHROOT_REFUSED`] in chroot isolation).
    #[default]
    DockerDefault,
    /// No filter, as `docker run --security-opt seccomp=unconfined`.
    Unconfined,
}

impl std::fmt::Display for Seccomp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Seccomp::DockerDefault => "docker-default",
            Seccomp::Unconfined => "unconfined",
        })
    }
}

impl std::str::FromStr for Seccomp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "unconfined" => Ok(Seccomp::Unconfined),
            "docker-default" | "default" => Ok(Seccomp::DockerDefault),
            other => Err(format!(
                "unknown seccomp profile {other:?}: expected `unconfined` or `default` \
                 (custom profile files are not supported)"
            )),
        }
    }
}

/// Why the filter could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeccompError {
    #[error(
        "the seccomp profile has no syscall table for the {0} architecture (only x86_64); \
         run with `--security-opt seccomp=unconfined` to build without a filter"
    )]
    UnsupportedArch(&'static str),
    #[error("Docker's default seccomp profile: {0}")]
    Profile(String),
    #[error("compiling the seccomp filter: {0}")]
    Compile(String),
}

/// What `rbuild info` reports.
#[derive(Debug, Clone, Serialize)]
pub struct SeccompSummary {
    pub profile: &'static str,
    /// Syscalls allowed in userns isolation (some only with certain arguments).
    pub allowed_syscalls: usize,
    /// Of those, the ones allowed only with certain arguments.
    pub conditional_syscalls: Vec<String>,
    /// Syscalls answered with a specific errno instead of EPERM (`clone3` → ENOSYS).
    pub errno_syscalls: BTreeMap<String, u32>,
    /// Refused in chroot isolation on top of the profile.
    pub refused_in_chroot: Vec<&'static str>,
    /// BPF instructions of the userns filter.
    pub bpf_instructions: usize,
}

/// (name, number) of an architecture's syscalls.
type SyscallTable = &'static [(&'static str, i64)];

/// Go's name for this architecture (the profile's spelling) and its syscall table.
#[cfg(target_arch = "x86_64")]
fn arch() -> Result<(&'static str, SyscallTable), SeccompError> {
    Ok(("amd64", syscalls_x86_64::SYSCALLS))
}

#[cfg(not(target_arch = "x86_64"))]
fn arch() -> Result<(&'static str, SyscallTable), SeccompError> {
    Err(SeccompError::UnsupportedArch(std::env::consts::ARCH))
}

fn syscall_name(number: i64) -> String {
    arch()
        .ok()
        .and_then(|(_, table)| table.iter().find(|(_, nr)| *nr == number))
        .map(|(name, _)| name.to_string())
        .unwrap_or_else(|| format!("#{number}"))
}

/// (major, minor) of the running kernel, for the profile's `minKernel` entries.
fn kernel_version() -> Result<(u32, u32), SeccompError> {
    // SAFETY: utsname is plain arrays of bytes, for which all zeroes is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname writes into the struct it is given, which lives across the call.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return Err(SeccompError::Profile(format!(
            "uname: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `release` is NUL-terminated by uname.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }.to_string_lossy();
    let mut parts = release.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => Ok((major, minor)),
        _ => Err(SeccompError::Profile(format!(
            "cannot read the kernel version from {release:?}"
        ))),
    }
}

/// Docker's default profile evaluated for this machine and `isolation`.
pub fn docker_default_rules(isolation: Isolation) -> Result<Rules, SeccompError> {
    let (arch, table) = arch()?;
    let target = profile::Target {
        arch,
        caps: &DOCKER_DEFAULT_CAPS,
        kernel: kernel_version()?,
        syscalls: table,
    };
    let mut rules =
        profile::evaluate(DOCKER_DEFAULT_JSON, &target).map_err(SeccompError::Profile)?;
    if isolation == Isolation::Chroot {
        for name in CHROOT_REFUSED {
            if let Some((_, nr)) = table.iter().find(|(n, _)| n == name) {
                rules.refuse(*nr);
            }
        }
    }
    Ok(rules)
}

/// A compiled filter: BPF programs installed in order, each instruction packed as
/// `code << 48 | jt << 40 | jf << 32 | k` to cross the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFilter {
    programs: Vec<Vec<u64>>,
}

impl StepFilter {
    /// The number of BPF instructions, all programs together.
    pub fn instructions(&self) -> usize {
        self.programs.iter().map(Vec::len).sum()
    }
}

fn seccompiler_arch() -> Result<seccompiler::TargetArch, SeccompError> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|_| SeccompError::UnsupportedArch(std::env::consts::ARCH))
}

fn compile_condition(c: &ArgCondition) -> Result<seccompiler::SeccompCondition, SeccompError> {
    use seccompiler::SeccompCmpOp as Op;
    let op = match c.cmp {
        Cmp::Eq => Op::Eq,
        Cmp::Ne => Op::Ne,
        Cmp::Lt => Op::Lt,
        Cmp::Le => Op::Le,
        Cmp::Gt => Op::Gt,
        Cmp::Ge => Op::Ge,
        Cmp::MaskedEq(mask) => Op::MaskedEq(mask),
    };
    seccompiler::SeccompCondition::new(c.index, seccompiler::SeccompCmpArgLen::Qword, op, c.value)
        .map_err(|e| SeccompError::Compile(e.to_string()))
}

fn pack(program: seccompiler::BpfProgram) -> Vec<u64> {
    program
        .iter()
        .map(|i| {
            (u64::from(i.code) << 48)
                | (u64::from(i.jt) << 40)
                | (u64::from(i.jf) << 32)
                | u64::from(i.k)
        })
        .collect()
}

/// Compiles `rules`: first a filter allowing what the profile allows (everything else gets
/// the default errno), then one filter per specific errno. The kernel runs every filter and
/// keeps the most restrictive answer, the most recently installed one among equals, so the
/// errno filters decide for their syscalls, which the first filter refuses.
pub fn compile(rules: &Rules) -> Result<StepFilter, SeccompError> {
    use seccompiler::{SeccompAction, SeccompFilter, SeccompRule};
    let arch = seccompiler_arch()?;
    let mut allow: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (nr, how) in &rules.allow {
        let chain = match how {
            Allow::Always => Vec::new(),
            Allow::AnyOf(alternatives) => alternatives
                .iter()
                .map(|conds| {
                    let conds = conds
                        .iter()
                        .map(compile_condition)
                        .collect::<Result<Vec<_>, _>>()?;
                    SeccompRule::new(conds).map_err(|e| SeccompError::Compile(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        allow.insert(*nr, chain);
    }
    let to_bpf = |filter: Result<SeccompFilter, seccompiler::BackendError>| {
        filter
            .and_then(seccompiler::BpfProgram::try_from)
            .map(pack)
            .map_err(|e| SeccompError::Compile(e.to_string()))
    };
    let mut programs = vec![to_bpf(SeccompFilter::new(
        allow,
        SeccompAction::Errno(rules.default_errno),
        SeccompAction::Allow,
        arch,
    ))?];
    for (errno, syscalls) in &rules.errno {
        let table = syscalls.iter().map(|nr| (*nr, Vec::new())).collect();
        programs.push(to_bpf(SeccompFilter::new(
            table,
            SeccompAction::Allow,
            SeccompAction::Errno(*errno),
            arch,
        ))?);
    }
    Ok(StepFilter { programs })
}

/// The filter for steps with `isolation` (`Userns` or `Chroot`), built once per process.
pub fn filter_for(isolation: Isolation) -> Result<&'static StepFilter, SeccompError> {
    static USERNS: OnceLock<Result<StepFilter, SeccompError>> = OnceLock::new();
    static CHROOT: OnceLock<Result<StepFilter, SeccompError>> = OnceLock::new();
    let cell = if isolation == Isolation::Chroot {
        &CHROOT
    } else {
        &USERNS
    };
    cell.get_or_init(|| compile(&docker_default_rules(isolation)?))
        .as_ref()
        .map_err(Clone::clone)
}

/// What `rbuild info` shows about the filter a step gets.
pub fn summary() -> Result<SeccompSummary, SeccompError> {
    let rules = docker_default_rules(Isolation::Userns)?;
    let bpf_instructions = filter_for(Isolation::Userns)?.instructions();
    Ok(SeccompSummary {
        profile: "docker-default",
        allowed_syscalls: rules.allow.len(),
        conditional_syscalls: rules
            .allow
            .iter()
            .filter(|(_, how)| matches!(how, Allow::AnyOf(_)))
            .map(|(nr, _)| syscall_name(*nr))
            .collect(),
        errno_syscalls: rules
            .errno
            .iter()
            .flat_map(|(errno, set)| set.iter().map(|nr| (syscall_name(*nr), *errno)))
            .collect(),
        refused_in_chroot: CHROOT_REFUSED.to_vec(),
        bpf_instructions,
    })
}

/// The helper's copy of the filter rbuild sent with the step (`None`: unconfined).
static HELPER_FILTER: OnceLock<Option<StepFilter>> = OnceLock::new();

/// Called by the helper when it receives the step.
pub(crate) fn set_step_filter(filter: Option<StepFilter>) {
    let _ = HELPER_FILTER.set(filter);
}

fn install_program(program: &[u64]) -> std::io::Result<()> {
    let mut instructions: Vec<libc::sock_filter> = program
        .iter()
        .map(|&i| libc::sock_filter {
            code: (i >> 48) as u16,
            jt: (i >> 40) as u8,
            jf: (i >> 32) as u8,
            k: i as u32,
        })
        .collect();
    let len = u16::try_from(instructions.len())
        .map_err(|_| std::io::Error::other("BPF program too long"))?;
    let fprog = libc::sock_fprog {
        len,
        filter: instructions.as_mut_ptr(),
    };
    // SAFETY: the kernel copies the program from `fprog`, which points at `instructions`,
    // alive for the whole call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Installs the step's filter in the calling process; call it in the step's process while it
/// still holds its capabilities (before switching to the step's user) and right before the
/// command's `execve`.
///
/// Without `no_new_privs` the kernel asks for CAP_SYS_ADMIN in the current user namespace,
/// which a userns step has (and real root has): setuid programs in the step (`su`, `ping`,
/// `passwd`) keep working, as under Docker. Only where that is refused (chroot isolation in
/// a container without CAP_SYS_ADMIN) is `no_new_privs` set, since the filter matters more.
pub(crate) fn install_step_filter() -> Result<(), crate::SandboxError> {
    use crate::SandboxError;
    let Some(filter) = HELPER_FILTER.get() else {
        return Err(SandboxError::NoSeccompDecision);
    };
    let Some(filter) = filter else {
        return Ok(());
    };
    for (i, program) in filter.programs.iter().enumerate() {
        match install_program(program) {
            Ok(()) => {}
            Err(e) if i == 0 && e.raw_os_error() == Some(libc::EACCES) => {
                // SAFETY: prctl with integer arguments only.
                if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                    return Err(SandboxError::sys(
                        "prctl(PR_SET_NO_NEW_PRIVS)",
                        std::io::Error::last_os_error(),
                    ));
                }
                install_program(program)
                    .map_err(|e| SandboxError::sys("seccomp(SET_MODE_FILTER)", e))?;
            }
            Err(e) => return Err(SandboxError::sys("seccomp(SET_MODE_FILTER)", e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nr(name: &str) -> i64 {
        arch()
            .unwrap()
            .1
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name} not in the table"))
            .1
    }

    #[test]
    fn the_syscall_table_agrees_with_libc() {
        let (_, table) = arch().unwrap();
        let checks: &[(&str, libc::c_long)] = &[
            ("read", libc::SYS_read),
            ("clone", libc::SYS_clone),
            ("clone3", libc::SYS_clone3),
            ("unshare", libc::SYS_unshare),
            ("mount", libc::SYS_mount),
            ("personality", libc::SYS_personality),
            ("socket", libc::SYS_socket),
            ("ptrace", libc::SYS_ptrace),
            ("keyctl", libc::SYS_keyctl),
            ("process_vm_writev", libc::SYS_process_vm_writev),
            ("openat2", libc::SYS_openat2),
            ("fchmodat2", libc::SYS_fchmodat2),
            ("futex_waitv", libc::SYS_futex_waitv),
            ("mseal", libc::SYS_mseal),
        ];
        for (name, number) in checks {
            assert_eq!(nr(name), *number, "{name}");
        }
        let mut names: Vec<_> = table.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), table.len(), "duplicate names");
    }

    #[test]
    fn docker_default_allows_the_ordinary_and_refuses_the_dangerous() {
        let rules = docker_default_rules(Isolation::Userns).unwrap();
        assert_eq!(rules.default_errno, libc::EPERM as u32);
        for ok in [
            "read", "execve", "fork", "chown", "setuid", "mknod", "chroot", "ptrace", "seccomp",
        ] {
            assert_eq!(rules.allow.get(&nr(ok)), Some(&Allow::Always), "{ok}");
        }
        for refused in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "pivot_root",
            "keyctl",
            "add_key",
            "bpf",
            "perf_event_open",
            "kexec_load",
            "init_module",
            "open_by_handle_at",
            "userfaultfd",
            "io_uring_setup",
        ] {
            assert!(!rules.allow.contains_key(&nr(refused)), "{refused}");
        }
        // clone without namespace flags only; clone3 → ENOSYS so libc falls back to clone.
        assert_eq!(
            rules.allow.get(&nr("clone")),
            Some(&Allow::AnyOf(vec![vec![ArgCondition {
                index: 0,
                cmp: Cmp::MaskedEq(0x7E02_0000),
                value: 0
            }]]))
        );
        assert_eq!(
            rules.errno.get(&(libc::ENOSYS as u32)),
            Some(&[nr("clone3")].into())
        );
        // socket: every family but AF_VSOCK (40).
        let Some(Allow::AnyOf(socket)) = rules.allow.get(&nr("socket")) else {
            panic!("socket is conditional")
        };
        assert_eq!(socket.len(), 3);
        let Some(Allow::AnyOf(personality)) = rules.allow.get(&nr("personality")) else {
            panic!("personality is conditional")
        };
        let values: Vec<u64> = personality.iter().map(|r| r[0].value).collect();
        assert_eq!(values, [0, 8, 0x20000, 0x20008, 0xffff_ffff]);
    }

    #[test]
    fn chroot_isolation_refuses_more() {
        let userns = docker_default_rules(Isolation::Userns).unwrap();
        let chroot = docker_default_rules(Isolation::Chroot).unwrap();
        for name in ["ptrace", "process_vm_readv", "process_vm_writev", "chroot"] {
            assert!(userns.allow.contains_key(&nr(name)), "{name}");
            assert!(!chroot.allow.contains_key(&nr(name)), "{name}");
        }
        assert_eq!(
            userns.allow.len() - chroot.allow.len(),
            4,
            "only these four differ"
        );
        for name in CHROOT_REFUSED {
            let Some((_, number)) = arch().unwrap().1.iter().find(|(n, _)| n == name) else {
                panic!("{name} is not an x86_64 syscall")
            };
            assert!(!chroot.allow.contains_key(number), "{name}");
            assert!(
                chroot.errno.values().all(|set| !set.contains(number)),
                "{name}"
            );
        }
    }

    #[test]
    fn the_filter_compiles_once_and_stays_within_bpf_limits() {
        let first = filter_for(Isolation::Userns).unwrap();
        let again = filter_for(Isolation::Userns).unwrap();
        assert!(std::ptr::eq(first, again), "built once per process");
        assert_eq!(
            first.programs.len(),
            2,
            "allow filter + clone3 ENOSYS filter"
        );
        assert!(first.instructions() < 4096, "{}", first.instructions());
        let chroot = filter_for(Isolation::Chroot).unwrap();
        assert!(chroot.instructions() < first.instructions());
        let json = serde_json::to_string(first).unwrap();
        let back: StepFilter = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, first);
    }

    #[test]
    fn policy_names_parse() {
        assert_eq!("unconfined".parse(), Ok(Seccomp::Unconfined));
        assert_eq!("default".parse(), Ok(Seccomp::DockerDefault));
        assert!("/etc/profile.json".parse::<Seccomp>().is_err());
    }
}
