//! Work on a build's root filesystems as container root.
//!
//! Rootless with subordinate ids, the files of an image belong to the user's subordinate
//! ids on disk: the user cannot give files those owners, nor read what the image's other
//! users keep private. [`ContainerRoot`] is a worker process that is root of a user
//! namespace mapped like the userns steps (started by `rbuild_sandbox`, which owns the
//! namespace set-up) and does that work: it applies and writes layers, walks trees for the
//! snapshotters, and writes and owns the files of COPY and WORKDIR. Each piece of work is a
//! typed [`RootTask`].
//!
//! The worker is this executable started again with [`WORKER_ARG`]: the binary's `main`
//! calls [`maybe_run_worker`] first thing, as it calls `rbuild_sandbox::maybe_run_helper`
//! (each answers to its own first argument, so their order does not matter).

#![deny(clippy::undocumented_unsafe_blocks)]

mod container_root;
mod error;
mod task;
mod worker;

pub use container_root::ContainerRoot;
pub use error::{Result, RootfsError};
pub use task::{CopyFrom, RootTask};

/// Sets a path's mtime (and atime) to `secs`.`nanos` without following a symlink.
pub fn set_mtime(path: &std::path::Path, secs: i64, nanos: i64) -> std::io::Result<()> {
    use rustix::fs::{Timespec, Timestamps};
    let time = Timespec {
        tv_sec: secs,
        tv_nsec: nanos as _,
    };
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// The first argument that turns the rbuild binary into the container-root worker.
pub const WORKER_ARG: &str = "__rbuild-container-root";

/// What runs a [`CopyFrom`] task in the worker: COPY's rules (sources, excludes, --chmod,
/// --parents) are the executor's, above this crate, so the binary hands them over.
pub type CopyFromFn = fn(&CopyFrom) -> Result<()>;

/// Call first thing in `main`: if this process was started as the container-root worker,
/// becomes container root, serves tasks until rbuild is done with it and exits; otherwise
/// does nothing. `copy_from` runs [`RootTask::CopyFrom`].
pub fn maybe_run_worker(copy_from: CopyFromFn) {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(WORKER_ARG) {
        let parent = args.next();
        let socket = rbuild_sandbox::become_container_root(parent.as_deref());
        worker::serve(socket, copy_from);
    }
}
