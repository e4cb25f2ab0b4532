//! Copying a path's owner, mode, xattrs and times, for merging an overlay upper directory
//! into its root (`crate::overlay::merge_upper`).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
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
    // SAFETY: `c` is a NUL-terminated path and `times` two valid timespecs, both alive for
    // the call.
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
        // SAFETY: `c` is a NUL-terminated path alive for the call.
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
