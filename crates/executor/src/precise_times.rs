//! The tree a step made, as the stage that ran it sees it, for the stages that take its
//! layer instead of running it again (`step_cache.rs`: the same step of two stages runs
//! once, as BuildKit merges identical vertices and both stages share one snapshot).
//!
//! A layer keeps modification times in whole seconds, so a stage that extracts it has the
//! step's files with other times than the stage that ran it (nanoseconds). A later `COPY
//! --from` between the two then writes a file whose time differs from the one below it and
//! records a change BuildKit does not (its differ compares times to the nanosecond, and its
//! two stages have the very same files). So the times of what a step wrote are kept, by
//! layer, as the running stage had them, and set again on the entries when the layer is
//! applied to another stage's rootfs of this build: both stages then see the same tree.
//!
//! Only where this process may set any file's times (host root, a rootless build without a
//! range, or a restricted one: their files are all the build user's own on the disk);
//! elsewhere the taking stage keeps the
//! layer's times, as before. Every path is resolved inside the root with no symlink
//! followed, so a hostile layer cannot make this touch a file outside the rootfs.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rbuild_inroot::Symlinks;
use rbuild_layer::Change;
use rustix::fs::{AtFlags, Timespec, Timestamps};

use crate::fsops::Owners;

/// The modification times (seconds, nanoseconds) of a layer's entries whose time has a
/// fraction of a second, by directory (relative to the root) and name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PreciseTimes {
    by_dir: BTreeMap<PathBuf, Vec<(OsString, i64, u32)>>,
}

/// Whether this build's process may set the times of every file of a rootfs.
pub(crate) fn may_set_times(owners: &Owners) -> bool {
    matches!(
        owners,
        Owners::Root | Owners::Ranged(_) | Owners::SingleId | Owners::Recorded(_)
    )
}

/// Whether a build keeps its layers' times at all: only another stage's rootfs, or the
/// same stage's when its overlay steps leave their layers off it (`Owners::SingleId`: no
/// renames into the rootfs), ever gets a layer this build made applied. A one-stage build
/// otherwise moves each step's files in (merge) or writes them in place, and a rootfs made
/// again from the layers after an overlay failure (`own_rootfs`) is walked before the step
/// that writes into it, so its whole-second times are never compared with the step's.
pub(crate) fn keeps_times(owners: &Owners, stages: usize) -> bool {
    may_set_times(owners) && (stages > 1 || matches!(owners, Owners::SingleId))
}

impl PreciseTimes {
    /// Reads the times of the entries `changes` creates or replaces under `root` (the
    /// stage's rootfs, or an overlay step's upper directory). An entry that cannot be
    /// reached without following a symlink, or is gone, is left out: the taking stage
    /// keeps the layer's time for it. The build takes them from the layer writer instead
    /// ([`PreciseTimes::from_written`]); this second walk is what that is tested against.
    #[cfg(test)]
    pub(crate) fn read(root: &Path, changes: &[Change]) -> PreciseTimes {
        let mut times = PreciseTimes::default();
        let Ok(root_fd) = rbuild_inroot::open_root(root) else {
            return times;
        };
        let mut parents: BTreeMap<PathBuf, Option<std::os::fd::OwnedFd>> = BTreeMap::new();
        for change in changes {
            let path = match change {
                Change::Upsert(p) | Change::OpaqueDir(p) => p,
                Change::Delete(_) => continue,
            };
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                continue;
            };
            let parent = parents.entry(dir.to_path_buf()).or_insert_with(|| {
                rbuild_inroot::resolve(root_fd.as_fd(), dir, Symlinks::Refuse, None)
                    .ok()
                    .map(|r| r.fd)
            });
            let Some(parent) = parent else { continue };
            let Ok(stat) = rustix::fs::statat(&*parent, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let nanos = u32::try_from(stat.st_mtime_nsec).unwrap_or(0);
            if nanos == 0 {
                continue;
            }
            times.by_dir.entry(dir.to_path_buf()).or_default().push((
                name.to_os_string(),
                stat.st_mtime,
                nanos,
            ));
        }
        times
    }

