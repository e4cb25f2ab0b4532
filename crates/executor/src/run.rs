//! RUN: the command line as BuildKit builds it (SHELL, exec form, heredocs), its
//! environment (image Env + ARGs in scope + proxy args, none persisted), user, working
//! directory and network; the step runs in the sandbox and its changes become a layer.

use rbuild_dockerfile::instructions::{Network as RunNetwork, Run, Security};
use rbuild_dockerfile::stages::PROXY_ARGS;
use rbuild_sandbox::{
    FileBind, Isolation, Network, OutputStream, Rootfs, Sandbox, SandboxError, StepOutcome,
    StepSpec, DEFAULT_PATH,
};
use rbuild_snapshot::OverlayDirs;

use crate::context::{BuildContext, Origin};
use crate::error::{BuildError, Result};
use crate::history::{go_quote, run_command_string, BUILDKIT_SUFFIX};
use crate::op::RunOp;
use crate::progress::{Event, Progress};
use crate::snapshot::Index;
use crate::state::StageState;

/// BuildKit's entitlements: a `RUN --network=host` of the build (or of an ONBUILD trigger)
/// fails unless the request grants `network.host`, before any step runs ("network.host is
/// not allowed" when the LLB is loaded). rbuild's default network is the host's all the
/// same; only asking for it by name needs the grant, as in BuildKit. `RUN
/// --security=insecure` needs `security.insecure`, which rbuild never grants (it runs no
/// privileged step), so it fails the same way.
/// `place` says where the instruction is (`Dockerfile:3`).
pub(crate) fn check_network_entitlement(
    request: &crate::BuildRequest,
    place: &str,
    instruction: &rbuild_dockerfile::instructions::Instruction,
) -> Result<()> {
    match instruction {
        rbuild_dockerfile::instructions::Instruction::Run(run)
            if run.network == RunNetwork::Host && !request.allow_network_host =>
        {
            Err(BuildError::other(format!(
                "{place}: RUN --network=host: network.host is not allowed (grant the \
                 entitlement with --allow network.host)"
            )))
        }
        rbuild_dockerfile::instructions::Instruction::Run(run)
            if run.security == Security::Insecure =>
        {
            Err(BuildError::other(format!(
                "{place}: RUN --security=insecure: security.insecure is not allowed (rbuild \
                 grants no security.insecure entitlement: it runs no privileged step)"
            )))
        }
        _ => Ok(()),
    }
}

/// Lines of output shown in a failed RUN's error.
const TAIL_LINES: usize = 10;

