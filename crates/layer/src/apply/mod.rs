//! Applying a layer tarball onto a directory with OCI semantics (whiteouts, opaque
//! directories, hardlinks, devices, xattrs, owners), streaming and without ever writing
//! outside the target. The safety model is in `docs/layers.md`.

pub mod options;

mod bounds;
mod metadata;

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::compression::decompressing_reader;
use crate::entry::{EntryInfo, EntryKind};
use crate::error::{show, Error, IoContext, Result};
use crate::path::{
    join, list_dir, normalize_entry_name, open_dir_for_update, open_dir_in_root, remove_all_at,
    ParentSymlinks, ResolvedDir,
};
pub use bounds::{TarBounds, MAX_SPECIAL_ENTRY_BYTES};
pub use options::{ApplyOptions, ApplyStats, DeviceNodes, Ownership};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Applies the layer read from `reader` (gzip, zstd or plain tar, detected by magic) onto
/// `target_dir`, which must exist. Directory modes and times are applied after all entries,
/// so read-only directories extract. Fails on the first entry that is unsafe or cannot be
/// written; the target is then partially written.
pub fn apply_layer<R: Read>(
    reader: R,
    target_dir: &Path,
    options: &ApplyOptions,
) -> Result<ApplyStats> {
    let root = rustix::fs::open(
        target_dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("opening target directory {}", target_dir.display()))?;
    let reader = decompressing_reader(reader).ctx(|| "reading the layer's first bytes".into())?;
    // Oversized long names and PAX headers are refused before the tar crate buffers them.
    let mut archive = tar::Archive::new(TarBounds::new(reader));
    let mut applier = Applier {
        root,
        options,
        stats: ApplyStats::default(),
        extracted: HashSet::new(),
        deferred_dirs: Vec::new(),
    };
    let entries = archive
        .entries()
        .ctx(|| "reading the layer tar".to_string())?;
    for entry in entries {
        let mut entry = entry.ctx(|| "reading the next layer tar entry".to_string())?;
        applier.stats.entries += 1;
        applier.apply_entry(&mut entry)?;
    }
    applier.finish_dirs()?;
    Ok(applier.stats)
}

struct Applier<'o> {
    root: OwnedFd,
    options: &'o ApplyOptions,
    stats: ApplyStats,
    /// Real paths (relative to the root) this layer wrote: an opaque marker keeps them.
    extracted: HashSet<PathBuf>,
    /// Directories whose mode, owner, xattrs and times are set once all entries are in.
    deferred_dirs: Vec<(PathBuf, EntryInfo)>,
}

