//! The `restricted` isolation (in progress): building as a non-root user with no user
//! namespace, no mount and no chroot, under a runtime's default seccomp profile with no
//! capabilities and no_new_privs — the Kubernetes "restricted" pod. See docs/sandbox.md,
//! "Restricted pods (in progress)".
//!
//! The design is Kaniko's in-place model without root: a step runs directly (no chroot is
//! possible) in a root filesystem the build user owns, under a seccomp filter of rbuild's
//! own stacked on the runtime's. Root-only calls that only need to *look* successful
//! (`set*id`, `setgroups`, `capset`) and the `get*id` queries succeed with no effect; the
//! ownership calls, device `mknod` and file capabilities (`security.capability`) go to a
//! user-notification supervisor that records what was asked for in an [`OwnershipTable`]
//! for the layer writer, since the disk cannot hold them.
//!
//! Here: the filter, the supervisor and its table, Landlock rules that keep the step from
//! rbuild's own files, the in-place runner ([`crate::Sandbox::run`] with
//! [`crate::Isolation::Restricted`] returns the table in [`crate::StepOutcome::ownership`]),
//! the guard in front of laying a stage out in `/` ([`in_place_root_refusal`]) and the
//! probes `rbuild info` reports. The executor (`in_place/`) lays stages out and hands the
//! table to the layer writer.

mod attrs;
mod confine;
pub(crate) mod copy_up;
mod creds;
mod filter;
mod marker;
mod memory;
mod notify;
mod ptrace;
mod reap;
mod redirect;
mod remote;
mod resolve;
mod stat;
pub(crate) mod step;
mod supervisor;
mod table;
#[cfg(target_arch = "x86_64")]
mod tracer;
mod xattr;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::probe::Check;
pub use confine::{Protected, POD_CREDENTIALS};
pub use marker::{in_place_root_refusal, IN_PLACE_MARKER, IN_PLACE_OWN_DIR};
pub use step::refusal;
pub(crate) use supervisor::{recv_status, send_status};
pub use supervisor::{run_command, Finished};
pub use table::{Device, DeviceKind, Owner, OwnershipTable};

/// What a step cannot do under this isolation: `rbuild info` lists it.
pub const LIMITS: &[&str] = &[
    "mount, unshare, setns, chroot: refused by the runtime's seccomp profile before rbuild's \
     filter sees them (as under docker build)",
    "running as another user with that user's permissions (USER is refused; su/setpriv \
     change only the ids the process is shown, not its permissions, and files it creates \
     are root's in the layer: every process is the build user)",
    "setuid and file-capability programs (no_new_privs ignores them)",
    "bypassing file permissions as root does (the build user's permissions apply)",
    "syscalls of a foreign ABI (i386, x32): root-only ones fail with EPERM",
    "--network=none (no network namespace) and mounts (RUN --mount content is laid out in \
     place instead)",
    "creating entries directly in a directory that holds rbuild's own files (Landlock \
     grants whole trees only), `/` among them",
    "a top-level entry that is a directory in the builder image and not in the stage, or \
     the reverse (`/` belongs to the container runtime); entries the builder image lacks \
     are laid out in /rbuild/top and the step's paths to them redirected (x86_64), but the \
     kernel does not translate absolute symlink targets, shebang or ELF interpreter paths \
     to them, a listing of `/` does not show them, and a device node cannot be a stage's \
     first such entry (made below a new top-level directory, it can)",
    "real mounts: RUN --mount content and heredoc scripts are put in place for the step \
     and taken away after it (as in chroot mode); a mount target needs a parent the \
     builder image or the stage has (nothing can be made directly in `/`)",
];

