//! Lazy layers: a build step's layer is stored as a plain tar (its blob digest is its diff
//! id) and compressed only when it leaves the machine — a push, an archive, a registry-cache
//! export, or the image of a build that itself ships it; a local image keeps it plain. Each compression is remembered (diff id + compression and level →
//! compressed descriptor), so a second export of the same layer compresses nothing.
//!
//! ```text
//! <root>/layers/<diff id hex>.lazy             a build step made this plain layer
//! <root>/layers/<diff id hex>.<gzip-6|zstd-3>  JSON descriptor of its compressed blob
//! ```
//!
//! Only layers marked `.lazy` are ever compressed here: a base image that ships plain
//! layers keeps them as they are, so images built on it keep their manifests.

use std::path::PathBuf;

use rbuild_image::{media_types, Descriptor, Digest, Manifest};
use rbuild_layer::{compress_layer, Compression, WriteOptions};

use crate::error::{IoContext, Result, StoreError};
use crate::{fsutil, Store};

/// The name a compression and level is remembered under; `None` for plain layers.
fn compression_key(options: &WriteOptions) -> Option<String> {
    let name = match options.compression {
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
        Compression::None => return None,
    };
    let level = options.level.unwrap_or(options.compression.default_level());
    Some(format!("{name}-{level}"))
}

/// Whether a layer media type says the blob is a plain (uncompressed) tar.
pub fn is_plain_layer(media_type: &str) -> bool {
    media_type.ends_with(".tar")
}

impl Store {
    fn layers_dir(&self) -> Result<PathBuf> {
        self.state_dir("layers")
    }

    /// Records that the plain layer `diff_id` was made by a build step, so that
    /// [`Store::ship_layer`] compresses it when it leaves the machine.
    pub fn mark_lazy_layer(&self, diff_id: &Digest) -> Result<()> {
        let path = self.layers_dir()?.join(format!("{}.lazy", diff_id.hex()));
        if path.is_file() {
            return Ok(());
        }
        fsutil::replace_file(self, &path, b"")
    }

    /// Whether a build step made the plain layer `diff_id` (see [`Store::mark_lazy_layer`]).
    pub fn is_lazy_layer(&self, diff_id: &Digest) -> bool {
        self.layers_dir()
            .map(|dir| dir.join(format!("{}.lazy", diff_id.hex())).is_file())
            .unwrap_or(false)
    }

