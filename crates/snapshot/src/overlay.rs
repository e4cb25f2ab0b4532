//! The overlay snapshotter: the step writes into a fresh upperdir of an overlay mounted by
//! the sandbox helper; afterwards the upperdir *is* the change set.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rbuild_layer::Change;
use rbuild_sandbox::{Rootfs, Stub};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::meta::read_meta;

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

/// A whiteout: a character device numbered 0:0.
fn is_whiteout(stat: &rustix::fs::Stat) -> bool {
    FileType::from_raw_mode(stat.st_mode) == FileType::CharacterDevice && stat.st_rdev == 0
}

/// Whether the directory open at `dir` is marked opaque (by overlayfs, either namespace).
fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    ["user.overlay.opaque", "trusted.overlay.opaque"]
        .iter()
        .any(|name| {
            let mut value = [0u8; 2];
            matches!(rustix::fs::fgetxattr(dir, *name, &mut value[..]), Ok(1) if value[0] == b'y')
        })
}

/// Opens the directory `name` in `dir` for reading its entries and xattrs, never following
/// a symlink.
fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// One lower layer's directory at the path being walked, open.
struct LowerDir {
    /// Which of the lower directories (an index into them, base first).
    layer: usize,
    fd: OwnedFd,
}

/// The top-most lower entry `name` in the directory whose visible lower directories are
/// `visible` (top-most first): the layer it is in and its `lstat`. `None` when no lower has
/// it or a whiteout hides it.
fn lower_entry(visible: &[LowerDir], name: &OsStr) -> Option<(usize, rustix::fs::Stat)> {
    for lower in visible {
        match rustix::fs::statat(&lower.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if is_whiteout(&stat) => return None,
            Ok(stat) => return Some((lower.layer, stat)),
            Err(_) => continue,
        }
    }
    None
}

/// The lower directories visible below `name` (a directory of the merged tree whose visible
/// lower directories are `visible`), top-most first, as overlayfs merges them: down from the
/// top-most lower that has a directory there, until a lower whose entry there is a
/// whiteout or not a directory, or whose directory is opaque. Empty under a directory no
/// lower has: nothing below it is ever looked up in the lowers.
fn lower_dirs_below(visible: &[LowerDir], name: &OsStr) -> Vec<LowerDir> {
    let mut below = Vec::new();
    for lower in visible {
        let stat = match rustix::fs::statat(&lower.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(_) => continue,
        };
        if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
            break;
        }
        let Ok(fd) = open_dir_at(lower.fd.as_fd(), name) else {
            break;
        };
        let opaque = is_opaque(fd.as_fd());
        below.push(LowerDir {
            layer: lower.layer,
            fd,
        });
        if opaque {
            break;
        }
    }
    below
}

/// Converts an upperdir into changes. `lowerdirs` (base first) are consulted to drop
/// directories that were only copied up (e.g. for a stub) and are otherwise unchanged, and
/// for a directory that replaces a lower directory wholesale (opaque: `rm -rf /d && mkdir
/// /d`), to list what of the lower one is gone: one `Delete` per entry, as BuildKit v0.32's
/// differ writes one whiteout per removed entry rather than an opaque marker (both give the
/// same tree). `stubs` are removed from the upperdir first.
///
/// One pass over the upperdir by directory descriptors: each entry costs calls relative to
/// its open directory (none at all for a new file under a directory no lower has, whose
/// type the directory listing gives), each directory's names are sorted as read, and the
/// list comes out in the normalised order of [`normalize`](crate::normalize::normalize)
/// (sorted by components, every ancestor of a change listed, nothing below a deletion)
/// with no sorting or map of the whole list.
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
    let open = |path: &Path| {
        rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let upper = open(upperdir).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("opening {}: {e}", upperdir.display()),
        )
    })?;
    let mut visible = Vec::new();
    for (layer, lower) in lowerdirs.iter().enumerate().rev() {
        match open(lower) {
            Ok(fd) => visible.push(LowerDir { layer, fd }),
            Err(Errno::NOENT | Errno::NOTDIR) => {}
            Err(e) => {
                return Err(io::Error::new(
                    io::Error::from(e).kind(),
                    format!("opening {}: {e}", lower.display()),
                ))
            }
        }
    }
    let mut walk = Collect {
        upperdir,
        lowerdirs,
        rel: PathBuf::new(),
        out: Vec::new(),
    };
    walk.dir(upper.as_fd(), &visible, false)?;
    debug_assert!(
        walk.out == crate::normalize::normalize(walk.out.clone()),
        "overlay changes not in normalised order"
    );
    Ok(walk.out)
}

