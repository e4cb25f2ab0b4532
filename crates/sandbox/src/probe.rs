//! What this machine allows: probed once per process in a helper child.

use std::ffi::CString;
use std::io;
use std::path::PathBuf;
use std::process::Command;

use rustix::mount::{mount, mount_change, MountFlags, MountPropagationFlags};
use rustix::pipe::{pipe_with, PipeFlags};
use rustix::process::{getegid, geteuid};
use serde::{Deserialize, Serialize};

use crate::idmap::{find_tool, ranges_for_current_user, SubIdRange};
use crate::spec::Isolation;
use crate::sys::{cvt, fork, waitpid};
use crate::SandboxError;

/// The outcome of one check: `Ok` or the reason it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Check {
    pub(crate) fn from_result(r: Result<(), String>) -> Check {
        match r {
            Ok(()) => Check {
                ok: true,
                error: None,
            },
            Err(e) => Check {
                ok: false,
                error: Some(e),
            },
        }
    }
}

/// The namespace checks, made in the helper (a single-threaded process).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamespaceChecks {
    pub userns: Check,
    pub overlay_in_userns: Check,
    pub fresh_proc: Check,
    pub chroot: Check,
    /// `unshare(CLONE_NEWCGROUP)` inside a user namespace.
    pub cgroupns: Check,
    /// The prerequisites of the `restricted` isolation (seccomp user notification,
    /// ptrace of our own children).
    #[serde(default)]
    pub restricted: crate::restricted::RestrictedChecks,
}

/// What isolation this process can use.
#[derive(Debug, Clone, Serialize)]
pub struct Capabilities {
    pub euid: u32,
    pub user: String,
    pub subuid_ranges: Vec<SubIdRange>,
    pub subgid_ranges: Vec<SubIdRange>,
    pub newuidmap: Option<PathBuf>,
    pub newgidmap: Option<PathBuf>,
    #[serde(flatten)]
    pub checks: NamespaceChecks,
    /// How chroot steps are confined: the kernel's Landlock ABI version, or why there is
    /// none (JSON: `6`, or `"unavailable: ..."`).
    #[serde(serialize_with = "serialize_landlock")]
    pub landlock: Result<i32, crate::landlock::LandlockUnavailable>,
    /// What `--isolation auto` picks, or why nothing works (JSON: `"userns"` or `{"error": ...}`).
    #[serde(serialize_with = "serialize_auto")]
    pub auto: Result<Isolation, NoIsolation>,
    /// What confines a step with the isolation `auto` picks.
    pub confinement: crate::confine::Confinement,
}

fn serialize_landlock<S: serde::Serializer>(
    landlock: &Result<i32, crate::landlock::LandlockUnavailable>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match landlock {
        Ok(abi) => serializer.serialize_i32(*abi),
        Err(why) => serializer.serialize_str(&format!("unavailable: {why}")),
    }
}

fn serialize_auto<S: serde::Serializer>(
    auto: &Result<Isolation, NoIsolation>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Failure {
        error: String,
    }
    match auto {
        Ok(isolation) => isolation.serialize(serializer),
        Err(e) => Failure {
            error: e.to_string(),
        }
        .serialize(serializer),
    }
}

impl Capabilities {
    /// Whether userns steps get more than a single id (root, or subids plus the tools).
    pub fn full_id_range(&self) -> bool {
        self.euid == 0
            || (!self.subuid_ranges.is_empty()
                && !self.subgid_ranges.is_empty()
                && self.newuidmap.is_some()
                && self.newgidmap.is_some())
    }
}

