//! Remote blobs: a layer recorded as still in its registry is held by its image like a
//! blob, fetched once by its first reader (verified), and collected when nothing names it.
//! The registry end is exercised by `crates/rbuild/tests/registry_cache.rs`; here a fetcher
//! serving fixed bytes stands for it, to check what the store does with right and wrong ones.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rbuild_image::{media_types, Descriptor, Digest, ImageConfig};
use rbuild_store::{BlobFetcher, GcOptions, RemoteBlob, Store};

/// Serves `bytes` for every fetch and counts the fetches.
#[derive(Debug, Default)]
struct FixedBytes {
    bytes: Vec<u8>,
    fetches: AtomicUsize,
}

impl BlobFetcher for FixedBytes {
    fn fetch(&self, _blob: &RemoteBlob, out: &mut (dyn Write + Send)) -> Result<(), String> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        out.write_all(&self.bytes).map_err(|e| e.to_string())
    }
}

fn fetcher(bytes: &[u8]) -> Arc<FixedBytes> {
    Arc::new(FixedBytes {
        bytes: bytes.to_vec(),
        fetches: AtomicUsize::new(0),
    })
}

/// A gzip layer recorded remote (not written) and an image over it; returns the record.
fn remote_image(store: &Store, content: &[u8]) -> (RemoteBlob, Vec<u8>) {
    let (gz, diff_id) = common::layer("big", content);
    let remote = RemoteBlob {
        registry: "registry.test:5000".into(),
        repository: "cache/app".into(),
        descriptor: Descriptor::new(
            media_types::OCI_LAYER_GZIP,
            Digest::of(&gz),
            gz.len() as u64,
        ),
        diff_id: diff_id.clone(),
    };
    store.record_remote_blob(&remote).unwrap();
    let mut config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..Default::default()
    };
    config.rootfs.diff_ids.push(diff_id);
    let image = store
        .put_image(&config, std::slice::from_ref(&remote.descriptor))
        .unwrap();
    store.tag("remote/app:1", &image.manifest).unwrap();
    (remote, gz)
}

fn blob_file_exists(store: &Store, digest: &Digest) -> bool {
    store
        .root()
        .join("oci/blobs/sha256")
        .join(digest.hex())
        .exists()
}

fn remote_record_exists(store: &Store, digest: &Digest) -> bool {
    store
        .root()
        .join("remote")
        .join(format!("{}.json", digest.hex()))
        .exists()
}

#[test]
fn a_remote_layer_is_held_by_its_image_and_fetched_once_by_its_first_reader() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (remote, gz) = remote_image(&store, b"layer content that stays remote");
    let digest = remote.descriptor.digest.clone();
    assert!(!blob_file_exists(&store, &digest));
    assert!(store.has_blob_or_remote(&digest));
    assert_eq!(store.remote_blob(&digest).unwrap(), Some(remote.clone()));

    // fsck reports it remote, not missing; gc (after this process's lease ends) keeps it.
    let report = store.fsck().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.remote, vec![digest.clone()]);
    store.release_lease();
    let gc = store
        .gc_with(&GcOptions {
            temp_grace: std::time::Duration::ZERO,
        })
        .unwrap();
    assert!(gc.removed_remote_records.is_empty(), "{gc:?}");
    assert!(remote_record_exists(&store, &digest));

    // Its size needs no fetch; its bytes do, once.
    let source = fetcher(&gz);
    store.set_blob_fetcher(source.clone());
    assert_eq!(store.blob_size(&digest).unwrap(), gz.len() as u64);
    assert_eq!(source.fetches.load(Ordering::SeqCst), 0);
    let mut read = Vec::new();
    store
        .open_blob(&digest)
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    assert_eq!(read, gz);
    assert!(blob_file_exists(&store, &digest));
    assert!(!remote_record_exists(&store, &digest));
    store.ensure_blob(&digest).unwrap();
    assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
    let report = store.fsck().unwrap();
    assert!(report.is_ok() && report.remote.is_empty(), "{report:?}");
}

#[test]
fn wrong_bytes_fail_naming_the_registry_and_the_digest_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (remote, gz) = remote_image(&store, b"the right content");
    let digest = remote.descriptor.digest.clone();

    // No fetcher installed: a clear error, not a missing file.
    let err = store.ensure_blob(&digest).unwrap_err().to_string();
    assert!(err.contains("no registry client"), "{err}");

    // Same size, other bytes; then other size.
    let mut flipped = gz.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    for wrong in [flipped, b"short".to_vec()] {
        store.set_blob_fetcher(fetcher(&wrong));
        let err = store.open_blob(&digest).unwrap_err().to_string();
        assert!(err.contains("registry.test:5000/cache/app"), "{err}");
        assert!(err.contains(&digest.to_string()), "{err}");
        assert!(!blob_file_exists(&store, &digest));
        assert!(remote_record_exists(&store, &digest));
        let report = store.fsck().unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.remote, vec![digest.clone()]);
    }
    let temps: Vec<_> = std::fs::read_dir(dir.path().join("tmp")).unwrap().collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");

    // A retry with the right bytes works.
    store.set_blob_fetcher(fetcher(&gz));
    store.ensure_blob(&digest).unwrap();
    assert!(blob_file_exists(&store, &digest));
}

