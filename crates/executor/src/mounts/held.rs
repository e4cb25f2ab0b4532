//! What a step holds while it runs, released when dropped at its end: a cache mount's
//! lock, a relay to an ssh agent, a copy of a secret.

use std::path::{Path, PathBuf};

use crate::fsops;

/// What a step holds until it has run (dropped at its end).
pub(crate) enum Held {
    Cache(#[allow(dead_code)] CacheLock),
    Agent(#[allow(dead_code)] AgentRelay),
    /// A step's copy of a secret (its directory; the file is unlinked once mounted), removed when dropped.
    Secret(#[allow(dead_code)] crate::secrets::SecretFiles),
}

/// A ranged root build's forwarding to an ssh agent, stopped when dropped, and the
/// directory of its socket, removed then (a socket leading to the user's keys outlives its
/// step nowhere).
pub(crate) struct AgentRelay(
    pub(super) Option<crate::chroot_mounts::AgentProxy>,
    pub(super) PathBuf,
);

impl Drop for AgentRelay {
    fn drop(&mut self) {
        if let Some(proxy) = self.0.take() {
            proxy.stop();
        }
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// A `RUN --mount=type=cache` directory held by one step (`sharing=locked`, or a `private`
/// cache that was free): an exclusive `flock` on `<dir>.lock`, released when dropped at the
/// end of the step. Each acquisition opens the file anew, so it excludes other threads of
/// this build (stages running at once) as well as other builds on the same store.
pub(crate) struct CacheLock(#[allow(dead_code)] std::fs::File);

impl CacheLock {
    /// Waits for a shared lock: steps mounting the cache `shared` hold one each, and keep
    /// out a step that holds it exclusively.
    pub(super) fn acquire_shared(dir: &Path) -> std::io::Result<CacheLock> {
        let file = Self::open(dir)?;
        fsops::flock(&file, libc::LOCK_SH)?;
        Ok(CacheLock(file))
    }

    fn open(dir: &Path) -> std::io::Result<std::fs::File> {
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        let path = dir.with_file_name(name);
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
    }

    /// Waits for the lock (`blocking`), or returns `None` when it is held elsewhere.
    pub(super) fn acquire(dir: &Path, blocking: bool) -> std::io::Result<Option<CacheLock>> {
        let file = Self::open(dir)?;
        let operation = if blocking {
            libc::LOCK_EX
        } else {
            libc::LOCK_EX | libc::LOCK_NB
        };
        Ok(fsops::flock(&file, operation)?.then_some(CacheLock(file)))
    }
}
