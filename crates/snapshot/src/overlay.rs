//! The overlay snapshotter: the step writes into a fresh upperdir of an overlay mounted by
//! the sandbox helper; afterwards the upperdir *is* the change set.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rbuild_layer::Change;
use rbuild_sandbox::{Rootfs, Stub};

use crate::meta::read_meta;
use crate::normalize::{normalize, relative};

/// The three directories an overlay step needs, under one parent.
#[derive(Debug, Clone)]
pub struct OverlayDirs {
    pub upperdir: PathBuf,
    pub workdir: PathBuf,
    pub merged: PathBuf,
}

impl OverlayDirs {
    /// Creates `upper`, `work` and `merged` in `parent` (which must be on a filesystem that
    /// can hold an overlay upperdir: not overlayfs itself).
    pub fn create(parent: &Path) -> io::Result<Self> {
        let dirs = OverlayDirs {
            upperdir: parent.join("upper"),
            workdir: parent.join("work"),
            merged: parent.join("merged"),
        };
        for dir in [&dirs.upperdir, &dirs.workdir, &dirs.merged] {
            std::fs::create_dir(dir).map_err(|e| {
                io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))
            })?;
        }
        Ok(dirs)
    }

    /// The sandbox rootfs for a step on `lowerdirs` (base first).
    pub fn rootfs(&self, lowerdirs: Vec<PathBuf>) -> Rootfs {
        Rootfs::Overlay {
            lowerdirs,
            upperdir: self.upperdir.clone(),
            workdir: self.workdir.clone(),
            merged: self.merged.clone(),
        }
    }
}

fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    ["user.overlay.opaque", "trusted.overlay.opaque"]
        .iter()
        .any(|name| matches!(xattr::get(path, name), Ok(Some(v)) if v == b"y"))
}

/// The top-most lower entry at `rel`, honouring whiteouts and opaque dirs of upper lowers.
fn lower_entry(lowerdirs: &[PathBuf], rel: &Path) -> Option<PathBuf> {
    for lower in lowerdirs.iter().rev() {
        let candidate = lower.join(rel);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if is_whiteout(&m) => return None,
            Ok(_) => return Some(candidate),
            Err(_) => {
                // An opaque ancestor in this lower hides everything below it in lower ones.
                let hidden = rel
                    .ancestors()
                    .skip(1)
                    .any(|a| !a.as_os_str().is_empty() && is_opaque(&lower.join(a)));
                if hidden {
                    return None;
                }
            }
        }
    }
    None
}

/// The names of the lowers' visible entries in the directory `rel` (merged as overlayfs
/// shows them: whiteouts and opaque directories of upper lowers hide lower ones' entries).
fn lower_names(
    lowers: &[PathBuf],
    rel: &Path,
) -> io::Result<std::collections::BTreeSet<std::ffi::OsString>> {
    let mut names = std::collections::BTreeSet::new();
    for lower in lowers {
        let dir = lower.join(rel);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("reading {}: {e}", dir.display()),
                ))
            }
        };
        for entry in entries {
            names.insert(entry?.file_name());
        }
    }
    names.retain(|name| lower_entry(lowers, &rel.join(name)).is_some());
    Ok(names)
}

/// Converts an upperdir into changes. `lowerdirs` (base first) are consulted to drop
/// directories that were only copied up (e.g. for a stub) and are otherwise unchanged, and
/// for a directory that replaces a lower directory wholesale (opaque: `rm -rf /d && mkdir
/// /d`), to list what of the lower one is gone: one `Delete` per entry, as BuildKit v0.32's
/// differ writes one whiteout per removed entry rather than an opaque marker (both give the
/// same tree). `stubs` are removed from the upperdir first.
pub fn overlay_changes(
    upperdir: &Path,
    lowerdirs: &[PathBuf],
    stubs: &[Stub],
) -> io::Result<Vec<Change>> {
    rbuild_sandbox::remove_stubs(upperdir, stubs).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("removing sandbox stubs from {}: {e}", upperdir.display()),
        )
    })?;
    let mut changes = Vec::new();
    collect(upperdir, upperdir, lowerdirs, false, &mut changes)?;
    Ok(normalize(changes))
}

