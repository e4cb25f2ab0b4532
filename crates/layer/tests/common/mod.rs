//! Helpers shared by the integration tests: a metadata+content snapshot of a tree, and a
//! raw tar builder that can write the malformed and hostile entries real tools refuse to.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What one path of a tree is, for comparing trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub content: Option<Vec<u8>>,
    pub link: Option<PathBuf>,
    pub rdev: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The first path (in sorted order) sharing this file's inode, for hardlink groups.
    pub inode_group: Option<PathBuf>,
    pub mtime: Option<i64>,
}

/// Every path under `root` with its metadata and content. Directory mtimes are included only
/// if `with_mtimes`.
pub fn snapshot(root: &Path, with_mtimes: bool) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut paths = Vec::new();
    collect(root, root, &mut paths);
    paths.sort();
    for path in paths {
        let full = root.join(&path);
        let meta = fs::symlink_metadata(&full).unwrap();
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let inode_group = if ft.is_file() && meta.nlink() > 1 {
            Some(
                inodes
                    .entry((meta.dev(), meta.ino()))
                    .or_insert(path.clone())
                    .clone(),
            )
        } else {
            None
        };
        let mut xattrs = BTreeMap::new();
        if let Ok(names) = xattr::list(&full) {
            for name in names {
                let name = name.to_string_lossy().into_owned();
                if name.starts_with("user.") || name == "security.capability" {
                    xattrs.insert(name.clone(), xattr::get(&full, &name).unwrap().unwrap());
                }
            }
        }
        out.insert(
            path.clone(),
            Node {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                content: ft.is_file().then(|| fs::read(&full).unwrap()),
                link: ft.is_symlink().then(|| fs::read_link(&full).unwrap()),
                rdev: if ft.is_char_device() || ft.is_block_device() {
                    meta.rdev()
                } else {
                    0
                },
                xattrs,
                inode_group,
                mtime: (with_mtimes || !ft.is_dir()).then(|| meta.mtime()),
            },
        );
    }
    out
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        out.push(path.strip_prefix(root).unwrap().to_path_buf());
        if entry.file_type().unwrap().is_dir() {
            collect(root, &path, out);
        }
    }
}

/// Whether this process may mknod devices (root outside a user namespace).
pub fn can_mknod() -> bool {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe");
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mknod does not retain it.
    unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) == 0 }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A tar writer that puts names and link targets into headers verbatim (up to 100 bytes),
/// so tests can build hostile layers the tar crate's checked API refuses.
pub struct RawTar {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for RawTar {
    fn default() -> Self {
        Self::new()
    }
}

impl RawTar {
    pub fn new() -> Self {
        RawTar {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(name: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        let field = &mut header.as_ustar_mut().unwrap().name;
        field[..name.len()].copy_from_slice(name.as_bytes());
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        header.set_size(size);
        header
    }

    pub fn file(mut self, name: &str, content: &[u8]) -> Self {
        let mut header = Self::header(name, tar::EntryType::Regular, 0o644, content.len() as u64);
        header.set_cksum();
        self.builder.append(&header, content).unwrap();
        self
    }

    pub fn dir(mut self, name: &str, mode: u32) -> Self {
        let mut header = Self::header(name, tar::EntryType::Directory, mode, 0);
        header.set_cksum();
        self.builder.append(&header, &[][..]).unwrap();
        self
    }

    pub fn link(mut self, name: &str, kind: tar::EntryType, target: &str) -> Self {
        let mut header = Self::header(name, kind, 0o777, 0);
        let field = &mut header.as_ustar_mut().unwrap().linkname;
        field[..target.len()].copy_from_slice(target.as_bytes());
        header.set_cksum();
        self.builder.append(&header, &[][..]).unwrap();
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

impl RawTar {
    pub fn device(mut self, name: &str, kind: tar::EntryType, major: u32, minor: u32) -> Self {
        let mut header = Self::header(name, kind, 0o640, 0);
        header.set_device_major(major).unwrap();
        header.set_device_minor(minor).unwrap();
        header.set_cksum();
        self.builder.append(&header, &[][..]).unwrap();
        self
    }

    /// A PAX extended header applying to the next entry.
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = key.len() + value.len() + 3;
            let mut len = body + 1;
            while len != body + len.to_string().len() {
                len = body + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let mut header = Self::header(
            "PaxHeaders.0/x",
            tar::EntryType::XHeader,
            0o644,
            data.len() as u64,
        );
        header.set_cksum();
        self.builder.append(&header, data.as_slice()).unwrap();
        self
    }

    pub fn owned_file(mut self, name: &str, content: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut header = Self::header(name, tar::EntryType::Regular, mode, content.len() as u64);
        header.set_uid(uid);
        header.set_gid(gid);
        header.set_cksum();
        self.builder.append(&header, content).unwrap();
        self
    }
}

/// Apply options that work as root (owners preserved) and unprivileged (owners ignored).
pub fn apply_options() -> rbuild_layer::ApplyOptions {
    rbuild_layer::ApplyOptions {
        ownership: if is_root() {
            rbuild_layer::Ownership::Preserve
        } else {
            rbuild_layer::Ownership::Ignore
        },
        ..Default::default()
    }
}
