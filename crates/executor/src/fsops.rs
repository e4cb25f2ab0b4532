//! Writing into a root filesystem without ever leaving it: container paths are resolved
//! with every symlink and `..` kept inside the root, missing directories are created, and
//! the final component of a destination is replaced, never followed.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rbuild_sandbox::rootpath::host_path_in_root;

pub use crate::owners::maybe_run_root_worker;
pub(crate) use crate::owners::{
    chown_in_build, container_root, owners, remove_tree, shift_into_range, Owners, OwnersScope,
};

/// Owner and mode applied to what a COPY writes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ownership {
    /// `None` keeps the source's owner.
    pub owner: Option<(u32, u32)>,
    /// `None` keeps the source's permission bits.
    pub mode: Option<crate::chmod::Chmod>,
}

/// `path` split into normal components, `..` popping (never above the root), as the
/// container sees an absolute path.
pub(crate) fn clean_components(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Go's `path.Join("/", base, rel)` for container paths; absolute `rel` wins.
pub(crate) fn join_container(base: &str, rel: &str) -> String {
    let joined = if rel.starts_with('/') {
        rel.to_string()
    } else {
        format!("{base}/{rel}")
    };
    format!("/{}", clean_components(&joined).join("/"))
}

/// The host path of directory `container_path` in `root`, creating missing directories
/// (mode 0755, owned by `owner`). Fails when a component exists and is not a directory.
pub(crate) fn ensure_dir(
    root: &Path,
    container_path: &str,
    owner: (u32, u32),
) -> Result<PathBuf, String> {
    ensure_dir_at(root, container_path, owner, 0)
}

/// Symlinks followed before giving up, as the kernel does (ELOOP).
const MAX_LINKS: usize = 40;

fn ensure_dir_at(
    root: &Path,
    container_path: &str,
    owner: (u32, u32),
    depth: usize,
) -> Result<PathBuf, String> {
    if depth > MAX_LINKS {
        return Err(format!(
            "too many levels of symbolic links resolving {container_path}"
        ));
    }
    let mut prefix = String::new();
    let mut host = root.to_path_buf();
    for comp in clean_components(container_path) {
        prefix.push('/');
        prefix.push_str(&comp);
        match host_path_in_root(root, &prefix).map_err(|e| format!("resolving {prefix}: {e}"))? {
            Some(existing) => {
                let md = fs::metadata(&existing).map_err(|e| format!("reading {prefix}: {e}"))?;
                if !md.is_dir() {
                    return Err(format!("{prefix} exists and is not a directory"));
                }
                host = existing;
            }
            None => {
                let new = host.join(&comp);
                if let Ok(target) = fs::read_link(&new) {
                    // A dangling symlink: create what it points to, inside the root.
                    let parent = if prefix.len() > comp.len() + 1 {
                        &prefix[..prefix.len() - comp.len() - 1]
                    } else {
                        "/"
                    };
                    let resolved = join_container(parent, &target.to_string_lossy());
                    host = ensure_dir_at(root, &resolved, owner, depth + 1)?;
                    prefix = if resolved == "/" {
                        String::new()
                    } else {
                        resolved
                    };
                    continue;
                }
                create_dir(&new, 0o755).map_err(|e| format!("creating directory {prefix}: {e}"))?;
                chown_in_build(&new, owner.0, owner.1)
                    .map_err(|e| format!("creating directory {prefix}: {e}"))?;
                host = new;
            }
        }
    }
    Ok(host)
}

/// Whether `container_path` is an existing directory in `root` (symlinks resolved inside).
pub(crate) fn is_dir_in_root(root: &Path, container_path: &str) -> bool {
    matches!(host_path_in_root(root, container_path), Ok(Some(p)) if p.is_dir())
}

pub(crate) fn lchown(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

/// Whether the build runs as host root (euid 0); otherwise it is a rootless build.
pub(crate) fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The effective uid and gid of this process.
pub(crate) fn current_ids() -> (u32, u32) {
    // SAFETY: geteuid/getegid have no preconditions and cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// `flock(file, operation)`, retried when a signal interrupts it: `Ok(false)` when a
/// non-blocking request finds the lock held elsewhere.
pub(crate) fn flock(file: &fs::File, operation: libc::c_int) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor the caller owns.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if operation & libc::LOCK_NB != 0 => return Ok(false),
            _ => return Err(err),
        }
    }
}

