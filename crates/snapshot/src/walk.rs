//! The walk-and-compare snapshotter, for where overlayfs is not available (chroot isolation,
//! old kernels): the step runs on a private copy of the rootfs, indexed before the step and
//! compared after it.
//!
//! Deciding whether a path changed, metadata first:
//! - new path, different file type, mode, owner, size, mtime, rdev, symlink target, xattrs,
//!   link count (a new hardlink to it) or inode (replaced, e.g. `sed -i`) → `Upsert`;
//! - otherwise, a regular file whose ctime changed may have been rewritten with its old size
//!   and mtime restored (`touch -r`, `tar`): only then is its content compared with the
//!   pristine base copy, byte for byte;
//! - a directory or symlink whose only difference is ctime is unchanged (a directory's
//!   content is its children, compared on their own);
//! - a path that is gone → `Delete`; below a deleted path or a path that is no longer a
//!   directory nothing more is reported. A directory replaced wholesale stays as per-child
//!   deletes plus upserts (the overlay snapshotter says `OpaqueDir` instead; same layer
//!   result when applied).

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rbuild_layer::Change;
use rbuild_sandbox::{Rootfs, Stub};

use crate::meta::{read_meta, EntryMeta};
use crate::normalize::{normalize, relative};

/// Metadata of every path of a tree, keyed by path relative to its root.
pub type MetadataIndex = HashMap<PathBuf, EntryMeta>;

/// Indexes the tree at `root` (the root itself excluded).
pub fn index_tree(root: &Path) -> io::Result<MetadataIndex> {
    let mut index = HashMap::new();
    index_dir(root, root, &mut index)?;
    Ok(index)
}

fn index_dir(root: &Path, dir: &Path, index: &mut MetadataIndex) -> io::Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", dir.display())))?;
    for entry in entries {
        let path = entry?.path();
        let meta = read_meta(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
        let is_dir = meta.is_dir();
        index.insert(relative(root, &path), meta);
        if is_dir {
            index_dir(root, &path, index)?;
        }
    }
    Ok(())
}

/// A private rootfs and what it looked like before the step.
#[derive(Debug)]
pub struct WalkSnapshot {
    base: PathBuf,
    work: PathBuf,
    before: MetadataIndex,
}

impl WalkSnapshot {
    /// Copies the pristine rootfs `base` to the new directory `work` and indexes the copy.
    pub fn prepare(base: &Path, work: &Path) -> io::Result<Self> {
        crate::copy::copy_tree(base, work)?;
        Self::index_existing(base, work)
    }

    /// Indexes `work`, an identical private copy of `base` made by the caller.
    pub fn index_existing(base: &Path, work: &Path) -> io::Result<Self> {
        Ok(WalkSnapshot {
            base: base.to_path_buf(),
            work: work.to_path_buf(),
            before: index_tree(work)?,
        })
    }

    /// The rootfs the step runs on.
    pub fn rootfs(&self) -> Rootfs {
        Rootfs::Dir(self.work.clone())
    }

    /// The directory holding the step's result (the layer's source).
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// What the step changed. Removes the sandbox's `stubs` from the copy first.
    pub fn changes(&self, stubs: &[Stub]) -> io::Result<Vec<Change>> {
        rbuild_sandbox::remove_stubs(&self.work, stubs).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("removing sandbox stubs from {}: {e}", self.work.display()),
            )
        })?;
        let after = index_tree(&self.work)?;
        let mut changes = Vec::new();
        for (path, now) in &after {
            let changed = match self.before.get(path) {
                None => true,
                Some(was) => self.differs(path, was, now)?,
            };
            if changed {
                changes.push(Change::Upsert(path.clone()));
            }
        }
        for path in self.before.keys() {
            if after.contains_key(path) {
                continue;
            }
            // Under a path that is now a file (or symlink), the old children are gone with it.
            let under_non_dir = path
                .ancestors()
                .skip(1)
                .filter_map(|a| after.get(a))
                .next()
                .is_some_and(|m| !m.is_dir());
            if !under_non_dir {
                changes.push(Change::Delete(path.clone()));
            }
        }
        Ok(normalize(changes))
    }

    fn differs(&self, path: &Path, was: &EntryMeta, now: &EntryMeta) -> io::Result<bool> {
        if !was.same_visible_metadata(now) || was.ino != now.ino || was.nlink != now.nlink {
            return Ok(true);
        }
        if was.ctime == now.ctime || !now.is_regular() {
            return Ok(false);
        }
        Ok(!same_content(&self.base.join(path), &self.work.join(path))?)
    }
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (Ok(mut fa), Ok(mut fb)) = (std::fs::File::open(a), std::fs::File::open(b)) else {
        return Ok(false);
    };
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
