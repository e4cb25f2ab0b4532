//! The last step in the forked command process: identity, working directory, `execve`.

use std::ffi::CString;
use std::io;

use rustix::fs::{Gid, Mode, Uid};
use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};

use crate::spec::{IdMapping, StepSpec};

use super::HelperError;

/// Switches to the step's user, enters its cwd and execs its command. Returns only on error.
/// Runs after chroot/pivot_root, so every path is a container path.
pub fn exec_command(spec: &StepSpec, mapping: IdMapping) -> HelperError {
    match try_exec(spec, mapping) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// rbuild adds how to get more ids (it knows the host user's name; we run as root inside).
fn unmapped_hint(kind: &str, id: u32, mapping: IdMapping) -> String {
    if mapping == IdMapping::SingleId {
        format!("{kind} {id} is not mapped in the step's user namespace, which has a single-id mapping (only 0 exists)")
    } else {
        format!("{kind} {id} is not mapped in the step's user namespace")
    }
}

fn try_exec(spec: &StepSpec, mapping: IdMapping) -> Result<std::convert::Infallible, HelperError> {
    // The seccomp filter is already installed (userns.rs, chroot.rs): before capabilities
    // are dropped, so that with CAP_SYS_ADMIN it needs no no_new_privs.
    let user = &spec.user;
    // The raw calls below change this thread's credentials only (libc's change every
    // thread's): the same here, in a single-threaded child of the helper.
    let groups: Vec<libc::gid_t> = user.groups.clone();
    let gids: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
    if let Err(e) = set_thread_groups(&gids).map_err(io::Error::from) {
        // With a single-id mapping setgroups(2) is denied; that only matters if groups
        // beyond the primary one (which setresgid sets) were asked for.
        if !(groups.iter().all(|&g| g == user.gid) && e.raw_os_error() == Some(libc::EPERM)) {
            let msg = if mapping == IdMapping::SingleId {
                format!(
                    "{e}; {}",
                    unmapped_hint("gid", groups.first().copied().unwrap_or(0), mapping)
                )
            } else {
                e.to_string()
            };
            return Err(HelperError::new("setgroups", format!("{groups:?}: {msg}")));
        }
    }
    let gid = Gid::from_raw(user.gid);
    if let Err(e) = set_thread_res_gid(gid, gid, gid).map_err(io::Error::from) {
        let msg = if e.raw_os_error() == Some(libc::EINVAL) {
            unmapped_hint("gid", user.gid, mapping)
        } else {
            e.to_string()
        };
        return Err(HelperError::new("setgid", msg));
    }
    let uid = Uid::from_raw(user.uid);
    if let Err(e) = set_thread_res_uid(uid, uid, uid).map_err(io::Error::from) {
        let msg = if e.raw_os_error() == Some(libc::EINVAL) {
            unmapped_hint("uid", user.uid, mapping)
        } else {
            e.to_string()
        };
        return Err(HelperError::new("setuid", msg));
    }
    let cwd = CString::new(spec.cwd.as_str())
        .map_err(|_| HelperError::new("chdir", "working directory contains NUL"))?;
    rustix::process::chdir(cwd.as_c_str()).map_err(|e| {
        HelperError::new(
            "chdir",
            format!("working directory {:?}: {}", spec.cwd, io::Error::from(e)),
        )
    })?;
    rustix::process::umask(Mode::from_raw_mode(0o022));

    let env: Vec<CString> = spec
        .env
        .iter()
        .filter_map(|e| CString::new(e.as_str()).ok())
        .collect();
    let argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| HelperError::new("exec", "argument contains NUL"))?;
    let Some(program) = spec.argv.first() else {
        return Err(HelperError::new("exec", "empty command"));
    };
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());

    let candidates: Vec<String> = if program.contains('/') {
        vec![program.clone()]
    } else {
        let path = spec
            .env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(crate::spec::DEFAULT_PATH);
        path.split(':')
            .map(|dir| {
                let dir = if dir.is_empty() { "." } else { dir };
                format!("{}/{program}", dir.trim_end_matches('/'))
            })
            .collect()
    };
    let mut last_err: Option<io::Error> = None;
    for candidate in &candidates {
        let Ok(c) = CString::new(candidate.as_str()) else {
            continue;
        };
        // SAFETY: the path and every argv/env entry are NUL-terminated CStrings, and both
        // pointer arrays end with a null pointer; all outlive the call. On success nothing
        // of this process remains; on failure it returns and changed nothing. (rustix's
        // execve is unsafe for the same pointers.)
        unsafe { libc::execve(c.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // Keep looking along PATH, as execvp does.
            Some(libc::ENOENT) | Some(libc::ENOTDIR) if candidates.len() > 1 => {}
            Some(libc::EACCES) if candidates.len() > 1 => last_err = Some(err),
            _ => {
                return Err(HelperError::new(
                    "exec",
                    format!("exec {candidate:?}: {err}"),
                ))
            }
        }
    }
    Err(HelperError::new(
        "exec",
        match last_err {
            Some(e) => format!("exec {program:?}: {e}"),
            None => format!("exec {program:?}: executable file not found in $PATH"),
        },
    ))
}