impl Applier<'_> {
    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let info = EntryInfo::from_entry(entry)?;
        let raw_name = info.path.as_os_str().as_bytes().to_vec();
        let shown = show(&raw_name);
        let mut components = normalize_entry_name(&raw_name)?;
        let Some(name) = components.pop() else {
            // The root itself ("./"): its metadata belongs to whoever made the target.
            return Ok(());
        };
        let name_bytes = name.as_bytes();

        if name_bytes == OPAQUE_MARKER {
            return self.apply_opaque(&components, &shown);
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX) {
            return self.apply_whiteout(&components, OsStr::from_bytes(hidden), &shown);
        }

        let parent = self.parent_dir(&components, &shown)?;
        let real_path = parent.path.join(&name);
        self.clear_for(parent.fd.as_fd(), &name, info.kind, &shown)?;
        let owner = metadata::host_owner(&self.options.ownership, &info, &shown)?;
        let dir = parent.fd.as_fd();
        match info.kind {
            EntryKind::Dir => {
                match rustix::fs::mkdirat(dir, &name, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e).ctx(|| format!("creating directory {shown:?}")),
                }
                self.stats.dirs += 1;
                self.deferred_dirs.push((real_path.clone(), info));
            }
            EntryKind::File => {
                let file = rustix::fs::openat(
                    dir,
                    &name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .ctx(|| format!("creating file {shown:?}"))?;
                let mut file = std::fs::File::from(file);
                let copied =
                    io::copy(entry, &mut file).ctx(|| format!("writing file {shown:?}"))?;
                self.stats.files += 1;
                self.stats.bytes += copied;
                metadata::set_on_fd(file.as_fd(), &info, owner, &shown, &mut self.stats)?;
            }
            EntryKind::Symlink => {
                let target = info.link_target.as_deref().unwrap_or(Path::new(""));
                rustix::fs::symlinkat(target, dir, &name)
                    .ctx(|| format!("creating symlink {shown:?}"))?;
                self.stats.symlinks += 1;
                metadata::set_at(dir, &name, &info, owner, true, &shown, &mut self.stats)?;
            }
            EntryKind::Hardlink => {
                self.link(dir, &name, &info, &shown)?;
            }
            EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => {
                if !self.make_node(dir, &name, &info, &shown)? {
                    return Ok(());
                }
                metadata::set_at(dir, &name, &info, owner, false, &shown, &mut self.stats)?;
            }
        }
        self.record_extracted(real_path);
        Ok(())
    }

    /// Records a path this layer wrote, with its ancestors: a parent the layer did not list
    /// but had to create holds this layer's entries, so an opaque marker must keep it.
    fn record_extracted(&mut self, path: PathBuf) {
        let mut ancestor = path.parent();
        while let Some(dir) = ancestor.filter(|d| !d.as_os_str().is_empty()) {
            if !self.extracted.insert(dir.to_path_buf()) {
                break; // its own ancestors were recorded with it
            }
            ancestor = dir.parent();
        }
        self.extracted.insert(path);
    }

    /// The entry's parent directory, created (0755) if the layer did not list it.
    fn parent_dir(&self, components: &[OsString], shown: &str) -> Result<ResolvedDir> {
        open_dir_in_root(
            self.root.as_fd(),
            components,
            true,
            ParentSymlinks::ResolveInRoot,
        )
        .map_err(|e| for_entry(e, shown))?
        .ok_or_else(|| Error::UnsafeEntry {
            entry: shown.to_string(),
            reason: "parent directory vanished while resolving".into(),
        })
    }

    /// Removes whatever is at the entry's place unless both are directories (Docker and
    /// containerd semantics: a dir entry merges into an existing dir, anything else replaces).
    fn clear_for(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        kind: EntryKind,
        shown: &str,
    ) -> Result<()> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => {
                let existing_is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
                if !(existing_is_dir && kind == EntryKind::Dir) {
                    remove_all_at(dir, name, &|| shown.to_string())?;
                }
                Ok(())
            }
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e).ctx(|| format!("inspecting existing {shown:?}")),
        }
    }

    /// `.wh.NAME`: removes NAME (recursively). A whiteout of something absent is harmless.
    fn apply_whiteout(
        &mut self,
        components: &[OsString],
        hidden: &OsStr,
        shown: &str,
    ) -> Result<()> {
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(Error::UnsafeEntry {
                entry: shown.to_string(),
                reason: "whiteout names no entry".into(),
            });
        }
        self.stats.whiteouts += 1;
        let parent = open_dir_in_root(
            self.root.as_fd(),
            components,
            false,
            ParentSymlinks::ResolveInRoot,
        )
        .map_err(|e| for_entry(e, shown))?;
        if let Some(parent) = parent {
            // A whiteout hides lower layers only (OCI image spec): what this same layer put
            // there stays, whichever order the two entries come in.
            if !self.extracted.contains(&parent.path.join(hidden)) {
                remove_all_at(parent.fd.as_fd(), hidden, &|| shown.to_string())?;
            }
        }
        Ok(())
    }

    /// `.wh..wh..opq`: empties the directory of everything lower layers put there, keeping what
    /// this layer already extracted into it (the marker may come after its siblings).
    fn apply_opaque(&mut self, components: &[OsString], shown: &str) -> Result<()> {
        self.stats.opaque_dirs += 1;
        let dir = self.parent_dir(components, shown)?;
        let readable = open_dir_for_update(dir.fd.as_fd(), OsStr::new("."))
            .ctx(|| format!("opening opaque directory of {shown:?}"))?;
        self.clear_lower(readable.as_fd(), &dir.path, shown)
    }

    fn clear_lower(&self, dir: BorrowedFd<'_>, dir_path: &Path, shown: &str) -> Result<()> {
        for child in
            list_dir(dir).ctx(|| format!("listing {} for {shown:?}", dir_path.display()))?
        {
            let child_path = dir_path.join(&child);
            if !self.extracted.contains(&child_path) {
                remove_all_at(dir, &child, &|| child_path.display().to_string())?;
                continue;
            }
            // Kept because this layer wrote it; if it is a directory its own lower contents
            // still go, as containerd does.
            match open_dir_for_update(dir, &child) {
                Ok(sub) => self.clear_lower(sub.as_fd(), &child_path, shown)?,
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {}
                Err(e) => {
                    return Err(e).ctx(|| format!("opening {} for {shown:?}", child_path.display()))
                }
            }
        }
        Ok(())
    }

    /// A hardlink to an entry already in the tree, never following a symlink at its target.
    fn link(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        info: &EntryInfo,
        shown: &str,
    ) -> Result<()> {
        let target = info.link_target.as_deref().unwrap_or(Path::new(""));
        let mut target_components =
            normalize_entry_name(target.as_os_str().as_bytes()).map_err(|_| {
                Error::UnsafeEntry {
                    entry: shown.to_string(),
                    reason: format!("hardlink target {} leaves the root", target.display()),
                }
            })?;
        let Some(target_name) = target_components.pop() else {
            return Err(Error::UnsafeEntry {
                entry: shown.to_string(),
                reason: "hardlink to the root directory".into(),
            });
        };
        let missing = || Error::UnsafeEntry {
            entry: shown.to_string(),
            reason: format!(
                "hardlink target {} is not in the tree (it must be extracted before the link)",
                target.display()
            ),
        };
        let target_dir = open_dir_in_root(
            self.root.as_fd(),
            &target_components,
            false,
            ParentSymlinks::ResolveInRoot,
        )
        .map_err(|e| for_entry(e, shown))?
        .ok_or_else(missing)?;
        match rustix::fs::linkat(
            target_dir.fd.as_fd(),
            &target_name,
            dir,
            name,
            AtFlags::empty(),
        ) {
            Ok(()) => {
                self.stats.hardlinks += 1;
                Ok(())
            }
            Err(Errno::NOENT) => Err(missing()),
            Err(e) => Err(e).ctx(|| {
                format!(
                    "hardlinking {shown:?} to {}",
                    join(&[target_components, vec![target_name]].concat()).display()
                )
            }),
        }
    }

    /// mknod for devices and fifos. Returns false when a device was skipped because the
    /// kernel refused it and the options allow skipping.
    fn make_node(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        info: &EntryInfo,
        shown: &str,
    ) -> Result<bool> {
        let (file_type, dev) = match info.kind {
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                let (major, minor) = info.device.unwrap_or((0, 0));
                let file_type = if info.kind == EntryKind::CharDevice {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                (file_type, rustix::fs::makedev(major, minor))
            }
            _ => (FileType::Fifo, 0),
        };
        match rustix::fs::mknodat(dir, name, file_type, Mode::from_raw_mode(0o600), dev) {
            Ok(()) => {
                self.stats.special_files += 1;
                Ok(true)
            }
            Err(Errno::PERM)
                if file_type != FileType::Fifo
                    && self.options.device_nodes == DeviceNodes::SkipIfNotPermitted =>
            {
                self.stats.skipped_devices += 1;
                self.stats.warn(format!(
                    "device node {shown:?} skipped: mknod not permitted"
                ));
                Ok(false)
            }
            Err(e) => Err(e).ctx(|| format!("creating device node or fifo {shown:?}")),
        }
    }

    /// Sets directory metadata deepest-first, so a parent's mtime is not disturbed by work
    /// on its children and read-only directories were writable while being filled.
    fn finish_dirs(&mut self) -> Result<()> {
        let deferred = std::mem::take(&mut self.deferred_dirs);
        for (path, info) in deferred.iter().rev() {
            let shown = path.display().to_string();
            let mut components: Vec<OsString> = path.iter().map(|c| c.to_os_string()).collect();
            let Some(name) = components.pop() else {
                continue;
            };
            // A later entry may have replaced this directory; then its metadata is moot.
            // Refuse symlinks: the recorded path is a real one, so a symlink means replaced.
            let parent = match open_dir_in_root(
                self.root.as_fd(),
                &components,
                false,
                ParentSymlinks::Refuse,
            ) {
                Ok(Some(parent)) => parent,
                Ok(None) | Err(Error::UnsafeEntry { .. }) => continue,
                Err(e) => return Err(e),
            };
            let fd = match open_dir_for_update(parent.fd.as_fd(), &name) {
                Ok(fd) => fd,
                Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                Err(e) => return Err(e).ctx(|| format!("reopening directory {shown:?}")),
            };
            let owner = metadata::host_owner(&self.options.ownership, info, &shown)?;
            metadata::set_on_fd(fd.as_fd(), info, owner, &shown, &mut self.stats)?;
        }
        Ok(())
    }
}

/// Errors from resolving an entry's parents name the whole entry, not just the parent.
fn for_entry(error: Error, shown: &str) -> Error {
    match error {
        Error::UnsafeEntry { reason, .. } => Error::UnsafeEntry {
            entry: shown.to_string(),
            reason,
        },
        other => other,
    }
}
