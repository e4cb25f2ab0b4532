//! Helpers shared by the store tests: small real images built in memory.

#![allow(dead_code)]

use std::io::Write;

use rbuild_image::{media_types, Descriptor, Digest, History, ImageConfig};
use rbuild_store::{ImageRecord, Store};

/// A gzip layer holding one file; returns (compressed bytes, diff id).
pub fn layer(name: &str, content: &[u8]) -> (Vec<u8>, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, content).unwrap();
    let raw = tar.into_inner().unwrap();
    let diff_id = Digest::of(&raw);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// Stores an image with one layer per entry of `files` and returns it (untagged).
pub fn image(store: &Store, files: &[(&str, &str)]) -> ImageRecord {
    let mut config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        created: Some("2024-05-06T07:08:09Z".into()),
        ..Default::default()
    };
    let mut layers: Vec<Descriptor> = Vec::new();
    for (name, content) in files {
        let (gz, diff_id) = layer(name, content.as_bytes());
        let blob = store.put_bytes(&gz, None).unwrap();
        layers.push(blob.descriptor(media_types::OCI_LAYER_GZIP));
        config.rootfs.diff_ids.push(diff_id);
        config.history.push(History {
            created_by: format!("COPY {name} /"),
            ..Default::default()
        });
    }
    config.config.cmd = Some(vec!["/bin/sh".into()]);
    store.put_image(&config, &layers).unwrap()
}

/// Names of the files directly in `dir`.
pub fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
