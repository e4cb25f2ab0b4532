//! Running a command against a root filesystem without privilege: user namespaces, chroot fallback.
//!
//! A tokio (multi-threaded) process cannot unshare a user namespace, so every step runs in
//! a helper: the rbuild binary re-executed as `rbuild __rbuild-sandbox-helper`, which must
//! call [`maybe_run_helper`] first thing in `main`. The helper receives a [`StepSpec`] on a
//! control socket (fd 3), sets up the namespaces (or a chroot), runs the command and
//! reports back. See docs/sandbox.md.

mod asroot;
pub mod caps;
pub mod confine;
mod error;
mod helper;
mod idmap;
pub mod landlock;
mod probe;
mod protocol;
pub mod restricted;
pub mod root_range;
pub mod rootpath;
mod runner;
pub mod seccomp;
mod spec;
mod stubs;
mod sys;
mod user;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

pub use asroot::{pipe, recv_packet, send_packet, MappedWorker, MAX_PACKET};
pub use error::SandboxError;
pub use helper::asroot::become_container_root;
pub use idmap::{current_user_label, parse_subid, subid_map, SubIdRange};
pub use probe::{Capabilities, Check, NamespaceChecks, NoIsolation};
pub use runner::OutputStream;
pub use seccomp::{Seccomp, SeccompError, SeccompSummary};
pub use spec::{
    BindMount, FileBind, IdMapping, Isolation, Network, Rootfs, ShownOwner, StepOutcome, StepSpec,
    StepStatus, Stub, StubKind, TopLevelNames, UserIds, DEFAULT_PATH,
};
pub use stubs::remove_stubs;
pub use user::{home_dir, resolve_user};

/// The first argument that turns the rbuild binary into the sandbox helper.
pub const HELPER_ARG: &str = "__rbuild-sandbox-helper";

/// The helper's second argument, `--parent=PID`: the process that started it and whose
/// death it watches for.
pub(crate) const PARENT_ARG: &str = "--parent=";

/// Call first thing in `main`: if this process was started as the sandbox helper, runs the
/// helper and never returns; otherwise does nothing.
pub fn maybe_run_helper() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(HELPER_ARG) {
        helper::main(&args[1..]);
    }
}

/// Runs steps through a helper executable.
#[derive(Debug, Clone)]
pub struct Sandbox {
    program: PathBuf,
    args: Vec<String>,
    /// Set once an overlay rootfs failed to start; shared by clones.
    overlay_failed: Arc<AtomicBool>,
    /// The seccomp filter steps run under.
    seccomp: Seccomp,
    /// Set once the build was told that chroot steps are not fully confined.
    confinement_warned: Arc<AtomicBool>,
    /// Run as root, the unprivileged host range userns steps map container ids to; `None`
    /// keeps the identity map (see [`Sandbox::with_root_range`]).
    root_range: Option<root_range::RootRange>,
    /// What restricted steps must not reach (see [`Sandbox::with_protected`]).
    protected: restricted::Protected,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// Uses this very executable (`/proc/self/exe __rbuild-sandbox-helper`) as the helper.
    pub fn new() -> Self {
        Self::with_helper("/proc/self/exe")
    }

    /// Uses another executable whose `main` calls [`maybe_run_helper`].
    pub fn with_helper(program: impl Into<PathBuf>) -> Self {
        Sandbox {
            program: program.into(),
            // The helper checks that its parent is still this process: `getppid() == 1` is
            // no proof of a dead parent when rbuild itself is PID 1 (a container's
            // entrypoint).
            args: vec![
                HELPER_ARG.to_string(),
                format!("{PARENT_ARG}{}", std::process::id()),
            ],
            overlay_failed: Arc::new(AtomicBool::new(false)),
            seccomp: Seccomp::default(),
            confinement_warned: Arc::new(AtomicBool::new(false)),
            root_range: None,
            protected: restricted::Protected::default(),
        }
    }

    /// Keeps restricted steps (which run in the builder's own `/`) away from `protected`:
    /// rbuild's store, the build's scratch and secret directories, credentials. The
    /// directory of the helper executable is always added as read-only.
    pub fn with_protected(mut self, protected: restricted::Protected) -> Self {
        self.protected = protected;
        self
    }

    /// As root, maps the container ids of userns steps to `range` (unprivileged host ids)
    /// instead of to themselves. Ignored when not running as root (the caller's own ids and
    /// subordinate ranges are mapped then) and by chroot steps.
    pub fn with_root_range(mut self, range: root_range::RootRange) -> Self {
        self.root_range = Some(range);
        self
    }

    /// The range set by [`Sandbox::with_root_range`].
    pub fn root_range(&self) -> Option<&root_range::RootRange> {
        self.root_range.as_ref()
    }

    /// Runs steps under `seccomp` instead of Docker's default profile.
    pub fn with_seccomp(mut self, seccomp: Seccomp) -> Self {
        self.seccomp = seccomp;
        self
    }

    /// The seccomp filter steps run under.
    pub fn seccomp(&self) -> Seccomp {
        self.seccomp
    }

