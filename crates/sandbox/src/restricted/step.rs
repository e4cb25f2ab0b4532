//! The helper's side of a restricted step: the command runs in place (the step's root is
//! the helper's own `/`, where the stage was laid out), under the restricted filter and
//! Landlock, supervised; the helper is a child subreaper so that whatever the step leaves
//! running, in its process group or not, is killed and reaped before the step's result and
//! its [`OwnershipTable`] go back to rbuild.

use std::io::BufRead;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::confine::{self, Protected};
use super::table::OwnershipTable;
use crate::helper::exec::exec_command;
use crate::helper::HelperError;
use crate::protocol::{recv, send, FromHelper, ToHelper};
use crate::spec::{IdMapping, Network, Rootfs, StepSpec};
use crate::sys::{cvt, decode_status, set_pdeathsig};

/// Why a step cannot run under this isolation, before anything runs: `None` if it can.
/// Also checked by rbuild before it starts the helper, so the error names the step there.
pub fn refusal(spec: &StepSpec) -> Option<String> {
    let isolation = "isolation `restricted`";
    if spec.rootfs != Rootfs::Dir("/".into()) {
        return Some(format!(
            "{isolation} runs a step in place: its root filesystem must be the builder's own \
             `/` (where the stage is laid out), not {:?}",
            spec.rootfs
        ));
    }
    // Only the uid matters: root's permissions do not depend on its groups, and the layer
    // writer gives what the step creates the step's own uid and gid (`USER root:wheel`,
    // Alpine's root with its supplementary groups run as they are).
    if spec.user.uid != 0 {
        return Some(format!(
            "{isolation} cannot run a step as user {}:{}: every process is the build user, \
             shown as root; a non-root USER would run with root's view instead of that \
             user's permissions, giving a different result than docker build. Run the step \
             as root, or build where user namespaces work",
            spec.user.uid, spec.user.gid
        ));
    }
    if let Some(bind) = spec.binds.first() {
        return Some(format!(
            "{isolation} cannot mount {} on {}: mount(2) is refused there; the content must \
             be laid out in place",
            bind.source.display(),
            bind.target
        ));
    }
    if let Some(file) = spec.etc_files.first() {
        return Some(format!(
            "{isolation} cannot bind {} over {}: mount(2) is refused there",
            file.source.display(),
            file.target
        ));
    }
    if spec.network == Network::None {
        return Some(format!(
            "{isolation} cannot give a step its own network (--network=none): no network \
             namespace can be created there"
        ));
    }
    None
}

/// Runs the step; sends `Ownership` then `Exited`, or returns why it could not run.
pub(crate) fn run(
    spec: &StepSpec,
    control: &UnixStream,
    reader: &mut impl BufRead,
) -> Result<(), HelperError> {
    let protected: Protected = match recv::<ToHelper>(reader) {
        Ok(Some(ToHelper::Protect(protected))) => protected,
        _ => {
            return Err(HelperError::new(
                "control",
                "rbuild sent no protected paths with the restricted step",
            ))
        }
    };
    if let Some(why) = refusal(spec) {
        return Err(HelperError::new("isolation", why));
    }
    let (rules, denied) = confine::plan(&protected).map_err(|e| HelperError::new("landlock", e))?;
    let top = match &protected.top_level {
        Some(dir) => {
            let top = super::redirect::TopLevel::new(dir).map_err(|e| {
                HelperError::new(
                    "top-level redirection",
                    format!("reading the names of / for {}: {e}", dir.display()),
                )
            })?;
            Some(match &spec.top_level_names {
                Some(names) => top.seeing(&names.seen, &names.builder_hidden),
                None => top,
            })
        }
        None => None,
    };
    // The helper is not traced: it names a working directory below a top-level entry `/`
    // lacks where it is, in the redirection directory.
    let cwd = match &top {
        Some(top) => {
            use std::os::unix::ffi::OsStrExt;
            // SAFETY: getpid has no preconditions.
            let me = unsafe { libc::getpid() } as u32;
            let real = top.translate(me, libc::AT_FDCWD, spec.cwd.as_bytes().to_vec());
            PathBuf::from(std::ffi::OsStr::from_bytes(&real))
        }
        None => PathBuf::from(&spec.cwd),
    };
    // A missing working directory is created, as runc does (owned by the build user on
    // disk, which the image shows as root) — by the helper, outside the step's Landlock
    // rules, so never among rbuild's own files. The path is the step's: its symlinks are
    // resolved first, as far as they exist.
    if let Some(protected) = protected_prefix(&cwd, &denied) {
        return Err(HelperError::new(
            "chdir",
            format!(
                "working directory {:?} is inside {}, which rbuild keeps from its steps",
                spec.cwd,
                protected.display()
            ),
        ));
    }
    std::fs::create_dir_all(&cwd).map_err(|e| {
        HelperError::new(
            "chdir",
            format!("creating working directory {:?}: {e}", spec.cwd),
        )
    })?;
    // No capability for the helper and the step, as in a restricted pod: where rbuild runs
    // as real root (a host, the tests) the step must not bypass file permissions nor
    // Landlock's ptrace rule (root's CAP_SYS_PTRACE reads rbuild's environment through
    // /proc). Before the filter, which fakes capset. The supervisor needs none: it acts on
    // the step's files as their owner.
    crate::caps::drop_all_but(0)
        .map_err(|e| HelperError::new("capabilities", format!("dropping every capability: {e}")))?;
    // SIGTERM, not SIGKILL, on rbuild's death: the helper must live to kill the step.
    set_pdeathsig(libc::SIGTERM).map_err(|e| HelperError::new("prctl", e.to_string()))?;
    super::reap::become_subreaper()
        .map_err(|e| HelperError::new("prctl(PR_SET_CHILD_SUBREAPER)", e.to_string()))?;
    let (signals, old_mask) =
        interrupt_fd().map_err(|e| HelperError::new("signalfd", e.to_string()))?;
    if !crate::helper::parent_alive() {
        return Err(HelperError::new("helper", "rbuild is gone"));
    }
    let shown = shown_owners(spec)?;
    let traced = top.is_some();
    // SAFETY: getpid has no preconditions.
    let helper = unsafe { libc::getpid() };
    // The copy-up renames only within the stage's names, never in rbuild's own directory
    // nor anywhere Landlock keeps from the step (`copy_up::Area`).
    let stage_names = match (&top, &spec.top_level_names) {
        (Some(top), Some(_)) => Some(top.stage_names()),
        _ => None,
    };
    let area = super::copy_up::Area::new(
        stage_names,
        top.as_ref().map(|top| top.dir().to_vec()),
        denied.clone(),
    );
    let groups = super::copy_up::Groups::new(&spec.copy_up_inodes).within(area);
    let finished = super::supervisor::run_supervised_copying_up(
        || {
            // SAFETY: restores the mask the helper had; the pointer is to a live sigset_t.
            unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
            let _ = set_pdeathsig(libc::SIGKILL);
            // A helper that died before the line above sent no signal: never run unwatched.
            // A traced step's parent is the tracer, whose end kills it (PTRACE_O_EXITKILL)
            // and who watches the helper the same way.
            // SAFETY: getppid has no preconditions.
            if !traced && unsafe { libc::getppid() } != helper {
                return 127;
            }
            let failure = crate::seccomp::install_step_filter()
                .map_err(|e| HelperError::new("seccomp", e))
                .and_then(|()| {
                    confine::restrict(&rules).map_err(|e| HelperError::new("landlock", e))
                })
                .map_or_else(|e| e, |()| exec_command(spec, IdMapping::None));
            let _ = send(control, &failure.into_message());
            127
        },
        Some(signals.as_fd()),
        &denied,
        shown,
        top.as_ref(),
        &groups,
    )
    .map_err(|e| HelperError::new("supervisor", e.to_string()))?;
    send_result(control, finished.table, finished.status)
}

