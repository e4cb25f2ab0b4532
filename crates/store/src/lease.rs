//! Leases protect blobs a live process has written (or is about to reuse) but not yet linked
//! from `index.json`, so a concurrent `gc` does not delete a running build's layers.
//!
//! A lease is a file `<root>/leases/<pid>-<n>.lease` listing digests, one per line, held under
//! an exclusive `flock` for the life of the process's `Store`. `gc` honours a lease file only
//! while it is locked: the kernel drops the lock when its process dies, and gc then deletes it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use rbuild_image::Digest;

use crate::error::{IoContext, Result};
use crate::{fsutil, lock, Store};

#[derive(Debug)]
pub(crate) struct Lease {
    file: File,
    path: PathBuf,
}

impl Lease {
    /// Creates a locked lease file. It is locked under a temp name and only then renamed to
    /// `*.lease`, so gc never sees an unlocked file that belongs to a live process.
    fn create(store: &Store) -> Result<Lease> {
        let (file, temp) = fsutil::create_temp(store, "lease")?;
        if !lock::try_exclusive(&file) {
            return Err(crate::StoreError::Invalid(format!(
                "{}: new lease file is locked by someone else",
                temp.display()
            )));
        }
        let name = temp
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("lease")
            .trim_end_matches(".partial")
            .to_string();
        let path = store.leases.join(format!("{name}.lease"));
        std::fs::rename(&temp, &path).at("rename lease file into place at", &path)?;
        Ok(Lease { file, path })
    }

    fn record(&mut self, digest: &Digest) -> Result<()> {
        writeln!(self.file, "{digest}").at("write lease", &self.path)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Store {
    /// Adds `digest` to this process's lease (creating the lease on first use).
    pub(crate) fn lease_digest(&self, digest: &Digest) -> Result<()> {
        let mut guard = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(Lease::create(self)?);
        }
        // Cannot fail: set just above when it was unset.
        guard.as_mut().expect("lease just created").record(digest)
    }

    /// Protects an existing blob from gc for the life of this `Store` (e.g. a cached layer a
    /// build is about to reuse) and reports whether it is present. If this returns false the
    /// blob is gone and must be written again; if true it stays until the lease is released.
    /// A blob recorded remote counts as present (`open_blob` fetches it).
    pub fn protect(&self, digest: &Digest) -> Result<bool> {
        let _gc = lock::shared(&self.gc_lock)?;
        self.lease_digest(digest)?;
        Ok(self.has_blob_or_remote(digest))
    }

    /// Ends this process's lease: blobs not referenced from `index.json` become collectable.
    pub fn release_lease(&self) {
        let mut guard = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        *guard = None;
    }
}

/// Digests protected by live leases. Lease files whose owner died are deleted.
pub(crate) fn live_leased_digests(leases_dir: &Path) -> Result<std::collections::HashSet<Digest>> {
    let mut out = std::collections::HashSet::new();
    let entries = match std::fs::read_dir(leases_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).at("list leases in", leases_dir),
    };
    for entry in entries {
        let entry = entry.at("list leases in", leases_dir)?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "lease") {
            continue;
        }
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).at("open lease", &path),
        };
        if !lock::is_held_elsewhere(&file) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let text = std::fs::read_to_string(&path).at("read lease", &path)?;
        // A line cut short by a crash mid-write simply fails to parse and is skipped.
        out.extend(text.lines().filter_map(|l| l.parse::<Digest>().ok()));
    }
    Ok(out)
}