impl BuildContext<'_> {
    /// Runs the op's command (its script bound when a shebang heredoc gave one) with the
    /// instruction's mounts, and commits what it changed.
    pub(crate) fn dispatch_run(
        &self,
        st: &mut StageState,
        origin: &Origin<'_>,
        op: &RunOp,
        run: &Run,
        step: usize,
        progress: &mut dyn Progress,
    ) -> Result<u64> {
        if run.security == Security::Insecure {
            return Err(origin.error("RUN --security=insecure is not supported"));
        }
        let (argv, script) = (op.command.clone(), op.script.clone());
        let isolation = self
            .sandbox
            .resolve_isolation(self.request.isolation)
            .map_err(|e| origin.error(format!("could not run the step: {e}")))?;
        if isolation == Isolation::Chroot {
            // Once per build: a kernel without (full) Landlock confines chroot steps less.
            if let Some(message) = self.sandbox.chroot_confinement_warning() {
                progress.event(&Event::Warning { message });
            }
        }
        // The cache locks are held until the step has run (dropped at the end of this
        // function).
        let (mut binds, mut plans, _cache_locks) =
            self.prepare_mounts(st, origin, &run.mounts, isolation)?;
        if let Some((path, data)) = script {
            let dir = self.dir.new_dir("heredoc")?;
            let host = dir.join("script");
            std::fs::write(&host, data)
                .map_err(|e| origin.error(format!("writing the heredoc script: {e}")))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| origin.error(format!("writing the heredoc script: {e}")))?;
            binds.push(rbuild_sandbox::BindMount {
                source: host,
                target: path,
                readonly: true,
                remove_source: false,
                tmpfs_size: None,
            });
            plans.push(crate::chroot_mounts::MountPlan {
                kind: crate::chroot_mounts::MountKind::Scratch,
                label: "the heredoc script".into(),
            });
        }

        let mut env: Vec<String> = st.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !st.env.iter().any(|(k, _)| k == "PATH") {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        for (k, v) in &self.request.build_args {
            if PROXY_ARGS.contains(&k.as_str()) && !st.env.iter().any(|(ek, _)| ek == k) {
                env.push(format!("{k}={v}"));
            }
        }
        env.extend(crate::mounts::ssh_auth_sock(st, &run.mounts, &env));
        let mut user = if st.config.config.user.is_empty() {
            // BuildKit's GetUser resolves the default user as "0" (root's supplementary
            // groups from /etc/group), and ignores a passwd or group file it cannot read.
            rbuild_sandbox::resolve_user(&st.rootfs, "0").unwrap_or_default()
        } else {
            rbuild_sandbox::resolve_user(&st.rootfs, &st.config.config.user)
                .map_err(|e| origin.error(e))?
        };
        // BuildKit's ensureAdditionalGids: the primary group is also a supplementary group
        // of the step's process (`id` lists it under `groups=`).
        if !user.groups.contains(&user.gid) {
            user.groups.insert(0, user.gid);
        }
        // Rootless, a supplementary group the user namespace does not map cannot exist in
        // it (with a single-id mapping only 0 does, e.g. Alpine's root listed in `wheel`):
        // it is left out rather than failing every step. The primary group is kept, so an
        // unmapped one still fails with a message saying why.
        if let Some(map) = self.owners.id_map() {
            let primary = user.gid;
            user.groups
                .retain(|&g| g == primary || map.host_gid(g.into()).is_some());
        }
        // runc (under BuildKit and the classic builder) sets HOME from passwd when unset.
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            let home =
                rbuild_sandbox::home_dir(&st.rootfs, user.uid).map_err(|e| origin.error(e))?;
            env.push(format!("HOME={home}"));
        }
        // A secret's variable replaces one of the same name (containerd's WithEnv, which
        // BuildKit's runc executor uses, keeps the last of two).
        for (name, value) in self.secret_env(origin, &run.mounts)? {
            let prefix = format!("{name}=");
            env.retain(|e| !e.starts_with(&prefix));
            env.push(format!("{name}={value}"));
        }
        let network = match run.network {
            RunNetwork::Default => self.request.network,
            RunNetwork::None => Network::None,
            RunNetwork::Host => Network::Host,
        };
        let mut spec = StepSpec {
            rootfs: Rootfs::Dir(st.rootfs.clone()),
            argv: argv.clone(),
            env,
            cwd: st.workdir(),
            user,
            // BuildKit's runc executor names every RUN container so.
            hostname: "buildkitsandbox".into(),
            etc_files: Vec::<FileBind>::new(),
            binds,
            network,
            isolation,
            shown_owners: Vec::new(),
            copy_up_inodes: Vec::new(),
            top_level_names: None,
        };
        if isolation == Isolation::Restricted {
            // The stage is laid out in the builder's own `/` (in_place/).
            return self.run_restricted(st, origin, &spec, &plans, step, progress);
        }
        let on_overlay = if isolation == Isolation::Userns && self.sandbox.overlay_worth_trying() {
            self.run_on_overlay(st, origin, &mut spec, step, progress)?
        } else {
            None
        };
        let size = match on_overlay {
            Some(size) => size,
            None => {
                // The step writes into the rootfs: a layer whose changes are there is
                // written first.
                self.write_deferred_at(&st.rootfs)?;
                self.own_rootfs(st)?;
                spec.rootfs = Rootfs::Dir(st.rootfs.clone());
                self.run_in_place(st, origin, &spec, &plans, step, progress)?
            }
        };
        Ok(size)
    }

    /// The argv a RUN runs and its history entry's `created_by`.
    /// The history text of a RUN running `argv`.
    pub(crate) fn run_created_by(&self, st: &StageState, argv: &[String]) -> String {
        // BuildKit shows each ARG with the value the step saw (an ENV of the same name wins).
        let shown_args: Vec<(String, String)> = st
            .build_args
            .iter()
            .map(|(k, v)| {
                let seen = st
                    .env
                    .iter()
                    .rev()
                    .find(|(ek, _)| ek == k)
                    .map_or(v, |(_, ev)| ev);
                (k.clone(), seen.clone())
            })
            .collect();
        format!(
            "RUN {}{BUILDKIT_SUFFIX}",
            run_command_string(&shown_args, argv)
        )
    }

    /// Runs the step on an overlay whose only lower layer is the stage's rootfs
    /// (`rbuild-snapshot`'s overlay snapshotter): the upperdir is the change set, and then
    /// moves into the rootfs (or, rootless, its layer is applied when a later step needs
    /// the files). `None` when
    /// the sandbox could not mount the overlay (the caller then runs the step in place).
    fn run_on_overlay(
        &self,
        st: &mut StageState,
        origin: &Origin<'_>,
        spec: &mut StepSpec,
        step: usize,
        progress: &mut dyn Progress,
    ) -> Result<Option<u64>> {
        if crate::scratch::cancelling() {
            return Err(origin.error("the build was cancelled"));
        }
        let parent = self.dir.new_dir("overlay")?;
        let dirs = OverlayDirs::create(&parent).map_err(|e| origin.error(e.to_string()))?;
        if let crate::fsops::Owners::Ranged(_) = self.owners {
            // The range's root mounts the overlay: its upper and work directories are its.
            for dir in [&dirs.upperdir, &dirs.workdir, &dirs.merged] {
                crate::fsops::chown_in_build(&self.owners, dir, 0, 0)
                    .map_err(|e| origin.error(e))?;
            }
        }
        let lowers = vec![st.rootfs.clone()];
        spec.rootfs = dirs.rootfs(lowers.clone());
        let mut outcome = match execute(&self.sandbox, spec, &st.label, step, progress) {
            Ok(outcome) => outcome,
            // The build is being cancelled: its helper was stopped on purpose.
            Err(_) if crate::scratch::cancelling() => {
                return Err(origin.error("the build was cancelled"));
            }
            Err(e) => {
                // Remembered for the build: later steps go straight to the rootfs.
                if self.sandbox.overlay_failed() {
                    progress.event(&Event::Warning {
                        message: format!(
                            "overlay step failed to start ({e}); running this and later \
                             steps on the rootfs directly"
                        ),
                    });
                }
                let _ = std::fs::remove_dir_all(&parent);
                return Ok(None);
            }
        };
        if !outcome.status.success() {
            let _ = std::fs::remove_dir_all(&parent);
            return Err(failure(origin, spec, &outcome));
        }
        keep_system_mount_points(&mut outcome.stubs);
        let snapshot = crate::phases::Phase::Snapshot;
        let changes = crate::phases::timed(snapshot, || {
            crate::snapshot::overlay_changes(&self.owners, &dirs.upperdir, &lowers, &outcome.stubs)
        })
        .map_err(|e| origin.error(format!("reading the step's changes: {e}")))?;
        let size = self
            .commit_overlay_changes(st, &dirs.upperdir, &changes)
            .map_err(|e| origin.error(e))?;
        // As root, the upper directory's entries move into the rootfs (renames, no
        // extraction) when a later step or stage needs the files (`catch_up`): after a
        // stage's last step nothing does. Otherwise (rootless, where the moves would need
        // container root for every entry) the layer reaches the rootfs only if a later step
        // needs the files. What stays in the upper directory goes with the build
        // directory, in the background: removing files now would hold up the next step.
        if matches!(
            self.owners,
            crate::fsops::Owners::Root | crate::fsops::Owners::Ranged(_)
        ) {
            st.pending_merge = Some(crate::state::PendingMerge {
                upper: dirs.upperdir.clone(),
                changes,
                layer: st.layers.len().saturating_sub(1),
            });
        }
        st.layer_off_rootfs = true;
        Ok(Some(size))
    }

    /// Runs the step directly on the stage's rootfs; changes are found by walking it
    /// before and after (chroot isolation, or no overlay). With chroot isolation the
    /// mounts are placed in the rootfs (`plans`, see `chroot_mounts`) after the first walk
    /// and taken away before the second.
    fn run_in_place(
        &self,
        st: &mut StageState,
        origin: &Origin<'_>,
        spec: &StepSpec,
        plans: &[crate::chroot_mounts::MountPlan],
        step: usize,
        progress: &mut dyn Progress,
    ) -> Result<u64> {
        if crate::scratch::cancelling() {
            return Err(origin.error("the build was cancelled"));
        }
        let before = Index::scan(&self.owners, &st.rootfs).map_err(|e| origin.error(e))?;
        let mut placed = None;
        let mut chroot_spec;
        // On overlayfs a write through one name of a file hard-linked in an earlier layer
        // copies that name up and leaves the others: a chroot step gets the same by
        // copy-up on demand, supervised only when the rootfs has such a file.
        let groups = if spec.isolation == Isolation::Chroot {
            before.hard_link_groups()
        } else {
            Vec::new()
        };
        let spec = if spec.isolation == Isolation::Chroot
            && (!spec.binds.is_empty() || !groups.is_empty())
        {
            chroot_spec = spec.clone();
            if !spec.binds.is_empty() {
                let stash = self.dir.new_dir("mount-stash")?;
                placed = Some(
                    crate::chroot_mounts::place(&st.rootfs, &spec.binds, plans, &stash, false)
                        .map_err(|e| origin.error(e))?,
                );
                chroot_spec.binds.clear();
            }
            chroot_spec.copy_up_inodes = groups;
            &chroot_spec
        } else {
            spec
        };
        let executed = execute(&self.sandbox, spec, &st.label, step, progress);
        // The sandbox's stubs go first (they may sit in a mount's target parents), then
        // the mounts, whether or not the step ran.
        let stubs_removed = match &executed {
            Ok(outcome) => {
                let mut stubs = outcome.stubs.clone();
                keep_system_mount_points(&mut stubs);
                rbuild_sandbox::remove_stubs(&st.rootfs, &stubs)
            }
            Err(_) => Ok(()),
        };
        let restored = placed.map_or(Ok(()), |p| p.restore());
        let outcome = executed.map_err(|e| origin.error(format!("could not run the step: {e}")))?;
        stubs_removed
            .map_err(|e| origin.error(format!("removing the sandbox's mount points: {e}")))?;
        restored.map_err(|e| origin.error(e))?;
        if !outcome.status.success() {
            return Err(failure(origin, spec, &outcome));
        }
        self.commit(st, &before).map_err(|e| origin.error(e))
    }
}

