//! The `restricted` isolation's side of the executor: a stage's RUN steps run in the
//! builder's own `/` (no chroot, no user namespace, no mount is possible there), owners and
//! device nodes live in an [`OwnershipTable`] beside the files (the build user cannot chown),
//! and the layer writer takes them from it. See docs/sandbox.md, "The executor hook".
//!
//! The stage's root filesystem stays in the build directory, as for the other isolations
//! (COPY, WORKDIR, cache hits, `--from` all work there unchanged). Only for a RUN step is it
//! moved into `/` — by renames, so every inode, and so every table entry, stays the same —
//! and moved back after (`layout.rs`); the builder image's own entries wait in a stash
//! meanwhile. Paths that are not the stage's (`/proc`, `/sys`, `/dev`, every mount point,
//! rbuild's own directory and store, `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`) are
//! never moved, walked nor written.

mod extract;
mod groups;
mod layout;
mod run;

use std::path::Path;
use std::sync::{Arc, Mutex};

use rbuild_layer::{RecordedDevice, RecordedDeviceKind, RecordedInodes};
use rbuild_sandbox::restricted::{DeviceKind, Owner, OwnershipTable};

pub(crate) use extract::record_entries;
pub(crate) use layout::InPlaceRoot;

/// Why a restricted build could not lay a stage out in place or record its owners.
#[derive(Debug, thiserror::Error)]
pub enum InPlaceError {
    /// An I/O operation on a path failed: `{doing} {path}: {source}`.
    #[error("{doing} {}: {source}", path.display())]
    Io {
        doing: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Moving an entry in or out of place failed (`hint`: what the user can do about it).
    #[error("moving {} to {}: {source}{hint}", from.display(), to.display())]
    Move {
        from: std::path::PathBuf,
        to: std::path::PathBuf,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Reading a file of the kernel's (`/proc/self/mountinfo`, `/proc/self/maps`) failed.
    #[error("reading {what}: {source}")]
    Proc {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The builder, the stage or the step cannot be laid out in place: what and why, for
    /// the user (a missing marker, a journal left by a killed build, a mount target in an
    /// excluded path, a top-level directory the builder image lacks).
    #[error("{0}")]
    Refused(String),
    /// A step's mount `label` (the `--mount=` flag as written) cannot go where it asks.
    #[error("{label}: {why}")]
    MountTarget {
        label: String,
        #[source]
        why: Box<InPlaceError>,
    },
    /// A layer's entries could not be read.
    #[error(transparent)]
    Layer(#[from] rbuild_layer::Error),
    /// A mount could not be placed in `/` or taken away.
    #[error(transparent)]
    Mount(#[from] crate::chroot_mounts::MountPlaceError),
    /// The step's sandbox failed to run it.
    #[error("could not run the step: {0}")]
    Sandbox(#[source] rbuild_sandbox::SandboxError),
}

impl InPlaceError {
    /// `map_err` for an I/O error on `path` while `doing` something.
    pub(crate) fn io(
        doing: impl Into<String>,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> InPlaceError {
        let doing = doing.into();
        let path = path.to_path_buf();
        move |source| InPlaceError::Io {
            doing,
            path,
            source,
        }
    }
}

/// A restricted build's owners: the table of what the disk cannot hold, the build user's
/// ids (which stand for container root), and the lock that keeps two stages from laying
/// themselves out in `/` at once.
pub(crate) struct InPlaceOwners {
    table: Mutex<OwnershipTable>,
    build_user: (u32, u32),
    pub(crate) root: InPlaceRoot,
    pub(crate) layout_lock: Mutex<()>,
    /// This build among all (process id and start time): shared trees made by it are its own.
    pub(crate) build_id: String,
}

impl InPlaceOwners {
    /// The owners of a restricted build by this process, whose store is at `store_root`:
    /// refused (with why) unless `/` is an in-place root
    /// (`rbuild_sandbox::restricted::in_place_root_refusal`).
    pub(crate) fn for_build(store_root: &Path) -> Result<Arc<InPlaceOwners>, InPlaceError> {
        if let Some(why) = rbuild_sandbox::restricted::in_place_root_refusal() {
            return Err(InPlaceError::Refused(why));
        }
        let journal = journal_path(store_root);
        if journal.exists() {
            return Err(InPlaceError::Refused(format!(
                "an earlier build was stopped while a stage was laid out in `/` ({} names \
                 where the builder's own files were put aside): this container's `/` is no \
                 longer the builder image's. Run the build in a new container",
                journal.display()
            )));
        }
        let root = InPlaceRoot::detect(store_root)?;
        Ok(Arc::new(InPlaceOwners {
            table: Mutex::new(OwnershipTable::default()),
            build_user: crate::fsops::current_ids(),
            root,
            layout_lock: Mutex::new(()),
            build_id: format!(
                "{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ),
        }))
    }

    /// The owners of a restricted build laid out in the test's directory `top` instead of
    /// `/`, this process's ids standing for root's.
    #[cfg(test)]
    pub(crate) fn for_test(top: &Path) -> Arc<InPlaceOwners> {
        Arc::new(InPlaceOwners {
            table: Mutex::new(OwnershipTable::default()),
            build_user: crate::fsops::current_ids(),
            root: InPlaceRoot::new(top, Vec::new()).expect("a test's in-place root"),
            layout_lock: Mutex::new(()),
            build_id: "test".into(),
        })
    }

    /// Records `uid:gid` as the owner of `path` (never followed): a COPY --chown, WORKDIR
    /// or mount's chown in a restricted build.
    pub(crate) fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<(), InPlaceError> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path).map_err(InPlaceError::io("reading", path))?;
        crate::context::lock(&self.table)
            .record_owner((meta.dev(), meta.ino()), Owner { uid, gid });
        Ok(())
    }

    /// Takes in what a step's supervisor recorded, after forgetting the inodes in `stale`
    /// (files the step removed, whose numbers its new files may have got).
    pub(crate) fn merge(&self, stale: &[(u64, u64)], step: Option<OwnershipTable>) {
        let mut table = crate::context::lock(&self.table);
        for key in stale {
            table.forget(*key);
        }
        if let Some(step) = step {
            table.merge(step);
        }
    }

    /// The owner the layer writer would give the inode `key`, whose owner on the disk is
    /// `disk`, as the table is now: the recorded one, else the disk's, the build user's ids
    /// standing for root's (as `RecordedInodes::owner`).
    pub(crate) fn owner_now(&self, key: (u64, u64), disk: (u32, u32)) -> Owner {
        if let Some(owner) = crate::context::lock(&self.table).get(key.0, key.1) {
            return owner;
        }
        let as_root = |id: u32, build: u32| if id == build { 0 } else { id };
        Owner {
            uid: as_root(disk.0, self.build_user.0),
            gid: as_root(disk.1, self.build_user.1),
        }
    }

    /// Runs `f` on the table (the extractor's recording).
    pub(crate) fn with_table<T>(&self, f: impl FnOnce(&mut OwnershipTable) -> T) -> T {
        f(&mut crate::context::lock(&self.table))
    }

    /// What the layer writer takes from the table, as it is now.
    pub(crate) fn recorded_inodes(&self) -> RecordedInodes {
        let table = crate::context::lock(&self.table);
        RecordedInodes {
            owners: table.owners().map(|(k, o)| (k, (o.uid, o.gid))).collect(),
            devices: table
                .devices()
                .map(|(k, d)| {
                    let kind = match d.kind {
                        DeviceKind::Char => RecordedDeviceKind::Char,
                        DeviceKind::Block => RecordedDeviceKind::Block,
                    };
                    let device = RecordedDevice {
                        kind,
                        major: d.major,
                        minor: d.minor,
                        mode: d.mode,
                    };
                    (k, device)
                })
                .collect(),
            capabilities: table
                .capabilities()
                .map(|(k, v)| (k, v.map(<[u8]>::to_vec)))
                .collect(),
            build_user: self.build_user,
        }
    }
}

/// The file that says a stage is laid out in `/` right now: written before the layout,
/// removed once `/` is the builder's again. Found by a later build, it means one was stopped
/// half way (killed mid-step), and that build refuses to start.
pub(crate) fn journal_path(store_root: &Path) -> std::path::PathBuf {
    store_root.join("in-place-journal")
}

/// What a restricted step must not reach: the store (with the build's scratch and secret
/// directories) and the docker config are hidden; the sandbox adds rbuild's own binary
/// directory (read-only) and the pod's credentials.
///
/// Also hidden: the build context (a step under BuildKit never sees it, and must not change
/// what a later COPY reads) and the container's volumes (every mount point but the kernel's
/// and the runtime's files), which are not the stage's.
pub(crate) fn protected(
    store_root: &Path,
    context_dir: &Path,
    root: &InPlaceRoot,
) -> rbuild_sandbox::restricted::Protected {
    let mut hidden = vec![store_root.to_path_buf()];
    hidden.extend(run::credential_paths());
    hidden.extend(std::fs::canonicalize(context_dir).ok());
    hidden.extend(root.volumes());
    rbuild_sandbox::restricted::Protected {
        hidden,
        read_only: root.mapped().to_vec(),
        top_level: root.redirect(),
    }
}
