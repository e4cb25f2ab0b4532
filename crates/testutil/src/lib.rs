//! Helpers for end-to-end tests that start real services: a private `dockerd` ([`Dockerd`]),
//! a local HTTP and git server ([`HttpServer`], [`CaseServers`]), a local registry
//! ([`Registry`]) and a tiny base image made without Docker Hub
//! ([`busybox_rootfs`], [`Dockerd::import_rootfs`]).
//!
//! Each helper fails loudly (panics with the Debian package to install) instead of skipping:
//! a test that silently does nothing proves nothing.

mod bounded;
mod debian;
mod dockerd;
mod git_repo;
mod http_server;
mod net;
mod registry;
mod rootfs;

pub use bounded::memory_limited;
pub use debian::{apt_mirror, bookworm_mirror_in, debian_image_rootfs, debian_rootfs, DEBOOTSTRAP};
pub use dockerd::{Dockerd, DockerdOptions, DOCKERD, DOCKER_CLI};
pub use git_repo::{
    case_repos_dir, make_git_repo, CaseFile, CaseServers, ObjectFormat, GIT_DATE, HTTP_PLACEHOLDER,
};
pub use http_server::{HttpServer, RequestRecord, ServedFile, LAST_MODIFIED, LAST_MODIFIED_EPOCH};
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

/// Standard base64 with padding (for HTTP basic auth and Docker's `config.json`).
pub fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `len` deterministic bytes that no deflate level can shrink (xorshift64*, from `seed`,
/// which must not be 0): a layer's incompressible content without a random-number crate.
pub fn incompressible_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_pads_as_the_standard_says() {
        assert_eq!(super::base64("user:pass"), "dXNlcjpwYXNz");
        assert_eq!(super::base64("ab"), "YWI=");
        assert_eq!(super::base64("a"), "YQ==");
    }
}
