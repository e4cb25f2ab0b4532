//! Recording a layer's owners and device nodes in a restricted build's table once the layer
//! is extracted as the build user (who keeps every file and cannot make device nodes).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use rbuild_layer::{EntryInfo, EntryKind};
use rbuild_sandbox::restricted::{Device, DeviceKind, Owner, OwnershipTable};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

use super::InPlaceError;

/// Records, for every entry of a layer (`entries`, as `rbuild_layer::list_entries` reads
/// them: they can be read while the layer is applied) that was applied onto `root`, its
/// owner by inode; a device node (which the extractor skipped) becomes an empty file
/// recorded as that device. Whiteouts and hard links (the same inode as their target)
/// record nothing. A path that cannot be reached below `root` without following a symlink
/// is left out: the extractor did not write through one either.
pub(crate) fn record_entries(
    entries: &[EntryInfo],
    root: &Path,
    table: &mut OwnershipTable,
) -> Result<(), InPlaceError> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| InPlaceError::io("opening", root)(e.into()))?;
    // A tar lists a directory's entries together: the parent opened for one entry serves
    // the next ones (one `openat2` per directory instead of one per entry). A parent that
    // could not be opened is remembered too: its entries are all left out.
    let mut parent_cache: Option<(&Path, Option<OwnedFd>)> = None;
    for entry in entries {
        if entry.kind == EntryKind::Hardlink {
            continue;
        }
        let Some((parent, name)) = split(&entry.path) else {
            continue;
        };
        if name.as_encoded_bytes().starts_with(b".wh.") {
            continue;
        }
        let parent_fd = match &parent_cache {
            Some((cached, fd)) if *cached == parent => fd,
            _ => {
                &parent_cache
                    .insert((parent, open_parent(&root_fd, parent)))
                    .1
            }
        };
        let Some(parent_fd) = parent_fd else {
            continue;
        };
        let device = match entry.kind {
            EntryKind::CharDevice => Some(DeviceKind::Char),
            EntryKind::BlockDevice => Some(DeviceKind::Block),
            _ => None,
        };
        if let (Some(kind), Some((major, minor))) = (device, entry.device) {
            let placeholder = rustix::fs::openat(
                parent_fd,
                name,
                OFlags::CREATE | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| {
                InPlaceError::io("making the stand-in of device", &entry.path)(e.into())
            })?;
            let stat = rustix::fs::fstat(&placeholder).map_err(|e| {
                InPlaceError::io("reading the stand-in of device", &entry.path)(e.into())
            })?;
            let key = (stat.st_dev, stat.st_ino);
            let mode = entry.mode & 0o7777;
            table.record_device(
                key,
                Device {
                    kind,
                    major,
                    minor,
                    mode,
                },
            );
        }
        let stat = match rustix::fs::statat(parent_fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(_) => continue,
        };
        let (Ok(uid), Ok(gid)) = (u32::try_from(entry.uid), u32::try_from(entry.gid)) else {
            return Err(InPlaceError::Refused(format!(
                "{}: owner {}:{} is out of range",
                entry.path.display(),
                entry.uid,
                entry.gid
            )));
        };
        table.record_owner((stat.st_dev, stat.st_ino), Owner { uid, gid });
    }
    Ok(())
}

/// `path`'s parent (relative, normal components only) and its last name; `None` for the
/// root itself or a path with `..`.
fn split(path: &Path) -> Option<(&Path, &std::ffi::OsStr)> {
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        return None;
    }
    let name = path.file_name()?;
    let parent = path.parent().unwrap_or(Path::new(""));
    Some((parent, name))
}

/// The directory `parent` below `root`, reached without symlinks nor `..`.
fn open_parent(root: &OwnedFd, parent: &Path) -> Option<OwnedFd> {
    let relative: std::path::PathBuf = parent
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let relative = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative.as_path()
    };
    rustix::fs::openat2(
        root.as_fd(),
        relative,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn entry(path: &str, kind: EntryKind, uid: u64, gid: u64) -> EntryInfo {
        EntryInfo {
            path: PathBuf::from(path),
            kind,
            mode: 0o640,
            uid,
            gid,
            size: 0,
            mtime: 0,
            mtime_nanos: 0,
            link_target: None,
            device: None,
            xattrs: Default::default(),
        }
    }

    #[test]
    fn entries_are_recorded_by_inode_whichever_parent_came_before() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["etc", "usr/bin", "dev"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["etc/a", "etc/b", "usr/bin/c"] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        std::os::unix::fs::symlink("etc", root.join("link")).unwrap();
        let mut null = entry("dev/null", EntryKind::CharDevice, 0, 0);
        null.device = Some((1, 3));
        let entries = vec![
            entry("etc/", EntryKind::Dir, 0, 0),
            entry("etc/a", EntryKind::File, 42, 43),
            // Another directory between two entries of `etc`: the cached parent changes.
            entry("usr/bin/c", EntryKind::File, 5, 6),
            entry("etc/b", EntryKind::File, 0, 100),
            // Through a symlink, a missing parent, `..`, a whiteout, a hard link: nothing.
            entry("link/a", EntryKind::File, 99, 99),
            entry("missing/f", EntryKind::File, 98, 98),
            entry("../etc/a", EntryKind::File, 97, 97),
            entry("etc/.wh.gone", EntryKind::File, 96, 96),
            entry("usr/bin/c", EntryKind::Hardlink, 95, 95),
            null,
        ];
        let mut table = OwnershipTable::default();
        record_entries(&entries, root, &mut table).unwrap();
        let owner = |p: &str| table.owner_of(&root.join(p)).unwrap();
        assert_eq!(owner("etc"), Some(Owner { uid: 0, gid: 0 }));
        assert_eq!(owner("etc/a"), Some(Owner { uid: 42, gid: 43 }));
        assert_eq!(owner("etc/b"), Some(Owner { uid: 0, gid: 100 }));
        assert_eq!(owner("usr/bin/c"), Some(Owner { uid: 5, gid: 6 }));
        assert_eq!(owner("link"), None, "the symlink itself is no entry");
        assert_eq!(
            table.device_of(&root.join("dev/null")).unwrap(),
            Some(Device {
                kind: DeviceKind::Char,
                major: 1,
                minor: 3,
                mode: 0o640
            })
        );
        let stand_in = std::fs::symlink_metadata(root.join("dev/null")).unwrap();
        assert!(stand_in.is_file() && stand_in.len() == 0);
        assert!(!root.join("missing").exists());
        // etc, etc/a, usr/bin/c, etc/b and dev/null.
        assert_eq!(table.len(), 5);
    }
}
