//! Where blobs came from: `<store>/blob-sources/<hex>` lists `registry/repository`, one per
//! line, for every repository a blob was pulled from or pushed to. A push to another
//! repository of the same registry asks the registry to mount the blob from one of them
//! instead of uploading it, as Docker does with its distribution metadata.
//!
//! The record is a hint: a wrong or stale line only costs a refused mount (then an upload).

use std::io::Write as _;

use rbuild_image::Digest;
use rbuild_store::Store;

const DIR: &str = "blob-sources";

/// Notes that `digest` exists in `registry/repository`. Lines are appended (short writes to
/// an `O_APPEND` file, so concurrent processes do not interleave them) and not repeated.
pub fn record_blob_source(
    store: &Store,
    digest: &Digest,
    registry: &str,
    repository: &str,
) -> rbuild_store::Result<()> {
    let dir = store.state_dir(DIR)?;
    let line = format!("{registry}/{repository}");
    if blob_sources(store, digest).contains(&line) {
        return Ok(());
    }
    let path = dir.join(digest.hex());
    let write = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    write.map_err(|source| rbuild_store::StoreError::Io {
        op: "record blob source in",
        path,
        source,
    })
}

/// The `registry/repository` names `digest` is known to exist in (empty if none).
pub fn blob_sources(store: &Store, digest: &Digest) -> Vec<String> {
    let path = store.root().join(DIR).join(digest.hex());
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if !out.iter().any(|s| s == line) {
            out.push(line.to_string());
        }
    }
    out
}

/// The repository on `registry` other than `repository` that `digest` came from, if any.
pub(crate) fn mount_source(
    store: &Store,
    digest: &Digest,
    registry: &str,
    repository: &str,
) -> Option<String> {
    blob_sources(store, digest).into_iter().find_map(|source| {
        let repo = source.strip_prefix(registry)?.strip_prefix('/')?;
        (repo != repository).then(|| repo.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_recorded_once_and_give_mounts_on_the_same_registry_only() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let digest = Digest::of(b"layer");
        record_blob_source(&store, &digest, "127.0.0.1:5000", "base/busybox").unwrap();
        record_blob_source(&store, &digest, "127.0.0.1:5000", "base/busybox").unwrap();
        record_blob_source(&store, &digest, "ghcr.io", "x/y").unwrap();
        assert_eq!(
            blob_sources(&store, &digest),
            ["127.0.0.1:5000/base/busybox", "ghcr.io/x/y"]
        );
        assert_eq!(
            mount_source(&store, &digest, "127.0.0.1:5000", "app").as_deref(),
            Some("base/busybox")
        );
        assert_eq!(
            mount_source(&store, &digest, "127.0.0.1:5000", "base/busybox"),
            None
        );
        // A registry whose name is a prefix of another's is not the same registry.
        assert_eq!(mount_source(&store, &digest, "127.0.0.1:500", "app"), None);
        assert_eq!(
            mount_source(&store, &Digest::of(b"other"), "ghcr.io", "a"),
            None
        );
    }
}
