//! Running a lowered step: the runner takes a [`Step`] — its op (`op.rs`) and what running
//! needs beyond the op's values (a RUN's mounts as parsed, a COPY/ADD's spec) — and carries
//! it out on the stage's root filesystem, brought up to date here (a COPY may write into a
//! tree of its own instead, `copy_skeleton.rs`); the step
//! commits exactly one layer (its change set) and the runner returns the layer's size. The
//! cache (`step_cache.rs`) calls it on a miss.

use rbuild_dockerfile::instructions::Run;

use crate::context::{BuildContext, Origin};
use crate::copy_spec::CopySpec;
use crate::error::Result;
use crate::fsops;
use crate::op::{CopyOp, RunOp, StepOp, WorkdirOp};
use crate::progress::{Event, Progress};
use crate::state::StageState;

/// A layer step, lowered, with what running it needs besides its op.
pub(crate) enum Step<'i> {
    /// The command, script, user, working directory and network are the op's; the mounts
    /// come from the instruction (their sources are resolved on the host when run).
    Run {
        op: RunOp,
        run: &'i Run,
    },
    Copy {
        op: CopyOp,
        spec: &'i CopySpec,
    },
    Workdir(WorkdirOp),
}

impl Step<'_> {
    /// The op, for keying.
    pub(crate) fn op(&self) -> StepOp {
        match self {
            Step::Run { op, .. } => StepOp::Run(op.clone()),
            Step::Copy { op, .. } => StepOp::Copy(op.clone()),
            Step::Workdir(op) => StepOp::Workdir(op.clone()),
        }
    }
}

impl BuildContext<'_> {
    /// Runs `step` on the stage's rootfs and commits its layer; returns the layer's size.
    pub(crate) fn run_step(
        &self,
        st: &mut StageState,
        origin: &Origin<'_>,
        step: &Step<'_>,
        number: usize,
        progress: &mut dyn Progress,
    ) -> Result<u64> {
        // A COPY may not need the rootfs on disk (`dispatch_copy`); the others do.
        match step {
            Step::Run { op, run } => {
                // On an overlay the rootfs is only read: a deferred layer whose changes
                // are in it stays so (an in-place run writes it first, `dispatch_run`).
                self.materialize_to_read(st)?;
                self.dispatch_run(st, origin, op, run, number, progress)
            }
            Step::Copy { spec, .. } => self.dispatch_copy(st, origin, spec, progress),
            Step::Workdir(op) => {
                self.materialize(st)?;
                self.run_workdir(st, origin, op, progress)
            }
        }
    }

    /// WORKDIR: makes the directory with its parents, owned as BuildKit's
    /// `llb.Mkdir(wd, 0755, llb.WithParents(true), llb.WithUser(user))` does — the owner of
    /// a file operation, not a RUN's user (see `fileop_user`).
    fn run_workdir(
        &self,
        st: &mut StageState,
        origin: &Origin<'_>,
        op: &WorkdirOp,
        progress: &mut dyn Progress,
    ) -> Result<u64> {
        let owner = if op.user.is_empty() {
            (0, 0)
        } else {
            let owner = crate::fileop_user::file_op_owner(&st.rootfs, &op.user)
                .map_err(|e| origin.error(e))?;
            let doing = format!("WORKDIR {} under USER {}", op.path, op.user);
            if let Some(message) = owner.warning(&doing) {
                progress.event(&Event::Warning { message });
            }
            owner.ids()
        };
        let before = self.scan(&st.rootfs).map_err(|e| origin.error(e))?;
        fsops::ensure_dir(&self.owners, &st.rootfs, &op.path, owner)
            .map_err(|e| origin.error(e))?;
        self.commit(st, &before).map_err(|e| origin.error(e))
    }
}
