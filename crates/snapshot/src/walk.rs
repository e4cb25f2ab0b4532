//! The walk-and-compare snapshotter, for steps that write into the rootfs itself (chroot
//! isolation, COPY, WORKDIR, a root build's non-overlay steps): before a step,
//! [`Index::scan`] records every path's metadata; after it, [`Index::changes`] walks again
//! and reports what differs as [`Change`]s.
//!
//! Change detection (these rules decide which files go into a layer, so image digests):
//! a non-directory changed when its inode, type, mode, owner, size, mtime or ctime changed
//! (ctime catches same-size rewrites within one mtime tick, and xattr changes), ctime only
//! when its link count did not change (a new or removed hard link alone is no change). Directories
//! are compared without ctime: the sandbox's mount stubs are removed afterwards and their
//! parents' mtimes restored, but ctime cannot be restored. A deleted path is reported once,
//! at its top-most deleted ancestor. The list is sorted by path and not normalised: a
//! parent directory whose metadata did not change is not listed.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rbuild_layer::Change;

/// What the walk snapshotter records of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub ino: u64,
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub nlink: u64,
    /// A symlink's target.
    pub link: Option<PathBuf>,
}

impl Meta {
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    pub fn is_regular(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// A non-directory's ctime counts only when its link count is the same: a step that
    /// hard-links a file of the root (`ln old new`) or removes one of its names changes the
    /// link count and so the ctime, and nothing else of it: BuildKit's overlay differ sees no
    /// change there (the new name alone is written, as a regular file), and the same goes for
    /// files of a root linked into a tree other builds link to as well (the executor's shared
    /// trees). What a changed link count could hide is a change of xattrs alone, or a rewrite
    /// that keeps size and mtime, in the same step as the link.
    fn same(&self, other: &Meta) -> bool {
        let common = self.ino == other.ino
            && self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && self.mtime == other.mtime
            && self.link == other.link;
        if self.is_dir() {
            common
        } else {
            let ctime_counts = self.nlink == other.nlink;
            common && self.size == other.size && (!ctime_counts || self.ctime == other.ctime)
        }
    }
}

/// Every path's metadata under a root, keyed by the path relative to it (the root itself
/// excluded).
pub type Entries = BTreeMap<PathBuf, Meta>;

/// Metadata of every path under a root, taken before a step.
#[derive(Debug, Clone)]
pub struct Index {
    entries: Entries,
}

impl Index {
    /// Indexes `root` by walking it here.
    pub fn scan(root: &Path) -> io::Result<Index> {
        Ok(Index::from_entries(walk(root)?))
    }

    /// An index of entries walked elsewhere (by container root, say, which can read
    /// directories this process cannot).
    pub fn from_entries(entries: Entries) -> Index {
        Index { entries }
    }

    /// The indexed paths and their metadata.
    pub fn entries(&self) -> &Entries {
        &self.entries
    }

    /// What changed between `self` (before) and the root's current state, walked here.
    pub fn changes(&self, root: &Path) -> io::Result<Vec<Change>> {
        Ok(self.changes_to(&walk(root)?))
    }

    /// What changed between `self` (before) and `after`, the root's entries now.
    pub fn changes_to(&self, after: &Entries) -> Vec<Change> {
        let mut changes = Vec::new();
        for (path, meta) in after {
            match self.entries.get(path) {
                Some(old) if old.same(meta) => {}
                _ => changes.push(Change::Upsert(path.clone())),
            }
        }
        let mut deleted_dirs: Vec<&Path> = Vec::new();
        for path in self.entries.keys() {
            if after.contains_key(path) {
                continue;
            }
            if deleted_dirs.iter().any(|d| path.starts_with(d)) {
                continue;
            }
            deleted_dirs.push(path);
            changes.push(Change::Delete(path.clone()));
        }
        changes
    }
}

/// Every path's metadata under `root`, by path relative to it.
pub fn walk(root: &Path) -> io::Result<Entries> {
    let mut entries = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let entry = entry.map_err(|e| {
            let kind = e.io_error().map_or(io::ErrorKind::Other, |io| io.kind());
            io::Error::new(kind, format!("scanning {}: {e}", root.display()))
        })?;
        let md = entry
            .metadata()
            .map_err(|e| io::Error::other(format!("reading {}: {e}", entry.path().display())))?;
        let link = if md.file_type().is_symlink() {
            Some(std::fs::read_link(entry.path()).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("reading link {}: {e}", entry.path().display()),
                )
            })?)
        } else {
            None
        };
        let Ok(rel) = entry.path().strip_prefix(root) else {
            // walkdir yields only paths below the root it was given.
            continue;
        };
        entries.insert(
            rel.to_path_buf(),
            Meta {
                ino: md.ino(),
                mode: md.mode(),
                uid: md.uid(),
                gid: md.gid(),
                size: md.size(),
                mtime: (md.mtime(), md.mtime_nsec()),
                ctime: (md.ctime(), md.ctime_nsec()),
                nlink: md.nlink(),
                link,
            },
        );
    }
    Ok(entries)
}

