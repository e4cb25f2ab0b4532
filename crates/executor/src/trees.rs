//! Extracted trees shared between builds: `<store>/trees/<key>` holds the result of
//! applying a list of layers (a base image's, or those of steps served from the cache),
//! extracted once and never modified afterwards. A stage starts from one by filling its
//! empty rootfs with hard links to it ([`rbuild_layer::link_tree`]: a directory per
//! directory and a link per file, about 0.15 s for a Debian base against seconds to
//! extract it), so the base is extracted once per store, not once per build.
//!
//! Only builds whose rootfs files are never written in place may link: RUN steps on an
//! overlay (the rootfs is a lower directory; the upper directory's entries replace files
//! by rename) — COPY, ADD and layer extraction always unlink before they create. A step
//! that has to run on the rootfs itself (no overlay) first gets a rootfs of its own
//! (`BuildContext::own_rootfs`).
//!
//! Concurrency: a tree appears by rename, complete, or not at all (two builds making the
//! same one each make it in a temporary directory; the second rename loses and its copy
//! is dropped). Each build holds a shared lock on `<store>/locks/trees.lock` from start to
//! end; removing trees (the least recently used beyond [`KEEP_TREES`], or `rbuild prune`)
//! needs the exclusive lock, taken without waiting, so no tree goes while a build may be
//! linking it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rbuild_image::{Descriptor, Hasher};
use rbuild_store::Store;

use crate::fsops::Owners;

/// Trees kept beyond those used most recently are removed when a build starts and no
/// other build is running.
pub(crate) const KEEP_TREES: usize = 16;

/// Trees not used for this long are removed likewise.
const UNUSED_FOR: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

const LOCK_FILE: &str = "trees.lock";

/// The store's extracted trees, with this build's shared lock on them.
pub(crate) struct Trees {
    dir: PathBuf,
    _lock: File,
    counter: AtomicU64,
    /// The build's owners: they decide which trees are its (`owners_tag`) and who may
    /// remove their files.
    owners: Owners,
}

fn lock_path(store: &Store) -> PathBuf {
    store.root().join("locks").join(LOCK_FILE)
}

fn open_lock(store: &Store) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path(store))
}

/// How the files of a tree are owned: trees made by root, by a rootless user with a
/// subordinate range and by one without differ on disk.
fn owners_tag(owners: &Owners) -> String {
    match owners {
        Owners::Root => "root".into(),
        Owners::Ranged(range) => format!("range {:?}", range.id_map()),
        Owners::SingleId => format!("single {}", crate::fsops::current_ids().0),
        Owners::Mapped(root) => format!(
            "mapped {} {:?}",
            crate::fsops::current_ids().0,
            root.id_map()
        ),
        // Owners recorded in this build's table only (in_place/): a tree is never shared
        // with another build.
        Owners::Recorded(in_place) => format!("recorded {}", in_place.build_id),
    }
}

impl Trees {
    /// Opens the store's trees for a build: removes what is beyond the bounds when no other
    /// build holds the lock, then holds it shared until dropped.
    pub(crate) fn open(store: &Store, owners: &Owners) -> std::io::Result<Trees> {
        let dir = store
            .state_dir("trees")
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let lock = open_lock(store)?;
        if crate::fsops::flock(&lock, libc::LOCK_EX | libc::LOCK_NB)? {
            let _ = trim(&dir, KEEP_TREES, Some(UNUSED_FOR), owners);
        }
        crate::fsops::flock(&lock, libc::LOCK_SH)?;
        Ok(Trees {
            dir,
            _lock: lock,
            counter: AtomicU64::new(0),
            owners: owners.clone(),
        })
    }

    /// Where the tree of `layers` (bottom first) lives, whether or not it exists.
    fn path_of(&self, layers: &[Descriptor], owners: &Owners) -> PathBuf {
        let mut h = Hasher::new();
        h.update(b"rbuild tree v1\n");
        h.update(owners_tag(owners).as_bytes());
        for layer in layers {
            h.update(b"\n");
            h.update(layer.digest.to_string().as_bytes());
        }
        self.dir.join(h.finish().hex())
    }

    /// The tree of `layers[..n]` for the largest `n` (at most `layers.len()`) that has one.
    pub(crate) fn deepest(&self, layers: &[Descriptor]) -> Option<(usize, PathBuf)> {
        (1..=layers.len())
            .rev()
            .map(|n| (n, self.path_of(&layers[..n], &self.owners)))
            .find(|(_, path)| path.is_dir())
    }

