//! A RUN step under the `restricted` isolation: the stage is laid out in `/`, walked, the
//! step runs there under the sandbox's supervisor, `/` is walked again and the stage moved
//! back; the step's recorded owners join the build's table and the change set is committed
//! from the stage's root, the layer writer taking owners and devices from the table.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rbuild_layer::Change;
use rbuild_sandbox::restricted::{Owner, OwnershipTable};
use rbuild_sandbox::{BindMount, Rootfs, Sandbox, ShownOwner, StepOutcome, StepSpec};
use rbuild_snapshot::Entries;

use super::{InPlaceError, InPlaceOwners, InPlaceRoot};
use crate::chroot_mounts::{MountKind, MountPlan};
use crate::context::{lock, BuildContext, Origin};
use crate::error::Result;
use crate::fsops::Owners;
use crate::progress::Progress;
use crate::state::StageState;

/// Credentials a step must not read, besides the store: the docker config rbuild's
/// registry client reads (`$DOCKER_CONFIG`, else `$HOME/.docker`).
pub(crate) fn credential_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        paths.push(PathBuf::from(dir));
    } else if let Some(home) = std::env::var_os("HOME") {
        paths.push(PathBuf::from(home).join(".docker"));
    }
    paths
        .into_iter()
        .filter(|p| p.is_absolute() && p.exists())
        .collect()
}

impl BuildContext<'_> {
    /// Runs `spec` in place and commits what it changed; returns the layer's size.
    pub(crate) fn run_restricted(
        &self,
        st: &mut StageState,
        origin: &Origin<'_>,
        spec: &StepSpec,
        plans: &[MountPlan],
        step: usize,
        progress: &mut dyn Progress,
    ) -> Result<u64> {
        let Owners::Recorded(in_place) = &self.owners else {
            return Err(origin
                .error("isolation `restricted` was chosen after the build started without it"));
        };
        let mut spec = spec.clone();
        spec.rootfs = Rootfs::Dir("/".into());
        // The mounts (and a heredoc script) are placed in `/` without mount(2), as chroot
        // isolation places them in its root (`chroot_mounts`).
        let mut binds = std::mem::take(&mut spec.binds);
        let moved = move_out_of_dev(&mut binds, &mut spec.argv);
        if let Some(why) = in_place.root.cwd_refusal(&spec.cwd, &st.rootfs) {
            return Err(origin.error(why));
        }
        if let Some(why) = rbuild_sandbox::restricted::refusal(&spec) {
            return Err(origin.error(why));
        }
        if crate::scratch::cancelling() {
            return Err(origin.error("the build was cancelled"));
        }
        // One stage in `/` at a time: stages running beside each other take turns per RUN.
        let _in_place = lock(&in_place.layout_lock);
        let stash = self.dir.new_dir("in-place-stash")?;
        let mounts = Mounts {
            binds: &binds,
            moved: &moved,
            plans,
            stash: self.dir.new_dir("mount-stash")?,
        };
        let journal = super::journal_path(self.store.root());
        std::fs::write(&journal, stash.display().to_string())
            .map_err(|e| origin.error(format!("writing {}: {e}", journal.display())))?;
        match in_place.root.lay_out(&st.rootfs, &stash) {
            // The names of `/` that are the stage's: the sandbox redirects the others.
            Ok(names) => spec.top_level_names = names,
            Err(e) => {
                // The journal stays only where `/` was left half laid out.
                if let super::layout::LayoutError::Undone(_) = e {
                    std::fs::remove_file(&journal).map_err(|e| {
                        origin.error(format!("removing {}: {e}", journal.display()))
                    })?;
                }
                return Err(origin.error(format!("laying the stage out in `/`: {e}")));
            }
        }
        let ran = run_laid_out(
            in_place,
            &self.sandbox,
            &spec,
            &mounts,
            (&st.label, step),
            progress,
        );
        in_place
            .root
            .take_back(&st.rootfs, &stash)
            .map_err(|e| origin.error(format!("moving the stage back out of `/`: {e}")))?;
        std::fs::remove_file(&journal)
            .map_err(|e| origin.error(format!("removing {}: {e}", journal.display())))?;
        let (mut changes, stale, outcome) = ran.map_err(|e| origin.error(e))?;
        if !outcome.status.success() {
            return Err(crate::run::failure(origin, &spec, &outcome));
        }
        // A builder's directory the stage lacks, changed in its times only (a mount placed in
        // it, as a uid that may not set its times back), is not the stage's.
        changes.retain(|change| match change {
            Change::Upsert(path) => {
                !in_place.root.is_ancestor(path) || st.rootfs.join(path).symlink_metadata().is_ok()
            }
            _ => true,
        });
        changes.extend(system_mount_points(&st.rootfs).map_err(|e| origin.error(e))?);
        in_place.merge(&stale, outcome.ownership);
        let rootfs = st.rootfs.clone();
        self.commit_changes(st, &rootfs, &changes)
            .map_err(|e| origin.error(e))
    }
}

