//! Writing into a root filesystem without ever leaving it: container paths are resolved
//! with every symlink and `..` kept inside the root, missing directories are created, and
//! the final component of a destination is replaced, never followed.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use std::cell::RefCell;
use std::sync::Arc;

use rbuild_layer::IdMap;
use rbuild_rootfs::ContainerRoot;
use rbuild_sandbox::root_range::RootRange;
use rbuild_sandbox::rootpath::host_path_in_root;
use rbuild_sandbox::Sandbox;

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

/// Removes the tree `path` (never following symlinks): as container root when its files
/// belong to the build's container users.
pub(crate) fn remove_tree(path: &Path, owners: &Owners) -> std::io::Result<()> {
    match owners {
        Owners::Mapped(root) => root.remove_all(path).map_err(std::io::Error::other),
        _ => fs::remove_dir_all(path),
    }
}

/// How container ids become owners on disk in this build.
#[derive(Clone)]
pub(crate) enum Owners {
    /// Host root: container ids are host ids.
    Root,
    /// Rootless with a subordinate range: container 0 is the user, 1.. the range, as in the
    /// userns steps; chowns and layer extraction go through a helper that is root in such
    /// a namespace.
    Mapped(Arc<ContainerRoot>),
    /// Rootless without a range: only container root exists, and it is the user.
    SingleId,
    /// Host root whose userns steps map container ids to an unprivileged host range
    /// (root's /etc/subuid line or rbuild's reserved one): files carry the range's host
    /// ids on disk. This process, still host root, chowns and extracts with the map itself
    /// (as dockerd does with userns-remap); only the steps run as the range.
    Ranged(RootRange),
}

impl Owners {
    /// The owners of a build by this process: `Mapped` when the user has a subordinate
    /// range (the helper is started here), else `SingleId`. When the helper cannot start
    /// (user namespaces refused, so no RUN step could run either), `SingleId` and a warning
    /// saying owners are flattened.
    ///
    /// As root, `Ranged` when steps run in a user namespace (`userns_steps`): its range is
    /// root's in /etc/subuid and /etc/subgid, else the one recorded in the store at
    /// `store_root` (reserved there the first time). Chroot steps keep host ids (`Root`).
    pub(crate) fn for_build(
        sandbox: &Sandbox,
        userns_steps: bool,
        store_root: &Path,
    ) -> Result<(Owners, Option<String>), String> {
        if running_as_root() {
            if !userns_steps {
                return Ok((Owners::Root, None));
            }
            let range = rbuild_sandbox::root_range::root_range(store_root)
                .map_err(|e| format!("choosing the id range of root's steps: {e}"))?;
            return Ok(match range {
                Some(range) => (Owners::Ranged(range), None),
                // Root of a namespace too small for a range: not host root anyway.
                None => (Owners::Root, None),
            });
        }
        if rbuild_sandbox::subid_map().is_none() {
            return Ok((Owners::SingleId, None));
        }
        Ok(match ContainerRoot::start(sandbox) {
            Ok(root) => (Owners::Mapped(Arc::new(root)), None),
            Err(e) => (
                Owners::SingleId,
                Some(format!(
                    "this user has subordinate ids, but no user namespace could be set up to \
                     give files their owners ({e}): files are extracted and written as \
                     container root's only"
                )),
            ),
        })
    }

    /// Container → host ids, `None` for root (identity).
    pub(crate) fn id_map(&self) -> Option<IdMap> {
        match self {
            Owners::Root => None,
            Owners::Mapped(root) => Some(root.id_map().clone()),
            Owners::Ranged(range) => Some(range.id_map()),
            Owners::SingleId => {
                let (uid, gid) = current_ids();
                Some(IdMap::single(uid, gid))
            }
        }
    }

    /// The container owner of a file with host owner `uid:gid` in a rootfs of this build
    /// (ids outside the map are kept as they are).
    pub(crate) fn container_ids(&self, uid: u32, gid: u32) -> (u32, u32) {
        match self.id_map() {
            None => (uid, gid),
            Some(map) => (
                map.container_uid(uid.into()).unwrap_or(uid),
                map.container_gid(gid.into()).unwrap_or(gid),
            ),
        }
    }

    /// Why `uid:gid` cannot own files in this build, if it cannot.
    pub(crate) fn cannot_own(&self, uid: u32, gid: u32) -> Option<String> {
        let map = self.id_map()?;
        let id = if map.host_uid(uid.into()).is_none() {
            format!("uid {uid}")
        } else if map.host_gid(gid.into()).is_none() {
            format!("gid {gid}")
        } else {
            return None;
        };
        let user = rbuild_sandbox::current_user_label();
        Some(match self {
            Owners::SingleId => format!(
                "rootless builds cannot give files to {id} without subordinate ids: add a \
                 range for {user} to /etc/subuid and /etc/subgid (e.g. `{user}:100000:65536`) \
                 and install newuidmap/newgidmap (Debian package uidmap), or run as root"
            ),
            Owners::Ranged(range) => format!(
                "{id} is outside the {} container ids root's steps map (host ids {}.. and \
                 gids {}.., see `rbuild info`)",
                range.count, range.uid_start, range.gid_start
            ),
            _ => format!(
                "{id} is outside the subordinate ranges of {user} (/etc/subuid, /etc/subgid)"
            ),
        })
    }
}

thread_local! {
    /// The owners of the build running on this thread (each thread running a stage enters
    /// the build's). The places that give files owners (COPY, WORKDIR, mounts) are many
    /// small functions; a scoped thread-local spares threading it through all of them.
    static OWNERS: RefCell<Option<Owners>> = const { RefCell::new(None) };
}

/// Makes `owners` this thread's build owners until the guard drops (the previous ones are
/// put back then, so nested builds on one thread stay correct).
pub(crate) struct OwnersScope(Option<Owners>);