    /// What this machine allows; probed once per process (in a helper child, a few ms).
    pub fn probe(&self) -> &'static Capabilities {
        static CAPS: OnceLock<Capabilities> = OnceLock::new();
        CAPS.get_or_init(|| probe::probe_with(&self.program, &self.args))
    }

    /// The isolation `requested` resolves to on this machine.
    pub fn resolve_isolation(&self, requested: Isolation) -> Result<Isolation, SandboxError> {
        match requested {
            Isolation::Auto => Ok(self.probe().auto.clone()?),
            other => Ok(other),
        }
    }

    /// Whether steps should still try an overlay rootfs: true until one failed to start
    /// with this sandbox (or a clone of it), so a build that found overlayfs unusable does
    /// not retry it on every step.
    pub fn overlay_worth_trying(&self) -> bool {
        !self.overlay_failed.load(Ordering::Relaxed)
    }

    /// Records that an overlay rootfs failed to start. True only the first time, so the
    /// caller warns once.
    pub fn overlay_failed(&self) -> bool {
        !self.overlay_failed.swap(true, Ordering::Relaxed)
    }

    /// For a build with chroot isolation: the warning to print when Landlock cannot confine
    /// its steps fully (no Landlock, or an ABI without scoping), the first time only (for
    /// this sandbox and its clones).
    pub fn chroot_confinement_warning(&self) -> Option<String> {
        let warning = landlock::weak_confinement_warning(&self.probe().landlock)?;
        (!self.confinement_warned.swap(true, Ordering::Relaxed)).then_some(warning)
    }

    /// Starts a [`MappedWorker`]: this sandbox's helper executable run as
    /// `program worker_arg --parent=PID`, root in a user namespace with the same
    /// subordinate-id mapping the userns steps get (the `rbuild-rootfs` container-root
    /// worker, whose `main` dispatch calls [`become_container_root`]). Unprivileged callers
    /// with a subordinate range only.
    pub fn start_mapped_worker(&self, worker_arg: &str) -> Result<MappedWorker, SandboxError> {
        let parent = format!("{PARENT_ARG}{}", std::process::id());
        MappedWorker::start(&self.program, worker_arg, &parent)
    }

    /// Runs one step, calling `output` with each chunk the command writes. Blocking (call it
    /// from `spawn_blocking`): it returns once the step and everything it started are gone.
    /// A non-zero exit is an `Ok` outcome; `Err` means the sandbox could not run the step.
    pub fn run(
        &self,
        spec: &StepSpec,
        output: &mut dyn FnMut(OutputStream, &[u8]),
    ) -> Result<StepOutcome, SandboxError> {
        let isolation = self.resolve_isolation(spec.isolation)?;
        if !spec.copy_up_inodes.is_empty()
            && !matches!(isolation, Isolation::Chroot | Isolation::Restricted)
        {
            return Err(SandboxError::Unavailable(format!(
                "copying hard-linked files up on write is implemented for chroot and \
                 restricted isolation only, and this step's isolation is {isolation}"
            )));
        }
        if spec.top_level_names.is_some() && isolation != Isolation::Restricted {
            return Err(SandboxError::Unavailable(format!(
                "the names of `/` a step sees (top-level redirection) are chosen for \
                 restricted isolation only, and this step's isolation is {isolation}"
            )));
        }
        let protected = if isolation == Isolation::Restricted {
            if let Some(why) = restricted::refusal(spec) {
                return Err(SandboxError::Unavailable(why));
            }
            Some(self.protected_with_helper()?)
        } else {
            None
        };
        let filter = match self.seccomp {
            Seccomp::DockerDefault => Some(
                seccomp::filter_for(isolation)
                    .map_err(|e| SandboxError::Unavailable(e.to_string()))?,
            ),
            Seccomp::Unconfined => None,
        };
        runner::run_step(
            &self.program,
            &self.args,
            spec,
            isolation,
            self.root_range.as_ref(),
            runner::Confinement {
                seccomp: filter,
                protected: protected.as_ref(),
            },
            output,
        )
    }

    /// [`Sandbox::with_protected`]'s paths plus the helper executable's directory
    /// (read-only: a step must not replace rbuild's binary).
    fn protected_with_helper(&self) -> Result<restricted::Protected, SandboxError> {
        let mut protected = self.protected.clone();
        let helper = std::fs::canonicalize(&self.program)
            .map_err(|e| SandboxError::io(format!("resolving {}", self.program.display()), e))?;
        if let Some(dir) = helper.parent() {
            protected.read_only.push(dir.to_path_buf());
        }
        Ok(protected)
    }
}

#[cfg(feature = "test-support")]
pub mod test_support;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlay_failure_is_remembered_and_reported_once_across_clones() {
        let sandbox = Sandbox::with_helper("/nonexistent");
        let clone = sandbox.clone();
        assert!(sandbox.overlay_worth_trying());
        assert!(clone.overlay_failed(), "the first failure is news");
        assert!(!sandbox.overlay_worth_trying());
        assert!(!clone.overlay_worth_trying());
        assert!(!sandbox.overlay_failed(), "later failures are not");
    }
}
