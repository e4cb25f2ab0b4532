//! Where secret values given by value (`--secret id=x,env=VAR`) live while a build runs: files
//! in a private (0700) directory on a memory file system — `$XDG_RUNTIME_DIR` or `/dev/shm`
//! when they are tmpfs — so the value never reaches a disk. Only when no such file system is
//! writable does the directory go into the store's `tmp/` (and [`SecretFiles::on_disk`] says
//! so). The directory is locked while the build runs (see [`crate::scratch`]): removed when
//! the build ends, by the SIGINT/SIGTERM handler, or, after a kill -9, by the next rbuild
//! command.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rbuild_store::Store;

use crate::scratch::{DirKind, OwnedDir};

/// The name every secret directory starts with.
pub(crate) const DIR_PREFIX: &str = "rbuild-secrets-";

/// tmpfs and ramfs: `statfs` magic numbers (linux/magic.h).
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Memory file systems this user can write to, in order of preference.
pub(crate) fn memory_dirs() -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        candidates.push(PathBuf::from(runtime));
    }
    candidates.push(PathBuf::from("/dev/shm"));
    candidates.retain(|dir| is_memory_fs(dir));
    candidates
}

fn is_memory_fs(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path and a zeroed struct for the kernel to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; statfs writes only into `st`.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return false;
    }
    let kind = st.f_type as i64;
    kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
}

/// A build's secret files; removed on drop.
pub struct SecretFiles {
    dir: OwnedDir,
    count: usize,
    on_disk: bool,
}

impl std::fmt::Debug for SecretFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The path only: never the values.
        f.debug_struct("SecretFiles")
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl SecretFiles {
    /// A new private directory for secret files: on a memory file system if one is
    /// writable, else in the store's `tmp/`.
    pub fn create(store: &Store) -> io::Result<SecretFiles> {
        for parent in memory_dirs() {
            if let Ok(dir) =
                OwnedDir::create(&parent, DIR_PREFIX, 0o700, DirKind::Secrets, None, None)
            {
                return Ok(SecretFiles {
                    dir,
                    count: 0,
                    on_disk: false,
                });
            }
        }
        let tmp = store
            .state_dir("tmp")
            .map_err(|e| io::Error::other(format!("the store's tmp directory: {e}")))?;
        let dir = OwnedDir::create(&tmp, DIR_PREFIX, 0o700, DirKind::Secrets, None, None)?;
        Ok(SecretFiles {
            dir,
            count: 0,
            on_disk: true,
        })
    }

    /// Whether the files are on a disk (no memory file system was writable).
    pub fn on_disk(&self) -> bool {
        self.on_disk
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `value` to a new file (0600) and returns its path.
    pub fn add(&mut self, value: &[u8]) -> io::Result<PathBuf> {
        let path = self.dir.path().join(format!("secret-{}", self.count));
        self.count += 1;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))?;
        file.write_all(value)
            .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))?;
        Ok(path)
    }
}

impl Drop for SecretFiles {
    fn drop(&mut self) {
        // Not registered any more: the signal handler has it (or had it) in hand.
        if self.dir.unregister() {
            let _ = std::fs::remove_dir_all(self.dir.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_live_in_memory_and_go_on_drop() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let mut secrets = SecretFiles::create(&store).unwrap();
        let path = secrets.add(b"hunter2").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hunter2");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(secrets.dir())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        if !memory_dirs().is_empty() {
            assert!(!secrets.on_disk());
            assert!(!path.starts_with(store_dir.path()), "{}", path.display());
            assert!(is_memory_fs(secrets.dir()));
        }
        let dir = secrets.dir().to_path_buf();
        drop(secrets);
        assert!(!dir.exists());
    }
}
