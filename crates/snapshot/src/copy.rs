//! A faithful private copy of a rootfs for the walk snapshotter: content, modes, owners,
//! xattrs, hardlinks, symlinks, devices, fifos and mtimes.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn ctx(e: io::Error, what: &str, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
}

pub(crate) fn set_times(path: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    let c = cpath(path)?;
    // SAFETY: a NUL-terminated path and an array of two timespecs, both alive across the
    // call; the kernel only reads them.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn copy_owner_mode_xattrs(
    src: &Path,
    dst: &Path,
    meta: &std::fs::Metadata,
) -> io::Result<()> {
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| ctx(e, "chown", dst))?;
    if !meta.file_type().is_symlink() {
        // After chown, which clears setuid/setgid bits.
        let c = cpath(dst)?;
        // SAFETY: chmod only reads the NUL-terminated path, alive across the call.
        if unsafe { libc::chmod(c.as_ptr(), meta.mode() & 0o7777) } != 0 {
            return Err(ctx(io::Error::last_os_error(), "chmod", dst));
        }
        if let Ok(names) = xattr::list(src) {
            for name in names {
                if let Some(value) = xattr::get(src, &name)? {
                    xattr::set(dst, &name, &value).map_err(|e| ctx(e, "setting xattrs on", dst))?;
                }
            }
        }
    }
    Ok(())
}

/// Copies the tree `src` into the new directory `dst`. Never follows symlinks.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(src).map_err(|e| ctx(e, "reading", src))?;
    std::fs::create_dir(dst).map_err(|e| ctx(e, "creating", dst))?;
    let mut links = HashMap::new();
    copy_dir(src, dst, &mut links)?;
    copy_owner_mode_xattrs(src, dst, &meta)?;
    set_times(dst, &meta)
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
) -> io::Result<()> {
    for entry in std::fs::read_dir(src).map_err(|e| ctx(e, "reading", src))? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&from)?;
        let ft = meta.file_type();
        if !ft.is_dir() && meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                std::fs::hard_link(first, &to).map_err(|e| ctx(e, "linking", &to))?;
                continue;
            }
            links.insert((meta.dev(), meta.ino()), to.clone());
        }
        if ft.is_dir() {
            std::fs::create_dir(&to).map_err(|e| ctx(e, "creating", &to))?;
            copy_dir(&from, &to, links)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)
                .map_err(|e| ctx(e, "creating", &to))?;
        } else if ft.is_file() {
            std::fs::copy(&from, &to).map_err(|e| ctx(e, "copying", &from))?;
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() || ft.is_socket() {
            let c = cpath(&to)?;
            // SAFETY: mknod only reads the NUL-terminated path, alive across the call.
            if unsafe { libc::mknod(c.as_ptr(), meta.mode(), meta.rdev()) } != 0 {
                return Err(ctx(io::Error::last_os_error(), "mknod", &to));
            }
        }
        copy_owner_mode_xattrs(&from, &to, &meta)?;
        set_times(&to, &meta)?;
    }
    Ok(())
}
