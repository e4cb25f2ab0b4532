//! Writing blobs: a temp file in the store, hashed while written, fsynced, verified and only
//! then renamed to `blobs/sha256/<hex>`. A blob under its final name is always complete.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

use rbuild_image::{Descriptor, Digest, Hasher};

use crate::error::{IoContext, Result, StoreError};
use crate::{fsutil, lock, Store};

/// A blob that is now in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedBlob {
    pub digest: Digest,
    pub size: u64,
}

impl CommittedBlob {
    /// A descriptor of this blob with `media_type`.
    pub fn descriptor(&self, media_type: &str) -> Descriptor {
        Descriptor::new(media_type, self.digest.clone(), self.size)
    }
}

/// Streams a blob into the store. Dropping it without `commit` deletes the temp file; a
/// process killed mid-write leaves an unlocked temp file that `gc` removes.
pub struct BlobWriter<'s> {
    store: &'s Store,
    file: Option<BufWriter<File>>,
    temp: PathBuf,
    /// `None` for a writer whose caller hashes every byte it writes in the same pass
    /// ([`Store::blob_writer_hashed_by_caller`]).
    hasher: Option<Hasher>,
    size: u64,
}

impl std::fmt::Debug for BlobWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("temp", &self.temp)
            .field("size", &self.size)
            .finish()
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already finished"))?;
        let n = match file.write(buf) {
            Ok(n) => n,
            Err(e) => return Err(out_of_space(e, &self.temp, self.size + buf.len() as u64)),
        };
        if let Some(hasher) = self.hasher.as_mut() {
            hasher.update(&buf[..n]);
        }
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f
                .flush()
                .map_err(|e| out_of_space(e, &self.temp, self.size)),
            None => Ok(()),
        }
    }
}

/// ENOSPC or EDQUOT (a quota is a full disk too, for the user).
pub fn is_out_of_space(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::StorageFull
        || error.kind() == io::ErrorKind::QuotaExceeded
        || error.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error())
        || error.raw_os_error() == Some(rustix::io::Errno::DQUOT.raw_os_error())
}

/// A full file system, said plainly: which file, how much it needed, how much is free
/// (the caller adds what was being written). Other errors pass through unchanged.
pub(crate) fn out_of_space(error: io::Error, path: &std::path::Path, needed: u64) -> io::Error {
    if !is_out_of_space(&error) {
        return error;
    }
    let free = fsutil::free_bytes(path)
        .map(|free| format!("{} free", fsutil::human_bytes(free)))
        .unwrap_or_else(|| "free space unknown".into());
    io::Error::new(
        io::ErrorKind::StorageFull,
        format!(
            "{error}: writing {} needed more than {} ({free} on its file system); free some \
             space there (`rbuild prune`) or put the store elsewhere (--root)",
            path.display(),
            fsutil::human_bytes(needed),
        ),
    )
}

impl BlobWriter<'_> {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Finishes the blob: verify against `expected` (if given), then fsync and rename into
    /// place, unless the store already holds it (then the temp file goes and the stored blob
    /// is leased). On a mismatch nothing is stored and the temp file is removed.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<CommittedBlob> {
        let writer = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("blob writer already finished"))
            .at("write blob temp file", &self.temp)?;
        let file = writer
            .into_inner()
            .map_err(|e| out_of_space(e.into_error(), &self.temp, self.size))
            .at("write blob temp file", &self.temp)?;
        let digest = match (self.hasher.take(), expected) {
            (Some(hasher), _) => hasher.finish(),
            (None, Some(expected)) => expected.clone(),
            (None, None) => {
                return Err(io::Error::other(
                    "a blob hashed by its writer's caller was committed without its digest",
                ))
                .at("write blob temp file", &self.temp)
            }
        };
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(StoreError::DigestMismatch {
                    what: format!("blob being written to {}", self.store.root.display()),
                    expected: expected.clone(),
                    actual: digest,
                    size: self.size,
                });
            }
        }
        // The same bytes are often stored again (every empty RUN step writes the same
        // layer): then the stored copy, made durable when it was written, stands, and this
        // one is dropped without an fsync. A stored copy of another size is damaged: replaced.
        let stored_size = || std::fs::metadata(self.store.blob_path(&digest)).map(|m| m.len());
        if self.store.protect(&digest)? && stored_size().ok() == Some(self.size) {
            drop(file);
            return Ok(CommittedBlob {
                digest,
                size: self.size,
            });
        }
        file.sync_all()
            .map_err(|e| out_of_space(e, &self.temp, self.size))
            .at("fsync blob temp file", &self.temp)?;
        let target = self.store.blob_path(&digest);
        {
            // Shared gc lock: the lease entry and the rename happen together, never in the
            // middle of a gc run that could otherwise list, miss and delete this blob.
            let _gc = lock::shared(&self.store.gc_lock)?;
            self.store.lease_digest(&digest)?;
            std::fs::rename(&self.temp, &target).at("rename blob into place at", &target)?;
        }
        fsutil::sync_dir(&self.store.blobs)?;
        drop(file);
        self.temp = PathBuf::new();
        Ok(CommittedBlob {
            digest,
            size: self.size,
        })
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

