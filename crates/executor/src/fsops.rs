//! Writing into a root filesystem without ever leaving it: container paths are resolved
//! with every symlink and `..` kept inside the root, missing directories are created, and
//! the final component of a destination is replaced, never followed.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rbuild_inroot::host_path_in_root;

use crate::error::{BuildError, Result};

pub use crate::owners::maybe_run_root_worker;
pub(crate) use crate::owners::{chown_in_build, remove_tree, shift_into_range, Owners};

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
/// (mode 0755, owned by `owner`) with the one in-root resolver (`rbuild-inroot`): symlinks
/// and `..` stay inside the root, a dangling symlink's target is created inside it. Fails
/// when a component exists and is not a directory.
pub(crate) fn ensure_dir(
    owners: &Owners,
    root: &Path,
    container_path: &str,
    owner: (u32, u32),
) -> Result<PathBuf> {
    let cleaned = format!("/{}", clean_components(container_path).join("/"));
    let root_fd = rbuild_inroot::open_root(root).map_err(BuildError::io(
        format!("resolving {cleaned}: opening the root"),
        root,
    ))?;
    // The directory is made through its host path because, rootless, the container-root
    // worker makes it (as the owner the build's id map gives); the path is the resolver's
    // real one (no symlink in it) and the walk reopens what was made without following it.
    let mut failed = None;
    let mut mkdir = |missing: &rbuild_inroot::Missing<'_>| -> std::io::Result<()> {
        let new = root.join(missing.path());
        // Errors name the container path: `creating directory /app: …`.
        let shown = PathBuf::from(format!("/{}", missing.path().display()));
        let doing = "creating directory";
        let made = match owners.container_root() {
            Some(container_root) => {
                container_root
                    .create_dir(&new, 0o755)
                    .map_err(BuildError::container_root(format!(
                        "{doing} {}",
                        shown.display()
                    )))
            }
            None => fs::create_dir(&new)
                .and_then(|()| fs::set_permissions(&new, fs::Permissions::from_mode(0o755)))
                .map_err(BuildError::io(doing, &shown)),
        }
        .and_then(|()| {
            chown_in_build(owners, &new, owner.0, owner.1)
                .map_err(|e| e.context(format!("{doing} {}", shown.display())))
        });
        made.map_err(|e| {
            let io = std::io::Error::other(e.to_string());
            failed = Some(e);
            io
        })
    };
    let resolved = rbuild_inroot::resolve(
        std::os::fd::AsFd::as_fd(&root_fd),
        Path::new(&cleaned),
        rbuild_inroot::Symlinks::ResolveInRoot,
        Some(&mut mkdir),
    );
    if let Some(e) = failed {
        return Err(e);
    }
    let resolved = resolved.map_err(|e| match e {
        rbuild_inroot::Error::NotADirectory { path } => {
            BuildError::other(format!("/{} exists and is not a directory", path.display()))
        }
        rbuild_inroot::Error::TooManySymlinks { .. } => BuildError::other(format!(
            "too many levels of symbolic links resolving {container_path}"
        )),
        source => BuildError::InRoot {
            doing: format!("resolving {cleaned}"),
            source,
        },
    })?;
    if resolved.file_type != rbuild_inroot::FileType::Directory {
        return Err(BuildError::other(format!(
            "/{} exists and is not a directory",
            resolved.path.display()
        )));
    }
    Ok(root.join(resolved.path))
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
fn check_owner(owners: &Owners, path: &Path, uid: u32, gid: u32) -> Result<()> {
    match owners.cannot_own(uid, gid) {
        Some(why) => Err(BuildError::other(format!(
            "chown of {} to {uid}:{gid}: {why}",
            path.display()
        ))),
        None => Ok(()),
    }
}

