//! The metadata of one path, as both snapshotters compare it.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Extended attributes overlayfs keeps for itself (`trusted.overlay.*`, or `user.overlay.*`
/// with `userxattr`): never part of an image. Layer writers reading an upperdir skip them.
pub fn is_overlay_private_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// What a snapshot remembers about a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// `st_mode` (file type and permission bits, setuid/setgid/sticky included).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub ino: u64,
    pub nlink: u64,
    pub rdev: u64,
    pub link_target: Option<PathBuf>,
    /// Sorted (name, value) pairs, overlay-private ones excluded.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl EntryMeta {
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    pub fn is_regular(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// What BuildKit's `sameDirent` compares of a directory agrees: type and mode, owner,
    /// device number, xattrs (BuildKit: `security.capability` alone). Not its mtime, which
    /// moves whenever an entry is added or removed (BuildKit: "Avoid including directory
    /// that hasn't been modified").
    pub fn same_directory_metadata(&self, other: &EntryMeta) -> bool {
        self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && self.rdev == other.rdev
            && self.xattrs == other.xattrs
    }

    /// Everything but ctime, inode and link count agrees.
    pub fn same_visible_metadata(&self, other: &EntryMeta) -> bool {
        self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && self.size == other.size
            && self.mtime == other.mtime
            && self.rdev == other.rdev
            && self.link_target == other.link_target
            && self.xattrs == other.xattrs
    }
}

/// Reads `path`'s metadata without following a final symlink.
pub fn read_meta(path: &Path) -> io::Result<EntryMeta> {
    let m = std::fs::symlink_metadata(path)?;
    let link_target = if m.file_type().is_symlink() {
        Some(std::fs::read_link(path)?)
    } else {
        None
    };
    let mut xattrs = Vec::new();
    // Symlinks cannot carry user.* xattrs; the list call on them is wasted work.
    if !m.file_type().is_symlink() {
        if let Ok(names) = xattr::list(path) {
            for name in names {
                let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str()).to_vec();
                if is_overlay_private_xattr(&bytes) {
                    continue;
                }
                let value = xattr::get(path, &name)?.unwrap_or_default();
                xattrs.push((bytes, value));
            }
        }
        xattrs.sort();
    }
    Ok(EntryMeta {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        size: if m.is_dir() { 0 } else { m.size() },
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        ino: m.ino(),
        nlink: m.nlink(),
        rdev: m.rdev(),
        link_target,
        xattrs,
    })
}
