//! COPY into an empty tree: when the stage's root filesystem has not been put on disk yet
//! (the layers below the COPY were cache hits), the COPY writes into an empty directory
//! instead of linking the parent's whole tree into the stage's rootfs and walking it before
//! and after. Before each source is copied, the parent's entries the copy can reach — the
//! destination's path with the symlinks on the way (followed inside the root as the copy
//! follows them), the entries a copied directory's contents land on, a copied file's
//! target — are made in the empty tree as stand-ins (`rbuild_snapshot::replicate`: same
//! type, owner, mode, size, times and xattrs, no bytes), read from the parent's shared
//! extracted tree, which is only read. The copy then sees what it would have seen in the
//! full rootfs, and the walk of the small tree against the stand-ins reports exactly the
//! changes the walk of the full rootfs would have: the same layer, the same diff id.
//!
//! What the stand-ins cannot stand for makes [`Skeleton`] give up ([`NoSkeleton`]), and the
//! COPY runs on the full rootfs as before: a symlink where a copied directory lands (the
//! copy may follow it), a socket in the parent's tree, a name with a `/` in it.

use std::io;
use std::path::{Component, Path, PathBuf};

use rbuild_snapshot::Entries;

use crate::fsops;
use crate::sources::Source;

/// Why the empty tree cannot stand for the parent's (the COPY then runs on the full
/// rootfs); said in no error, as the full rootfs gives the same result.
#[derive(Debug)]
pub(crate) struct NoSkeleton(#[allow(dead_code)] pub String);

impl From<io::Error> for NoSkeleton {
    fn from(e: io::Error) -> Self {
        NoSkeleton(e.to_string())
    }
}

/// The empty tree a COPY writes into, and the stand-ins made in it so far.
pub(crate) struct Skeleton<'a> {
    /// The parent's tree: read, never written.
    view: &'a Path,
    /// Where the copy writes.
    out: &'a Path,
    /// The stand-ins as made (the walk's "before").
    before: Entries,
}

impl<'a> Skeleton<'a> {
    pub(crate) fn new(view: &'a Path, out: &'a Path) -> Self {
        Skeleton {
            view,
            out,
            before: Entries::new(),
        }
    }

    /// The stand-ins, as the walk's "before" of the copy.
    pub(crate) fn into_before(self) -> Entries {
        self.before
    }

    /// Makes the stand-ins copying `source` to `dest` (a container path; `dest_is_dir`: it
    /// names a directory) reaches, as the copy sees the tree right now.
    pub(crate) fn prepare_source(
        &mut self,
        source: &Source,
        dest: &str,
        dest_is_dir: bool,
    ) -> Result<(), NoSkeleton> {
        self.resolve(dest)?;
        // The copy decides on the followed source (`copy_source`).
        let is_dir = std::fs::metadata(&source.host)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        if !is_dir {
            return self.prepare_leaf(dest, dest_is_dir, &source.base_name());
        }
        match rbuild_inroot::host_path_in_root(self.out, dest)? {
            Some(dir) if dir.is_dir() => {
                let rel = self.relative(&dir)?;
                self.prepare_tree(&source.host, &rel)
            }
            // Made by the copy: nothing of the parent's below it.
            _ => Ok(()),
        }
    }

    /// The stand-ins for a single file named `name` copied to `dest` (`Target::leaf`).
    pub(crate) fn prepare_leaf(
        &mut self,
        dest: &str,
        dest_is_dir: bool,
        name: &str,
    ) -> Result<(), NoSkeleton> {
        if name.contains('/') {
            return Err(NoSkeleton(format!("the name {name:?} has a slash")));
        }
        self.resolve(dest)?;
        let into_dir = dest_is_dir || fsops::is_dir_in_root(self.out, dest);
        let (parent, file) = if into_dir {
            (dest.to_string(), name.to_string())
        } else {
            crate::copy::split_dest(dest)
        };
        if file.is_empty() {
            return Ok(());
        }
        self.resolve(&parent)?;
        match rbuild_inroot::host_path_in_root(self.out, &parent)? {
            Some(dir) if dir.is_dir() => {
                let rel = self.relative(&dir)?.join(file);
                self.ensure(&rel)
            }
            _ => Ok(()),
        }
    }

    fn relative(&self, host: &Path) -> Result<PathBuf, NoSkeleton> {
        host.strip_prefix(self.out)
            .map(Path::to_path_buf)
            .map_err(|_| NoSkeleton(format!("{} is outside the tree", host.display())))
    }

    /// Walks container path `path` as the copy's resolver does (symlinks followed inside
    /// the root, `..` never above it), making the stand-in of every entry on the way.
    fn resolve(&mut self, path: &str) -> Result<(), NoSkeleton> {
        let mut todo: Vec<String> = fsops::clean_components(path);
        todo.reverse();
        let mut current = PathBuf::new();
        let mut links = 0;
        while let Some(name) = todo.pop() {
            match name.as_str() {
                "" | "." => continue,
                ".." => {
                    current.pop();
                    continue;
                }
                _ => {}
            }
            let rel = current.join(&name);
            self.ensure(&rel)?;
            let md = match std::fs::symlink_metadata(self.out.join(&rel)) {
                Ok(md) => md,
                // The rest is made by the copy.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            if md.is_dir() {
                current = rel;
            } else if md.file_type().is_symlink() {
                links += 1;
                if links > rbuild_inroot::MAX_SYMLINKS {
                    return Err(NoSkeleton(format!("too many symlinks resolving {path}")));
                }
                let target = std::fs::read_link(self.out.join(&rel))?;
                if target.is_absolute() {
                    current = PathBuf::new();
                }
                // The target's components come next, in order.
                let mut parts: Vec<String> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                parts.reverse();
                todo.extend(parts);
            } else {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The stand-ins for directory `src`'s contents copied into `rel` (a directory of the
    /// tree), recursively where both sides have a directory.
    fn prepare_tree(&mut self, src: &Path, rel: &Path) -> Result<(), NoSkeleton> {
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            let name = entry.file_name();
            let r = rel.join(&name);
            self.ensure(&r)?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            match std::fs::symlink_metadata(self.out.join(&r)) {
                Ok(md) if md.is_dir() => self.prepare_tree(&src.join(&name), &r)?,
                Ok(md) if md.file_type().is_symlink() => {
                    return Err(NoSkeleton(format!(
                        "/{} is a symlink where a directory is copied",
                        r.display()
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Makes the stand-in of the parent's entry at `rel` (a path of real directories in the
    /// tree), unless the tree has something there already (a stand-in, or what the copy
    /// wrote) or the parent has nothing there.
    fn ensure(&mut self, rel: &Path) -> Result<(), NoSkeleton> {
        let dst = self.out.join(rel);
        match std::fs::symlink_metadata(&dst) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        // The parent's entry, reached without following anything: every directory above
        // it must be a real directory there (else the parent has nothing at this path:
        // the copy made the directory the path goes through).
        let mut above = PathBuf::new();
        let mut components = rel.components().peekable();
        while let Some(c) = components.next() {
            if components.peek().is_none() {
                break;
            }
            above.push(c);
            match std::fs::symlink_metadata(self.view.join(&above)) {
                Ok(md) if md.is_dir() => {}
                _ => return Ok(()),
            }
        }
        let src = self.view.join(rel);
        match std::fs::symlink_metadata(&src) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let made = rbuild_snapshot::replicate(&src, &dst)?;
        self.before.insert(rel.to_path_buf(), made);
        Ok(())
    }
}
