//! save/load round trips between stores, legacy docker-archive input, and tampered archives.

mod common;

use std::io::Write;

use common::{image, layer};
use rbuild_image::{Digest, ImageConfig};
use rbuild_store::archive::{load, save, ArchiveFormat};
use rbuild_store::{Store, StoreError};

fn tar_entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in tar::Archive::new(archive).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        out.push((path, bytes));
    }
    out
}

fn saved(format: ArchiveFormat) -> (tempfile::TempDir, rbuild_store::ImageRecord, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let img = image(&store, &[("etc/a", "A"), ("etc/b", "B")]);
    store.tag("app:1", &img.manifest).unwrap();
    store.tag("localhost:5000/app:1", &img.manifest).unwrap();
    let record = store.resolve("app:1").unwrap();
    let mut out = Vec::new();
    save(
        &store,
        std::slice::from_ref(&record),
        format,
        &rbuild_layer::WriteOptions::default(),
        &mut out,
    )
    .unwrap();
    (dir, record, out)
}

#[test]
fn docker_archive_has_manifest_json_and_round_trips() {
    let (_src, record, archive) = saved(ArchiveFormat::Docker);
    let entries = tar_entries(&archive);
    let manifest_json = &entries
        .iter()
        .find(|(p, _)| p == "manifest.json")
        .unwrap()
        .1;
    let parsed: serde_json::Value = serde_json::from_slice(manifest_json).unwrap();
    assert_eq!(
        parsed[0]["Config"],
        format!("blobs/sha256/{}", record.config.hex())
    );
    assert_eq!(
        parsed[0]["RepoTags"],
        serde_json::json!(["app:1", "localhost:5000/app:1"])
    );
    assert_eq!(parsed[0]["Layers"].as_array().unwrap().len(), 2);
    assert!(entries.iter().any(|(p, _)| p == "repositories"));
    assert!(entries.iter().any(|(p, _)| p == "oci-layout"));

    let dst = tempfile::tempdir().unwrap();
    let store = Store::open(dst.path()).unwrap();
    let loaded = load(&store, archive.as_slice()).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].manifest.digest, record.manifest.digest);
    let again = store.resolve("app:1").unwrap();
    assert_eq!(again.manifest.digest, record.manifest.digest);
    assert_eq!(again.names, record.names);
    assert!(store.fsck().unwrap().is_ok());
}

#[test]
fn oci_archive_round_trips_with_tags_and_gzip_wrapping() {
    let (_src, record, archive) = saved(ArchiveFormat::Oci);
    let entries = tar_entries(&archive);
    assert!(!entries.iter().any(|(p, _)| p == "manifest.json"));
    let index: serde_json::Value =
        serde_json::from_slice(&entries.iter().find(|(p, _)| p == "index.json").unwrap().1)
            .unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "1"
    );

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&archive).unwrap();
    let dst = tempfile::tempdir().unwrap();
    let store = Store::open(dst.path()).unwrap();
    let loaded = load(&store, gz.finish().unwrap().as_slice()).unwrap();
    assert_eq!(loaded[0].manifest.digest, record.manifest.digest);
    assert_eq!(
        store.resolve("localhost:5000/app:1").unwrap().config,
        record.config
    );
}

#[test]
fn tampered_blob_is_refused_on_load() {
    let (_src, record, archive) = saved(ArchiveFormat::Oci);
    let mut builder = tar::Builder::new(Vec::new());
    for (path, mut bytes) in tar_entries(&archive) {
        if path == format!("blobs/sha256/{}", record.config.hex()) {
            bytes[0] ^= 1;
        }
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, &path, bytes.as_slice())
            .unwrap();
    }
    let dst = tempfile::tempdir().unwrap();
    let store = Store::open(dst.path()).unwrap();
    let err = load(&store, builder.into_inner().unwrap().as_slice()).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(record.config.hex()), "{err}");
    assert!(store.images().unwrap().is_empty());
}

#[test]
fn legacy_docker_save_layout_loads() {
    // What `docker save` wrote before Docker 25: <id>/layer.tar (uncompressed, duplicates as
    // symlinks), <config hex>.json, manifest.json. No index.json.
    let (gz, diff_id) = layer("hello", b"hi");
    let raw = {
        let mut d = flate2::read::GzDecoder::new(gz.as_slice());
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut v).unwrap();
        v
    };
    let mut config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        ..Default::default()
    };
    config.rootfs.diff_ids = vec![diff_id.clone(), diff_id.clone()];
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", Digest::of(&config_bytes).hex());
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["legacy:old"],
        "Layers": ["aaaa/layer.tar", "bbbb/layer.tar"]
    }]);
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, path, bytes).unwrap();
    };
    add("aaaa/layer.tar", &raw);
    add(&config_name, &config_bytes);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    let mut link = tar::Header::new_ustar();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    builder
        .append_link(&mut link, "bbbb/layer.tar", "../aaaa/layer.tar")
        .unwrap();
    let archive = builder.into_inner().unwrap();

    let dst = tempfile::tempdir().unwrap();
    let store = Store::open(dst.path()).unwrap();
    let loaded = load(&store, archive.as_slice()).unwrap();
    assert_eq!(loaded[0].names, ["docker.io/library/legacy:old"]);
    let record = store.resolve("legacy:old").unwrap();
    assert_eq!(record.config, Digest::of(&config_bytes));
    let m = store.read_manifest(&record.manifest.digest).unwrap();
    assert_eq!(m.layers.len(), 2);
    assert_eq!(
        m.layers[0].digest, diff_id,
        "uncompressed layer stored as is"
    );
    assert_eq!(
        m.layers[0].media_type,
        rbuild_image::media_types::OCI_LAYER_TAR
    );
}

#[test]
fn not_an_archive_is_a_clear_error() {
    let dst = tempfile::tempdir().unwrap();
    let store = Store::open(dst.path()).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(1);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "README", &b"x"[..])
        .unwrap();
    let err = load(&store, builder.into_inner().unwrap().as_slice()).unwrap_err();
    assert!(err.to_string().contains("neither index.json"), "{err}");
}

/// An archive member with a GNU long name claiming (and sending) 8 GiB is refused at its
/// header instead of being buffered (docs/security.md).
#[test]
fn a_huge_long_name_in_an_archive_is_refused_at_its_header() {
    if !rbuild_testutil::memory_limited(
        "a_huge_long_name_in_an_archive_is_refused_at_its_header",
        1 << 30,
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::GNULongName);
    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    header.set_size(8 << 30);
    header.set_cksum();
    let input = std::io::Read::chain(
        std::io::Cursor::new(header.as_bytes().to_vec()),
        std::io::Read::take(std::io::repeat(b'a'), 8 << 30),
    );
    let err = load(&store, input).unwrap_err().to_string();
    assert!(
        err.contains("GNU long name of 8589934592 bytes is larger than the limit"),
        "{err}"
    );
}