/// The prerequisites of the `restricted` isolation, measured in the probe helper.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestrictedChecks {
    /// A child under rbuild's filter (installed with `SECCOMP_FILTER_FLAG_NEW_LISTENER`)
    /// calls `fchownat(…, 0, 0)`, `setgroups`, `setuid(0)` and `getuid`: the supervisor
    /// answers the chown and records root as the owner, the rest succeed, `getuid` says 0,
    /// and the file on disk keeps its owner; after `setresuid(100, 100, 100)`, `getresuid`
    /// and `getuid` say 100 and `setuid(0)` is refused.
    pub seccomp_user_notif: Check,
    /// `ptrace(PTRACE_SYSCALL)` of a child of ours sees its `chroot` at syscall entry
    /// (before the runtime's seccomp profile refuses it): what path translation would need.
    pub ptrace_child: Check,
}

impl Default for RestrictedChecks {
    fn default() -> Self {
        let not_probed = Check {
            ok: false,
            error: Some("not probed".into()),
        };
        RestrictedChecks {
            seccomp_user_notif: not_probed.clone(),
            ptrace_child: not_probed,
        }
    }
}

/// Runs both checks; `scratch` is an empty directory of ours for the chown target.
pub(crate) fn probe(scratch: &Path) -> RestrictedChecks {
    RestrictedChecks {
        seccomp_user_notif: Check::from_result(supervisor_answers_chown(scratch)),
        ptrace_child: Check::from_result(ptrace::tracer_sees_refused_call()),
    }
}

/// What each exit code of the probe child means.
const CHILD_FAILURES: &[(i32, &str)] = &[
    (10, "fchownat(…, 0, 0) failed under the filter"),
    (11, "getuid() or geteuid() did not answer 0"),
    (12, "setgroups(0, NULL) failed under the filter"),
    (13, "setuid(0) failed under the filter"),
    (
        14,
        "after setresuid(100, 100, 100), getresuid() did not answer 100 and setuid(0) was \
         not refused",
    ),
];

fn supervisor_answers_chown(scratch: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let file = scratch.join("restricted-chown");
    std::fs::write(&file, b"").map_err(|e| format!("creating {}: {e}", file.display()))?;
    let before = std::fs::symlink_metadata(&file).map_err(|e| e.to_string())?;
    let path = crate::sys::cpath(&file).map_err(|e| e.to_string())?;
    let finished = supervisor::run_supervised(|| {
        // SAFETY: plain syscalls with a C string that outlives them.
        unsafe {
            if libc::fchownat(libc::AT_FDCWD, path.as_ptr(), 0, 0, 0) != 0 {
                return 10;
            }
            if libc::getuid() != 0 || libc::geteuid() != 0 {
                return 11;
            }
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return 12;
            }
            if libc::setuid(0) != 0 {
                return 13;
            }
            // A privilege drop shows, and cannot be undone (apt checks both).
            let (mut real, mut effective, mut saved) = (0, 0, 0);
            if libc::setresuid(100, 100, 100) != 0
                || libc::getresuid(&mut real, &mut effective, &mut saved) != 0
                || (real, effective, saved) != (100, 100, 100)
                || libc::getuid() != 100
                || libc::setuid(0) == 0
            {
                return 14;
            }
        }
        0
    })
    .map_err(|e| e.to_string())?;
    match finished.exit_code() {
        Some(0) => {}
        Some(code) => {
            let why = CHILD_FAILURES
                .iter()
                .find(|(c, _)| *c == code)
                .map_or("the filtered child failed", |(_, why)| why);
            return Err(format!("{why} (exit {code})"));
        }
        None => return Err("the filtered child was killed by a signal".into()),
    }
    let recorded = finished
        .table
        .owner_of(&file)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    if recorded != Some(Owner { uid: 0, gid: 0 }) {
        return Err(format!(
            "the supervisor recorded {recorded:?} for the chown to 0:0"
        ));
    }
    let after = std::fs::symlink_metadata(&file).map_err(|e| e.to_string())?;
    if (after.uid(), after.gid()) != (before.uid(), before.gid()) {
        return Err("the chown reached the disk: the filter did not intercept it".into());
    }
    Ok(())
}
