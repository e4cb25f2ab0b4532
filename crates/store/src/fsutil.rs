//! Durable file replacement: write a temp file in the store, fsync it, rename it over the
//! target, fsync the directory. A crash leaves either the old file or the new one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::error::{IoContext, Result};
use crate::Store;

/// Creates a new, uniquely named file in the store's temp directory.
pub(crate) fn create_temp(store: &Store, prefix: &str) -> Result<(File, PathBuf)> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    loop {
        let n = store.temp_counter.fetch_add(1, Ordering::Relaxed);
        let path = store.tmp.join(format!(
            "{prefix}-{}-{n}-{nanos:09}.partial",
            std::process::id()
        ));
        match OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).at("create temp file", &path),
        }
    }
}

/// fsyncs a directory so a rename in it survives a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .at("fsync directory", dir)
}

/// Atomically replaces `target` with `bytes`.
pub(crate) fn write_atomic(store: &Store, target: &Path, bytes: &[u8]) -> Result<()> {
    let (mut file, temp) = create_temp(store, "file")?;
    let result = (|| {
        file.write_all(bytes).at("write", &temp)?;
        file.sync_all().at("fsync", &temp)?;
        std::fs::rename(&temp, target).at("rename temp file into place at", target)?;
        sync_dir(target.parent().unwrap_or(Path::new(".")))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Atomically replaces `target` with `bytes`, without fsync: for records whose loss or
/// truncation by a power cut only costs a cache miss (their readers treat an empty or
/// unparsable file as absent). Readers never see a half-written file while the system runs.
pub(crate) fn replace_file(store: &Store, target: &Path, bytes: &[u8]) -> Result<()> {
    let (mut file, temp) = create_temp(store, "file")?;
    let result = (|| {
        file.write_all(bytes).at("write", &temp)?;
        std::fs::rename(&temp, target).at("rename temp file into place at", target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Bytes an unprivileged writer may still use on the file system holding `path` (its
/// directory, when `path` itself does not exist yet).
pub(crate) fn free_bytes(path: &Path) -> Option<u64> {
    let probe = if path.exists() { path } else { path.parent()? };
    rustix::fs::statvfs(probe)
        .ok()
        .map(|st| st.f_bavail.saturating_mul(st.f_frsize))
}

/// `1.5 GiB`, `300 MiB`, `12 KiB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
