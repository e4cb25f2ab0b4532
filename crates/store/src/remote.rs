//! Remote blobs: a layer the store names (an image or a cache record holds it) whose bytes
//! are still in a registry, as BuildKit keeps a registry-cache hit's layers lazy. A build
//! that hits every step in a registry cache stores the image without downloading its
//! layers; the first reader of a layer's bytes fetches it ([`Store::ensure_blob`]).
//!
//! ```text
//! <root>/remote/<hex>.json   {registry, repository, descriptor, diff_id}
//! ```
//!
//! Invariant: every blob an image, a cache record or a lease names is either on disk
//! (`oci/blobs/sha256/<hex>`) or recorded here. A record is written (atomically, under the
//! shared gc lock and leased, like a blob commit) before anything names its digest; it is
//! removed once the blob is renamed in, or by gc when nothing names it any more. Every
//! reader of blob bytes goes through [`Store::open_blob`], which fetches a remote blob
//! first: no reader sees a missing file for a recorded digest.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use rbuild_image::{Descriptor, Digest, Hasher};

use crate::error::{IoContext, RemoteFetchFailure, Result, StoreError};
use crate::{fsutil, lock, Store};

/// Where a remote blob's bytes are: `registry/repository`, its descriptor (digest, size,
/// media type) and its uncompressed digest (the image config's diff id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteBlob {
    pub registry: String,
    pub repository: String,
    pub descriptor: Descriptor,
    pub diff_id: Digest,
}

/// Fetches a remote blob's bytes (a registry client with the session's credentials). The
/// store verifies what it writes (size, digest, diff id); the fetcher only streams.
pub trait BlobFetcher: Send + Sync + std::fmt::Debug {
    /// Writes the bytes of `blob` to `out`. The error says why (never a credential).
    fn fetch(&self, blob: &RemoteBlob, out: &mut (dyn Write + Send)) -> Result<(), String>;

    /// Called once `blob` is recorded remote in `store`, for the fetcher to note where it is
    /// (a push to another repository of that registry mounts it from there, without
    /// fetching it). A hint: a failure changes nothing.
    fn recorded(&self, _store: &Store, _blob: &RemoteBlob) {}

    /// Called once `blob` is in `store` (its record gone), for the fetcher to note where it
    /// came from (a later push mounts it from there). A hint: a failure changes nothing.
    fn fetched(&self, _store: &Store, _blob: &RemoteBlob) {}
}

impl Store {
    fn remote_dir(&self) -> PathBuf {
        self.root.join("remote")
    }

    fn remote_path(&self, digest: &Digest) -> PathBuf {
        // The hex is validated by `Digest`, so this never leaves the directory.
        self.remote_dir().join(format!("{}.json", digest.hex()))
    }

    /// Installs what fetches remote blobs for this `Store` (replacing an earlier one).
    pub fn set_blob_fetcher(&self, fetcher: Arc<dyn BlobFetcher>) {
        *self.fetcher.write().unwrap_or_else(|p| p.into_inner()) = Some(fetcher);
    }

    /// Records that `blob`'s bytes are in a registry, so that an image or a cache record
    /// may name it before it is fetched. Leased for the life of this `Store`, like a blob
    /// written. Nothing is recorded for a blob already on disk.
    pub fn record_remote_blob(&self, blob: &RemoteBlob) -> Result<()> {
        let digest = &blob.descriptor.digest;
        if rbuild_image::media_types::layer_compression(&blob.descriptor.media_type).is_none() {
            return Err(StoreError::Invalid(format!(
                "only layers can be recorded remote, not {digest} ({})",
                blob.descriptor.media_type
            )));
        }
        let bytes = serde_json::to_vec(blob).map_err(|source| StoreError::Json {
            what: format!("remote blob record of {digest}"),
            source,
        })?;
        let dir = self.remote_dir();
        std::fs::create_dir_all(&dir).at("create store directory", &dir)?;
        // Shared gc lock: gc (exclusive) either sees the lease and the record or runs after.
        let _gc = lock::shared(&self.gc_lock)?;
        self.lease_digest(digest)?;
        if self.has_blob(digest) {
            return Ok(());
        }
        fsutil::write_atomic(self, &self.remote_path(digest), &bytes)?;
        if let Some(fetcher) = self.blob_fetcher() {
            fetcher.recorded(self, blob);
        }
        Ok(())
    }

