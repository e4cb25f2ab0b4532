//! Who owns the files a build writes: how container ids become owners on disk ([`Owners`],
//! one per build, handed to what writes files), giving files their owners, and the container-root
//! worker of rootless builds with subordinate ids (`rbuild_rootfs::ContainerRoot`).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use rbuild_layer::IdMap;
use rbuild_rootfs::ContainerRoot;
use rbuild_sandbox::root_range::RootRange;
use rbuild_sandbox::Sandbox;

use crate::error::{BuildError, Result};
use crate::fsops::{current_ids, lchown, running_as_root};

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
    /// The `restricted` isolation: a non-root build user with no user namespace, whose
    /// files stay its own on the disk; owners and device nodes are recorded by inode in a
    /// table the layer writer reads, and the user's ids stand for root (`in_place`).
    Recorded(Arc<crate::in_place::InPlaceOwners>),
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
    ) -> Result<(Owners, Option<String>)> {
        if running_as_root() {
            if !userns_steps {
                return Ok((Owners::Root, None));
            }
            let range = rbuild_sandbox::root_range::root_range(store_root).map_err(|source| {
                BuildError::Sandbox {
                    doing: "choosing the id range of root's steps".into(),
                    source,
                }
            })?;
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
            Owners::SingleId | Owners::Recorded(_) => {
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

    /// The container owner of a source file with metadata `md` (a file of another rootfs
    /// of this build, or of the context): in a restricted build the owner recorded for its
    /// inode, if any; else [`Owners::container_ids`] of its owner on the disk.
    pub(crate) fn source_ids(&self, md: &fs::Metadata) -> (u32, u32) {
        if let Owners::Recorded(in_place) = self {
            if let Some(owner) = in_place.with_table(|t| t.get(md.dev(), md.ino())) {
                return (owner.uid, owner.gid);
            }
        }
        self.container_ids(md.uid(), md.gid())
    }

    /// Why `uid:gid` cannot own files in this build, if it cannot.
    pub(crate) fn cannot_own(&self, uid: u32, gid: u32) -> Option<String> {
        if let Owners::Recorded(_) = self {
            // Any owner can be recorded.
            return None;
        }
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

impl Owners {
    /// What this process uses outside a build (`rbuild prune`, the container-root worker's
    /// COPY --from tasks, which run as root of the build's namespace): root, or single-id.
    pub(crate) fn of_process() -> Owners {
        if running_as_root() {
            Owners::Root
        } else {
            Owners::SingleId
        }
    }

    /// Rootless with subordinate ids, every write into a rootfs goes through container
    /// root: it may write into directories the image gives to other users and give files
    /// any mapped owner, which the user itself may not (its files would also stop being
    /// its own halfway through a COPY). Paths are resolved here, inside the root, before
    /// they are handed over.
    pub(crate) fn container_root(&self) -> Option<&Arc<ContainerRoot>> {
        match self {
            Owners::Mapped(root) => Some(root),
            _ => None,
        }
    }
}

/// Gives `path` (never followed) to container owner `uid:gid`. As root that is a plain
/// lchown. Rootless with a subordinate range, container root inside the build's user
/// namespace does it (a file already owned right is left alone, which is the common case of
/// files for container root). Rootless without a range, container root *is* the user:
/// files the user owns already have the right owner and any other owner fails clearly.
pub(crate) fn chown_in_build(owners: &Owners, path: &Path, uid: u32, gid: u32) -> Result<()> {
    if let Owners::Recorded(in_place) = owners {
        return Ok(in_place.chown(path, uid, gid)?);
    }
    let Some(map) = owners.id_map() else {
        // Host root: container ids are host ids.
        return lchown(path, uid, gid).map_err(BuildError::io("chown of", path));
    };
    if let Some(why) = owners.cannot_own(uid, gid) {
        return Err(BuildError::other(format!(
            "chown of {} to {uid}:{gid}: {why}",
            path.display()
        )));
    }
    let host = (map.host_uid(uid.into()), map.host_gid(gid.into()));
    let md = fs::symlink_metadata(path).map_err(BuildError::io("reading", path))?;
    if host == (Some(md.uid()), Some(md.gid())) {
        return Ok(());
    }
    match owners {
        Owners::Mapped(root) => root
            .lchown(path, uid, gid)
            .map_err(BuildError::container_root("")),
        // Single id: the only mapped owner is the user, who owns what it creates; a file
        // copied from elsewhere with another owner cannot be given to it without CAP_CHOWN.
        _ => lchown(path, host.0.unwrap_or(uid), host.1.unwrap_or(gid))
            .map_err(BuildError::io("chown of", path)),
    }
}

/// Gives every entry of the tree `dir` whose owner is a container id outside `range` (a
/// cache directory filled with host ids = container ids: by a root build before ranges, or
/// by a remote cache import) the range's host ids, keeping modes (a chown clears setuid
/// bits). Never follows symlinks. `dir` itself goes last: once it belongs to the range the
/// tree is done, and a walk cut short is taken up again next time.
pub(crate) fn shift_into_range(dir: &Path, range: &RootRange) -> Result<()> {
    let top = fs::symlink_metadata(dir).map_err(BuildError::io("reading", dir))?;
    let inside = |id: u32, start: u32| id >= start && id - start < range.count;
    if inside(top.uid(), range.uid_start) && inside(top.gid(), range.gid_start) {
        return Ok(());
    }
    let shift = |path: &Path, md: &fs::Metadata| -> Result<()> {
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
        lchown(path, uid, gid).map_err(BuildError::io("chown of", path))?;
        if !md.file_type().is_symlink() {
            fs::set_permissions(path, fs::Permissions::from_mode(md.mode() & 0o7777))
                .map_err(BuildError::io("chmod of", path))?;
        }
        Ok(())
    };
    for entry in walkdir::WalkDir::new(dir).min_depth(1).follow_links(false) {
        let entry =
            entry.map_err(|e| BuildError::other(format!("walking {}: {e}", dir.display())))?;
        let md = entry
            .metadata()
            .map_err(|e| BuildError::other(format!("reading {}: {e}", entry.path().display())))?;
        shift(entry.path(), &md)?;
    }
    shift(dir, &top)
}

/// Call first thing in `main`: if this process was started as the container-root worker
/// (`rbuild_rootfs`), serves its tasks and exits. Its `COPY --from` tasks run this crate's
/// COPY rules, handed over here.
pub fn maybe_run_root_worker() {
    rbuild_rootfs::maybe_run_worker(|task| {
        crate::copy::copy_from_task(task)
            .map_err(|e| rbuild_rootfs::RootfsError::Task(e.to_string()))
    });
}