    /// The tree of all of `layers`: found, or made from the deepest tree below it (linked)
    /// plus the layers above that, by `apply(layers, dir)`.
    pub(crate) fn get_or_make(
        &self,
        layers: &[Descriptor],
        apply: &dyn Fn(&[Descriptor], &Path) -> crate::error::Result<()>,
    ) -> crate::error::Result<PathBuf> {
        let owners = &self.owners;
        let path = self.path_of(layers, owners);
        if path.is_dir() {
            touch_used(&path);
            return Ok(path);
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(
            "tmp-{}-{n}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir(&tmp).map_err(crate::error::BuildError::io("creating", &tmp))?;
        if let Owners::Ranged(_) = owners {
            // The tree's root is container root's, as a rootless build's is the user's
            // (steps see it as a `RUN --mount=from=` target).
            if let Err(e) = crate::fsops::chown_in_build(owners, &tmp, 0, 0) {
                let _ = std::fs::remove_dir(&tmp);
                return Err(e);
            }
        }
        let made = (|| {
            let below = self.deepest(&layers[..layers.len() - 1]);
            let start = match &below {
                Some((k, tree)) => {
                    link(owners, tree, &tmp)?;
                    touch_used(tree);
                    *k
                }
                None => 0,
            };
            apply(&layers[start..], &tmp)
        })();
        if let Err(e) = made {
            let _ = crate::fsops::remove_tree(&tmp, owners);
            return Err(e);
        }
        if let Err(e) = std::fs::rename(&tmp, &path) {
            // Another build made the same tree meanwhile: theirs is as good.
            let _ = crate::fsops::remove_tree(&tmp, owners);
            if !path.is_dir() {
                return Err(crate::error::BuildError::io(
                    "moving the extracted tree to",
                    &path,
                )(e));
            }
        }
        touch_used(&path);
        Ok(path)
    }
}

impl Trees {
    /// Makes `rootfs`, a stage's root holding exactly the files of `layers` (bottom
    /// first), their tree by renaming it there: the build gives it up. `None` when the
    /// tree exists already or the rename fails (another build's tree appeared meanwhile:
    /// a rename onto a non-empty directory fails); `rootfs` is then left as it is.
    pub(crate) fn adopt(&self, layers: &[Descriptor], rootfs: &Path) -> Option<PathBuf> {
        let path = self.path_of(layers, &self.owners);
        if path.is_dir() || std::fs::rename(rootfs, &path).is_err() {
            return None;
        }
        touch_used(&path);
        Some(path)
    }

    /// Moves `source` (a directory of this build's, on the store's file system) to `dest`
    /// (a `kept-…` entry of the trees directory, `Store::kept_layer_dir`) beside the files
    /// `extra` (name, bytes), by renames: the entry appears complete or not at all, and
    /// like a tree it is bounded and pruned with the others (`trim`). Returns `false` when
    /// another build kept the same entry first (`source` is then left where it was).
    pub(crate) fn keep(
        &self,
        source: &Path,
        extra: &[(&str, &[u8])],
        dest: &Path,
    ) -> std::io::Result<bool> {
        if dest.is_dir() {
            touch_used(dest);
            return Ok(false);
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!("tmp-kept-{}-{n}", std::process::id()));
        std::fs::create_dir(&tmp)?;
        let moved = (|| {
            for (name, bytes) in extra {
                std::fs::write(tmp.join(name), bytes)?;
            }
            std::fs::rename(source, tmp.join("root"))
        })();
        if let Err(e) = moved {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        match std::fs::rename(&tmp, dest) {
            Ok(()) => {
                touch_used(dest);
                Ok(true)
            }
            Err(e) => {
                // Lost to another build keeping the same layer: the source goes back, to
                // leave with the build directory.
                let _ = std::fs::rename(tmp.join("root"), source);
                let _ = crate::fsops::remove_tree(&tmp, &self.owners);
                if dest.is_dir() {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// Fills the empty directory `dst` with links to `tree` (as container root when the tree's
/// files belong to other container users).
pub(crate) fn link(owners: &Owners, tree: &Path, dst: &Path) -> crate::error::Result<()> {
    let _t = crate::phases::Phase::Extract.timer();
    let doing = format!("linking {} into {}", tree.display(), dst.display());
    match owners {
        Owners::Mapped(root) => root
            .link_tree(tree, dst)
            .map_err(crate::error::BuildError::container_root(doing)),
        _ => rbuild_layer::link_tree(tree, dst)
            .map(|_| ())
            // `linking TREE into DST: …`, as the worker's failure reads.
            .map_err(crate::error::BuildError::io(
                format!("linking {} into", tree.display()),
                dst,
            )),
    }
}

/// Removes everything in `dir` (whoever of the build's container users owns it), leaving
/// it empty.
pub(crate) fn empty_dir(owners: &Owners, dir: &Path) -> crate::error::Result<()> {
    let _ = crate::fsops::remove_tree(dir, owners);
    std::fs::create_dir(dir).map_err(crate::error::BuildError::io("creating", dir))
}

/// Records a use of `tree` (the mtime of `<tree>.used`), for removing the least recently
/// used ones.
fn touch_used(tree: &Path) {
    let mut marker = tree.as_os_str().to_owned();
    marker.push(".used");
    let _ = std::fs::write(marker, b"");
}

/// Removes trees beyond the `keep` most recently used and those unused for `unused_for`,
/// and temporary directories of builds that ended before finishing theirs. The caller holds
/// the exclusive lock. Returns how many trees went.
fn trim(
    dir: &Path,
    keep: usize,
    unused_for: Option<std::time::Duration>,
    owners: &Owners,
) -> usize {
    let mut trees = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("tmp-") {
            let _ = crate::fsops::remove_tree(&entry.path(), owners);
        } else if let Some(tree) = name.strip_suffix(".used") {
            if !dir.join(tree).is_dir() {
                let _ = std::fs::remove_file(entry.path());
            }
        } else {
            let used = std::fs::metadata(dir.join(format!("{name}.used")))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            trees.push((used, entry.path()));
        }
    }
    trees.sort_by_key(|t| std::cmp::Reverse(t.0));
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for (i, (used, path)) in trees.into_iter().enumerate() {
        let stale = unused_for.is_some_and(|d| now.duration_since(used).is_ok_and(|age| age > d));
        if i >= keep || stale {
            let _ = crate::fsops::remove_tree(&path, owners);
            let mut marker = path.into_os_string();
            marker.push(".used");
            let _ = std::fs::remove_file(marker);
            removed += 1;
        }
    }
    removed
}

/// What `rbuild prune` removed of the build state.
#[derive(Debug)]
pub struct PrunedBuildState {
    /// What dead builds left (secrets, build directories, unpacked contexts), removed.
    pub dead: crate::scratch::Swept,
    /// Finished builds' directories removed from the trash.
    pub trash: std::io::Result<usize>,
    /// Extracted trees removed, or `None` when a running build held them.
    pub trees: std::io::Result<Option<usize>>,
}

/// `rbuild prune`: removes what dead builds left, empties the trash and removes every extracted tree (unless a build is
/// running). Rootless with subordinate ids, container root removes them: their files
/// belong to container users.
pub fn prune_build_state(store: &Store) -> PrunedBuildState {
    // Trees of every ownership mode go: as root (even a ranged build's trees) this
    // process removes them itself.
    let sandbox = rbuild_sandbox::Sandbox::new();
    let owners = match Owners::for_build(&sandbox, false, store.root()) {
        Ok((owners, _)) => owners,
        Err(_) => Owners::of_process(),
    };
    // Dead builds' directories first: they go through the trash.
    let dead = crate::scratch::sweep_dead_as(store, true, &owners);
    PrunedBuildState {
        dead,
        trash: crate::build_dir::empty_trash(store, &owners),
        trees: prune_trees(store, &owners),
    }
}

/// Removes every tree, unless a build is running (then none). Returns how many went, or
/// `None` when a build held them.
fn prune_trees(store: &Store, owners: &Owners) -> std::io::Result<Option<usize>> {
    let dir = store.root().join("trees");
    if !dir.is_dir() {
        return Ok(Some(0));
    }
    let lock = open_lock(store)?;
    if !crate::fsops::flock(&lock, libc::LOCK_EX | libc::LOCK_NB)? {
        return Ok(None);
    }
    Ok(Some(trim(&dir, 0, None, owners)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_keeps_the_most_recently_used_and_drops_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let now = std::time::SystemTime::now();
        for (name, age_secs) in [("old", 300), ("newest", 0), ("middle", 100)] {
            std::fs::create_dir_all(dir.path().join(name).join("etc")).unwrap();
            let marker = dir.path().join(format!("{name}.used"));
            std::fs::write(&marker, b"").unwrap();
            let used = now - std::time::Duration::from_secs(age_secs);
            std::fs::File::options()
                .write(true)
                .open(&marker)
                .unwrap()
                .set_modified(used)
                .unwrap();
        }
        std::fs::create_dir(dir.path().join("tmp-1-2-3")).unwrap();
        std::fs::write(dir.path().join("gone.used"), b"").unwrap();

        assert_eq!(trim(dir.path(), 2, None, &Owners::of_process()), 1);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["middle", "middle.used", "newest", "newest.used"]);

        // Unused for longer than the bound: gone whatever the count.
        assert_eq!(
            trim(
                dir.path(),
                10,
                Some(std::time::Duration::from_secs(50)),
                &Owners::of_process()
            ),
            1
        );
        assert!(dir.path().join("newest").is_dir());
        assert!(!dir.path().join("middle").exists());
    }
}