/// Where a heredoc script goes in place: BuildKit's `/dev/pipes/NAME` is in the runtime's
/// `/dev`, which the build user cannot write; rbuild's own directory is never part of a
/// stage, so the script leaves no trace there either.
const SCRIPTS_IN_PLACE: &str = "/rbuild/steps";

/// Moves the targets under `/dev` (heredoc scripts) to [`SCRIPTS_IN_PLACE`] (by their last
/// name only), and the command's arguments naming them with them; says which it moved.
fn move_out_of_dev(binds: &mut [BindMount], argv: &mut [String]) -> Vec<bool> {
    let moved = binds
        .iter()
        .map(|b| b.target.starts_with("/dev/"))
        .collect();
    for bind in binds.iter_mut().filter(|b| b.target.starts_with("/dev/")) {
        let name = Path::new(&bind.target)
            .file_name()
            .map_or_else(|| "script".into(), |n| n.to_string_lossy().into_owned());
        let at = format!("{SCRIPTS_IN_PLACE}/{name}");
        for arg in argv.iter_mut().filter(|a| **a == bind.target) {
            arg.clone_from(&at);
        }
        bind.target = at;
    }
    moved
}

/// BuildKit's runc leaves the `/dev`, `/proc` and `/sys` mount points it had to create in
/// the step's layer (as `keep_system_mount_points` keeps the other isolations' stubs); in
/// place the runtime's own are used, so a stage without them gets them here.
fn system_mount_points(stage_root: &Path) -> std::result::Result<Vec<Change>, InPlaceError> {
    use std::os::unix::fs::PermissionsExt;
    let mut made = Vec::new();
    for name in ["dev", "proc", "sys"] {
        let path = stage_root.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(InPlaceError::io("reading", &path)(e)),
        }
        std::fs::create_dir(&path)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)))
            .map_err(InPlaceError::io("making", &path))?;
        made.push(Change::Upsert(PathBuf::from(name)));
    }
    Ok(made)
}

/// What [`run_laid_out`] found: the change set, the inodes whose records are stale, and the
/// step's outcome.
type Ran = (Vec<Change>, Vec<(u64, u64)>, StepOutcome);

/// A step's mounts, to place in `/` after the first walk and take away before the second.
struct Mounts<'a> {
    binds: &'a [BindMount],
    /// Per bind: rbuild moved it to [`SCRIPTS_IN_PLACE`] (a heredoc script).
    moved: &'a [bool],
    plans: &'a [MountPlan],
    stash: PathBuf,
}

/// The owners the step's `stat` shows for what rbuild places and the build user cannot
/// chown (it owns them, shown as root, on the disk): the secrets and ssh agent sockets
/// mounted with `uid=`/`gid=`, and a cache directory with the owner its creation recorded
/// (`uid=`/`gid=` of the step that made it, as BuildKit keeps the first one). Read before
/// the mounts are placed (a cache directory is moved to its target then).
fn shown_owners(owners: &InPlaceOwners, mounts: &Mounts<'_>) -> Vec<ShownOwner> {
    mounts
        .binds
        .iter()
        .zip(mounts.plans)
        .filter_map(|(bind, plan)| {
            let (uid, gid) = match plan.kind {
                MountKind::Secret { uid, gid, .. } | MountKind::SshAgent { uid, gid, .. } => {
                    (uid, gid)
                }
                MountKind::Cache => {
                    // A directory that cannot be read shows as the disk has it; placing it
                    // fails the step with the reason.
                    let meta = std::fs::symlink_metadata(&bind.source).ok()?;
                    let owner =
                        owners.owner_now((meta.dev(), meta.ino()), (meta.uid(), meta.gid()));
                    (owner.uid, owner.gid)
                }
                MountKind::Scratch => return None,
            };
            ((uid, gid) != (0, 0)).then(|| ShownOwner {
                path: PathBuf::from(&bind.target),
                uid,
                gid,
            })
        })
        .collect()
}

