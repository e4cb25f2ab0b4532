//! Lazy layers: a plain layer a build step made is compressed only when shipped, once.

use std::path::Path;

use rbuild_image::{Descriptor, Digest};
use rbuild_layer::{write_dir_layer, Compression, WriteOptions};
use rbuild_store::{is_plain_layer, CacheRecord, Store};

/// The store's blobs that start with gzip's or zstd's magic bytes.
fn compressed_blobs(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root.join("oci/blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let bytes = std::fs::read(entry.path()).unwrap();
        if Compression::detect(&bytes[..bytes.len().min(4)]) != Compression::None {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    found.sort();
    found
}

/// A plain layer of a small tree, in the store; returns its descriptor and diff id.
fn plain_layer(store: &Store, content: &[u8]) -> (Descriptor, Digest) {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("file"), content).unwrap();
    let mut writer = store.blob_writer().unwrap();
    let plain = WriteOptions {
        compression: Compression::None,
        source_date_epoch: EPOCH,
        ..Default::default()
    };
    let info = write_dir_layer(src.path(), &mut writer, &plain).unwrap();
    let blob = writer.commit(Some(&info.digest)).unwrap();
    assert_eq!(blob.digest, info.diff_id);
    (
        Descriptor::new(info.media_type, blob.digest, blob.size),
        info.diff_id,
    )
}

/// Every mtime clamped: the tests write "the same tree" twice, in two directories made at
/// different times (a second apart now and then).
const EPOCH: Option<i64> = Some(1_700_000_000);

fn gzip() -> WriteOptions {
    WriteOptions {
        source_date_epoch: EPOCH,
        ..Default::default()
    }
}

#[test]
fn a_lazy_layer_is_compressed_once_and_as_a_one_pass_write_would() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let content = b"lazy layer content\n".repeat(10_000);
    let (plain, diff_id) = plain_layer(&store, &content);
    assert!(is_plain_layer(&plain.media_type));
    store.mark_lazy_layer(&diff_id).unwrap();
    assert!(compressed_blobs(dir.path()).is_empty());

    let shipped = store.ship_layer(&plain, &diff_id, &gzip()).unwrap();
    assert_eq!(
        shipped.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let compressed = compressed_blobs(dir.path());
    assert_eq!(compressed, vec![shipped.digest.hex().to_string()]);
    // The blob a compressed write of the same tree gives, byte for byte.
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("file"), &content).unwrap();
    let direct = write_dir_layer(src.path(), std::io::sink(), &gzip()).unwrap();
    assert_eq!(shipped.digest, direct.digest);
    assert_eq!(shipped.size, direct.size);

    // Shipping again, from another process's view of the store, compresses nothing.
    let reopened = Store::open(dir.path()).unwrap();
    let again = reopened.ship_layer(&plain, &diff_id, &gzip()).unwrap();
    assert_eq!(again, shipped);
    assert_eq!(compressed_blobs(dir.path()), compressed);

    // Another compression is another blob, remembered separately.
    let zstd = WriteOptions {
        compression: Compression::Zstd,
        ..Default::default()
    };
    let zstd_layer = store.ship_layer(&plain, &diff_id, &zstd).unwrap();
    assert_ne!(zstd_layer.digest, shipped.digest);
    assert_eq!(compressed_blobs(dir.path()).len(), 2);
    assert_eq!(
        store.ship_layer(&plain, &diff_id, &zstd).unwrap(),
        zstd_layer
    );
    assert_eq!(compressed_blobs(dir.path()).len(), 2);
}

#[test]
fn a_plain_layer_no_step_made_is_shipped_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (plain, diff_id) = plain_layer(&store, b"a base image's plain layer\n");
    assert!(!store.is_lazy_layer(&diff_id));
    assert_eq!(store.ship_layer(&plain, &diff_id, &gzip()).unwrap(), plain);
    // No compression asked: a lazy layer stays plain too.
    store.mark_lazy_layer(&diff_id).unwrap();
    let none = WriteOptions {
        compression: Compression::None,
        ..Default::default()
    };
    assert_eq!(store.ship_layer(&plain, &diff_id, &none).unwrap(), plain);
    assert!(compressed_blobs(dir.path()).is_empty());
}

#[test]
fn a_plain_blob_that_does_not_hash_to_its_diff_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (plain, _) = plain_layer(&store, b"one\n");
    let (_, other_diff_id) = plain_layer(&store, b"two\n");
    store.mark_lazy_layer(&other_diff_id).unwrap();
    let err = store
        .ship_layer(&plain, &other_diff_id, &gzip())
        .unwrap_err()
        .to_string();
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(compressed_blobs(dir.path()).is_empty());
}

#[test]
fn a_cache_record_whose_plain_blob_is_gone_stands_on_its_compressed_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (plain, diff_id) = plain_layer(&store, b"cached step output\n");
    store.mark_lazy_layer(&diff_id).unwrap();
    let record = CacheRecord {
        key: Digest::of(b"step key"),
        layer: plain.clone(),
        diff_id: diff_id.clone(),
        created: "2024-01-01T00:00:00Z".into(),
    };
    store.cache_put(&record).unwrap();
    let shipped = store.ship_layer(&plain, &diff_id, &gzip()).unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("oci/blobs/sha256").join(plain.digest.hex())).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let found = store.cache_lookup(&record.key).unwrap().unwrap();
    assert_eq!(found.layer, shipped);
    assert_eq!(found.diff_id, diff_id);
}

#[test]
fn gc_forgets_compressed_copies_it_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (plain, diff_id) = plain_layer(&store, b"shipped once\n");
    store.mark_lazy_layer(&diff_id).unwrap();
    let shipped = store.ship_layer(&plain, &diff_id, &gzip()).unwrap();
    let records = || {
        std::fs::read_dir(dir.path().join("layers"))
            .unwrap()
            .count()
    };
    assert_eq!(records(), 2, "the lazy marker and the gzip record");
    // Nothing holds either blob once this process's lease is gone.
    store.release_lease();
    store.gc().unwrap();
    assert!(!store.has_blob(&shipped.digest));
    assert_eq!(records(), 0, "both records named removed blobs");
    assert!(store.any_compressed_layer(&diff_id).unwrap().is_none());
}
