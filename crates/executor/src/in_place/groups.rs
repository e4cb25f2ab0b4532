//! Files hard-linked in earlier layers, taken apart before a restricted step and joined
//! again after it. On overlayfs a step that writes to one name of such a file changes that
//! name alone (the name is copied up). The sandbox can copy up on demand (its `copy_up`:
//! every call that may write to a name stops in its tracer or supervisor and is looked
//! up), but that stops every write-open, `chmod` and `utimensat` of the step, tens of
//! thousands in an `apt-get install` (dpkg's fsync opens and times of every file it
//! unpacks), for a Debian base's few groups (`perl`, `gunzip`).
//!
//! So before the step every name of a group but one gets its own copy of the file
//! (content, mode, times, xattrs) and the step runs with no group at all, unstopped. After
//! it, every name the step left as it was (same inode, ctime, mtime and size, and nothing
//! recorded for its inode by the supervisor) is linked to the file again, so the stage's
//! tree keeps its hard links, and is no change of the step's layer; a name the step
//! changed keeps its own file, which is what overlayfs's copy-up gives. A group that
//! cannot be taken apart (a file the build user may not read) is left to the sandbox's
//! copy-up.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rbuild_sandbox::restricted::OwnershipTable;
use rbuild_snapshot::{Entries, Meta};

use super::{InPlaceError, InPlaceRoot};

/// One name as the break left it: what the step must not have changed for it to be joined
/// again.
#[derive(Debug, Clone)]
struct Name {
    path: PathBuf,
    ino: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
    size: u64,
}

/// A group taken apart: `original` kept the shared inode `ino`, each of `copies` has its
/// own copy.
#[derive(Debug)]
struct Group {
    ino: u64,
    original: Name,
    copies: Vec<Name>,
}

/// The groups taken apart before a step.
#[derive(Debug, Default)]
pub(super) struct Broken {
    dev: u64,
    groups: Vec<Group>,
}

/// What joining found: the names the step left as they were (no change of its layer) and
/// the copies that stay (a name's new inode and the shared one it came from, for the
/// owners the table holds for the shared inode).
#[derive(Debug, Default)]
pub(super) struct Joined {
    pub(super) unchanged: HashSet<PathBuf>,
    pub(super) kept: Vec<((u64, u64), (u64, u64))>,
}

/// The hard-link groups of `before` (regular files with more than one name, by inode).
fn groups_of(before: &Entries) -> BTreeMap<u64, Vec<&Path>> {
    let mut by_inode: BTreeMap<u64, Vec<&Path>> = BTreeMap::new();
    for (path, meta) in before {
        if meta.nlink > 1 && meta.is_regular() {
            by_inode.entry(meta.ino).or_default().push(path);
        }
    }
    by_inode.retain(|_, names| names.len() > 1);
    by_inode
}

/// How many bytes of copies a step's groups may cost before and after it: past it the
/// rest are left to the sandbox's copy-up. A Debian base's groups are 3.8 MB; a stage with
/// git's hundred links to one binary would copy hundreds of MB for every RUN step.
pub(super) const COPY_BUDGET: u64 = 64 << 20;

/// Takes the groups of `before` apart, as far as `budget` bytes of copies go; returns them
/// and the inodes of the groups that were not (all or part of their names still shared),
/// for the sandbox's copy-up.
pub(super) fn break_groups(
    root: &InPlaceRoot,
    before: &Entries,
    budget: u64,
) -> (Broken, Vec<u64>) {
    let mut broken = Broken::default();
    let mut left = Vec::new();
    let mut budget = budget;
    for (ino, names) in groups_of(before) {
        let (first, others) = names.split_first().expect("a group has two names");
        let cost = before[*first].size.saturating_mul(others.len() as u64);
        if cost > budget {
            left.push(ino);
            continue;
        }
        budget -= cost;
        let mut copies = Vec::new();
        let mut whole = true;
        for path in others {
            match copy_over(&root.located(path), &before[*path]) {
                Ok(name) => copies.push(Name {
                    path: path.to_path_buf(),
                    ..name
                }),
                Err(_) => {
                    whole = false;
                    break;
                }
            }
        }
        if !whole {
            left.push(ino);
        }
        let original = std::fs::symlink_metadata(root.located(first));
        match original {
            Ok(md) if md.ino() == ino && !copies.is_empty() => {
                broken.dev = md.dev();
                broken.groups.push(Group {
                    ino,
                    original: name_of(first, &md),
                    copies,
                });
            }
            Ok(_) if copies.is_empty() => {}
            // The shared file's first name is gone (cannot happen with the stage in place
            // and no step running): its copies are joined to nothing, kept as they are.
            _ => {}
        }
    }
    if !broken.groups.is_empty() {
        past_the_tick(&broken);
    }
    (broken, left)
}