/// Runs `helper probe` and assembles the capabilities.
pub(crate) fn probe_with(program: &std::path::Path, args: &[String]) -> Capabilities {
    let euid = rustix::process::geteuid().as_raw();
    let mut command = Command::new(program);
    command
        .args(args)
        .arg("probe")
        .stdin(std::process::Stdio::null());
    crate::protocol::prepare_helper_command(&mut command, None, &["TMPDIR"]);
    let checks = command
        .output()
        .map_err(|e| format!("running the probe helper {}: {e}", program.display()))
        .and_then(|out| {
            serde_json::from_slice::<NamespaceChecks>(&out.stdout).map_err(|e| {
                format!(
                    "probe helper gave no result ({}; {e}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })
        })
        .unwrap_or_else(|e| {
            let failed = Check {
                ok: false,
                error: Some(e),
            };
            NamespaceChecks {
                userns: failed.clone(),
                overlay_in_userns: failed.clone(),
                fresh_proc: failed.clone(),
                chroot: failed.clone(),
                cgroupns: failed.clone(),
                restricted: crate::restricted::RestrictedChecks {
                    seccomp_user_notif: failed.clone(),
                    ptrace_child: failed,
                },
            }
        });
    let in_place_root = crate::restricted::in_place_root_refusal().is_none();
    let auto = decide_auto(euid, &checks, in_place_root);
    let mut caps = Capabilities {
        euid,
        user: crate::idmap::current_user_label(),
        subuid_ranges: ranges_for_current_user(std::path::Path::new("/etc/subuid"), euid),
        subgid_ranges: ranges_for_current_user(std::path::Path::new("/etc/subgid"), euid),
        newuidmap: find_tool("newuidmap"),
        newgidmap: find_tool("newgidmap"),
        checks,
        landlock: crate::landlock::kernel_abi(),
        auto,
        confinement: crate::confine::Confinement::default(),
    };
    caps.confinement = crate::confine::Confinement::of(&caps);
    caps
}

/// Why `--isolation auto` finds nothing that works on this machine: what the user namespace
/// and chroot checks said, and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no isolation available. Tried user namespaces: {userns} — blocked by seccomp \
     (e.g. Docker's default profile), AppArmor, or the sysctls user.max_user_namespaces / \
     kernel.unprivileged_userns_clone / kernel.apparmor_restrict_unprivileged_userns. Tried {chroot}. \
     To fix: run the container with `--security-opt seccomp=unconfined` (and AppArmor unconfined), \
     or run rbuild as root in the container (chroot isolation), or enable unprivileged user namespaces on the host"
)]
pub struct NoIsolation {
    /// Why a user namespace could not be created.
    pub userns: String,
    /// Why chroot cannot serve (`chroot: ...`, or that it needs root).
    pub chroot: String,
}

/// `in_place_root`: `/` is marked as an in-place root and this process is not root
/// (`restricted::in_place_root_refusal`), so the `restricted` isolation may lay stages out
/// there; it is picked only when neither user namespaces nor chroot work.
fn decide_auto(
    euid: u32,
    checks: &NamespaceChecks,
    in_place_root: bool,
) -> Result<Isolation, NoIsolation> {
    if checks.userns.ok {
        return Ok(Isolation::Userns);
    }
    if euid == 0 && checks.chroot.ok {
        return Ok(Isolation::Chroot);
    }
    if in_place_root && checks.restricted.seccomp_user_notif.ok {
        return Ok(Isolation::Restricted);
    }
    let userns = checks
        .userns
        .error
        .clone()
        .unwrap_or_else(|| "failed".into());
    let chroot = if euid == 0 {
        format!(
            "chroot: {}",
            checks.chroot.error.as_deref().unwrap_or("failed")
        )
    } else {
        format!("chroot: needs root (CAP_SYS_CHROOT), we run as uid {euid}")
    };
    Err(NoIsolation { userns, chroot })
}

// ----- helper side -----

/// Runs `f` in a forked child and returns its verdict, as the text it sent back through a
/// pipe (what [`Check`] holds).
fn in_child(f: impl FnOnce() -> Result<(), SandboxError>) -> Result<(), String> {
    let (read_end, write_end) =
        pipe_with(PipeFlags::CLOEXEC).map_err(|e| io::Error::from(e).to_string())?;
    let pid = fork().map_err(|e| e.to_string())?;
    if pid == 0 {
        drop(read_end);
        let verdict = match f() {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        };
        let msg = if verdict.is_empty() {
            "ok".to_string()
        } else {
            verdict
        };
        // A verdict is far below the pipe's capacity: one write takes it whole.
        let _ = rustix::io::write(&write_end, msg.as_bytes());
        // SAFETY: _exit ends this forked child at once, without running the helper's
        // atexit handlers or flushing buffers it shares with the helper.
        unsafe { libc::_exit(0) };
    }
    drop(write_end);
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    loop {
        match rustix::io::read(&read_end, &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        }
    }
    drop(read_end);
    let _ = waitpid(pid, 0);
    match String::from_utf8_lossy(&got).as_ref() {
        "ok" => Ok(()),
        "" => Err("the probe process died".into()),
        e => Err(e.to_string()),
    }
}

fn write_file(path: &str, content: &str) -> Result<(), SandboxError> {
    std::fs::write(path, content).map_err(|e| SandboxError::io(format!("writing {path}"), e))
}

/// Enters a new user namespace mapping only ourselves to root (enough to test what the
/// kernel allows) plus mount and PID namespaces.
fn enter_userns() -> Result<(), SandboxError> {
    let (uid, gid) = (geteuid().as_raw(), getegid().as_raw());
    // SAFETY: unshare takes flags only, and these (no CLONE_FILES, CLONE_FS or CLONE_VM)
    // change no memory or descriptor of this process: new namespaces only change what later
    // calls see. (rustix's unshare is unsafe for that very reason.)
    cvt(unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID) })
        .map_err(|e| SandboxError::sys("unshare(CLONE_NEWUSER)", e))?;
    write_file("/proc/self/setgroups", "deny")?;
    write_file("/proc/self/uid_map", &format!("0 {uid} 1"))?;
    write_file("/proc/self/gid_map", &format!("0 {gid} 1"))?;
    mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(|e| SandboxError::sys("making / private", e))
}