pub(crate) use rbuild_rootfs::set_mtime;

/// Fails clearly when this build cannot give files to `uid:gid`.
fn check_owner(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    match owners().cannot_own(uid, gid) {
        Some(why) => Err(format!("chown of {} to {uid}:{gid}: {why}", path.display())),
        None => Ok(()),
    }
}

/// A new directory with `mode` (whatever the umask).
fn create_dir(path: &Path, mode: u32) -> Result<(), String> {
    if let Some(root) = container_root() {
        return root.create_dir(path, mode).map_err(|e| e.to_string());
    }
    fs::create_dir(path).map_err(|e| e.to_string())?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}

/// Removes a non-directory, or with `dir` an empty directory.
fn remove(path: &Path, dir: bool) -> Result<(), String> {
    if let Some(root) = container_root() {
        return root.remove(path, dir).map_err(|e| e.to_string());
    }
    if dir {
        fs::remove_dir(path)
    } else {
        fs::remove_file(path)
    }
    .map_err(|e| e.to_string())
}

/// [`set_mtime`] on a path of the rootfs being written.
fn set_mtime_in_build(path: &Path, secs: i64, nanos: i64) -> Result<(), String> {
    match container_root() {
        Some(root) => root
            .set_metadata(path, None, None, Some((secs, nanos)))
            .map_err(|e| e.to_string()),
        None => set_mtime(path, secs, nanos).map_err(|e| e.to_string()),
    }
    .map_err(|e| format!("setting mtime of {}: {e}", path.display()))
}

/// Removes whatever non-directory is at `dst` (a symlink is removed, not followed).
fn clear_non_dir(dst: &Path) -> Result<(), String> {
    match fs::symlink_metadata(dst) {
        Ok(md) if md.is_dir() => Err(format!(
            "cannot replace directory {} with a non-directory",
            dst.display()
        )),
        Ok(_) => remove(dst, false).map_err(|e| format!("replacing {}: {e}", dst.display())),
        Err(_) => Ok(()),
    }
}