/// Waits until the clock file times come from has passed every ctime the break recorded,
/// so that whatever the step changes gets a later ctime even where the kernel stamps files
/// with its coarse clock (a tick of up to a few milliseconds); at most 100 ms.
fn past_the_tick(broken: &Broken) {
    let latest = broken
        .groups
        .iter()
        .flat_map(|g| std::iter::once(&g.original).chain(&g.copies))
        .map(|name| name.ctime)
        .max()
        .unwrap_or((0, 0));
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(100);
    loop {
        // SAFETY: an all-zero timespec is valid; clock_gettime fills it.
        let mut now: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: a valid clock id and timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) };
        if (now.tv_sec as i64, now.tv_nsec as i64) > latest || std::time::Instant::now() >= deadline
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn name_of(path: &Path, md: &std::fs::Metadata) -> Name {
    Name {
        path: path.to_path_buf(),
        ino: md.ino(),
        ctime: (md.ctime(), md.ctime_nsec()),
        mtime: (md.mtime(), md.mtime_nsec()),
        size: md.size(),
    }
}

/// A temporary name beside `path`, in its directory.
fn beside(path: &Path) -> io::Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a name without a parent"))?;
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(dir.join(format!(".rbuild-link-{}-{n}", std::process::id())))
}

/// The directory's access and modification times, to put back after a rename in it (a
/// layer that records the directory for another change keeps the step's times).
struct DirTimes {
    dir: PathBuf,
    times: [libc::timespec; 2],
}

impl DirTimes {
    fn of(path: &Path) -> io::Result<DirTimes> {
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let md = std::fs::symlink_metadata(&dir)?;
        let spec = |sec: i64, nsec: i64| libc::timespec {
            tv_sec: sec as libc::time_t,
            tv_nsec: nsec as _,
        };
        Ok(DirTimes {
            dir,
            times: [
                spec(md.atime(), md.atime_nsec()),
                spec(md.mtime(), md.mtime_nsec()),
            ],
        })
    }

