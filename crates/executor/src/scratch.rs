//! Directories a running rbuild owns (a build's scratch space, its secret files, an unpacked
//! context), and their removal once their owner is gone.
//!
//! Each such directory is locked (`flock`, exclusive) through a descriptor of the directory
//! itself, held for as long as its owner lives. The kernel drops the lock when the process
//! dies, however it dies (kill -9 included), so a directory whose lock can be taken belongs
//! to nobody: [`sweep_dead`], run by every rbuild command that opens a store and by
//! `rbuild prune`, removes those — secret directories first. While the process lives, the
//! directories are also registered here, so that a SIGINT or SIGTERM handler can remove them
//! ([`remove_live_dirs`]) before the process exits.

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use rbuild_store::Store;

use crate::fsops::{flock, Owners};

/// What a directory holds, which decides how it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirKind {
    /// Secret values: removed first, at once.
    Secrets,
    /// A build's root filesystems: moved into the store's trash, then removed.
    Build,
    /// Anything else (an unpacked context): removed at once.
    Other,
}

/// A registered directory: its path, kind, the trash it may move to and who can remove it.
struct LiveDir {
    path: PathBuf,
    kind: DirKind,
    trash: Option<PathBuf>,
    owners: Option<Owners>,
}

/// The directories this process owns now.
static LIVE: Mutex<Vec<LiveDir>> = Mutex::new(Vec::new());

/// Helper processes that must not outlive this one but are not its children (an ssh-agent,
/// kept by a shell): the signal handler stops them.
static PROCESSES: Mutex<Vec<i32>> = Mutex::new(Vec::new());

pub(crate) fn register_process(pid: i32) {
    PROCESSES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(pid);
}

pub(crate) fn unregister_process(pid: i32) {
    PROCESSES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .retain(|p| *p != pid);
}

/// Whether `pid` runs (exists and is not a zombie waiting to be reaped).
pub(crate) fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// Set when the process is being cancelled: no new step starts (a step whose helper was
/// just killed must not fall back to another way of running it).
static CANCELLING: AtomicBool = AtomicBool::new(false);

/// Marks the process as cancelled (a SIGINT or SIGTERM arrived): steps not yet started do
/// not start, and a step whose sandbox was stopped is not run again another way.
pub fn begin_cancel() {
    CANCELLING.store(true, Ordering::SeqCst);
}

/// Whether [`begin_cancel`] was called.
pub fn cancelling() -> bool {
    CANCELLING.load(Ordering::SeqCst)
}

fn live() -> std::sync::MutexGuard<'static, Vec<LiveDir>> {
    // A thread that panicked while holding the list left it whole (every change is one push
    // or one retain): the list is still right.
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A directory created and locked by this process; the lock (and the registration) go on
/// drop. Removing the directory is the owner's job (or the handler's, or the next sweep's).
pub struct OwnedDir {
    path: PathBuf,
    /// The directory itself, opened: its flock marks the owner as alive.
    _lock: File,
}

impl std::fmt::Debug for OwnedDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OwnedDir").field(&self.path).finish()
    }
}

