//! Per-build scratch space: one directory under the store's `build` state directory, holding
//! every stage's root filesystem, removed when the build ends (success or error).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rbuild_image::Descriptor;
use rbuild_layer::{apply_layer, ApplyOptions, Ownership};
use rbuild_store::Store;

use crate::error::{BuildError, Result};
use crate::fsops::Owners;
use crate::scratch::{DirKind, OwnedDir};

/// The build's scratch directory; removed on drop. Locked while the build runs (see
/// [`crate::scratch`]), so that after a crash the next rbuild command knows it is dead.
pub(crate) struct BuildDir {
    dir: OwnedDir,
    counter: AtomicU64,
    /// This build's directory name, added to the names of the directories made in it.
    /// Why: ext4 places a directory made in a "top" directory (see
    /// [`spread_subdirectories`]) starting from a hash of its name, so `overlay-2` of every
    /// build landed in the block group an earlier build's `overlay-2` had just freed (its
    /// trash removed, see [`TRASH_GRACE`]); without a journal ext4 then skips each freed
    /// inode, one by one, for a minute or more on every file it creates there
    /// (`recently_deleted`), which made a RUN writing 10,000 files up to twice as slow
    /// (docs/benchmarks.md).
    salt: String,
    /// `<store>/trash`: where the directory goes at the end, to be removed in the
    /// background.
    trash: Option<PathBuf>,
    /// Rootless with subordinate ids, rootfs files belong to ids the user cannot remove:
    /// container root removes them.
    owners: Owners,
}

impl BuildDir {
    pub(crate) fn create(store: &Store, owners: &Owners) -> Result<BuildDir> {
        let parent = store
            .state_dir("build")
            .map_err(BuildError::store("creating the build state directory"))?;
        spread_subdirectories(&parent);
        let trash = store.state_dir("trash").ok();
        let owners = owners.clone();
        let dir = OwnedDir::create(
            &parent,
            "",
            0o755,
            DirKind::Build,
            trash.clone(),
            Some(owners.clone()),
        )
        .map_err(BuildError::io("creating the build directory in", &parent))?;
        spread_subdirectories(dir.path());
        if let Owners::Ranged(_) = owners {
            // The steps' helper names the rootfs (a mount point) through this directory
            // once it has the range's ids: they may pass through it, not list it.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
                .map_err(BuildError::io("opening build directory", dir.path()))?;
        }
        let salt = dir
            .path()
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(BuildDir {
            trash,
            dir,
            counter: AtomicU64::new(0),
            salt,
            owners,
        })
    }

    /// A new empty directory inside the build directory (`<label>-<n>-<build>`).
    pub(crate) fn new_dir(&self, label: &str) -> Result<PathBuf> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let path = self.dir.path().join(format!("{label}-{n}-{}", self.salt));
        std::fs::create_dir(&path).map_err(BuildError::io("creating directory", &path))?;
        if let Owners::Ranged(_) = self.owners {
            // Rootfs, overlay and scratch directories: container root's, as a rootless
            // build's are the user's (who is container root).
            crate::fsops::chown_in_build(&self.owners, &path, 0, 0)?;
        }
        Ok(path)
    }
}

impl Drop for BuildDir {
    fn drop(&mut self) {
        // Taken off the signal handler's list; if the handler already has it, it removes it.
        if !self.dir.unregister() {
            return;
        }
        let path = self.dir.path();
        // remove_dir_all never follows symlinks, so a rootfs cannot make this escape.
        if let Owners::Mapped(root) = &self.owners {
            if root.remove_all(path).is_ok() {
                return;
            }
            // Container root is gone (stopped with the build): the trash keeps the
            // directory for `rbuild prune`.
            if let (Some(trash), Some(name)) = (&self.trash, path.file_name()) {
                if std::fs::rename(path, trash.join(name)).is_ok() {
                    return;
                }
            }
        } else if let Some(trash) = &self.trash {
            // Removing a build's files takes seconds for thousands of them (each unlink
            // can wait for a discard on the block device), and nothing waits for it: the
            // directory moves out of the way and a detached `rm` removes it while the
            // result is already being used. The store never refers to anything in it.
            if let Some(name) = path.file_name() {
                let target = trash.join(name);
                if std::fs::rename(path, &target).is_ok() {
                    remove_old_trash(trash, TRASH_GRACE);
                    return;
                }
                let _ = std::fs::remove_dir_all(&target);
            }
        }
        let _ = std::fs::remove_dir_all(path);
    }
}

