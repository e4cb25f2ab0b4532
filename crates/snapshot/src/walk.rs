//! The walk-and-compare snapshotter, for steps that write into the rootfs itself (chroot
//! isolation, COPY, WORKDIR, a root build's non-overlay steps): before a step,
//! [`Index::scan`] records every path's metadata; after it, [`Index::changes`] walks again
//! and reports what differs as [`Change`]s.
//!
//! Change detection (these rules decide which files go into a layer, so image digests) is
//! BuildKit's overlay differ's (`sameDirent` in v0.32's `util/overlay/overlay_linux.go`, as
//! continuity's walking differ): a path that existed before is unchanged when its type and
//! mode, owner, device number and xattrs are the same, and for a non-directory also its
//! size, mtime and symlink target. Not compared: inode, link count and ctime (a step that
//! hard-links a file, or copies an identical file over it, changes nothing BuildKit sees),
//! and a directory's mtime ("Avoid including directory that hasn't been modified": a
//! directory is written when its own metadata changed, or as the parent of a change, which
//! the layer writer adds). Two departures, both towards shipping a change: every xattr is
//! compared (BuildKit compares `security.capability` alone), and a regular file whose mtime
//! has no nanoseconds (truncated by a tar), where BuildKit compares the bytes, counts as
//! changed when it was rewritten (a new inode, or a ctime that moved without a link count
//! change): the walk keeps no copy of the old bytes. A deleted path is reported once, at its
//! top-most deleted ancestor. The list is sorted by path and not normalised.

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
    /// `st_rdev`: a device node's number.
    pub rdev: u64,
    /// A symlink's target.
    pub link: Option<PathBuf>,
    /// Sorted (name, value) pairs, overlay-private ones excluded; none read for symlinks.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    /// The record of `path` (not followed), as the walk makes it.
    pub fn of(path: &Path) -> io::Result<Meta> {
        let md = std::fs::symlink_metadata(path)
            .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
        Meta::from_metadata(path, &md)
    }

    /// The record of `path`, whose (not followed) metadata is `md`.
    fn from_metadata(path: &Path, md: &std::fs::Metadata) -> io::Result<Meta> {
        let is_symlink = md.file_type().is_symlink();
        let link = if is_symlink {
            Some(std::fs::read_link(path).map_err(|e| {
                io::Error::new(e.kind(), format!("reading link {}: {e}", path.display()))
            })?)
        } else {
            None
        };
        let xattrs = if is_symlink {
            Vec::new()
        } else {
            read_xattrs(path)?
        };
        Ok(Meta {
            ino: md.ino(),
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            nlink: md.nlink(),
            rdev: md.rdev(),
            link,
            xattrs,
        })
    }

    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    pub fn is_regular(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// BuildKit's `sameDirent`, with the two departures of the module doc. A hard link
    /// added or removed changes a file's link count and ctime and nothing else; so does a
    /// file linked into a tree other builds link to as well (the executor's shared trees).
    pub fn same(&self, other: &Meta) -> bool {
        let common = self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && self.rdev == other.rdev
            && self.xattrs == other.xattrs;
        if !common {
            return false;
        }
        if self.is_dir() {
            return true;
        }
        if self.size != other.size || self.mtime != other.mtime || self.link != other.link {
            return false;
        }
        let truncated_mtime = self.mtime.1 == 0;
        if truncated_mtime && self.is_regular() && self.size > 0 {
            let rewritten =
                self.ino != other.ino || (self.nlink == other.nlink && self.ctime != other.ctime);
            return !rewritten;
        }
        true
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
            // A directory replaced by a file or a link: the layer's entry at the ancestor
            // replaces the whole subtree (as BuildKit's layers do), and a whiteout below a
            // link would name a path through it.
            if path
                .ancestors()
                .skip(1)
                .any(|a| after.get(a).is_some_and(|m| !m.is_dir()))
            {
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
        let Ok(rel) = entry.path().strip_prefix(root) else {
            // walkdir yields only paths below the root it was given.
            continue;
        };
        entries.insert(rel.to_path_buf(), Meta::from_metadata(entry.path(), &md)?);
    }
    Ok(entries)
}

/// The xattrs of `path` (not a symlink) as [`Meta::xattrs`] holds them.
fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let what = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("reading the xattrs of {}: {e}", path.display()),
        )
    };
    let mut xattrs = Vec::new();
    let names = match xattr::list(path) {
        Ok(names) => names,
        // A file system without xattrs has none to compare.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(xattrs),
        Err(e) => return Err(what(e)),
    };
    for name in names {
        let bytes = name.as_bytes().to_vec();
        if crate::meta::is_overlay_private_xattr(&bytes) {
            continue;
        }
        // Removed since listed: not there any more.
        if let Some(value) = xattr::get(path, &name).map_err(what)? {
            xattrs.push((bytes, value));
        }
    }
    xattrs.sort();
    Ok(xattrs)
}

