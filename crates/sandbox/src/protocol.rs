//! Messages between rbuild and its helper over the control socket: one JSON value per line.

use std::io::{BufRead, Write};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::spec::{IdMapping, StepSpec, Stub};

/// The file descriptor the control socket has in the helper.
pub const CONTROL_FD: i32 = 3;

/// Makes `command`'s child find `socket` (this process's end for the helper, opened
/// close-on-exec) as [`CONTROL_FD`], open across its exec, and nothing else of rbuild's:
/// every other descriptor above stderr is marked close-on-exec (rbuild may have inherited
/// descriptors without that flag from whoever started it, and a step must see none).
/// The environment is cleared too (rbuild's may hold registry tokens and secret values);
/// `pass_env` names the variables the helper needs (only `TMPDIR`, for the probe and the
/// as-root worker; a step's helper gets none).
pub(crate) fn prepare_helper_command(
    command: &mut std::process::Command,
    socket: Option<i32>,
    pass_env: &[&str],
) {
    use std::os::unix::process::CommandExt;
    command.env_clear();
    for name in pass_env {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    // SAFETY: between fork and exec only dup2, fcntl and close_range run, all
    // async-signal-safe system calls; nothing allocates.
    unsafe {
        command.pre_exec(move || {
            if let Some(socket) = socket {
                // dup2 clears close-on-exec on the copy; if it is already fd 3, clear it by hand.
                if socket == CONTROL_FD {
                    crate::sys::set_cloexec(CONTROL_FD, false)?;
                } else {
                    crate::sys::cvt(libc::dup2(socket, CONTROL_FD))?;
                }
            }
            let first = if socket.is_some() { CONTROL_FD + 1 } else { 3 };
            crate::sys::cloexec_from(first);
            Ok(())
        });
    }
}

/// rbuild → helper.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToHelper {
    /// The step to run, with the isolation already resolved (never `Auto`), and the seccomp
    /// filter its command runs under (`None`: unconfined).
    Run(Box<StepSpec>, Option<crate::seccomp::StepFilter>),
    /// The id maps of the helper's user namespace were written.
    Mapped(IdMapping),
    /// Writing the id maps failed.
    MapFailed(String),
    /// Sent right after `Run` for a restricted step: what of the builder's file system the
    /// step must not reach.
    Protect(crate::restricted::Protected),
}

/// helper → rbuild.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromHelper {
    /// The helper (this host pid) unshared its user namespace and waits for its id maps.
    Unshared { pid: i32 },
    /// Placeholders created in the rootfs.
    Stubs(Vec<Stub>),
    /// Setup failed before the command could start.
    Error { stage: String, message: String },
    /// What a restricted step's supervisor recorded (sent before `Exited`).
    Ownership(crate::restricted::OwnershipTable),
    /// The command ended.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

/// Writes one message as one line in a single write, so messages from several processes
/// sharing the socket never interleave.
pub fn send<T: Serialize>(mut w: impl Write, msg: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)
}

/// Reads one message; `None` at end of stream.
pub fn recv<T: DeserializeOwned>(r: &mut impl BufRead) -> std::io::Result<Option<T>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| std::io::Error::other(format!("bad control message {line:?}: {e}")))
}