/// How long a finished build's directory waits in `<store>/trash` before it is removed
/// (unless the file system runs short of space). Why wait: on ext4 without a journal an
/// inode freed in the last minute (up to six while its inode table block is dirty) is
/// skipped, one by one, by every allocation in its block group, and the emptiest groups —
/// those just freed — are where new directories go. A build removing the previous build's
/// thousands of files while it creates its own paid for that on each file it created
/// (a 2,000-file RUN: 0.3 s on a quiet file system, 1–2 s beside a removal). Builds that
/// follow one another within the grace remove nothing; BuildKit likewise keeps what it
/// made until its garbage collection.
const TRASH_GRACE: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Removes (in the background) what has waited in `trash` for longer than `grace`, or
/// everything when the file system is short of space.
fn remove_old_trash(trash: &Path, grace: std::time::Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let old = trash_due(trash, grace, now, short_of_space(trash));
    if !old.is_empty() {
        remove_in_background(&old);
    }
}

/// The entries of `trash` that arrived more than `grace` before `now` (seconds since the
/// epoch), or all of them.
fn trash_due(trash: &Path, grace: std::time::Duration, now: i64, all: bool) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(trash) else {
        return Vec::new();
    };
    // The rename into the trash set the entry's ctime: its time of arrival.
    entries
        .flatten()
        .filter(|e| {
            all || e
                .metadata()
                .is_ok_and(|m| now - m.ctime() > grace.as_secs() as i64)
        })
        .map(|e| e.path())
        .collect()
}

/// Less than 10% of the file system (or 5 GiB) free.
fn short_of_space(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return true;
    };
    // SAFETY: statvfs is plain integers, for which all zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a struct for the kernel to fill, both alive
    // across the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return true;
    }
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    let size = st.f_blocks as u64 * st.f_frsize as u64;
    free < (size / 10).max(5 << 30)
}

/// `rbuild prune`: removes what finished builds left in `<store>/trash` (normally removed
/// after a while by a later build), now. Returns how many build directories went.
pub(crate) fn empty_trash(store: &Store, owners: &Owners) -> std::io::Result<usize> {
    let trash = store.root().join("trash");
    let entries = match std::fs::read_dir(&trash) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry?.path();
        match crate::fsops::remove_tree(&path, owners) {
            Ok(()) => removed += 1,
            // A background remover got there first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", path.display()),
                ))
            }
        }
    }
    Ok(removed)
}

/// Starts a detached `rm -rf` of `paths`; it outlives this process if it has to. `rm`
/// never follows symlinks. False if it did not start.
pub(crate) fn remove_in_background(paths: &[PathBuf]) -> bool {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new("rm");
    command
        .arg("-rf")
        .arg("--one-file-system")
        .arg("--")
        .args(paths);
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Its own process group: a Ctrl-C meant for the build does not stop it halfway.
        .process_group(0)
        .spawn()
        // Reaped by a thread while this process lives (a long-running caller collects no
        // zombies); if the process ends first, `rm` goes on without it.
        .map(|mut child| {
            std::thread::spawn(move || child.wait());
        })
        .is_ok()
}

/// Marks `dir` as a "top" directory for ext4's Orlov inode allocator (`chattr +T`), so
/// that the directories created in it are spread over the block groups. Why: ext4 without
/// a journal skips, one by one, the inodes freed in the last few seconds when it
/// allocates a new one; with every build's files in one block group, a build that follows
/// another (or a stage that follows a step whose files were just removed) paid for that
/// scan on each file it created — quadratic in the number of files (seconds for 2,000).
/// Other file systems ignore or refuse the flag; either is fine.
fn spread_subdirectories(dir: &Path) {
    use std::os::fd::AsRawFd;
    const FS_TOPDIR_FL: libc::c_int = 0x0002_0000;
    let Ok(file) = std::fs::File::open(dir) else {
        return;
    };
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS/SETFLAGS read and write one int through the pointer (the
    // kernel's file systems and chattr use an int, whatever the ioctl's name says).
    unsafe {
        if libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) != 0 {
            return;
        }
        if flags & FS_TOPDIR_FL == 0 {
            flags |= FS_TOPDIR_FL;
            libc::ioctl(file.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags);
        }
    }
}

