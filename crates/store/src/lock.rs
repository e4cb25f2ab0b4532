//! Advisory `flock` locks. A lock lives as long as its open file; the kernel drops it when the
//! process dies, so a leftover lock file never blocks the next run.

use std::fs::{File, OpenOptions};
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

use crate::error::{IoContext, Result};

/// A held lock; released on drop (by closing the file).
#[derive(Debug)]
pub(crate) struct LockGuard {
    _file: File,
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .at("open lock file", path)
}

/// Blocks until the exclusive lock on `path` is held.
pub(crate) fn exclusive(path: &Path) -> Result<LockGuard> {
    let file = open_lock_file(path)?;
    flock(&file, FlockOperation::LockExclusive)
        .map_err(std::io::Error::from)
        .at("take exclusive lock on", path)?;
    Ok(LockGuard { _file: file })
}

/// Blocks until a shared lock on `path` is held.
pub(crate) fn shared(path: &Path) -> Result<LockGuard> {
    let file = open_lock_file(path)?;
    flock(&file, FlockOperation::LockShared)
        .map_err(std::io::Error::from)
        .at("take shared lock on", path)?;
    Ok(LockGuard { _file: file })
}

/// Whether some other open file holds a lock on `file` (used to tell a live writer's temp or
/// lease file from one left by a dead process). Takes and drops a shared lock when free.
pub(crate) fn is_held_elsewhere(file: &File) -> bool {
    match flock(file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => {
            let _ = flock(file, FlockOperation::Unlock);
            false
        }
        Err(_) => true,
    }
}

/// Takes an exclusive lock on an already open file without blocking; false if held elsewhere.
pub(crate) fn try_exclusive(file: &File) -> bool {
    flock(file, FlockOperation::NonBlockingLockExclusive).is_ok()
}