    fn blob_fetcher(&self) -> Option<Arc<dyn BlobFetcher>> {
        self.fetcher
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The remote record of `digest`, if its bytes are not on disk but in a registry.
    pub fn remote_blob(&self, digest: &Digest) -> Result<Option<RemoteBlob>> {
        let path = self.remote_path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).at("read remote blob record", &path),
        };
        let blob: RemoteBlob =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                what: path.display().to_string(),
                source,
            })?;
        if blob.descriptor.digest != *digest {
            return Err(StoreError::Invalid(format!(
                "{}: the record names {}, not {digest}",
                path.display(),
                blob.descriptor.digest
            )));
        }
        Ok(Some(blob))
    }

    /// Whether the blob is on disk or recorded remote (readable through `open_blob`).
    pub fn has_blob_or_remote(&self, digest: &Digest) -> bool {
        self.has_blob(digest) || self.remote_path(digest).is_file()
    }

    /// The digests recorded remote (not yet fetched).
    pub fn remote_blobs(&self) -> Result<Vec<Digest>> {
        let dir = self.remote_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).at("list", &dir),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.at("list", &dir)?;
            let name = entry.file_name();
            if let Some(digest) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|hex| format!("sha256:{hex}").parse::<Digest>().ok())
            {
                out.push(digest);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Makes the blob's bytes present on disk: nothing to do when they are; a remote blob
    /// is fetched into a temp file, its size, digest and (for a compressed layer) diff id
    /// verified, renamed in, and its record dropped. On failure the store is unchanged
    /// (the record stays; a retry fetches again) and the error names the registry, the
    /// repository and the digest. Concurrent calls for one digest are safe: each fetches
    /// into its own temp file; the rename is atomic and the second commit keeps the first.
    pub fn ensure_blob(&self, digest: &Digest) -> Result<()> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let Some(remote) = self.remote_blob(digest)? else {
            return Err(StoreError::BlobNotFound {
                digest: digest.clone(),
                store: self.root.clone(),
            });
        };
        let failed = |message: String| {
            StoreError::RemoteFetch(Box::new(RemoteFetchFailure {
                registry: remote.registry.clone(),
                repository: remote.repository.clone(),
                digest: digest.clone(),
                message,
            }))
        };
        let fetcher = self
            .blob_fetcher()
            .ok_or_else(|| failed("this command has no registry client to fetch it".into()))?;
        let mut writer = self.blob_writer()?;
        // A compressed layer: what it uncompresses to must be the image's diff id. The bytes
        // are decompressed and hashed on a thread of its own as they arrive, not read back
        // from the temp file after (a second pass over the whole layer).
        let compressed = digest != &remote.diff_id;
        let (fetched, uncompressed) = std::thread::scope(|scope| {
            let (mut tee, hashing) = if compressed {
                let (tee, receiver) = UncompressedTee::new(&mut writer);
                let hashing =
                    scope.spawn(move || uncompressed_digest(ChannelReader::new(receiver)));
                (tee, Some(hashing))
            } else {
                (UncompressedTee::plain(&mut writer), None)
            };
            let fetched = fetcher.fetch(&remote, &mut tee);
            // Dropping the tee closes the channel: the decompressor sees the end.
            drop(tee);
            let uncompressed = hashing.map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("the hashing thread panicked")))
            });
            (fetched, uncompressed)
        });
        fetched.map_err(failed)?;
        if writer.size() != remote.descriptor.size {
            return Err(failed(format!(
                "the registry sent {} bytes, the record says {}",
                writer.size(),
                remote.descriptor.size
            )));
        }
        if let Some(uncompressed) = uncompressed {
            let got = uncompressed.map_err(|e| failed(e.to_string()))?;
            if got != remote.diff_id {
                return Err(failed(format!(
                    "it uncompresses to {got}, but the image's diff id is {}",
                    remote.diff_id
                )));
            }
        }
        writer.commit(Some(digest)).map_err(|e| match e {
            StoreError::DigestMismatch { actual, size, .. } => failed(format!(
                "the registry sent {size} bytes hashing to {actual}"
            )),
            other => other,
        })?;
        self.drop_remote_record(digest)?;
        fetcher.fetched(self, &remote);
        Ok(())
    }

    /// Removes the remote record of `digest` (already removed by another process is fine).
    fn drop_remote_record(&self, digest: &Digest) -> Result<()> {
        let path = self.remote_path(digest);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).at("remove remote blob record", &path),
        }
    }

    /// Removes remote records neither `reachable` nor `leased` (called by gc holding its
    /// locks), and records whose blob is on disk (a process stopped between its rename and
    /// the record's removal). Returns the digests removed.
    pub(crate) fn remove_unreferenced_remote_records(
        &self,
        reachable: &std::collections::HashSet<Digest>,
        leased: &std::collections::HashSet<Digest>,
    ) -> Result<Vec<Digest>> {
        let mut removed = Vec::new();
        for digest in self.remote_blobs()? {
            let on_disk = self.has_blob(&digest);
            if on_disk || (!reachable.contains(&digest) && !leased.contains(&digest)) {
                self.drop_remote_record(&digest)?;
                if !on_disk {
                    removed.push(digest);
                }
            }
        }
        Ok(removed)
    }
}