/// How this process extracts layers itself (ADD's local archives, and every layer when no
/// container-root helper is in use). As root, owners are preserved. Rootless, chown is not
/// permitted, so files stay owned by the user, who is container root in the sandbox's
/// user namespace (and the layer writer records the user's ids as 0:0).
/// As root with a ranged build, the owners are shifted into the range.
pub(crate) fn layer_apply_options(owners: &Owners) -> ApplyOptions {
    match owners {
        Owners::Ranged(range) => ApplyOptions {
            ownership: Ownership::Map(range.id_map()),
            ..ApplyOptions::default()
        },
        _ if crate::fsops::running_as_root() => ApplyOptions::default(),
        _ => ApplyOptions {
            ownership: Ownership::Ignore,
            ..ApplyOptions::default()
        },
    }
}

/// Applies `layers` (bottom first) from the store onto `dir`. Rootless with subordinate
/// ids, container root in the build's user namespace extracts them, so the image's owners
/// (and setuid bits, which a chown would clear) survive as the mapped host ids.
pub(crate) fn apply_layers(
    store: &Store,
    owners: &Owners,
    layers: &[Descriptor],
    dir: &Path,
) -> Result<()> {
    let _t = crate::phases::Phase::Extract.timer();
    let options = layer_apply_options(owners);
    for layer in layers {
        let doing = format!("applying layer {} onto {}", layer.digest, dir.display());
        let open = || {
            store
                .open_blob(&layer.digest)
                .map_err(BuildError::store(format!("opening layer {}", layer.digest)))
        };
        // Restricted: the build user keeps every file, so the layer's owners and devices
        // are recorded from its entries, read (a second decompression) on another thread
        // while the layer is applied, then matched with the applied files by inode.
        let listed = std::thread::scope(|scope| -> Result<Option<Vec<rbuild_layer::EntryInfo>>> {
            let listing = matches!(owners, Owners::Recorded(_)).then(|| {
                scope.spawn(|| {
                    rbuild_layer::list_entries(std::io::BufReader::new(open()?)).map_err(
                        BuildError::layer(format!("reading the owners of layer {}", layer.digest)),
                    )
                })
            });
            let blob = open()?;
            match owners {
                Owners::Mapped(root) => root
                    .apply_layer(&blob, dir)
                    .map_err(BuildError::container_root(doing))?,
                _ => apply_layer(std::io::BufReader::new(blob), dir, &options)
                    .map(|_| ())
                    .map_err(BuildError::layer(doing))?,
            }
            listing
                .map(|thread| {
                    thread
                        .join()
                        .unwrap_or_else(|p| std::panic::resume_unwind(p))
                })
                .transpose()
        })?;
        if let (Owners::Recorded(in_place), Some(entries)) = (owners, listed) {
            in_place.with_table(|table| crate::in_place::record_entries(&entries, dir, table))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_builds_name_their_directories_apart() {
        // ext4 picks a top directory's child's block group from a hash of its name: the
        // same name in every build sent each build into the group an earlier one freed.
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let first = BuildDir::create(&store, &Owners::Root).unwrap();
        let second = BuildDir::create(&store, &Owners::Root).unwrap();
        let a = first.new_dir("overlay").unwrap();
        let b = second.new_dir("overlay").unwrap();
        let (a, b) = (a.file_name().unwrap(), b.file_name().unwrap());
        assert_ne!(a, b, "two builds' first overlay directories share a name");
        for name in [a, b] {
            let name = name.to_str().unwrap();
            assert!(name.starts_with("overlay-1-"), "{name}");
            // The names go into overlayfs mount options: no ',' or ':'.
            assert!(!name.contains(',') && !name.contains(':'), "{name}");
        }
        // Within a build the counter still tells them apart.
        let again = first.new_dir("overlay").unwrap();
        assert!(again
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("overlay-2-"));
    }

    #[test]
    fn the_trash_keeps_recent_builds_for_a_while() {
        let trash = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(trash.path().join("1-0-0/rootfs-0-1")).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(trash_due(trash.path(), TRASH_GRACE, now, false).is_empty());
        let later = now + TRASH_GRACE.as_secs() as i64 + 5;
        assert_eq!(
            trash_due(trash.path(), TRASH_GRACE, later, false),
            vec![trash.path().join("1-0-0")]
        );
        assert_eq!(trash_due(trash.path(), TRASH_GRACE, now, true).len(), 1);
    }
}