impl Store {
    /// Starts writing a blob.
    pub fn blob_writer(&self) -> Result<BlobWriter<'_>> {
        let (file, temp) = fsutil::create_temp(self, "blob")?;
        // Locked for as long as the writer lives, so gc can tell it from a dead one's leftover.
        lock::try_exclusive(&file);
        Ok(BlobWriter {
            store: self,
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            temp,
            hasher: Some(Hasher::new()),
            size: 0,
        })
    }

    /// Starts writing a blob whose every accepted byte the caller hashes itself in the same
    /// pass (the layer writer's one-pass digest): `commit` must be given that digest and
    /// takes it as the blob's name without hashing the bytes a second time. Only for
    /// digests computed here from the bytes written, never for one read from elsewhere.
    pub fn blob_writer_hashed_by_caller(&self) -> Result<BlobWriter<'_>> {
        let mut writer = self.blob_writer()?;
        writer.hasher = None;
        Ok(writer)
    }

    /// Stores `bytes`, verifying them against `expected` if given.
    pub fn put_bytes(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<CommittedBlob> {
        let digest = Digest::of(bytes);
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(StoreError::DigestMismatch {
                    what: "blob content".into(),
                    expected: expected.clone(),
                    actual: digest,
                    size: bytes.len() as u64,
                });
            }
        }
        // (A blob recorded remote is protected but not on disk: it is written here.)
        if self.protect(&digest)? && self.has_blob(&digest) {
            return Ok(CommittedBlob {
                digest,
                size: bytes.len() as u64,
            });
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes)
            .at("write blob temp file", &w.temp.clone())?;
        w.commit(Some(&digest))
    }

    /// Stores everything `reader` yields, verifying against `expected` if given.
    pub fn put_blob(
        &self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
    ) -> Result<CommittedBlob> {
        let mut w = self.blob_writer()?;
        let temp = w.temp.clone();
        io::copy(reader, &mut w).at("copy blob into", &temp)?;
        w.commit(expected)
    }

    /// Whether the blob is present on disk (see also `has_blob_or_remote`).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Opens a blob for reading, fetching it first if it is recorded remote
    /// ([`Store::ensure_blob`]); a clear error if it is missing. The content is not rehashed
    /// here (layers are large); use `read_blob` for small verified reads and `fsck` for all.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        self.ensure_blob(digest)?;
        match File::open(&path) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobNotFound {
                digest: digest.clone(),
                store: self.root.clone(),
            }),
            Err(e) => Err(e).at("open blob", &path),
        }
    }

    /// The path of a blob's file, fetched first if it is recorded remote: for readers that
    /// hand the file to something else (a registry upload).
    pub fn blob_file(&self, digest: &Digest) -> Result<PathBuf> {
        self.ensure_blob(digest)?;
        Ok(self.blob_path(digest))
    }

    /// The size of a stored blob (of a remote one: its recorded size; nothing is fetched).
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        if !self.has_blob(digest) {
            if let Some(remote) = self.remote_blob(digest)? {
                return Ok(remote.descriptor.size);
            }
        }
        let file = self.open_blob(digest)?;
        Ok(file
            .metadata()
            .at("stat blob", &self.blob_path(digest))?
            .len())
    }

    /// Reads a whole blob and checks it still hashes to its name (for manifests and configs).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let path = self.blob_path(digest);
        self.open_blob(digest)?
            .read_to_end(&mut bytes)
            .at("read blob", &path)?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                what: format!("stored blob {}", path.display()),
                expected: digest.clone(),
                actual,
                size: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }
}