impl OwnedDir {
    /// Creates and locks a new directory `<parent>/<prefix><pid>-<n>-<nanos>` with `mode`.
    pub(crate) fn create(
        parent: &Path,
        prefix: &str,
        mode: u32,
        kind: DirKind,
        trash: Option<PathBuf>,
        owners: Option<Owners>,
    ) -> io::Result<OwnedDir> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path = parent.join(format!(
                "{prefix}{}-{}-{nanos}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::DirBuilder::new().mode(mode).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(with_path(e, "creating", &path)),
            }
            let lock = File::open(&path).map_err(|e| with_path(e, "opening", &path))?;
            // Blocking: a sweeper that found the new directory before it was locked holds
            // the lock while it removes it; then the directory is gone and another name is
            // taken.
            flock(&lock, libc::LOCK_EX).map_err(|e| with_path(e, "locking", &path))?;
            if !same_inode(&lock, &path) {
                continue;
            }
            live().push(LiveDir {
                path: path.clone(),
                kind,
                trash,
                owners,
            });
            return Ok(OwnedDir { path, _lock: lock });
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the directory off the signal handler's list; true if it was still there (the
    /// handler has not started on it).
    pub(crate) fn unregister(&self) -> bool {
        let mut dirs = live();
        let before = dirs.len();
        dirs.retain(|d| d.path != self.path);
        dirs.len() != before
    }
}

impl Drop for OwnedDir {
    fn drop(&mut self) {
        self.unregister();
    }
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Whether `path` still names the directory `file` has open.
fn same_inode(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// Removes every directory this process registered, secrets first: what a SIGINT or
/// SIGTERM handler does before the process exits. The directories are claimed first (taken
/// off the list, so the build's own clean-up, running as its steps fail, leaves them alone):
/// secret directories are removed and build directories move into the store's trash (one
/// rename each, harmless to a step still running in them). Then `stop` runs (it stops the
/// steps), and a detached `rm` removes the moved directories — except those whose files
/// belong to subordinate ids, which wait in the trash for the next `rbuild prune`. Returns
/// the paths handled.
pub fn remove_live_dirs(stop: impl FnOnce()) -> Vec<PathBuf> {
    begin_cancel();
    let processes = std::mem::take(&mut *PROCESSES.lock().unwrap_or_else(|p| p.into_inner()));
    for pid in processes {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is a registered
        // helper's, still running until its keeper, a child of ours, reaps it.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let mut dirs = std::mem::take(&mut *live());
    dirs.sort_by_key(|d| d.kind != DirKind::Secrets);
    let mut moved = Vec::new();
    for dir in &dirs {
        match dir.kind {
            DirKind::Secrets | DirKind::Other => {
                let _ = std::fs::remove_dir_all(&dir.path);
            }
            DirKind::Build => {
                let mapped = matches!(dir.owners, Some(Owners::Mapped(_)));
                match (&dir.trash, dir.path.file_name()) {
                    (Some(trash), Some(name))
                        if std::fs::rename(&dir.path, trash.join(name)).is_ok() =>
                    {
                        if !mapped {
                            moved.push(trash.join(name));
                        }
                    }
                    _ => discard_build_dir(&dir.path, None, dir.owners.as_ref(), false),
                }
            }
        }
    }
    stop();
    if !moved.is_empty() {
        crate::build_dir::remove_in_background(&moved);
    }
    // A thread of the build that was between two file operations when its directory moved
    // may have made part of the path again (a `create_dir_all`): once it has seen that no
    // step may start, remove that too.
    std::thread::sleep(std::time::Duration::from_millis(100));
    for dir in &dirs {
        if dir.kind == DirKind::Build && std::fs::symlink_metadata(&dir.path).is_ok() {
            discard_build_dir(&dir.path, dir.trash.as_deref(), None, true);
        }
    }
    dirs.into_iter().map(|d| d.path).collect()
}

/// Moves a build directory into `trash` and, unless its files need container root to go,
/// starts removing it in the background (`now`) — or removes it here when it cannot move.
pub(crate) fn discard_build_dir(
    path: &Path,
    trash: Option<&Path>,
    owners: Option<&Owners>,
    now: bool,
) {
    let mapped = matches!(owners, Some(Owners::Mapped(_)));
    if let (Some(trash), Some(name)) = (trash, path.file_name()) {
        let target = trash.join(name);
        if std::fs::rename(path, &target).is_ok() {
            if now && !mapped {
                crate::build_dir::remove_in_background(&[target]);
            }
            return;
        }
    }
    let _ = match owners {
        Some(owners) => crate::fsops::remove_tree(path, owners),
        None => std::fs::remove_dir_all(path),
    };
}

/// Entries of `parent` whose name starts with `prefix` that are directories (not symlinks),
/// owned by `uid` when given, whose lock is free: their owner is dead. Each comes with its
/// lock, now held by this process, so no new owner can take the name meanwhile.
fn dead_dirs(parent: &Path, prefix: &str, uid: Option<u32>) -> Vec<(PathBuf, File)> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut dead = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || uid.is_some_and(|uid| meta.uid() != uid) {
            continue;
        }
        let Ok(lock) = open_dir_nofollow(&path) else {
            continue;
        };
        if matches!(flock(&lock, libc::LOCK_EX | libc::LOCK_NB), Ok(true))
            && same_inode(&lock, &path)
        {
            dead.push((path, lock));
        }
    }
    dead
}

fn open_dir_nofollow(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
}

/// What [`sweep_dead`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Secret directories (and ssh-agent directories) of dead builds.
    pub secrets: usize,
    /// Build directories of dead builds (moved to the trash, being removed).
    pub builds: usize,
    /// Other scratch directories (unpacked contexts).
    pub other: usize,
}

impl Swept {
    pub fn total(&self) -> usize {
        self.secrets + self.builds + self.other
    }
}

/// Removes what dead rbuild processes left: their secret directories (first), unpacked
/// contexts and build directories. Cheap when there is nothing to remove (a directory
/// listing each); run by every command that opens the store. `remove_now`: build
/// directories are removed before returning (prune) instead of in the background.
pub fn sweep_dead(store: &Store, remove_now: bool) -> Swept {
    sweep_dead_as(store, remove_now, &Owners::of_process())
}

/// [`sweep_dead`] with `owners` removing the build directories (`rbuild prune` starts the
/// container-root worker for them).
pub(crate) fn sweep_dead_as(store: &Store, remove_now: bool, owners: &Owners) -> Swept {
    let (uid, _) = crate::fsops::current_ids();
    let mut swept = Swept::default();
    let tmp = store.root().join("tmp");
    let mut secret_parents = crate::secrets::memory_dirs();
    secret_parents.push(tmp.clone());
    for parent in &secret_parents {
        for (path, _lock) in dead_dirs(parent, crate::secrets::DIR_PREFIX, Some(uid)) {
            if std::fs::remove_dir_all(&path).is_ok() {
                swept.secrets += 1;
            }
        }
    }
    // Written by earlier versions, which kept env secrets in `tmp/secrets-*` unlocked.
    for (path, _lock) in dead_dirs(&tmp, "secrets-", Some(uid)) {
        if std::fs::remove_dir_all(&path).is_ok() {
            swept.secrets += 1;
        }
    }
    // Dead builds' ssh-agents died with them (PR_SET_PDEATHSIG); their sockets remain.
    for parent in [&tmp, &std::env::temp_dir()] {
        for (path, _lock) in dead_dirs(parent, crate::ssh_agent::DIR_PREFIX, Some(uid)) {
            if std::fs::remove_dir_all(&path).is_ok() {
                swept.secrets += 1;
            }
        }
    }
    for (path, _lock) in dead_dirs(&tmp, CONTEXT_PREFIX, Some(uid)) {
        if std::fs::remove_dir_all(&path).is_ok() {
            swept.other += 1;
        }
    }
    let builds = dead_dirs(&store.root().join("build"), "", None);
    if !builds.is_empty() {
        let trash = store.state_dir("trash").ok();
        let mut moved = Vec::new();
        for (path, _lock) in &builds {
            let Some(name) = path.file_name() else {
                continue;
            };
            match &trash {
                Some(trash) if std::fs::rename(path, trash.join(name)).is_ok() => {
                    moved.push(trash.join(name));
                }
                _ => {
                    let _ = crate::fsops::remove_tree(path, owners);
                }
            }
            swept.builds += 1;
        }
        if remove_now {
            for path in &moved {
                let _ = crate::fsops::remove_tree(path, owners);
            }
        } else if !matches!(owners, Owners::Mapped(_)) && !moved.is_empty() {
            crate::build_dir::remove_in_background(&moved);
        }
    }
    swept
}

/// The prefix of a directory holding a build context unpacked from a tar.
pub const CONTEXT_PREFIX: &str = "context-";

/// A directory in the store's `tmp/` owned by this process (an unpacked context), removed
/// on drop.
pub struct ScratchDir(OwnedDir);

impl ScratchDir {
    /// A new private directory `<store>/tmp/context-…`.
    pub fn for_context(store: &Store) -> io::Result<ScratchDir> {
        let tmp = store
            .state_dir("tmp")
            .map_err(|e| io::Error::other(format!("the store's tmp directory: {e}")))?;
        OwnedDir::create(&tmp, CONTEXT_PREFIX, 0o700, DirKind::Other, None, None).map(ScratchDir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if self.0.unregister() {
            let _ = std::fs::remove_dir_all(self.0.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_directory_is_not_dead_and_a_released_one_is() {
        let parent = tempfile::tempdir().unwrap();
        let owned =
            OwnedDir::create(parent.path(), "x-", 0o700, DirKind::Other, None, None).unwrap();
        assert!(dead_dirs(parent.path(), "x-", None).is_empty());
        let path = owned.path().to_path_buf();
        // Still registered for the signal handler while it lives.
        assert!(live().iter().any(|d| d.path == path));
        drop(owned);
        assert!(!live().iter().any(|d| d.path == path));
        let dead = dead_dirs(parent.path(), "x-", None);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].0, path);
        // Another prefix, another owner: not ours to touch.
        assert!(dead_dirs(parent.path(), "y-", None).is_empty());
        let (uid, _) = crate::fsops::current_ids();
        assert!(dead_dirs(parent.path(), "x-", Some(uid.wrapping_add(1))).is_empty());
    }

    #[test]
    fn a_symlink_is_never_swept() {
        let parent = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), parent.path().join("x-link")).unwrap();
        assert!(dead_dirs(parent.path(), "x-", None).is_empty());
    }
}