/// The state of [`overlay_changes`]'s walk.
struct Collect<'a> {
    upperdir: &'a Path,
    lowerdirs: &'a [PathBuf],
    /// The path being walked, relative to the upperdir.
    rel: PathBuf,
    out: Vec<Change>,
}

impl Collect<'_> {
    fn error(&self, what: &str, e: impl Into<io::Error>) -> io::Error {
        let e = e.into();
        io::Error::new(
            e.kind(),
            format!("{what} {}: {e}", self.upperdir.join(&self.rel).display()),
        )
    }

    /// Walks the upper directory open at `dir` (at `self.rel`), whose visible lower
    /// directories are `visible`; returns whether anything below it is a change.
    /// `replacing`: `dir` replaces the lowers' directory at its path (it is opaque, or
    /// inside one and a directory in the lowers too): none of the lowers' entries below
    /// shows through, so each of its entries is new and each lower entry it lacks is
    /// deleted.
    fn dir(
        &mut self,
        dir: BorrowedFd<'_>,
        visible: &[LowerDir],
        replacing: bool,
    ) -> io::Result<bool> {
        let entries =
            rbuild_layer::sorted_dir_entries(dir).map_err(|e| self.error("reading", e))?;
        let mut any = false;
        // The lowers' entries a replacing directory lacks: deleted, in name order with the
        // upper's entries.
        let mut gone: Vec<OsString> = Vec::new();
        if replacing {
            let mut names = std::collections::BTreeSet::new();
            for lower in visible {
                for (name, _) in
                    rbuild_layer::sorted_dir_entries(lower.fd.as_fd()).map_err(|e| {
                        let path = self.lowerdirs[lower.layer].join(&self.rel);
                        io::Error::new(
                            io::Error::from(e).kind(),
                            format!("reading {}: {e}", path.display()),
                        )
                    })?
                {
                    names.insert(name);
                }
            }
            gone = names
                .into_iter()
                .filter(|name| {
                    entries
                        .binary_search_by(|(n, _)| n.as_os_str().cmp(name))
                        .is_err()
                        && lower_entry(visible, name).is_some()
                })
                .collect();
        }
        let mut gone = gone.into_iter().peekable();
        for (name, listed_type) in &entries {
            while let Some(deleted) = gone.next_if(|g| g < name) {
                self.out.push(Change::Delete(self.rel.join(deleted)));
                any = true;
            }
            self.rel.push(name);
            let below = self.entry(dir, name, *listed_type, visible, replacing);
            self.rel.pop();
            any |= below?;
        }
        for deleted in gone {
            self.out.push(Change::Delete(self.rel.join(deleted)));
            any = true;
        }
        Ok(any)
    }

    /// Lists the upper entry `name` in `dir` (at `self.rel`), whose directory listing gave
    /// it `listed_type`; returns whether it or anything below it is a change.
    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        listed_type: FileType,
        visible: &[LowerDir],
        replacing: bool,
    ) -> io::Result<bool> {
        // The listing's type is enough but for a character device (a whiteout is one
        // numbered 0:0) or where the filesystem does not tell.
        let kind = match listed_type {
            FileType::CharacterDevice | FileType::Unknown => {
                let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.error("inspecting", e))?;
                if is_whiteout(&stat) {
                    self.out.push(Change::Delete(self.rel.clone()));
                    return Ok(true);
                }
                FileType::from_raw_mode(stat.st_mode)
            }
            other => other,
        };
        if kind != FileType::Directory {
            // overlayfs copies a lower file up whole when the step links it (`ln lower
            // new`), changing only its ctime and link count: BuildKit's differ sees no
            // change there, and writes the new name alone, as a regular file. (In a
            // replaced directory every file is new.)
            let lower = match replacing {
                false => lower_entry(visible, name),
                true => None,
            };
            let copied_up_unchanged = match lower {
                Some((layer, _)) => same_non_directory(
                    &self.upperdir.join(&self.rel),
                    &self.lowerdirs[layer].join(&self.rel),
                )?,
                _ => false,
            };
            if !copied_up_unchanged {
                self.out.push(Change::Upsert(self.rel.clone()));
            }
            return Ok(!copied_up_unchanged);
        }
        let lower = lower_entry(visible, name);
        let lower_dir = lower
            .filter(|(_, stat)| FileType::from_raw_mode(stat.st_mode) == FileType::Directory)
            .map(|(layer, _)| layer);
        let child = open_dir_at(dir, name).map_err(|e| self.error("opening", e))?;
        let below_lowers = match lower_dir {
            Some(_) => lower_dirs_below(visible, name),
            None => Vec::new(),
        };
        let mark = self.out.len();
        self.out.push(Change::Upsert(self.rel.clone()));
        // A directory replacing a lower directory: marked opaque by overlayfs, or any
        // directory made inside a replaced one where the lowers have one too.
        let replaces = lower_dir.is_some() && (replacing || is_opaque(child.as_fd()));
        let below = self.dir(child.as_fd(), &below_lowers, replaces)?;
        // A directory copied up (for a change below it, a stub, a `touch`) is unchanged
        // when its own metadata but the mtime is (BuildKit's `sameDirent`); one with changes
        // below is listed all the same, as their parent.
        let unchanged_copy_up = !below
            && match lower_dir {
                Some(layer) => read_meta(&self.upperdir.join(&self.rel))?
                    .same_directory_metadata(&read_meta(&self.lowerdirs[layer].join(&self.rel))?),
                None => false,
            };
        if unchanged_copy_up {
            // Nothing was listed below it: it is the last change.
            self.out.truncate(mark);
        }
        Ok(!unchanged_copy_up)
    }
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
    // Per change, whether its upper entry is a directory (`None`: not read), so the moves
    // below need no second `lstat` of it.
    let mut upper_is_dir: Vec<Option<bool>> = Vec::with_capacity(changes.len());
    for change in changes {
        let rel = match change {
            Change::Upsert(rel) | Change::Delete(rel) | Change::OpaqueDir(rel) => rel.as_path(),
        };
        if under_whole(rel) {
            upper_is_dir.push(None);
            continue;
        }
        let mut is_dir = None;
        if !matches!(change, Change::Delete(_)) {
            if let Ok(meta) = std::fs::symlink_metadata(upper.join(rel)) {
                is_dir = Some(meta.is_dir());
                if meta.is_dir() {
                    upper_dirs.insert(rel, (meta, true));
                }
            }
        }
        upper_is_dir.push(is_dir);
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
    for (change, upper_is_dir) in changes.iter().zip(upper_is_dir) {
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
                let is_dir = match upper_is_dir {
                    Some(is_dir) => is_dir,
                    // Not readable before: the error says why.
                    None => std::fs::symlink_metadata(&source)
                        .map_err(|e| context("reading", rel, e))?
                        .is_dir(),
                };
                if is_dir {
                    match std::fs::symlink_metadata(&target) {
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
                    // Replaces a file or symlink there (never following it); hard links
                    // between moved files stay links (the inode moves). A directory there
                    // refuses it (`EISDIR`): it goes first. Trying first spares an `lstat`
                    // of every target.
                    if let Err(e) = std::fs::rename(&source, &target) {
                        if e.raw_os_error() != Some(libc::EISDIR)
                            || !std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir())
                        {
                            return Err(context("moving", rel, e));
                        }
                        std::fs::remove_dir_all(&target)
                            .map_err(|e| context("removing", rel, e))?;
                        std::fs::rename(&source, &target).map_err(|e| context("moving", rel, e))?;
                    }
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