/// The owners the step's `stat` shows for the files rbuild placed for it
/// ([`StepSpec::shown_owners`]), by inode: a file that is not there fails the step, since
/// rbuild has just placed it.
fn shown_owners(spec: &StepSpec) -> Result<OwnershipTable, HelperError> {
    use std::os::unix::fs::MetadataExt;
    let mut shown = OwnershipTable::default();
    for owner in &spec.shown_owners {
        let meta = std::fs::symlink_metadata(&owner.path).map_err(|e| {
            HelperError::new(
                "mount",
                format!("{} placed for the step: {e}", owner.path.display()),
            )
        })?;
        shown.record_owner(
            (meta.dev(), meta.ino()),
            super::table::Owner {
                uid: owner.uid,
                gid: owner.gid,
            },
        );
    }
    Ok(shown)
}

/// The protected path `path` is in (or is), after resolving its longest existing prefix.
fn protected_prefix<'a>(path: &Path, denied: &'a [PathBuf]) -> Option<&'a Path> {
    let mut existing = path;
    let mut rest = Vec::new();
    let resolved = loop {
        match std::fs::canonicalize(existing) {
            Ok(real) => break real,
            Err(_) => match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_os_string());
                    existing = parent;
                }
                _ => break PathBuf::from("/"),
            },
        }
    };
    let full: PathBuf = rest.iter().rev().fold(resolved, |p, name| p.join(name));
    denied
        .iter()
        .find(|d| full.starts_with(d))
        .map(PathBuf::as_path)
}

fn send_result(
    control: &UnixStream,
    table: OwnershipTable,
    status: libc::c_int,
) -> Result<(), HelperError> {
    send(control, &FromHelper::Ownership(table))
        .map_err(|e| HelperError::new("control", e.to_string()))?;
    let (code, signal) = decode_status(status);
    send(control, &FromHelper::Exited { code, signal })
        .map_err(|e| HelperError::new("control", e.to_string()))
}

/// A signalfd for SIGTERM, SIGINT and SIGHUP (now blocked), and the mask before.
fn interrupt_fd() -> std::io::Result<(OwnedFd, libc::sigset_t)> {
    // SAFETY: an all-zero sigset_t is a valid buffer for sigemptyset, which initializes it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above, for sigprocmask to fill.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigset operations on a local set; sigprocmask and signalfd read it.
    let fd = unsafe {
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
        cvt(libc::signalfd(
            -1,
            &set,
            libc::SFD_CLOEXEC | libc::SFD_NONBLOCK,
        ))?
    };
    // SAFETY: just created, owned here only.
    Ok((unsafe { OwnedFd::from_raw_fd(fd) }, old))
}
