//! Images in the store: writing config + manifest, reading them back, listing, and resolving
//! what a user typed (name, short name, digest, image-id prefix) to one image.

use std::collections::BTreeMap;

use serde::Serialize;

use rbuild_image::{
    media_types, Descriptor, Digest, ImageConfig, Index, Manifest, Platform, Reference,
};

use crate::error::{Result, StoreError};
use crate::index::entry_name;
use crate::Store;

/// One image: its manifest, its id (the config digest, as Docker's image id) and its tags.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    /// The manifest descriptor as the index holds it (without name annotations). For a
    /// multi-platform index entry this is the index; `image_manifest` is the chosen manifest.
    pub manifest: Descriptor,
    /// The single-platform manifest (equal to `manifest` unless the entry is an index).
    pub image_manifest: Descriptor,
    pub config: Digest,
    /// Full tag names (`docker.io/library/alpine:latest`), sorted.
    pub names: Vec<String>,
}

impl ImageRecord {
    /// Docker's image id: the config digest.
    pub fn id(&self) -> &Digest {
        &self.config
    }
}

/// A row of `rbuild images`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageSummary {
    pub names: Vec<String>,
    pub manifest_digest: Digest,
    pub id: Digest,
    pub created: Option<String>,
    /// Bytes of the manifest, config and layer blobs (compressed, as stored).
    pub size: u64,
    /// Of `size`, the bytes of layers still in their registry (recorded remote, fetched
    /// when first read).
    pub remote_size: u64,
    pub platform: String,
}

fn json_err(what: String) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |source| StoreError::Json { what, source }
}

impl Store {
    /// Reads and verifies a manifest blob.
    pub fn read_manifest(&self, digest: &Digest) -> Result<Manifest> {
        let bytes = self.read_blob(digest)?;
        Manifest::from_slice(&bytes).map_err(json_err(format!("manifest {digest}")))
    }

    /// Reads and verifies an index / manifest list blob.
    pub fn read_index(&self, digest: &Digest) -> Result<Index> {
        let bytes = self.read_blob(digest)?;
        Index::from_slice(&bytes).map_err(json_err(format!("index {digest}")))
    }

    /// Reads and verifies a config blob.
    pub fn read_config(&self, digest: &Digest) -> Result<ImageConfig> {
        let bytes = self.read_blob(digest)?;
        ImageConfig::from_slice(&bytes).map_err(json_err(format!("image config {digest}")))
    }