#[test]
fn a_layer_that_does_not_uncompress_to_its_diff_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (gz, _) = common::layer("f", b"one content");
    let remote = RemoteBlob {
        registry: "registry.test".into(),
        repository: "cache".into(),
        descriptor: Descriptor::new(
            media_types::OCI_LAYER_GZIP,
            Digest::of(&gz),
            gz.len() as u64,
        ),
        diff_id: Digest::of(b"another diff id"),
    };
    store.record_remote_blob(&remote).unwrap();
    store.set_blob_fetcher(fetcher(&gz));
    let err = store
        .ensure_blob(&remote.descriptor.digest)
        .unwrap_err()
        .to_string();
    assert!(err.contains("uncompresses to"), "{err}");
    assert!(!blob_file_exists(&store, &remote.descriptor.digest));
    assert!(remote_record_exists(&store, &remote.descriptor.digest));
}

/// Serves `bytes` in writes of `piece` bytes, as a registry's body arrives in chunks.
#[derive(Debug)]
struct Dribbling {
    bytes: Vec<u8>,
    piece: usize,
}

impl BlobFetcher for Dribbling {
    fn fetch(&self, _blob: &RemoteBlob, out: &mut (dyn Write + Send)) -> Result<(), String> {
        for piece in self.bytes.chunks(self.piece) {
            out.write_all(piece).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[test]
fn a_layer_arriving_in_many_chunks_is_checked_as_it_streams_in() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Thousands of writes: far more than the chunks the hashing thread may lag behind.
    let content: Vec<u8> = (0u32..2_000_000)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let (remote, gz) = remote_image(&store, &content);
    let digest = remote.descriptor.digest.clone();
    store.set_blob_fetcher(Arc::new(Dribbling {
        bytes: gz.clone(),
        piece: 1000,
    }));
    store.ensure_blob(&digest).unwrap();
    assert!(blob_file_exists(&store, &digest));
    assert!(!remote_record_exists(&store, &digest));
    assert_eq!(store.read_blob(&digest).unwrap(), gz);

    // Bytes of the right size and digest that are no gzip stream: the decompressor stops
    // early, the fetch still completes, and the error names where the layer came from.
    let mut garbled = gz.clone();
    for byte in &mut garbled[10..2000] {
        *byte = 0xff;
    }
    let remote = RemoteBlob {
        registry: "registry.test".into(),
        repository: "cache/garbled".into(),
        descriptor: Descriptor::new(
            media_types::OCI_LAYER_GZIP,
            Digest::of(&garbled),
            garbled.len() as u64,
        ),
        diff_id: remote.diff_id,
    };
    store.record_remote_blob(&remote).unwrap();
    store.set_blob_fetcher(Arc::new(Dribbling {
        bytes: garbled,
        piece: 1000,
    }));
    let err = store
        .ensure_blob(&remote.descriptor.digest)
        .unwrap_err()
        .to_string();
    assert!(err.contains("registry.test/cache/garbled"), "{err}");
    assert!(!blob_file_exists(&store, &remote.descriptor.digest));
    assert!(remote_record_exists(&store, &remote.descriptor.digest));
}

#[test]
fn gc_removes_remote_records_nothing_names() {
    let dir = tempfile::tempdir().unwrap();
    let (gz, diff_id) = common::layer("f", b"unreferenced");
    let digest = Digest::of(&gz);
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .record_remote_blob(&RemoteBlob {
                registry: "registry.test".into(),
                repository: "cache".into(),
                descriptor: Descriptor::new(media_types::OCI_LAYER_GZIP, digest.clone(), 1),
                diff_id,
            })
            .unwrap();
        // Leased by the process that recorded it: gc keeps it meanwhile.
        let other = Store::open(dir.path()).unwrap();
        assert!(other.gc().unwrap().removed_remote_records.is_empty());
        assert!(remote_record_exists(&other, &digest));
    }
    let store = Store::open(dir.path()).unwrap();
    let report = store.gc().unwrap();
    assert_eq!(report.removed_remote_records, vec![digest.clone()]);
    assert!(!store.has_blob_or_remote(&digest));
    // A manifest, which is never remote, cannot be recorded so.
    let err = store
        .record_remote_blob(&RemoteBlob {
            registry: "r".into(),
            repository: "c".into(),
            descriptor: Descriptor::new(media_types::OCI_MANIFEST, digest, 1),
            diff_id: Digest::of(b""),
        })
        .unwrap_err();
    assert!(err.to_string().contains("only layers"), "{err}");
}

#[test]
fn two_stores_fetching_one_remote_blob_at_once_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let (remote, gz) = {
        let store = Store::open(dir.path()).unwrap();
        remote_image(&store, &vec![7u8; 4 << 20])
    };
    let digest = remote.descriptor.digest.clone();
    let stores: Vec<Store> = (0..4).map(|_| Store::open(dir.path()).unwrap()).collect();
    std::thread::scope(|scope| {
        for store in &stores {
            store.set_blob_fetcher(fetcher(&gz));
            let digest = digest.clone();
            scope.spawn(move || store.ensure_blob(&digest).unwrap());
        }
    });
    let store = Store::open(dir.path()).unwrap();
    assert!(blob_file_exists(&store, &digest));
    assert!(!remote_record_exists(&store, &digest));
    let report = store.fsck().unwrap();
    assert!(report.is_ok() && report.remote.is_empty(), "{report:?}");
}