    fn put_back(&self) -> io::Result<()> {
        let dir = c_path(&self.dir)?;
        // SAFETY: a valid C string and two timespecs, alive across the call.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                dir.as_ptr(),
                self.times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// Gives `path` its own copy of its file (content, mode, times, the xattrs `meta` lists),
/// renamed over it; returns the new inode's [`Name`] (path left empty).
fn copy_over(path: &Path, meta: &Meta) -> io::Result<Name> {
    use std::os::fd::AsRawFd;
    let dir_times = DirTimes::of(path)?;
    let mut source = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let now = source.metadata()?;
    if now.ino() != meta.ino || !now.file_type().is_file() {
        return Err(io::Error::other("changed since the walk"));
    }
    let tmp = beside(path)?;
    let made = (|| {
        let mut copy = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        io::copy(&mut source, &mut copy)?;
        for (name, value) in &meta.xattrs {
            let name = std::ffi::CString::new(name.clone())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "an xattr name"))?;
            // SAFETY: a descriptor of ours, a C string and a buffer of that length.
            let rc = unsafe {
                libc::fsetxattr(
                    copy.as_raw_fd(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: fchmod on a descriptor of ours.
        if unsafe { libc::fchmod(copy.as_raw_fd(), now.mode() & 0o7777) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let times = [
            libc::timespec {
                tv_sec: now.atime() as libc::time_t,
                tv_nsec: now.atime_nsec() as _,
            },
            libc::timespec {
                tv_sec: now.mtime() as libc::time_t,
                tv_nsec: now.mtime_nsec() as _,
            },
        ];
        // SAFETY: a descriptor of ours and two timespecs (futimens).
        if unsafe { libc::futimens(copy.as_raw_fd(), times.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let md = copy.metadata()?;
        if (md.uid(), md.gid(), md.mode()) != (now.uid(), now.gid(), now.mode()) {
            // Another owner on the disk, or a set-group-ID bit the kernel took off.
            return Err(io::Error::other(
                "the copy cannot have the file's owner and mode",
            ));
        }
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Best effort: a directory that is not the build user's cannot have its times set,
    // and the walk compares no directory's times (the name is renamed in already).
    let _ = dir_times.put_back();
    // Read after the rename: its ctime is what an unchanged name still has after the step.
    let md = std::fs::symlink_metadata(path)?;
    Ok(name_of(Path::new(""), &md))
}

/// Whether the step left `name` as the break left it: the same file, not written, not
/// renamed over, and nothing recorded for it by the supervisor (a faked chown, a device, a
/// file capability leave the disk as it was).
fn unchanged(root: &InPlaceRoot, dev: u64, name: &Name, table: Option<&OwnershipTable>) -> bool {
    let Ok(md) = std::fs::symlink_metadata(root.located(&name.path)) else {
        return false;
    };
    let recorded = table.is_some_and(|t| {
        let key = (dev, name.ino);
        t.get(dev, name.ino).is_some()
            || t.device(dev, name.ino).is_some()
            || t.capability(key).is_some()
    });
    md.file_type().is_file()
        && md.ino() == name.ino
        && (md.ctime(), md.ctime_nsec()) == name.ctime
        && (md.mtime(), md.mtime_nsec()) == name.mtime
        && md.size() == name.size
        && !recorded
}

impl Broken {
    pub(super) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// After the step (`table`: what its supervisor recorded): links every name it left
    /// unchanged to one file of its group again.
    pub(super) fn join_again(
        self,
        root: &InPlaceRoot,
        table: Option<&OwnershipTable>,
    ) -> Result<Joined, InPlaceError> {
        let mut joined = Joined::default();
        let dev = self.dev;
        for group in self.groups {
            let original_kept = unchanged(root, dev, &group.original, table);
            let (same, changed): (Vec<Name>, Vec<Name>) = group
                .copies
                .into_iter()
                .partition(|copy| unchanged(root, dev, copy, table));
            for copy in &changed {
                joined.kept.push(((dev, copy.ino), (dev, group.ino)));
            }
            // The file the unchanged names share again: the original's, else (the step
            // changed that name) the first unchanged copy's, which holds the old content.
            let mut same = same.into_iter();
            let target = if original_kept {
                Some(group.original)
            } else {
                same.next().inspect(|first| {
                    joined.kept.push(((dev, first.ino), (dev, group.ino)));
                })
            };
            let Some(target) = target else {
                continue;
            };
            let target_path = root.located(&target.path);
            for copy in same {
                let path = root.located(&copy.path);
                link_over(&target_path, &path).map_err(InPlaceError::io("linking again", &path))?;
                joined.unchanged.insert(copy.path);
            }
            joined.unchanged.insert(target.path);
        }
        Ok(joined)
    }
}

/// Replaces `path` by a hard link to `target` (a link beside it, renamed over it), the
/// directory's times kept.
fn link_over(target: &Path, path: &Path) -> io::Result<()> {
    let dir_times = DirTimes::of(path)?;
    let tmp = beside(path)?;
    std::fs::hard_link(target, &tmp)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Best effort, as in `copy_over`.
    let _ = dir_times.put_back();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbuild_layer::Change;
    use rbuild_sandbox::restricted::Owner;
    use std::fs;

    fn ino(path: &Path) -> u64 {
        fs::symlink_metadata(path).unwrap().ino()
    }

    /// On a stand-in `/`: three groups taken apart (every name its own file, same content
    /// and mode), then a "step" writes to a copy's name, to an original's name, and records
    /// a faked chown for a copy's inode; joining links the unchanged names again, and only
    /// the changed names are changes of the layer.
    #[test]
    fn groups_are_taken_apart_for_a_step_and_the_names_it_left_joined_again() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path();
        let bin = top.join("usr/bin");
        fs::create_dir_all(&bin).unwrap();
        let group = |names: &[&str], content: &str| {
            fs::write(bin.join(names[0]), content).unwrap();
            for name in &names[1..] {
                fs::hard_link(bin.join(names[0]), bin.join(name)).unwrap();
            }
        };
        group(&["perl", "perl5", "perlx"], "perl");
        group(&["gunzip", "uncompress"], "gz");
        group(&["a", "b", "c"], "old");
        fs::write(bin.join("single"), "alone").unwrap();
        let root = InPlaceRoot::new(top, Vec::new()).unwrap();
        let before = root.walk().unwrap();
        let shared = [
            ino(&bin.join("perl")),
            ino(&bin.join("gunzip")),
            ino(&bin.join("a")),
        ];

        // A budget of 2 bytes: only gunzip's group (one copy of 2 bytes) is taken apart.
        let (gz_only, left) = break_groups(&root, &before, 2);
        assert_eq!(
            left.len(),
            2,
            "perl's group (8 bytes) and a's (6) left: {left:?}"
        );
        assert_eq!(ino(&bin.join("perlx")), ino(&bin.join("perl")));
        assert_ne!(ino(&bin.join("uncompress")), ino(&bin.join("gunzip")));
        let joined = gz_only.join_again(&root, None).unwrap();
        assert_eq!(
            ino(&bin.join("uncompress")),
            ino(&bin.join("gunzip")),
            "{joined:?}"
        );
        let (broken, left) = break_groups(&root, &before, COPY_BUDGET);
        assert!(left.is_empty(), "every group taken apart: {left:?}");
        let names = [
            "perl",
            "perl5",
            "perlx",
            "gunzip",
            "uncompress",
            "a",
            "b",
            "c",
        ];
        let inodes: HashSet<u64> = names.iter().map(|n| ino(&bin.join(n))).collect();
        assert_eq!(inodes.len(), names.len(), "each name its own file");
        for name in names {
            let md = fs::symlink_metadata(bin.join(name)).unwrap();
            assert_eq!(md.nlink(), 1, "{name}");
            let was = &before[&PathBuf::from("usr/bin").join(name)];
            assert_eq!((md.mode(), md.size()), (was.mode, was.size), "{name}");
            assert_eq!((md.mtime(), md.mtime_nsec()), was.mtime, "{name}");
        }
        assert_eq!(
            ino(&bin.join("perl")),
            shared[0],
            "the first name keeps the file"
        );
        assert_eq!(fs::read_to_string(bin.join("perlx")).unwrap(), "perl");

        // The step.
        fs::write(bin.join("perl5"), "perl, patched").unwrap();
        fs::write(bin.join("a"), "new").unwrap();
        let mut table = OwnershipTable::default();
        let dev = fs::symlink_metadata(&bin).unwrap().dev();
        table.record_owner(
            (dev, ino(&bin.join("uncompress"))),
            Owner { uid: 7, gid: 7 },
        );

        let joined = broken.join_again(&root, Some(&table)).unwrap();
        assert_eq!(
            ino(&bin.join("perlx")),
            shared[0],
            "perlx joined perl again"
        );
        assert_eq!(fs::symlink_metadata(bin.join("perl")).unwrap().nlink(), 2);
        assert_ne!(
            ino(&bin.join("perl5")),
            shared[0],
            "the written name keeps its copy"
        );
        assert_eq!(fs::read_to_string(bin.join("perl")).unwrap(), "perl");
        assert_ne!(
            ino(&bin.join("uncompress")),
            shared[1],
            "a name with a recorded owner keeps its copy"
        );
        assert_eq!(fs::read_to_string(bin.join("a")).unwrap(), "new");
        assert_eq!(
            ino(&bin.join("b")),
            ino(&bin.join("c")),
            "b and c share a copy"
        );
        assert_ne!(ino(&bin.join("b")), shared[2]);
        assert_eq!(fs::read_to_string(bin.join("c")).unwrap(), "old");
        let leftovers: Vec<_> = fs::read_dir(&bin)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".rbuild-link"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        let kept: HashSet<(u64, u64)> = joined.kept.iter().map(|(new, _)| *new).collect();
        for name in ["perl5", "uncompress", "b"] {
            assert!(
                kept.contains(&(dev, ino(&bin.join(name)))),
                "{name}: {joined:?}"
            );
        }
        let after = root.walk().unwrap();
        let mut changed: Vec<PathBuf> = rbuild_snapshot::Index::from_entries(before)
            .changes_to(&after)
            .into_iter()
            .filter(|c| !matches!(c, Change::Upsert(p) if joined.unchanged.contains(p)))
            .map(|c| match c {
                Change::Upsert(p) | Change::OpaqueDir(p) | Change::Delete(p) => p,
            })
            .collect();
        changed.sort();
        // `uncompress` is unchanged on the disk: its faked owner makes it a change
        // (`recorded_changes`), not the walk.
        assert_eq!(
            changed,
            vec![PathBuf::from("usr/bin/a"), PathBuf::from("usr/bin/perl5")]
        );
    }
}