/// A new directory with `mode` (whatever the umask); a failure says `{doing} {path}`.
fn create_dir(owners: &Owners, path: &Path, mode: u32, doing: &str) -> Result<()> {
    if let Some(root) = owners.container_root() {
        return root
            .create_dir(path, mode)
            .map_err(BuildError::container_root(format!(
                "{doing} {}",
                path.display()
            )));
    }
    fs::create_dir(path).map_err(BuildError::io(doing, path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(BuildError::io(doing, path))
}

/// Removes a non-directory, or with `dir` an empty directory; a failure says
/// `{doing} {path}`.
fn remove(owners: &Owners, path: &Path, dir: bool, doing: &str) -> Result<()> {
    if let Some(root) = owners.container_root() {
        return root
            .remove(path, dir)
            .map_err(BuildError::container_root(format!(
                "{doing} {}",
                path.display()
            )));
    }
    if dir {
        fs::remove_dir(path)
    } else {
        fs::remove_file(path)
    }
    .map_err(BuildError::io(doing, path))
}

/// [`set_mtime`] on a path of the rootfs being written.
fn set_mtime_in_build(owners: &Owners, path: &Path, secs: i64, nanos: i64) -> Result<()> {
    const DOING: &str = "setting mtime of";
    match owners.container_root() {
        Some(root) => root
            .set_metadata(path, None, None, Some((secs, nanos)))
            .map_err(BuildError::container_root(format!(
                "{DOING} {}",
                path.display()
            ))),
        None => set_mtime(path, secs, nanos).map_err(BuildError::io(DOING, path)),
    }
}

/// Removes whatever non-directory is at `dst` (a symlink is removed, not followed).
fn clear_non_dir(owners: &Owners, dst: &Path) -> Result<()> {
    match fs::symlink_metadata(dst) {
        Ok(md) if md.is_dir() => Err(BuildError::other(format!(
            "cannot replace directory {} with a non-directory",
            dst.display()
        ))),
        Ok(_) => remove(owners, dst, false, "replacing"),
        Err(_) => Ok(()),
    }
}

fn apply_meta(
    owners: &Owners,
    dst: &Path,
    src_md: &fs::Metadata,
    own: Ownership,
    is_link: bool,
) -> Result<()> {
    // A source's own owner is a host id of another rootfs of this build (or of the
    // context): in the image it means the container id the build's map gives it.
    let (uid, gid) = own.owner.unwrap_or_else(|| owners.source_ids(src_md));
    let mode = own.mode.map_or(src_md.mode() & 0o7777, |m| {
        m.apply(src_md.mode(), src_md.is_dir())
    });
    if src_md.is_dir() && mode & 0o700 != 0o700 {
        if let Owners::Recorded(_) = owners {
            // The build user owns the directory on the disk and has no CAP_DAC_OVERRIDE: it
            // could neither write the entries below it nor read them back for the layer.
            return Err(BuildError::other(format!(
                "directory {} would get mode {mode:04o}, which keeps its owner from reading, \
                 writing or searching it: the restricted isolation writes and reads a stage's \
                 files as the build user, whose own modes bind it (BuildKit, as root, gives \
                 the directory that mode)",
                dst.display()
            )));
        }
    }
    if let Some(root) = owners.container_root() {
        check_owner(owners, dst, uid, gid)?;
        let mtime = (src_md.mtime(), src_md.mtime_nsec());
        return root
            .set_metadata(
                dst,
                Some((uid, gid)),
                (!is_link).then_some(mode),
                Some(mtime),
            )
            .map_err(BuildError::container_root(""));
    }
    chown_in_build(owners, dst, uid, gid)?;
    if !is_link {
        // After chown, which clears setuid/setgid bits.
        fs::set_permissions(dst, fs::Permissions::from_mode(mode))
            .map_err(BuildError::io("chmod of", dst))?;
    }
    set_mtime(dst, src_md.mtime(), src_md.mtime_nsec())
        .map_err(BuildError::io("setting mtime of", dst))
}

/// Copies one non-directory (file or symlink, never followed) from `src` to `dst`.
pub(crate) fn copy_leaf(owners: &Owners, src: &Path, dst: &Path, own: Ownership) -> Result<()> {
    let md = fs::symlink_metadata(src).map_err(BuildError::io("reading", src))?;
    clear_non_dir(owners, dst)?;
    let ft = md.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(src).map_err(BuildError::io("reading link", src))?;
        match owners.container_root() {
            Some(root) => root
                .symlink(&target, dst)
                .map_err(BuildError::container_root(format!(
                    "creating link {}",
                    dst.display()
                ))),
            None => std::os::unix::fs::symlink(&target, dst)
                .map_err(BuildError::io("creating link", dst)),
        }?;
        apply_meta(owners, dst, &md, own, true)
    } else if ft.is_file() || ft.is_socket() {
        // BuildKit's context transfer sends a Unix socket as an empty regular file with the
        // socket's permission bits (`testCopySocket`).
        let content = if ft.is_socket() {
            Path::new("/dev/null")
        } else {
            src
        };
        let mut input = fs::File::open(content).map_err(BuildError::io("opening", src))?;
        if let Some(root) = owners.container_root() {
            // One request: content, owner, mode and mtime (as apply_meta would set them).
            let (uid, gid) = own.owner.unwrap_or_else(|| owners.source_ids(&md));
            check_owner(owners, dst, uid, gid)?;
            let mode = own
                .mode
                .map_or(md.mode() & 0o7777, |m| m.apply(md.mode(), false));
            let mtime = (md.mtime(), md.mtime_nsec());
            return root
                .copy_file(&input, dst, Some((uid, gid)), Some(mode), Some(mtime))
                .map_err(BuildError::container_root(format!(
                    "copying {} to {}",
                    src.display(),
                    dst.display()
                )));
        }
        let mut output = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(dst)
            .map_err(BuildError::io("creating", dst))?;
        std::io::copy(&mut input, &mut output).map_err(BuildError::io("copying", src))?;
        drop(output);
        apply_meta(owners, dst, &md, own, false)
    } else {
        Err(BuildError::other(format!(
            "{} is a special file (device or fifo); COPY does not support it",
            src.display()
        )))
    }
}

/// Creates (or reuses) directory `dst` and gives it `src`'s metadata.
pub(crate) fn make_dir_like(
    owners: &Owners,
    src_md: &fs::Metadata,
    dst: &Path,
    own: Ownership,
) -> Result<()> {
    match fs::symlink_metadata(dst) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => {
            remove(owners, dst, false, "replacing")?;
            create_dir(owners, dst, 0o700, "creating")?;
        }
        Err(_) => create_dir(owners, dst, 0o700, "creating")?,
    }
    apply_meta(owners, dst, src_md, own, false)
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
    owners: &Owners,
    src: &Path,
    dst: &Path,
    own: Ownership,
    filter: &dyn Fn(&Path, bool) -> Filter,
) -> Result<()> {
    copy_dir_rec(owners, src, dst, Path::new(""), own, filter)
}