    /// The remembered compressed blob of `diff_id` under `key`, if it is still in the store
    /// (it is then leased for the life of this `Store`).
    fn remembered(&self, diff_id: &Digest, key: &str) -> Result<Option<Descriptor>> {
        let path = self.layers_dir()?.join(format!("{}.{key}", diff_id.hex()));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).at("read compressed-layer record", &path),
        };
        let Ok(descriptor) = serde_json::from_slice::<Descriptor>(&bytes) else {
            // A torn record (a power cut) is a miss: the layer is compressed again.
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        };
        if !self.protect(&descriptor.digest)? {
            return Ok(None);
        }
        Ok(Some(descriptor))
    }

    /// Any remembered compressed blob of `diff_id` that is still in the store: what a cache
    /// record whose plain layer was collected stands on.
    pub fn any_compressed_layer(&self, diff_id: &Digest) -> Result<Option<Descriptor>> {
        for key in ["gzip-6", "zstd-3"] {
            if let Some(found) = self.remembered(diff_id, key)? {
                return Ok(Some(found));
            }
        }
        let dir = self.layers_dir()?;
        let prefix = format!("{}.", diff_id.hex());
        let entries = std::fs::read_dir(&dir).at("list", &dir)?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(key) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            if key == "lazy" || key.contains('/') {
                continue;
            }
            if let Some(found) = self.remembered(diff_id, key)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The blob to ship for `layer` (whose uncompressed digest is `diff_id`) with
    /// `options`' compression: `layer` itself when it is already compressed, when no
    /// compression is asked, or when no build step made it (a base image's plain layer);
    /// else the remembered compressed blob, or one compressed now from the plain blob and
    /// remembered. The result is the blob a one-pass compressed write would have made
    /// (same encoder, block size and level), so manifests do not depend on laziness.
    pub fn ship_layer(
        &self,
        layer: &Descriptor,
        diff_id: &Digest,
        options: &WriteOptions,
    ) -> Result<Descriptor> {
        let Some(key) = compression_key(options) else {
            return Ok(layer.clone());
        };
        if !is_plain_layer(&layer.media_type) || !self.is_lazy_layer(diff_id) {
            return Ok(layer.clone());
        }
        if let Some(found) = self.remembered(diff_id, &key)? {
            return Ok(found);
        }
        let plain = self.open_blob(&layer.digest)?;
        // The encoder hashes the compressed bytes it writes: the store takes its digest.
        let mut writer = self.blob_writer_hashed_by_caller()?;
        let info = compress_layer(std::io::BufReader::new(plain), &mut writer, options)
            .map_err(|e| StoreError::Invalid(format!("compressing layer {diff_id}: {e}")))?;
        if &info.diff_id != diff_id {
            return Err(StoreError::DigestMismatch {
                what: format!("plain layer blob {}", layer.digest),
                expected: diff_id.clone(),
                actual: info.diff_id,
                size: info.uncompressed_size,
            });
        }
        let blob = writer.commit(Some(&info.digest))?;
        let descriptor = Descriptor::new(info.media_type, blob.digest, blob.size);
        let bytes = serde_json::to_vec(&descriptor).map_err(|source| StoreError::Json {
            what: format!("compressed-layer record of {diff_id}"),
            source,
        })?;
        let path = self.layers_dir()?.join(format!("{}.{key}", diff_id.hex()));
        fsutil::replace_file(self, &path, &bytes)?;
        Ok(descriptor)
    }

    /// The manifest (or index) to send for `source`, a manifest or index in the store: the
    /// same one when none of its layers is a lazy plain layer (or `options` asks for no
    /// compression), else a copy whose lazy layers are their compressed blobs
    /// ([`Store::ship_layer`]), written to the store as a blob (not listed as an image:
    /// a local image keeps its plain layers; this is what leaves the machine) and leased
    /// for the life of this `Store`. An index is rewritten over its rewritten manifests.
    pub fn shipped_manifest(
        &self,
        source: &Descriptor,
        options: &WriteOptions,
    ) -> Result<Descriptor> {
        if compression_key(options).is_none() {
            return Ok(source.clone());
        }
        if media_types::is_index(&source.media_type) {
            let mut index = self.read_index(&source.digest)?;
            let mut changed = false;
            for entry in &mut index.manifests {
                if !media_types::is_manifest(&entry.media_type) {
                    continue;
                }
                let shipped = self.shipped_manifest(entry, options)?;
                if shipped.digest != entry.digest {
                    entry.digest = shipped.digest;
                    entry.size = shipped.size;
                    changed = true;
                }
            }
            if !changed {
                return Ok(source.clone());
            }
            let bytes = index
                .to_canonical_json()
                .map_err(|source| StoreError::Json {
                    what: "shipped index".into(),
                    source,
                })?;
            return self.put_shipped(&bytes, source);
        }
        let mut manifest: Manifest = self.read_manifest(&source.digest)?;
        let config = self.read_config(&manifest.config.digest)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(StoreError::Invalid(format!(
                "manifest {} lists {} layers but its config {} diff ids",
                source.digest,
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let mut changed = false;
        for (layer, diff_id) in manifest.layers.iter_mut().zip(&config.rootfs.diff_ids) {
            let shipped = self.ship_layer(layer, diff_id, options)?;
            if shipped.digest != layer.digest {
                layer.media_type = shipped.media_type;
                layer.digest = shipped.digest;
                layer.size = shipped.size;
                changed = true;
            }
        }
        if !changed {
            return Ok(source.clone());
        }
        let bytes = manifest
            .to_canonical_json()
            .map_err(|source| StoreError::Json {
                what: "shipped manifest".into(),
                source,
            })?;
        self.put_shipped(&bytes, source)
    }

    /// The layers of `source` (a manifest, or an index of manifests) with their diff ids,
    /// each layer once, in order: what [`Store::shipped_manifest`] hands to
    /// [`Store::ship_layer`]. A pusher compresses them ahead of assembling the manifest, so
    /// that each upload starts as its blob is ready.
    pub fn layers_with_diff_ids(&self, source: &Descriptor) -> Result<Vec<(Descriptor, Digest)>> {
        let manifests = if media_types::is_index(&source.media_type) {
            self.read_index(&source.digest)?
                .manifests
                .into_iter()
                .filter(|entry| media_types::is_manifest(&entry.media_type))
                .collect()
        } else {
            vec![source.clone()]
        };
        let mut layers: Vec<(Descriptor, Digest)> = Vec::new();
        for entry in manifests {
            let manifest: Manifest = self.read_manifest(&entry.digest)?;
            let config = self.read_config(&manifest.config.digest)?;
            if config.rootfs.diff_ids.len() != manifest.layers.len() {
                return Err(StoreError::Invalid(format!(
                    "manifest {} lists {} layers but its config {} diff ids",
                    entry.digest,
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                )));
            }
            for (layer, diff_id) in manifest.layers.into_iter().zip(config.rootfs.diff_ids) {
                if !layers.iter().any(|(l, _)| l.digest == layer.digest) {
                    layers.push((layer, diff_id));
                }
            }
        }
        Ok(layers)
    }

    /// `record` as it leaves the machine: [`Store::shipped_manifest`] of its manifest and of
    /// its single-platform manifest.
    pub fn shipped_record(
        &self,
        record: &crate::ImageRecord,
        options: &WriteOptions,
    ) -> Result<crate::ImageRecord> {
        let manifest = self.shipped_manifest(&record.manifest, options)?;
        let image_manifest = if record.image_manifest.digest == record.manifest.digest {
            manifest.clone()
        } else {
            self.shipped_manifest(&record.image_manifest, options)?
        };
        Ok(crate::ImageRecord {
            manifest,
            image_manifest,
            config: record.config.clone(),
            names: record.names.clone(),
        })
    }

    /// Stores a rewritten manifest or index as a leased blob with `source`'s media type and
    /// platform.
    fn put_shipped(&self, bytes: &[u8], source: &Descriptor) -> Result<Descriptor> {
        let blob = self.put_bytes(bytes, None)?;
        self.protect(&blob.digest)?;
        let mut descriptor = blob.descriptor(&source.media_type);
        descriptor.platform = source.platform.clone();
        Ok(descriptor)
    }

    /// Removes the lazy-layer records whose blob gc removed (called by gc, holding its
    /// locks): a `.lazy` marker whose plain blob is gone (a registry-cache hit marks it
    /// again) and a compressed-layer record whose compressed blob is gone.
    pub(crate) fn remove_dangling_layer_records(&self) -> Result<()> {
        let dir = self.layers_dir()?;
        for entry in std::fs::read_dir(&dir).at("list", &dir)? {
            let entry = entry.at("list", &dir)?;
            let name = entry.file_name();
            let Some((hex, kind)) = name.to_str().and_then(|n| n.split_once('.')) else {
                continue;
            };
            let blob = if kind == "lazy" {
                format!("sha256:{hex}").parse::<Digest>().ok()
            } else {
                std::fs::read(entry.path())
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<Descriptor>(&bytes).ok())
                    .map(|descriptor| descriptor.digest)
            };
            if blob.is_some_and(|digest| !self.has_blob_or_remote(&digest)) {
                let path = entry.path();
                std::fs::remove_file(&path).at("remove dangling layer record", &path)?;
            }
        }
        Ok(())
    }
}
