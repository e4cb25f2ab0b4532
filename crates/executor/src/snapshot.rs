//! TEMPORARY walk-and-compare snapshotter, private to this crate until `rbuild-snapshot`
//! (being written by the sandbox engineer) is usable; then this module is to be replaced by
//! it. Before a step, [`Index::scan`] records every path's metadata; after it,
//! [`Index::changes`] walks again and reports what differs as `rbuild_layer::Change`s.
//!
//! Change detection: a non-directory changed when its inode, type, mode, owner, size, mtime
//! or ctime changed (ctime catches same-size rewrites within one mtime tick). Directories
//! are compared without ctime: the sandbox's mount stubs are removed afterwards and their
//! parents' mtimes restored, but ctime cannot be restored. A deleted path is reported once,
//! at its top-most deleted ancestor.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rbuild_layer::Change;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    nlink: u64,
    link: Option<PathBuf>,
}

impl Meta {
    fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// With `links_shared`, the files are links into a tree other builds link to as well
    /// (`crate::trees`): their link count, and with it their ctime, changes whenever
    /// another build links or unlinks them, so ctime only counts when the link count is the
    /// same. Nothing is lost: rbuild's own writes into such a root replace files (a new
    /// inode), they never write into a shared one.
    fn same(&self, other: &Meta, links_shared: bool) -> bool {
        let common = self.ino == other.ino
            && self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && self.mtime == other.mtime
            && self.link == other.link;
        if self.is_dir() {
            common
        } else {
            let ctime_counts = !links_shared || self.nlink == other.nlink;
            common && self.size == other.size && (!ctime_counts || self.ctime == other.ctime)
        }
    }
}

/// Metadata of every path under a root, keyed by the path relative to it.
pub(crate) struct Index {
    entries: BTreeMap<PathBuf, Meta>,
    links_shared: bool,
}

impl Index {
    pub(crate) fn scan(root: &Path) -> Result<Index, String> {
        Index::scan_root(root, false)
    }

    /// [`Index::scan`] of a root whose files are links into a shared tree (see
    /// [`Meta::same`]).
    pub(crate) fn scan_shared(root: &Path) -> Result<Index, String> {
        Index::scan_root(root, true)
    }

    fn scan_root(root: &Path, links_shared: bool) -> Result<Index, String> {
        let _t = crate::phases::Phase::Snapshot.timer();
        let entries = match crate::fsops::container_root() {
            // Rootless with subordinate ids, other container users' private directories are
            // closed to this process: container root walks the tree.
            Some(container_root) => {
                let path = root
                    .to_str()
                    .ok_or_else(|| format!("{} is not UTF-8", root.display()))?;
                let encoded = container_root
                    .run_task(crate::root_tasks::SCAN_INDEX, path)
                    .map_err(|e| format!("scanning {}: {e}", root.display()))?;
                decode_entries(&encoded)?
            }
            None => walk(root)?,
        };
        Ok(Index {
            entries,
            links_shared,
        })
    }
}

/// Every path's metadata under `root`, by path relative to it.
fn walk(root: &Path) -> Result<BTreeMap<PathBuf, Meta>, String> {
    let mut entries = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let entry = entry.map_err(|e| format!("scanning {}: {e}", root.display()))?;
        let md = entry
            .metadata()
            .map_err(|e| format!("reading {}: {e}", entry.path().display()))?;
        let link = if md.file_type().is_symlink() {
            Some(
                std::fs::read_link(entry.path())
                    .map_err(|e| format!("reading link {}: {e}", entry.path().display()))?,
            )
        } else {
            None
        };
        let rel = entry
            .path()
            .strip_prefix(root)
            // Cannot fail: walkdir yields only paths below the root it was given.
            .expect("walkdir stays under its root")
            .to_path_buf();
        entries.insert(
            rel,
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

/// [`walk`]'s result as bytes, for a container-root task: per entry the path, the numbers,
/// the symlink target (empty for none), each ended by a NUL (which no path holds).
pub(crate) fn scan_task(root: &str) -> Result<Vec<u8>, String> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for (path, m) in walk(Path::new(root))? {
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
    Ok(out)
}

fn decode_entries(bytes: &[u8]) -> Result<BTreeMap<PathBuf, Meta>, String> {
    use std::os::unix::ffi::OsStrExt;
    let bad = || "the container-root helper sent a malformed index".to_string();
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

impl Index {
    /// What changed between `self` (before) and the root's current state.
    pub(crate) fn changes(&self, root: &Path) -> Result<Vec<Change>, String> {
        let _t = crate::phases::Phase::Snapshot.timer();
        let after = Index::scan(root)?;
        let mut changes = Vec::new();
        for (path, meta) in &after.entries {
            match self.entries.get(path) {
                Some(old) if old.same(meta, self.links_shared) => {}
                _ => changes.push(Change::Upsert(path.clone())),
            }
        }
        let mut deleted_dirs: Vec<&Path> = Vec::new();
        for path in self.entries.keys() {
            if after.entries.contains_key(path) {
                continue;
            }
            if deleted_dirs.iter().any(|d| path.starts_with(d)) {
                continue;
            }
            deleted_dirs.push(path);
            changes.push(Change::Delete(path.clone()));
        }
        Ok(changes)
    }
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
    fn links_made_elsewhere_change_nothing_in_a_shared_root() {
        let dir = tempfile::tempdir().unwrap();
        let (root, other) = (dir.path().join("root"), dir.path().join("other"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(root.join("linked"), "1").unwrap();
        std::fs::write(root.join("replaced"), "1").unwrap();
        let shared = Index::scan_shared(&root).unwrap();
        let strict = Index::scan(&root).unwrap();
        // Another build links the file (its ctime changes), and this one replaces another.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::hard_link(root.join("linked"), other.join("linked")).unwrap();
        std::fs::remove_file(root.join("replaced")).unwrap();
        std::fs::write(root.join("replaced"), "2").unwrap();
        let changes = shared.changes(&root).unwrap();
        assert_eq!(changes, vec![Change::Upsert("replaced".into())]);
        let changes = strict.changes(&root).unwrap();
        assert!(
            changes.contains(&Change::Upsert("linked".into())),
            "a private root still counts ctime: {changes:?}"
        );
    }
}