/// Walks what is in place, places the mounts, runs the step, takes the mounts away, walks
/// again: the change set and stale inodes (both empty when the step failed) and the step's
/// outcome.
fn run_laid_out(
    owners: &InPlaceOwners,
    sandbox: &Sandbox,
    spec: &StepSpec,
    mounts: &Mounts<'_>,
    (label, step): (&str, usize),
    progress: &mut dyn Progress,
) -> std::result::Result<Ran, InPlaceError> {
    let root = &owners.root;
    let snapshot = crate::phases::Phase::Snapshot;
    let before = crate::phases::timed(snapshot, || root.walk())?;
    // A mount's target must resolve to the stage's region: placing it moves what is there
    // aside and puts content in, which must never happen in rbuild's store, `/proc` or a
    // runtime's file (a target naming them, or a symlink of the stage leading there).
    // Checked with the stage in place, since its symlinks are what the placing follows;
    // rbuild's own scripts directory is the one excluded place a target may be.
    for ((bind, plan), moved) in mounts.binds.iter().zip(mounts.plans).zip(mounts.moved) {
        if !moved {
            root.check_mount_target(&bind.target)
                .map_err(|why| InPlaceError::MountTarget {
                    label: plan.label.clone(),
                    why: Box::new(why),
                })?;
        }
    }
    // Targets below a top-level entry `/` lacks are in the redirection directory while
    // the stage is in place: rbuild's own calls are not redirected, so it names them there.
    let real_binds: Vec<BindMount> = mounts
        .binds
        .iter()
        .zip(mounts.moved)
        .map(|(bind, moved)| {
            let mut bind = bind.clone();
            if !moved {
                bind.target = root.real_path(&bind.target);
            }
            bind
        })
        .collect();
    let mounts = &Mounts {
        binds: &real_binds,
        moved: mounts.moved,
        plans: mounts.plans,
        stash: mounts.stash.clone(),
    };
    let shown = shown_owners(owners, mounts);
    let placed = if mounts.binds.is_empty() {
        None
    } else {
        Some(crate::chroot_mounts::place(
            root.top(),
            mounts.binds,
            mounts.plans,
            &mounts.stash,
            true,
        )?)
    };
    let mut spec = spec.clone();
    spec.shown_owners = shown;
    // Files hard-linked in earlier layers: a step's write to one name changes that name
    // alone, as on overlayfs. Their names are taken apart before the step and joined again
    // after it where it left them unchanged (`groups.rs`), so the step runs without the
    // sandbox's copy-up stops; a group that cannot be taken apart is left to that copy-up
    // (`copy_up_inodes`), the stage's owners following its copies in `InPlaceOwners::merge`.
    let (broken, left) = super::groups::break_groups(root, &before, super::groups::COPY_BUDGET);
    spec.copy_up_inodes = left;
    let executed = crate::run::execute(sandbox, &spec, label, step, progress);
    let restored = placed.map_or(Ok(()), |p| p.restore());
    let joined = if broken.is_empty() {
        Ok(super::groups::Joined::default())
    } else {
        let ownership = executed.as_ref().ok().and_then(|o| o.ownership.as_ref());
        broken.join_again(root, ownership)
    };
    let outcome = executed.map_err(InPlaceError::Sandbox)?;
    restored?;
    let joined = joined?;
    if !outcome.status.success() {
        return Ok((Vec::new(), Vec::new(), outcome));
    }
    let after = crate::phases::timed(snapshot, || root.walk())?;
    let mut stale = new_inodes(root, &before, &after);
    let mut changes = rbuild_snapshot::Index::from_entries(before).changes_to(&after);
    // A name joined again is the file it was before the step (the ctime of the links
    // aside): no change of the layer.
    changes.retain(|c| !matches!(c, Change::Upsert(path) if joined.unchanged.contains(path)));
    if !joined.kept.is_empty() {
        // A name the step changed keeps its copy, which gets what the stage's table holds
        // for the shared file (owner, device, capability), the step's own records winning
        // in the caller's merge: so it is no stale inode to forget there.
        let kept: HashSet<(u64, u64)> = joined.kept.iter().map(|(new, _)| *new).collect();
        stale.retain(|key| !kept.contains(key));
        let mut copies = OwnershipTable::default();
        for (new, old) in &joined.kept {
            copies.copied_up(*old, *new);
        }
        let forget: Vec<(u64, u64)> = kept.into_iter().collect();
        owners.merge(&forget, Some(copies));
    }
    if let Some(table) = &outcome.ownership {
        changes.extend(recorded_changes(owners, table, &after, &changes));
    }
    Ok((changes, stale, outcome))
}