fn apply_meta(
    dst: &Path,
    src_md: &fs::Metadata,
    own: Ownership,
    is_link: bool,
) -> Result<(), String> {
    // A source's own owner is a host id of another rootfs of this build (or of the
    // context): in the image it means the container id the build's map gives it.
    let (uid, gid) = own
        .owner
        .unwrap_or_else(|| owners().container_ids(src_md.uid(), src_md.gid()));
    let mode = own.mode.map_or(src_md.mode() & 0o7777, |m| {
        m.apply(src_md.mode(), src_md.is_dir())
    });
    if let Some(root) = container_root() {
        check_owner(dst, uid, gid)?;
        let mtime = (src_md.mtime(), src_md.mtime_nsec());
        return root
            .set_metadata(
                dst,
                Some((uid, gid)),
                (!is_link).then_some(mode),
                Some(mtime),
            )
            .map_err(|e| e.to_string());
    }
    chown_in_build(dst, uid, gid)?;
    if !is_link {
        // After chown, which clears setuid/setgid bits.
        fs::set_permissions(dst, fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod of {}: {e}", dst.display()))?;
    }
    set_mtime(dst, src_md.mtime(), src_md.mtime_nsec())
        .map_err(|e| format!("setting mtime of {}: {e}", dst.display()))
}

/// Copies one non-directory (file or symlink, never followed) from `src` to `dst`.
pub(crate) fn copy_leaf(src: &Path, dst: &Path, own: Ownership) -> Result<(), String> {
    let md = fs::symlink_metadata(src).map_err(|e| format!("reading {}: {e}", src.display()))?;
    clear_non_dir(dst)?;
    let ft = md.file_type();
    if ft.is_symlink() {
        let target =
            fs::read_link(src).map_err(|e| format!("reading link {}: {e}", src.display()))?;
        match container_root() {
            Some(root) => root.symlink(&target, dst).map_err(|e| e.to_string()),
            None => std::os::unix::fs::symlink(&target, dst).map_err(|e| e.to_string()),
        }
        .map_err(|e| format!("creating link {}: {e}", dst.display()))?;
        apply_meta(dst, &md, own, true)
    } else if ft.is_file() || ft.is_socket() {
        // BuildKit's context transfer sends a Unix socket as an empty regular file with the
        // socket's permission bits (`testCopySocket`).
        let content = if ft.is_socket() {
            Path::new("/dev/null")
        } else {
            src
        };
        let mut input =
            fs::File::open(content).map_err(|e| format!("opening {}: {e}", src.display()))?;
        if let Some(root) = container_root() {
            // One request: content, owner, mode and mtime (as apply_meta would set them).
            let (uid, gid) = own
                .owner
                .unwrap_or_else(|| owners().container_ids(md.uid(), md.gid()));
            check_owner(dst, uid, gid)?;
            let mode = own
                .mode
                .map_or(md.mode() & 0o7777, |m| m.apply(md.mode(), false));
            let mtime = (md.mtime(), md.mtime_nsec());
            return root
                .copy_file(&input, dst, Some((uid, gid)), Some(mode), Some(mtime))
                .map_err(|e| format!("copying {} to {}: {e}", src.display(), dst.display()));
        }
        let mut output = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(dst)
            .map_err(|e| format!("creating {}: {e}", dst.display()))?;
        std::io::copy(&mut input, &mut output)
            .map_err(|e| format!("copying {}: {e}", src.display()))?;
        drop(output);
        apply_meta(dst, &md, own, false)
    } else {
        Err(format!(
            "{} is a special file (device or fifo); COPY does not support it",
            src.display()
        ))
    }
}

/// Creates (or reuses) directory `dst` and gives it `src`'s metadata.
pub(crate) fn make_dir_like(
    src_md: &fs::Metadata,
    dst: &Path,
    own: Ownership,
) -> Result<(), String> {
    match fs::symlink_metadata(dst) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => {
            remove(dst, false).map_err(|e| format!("replacing {}: {e}", dst.display()))?;
            create_dir(dst, 0o700).map_err(|e| format!("creating {}: {e}", dst.display()))?;
        }
        Err(_) => create_dir(dst, 0o700).map_err(|e| format!("creating {}: {e}", dst.display()))?,
    }
    apply_meta(dst, src_md, own, false)
}

/// What to do with one entry of a directory being copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    Include,
    /// Excluded itself, but something below it may be included (a `!` exception).
    Descend,
    Skip,
}

/// Copies the contents of directory `src` into existing directory `dst`, asking `filter`
/// about each entry by its path relative to `src`. Directory mtimes are set after their
/// children are written so they keep the source's.
pub(crate) fn copy_dir_contents(
    src: &Path,
    dst: &Path,
    own: Ownership,
    filter: &dyn Fn(&Path, bool) -> Filter,
) -> Result<(), String> {
    copy_dir_rec(src, dst, Path::new(""), own, filter)
}

