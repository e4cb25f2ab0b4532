//! The local content-addressed store: an OCI image layout with atomic writes and locking.
//!
//! Layout of a store root (see docs/store.md):
//! ```text
//! <root>/oci/oci-layout            {"imageLayoutVersion":"1.0.0"}
//! <root>/oci/index.json            one entry per tag (and per untagged image)
//! <root>/oci/blobs/sha256/<hex>    content, only ever renamed into place complete and verified
//! <root>/tmp/                      in-flight writes (flocked while live; gc removes dead ones)
//! <root>/leases/<pid>-<n>.lease    digests a live process has written but not yet indexed
//! <root>/locks/index.lock          flock serialising index.json read-modify-write
//! <root>/locks/gc.lock             flock: gc exclusive, blob commits shared
//! <root>/cache/                    build-cache records (see `cache.rs`)
//! <root>/layers/                   lazy layers' compressed blobs (see `lazy.rs`)
//! <root>/remote/<hex>.json         layers named here whose bytes are in a registry (`remote.rs`)
//! ```

pub mod archive;
mod blob;
mod cache;
mod error;
mod fsutil;
mod gc;
mod images;
mod index;
mod lazy;
mod lease;
mod lock;
mod remote;
mod root;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

pub use blob::{is_out_of_space, BlobWriter, CommittedBlob};
pub use cache::{
    default_cache_bound, CachePrunePolicy, CachePruneReport, CacheRecord, CacheUsage, KeyInputs,
};
pub use error::{RemoteFetchFailure, Result, StoreError};
pub use fsutil::human_bytes;
pub use gc::{FsckReport, GcOptions, GcReport};
pub use images::{ImageRecord, ImageSummary};
pub use lazy::is_plain_layer;
pub use remote::{BlobFetcher, RemoteBlob};
pub use root::default_root;

use error::IoContext;
use rbuild_image::media_types;

/// An open store. Cheap to share between threads (`&Store` is `Sync`); each process opens its own.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    layout: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
    leases: PathBuf,
    index_lock: PathBuf,
    gc_lock: PathBuf,
    /// This process's lease, created on the first blob write.
    lease: Mutex<Option<lease::Lease>>,
    temp_counter: AtomicU64,
    /// What fetches remote blobs (`remote.rs`); none until the command installs one.
    fetcher: RwLock<Option<Arc<dyn BlobFetcher>>>,
}

impl Store {
    /// Opens the store at `root`, creating the layout if it does not exist yet. Leftovers of a
    /// killed run (temp files, lock files, leases) are harmless and need no repair.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        let layout = root.join("oci");
        let store = Store {
            blobs: layout.join("blobs").join("sha256"),
            tmp: root.join("tmp"),
            leases: root.join("leases"),
            index_lock: root.join("locks").join("index.lock"),
            gc_lock: root.join("locks").join("gc.lock"),
            layout,
            root,
            lease: Mutex::new(None),
            temp_counter: AtomicU64::new(0),
            fetcher: RwLock::new(None),
        };
        for dir in [
            &store.blobs,
            &store.tmp,
            &store.leases,
            &store.root.join("locks"),
        ] {
            std::fs::create_dir_all(dir).at("create store directory", dir)?;
        }
        // Extracted images keep their setuid files and (as root) device nodes: no other
        // local user may reach anything in here. An older store made 0755 is tightened.
        make_private(&store.root)?;
        store.init_layout_file()?;
        store.init_index()?;
        Ok(store)
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The OCI image layout directory (`<root>/oci`).
    pub fn layout_dir(&self) -> &Path {
        &self.layout
    }

    /// A directory on the store's filesystem for other state (`<root>/<name>`, e.g. `cache`,
    /// `rootfs`), created if missing.
    pub fn state_dir(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(StoreError::Invalid(format!(
                "invalid state directory name {name:?}"
            )));
        }
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).at("create state directory", &dir)?;
        make_private(&dir)?;
        Ok(dir)
    }

    fn init_layout_file(&self) -> Result<()> {
        let path = self.layout.join("oci-layout");
        match std::fs::read(&path) {
            Ok(bytes) => {
                let value: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                        what: path.display().to_string(),
                        source,
                    })?;
                match value.get("imageLayoutVersion").and_then(|v| v.as_str()) {
                    Some(v) if v.starts_with("1.") => Ok(()),
                    other => Err(StoreError::Invalid(format!(
                        "{}: unsupported imageLayoutVersion {other:?}",
                        path.display()
                    ))),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let body = format!(
                    "{{\"imageLayoutVersion\":\"{}\"}}",
                    media_types::OCI_LAYOUT_VERSION
                );
                fsutil::write_atomic(self, &path, body.as_bytes())
            }
            Err(e) => Err(e).at("read", &path),
        }
    }

    fn blob_path(&self, digest: &rbuild_image::Digest) -> PathBuf {
        // The hex is validated by `Digest`, so this never leaves the blobs directory.
        self.blobs.join(digest.hex())
    }
}

/// Makes `dir` 0700 unless it already is closed to group and others.
fn make_private(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)
        .at("stat store directory", dir)?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .at("make store directory private (0700)", dir)?;
    }
    Ok(())
}