fn try_overlay(dir: &std::path::Path) -> Result<(), SandboxError> {
    enter_userns()?;
    for d in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir(dir.join(d)).map_err(|e| SandboxError::io(format!("mkdir {d}"), e))?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        dir.join("lower").display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    let mount_call = format!("mount overlay in {}", dir.display());
    // A NUL byte in the path: what mount(2) would say of it.
    let options = CString::new(data)
        .map_err(|_| SandboxError::sys(&mount_call, io::Error::from_raw_os_error(libc::EINVAL)))?;
    mount(
        "overlay",
        dir.join("merged"),
        "overlay",
        MountFlags::empty(),
        Some(options.as_c_str()),
    )
    .map_err(|e| SandboxError::sys(&mount_call, e))?;
    std::fs::write(dir.join("merged/probe"), b"x")
        .map_err(|e| SandboxError::io("writing to the overlay", e))
}

fn try_proc(dir: &std::path::Path) -> Result<(), SandboxError> {
    enter_userns()?;
    // procfs must be mounted from inside the new PID namespace.
    in_child(|| {
        let target = dir.join("proc");
        std::fs::create_dir(&target).map_err(|e| SandboxError::io("mkdir", e))?;
        mount(
            "proc",
            &target,
            "proc",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            None,
        )
        .map_err(|e| SandboxError::sys("mount proc", e))
    })
    .map_err(SandboxError::Probe)
}

fn try_cgroupns() -> Result<(), SandboxError> {
    enter_userns()?;
    // SAFETY: as in enter_userns: a new cgroup namespace changes no memory or descriptor.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWCGROUP) })
        .map(|_| ())
        .map_err(|e| SandboxError::sys("unshare(CLONE_NEWCGROUP)", e))
}

fn try_chroot() -> Result<(), SandboxError> {
    rustix::process::chroot(c"/").map_err(|e| SandboxError::sys("chroot", e))
}