fn copy_dir_rec(
    owners: &Owners,
    src: &Path,
    dst: &Path,
    rel: &Path,
    own: Ownership,
    filter: &dyn Fn(&Path, bool) -> Filter,
) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(src)
        .map_err(BuildError::io("reading directory", src))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(BuildError::io("reading directory", src))?;
    names.sort();
    for name in names {
        let s = src.join(&name);
        let d = dst.join(&name);
        let r = rel.join(&name);
        let md = fs::symlink_metadata(&s).map_err(BuildError::io("reading", &s))?;
        match filter(&r, md.is_dir()) {
            Filter::Skip => continue,
            Filter::Descend if md.is_dir() => {
                // Only create the directory if something inside ends up included.
                let staged = d.exists();
                if !staged {
                    create_dir(owners, &d, 0o755, "creating")?;
                }
                copy_dir_rec(owners, &s, &d, &r, own, filter)?;
                let empty = fs::read_dir(&d)
                    .map(|mut it| it.next().is_none())
                    .unwrap_or(false);
                if !staged && empty {
                    remove(owners, &d, true, "removing")?;
                } else {
                    apply_meta(owners, &d, &md, own, false)?;
                }
            }
            Filter::Descend => continue,
            Filter::Include if md.is_dir() => {
                make_dir_like(owners, &md, &d, own)?;
                copy_dir_rec(owners, &s, &d, &r, own, filter)?;
                // Writing children changed the mtime: put the source's back.
                set_mtime_in_build(owners, &d, md.mtime(), md.mtime_nsec())?;
            }
            Filter::Include => copy_leaf(owners, &s, &d, own)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under the restricted isolation the build user owns the files on the disk and no
    /// capability overrides their modes: a `COPY --chmod` giving a directory a mode that
    /// keeps its owner out (`go=rx,u=rw`: 0655) is refused naming the mode, before anything
    /// is written below it; one its owner may use (`a+X` on 0644: 0755) is copied.
    #[test]
    fn restricted_copy_refuses_a_directory_mode_that_locks_its_owner_out() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        fs::create_dir(&top).unwrap();
        let owners = Owners::Recorded(crate::in_place::InPlaceOwners::for_test(&top));
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/f"), "f").unwrap();
        let copy = |mode: &str, dst: &str| {
            let dst = dir.path().join(dst);
            fs::create_dir(&dst).unwrap();
            let own = Ownership {
                owner: None,
                mode: Some(crate::chmod::Chmod::parse(mode).unwrap()),
            };
            let copied = copy_dir_contents(&owners, &src, &dst, own, &|_, _| Filter::Include);
            (copied, dst)
        };
        let (refused, dst) = copy("go=rx,u=rw", "locked");
        let error = refused.unwrap_err().to_string();
        assert!(error.contains("mode 0655"), "{error}");
        assert!(!dst.join("sub/f").exists());
        let (copied, dst) = copy("a+X", "open");
        copied.unwrap();
        assert_eq!(fs::read(dst.join("sub/f")).unwrap(), b"f");
        assert_eq!(
            fs::symlink_metadata(dst.join("sub")).unwrap().mode() & 0o7777,
            0o755
        );
    }

    #[test]
    fn ensure_dir_stays_inside_root_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink("/../../outside", root.join("link")).unwrap();
        let host = ensure_dir(&Owners::Root, &root, "/link/sub", (0, 0)).unwrap();
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
        let parent = ensure_dir(&Owners::Root, &root, "/etc", (0, 0)).unwrap();
        assert!(parent.starts_with(&root), "{parent:?} left the root");
        copy_leaf(
            &Owners::Root,
            &src,
            &parent.join("passwd"),
            Ownership::default(),
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(root.join("host-etc/passwd")).unwrap(),
            "from the build"
        );
        // A destination that is itself a symlink out is replaced, never followed.
        std::os::unix::fs::symlink(outside.join("passwd"), root.join("shadow")).unwrap();
        copy_leaf(
            &Owners::Root,
            &src,
            &root.join("shadow"),
            Ownership::default(),
        )
        .unwrap();
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
        chown_in_build(&Owners::Root, &root.join("link"), 4321, 4321).unwrap();
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
    fn errors_are_typed_and_read_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = copy_leaf(
            &Owners::Root,
            &missing,
            &dir.path().join("dst"),
            Ownership::default(),
        )
        .unwrap_err();
        match &err {
            BuildError::Io { path, source, .. } => {
                assert_eq!(path, &missing);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("not an I/O error: {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with(&format!("reading {}: ", missing.display())),
            "{err}"
        );
        // A file where a directory must be: the container path is named.
        fs::write(dir.path().join("file"), "x").unwrap();
        let err = ensure_dir(&Owners::Root, dir.path(), "/file/sub", (0, 0)).unwrap_err();
        assert_eq!(err.to_string(), "/file exists and is not a directory");
    }

    #[test]
    fn join_container_cleans() {
        assert_eq!(join_container("/app", "x/../y"), "/app/y");
        assert_eq!(join_container("/app", "/abs"), "/abs");
        assert_eq!(join_container("/", "../.."), "/");
    }
}
