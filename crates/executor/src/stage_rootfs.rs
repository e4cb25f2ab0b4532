//! A stage's root filesystem, brought up to its layers only when a step needs the files:
//! the layers the build did not make (the base image's, cache hits') come from the store's
//! shared trees as links (`trees.rs`) when the build may share files, the rest is applied
//! on top; registry-cache layers are fetched first. Also the roots a `--from` reads.

use std::path::{Path, PathBuf};

use rbuild_image::Descriptor;

use crate::build_dir::apply_layers;
use crate::context::{lock, BuildContext};
use crate::error::{BuildError, Result};
use crate::state::{PendingMerge, StageState};

impl BuildContext<'_> {
    /// Applies the layers the stage has that its rootfs does not have yet (cache hits),
    /// for a step that writes into it: a layer not written yet whose changes are in the
    /// rootfs is written first (`deferred.rs`).
    pub(crate) fn materialize(&self, st: &mut StageState) -> Result<()> {
        self.materialize_to_read(st)?;
        self.write_deferred_at(&st.rootfs)
    }

    /// [`BuildContext::materialize`] for a step that only reads the rootfs (an overlay
    /// step's lower directory).
    pub(crate) fn materialize_to_read(&self, st: &mut StageState) -> Result<()> {
        self.catch_up(
            &st.layers,
            &mut st.applied,
            &mut st.pending_merge,
            &st.rootfs,
        )
    }

    /// Brings `rootfs`, which has the first `applied` of `layers`, up to all of them:
    /// moves a pending overlay step's upper directory in (renames) when it is the next
    /// layer, fetches the registry-cache layers among the rest, applies them, and counts
    /// them.
    pub(crate) fn catch_up(
        &self,
        layers: &[Descriptor],
        applied: &mut usize,
        pending: &mut Option<PendingMerge>,
        rootfs: &Path,
    ) -> Result<()> {
        let pending_work = pending.is_some() || *applied < layers.len();
        if pending_work {
            // The rootfs changes below: a layer not written yet whose changes are in it is
            // written first.
            self.write_deferred_at(rootfs)?;
        }
        if let Some(merge) = pending.take() {
            if *applied == merge.layer && merge.layer < layers.len() {
                let _t = crate::phases::Phase::Extract.timer();
                match rbuild_snapshot::merge_upper(&merge.upper, rootfs, &merge.changes) {
                    Ok(()) => {
                        *applied += 1;
                        self.deferred_moved(&merge.upper, rootfs);
                    }
                    // Half merged: the rootfs starts again empty and gets the layers by
                    // linking and extracting, as a rootless build's does (the same files).
                    Err(_) => {
                        // Its files half moved and then removed: a layer not written from
                        // them cannot be any more (never kept for the cache either).
                        self.forget_deferred_at(&merge.upper);
                        crate::trees::empty_dir(&self.owners, rootfs)?;
                        lock(&self.shared.shared_roots).remove(rootfs);
                        *applied = 0;
                    }
                }
            }
        }
        if *applied < layers.len() {
            self.fetch_pending(&layers[*applied..])?;
            if *applied == 0 {
                *applied = self.start_from_tree(layers, rootfs)?;
            }
            self.apply_stage_layers(&layers[*applied..], rootfs)?;
            *applied = layers.len();
        }
        Ok(())
    }

    /// Applies `layers` onto a stage's `rootfs`, each layer a step of this build made with
    /// the times the step left on its files (`precise_times.rs`): the stage sees the tree
    /// the stage that ran the step saw.
    fn apply_stage_layers(&self, layers: &[Descriptor], rootfs: &Path) -> Result<()> {
        for layer in layers {
            apply_layers(
                self.store,
                &self.owners,
                std::slice::from_ref(layer),
                rootfs,
            )?;
            let times = lock(&self.shared.precise_times).get(&layer.digest).cloned();
            if let Some(times) = times {
                let _t = crate::phases::Phase::Extract.timer();
                times.apply(rootfs).map_err(|e| {
                    BuildError::other(format!(
                        "applying layer {} onto {}: {e}",
                        layer.digest,
                        rootfs.display()
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// Fills the empty `rootfs` with links to the shared tree of as many of `layers` as
    /// will be wanted again (those this build did not make), making the tree if needed;
    /// returns how many layers it has. 0 when the build must not share files (see
    /// [`crate::trees`]).
    fn start_from_tree(&self, layers: &[Descriptor], rootfs: &Path) -> Result<usize> {
        let Some(trees) = self.trees.as_ref().filter(|_| self.may_share_files()) else {
            return Ok(0);
        };
        let wanted_again = {
            let made = lock(&self.shared.made_here);
            layers
                .iter()
                .position(|l| made.contains(&l.digest))
                .unwrap_or(layers.len())
        };
        if wanted_again == 0 {
            return Ok(0);
        }
        let linked = trees
            .get_or_make(&layers[..wanted_again], &|layers, dir| {
                apply_layers(self.store, &self.owners, layers, dir)
            })
            .and_then(|tree| crate::trees::link(&self.owners, &tree, rootfs));
        if linked.is_err() {
            // Sharing is an optimisation (a tree on another file system, a link count at
            // its limit): the rootfs, perhaps half linked, starts again empty and the
            // layers are extracted into it as they would be without trees.
            crate::trees::empty_dir(&self.owners, rootfs)?;
            return Ok(0);
        }
        lock(&self.shared.shared_roots).insert(rootfs.to_path_buf());
        Ok(wanted_again)
    }

    /// Whether this build's stage roots may be links into shared trees: its RUN steps run
    /// on an overlay, so nothing writes into a rootfs file in place.
    pub(crate) fn may_share_files(&self) -> bool {
        let userns = matches!(
            self.sandbox.resolve_isolation(self.request.isolation),
            Ok(rbuild_sandbox::Isolation::Userns)
        );
        userns
            && self.sandbox.overlay_worth_trying()
            && self.sandbox.probe().checks.overlay_in_userns.ok
    }

    /// Gives the stage a rootfs of its own (extracted, not linked) before a step that
    /// writes into it in place.
    pub(crate) fn own_rootfs(&self, st: &mut StageState) -> Result<()> {
        if !lock(&self.shared.shared_roots).remove(&st.rootfs) {
            return Ok(());
        }
        st.rootfs = self.dir.new_dir(&format!("rootfs-{}", st.index))?;
        st.applied = 0;
        // The new rootfs gets every layer by linking and extracting.
        st.pending_merge = None;
        self.catch_up(
            &st.layers,
            &mut st.applied,
            &mut st.pending_merge,
            &st.rootfs,
        )
    }

    /// The before-index of a step that writes into `root` (COPY, WORKDIR).
    pub(crate) fn scan(&self, root: &Path) -> Result<crate::snapshot::Index> {
        // A root of links into a shared tree needs no other rule: a link count changed by
        // another build is no change (`rbuild_snapshot::walk`).
        crate::snapshot::Index::scan(&self.owners, root)
    }

    /// The root filesystem a `--from` names: an earlier stage (name or index) or an image.
    pub(crate) fn root_of_from(&self, current: usize, from: &str) -> Result<PathBuf> {
        if let Some(key) = self.context_of_from(current, from) {
            return self.root_of_named(&key);
        }
        let stage = self
            .df
            .stage_by_name(from)
            .or_else(|| from.parse::<usize>().ok().filter(|&i| i < current));
        if let Some(i) = stage {
            // The lock is held while the stage's rootfs is brought up to date: two stages
            // reading it at once must not both apply its layers.
            let mut done = lock(&self.shared.done);
            let output = done.get_mut(&i).ok_or_else(|| {
                BuildError::other(format!(
                    "stage {from:?} has not been built (it must come before this stage)"
                ))
            })?;
            self.catch_up(
                &output.image.layers,
                &mut output.applied,
                &mut output.pending_merge,
                &output.rootfs,
            )?;
            return Ok(output.rootfs.clone());
        }
        self.root_of_image(from)
    }

    /// The root filesystem of the image `reference` (made once per build).
    pub(crate) fn root_of_image(&self, reference: &str) -> Result<PathBuf> {
        let from = reference;
        let mut roots = lock(&self.shared.image_roots);
        if let Some(root) = roots.get(from) {
            return Ok(root.clone());
        }
        let image = self.load_image(from)?;
        // Only read (COPY --from, read-only binds; a writable bind gets a copy): the
        // image's shared tree itself serves.
        let shared = match &self.trees {
            Some(trees) if !image.layers.is_empty() => trees
                .get_or_make(&image.layers, &|layers, dir| {
                    apply_layers(self.store, &self.owners, layers, dir)
                })
                .ok(),
            _ => None,
        };
        let root = match shared {
            Some(tree) => tree,
            None => {
                let root = self.dir.new_dir("from-image")?;
                apply_layers(self.store, &self.owners, &image.layers, &root)?;
                root
            }
        };
        roots.insert(from.to_string(), root.clone());
        Ok(root)
    }
}