impl OwnersScope {
    pub(crate) fn enter(owners: Owners) -> OwnersScope {
        OwnersScope(OWNERS.with(|o| o.borrow_mut().replace(owners)))
    }
}

impl Drop for OwnersScope {
    fn drop(&mut self) {
        let previous = self.0.take();
        OWNERS.with(|o| *o.borrow_mut() = previous);
    }
}

/// This thread's build owners; outside a build, what this process would use without a
/// helper (root, or single-id).
pub(crate) fn owners() -> Owners {
    OWNERS.with(|o| o.borrow().clone()).unwrap_or_else(|| {
        if running_as_root() {
            Owners::Root
        } else {
            Owners::SingleId
        }
    })
}

/// Gives `path` (never followed) to container owner `uid:gid`. As root that is a plain
/// lchown. Rootless with a subordinate range, container root inside the build's user
/// namespace does it (a file already owned right is left alone, which is the common case of
/// files for container root). Rootless without a range, container root *is* the user:
/// files the user owns already have the right owner and any other owner fails clearly.
pub(crate) fn chown_in_build(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    let owners = owners();
    if let Owners::Root = owners {
        return lchown(path, uid, gid).map_err(|e| format!("chown of {}: {e}", path.display()));
    }
    if let Some(why) = owners.cannot_own(uid, gid) {
        return Err(format!("chown of {} to {uid}:{gid}: {why}", path.display()));
    }
    // Cannot fail: only `Owners::Root` has no id map, and it returned above.
    let map = owners.id_map().expect("rootless builds have an id map");
    let host = (map.host_uid(uid.into()), map.host_gid(gid.into()));
    let md = fs::symlink_metadata(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if host == (Some(md.uid()), Some(md.gid())) {
        return Ok(());
    }
    match &owners {
        Owners::Mapped(root) => root.lchown(path, uid, gid).map_err(|e| e.to_string()),
        // Single id: the only mapped owner is the user, who owns what it creates; a file
        // copied from elsewhere with another owner cannot be given to it without CAP_CHOWN.
        _ => lchown(path, host.0.unwrap_or(uid), host.1.unwrap_or(gid))
            .map_err(|e| format!("chown of {}: {e}", path.display())),
    }
}

/// Gives every entry of the tree `dir` whose owner is a container id outside `range` (a
/// cache directory filled with host ids = container ids: by a root build before ranges, or
/// by a remote cache import) the range's host ids, keeping modes (a chown clears setuid
/// bits). Never follows symlinks. `dir` itself goes last: once it belongs to the range the
/// tree is done, and a walk cut short is taken up again next time.
pub(crate) fn shift_into_range(dir: &Path, range: &RootRange) -> Result<(), String> {
    let top = fs::symlink_metadata(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let inside = |id: u32, start: u32| id >= start && id - start < range.count;
    if inside(top.uid(), range.uid_start) && inside(top.gid(), range.gid_start) {
        return Ok(());
    }
    let shift = |path: &Path, md: &fs::Metadata| -> Result<(), String> {
        let shifted = |id: u32, start: u32| {
            if inside(id, start) || id >= range.count {
                id
            } else {
                start + id
            }
        };
        let (uid, gid) = (
            shifted(md.uid(), range.uid_start),
            shifted(md.gid(), range.gid_start),
        );
        if (uid, gid) == (md.uid(), md.gid()) {
            return Ok(());
        }
        lchown(path, uid, gid).map_err(|e| format!("chown of {}: {e}", path.display()))?;
        if !md.file_type().is_symlink() {
            fs::set_permissions(path, fs::Permissions::from_mode(md.mode() & 0o7777))
                .map_err(|e| format!("chmod of {}: {e}", path.display()))?;
        }
        Ok(())
    };
    for entry in walkdir::WalkDir::new(dir).min_depth(1).follow_links(false) {
        let entry = entry.map_err(|e| format!("walking {}: {e}", dir.display()))?;
        let md = entry
            .metadata()
            .map_err(|e| format!("reading {}: {e}", entry.path().display()))?;
        shift(entry.path(), &md)?;
    }
    shift(dir, &top)
}

/// Sets a path's mtime (and atime) without following a symlink.
pub(crate) fn set_mtime(path: &Path, secs: i64, nanos: i64) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as _,
    };
    let times = [t, t];
    // SAFETY: `c` is a valid NUL-terminated path and `times` two valid timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Rootless with subordinate ids, every write into a rootfs goes through container root:
/// it may write into directories the image gives to other users and give files any mapped
/// owner, which the user itself may not (its files would also stop being its own halfway
/// through a COPY). Paths are resolved here, inside the root, before they are handed over.
pub(crate) fn container_root() -> Option<Arc<ContainerRoot>> {
    match owners() {
        Owners::Mapped(root) => Some(root),
        _ => None,
    }
}

/// Call first thing in `main`: if this process was started as the container-root worker
/// (`rbuild_rootfs`), serves its tasks and exits. Its `COPY --from` tasks run this crate's
/// COPY rules, handed over here.
pub fn maybe_run_root_worker() {
    rbuild_rootfs::maybe_run_worker(|task| {
        crate::copy::copy_from_task(task).map_err(rbuild_rootfs::RootfsError::Task)
    });
}

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
    } else if ft.is_file() {
        let mut input =
            fs::File::open(src).map_err(|e| format!("opening {}: {e}", src.display()))?;
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
            "{} is a special file (device, fifo or socket); COPY does not support it",
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

    #[test]
    fn join_container_cleans() {
        assert_eq!(join_container("/app", "x/../y"), "/app/y");
        assert_eq!(join_container("/app", "/abs"), "/abs");
        assert_eq!(join_container("/", "../.."), "/");
    }
}