/// Walks `dir` of the upperdir; returns whether anything below it is a change.
/// `replacing`: `dir` replaces the lowers' directory at its path (it is opaque, or inside
/// one and a directory in the lowers too): none of the lowers' entries below shows through,
/// so each of its entries is new and each lower entry it lacks is deleted.
fn collect(
    upper: &Path,
    dir: &Path,
    lowers: &[PathBuf],
    replacing: bool,
    out: &mut Vec<Change>,
) -> io::Result<bool> {
    let mut any = false;
    if replacing {
        let rel = relative(upper, dir);
        for name in lower_names(lowers, &rel)? {
            if std::fs::symlink_metadata(dir.join(&name)).is_err() {
                out.push(Change::Delete(rel.join(name)));
                any = true;
            }
        }
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let rel = relative(upper, &path);
        let meta = std::fs::symlink_metadata(&path)?;
        if is_whiteout(&meta) {
            out.push(Change::Delete(rel));
            any = true;
            continue;
        }
        let lower = lower_entry(lowers, &rel);
        if !meta.is_dir() {
            // overlayfs copies a lower file up whole when the step links it (`ln lower
            // new`), changing only its ctime and link count: BuildKit's differ sees no
            // change there, and writes the new name alone, as a regular file. (In a
            // replaced directory every file is new.)
            let copied_up_unchanged = match &lower {
                Some(lower) if !replacing => same_non_directory(&path, lower)?,
                _ => false,
            };
            if !copied_up_unchanged {
                out.push(Change::Upsert(rel));
                any = true;
            }
            continue;
        }
        let lower_is_dir = lower
            .as_ref()
            .and_then(|p| std::fs::symlink_metadata(p).ok())
            .is_some_and(|m| m.is_dir());
        let mark = out.len();
        out.push(Change::Upsert(rel.clone()));
        // A directory replacing a lower directory: marked opaque by overlayfs, or any
        // directory made inside a replaced one where the lowers have one too.
        let replaces = lower_is_dir && (replacing || is_opaque(&path));
        let below = collect(upper, &path, lowers, replaces, out)?;
        // A directory copied up (for a change below it, a stub, a `touch`) is unchanged
        // when its own metadata but the mtime is (BuildKit's `sameDirent`); one with changes
        // below is listed all the same, as their parent.
        let unchanged_copy_up = !below
            && match &lower {
                Some(lower) if lower_is_dir => {
                    read_meta(&path)?.same_directory_metadata(&read_meta(lower)?)
                }
                _ => false,
            };
        if unchanged_copy_up {
            out.remove(mark);
        } else {
            any = true;
        }
    }
    Ok(any)
}

/// Whether the non-directory `upper` equals `lower`: the same metadata (type, mode, owner,
/// size, mtime, device number, symlink target, xattrs; not ctime, inode or link count) and,
/// for a regular file, the same bytes.
fn same_non_directory(upper: &Path, lower: &Path) -> io::Result<bool> {
    let read = |path: &Path| {
        read_meta(path)
            .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))
    };
    let (upper_meta, lower_meta) = (read(upper)?, read(lower)?);
    if !upper_meta.same_visible_metadata(&lower_meta) {
        return Ok(false);
    }
    if !upper_meta.is_regular() {
        return Ok(true);
    }
    same_bytes(upper, lower)
}

