//! Removing the stores the harness made, mounts and all.

use std::path::Path;

use anyhow::{Context, Result};

/// Removes a directory tree, first detaching whatever is mounted inside it (Buildah's
/// overlay driver mounts its own storage directory).
pub fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    detach_mounts_under(dir);
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

fn detach_mounts_under(root: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let Ok(root) = root.canonicalize() else {
        return;
    };
    let mut mounts: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(&root))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        if let Ok(c) = std::ffi::CString::new(m) {
            // SAFETY: a valid NUL-terminated path; a failed unmount is harmless here.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