/// The helper's `probe` command: prints [`NamespaceChecks`] as JSON on stdout.
pub fn helper_probe() {
    let scratch = std::env::temp_dir().join(format!("rbuild-probe-{}", std::process::id()));
    let checks = match std::fs::create_dir(&scratch) {
        Err(e) => {
            let c = Check::from_result(Err(format!("creating {}: {e}", scratch.display())));
            NamespaceChecks {
                userns: Check::from_result(in_child(enter_userns)),
                overlay_in_userns: c.clone(),
                fresh_proc: c,
                chroot: Check::from_result(in_child(try_chroot)),
                cgroupns: Check::from_result(in_child(try_cgroupns)),
                restricted: crate::restricted::RestrictedChecks::default(),
            }
        }
        Ok(()) => {
            let overlay_dir = scratch.join("overlay");
            let _ = std::fs::create_dir(&overlay_dir);
            let checks = NamespaceChecks {
                userns: Check::from_result(in_child(enter_userns)),
                overlay_in_userns: Check::from_result(in_child(|| try_overlay(&overlay_dir))),
                fresh_proc: Check::from_result(in_child(|| try_proc(&scratch))),
                chroot: Check::from_result(in_child(try_chroot)),
                cgroupns: Check::from_result(in_child(try_cgroupns)),
                restricted: crate::restricted::probe(&scratch),
            };
            // overlayfs leaves work/work with mode 000, which would stop the removal.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(
                overlay_dir.join("work/work"),
                std::fs::Permissions::from_mode(0o700),
            );
            let _ = std::fs::remove_dir_all(&scratch);
            checks
        }
    };
    println!("{}", serde_json::to_string(&checks).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(userns: Result<(), String>, chroot: Result<(), String>) -> NamespaceChecks {
        NamespaceChecks {
            userns: Check::from_result(userns),
            overlay_in_userns: Check::from_result(Ok(())),
            fresh_proc: Check::from_result(Ok(())),
            chroot: Check::from_result(chroot),
            cgroupns: Check::from_result(Ok(())),
            restricted: crate::restricted::RestrictedChecks::default(),
        }
    }

    #[test]
    fn auto_names_what_each_mode_said_when_nothing_works() {
        let blocked = || Err("unshare(CLONE_NEWUSER): EPERM".to_string());
        assert_eq!(
            decide_auto(1000, &checks(Ok(()), blocked()), false),
            Ok(Isolation::Userns)
        );
        assert_eq!(
            decide_auto(0, &checks(blocked(), Ok(())), false),
            Ok(Isolation::Chroot)
        );
        let err = decide_auto(1000, &checks(blocked(), Ok(())), false).unwrap_err();
        assert_eq!(
            err,
            NoIsolation {
                userns: "unshare(CLONE_NEWUSER): EPERM".into(),
                chroot: "chroot: needs root (CAP_SYS_CHROOT), we run as uid 1000".into(),
            }
        );
        let text = err.to_string();
        assert!(
            text.starts_with(
                "no isolation available. Tried user namespaces: unshare(CLONE_NEWUSER): EPERM — blocked by seccomp (e.g. Docker's default profile)"
            ),
            "{text}"
        );
        assert!(
            text.contains("Tried chroot: needs root (CAP_SYS_CHROOT), we run as uid 1000. To fix: run the container with `--security-opt seccomp=unconfined`"),
            "{text}"
        );
        // As root, chroot's own failure is named; the sandbox's error keeps the type.
        let err =
            decide_auto(0, &checks(blocked(), Err("chroot: EPERM".into())), false).unwrap_err();
        assert!(
            err.to_string().contains("Tried chroot: chroot: EPERM."),
            "{err}"
        );
        assert!(matches!(
            SandboxError::from(err),
            SandboxError::NoIsolation(_)
        ));
    }

    #[test]
    fn auto_picks_restricted_only_in_a_marked_root_where_nothing_else_works() {
        let blocked = || Err("unshare(CLONE_NEWUSER): EPERM".to_string());
        let mut nothing_else = checks(blocked(), Ok(()));
        nothing_else.restricted.seccomp_user_notif = Check::from_result(Ok(()));
        assert_eq!(
            decide_auto(1000, &nothing_else, true),
            Ok(Isolation::Restricted)
        );
        // Without the marker (a developer's host, a wrong container): never.
        assert!(decide_auto(1000, &nothing_else, false).is_err());
        // Without the supervisor: never.
        let no_notify = checks(blocked(), Ok(()));
        assert!(decide_auto(1000, &no_notify, true).is_err());
        // User namespaces first.
        let mut userns = checks(Ok(()), blocked());
        userns.restricted.seccomp_user_notif = Check::from_result(Ok(()));
        assert_eq!(decide_auto(1000, &userns, true), Ok(Isolation::Userns));
    }
}
