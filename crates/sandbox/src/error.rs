//! The sandbox's one error type. Its variants keep the cause (the `io::Error` with what was
//! being done, the errno of a system call, the helper's report) so that a caller can tell
//! a feature this machine lacks ([`SandboxError::Unavailable`]) from a step's setup that
//! failed ([`SandboxError::Helper`]) or a rootfs whose user database is wrong.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

use crate::sys::errno_name;

/// Why the sandbox could not do what was asked (a step that ran and failed is a
/// [`crate::StepOutcome`] instead).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No isolation (or not the one asked for) can work on this machine: what is missing
    /// and what to change. Not a failed step.
    #[error("{0}")]
    Unavailable(String),
    /// `--isolation auto` finds nothing that works here (what each check said, what to
    /// change). Not a failed step.
    #[error(transparent)]
    NoIsolation(#[from] crate::NoIsolation),
    /// The helper reported that setting up the step failed, at `stage`.
    #[error("sandbox setup failed at {stage}: {message}")]
    Helper { stage: String, message: String },
    /// A file operation failed: `context` says what it was doing, naming the path.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// A system call failed; `source` keeps its errno (`raw_os_error`).
    #[error("{call}: {}", errno_name(source))]
    Sys {
        call: String,
        #[source]
        source: io::Error,
    },
    /// `newuidmap` or `newgidmap` refused the id map of a step's user namespace.
    #[error("{} {args} failed ({status}): {stderr}", tool.display())]
    MapTool {
        tool: PathBuf,
        args: String,
        status: ExitStatus,
        stderr: String,
    },
    /// `USER` named nothing: empty.
    #[error("invalid user {0:?}: empty user name")]
    EmptyUserName(String),
    /// `USER` names a user the rootfs's /etc/passwd does not have.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoSuchUser(String),
    /// `USER name:group` names a group the rootfs's /etc/group does not have.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoSuchGroup(String),
    /// An /etc/passwd or /etc/group entry whose id field is not a number.
    #[error("invalid {field} in the entry for {entry:?}")]
    BadUserEntry { field: &'static str, entry: String },
    /// The subordinate id files or the store's record cannot give a root build its id range
    /// (the message says which and what to change).
    #[error("{0}")]
    IdRange(String),
    /// Landlock is there but could not confine the step.
    #[error("Landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    /// The capabilities a chroot step must not have could not be dropped.
    #[error("dropping capabilities: {} (rbuild needs CAP_SETPCAP to take them from chroot steps)", errno_name(.0))]
    Capabilities(#[source] io::Error),
    /// A check of the machine, made in a child process, failed: its verdict as the child
    /// reported it through a pipe.
    #[error("{0}")]
    Probe(String),
    /// rbuild sent the helper no seccomp decision with the step (a protocol error).
    #[error("rbuild sent no seccomp decision with the step")]
    NoSeccompDecision,
}

impl SandboxError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn sys(call: impl Into<String>, source: impl Into<io::Error>) -> Self {
        SandboxError::Sys {
            call: call.into(),
            source: source.into(),
        }
    }

    /// The errno behind this error, if a system call failed.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            SandboxError::Io { source, .. }
            | SandboxError::Sys { source, .. }
            | SandboxError::Capabilities(source) => source.raw_os_error(),
            _ => None,
        }
    }
}

/// The text of the error, for callers that still carry errors as strings (the executor's
/// step errors): `origin.error(e)` keeps compiling while they move to typed errors.
impl From<SandboxError> for String {
    fn from(e: SandboxError) -> String {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_keeps_its_errno_and_names_it() {
        let err = SandboxError::sys("chroot", io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        let text = err.to_string();
        assert!(text.starts_with("chroot: EPERM ("), "{text}");
        // A missing feature is told apart from a failed step by its variant.
        let missing = SandboxError::Unavailable("no isolation available".into());
        assert_eq!(missing.raw_os_error(), None);
        assert!(!matches!(missing, SandboxError::Helper { .. }));
        let step = SandboxError::Helper {
            stage: "mounts".into(),
            message: "x".into(),
        };
        assert_eq!(step.to_string(), "sandbox setup failed at mounts: x");
    }
}