    /// Stores a manifest exactly as given (its bytes are its digest) after checking that its
    /// config and layers are in the store, and lists it in the index as untagged if new.
    pub fn put_manifest_bytes(&self, bytes: &[u8]) -> Result<Descriptor> {
        let manifest =
            Manifest::from_slice(bytes).map_err(json_err("manifest being stored".into()))?;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !self.protect(&blob.digest)? {
                return Err(StoreError::Invalid(format!(
                    "cannot store manifest: it references blob {} ({}) which is not in the store",
                    blob.digest, blob.media_type
                )));
            }
        }
        let blob = self.put_bytes(bytes, None)?;
        let mut desc = blob.descriptor(manifest.descriptor_media_type());
        if let Ok(config) = self.read_config(&manifest.config.digest) {
            if !config.os.is_empty() {
                desc.platform = Some(config.platform());
            }
        }
        self.add_untagged(&desc)?;
        Ok(desc)
    }

    /// Stores an index (or Docker manifest list) exactly as given after checking that every
    /// manifest it lists is in the store, and lists it in the index as untagged if new. The
    /// entry's media type is the index's own (`mediaType`, else OCI's).
    pub fn put_index_bytes(&self, bytes: &[u8]) -> Result<Descriptor> {
        let index = Index::from_slice(bytes).map_err(json_err("index being stored".into()))?;
        for child in &index.manifests {
            if !self.protect(&child.digest)? {
                return Err(StoreError::Invalid(format!(
                    "cannot store index: it lists manifest {} ({}) which is not in the store",
                    child.digest,
                    child
                        .platform
                        .as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_default()
                )));
            }
        }
        let blob = self.put_bytes(bytes, None)?;
        let media_type = index
            .media_type
            .clone()
            .unwrap_or_else(|| media_types::OCI_INDEX.to_string());
        let desc = blob.descriptor(&media_type);
        self.add_untagged(&desc)?;
        Ok(desc)
    }

    /// Stores a manifest we built, in canonical JSON.
    pub fn put_manifest(&self, manifest: &Manifest) -> Result<Descriptor> {
        let bytes = manifest
            .to_canonical_json()
            .map_err(json_err("manifest".into()))?;
        self.put_manifest_bytes(&bytes)
    }

    /// Stores `config` (canonical JSON) and an OCI manifest over `layers` (which must already
    /// be stored, bottom first). The image is untagged until `tag` is called.
    pub fn put_image(&self, config: &ImageConfig, layers: &[Descriptor]) -> Result<ImageRecord> {
        if config.rootfs.diff_ids.len() != layers.len() {
            return Err(StoreError::Invalid(format!(
                "image config lists {} diff_ids but {} layers were given",
                config.rootfs.diff_ids.len(),
                layers.len()
            )));
        }
        let bytes = config
            .to_canonical_json()
            .map_err(json_err("image config".into()))?;
        let config_blob = self.put_bytes(&bytes, None)?;
        let manifest = Manifest::new_oci(
            config_blob.descriptor(media_types::OCI_CONFIG),
            layers.to_vec(),
        );
        let desc = self.put_manifest(&manifest)?;
        Ok(ImageRecord {
            image_manifest: desc.clone(),
            manifest: desc,
            config: config_blob.digest,
            names: Vec::new(),
        })
    }

    /// The single-platform manifest behind an index entry: the entry itself, or for an index
    /// the host platform's manifest (else the first one).
    pub fn image_manifest(&self, entry: &Descriptor) -> Result<(Descriptor, Manifest)> {
        if !media_types::is_index(&entry.media_type) {
            return Ok((entry.clone(), self.read_manifest(&entry.digest)?));
        }
        let index = self.read_index(&entry.digest)?;
        let chosen = index
            .find_platform(&Platform::host())
            .or_else(|| index.manifests.first())
            .ok_or_else(|| {
                StoreError::Invalid(format!("index {} lists no manifests", entry.digest))
            })?
            .clone();
        if media_types::is_index(&chosen.media_type) {
            return Err(StoreError::Invalid(format!(
                "index {} nests another index; not supported",
                entry.digest
            )));
        }
        let manifest = self.read_manifest(&chosen.digest)?;
        Ok((chosen, manifest))
    }

    /// All images in the index, one record per manifest digest, in index order.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let index = self.index()?;
        let mut order: Vec<Digest> = Vec::new();
        let mut by_digest: BTreeMap<Digest, (Descriptor, Vec<String>)> = BTreeMap::new();
        for entry in &index.manifests {
            let slot = by_digest.entry(entry.digest.clone()).or_insert_with(|| {
                order.push(entry.digest.clone());
                let mut bare = entry.clone();
                bare.annotations.clear();
                (bare, Vec::new())
            });
            slot.1.extend(entry_name(entry).map(str::to_string));
        }
        let mut out = Vec::with_capacity(order.len());
        for digest in order {
            // Cannot fail: `order` lists each digest once, as it was put into `by_digest`.
            let (manifest, mut names) = by_digest.remove(&digest).expect("collected above");
            names.sort();
            names.dedup();
            let (image_manifest, parsed) = self.image_manifest(&manifest)?;
            out.push(ImageRecord {
                manifest,
                image_manifest,
                config: parsed.config.digest,
                names,
            });
        }
        Ok(out)
    }

    /// Summaries for `rbuild images`.
    pub fn list_images(&self) -> Result<Vec<ImageSummary>> {
        let mut out = Vec::new();
        for record in self.images()? {
            let manifest = self.read_manifest(&record.image_manifest.digest)?;
            let config = self.read_config(&record.config)?;
            let size = record.image_manifest.size
                + manifest.config.size
                + manifest.layers.iter().map(|l| l.size).sum::<u64>();
            let remote_size = manifest
                .layers
                .iter()
                .filter(|l| !self.has_blob(&l.digest) && self.has_blob_or_remote(&l.digest))
                .map(|l| l.size)
                .sum();
            out.push(ImageSummary {
                names: record.names,
                manifest_digest: record.manifest.digest,
                id: record.config,
                created: config.created.clone(),
                size,
                remote_size,
                platform: config.platform().to_string(),
            });
        }
        Ok(out)
    }

    /// Finds one image from what a user typed, in Docker's order: a full digest (manifest or
    /// image id), a name (`alpine` = `docker.io/library/alpine:latest`; `name@digest`), then an
    /// image-id prefix (`3f2a`, `sha256:3f2a`). A prefix matching two images is an error.
    pub fn resolve(&self, input: &str) -> Result<ImageRecord> {
        let images = self.images()?;
        if let Ok(digest) = input.parse::<Digest>() {
            return images
                .iter()
                .find(|i| i.manifest.digest == digest)
                .or_else(|| images.iter().find(|i| i.config == digest))
                .cloned()
                .ok_or_else(|| StoreError::ImageNotFound(input.to_string()));
        }
        if let Ok(reference) = Reference::parse(input) {
            let found = match reference.digest() {
                Some(digest) => images.iter().find(|i| &i.manifest.digest == digest),
                None => {
                    let key = reference.to_string();
                    images.iter().find(|i| i.names.contains(&key))
                }
            };
            if let Some(found) = found {
                return Ok(found.clone());
            }
        }
        let prefix = input.strip_prefix("sha256:").unwrap_or(input);
        if !prefix.is_empty()
            && prefix
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            let mut matches: Vec<&ImageRecord> = images
                .iter()
                .filter(|i| i.config.hex().starts_with(prefix))
                .collect();
            matches.dedup_by(|a, b| a.config == b.config);
            let mut ids: Vec<&Digest> = matches.iter().map(|m| &m.config).collect();
            ids.sort();
            ids.dedup();
            match ids.len() {
                0 => {}
                1 => return Ok(matches[0].clone()),
                _ => {
                    return Err(StoreError::Ambiguous {
                        input: input.to_string(),
                        matches: ids.iter().map(|d| d.short()).collect::<Vec<_>>().join(", "),
                    })
                }
            }
        }
        Err(StoreError::ImageNotFound(input.to_string()))
    }
}
