//! Where the store lives when `--root` is not given.

use std::path::PathBuf;

use crate::{Result, StoreError};

/// `$RBUILD_ROOT`; else `/var/lib/rbuild` for root; else `$XDG_DATA_HOME/rbuild`, falling back
/// to `~/.local/share/rbuild`.
pub fn default_root() -> Result<PathBuf> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(root) = env("RBUILD_ROOT") {
        return Ok(PathBuf::from(root));
    }
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/rbuild"));
    }
    if let Some(data) = env("XDG_DATA_HOME").map(PathBuf::from) {
        if data.is_absolute() {
            return Ok(data.join("rbuild"));
        }
    }
    match env("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/rbuild")),
        None => Err(StoreError::Invalid(
            "cannot choose a store directory: neither RBUILD_ROOT nor HOME is set (use --root)"
                .into(),
        )),
    }
}