/// `entries` as bytes, for sending from the container-root worker: per entry the path, the
/// numbers, the symlink target (empty for none), each ended by a NUL (which no path holds).
pub fn encode_entries(entries: &Entries) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, m) in entries {
        out.extend_from_slice(path.as_os_str().as_bytes());
        out.push(0);
        out.extend_from_slice(
            format!(
                "{} {} {} {} {} {} {} {} {} {}",
                m.ino,
                m.mode,
                m.uid,
                m.gid,
                m.size,
                m.mtime.0,
                m.mtime.1,
                m.ctime.0,
                m.ctime.1,
                m.nlink
            )
            .as_bytes(),
        );
        out.push(0);
        if let Some(link) = &m.link {
            out.extend_from_slice(link.as_os_str().as_bytes());
        }
        out.push(0);
    }
    out
}

/// The inverse of [`encode_entries`]; `InvalidData` for bytes it did not write.
pub fn decode_entries(bytes: &[u8]) -> io::Result<Entries> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the container-root worker sent a malformed index",
        )
    };
    let mut fields = bytes.split(|&b| b == 0);
    let mut entries = BTreeMap::new();
    while let Some(path) = fields.next() {
        if path.is_empty() {
            break; // the split after the last NUL
        }
        let numbers = fields.next().ok_or_else(bad)?;
        let link = fields.next().ok_or_else(bad)?;
        let n: Vec<i64> = std::str::from_utf8(numbers)
            .map_err(|_| bad())?
            .split(' ')
            .map(|x| x.parse::<i64>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let [ino, mode, uid, gid, size, mts, mtn, cts, ctn, nlink] = n[..] else {
            return Err(bad());
        };
        entries.insert(
            PathBuf::from(std::ffi::OsStr::from_bytes(path)),
            Meta {
                ino: ino as u64,
                mode: mode as u32,
                uid: uid as u32,
                gid: gid as u32,
                size: size as u64,
                mtime: (mts, mtn),
                ctime: (cts, ctn),
                nlink: nlink as u64,
                link: (!link.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(link))),
            },
        );
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_added_modified_and_deleted_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/keep"), "1").unwrap();
        std::fs::write(root.join("a/b/edit"), "1").unwrap();
        std::fs::create_dir_all(root.join("gone/deep")).unwrap();
        let before = Index::scan(root).unwrap();
        std::fs::write(root.join("a/b/edit"), "2").unwrap();
        std::fs::write(root.join("new"), "x").unwrap();
        std::fs::remove_dir_all(root.join("gone")).unwrap();
        let changes = before.changes(root).unwrap();
        assert!(
            changes.contains(&Change::Upsert("a/b/edit".into())),
            "{changes:?}"
        );
        assert!(
            changes.contains(&Change::Upsert("new".into())),
            "{changes:?}"
        );
        assert!(
            changes.contains(&Change::Delete("gone".into())),
            "{changes:?}"
        );
        assert!(
            !changes.contains(&Change::Delete("gone/deep".into())),
            "{changes:?}"
        );
        assert!(
            !changes.contains(&Change::Upsert("a/b/keep".into())),
            "{changes:?}"
        );
    }

    #[test]
    fn a_new_or_removed_hard_link_alone_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (root, other) = (dir.path().join("root"), dir.path().join("other"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(root.join("linked"), "1").unwrap();
        std::fs::write(root.join("linked-twice"), "1").unwrap();
        std::fs::hard_link(root.join("linked-twice"), root.join("second-name")).unwrap();
        std::fs::write(root.join("replaced"), "1").unwrap();
        std::fs::write(root.join("linked-and-chmodded"), "1").unwrap();
        let before = Index::scan(&root).unwrap();
        // A step (or another build, in a shared tree) links and unlinks files: their link
        // count and ctime change. Another file is replaced, one linked and chmodded.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::hard_link(root.join("linked"), root.join("new-name")).unwrap();
        std::fs::hard_link(root.join("linked"), other.join("linked")).unwrap();
        std::fs::remove_file(root.join("second-name")).unwrap();
        std::fs::remove_file(root.join("replaced")).unwrap();
        std::fs::write(root.join("replaced"), "2").unwrap();
        std::fs::hard_link(root.join("linked-and-chmodded"), other.join("x")).unwrap();
        std::fs::set_permissions(
            root.join("linked-and-chmodded"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let changes = before.changes(&root).unwrap();
        assert_eq!(
            changes,
            vec![
                Change::Upsert("linked-and-chmodded".into()),
                Change::Upsert("new-name".into()),
                Change::Upsert("replaced".into()),
                Change::Delete("second-name".into()),
            ]
        );
    }

    #[test]
    fn an_index_survives_the_encoding_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/f"), "1").unwrap();
        std::os::unix::fs::symlink("../elsewhere", root.join("d/link")).unwrap();
        std::fs::write(root.join(std::ffi::OsStr::from_bytes(b"odd\xffname")), "").unwrap();
        let entries = walk(root).unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(decode_entries(&encode_entries(&entries)).unwrap(), entries);
        for garbage in [
            &b"path\0"[..],
            b"path\x001 2 3\0\0",
            b"path\0x 2 3 4 5 6 7 8 9 10\0\0",
        ] {
            assert_eq!(
                decode_entries(garbage).unwrap_err().kind(),
                io::ErrorKind::InvalidData,
                "{garbage:?}"
            );
        }
    }
}
