//! Which tree a COPY writes into: an empty tree of stand-ins for the parent's entries
//! (`copy_skeleton.rs`) when the stage's files are not on disk and nothing after the COPY
//! needs them, else the stage's rootfs, brought up to date first.

use std::path::PathBuf;

use crate::context::{BuildContext, Origin};
use crate::copy_spec::CopySpec;
use crate::error::Result;
use crate::fsops;
use crate::state::StageState;

impl BuildContext<'_> {
    /// Runs a COPY/ADD: into an empty tree standing for the parent's (`copy_skeleton`)
    /// when the stage's rootfs is not on disk yet and the parent's tree can be read
    /// instead, else on the stage's rootfs, brought up to date first.
    pub(crate) fn dispatch_copy(
        &self,
        st: &mut StageState,
        origin: &Origin<'_>,
        spec: &CopySpec,
        progress: &mut dyn crate::progress::Progress,
    ) -> Result<u64> {
        let view = if self.files_needed_after(st, origin) {
            None
        } else {
            match self.copy_view(st, spec)? {
                Some(view) => Some(view),
                None => self.keep_rootfs_as_tree(st, spec)?,
            }
        };
        if view.is_none() {
            self.materialize(st)?;
        }
        self.copy_step(st, origin, spec, view.as_deref(), progress)
    }

    /// Whether a later instruction of the stage needs its files on disk (a RUN, COPY, ADD,
    /// WORKDIR or VOLUME after `origin`, or `origin` is an ONBUILD trigger, whose place is
    /// not in the stage's commands). Then the COPY runs on the stage's rootfs: after an
    /// empty-tree COPY the rootfs would get its layer from the layer's tar, whose mtimes
    /// are whole seconds, and a later COPY of the same file would see it changed (BuildKit
    /// keeps the snapshot, where it is not: Kaniko's `Dockerfile_test_copy_same_file_many_times`).
    fn files_needed_after(&self, st: &StageState, origin: &Origin<'_>) -> bool {
        use rbuild_dockerfile::instructions::Instruction as I;
        let commands = &self.df.stages[st.index].commands;
        let Some(at) = commands.iter().position(|c| std::ptr::eq(c, origin.cmd)) else {
            return true;
        };
        commands[at + 1..].iter().any(|c| {
            matches!(
                c.instruction,
                I::Run(_) | I::Copy(_) | I::Add(_) | I::Workdir(_) | I::Volume(_)
            )
        })
    }

    /// The parent's tree a COPY may read instead of the stage's rootfs: the store's shared
    /// tree of the stage's layers when none of them is on the rootfs yet and the build
    /// shares trees (`stage_rootfs.rs`), for a COPY [`Self::may_copy_into_skeleton`].
    fn copy_view(&self, st: &StageState, spec: &CopySpec) -> Result<Option<PathBuf>> {
        if !self.may_copy_into_skeleton(spec) || st.applied != 0 || st.layers.is_empty() {
            return Ok(None);
        }
        let Some(trees) = self.trees.as_ref().filter(|_| self.may_share_files()) else {
            return Ok(None);
        };
        {
            let made = crate::context::lock(&self.shared.made_here);
            if st.layers.iter().any(|l| made.contains(&l.digest)) {
                return Ok(None);
            }
        }
        self.fetch_pending(&st.layers)?;
        let tree = trees.get_or_make(&st.layers, &|layers, dir| {
            crate::build_dir::apply_layers(self.store, &self.owners, layers, dir)
        })?;
        Ok(Some(tree))
    }

    /// Whether a COPY of `spec` may write into an empty tree of stand-ins: a plain COPY
    /// (an ADD may unpack an archive whose whiteouts reach anywhere; `--parents` and
    /// `--link` have their own trees) by a build whose process owns every file.
    fn may_copy_into_skeleton(&self, spec: &CopySpec) -> bool {
        let linked = spec.link && spec.chmod.is_none();
        let plain_copy = !(spec.is_add || spec.parents || linked);
        let owns_files = matches!(self.owners, fsops::Owners::Root | fsops::Owners::Ranged(_));
        plain_copy && owns_files
    }

    /// A COPY after steps this build ran (no shared tree of the stage's layers, so no
    /// [`Self::copy_view`]): the stage's rootfs, brought up to its layers (the last RUN's
    /// upper directory moved in, as the COPY needs anyway), becomes the store's shared
    /// tree of those layers by one rename, and the COPY writes into an empty tree of
    /// stand-ins read from it. The next build whose COPY follows the same cached steps
    /// (a one-change rebuild) then finds the tree instead of extracting every layer above
    /// the base (BuildKit keeps the snapshot of each step likewise).
    ///
    /// A tree must be what extracting its layers gives, whichever build made it: the
    /// layers record whole seconds, so the times the last RUN left (nanoseconds) are cut
    /// to whole seconds on the entries its upper directory brought and the directories
    /// above them, the only entries not linked from a tree. Hence only for a one-stage
    /// build (no other stage compares its files with this one's precise times,
    /// `precise_times.rs`) whose rootfs is trees' links plus that one RUN's upper
    /// directory, without SOURCE_DATE_EPOCH (the layers clamp the times) and with xattrs
    /// recorded. `None`: the COPY runs on the rootfs.
    fn keep_rootfs_as_tree(&self, st: &mut StageState, spec: &CopySpec) -> Result<Option<PathBuf>> {
        if !self.may_copy_into_skeleton(spec)
            || self.df.stages.len() != 1
            || self.write_options.source_date_epoch.is_some()
            || self.write_options.no_xattrs
        {
            return Ok(None);
        }
        let Some(trees) = self.trees.as_ref().filter(|_| self.may_share_files()) else {
            return Ok(None);
        };
        let brought = match &st.pending_merge {
            Some(merge) if merge.layer == st.applied && merge.layer + 1 == st.layers.len() => {
                let made = crate::context::lock(&self.shared.made_here);
                if st.layers[..merge.layer]
                    .iter()
                    .any(|l| made.contains(&l.digest))
                {
                    return Ok(None);
                }
                merge
                    .changes
                    .iter()
                    .filter_map(|c| match c {
                        rbuild_layer::Change::Upsert(p) | rbuild_layer::Change::OpaqueDir(p) => {
                            Some(p.clone())
                        }
                        rbuild_layer::Change::Delete(_) => None,
                    })
                    .collect::<Vec<_>>()
            }
            _ => return Ok(None),
        };
        // The rootfs gets every layer of the stage; a layer not written yet whose files
        // are in it is written first (its files are about to move).
        self.materialize(st)?;
        whole_second_mtimes(&st.rootfs, &brought)
            .map_err(crate::error::BuildError::io("setting times in", &st.rootfs))?;
        let Some(tree) = trees.adopt(&st.layers, &st.rootfs) else {
            return Ok(None);
        };
        crate::context::lock(&self.shared.shared_roots).remove(&st.rootfs);
        {
            // The layers have a tree now: a stage reading this one links it.
            let mut made = crate::context::lock(&self.shared.made_here);
            for layer in &st.layers {
                made.remove(&layer.digest);
            }
        }
        st.rootfs = self.dir.new_dir(&format!("rootfs-{}", st.index))?;
        st.applied = 0;
        Ok(Some(tree))
    }
}

/// Cuts the mtimes of `paths` (relative to `root`, none followed) and of the directories
/// above them to whole seconds, as extracting a layer sets them. Entries that are gone are
/// skipped.
fn whole_second_mtimes(root: &std::path::Path, paths: &[PathBuf]) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    for path in paths {
        for rel in path.ancestors() {
            if !seen.insert(rel.to_path_buf()) {
                continue;
            }
            let full = root.join(rel);
            let meta = match std::fs::symlink_metadata(&full) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.mtime_nsec() != 0 {
                crate::fsops::set_mtime(&full, meta.mtime(), 0)?;
            }
        }
    }
    Ok(())
}