fn copy_dir_rec(
    src: &Path,
    dst: &Path,
    rel: &Path,
    own: Ownership,
    filter: &dyn Fn(&Path, bool) -> Filter,
) -> Result<(), String> {
    let mut names: Vec<_> = fs::read_dir(src)
        .map_err(|e| format!("reading directory {}: {e}", src.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading directory {}: {e}", src.display()))?;
    names.sort();
    for name in names {
        let s = src.join(&name);
        let d = dst.join(&name);
        let r = rel.join(&name);
        let md = fs::symlink_metadata(&s).map_err(|e| format!("reading {}: {e}", s.display()))?;
        match filter(&r, md.is_dir()) {
            Filter::Skip => continue,
            Filter::Descend if md.is_dir() => {
                // Only create the directory if something inside ends up included.
                let staged = d.exists();
                if !staged {
                    create_dir(&d, 0o755).map_err(|e| format!("creating {}: {e}", d.display()))?;
                }
                copy_dir_rec(&s, &d, &r, own, filter)?;
                let empty = fs::read_dir(&d)
                    .map(|mut it| it.next().is_none())
                    .unwrap_or(false);
                if !staged && empty {
                    remove(&d, true).map_err(|e| format!("removing {}: {e}", d.display()))?;
                } else {
                    apply_meta(&d, &md, own, false)?;
                }
            }
            Filter::Descend => continue,
            Filter::Include if md.is_dir() => {
                make_dir_like(&md, &d, own)?;
                copy_dir_rec(&s, &d, &r, own, filter)?;
                // Writing children changed the mtime: put the source's back.
                set_mtime_in_build(&d, md.mtime(), md.mtime_nsec())?;
            }
            Filter::Include => copy_leaf(&s, &d, own)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_dir_stays_inside_root_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink("/../../outside", root.join("link")).unwrap();
        let host = ensure_dir(&root, "/link/sub", (0, 0)).unwrap();
        assert!(host.starts_with(&root), "{host:?} left the root");
        assert!(root.join("outside/sub").is_dir());
        assert!(!dir.path().join("outside").exists());
    }

    /// A root whose `/etc` is a symlink out of it (`../../host-etc`, resolved inside the
    /// root as `/host-etc`), beside a directory `host-etc` outside the root with a file.
    fn hostile_root() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("host-etc");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("passwd"), "host secret").unwrap();
        std::os::unix::fs::symlink("../../host-etc", root.join("etc")).unwrap();
        (dir, root, outside)
    }

    #[test]
    fn writing_a_file_through_symlinks_stays_inside_root() {
        let (dir, root, outside) = hostile_root();
        let src = dir.path().join("src");
        fs::write(&src, "from the build").unwrap();
        // The parent resolves inside the root (the dangling link's target is created there).
        let parent = ensure_dir(&root, "/etc", (0, 0)).unwrap();
        assert!(parent.starts_with(&root), "{parent:?} left the root");
        copy_leaf(&src, &parent.join("passwd"), Ownership::default()).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("host-etc/passwd")).unwrap(),
            "from the build"
        );
        // A destination that is itself a symlink out is replaced, never followed.
        std::os::unix::fs::symlink(outside.join("passwd"), root.join("shadow")).unwrap();
        copy_leaf(&src, &root.join("shadow"), Ownership::default()).unwrap();
        assert!(fs::symlink_metadata(root.join("shadow")).unwrap().is_file());
        assert_eq!(
            fs::read_to_string(outside.join("passwd")).unwrap(),
            "host secret"
        );
    }

    #[test]
    fn chown_of_a_symlink_out_of_the_root_changes_the_link_only() {
        let (_dir, root, outside) = hostile_root();
        let before = fs::metadata(outside.join("passwd")).unwrap();
        std::os::unix::fs::symlink(outside.join("passwd"), root.join("link")).unwrap();
        // Tests run as root (CI does): the build's owners are host ids.
        chown_in_build(&root.join("link"), 4321, 4321).unwrap();
        let link = fs::symlink_metadata(root.join("link")).unwrap();
        assert_eq!((link.uid(), link.gid()), (4321, 4321));
        let after = fs::metadata(outside.join("passwd")).unwrap();
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    }

    #[test]
    fn reading_through_symlinks_stays_inside_root() {
        let (_dir, root, _outside) = hostile_root();
        // `/etc/passwd` means `/host-etc/passwd` of the root, which does not exist: the
        // host file of the same name is not what is found.
        assert_eq!(host_path_in_root(&root, "/etc/passwd").unwrap(), None);
        assert!(!is_dir_in_root(&root, "/etc"));
        fs::create_dir_all(root.join("host-etc")).unwrap();
        fs::write(root.join("host-etc/passwd"), "the image's").unwrap();
        let found = host_path_in_root(&root, "/etc/../etc/passwd")
            .unwrap()
            .unwrap();
        assert!(found.starts_with(&root), "{found:?} left the root");
        assert_eq!(fs::read_to_string(found).unwrap(), "the image's");
    }

    #[test]
    fn join_container_cleans() {
        assert_eq!(join_container("/app", "x/../y"), "/app/y");
        assert_eq!(join_container("/app", "/abs"), "/abs");
        assert_eq!(join_container("/", "../.."), "/");
    }
}
