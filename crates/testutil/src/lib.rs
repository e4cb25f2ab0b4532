//! Helpers for end-to-end tests that start real services: a private `dockerd` ([`Dockerd`]),
//! a local registry ([`Registry`]) and a tiny base image made without Docker Hub
//! ([`busybox_rootfs`], [`Dockerd::import_rootfs`]).
//!
//! Each helper fails loudly (panics with the Debian package to install) instead of skipping:
//! a test that silently does nothing proves nothing.

mod bounded;
mod debian;
mod dockerd;
mod net;
mod registry;
mod rootfs;

pub use bounded::memory_limited;
pub use debian::{apt_mirror, bookworm_mirror_in, debian_rootfs, DEBOOTSTRAP};
pub use dockerd::{Dockerd, DockerdOptions, DOCKERD, DOCKER_CLI};
pub use net::{free_port, http_status};
pub use registry::{Registry, DOCKER_REGISTRY};
pub use rootfs::{busybox_rootfs, BUSYBOX};

/// Panics unless the tests run as root: starting dockerd needs it.
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "{what} needs root (uid 0) to start dockerd; this test runs as uid {uid}. Run the \
         end-to-end tests as root (e.g. in the CI container)"
    );
}

/// Panics naming the Debian package when `path` is missing.
pub fn require_binary(path: &str, package: &str) {
    assert!(
        std::path::Path::new(path).is_file(),
        "{path} is missing: install the Debian package `{package}` (apt-get install -y {package})"
    );
}
