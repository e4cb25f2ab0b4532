//! Stand-ins for a tree's entries: an entry made in another directory with the same type,
//! owner, mode, size, times, device number, link target and xattrs as the original, but
//! none of its bytes (a regular file becomes a sparse file of the same size). The walk
//! snapshotter ([`crate::walk`]) cannot tell a stand-in from its original, so a step that
//! writes into a small tree of stand-ins (the entries it can touch) reports the changes it
//! would have reported on the whole tree (the executor's COPY into an empty tree).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::walk::Meta;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn ctx<'p>(what: &str, p: &'p Path) -> impl FnOnce(io::Error) -> io::Error + 'p {
    let what = what.to_string();
    move |e| io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
}

/// Makes `dst` (which must not exist; its parent must) a stand-in for `src` (not followed)
/// and returns the stand-in's walk record, which the walk compares equal to `src`'s. The
/// parent's times are kept (making an entry in a directory changes its mtime). Needs the
/// permissions of root (owners, device nodes). A socket cannot be made: an error of kind
/// `Unsupported`.
pub fn replicate(src: &Path, dst: &Path) -> io::Result<Meta> {
    let md = std::fs::symlink_metadata(src).map_err(ctx("reading", src))?;
    let parent = dst.parent().map(Path::to_path_buf);
    let parent_md = match &parent {
        Some(p) => Some(std::fs::symlink_metadata(p).map_err(ctx("reading", p))?),
        None => None,
    };
    let ft = md.file_type();
    if ft.is_dir() {
        std::fs::create_dir(dst).map_err(ctx("creating", dst))?;
    } else if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(ctx("reading link", src))?;
        std::os::unix::fs::symlink(&target, dst).map_err(ctx("creating link", dst))?;
    } else if ft.is_file() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(dst)
            .map_err(ctx("creating", dst))?;
        // A hole of the same size: the walk compares sizes, never bytes.
        f.set_len(md.size()).map_err(ctx("sizing", dst))?;
    } else if ft.is_fifo() || ft.is_block_device() || ft.is_char_device() {
        let c = cpath(dst)?;
        let kind = md.mode() & libc::S_IFMT;
        // SAFETY: `c` is a NUL-terminated path alive for the call; mknod only reads it.
        if unsafe { libc::mknod(c.as_ptr(), kind | 0o600, md.rdev() as libc::dev_t) } != 0 {
            return Err(ctx("creating", dst)(io::Error::last_os_error()));
        }
    } else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{} is a socket: no stand-in is made for it", src.display()),
        ));
    }
    copy_owner_mode_xattrs(src, dst, &md)?;
    crate::copy::set_times(dst, &md).map_err(ctx("setting times of", dst))?;
    if let (Some(parent), Some(parent_md)) = (&parent, &parent_md) {
        crate::copy::set_times(parent, parent_md).map_err(ctx("setting times of", parent))?;
    }
    let made = Meta::of(dst)?;
    let original = Meta::of(src)?;
    // Inode, link count and ctime are the stand-in's own: what a step does to it is
    // compared with them, as with the original's in the full tree.
    let compared = Meta {
        ino: original.ino,
        nlink: original.nlink,
        ctime: original.ctime,
        ..made.clone()
    };
    if !compared.same(&original) {
        return Err(io::Error::other(format!(
            "the stand-in {} differs from {} (an xattr or owner that could not be set)",
            dst.display(),
            src.display()
        )));
    }
    Ok(made)
}

/// Owner, mode and xattrs (overlay's own excluded) of `src` onto `dst`.
fn copy_owner_mode_xattrs(src: &Path, dst: &Path, md: &std::fs::Metadata) -> io::Result<()> {
    std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid())).map_err(ctx("chown", dst))?;
    if md.file_type().is_symlink() {
        return Ok(());
    }
    let c = cpath(dst)?;
    // After chown, which clears setuid/setgid bits.
    // SAFETY: `c` is a NUL-terminated path alive for the call.
    if unsafe { libc::chmod(c.as_ptr(), md.mode() & 0o7777) } != 0 {
        return Err(ctx("chmod", dst)(io::Error::last_os_error()));
    }
    let names = match xattr::list(src) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(ctx("listing the xattrs of", src)(e)),
    };
    for name in names {
        if crate::meta::is_overlay_private_xattr(name.as_bytes()) {
            continue;
        }
        if let Some(value) = xattr::get(src, &name).map_err(ctx("reading the xattrs of", src))? {
            xattr::set(dst, &name, &value).map_err(ctx("setting xattrs on", dst))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The walk's record without what is a stand-in's own (inode, link count, ctime).
    fn visible(meta: Meta) -> Meta {
        Meta {
            ino: 0,
            nlink: 0,
            ctime: (0, 0),
            ..meta
        }
    }

    #[test]
    fn a_stand_in_walks_as_its_original_and_keeps_its_parents_times() {
        let dir = tempfile::tempdir().unwrap();
        let (src, out) = (dir.path().join("src"), dir.path().join("out"));
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/f"), vec![7u8; 5000]).unwrap();
        // A whole-second mtime, as a tar leaves it.
        std::fs::File::options()
            .write(true)
            .open(src.join("d/f"))
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
            .unwrap();
        std::fs::set_permissions(src.join("d/f"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::lchown(src.join("d/f"), Some(1234), Some(5678)).unwrap();
        xattr::set(src.join("d/f"), "user.note", b"kept").unwrap();
        std::os::unix::fs::symlink("../elsewhere", src.join("d/l")).unwrap();
        std::fs::create_dir(&out).unwrap();
        let before_out = Meta::of(&out).unwrap();
        replicate(&src.join("d"), &out.join("d")).unwrap();
        let d_mtime = Meta::of(&out.join("d")).unwrap().mtime;
        for name in ["d/f", "d/l"] {
            let made = replicate(&src.join(name), &out.join(name)).unwrap();
            assert_eq!(made, Meta::of(&out.join(name)).unwrap(), "{name}");
            assert_eq!(
                visible(made),
                visible(Meta::of(&src.join(name)).unwrap()),
                "{name}"
            );
        }
        // The stand-in holds no bytes but has the size; the link its target.
        assert_eq!(std::fs::metadata(out.join("d/f")).unwrap().len(), 5000);
        assert!(std::fs::metadata(out.join("d/f")).unwrap().blocks() < 8);
        assert_eq!(
            std::fs::read_link(out.join("d/l")).unwrap(),
            Path::new("../elsewhere")
        );
        // Parents' mtimes as they were.
        assert_eq!(Meta::of(&out.join("d")).unwrap().mtime, d_mtime);
        assert_eq!(Meta::of(&out).unwrap().mtime, before_out.mtime);
        // The directory's record is its original's too.
        assert_eq!(
            visible(Meta::of(&out.join("d")).unwrap()).mode,
            visible(Meta::of(&src.join("d")).unwrap()).mode
        );
    }

    #[test]
    fn a_socket_has_no_stand_in() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let err = replicate(&socket, &dir.path().join("copy")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");
        assert!(!dir.path().join("copy").exists());
    }
}