/// Whether two regular files hold the same bytes (their sizes are known to be equal).
fn same_bytes(a: &Path, b: &Path) -> io::Result<bool> {
    let open = |path: &Path| {
        std::fs::File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))
    };
    let (mut a_file, mut b_file) = (open(a)?, open(b)?);
    let mut a_buf = vec![0u8; 64 * 1024];
    let mut b_buf = vec![0u8; 64 * 1024];
    loop {
        let n = read_full(&mut a_file, &mut a_buf)?;
        let m = read_full(&mut b_file, &mut b_buf[..n.max(1)])?;
        if n != m || a_buf[..n] != b_buf[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends; returns how many bytes were read.
fn read_full(file: &mut impl std::io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Moves what an overlay step left in `upper` into `root`, the step's only lower
/// directory, so that `root` becomes the step's result without extracting the layer
/// written from it: one rename per new or changed file instead of decompressing and writing
/// it all again. `changes` are the upper directory's (from [`overlay_changes`], which has
/// removed the stubs). Directories get the upper's owner, mode, xattrs and times; deleted
/// paths and the old contents of opaque directories go. Every path is checked with
/// `lstat` and the list has each ancestor before its children, so nothing follows a symlink
/// out of `root`. Needs the permissions of root over both trees. On error `root` is half
/// merged and must not be used.
pub fn merge_upper(upper: &Path, root: &Path, changes: &[Change]) -> io::Result<()> {
    let context = |what: &str, path: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
    };
    // A directory the root lacks came whole from the step: everything below it is a new
    // entry of the upper directory and a change (no lower entry to compare with, no
    // whiteout), so it moves by one rename instead of one per entry (the large-diff row's
    // 10,000 files). Only overlayfs's own xattrs are then taken off each entry below.
    let whole = new_directories(root, changes).map_err(|e| context("reading", root, e))?;
    let under_whole = |rel: &Path| rel.ancestors().skip(1).any(|a| whole.contains(a));
    // Every directory's metadata is read before anything moves: moving an entry out of an
    // upper directory changes that directory's times, which are the layer's. The explicit
    // directories (changes) and the ones above a change that are not changes themselves
    // (the layer writer writes those from the upper directory too, with their times).
    let mut upper_dirs: std::collections::BTreeMap<&Path, (std::fs::Metadata, bool)> =
        std::collections::BTreeMap::new();
    for change in changes {
        let rel = match change {
            Change::Upsert(rel) | Change::Delete(rel) | Change::OpaqueDir(rel) => rel.as_path(),
        };
        if under_whole(rel) {
            continue;
        }
        if !matches!(change, Change::Delete(_)) {
            if let Ok(meta) = std::fs::symlink_metadata(upper.join(rel)) {
                if meta.is_dir() {
                    upper_dirs.insert(rel, (meta, true));
                }
            }
        }
        for parent in rel.ancestors().skip(1) {
            if parent.as_os_str().is_empty() || upper_dirs.contains_key(parent) {
                continue;
            }
            if let Ok(meta) = std::fs::symlink_metadata(upper.join(parent)) {
                if meta.is_dir() {
                    upper_dirs.insert(parent, (meta, false));
                }
            }
        }
    }
    let mut dirs: Vec<&Path> = Vec::new();
    for change in changes {
        if let Change::Upsert(rel) = change {
            if whole.contains(rel.as_path()) {
                let target = root.join(rel);
                std::fs::rename(upper.join(rel), &target).map_err(|e| context("moving", rel, e))?;
                strip_overlay_xattrs(&target);
                continue;
            }
            if under_whole(rel) {
                strip_overlay_xattrs(&root.join(rel));
                continue;
            }
        }
        match change {
            Change::Delete(rel) => {
                remove_path(&root.join(rel)).map_err(|e| context("removing", rel, e))?;
            }
            Change::OpaqueDir(rel) => {
                let target = root.join(rel);
                remove_path(&target).map_err(|e| context("removing", rel, e))?;
                std::fs::create_dir(&target).map_err(|e| context("creating", rel, e))?;
                dirs.push(rel);
            }
            Change::Upsert(rel) => {
                let source = upper.join(rel);
                let target = root.join(rel);
                let meta =
                    std::fs::symlink_metadata(&source).map_err(|e| context("reading", rel, e))?;
                let existing = std::fs::symlink_metadata(&target);
                if meta.is_dir() {
                    match existing {
                        Ok(m) if m.is_dir() => {}
                        Ok(_) => {
                            remove_path(&target).map_err(|e| context("removing", rel, e))?;
                            std::fs::create_dir(&target)
                                .map_err(|e| context("creating", rel, e))?;
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            std::fs::create_dir(&target)
                                .map_err(|e| context("creating", rel, e))?;
                        }
                        Err(e) => return Err(context("reading", rel, e)),
                    }
                    dirs.push(rel);
                } else {
                    if existing.is_ok_and(|m| m.is_dir()) {
                        std::fs::remove_dir_all(&target)
                            .map_err(|e| context("removing", rel, e))?;
                    }
                    // Replaces a file or symlink there; hard links between moved files
                    // stay links (the inode moves).
                    std::fs::rename(&source, &target).map_err(|e| context("moving", rel, e))?;
                    strip_overlay_xattrs(&target);
                }
            }
        }
    }
    // A directory moved whole keeps its own metadata; renaming it may have touched its
    // times (its `..` entry changed), which are the layer's.
    for rel in &whole {
        if let Some((meta, _)) = upper_dirs.get(rel) {
            crate::copy::set_times(&root.join(rel), meta)
                .map_err(|e| context("setting times of", rel, e))?;
        }
    }
    // Metadata last: moving entries in changes a directory's times.
    for rel in dirs.iter().rev() {
        let source = upper.join(rel);
        let target = root.join(rel);
        let meta = match upper_dirs.get(rel) {
            Some((meta, _)) => meta.clone(),
            None => std::fs::symlink_metadata(&source).map_err(|e| context("reading", rel, e))?,
        };
        if let Ok(names) = xattr::list(&target) {
            for name in names {
                let private = crate::meta::is_overlay_private_xattr(name.as_encoded_bytes());
                if private || !matches!(xattr::get(&source, &name), Ok(Some(_))) {
                    let _ = xattr::remove(&target, &name);
                }
            }
        }
        crate::copy::copy_owner_mode_xattrs(&source, &target, &meta)?;
        strip_overlay_xattrs(&target);
        crate::copy::set_times(&target, &meta).map_err(|e| context("setting times of", rel, e))?;
    }
    // The directories above a change that are not changes themselves: moving entries in
    // changed their times in the root, which must read as the layer does (a layer written
    // later from the root hashes the same). Times only: the rest is the lower's already.
    for (rel, (meta, explicit)) in upper_dirs.iter().rev() {
        if *explicit {
            continue;
        }
        let target = root.join(rel);
        if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            crate::copy::set_times(&target, meta)
                .map_err(|e| context("setting times of", rel, e))?;
        }
    }
    Ok(())
}

/// The outermost entries `changes` upserts that `root` lacks (not even as another kind of
/// entry) and, for a directory, below which `changes` has nothing but upserts: the step
/// made them, so the upper directory holds exactly their listed entries.
fn new_directories<'c>(
    root: &Path,
    changes: &'c [Change],
) -> io::Result<std::collections::BTreeSet<&'c Path>> {
    let mut whole = std::collections::BTreeSet::new();
    for change in changes {
        let Change::Upsert(rel) = change else {
            continue;
        };
        if rel.ancestors().skip(1).any(|a| whole.contains(a)) {
            continue;
        }
        // Its parent is in the root (the list has each ancestor before its children, and
        // an ancestor the root lacked would be in `whole`): a missing name is new.
        match std::fs::symlink_metadata(root.join(rel)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // A parent the root has as a file (the step replaced it by a directory): the
            // entry goes the usual way, after the file is removed.
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => continue,
            Err(e) => return Err(e),
            Ok(_) => continue,
        }
        // A new file moves by its rename as before; a new directory with all below it.
        whole.insert(rel.as_path());
    }
    // A delete or an opaque directory below one (not possible from an overlay, where a
    // new directory has no lower entry to hide) keeps it entry by entry.
    for change in changes {
        if let Change::Delete(rel) | Change::OpaqueDir(rel) = change {
            let below: Vec<&Path> = rel
                .ancestors()
                .skip(1)
                .filter(|a| whole.contains(a))
                .collect();
            for a in below {
                whole.remove(a);
            }
        }
    }
    Ok(whole)
}

/// Drops overlayfs's own xattrs (a copy-up's origin, say) from a path moved out of an
/// upper directory: the tree may be a lower directory of the next overlay step.
fn strip_overlay_xattrs(path: &Path) {
    for name in xattr::list(path).into_iter().flatten() {
        if crate::meta::is_overlay_private_xattr(name.as_encoded_bytes()) {
            let _ = xattr::remove(path, &name);
        }
    }
}

/// Removes `path` whatever it is (a directory with its contents); absent is fine.
fn remove_path(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