/// BuildKit's runc leaves the /dev, /proc and /sys mount points it had to create in the
/// step's layer (docs/fidelity.md); the other mount points (RUN --mount targets, /etc
/// files) go, as current BuildKit removes them.
fn keep_system_mount_points(stubs: &mut Vec<rbuild_sandbox::Stub>) {
    stubs.retain(|s| !matches!(s.path.as_str(), "/dev" | "/proc" | "/sys"));
}

/// Runs `spec`, reporting each output line as a progress event.
pub(crate) fn execute(
    sandbox: &Sandbox,
    spec: &StepSpec,
    label: &str,
    step: usize,
    progress: &mut dyn Progress,
) -> std::result::Result<StepOutcome, SandboxError> {
    let _t = crate::phases::Phase::Run.timer();
    let mut pending = String::new();
    let mut emit = |bytes: &[u8], progress: &mut dyn Progress| {
        pending.push_str(&String::from_utf8_lossy(bytes));
        while let Some(i) = pending.find('\n') {
            let line: String = pending.drain(..=i).collect();
            progress.event(&Event::StepOutput {
                stage: label.to_string(),
                step,
                line: line.trim_end().to_string(),
            });
        }
    };
    let outcome = sandbox.run(spec, &mut |_: OutputStream, bytes: &[u8]| {
        emit(bytes, progress)
    });
    if !pending.is_empty() {
        progress.event(&Event::StepOutput {
            stage: label.to_string(),
            step,
            line: pending,
        });
    }
    outcome
}

/// The error of a RUN that ran and failed: the command, how it ended, its last output.
pub(crate) fn failure(origin: &Origin<'_>, spec: &StepSpec, outcome: &StepOutcome) -> BuildError {
    let mut message = format!(
        "process {} did not complete successfully: {}",
        go_quote(&spec.argv.join(" ")),
        outcome.status
    );
    let tail: Vec<&String> = outcome.tail.iter().rev().take(TAIL_LINES).collect();
    if !tail.is_empty() {
        message.push_str("\n  last output:");
        for line in tail.into_iter().rev() {
            message.push_str(&format!("\n    {line}"));
        }
    }
    if let Some(hint) = outcome.failure_hint() {
        message.push_str(&format!("\n  hint: {hint}"));
    }
    origin.error(message)
}