/// The inodes of files the step created (a path that is new, or has another inode than
/// before, and is not a file that was there before under another name: a rename or hard
/// link keeps the inode, its mtime and its size). What the table holds for such an inode
/// belonged to a removed file whose number the kernel gave again: forgotten, so the new
/// file is the step's (root's) unless the step recorded an owner for it.
fn new_inodes(root: &InPlaceRoot, before: &Entries, after: &Entries) -> Vec<(u64, u64)> {
    let by_inode: std::collections::HashMap<u64, &rbuild_snapshot::Meta> =
        before.values().map(|meta| (meta.ino, meta)).collect();
    after
        .iter()
        .filter(|(path, meta)| before.get(*path).map(|old| old.ino) != Some(meta.ino))
        .filter(|(_, meta)| {
            let kept = by_inode.get(&meta.ino).is_some_and(|old| {
                old.mtime == meta.mtime
                    && old.size == meta.size
                    && old.mode & libc::S_IFMT == meta.mode & libc::S_IFMT
            });
            !kept
        })
        .filter_map(|(path, meta)| {
            let md = std::fs::symlink_metadata(root.located(path)).ok()?;
            Some((md.dev(), meta.ino))
        })
        .collect()
}

/// The paths whose inode the step's supervisor recorded something for (another owner than
/// the file had, a device, a file capability) that the walk saw no change of: a faked chown
/// leaves the disk as it was, yet the file belongs in the layer with its new owner, as
/// under `docker build`. A chown to the owner the file already had changes nothing, as a
/// real one changes nothing a snapshot compares (apt chowns its unchanged lists to root).
fn recorded_changes(
    owners: &InPlaceOwners,
    table: &OwnershipTable,
    after: &Entries,
    changes: &[Change],
) -> Vec<Change> {
    let root = &owners.root;
    let recorded_owners: HashMap<(u64, u64), Owner> = table.owners().collect();
    let others: HashSet<(u64, u64)> = table
        .devices()
        .map(|(key, _)| key)
        .chain(table.capabilities().map(|(key, _)| key))
        .collect();
    let inodes: HashSet<u64> = recorded_owners
        .keys()
        .chain(&others)
        .map(|&(_, ino)| ino)
        .collect();
    let upserted: HashSet<&Path> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Upsert(path) | Change::OpaqueDir(path) => Some(path.as_path()),
            Change::Delete(_) => None,
        })
        .collect();
    after
        .iter()
        .filter(|(path, meta)| inodes.contains(&meta.ino) && !upserted.contains(path.as_path()))
        .filter(|(path, meta)| {
            // The walk has no device number: the inode's own says which file system.
            let Ok(md) = std::fs::symlink_metadata(root.located(path)) else {
                return false;
            };
            let key = (md.dev(), meta.ino);
            // The build's table does not hold the step's records yet: `owner_now` is the
            // owner the file had before the step.
            others.contains(&key)
                || recorded_owners
                    .get(&key)
                    .is_some_and(|owner| owners.owner_now(key, (meta.uid, meta.gid)) != *owner)
        })
        .map(|(path, _)| Change::Upsert(path.clone()))
        .collect()
}