    /// The times of the entries `changes` creates or replaces, from what the layer writer
    /// read as it wrote them (`rbuild_layer::write_layer_with_times`: every upserted entry
    /// and its ancestors): the same as [`PreciseTimes::read`] right after the write,
    /// without a second walk.
    pub(crate) fn from_written(
        written: Vec<rbuild_layer::PreciseMtime>,
        changes: &[Change],
    ) -> Self {
        let mut times = PreciseTimes::default();
        if written.is_empty() {
            return times;
        }
        let changed: std::collections::HashSet<&Path> = changes
            .iter()
            .filter_map(|change| match change {
                Change::Upsert(p) | Change::OpaqueDir(p) => Some(p.as_path()),
                Change::Delete(_) => None,
            })
            .collect();
        for (path, secs, nanos) in written {
            if !changed.contains(path.as_path()) {
                continue;
            }
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                continue;
            };
            times.by_dir.entry(dir.to_path_buf()).or_default().push((
                name.to_os_string(),
                secs,
                nanos,
            ));
        }
        times
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_dir.is_empty()
    }

    /// Sets the kept times on the entries under `root` (a rootfs the layer was just
    /// applied to). An entry replaced by another kind or gone is skipped: the tree then
    /// is the layer's, which is what it was before this existed.
    pub(crate) fn apply(&self, root: &Path) -> std::io::Result<()> {
        let root_fd = rbuild_inroot::open_root(root)?;
        for (dir, entries) in &self.by_dir {
            let Ok(parent) = rbuild_inroot::resolve(root_fd.as_fd(), dir, Symlinks::Refuse, None)
            else {
                continue;
            };
            if parent.file_type != rbuild_inroot::FileType::Directory {
                continue;
            }
            for (name, secs, nanos) in entries {
                let at = Timespec {
                    tv_sec: *secs,
                    tv_nsec: (*nanos).into(),
                };
                // As layer extraction sets them: access time = modification time.
                let times = Timestamps {
                    last_access: at,
                    last_modification: at,
                };
                match rustix::fs::utimensat(&parent.fd, name, &times, AtFlags::SYMLINK_NOFOLLOW) {
                    // Gone, or the name is now a symlink's: see above.
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => {
                        return Err(std::io::Error::new(
                            std::io::Error::from(e).kind(),
                            format!(
                                "setting the time of {} as the step left it: {e}",
                                dir.join(name).display()
                            ),
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn set_mtime(path: &Path, secs: i64, nanos: i64) {
        let at = Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        };
        let times = Timestamps {
            last_access: at,
            last_modification: at,
        };
        rustix::fs::utimensat(rustix::fs::CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }

    #[test]
    fn times_are_kept_and_set_again_inside_the_root_only() {
        let ran = tempfile::tempdir().unwrap();
        let took = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let n = 20_000;
        let mut changes = vec![Change::Upsert("d".into())];
        for root in [ran.path(), took.path()] {
            std::fs::create_dir(root.join("d")).unwrap();
            for i in 0..n {
                std::fs::write(root.join(format!("d/f{i}")), "x").unwrap();
            }
        }
        for i in 0..n {
            set_mtime(
                &ran.path().join(format!("d/f{i}")),
                1_700_000_000,
                123_456_789,
            );
            set_mtime(&took.path().join(format!("d/f{i}")), 1_700_000_000, 0);
            changes.push(Change::Upsert(format!("d/f{i}").into()));
        }
        changes.push(Change::Delete("gone".into()));
        // In the taking tree `link` leads out of the root; the running tree had a directory.
        std::fs::create_dir(ran.path().join("link")).unwrap();
        std::fs::write(ran.path().join("link/x"), "x").unwrap();
        set_mtime(&ran.path().join("link/x"), 1_700_000_000, 5);
        changes.push(Change::Upsert("link/x".into()));
        std::fs::write(outside.path().join("x"), "outside").unwrap();
        set_mtime(&outside.path().join("x"), 1_000, 0);
        std::os::unix::fs::symlink(outside.path(), took.path().join("link")).unwrap();

        let started = std::time::Instant::now();
        let times = PreciseTimes::read(ran.path(), &changes);
        let read = started.elapsed();
        let started = std::time::Instant::now();
        times.apply(took.path()).unwrap();
        let applied = started.elapsed();
        eprintln!("{n} files: read {read:?}, apply {applied:?}");

        for i in [0, n / 2, n - 1] {
            let md = std::fs::metadata(took.path().join(format!("d/f{i}"))).unwrap();
            assert_eq!((md.mtime(), md.mtime_nsec()), (1_700_000_000, 123_456_789));
        }
        let md = std::fs::metadata(outside.path().join("x")).unwrap();
        assert_eq!(
            (md.mtime(), md.mtime_nsec()),
            (1_000, 0),
            "followed a symlink out"
        );
    }

    /// Entries of each directory in name order (the writer lists them sorted, a walk of
    /// the change set in its order).
    fn sorted(mut times: PreciseTimes) -> PreciseTimes {
        for entries in times.by_dir.values_mut() {
            entries.sort();
        }
        times
    }

    #[test]
    fn the_writers_times_are_the_ones_a_second_walk_reads() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/lib/tool")).unwrap();
        std::fs::write(r.join("usr/lib/tool/a"), "a").unwrap();
        std::fs::write(r.join("usr/lib/tool/b"), "b").unwrap();
        std::fs::write(r.join("whole"), "w").unwrap();
        std::os::unix::fs::symlink("a", r.join("usr/lib/tool/link")).unwrap();
        set_mtime(&r.join("usr/lib/tool/a"), 1_700_000_000, 7);
        set_mtime(&r.join("usr/lib/tool/b"), 1_700_000_001, 0);
        set_mtime(&r.join("whole"), 1_700_000_002, 0);
        set_mtime(&r.join("usr/lib/tool/link"), 1_700_000_003, 99);
        set_mtime(&r.join("usr/lib/tool"), 1_700_000_004, 5);
        // Ancestors the writer writes but the change set does not name: left out.
        set_mtime(&r.join("usr/lib"), 1_700_000_005, 11);
        let changes = vec![
            Change::Upsert("usr/lib/tool".into()),
            Change::Upsert("usr/lib/tool/a".into()),
            Change::Upsert("usr/lib/tool/b".into()),
            Change::Upsert("usr/lib/tool/link".into()),
            Change::Upsert("whole".into()),
            Change::Delete("usr/lib/tool/gone".into()),
        ];
        let (_, written) = rbuild_layer::write_layer_with_times(
            r,
            &changes,
            std::io::sink(),
            &rbuild_layer::WriteOptions::default(),
        )
        .unwrap();
        let from_writer = sorted(PreciseTimes::from_written(written, &changes));
        assert_eq!(from_writer, sorted(PreciseTimes::read(r, &changes)));
        let expected: BTreeMap<PathBuf, Vec<(OsString, i64, u32)>> = [
            (
                PathBuf::from("usr/lib"),
                vec![("tool".into(), 1_700_000_004, 5)],
            ),
            (
                PathBuf::from("usr/lib/tool"),
                vec![
                    ("a".into(), 1_700_000_000, 7),
                    ("link".into(), 1_700_000_003, 99),
                ],
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(from_writer.by_dir, expected);
    }
}