/// `entries` as bytes, for sending from the container-root worker: per entry the path, the
/// numbers, the symlink target (empty for none) and the xattrs (`name=value` in hex,
/// space-separated), each ended by a NUL (which no path holds).
pub fn encode_entries(entries: &Entries) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, m) in entries {
        out.extend_from_slice(path.as_os_str().as_bytes());
        out.push(0);
        out.extend_from_slice(
            format!(
                "{} {} {} {} {} {} {} {} {} {} {}",
                m.ino,
                m.mode,
                m.uid,
                m.gid,
                m.size,
                m.mtime.0,
                m.mtime.1,
                m.ctime.0,
                m.ctime.1,
                m.nlink,
                m.rdev
            )
            .as_bytes(),
        );
        out.push(0);
        if let Some(link) = &m.link {
            out.extend_from_slice(link.as_os_str().as_bytes());
        }
        out.push(0);
        let xattrs: Vec<String> = m
            .xattrs
            .iter()
            .map(|(name, value)| format!("{}={}", hex(name), hex(value)))
            .collect();
        out.extend_from_slice(xattrs.join(" ").as_bytes());
        out.push(0);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
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
        let xattr_field = std::str::from_utf8(fields.next().ok_or_else(bad)?).map_err(|_| bad())?;
        let mut xattrs = Vec::new();
        for pair in xattr_field.split(' ').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').ok_or_else(bad)?;
            xattrs.push((unhex(name).ok_or_else(bad)?, unhex(value).ok_or_else(bad)?));
        }
        let n: Vec<i64> = std::str::from_utf8(numbers)
            .map_err(|_| bad())?
            .split(' ')
            .map(|x| x.parse::<i64>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let [ino, mode, uid, gid, size, mts, mtn, cts, ctn, nlink, rdev] = n[..] else {
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
                rdev: rdev as u64,
                link: (!link.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(link))),
                xattrs,
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

    /// `rm -r /a && ln -s /b /a`: the link replaces the directory, with no whiteout of
    /// `a/d` (a path through the link).
    #[test]
    fn a_directory_replaced_by_a_link_writes_no_whiteout_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(root.join("b")).unwrap();
        std::fs::write(root.join("a/d"), "a").unwrap();
        let before = Index::scan(root).unwrap();
        std::fs::remove_dir_all(root.join("a")).unwrap();
        std::os::unix::fs::symlink("/b", root.join("a")).unwrap();
        let changes = before.changes(root).unwrap();
        assert_eq!(changes, [Change::Upsert("a".into())]);
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

    /// Sets `path`'s mtime (not following a symlink).
    fn set_mtime(path: &Path, secs: i64, nanos: i64) {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let times = [
            libc::timespec {
                tv_sec: secs,
                tv_nsec: nanos,
            },
            libc::timespec {
                tv_sec: secs,
                tv_nsec: nanos,
            },
        ];
        // SAFETY: `c` is a NUL-terminated path and `times` two valid timespecs, both alive
        // for the call.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(rc, 0, "utimensat {}", path.display());
    }

    /// What BuildKit's `sameDirent` leaves out (Kaniko's `Dockerfile_test_meta_arg`,
    /// `_copy_same_file_many_times`, `_user_run`): a directory whose mtime alone moved, a
    /// file replaced by an identical one (new inode, same metadata), a file whose ctime
    /// alone moved; and what it keeps: a directory's new mode, a rewrite of a file whose
    /// mtime has no nanoseconds (BuildKit compares the bytes there, the walk has none).
    #[test]
    fn only_what_buildkit_compares_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["touched", "chmodded", "parent"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        std::fs::write(root.join("parent/old"), "1").unwrap();
        for (name, nanos) in [("same", 5), ("ctime", 5), ("truncated", 0), ("kept", 0)] {
            std::fs::write(root.join(name), "same size").unwrap();
            set_mtime(&root.join(name), 1_000_000, nanos);
        }
        let before = Index::scan(root).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        set_mtime(&root.join("touched"), 5, 0);
        std::fs::set_permissions(
            root.join("chmodded"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        std::fs::write(root.join("parent/new"), "n").unwrap();
        for name in ["same", "truncated"] {
            std::fs::remove_file(root.join(name)).unwrap();
            std::fs::write(root.join(name), "same size").unwrap();
        }
        set_mtime(&root.join("same"), 1_000_000, 5);
        set_mtime(&root.join("truncated"), 1_000_000, 0);
        // A chmod to the mode it has: the ctime moves, nothing else.
        std::fs::set_permissions(
            root.join("ctime"),
            std::fs::metadata(root.join("ctime")).unwrap().permissions(),
        )
        .unwrap();
        let changes = before.changes(root).unwrap();
        assert_eq!(
            changes,
            vec![
                Change::Upsert("chmodded".into()),
                Change::Upsert("parent/new".into()),
                Change::Upsert("truncated".into()),
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
        xattr::set(root.join("d/f"), "user.a b=c", b"v\0 =\xff").unwrap();
        xattr::set(root.join("d/f"), "user.empty", b"").unwrap();
        let entries = walk(root).unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[Path::new("d/f")].xattrs.len(), 2);
        assert_eq!(decode_entries(&encode_entries(&entries)).unwrap(), entries);
        for garbage in [
            &b"path\0"[..],
            b"path\x001 2 3\0\0",
            b"path\0x 2 3 4 5 6 7 8 9 10 11\0\0\0",
            b"path\x001 2 3 4 5 6 7 8 9 10\0\0\0",
            b"path\x001 2 3 4 5 6 7 8 9 10 11\0\0user=7\0",
        ] {
            assert_eq!(
                decode_entries(garbage).unwrap_err().kind(),
                io::ErrorKind::InvalidData,
                "{garbage:?}"
            );
        }
    }
}