/// The sha256 of what the compressed stream `compressed` uncompresses to.
fn uncompressed_digest(compressed: impl Read) -> std::io::Result<Digest> {
    let mut reader = rbuild_layer::compression::decompressing_reader(compressed)?;
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

/// Chunks of a fetched blob in flight to the decompressing thread: a bound on the memory a
/// slow decompressor makes the download hold (the fetch waits when it is reached).
const CHUNKS_IN_FLIGHT: usize = 64;

/// Writes a fetched blob to its temp file and, for a compressed layer, copies each chunk to
/// the thread that decompresses and hashes it ([`uncompressed_digest`]).
struct UncompressedTee<'w, W: Write> {
    out: &'w mut W,
    /// `None` for a plain blob, or once the decompressor stopped reading (it failed, or its
    /// stream ended before the blob did: its result says which, as a second pass over the
    /// file would have).
    chunks: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
}

impl<'w, W: Write> UncompressedTee<'w, W> {
    fn new(out: &'w mut W) -> (Self, std::sync::mpsc::Receiver<Vec<u8>>) {
        let (sender, receiver) = std::sync::mpsc::sync_channel(CHUNKS_IN_FLIGHT);
        let tee = UncompressedTee {
            out,
            chunks: Some(sender),
        };
        (tee, receiver)
    }

    fn plain(out: &'w mut W) -> Self {
        UncompressedTee { out, chunks: None }
    }
}

impl<W: Write> Write for UncompressedTee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        if let Some(chunks) = &self.chunks {
            if chunks.send(buf[..n].to_vec()).is_err() {
                self.chunks = None;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Reads the chunks an [`UncompressedTee`] sends, in order; the end is the tee dropped.
struct ChannelReader {
    chunks: std::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    offset: usize,
}

impl ChannelReader {
    fn new(chunks: std::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            chunks,
            current: Vec::new(),
            offset: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.offset == self.current.len() {
            match self.chunks.recv() {
                Ok(chunk) => {
                    self.current = chunk;
                    self.offset = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.offset);
        buf[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}
