//! The cache manifest: an OCI image manifest whose layers are the cached layers and whose
//! config blob (media type [`CACHE_CONFIG_MEDIA_TYPE`]) maps step keys and cache-mount ids
//! to those layers by index:
//!
//! ```json
//! {
//!   "version": 1,
//!   "records": [{"key": "sha256:…", "layer": 0, "diffId": "sha256:…", "created": "…"}],
//!   "mounts": [{"id": "apt", "layer": 1, "diffId": "sha256:…"}]
//! }
//! ```
//!
//! Everything read from a registry is checked here before it is used: the manifest is ours
//! (its config's media type), every index is in range, every layer has a layer media type,
//! keys and digests parse. A manifest that fails any check is refused as a whole.

use std::collections::BTreeMap;

use rbuild_image::{media_types, Descriptor, Digest, Manifest};
use rbuild_store::CacheRecord;
use serde::{Deserialize, Serialize};

/// The config blob's media type; it is what marks a manifest as an rbuild cache.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";
/// Annotation on the manifest naming what it is, for people browsing the registry.
pub const CACHE_ANNOTATION: &str = "dev.rbuild.cache";
/// The config format's version.
const VERSION: u32 = 1;
/// A config larger than this is refused (a big cache is a few hundred KiB).
pub const MAX_CONFIG_SIZE: u64 = 16 << 20;

/// Layer media types a cache may name (they go into image manifests as they are).
const LAYER_MEDIA_TYPES: &[&str] = &[
    media_types::OCI_LAYER_TAR,
    media_types::OCI_LAYER_GZIP,
    media_types::OCI_LAYER_ZSTD,
    media_types::DOCKER_LAYER_GZIP,
    media_types::DOCKER_LAYER_TAR,
];

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CacheConfig {
    version: u32,
    #[serde(default)]
    records: Vec<RecordEntry>,
    #[serde(default)]
    mounts: Vec<MountEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RecordEntry {
    key: Digest,
    layer: usize,
    diff_id: Digest,
    created: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MountEntry {
    id: String,
    layer: usize,
    diff_id: Digest,
}

/// The contents of a `RUN --mount=type=cache` directory, as a layer.
#[derive(Debug, Clone, PartialEq)]
pub struct MountLayer {
    pub id: String,
    pub layer: Descriptor,
    pub diff_id: Digest,
}

/// What a cache manifest holds, keyed for lookups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheIndex {
    pub records: BTreeMap<Digest, CacheRecord>,
    pub mounts: BTreeMap<String, MountLayer>,
}

impl CacheIndex {
    /// Adds what `other` has and `self` lacks. For a key both have, `self`'s record stays
    /// (either is a valid result of the step; keeping the one already shared avoids churn).
    /// For a mount id both have, `other`'s wins (it is the newer contents).
    pub fn merge_records_keep_mine_mounts_theirs(&mut self, other: &CacheIndex) {
        for (key, record) in &other.records {
            self.records
                .entry(key.clone())
                .or_insert_with(|| record.clone());
        }
        for (id, mount) in &other.mounts {
            self.mounts.insert(id.clone(), mount.clone());
        }
    }

    /// Whether every key and mount id of `other` is here (with any layer).
    pub fn covers(&self, other: &CacheIndex) -> bool {
        other.records.keys().all(|k| self.records.contains_key(k))
            && other.mounts.keys().all(|id| self.mounts.contains_key(id))
    }

    /// The distinct layers, in the order the serialised form lists them.
    pub fn layers(&self) -> Vec<Descriptor> {
        let mut out: Vec<Descriptor> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let all = self
            .records
            .values()
            .map(|r| &r.layer)
            .chain(self.mounts.values().map(|m| &m.layer));
        for layer in all {
            if seen.insert(layer.digest.clone()) {
                out.push(layer.clone());
            }
        }
        out
    }

    /// The config blob and the manifest for this index. Deterministic: the same index
    /// always gives the same bytes.
    pub fn encode(&self) -> (Vec<u8>, Manifest) {
        let layers = self.layers();
        let position: BTreeMap<&Digest, usize> = layers
            .iter()
            .enumerate()
            .map(|(i, d)| (&d.digest, i))
            .collect();
        let config = CacheConfig {
            version: VERSION,
            records: self
                .records
                .values()
                .map(|r| RecordEntry {
                    key: r.key.clone(),
                    layer: position[&r.layer.digest],
                    diff_id: r.diff_id.clone(),
                    created: r.created.clone(),
                })
                .collect(),
            mounts: self
                .mounts
                .values()
                .map(|m| MountEntry {
                    id: m.id.clone(),
                    layer: position[&m.layer.digest],
                    diff_id: m.diff_id.clone(),
                })
                .collect(),
        };
        // Cannot fail: a struct of strings, numbers and string-keyed maps always serialises.
        let config_bytes = serde_json::to_vec(&config).expect("the cache config serialises");
        let config_descriptor = Descriptor::new(
            CACHE_CONFIG_MEDIA_TYPE,
            Digest::of(&config_bytes),
            config_bytes.len() as u64,
        );
        let mut manifest = Manifest::new_oci(config_descriptor, layers);
        manifest
            .annotations
            .insert(CACHE_ANNOTATION.into(), "build cache, not an image".into());
        (config_bytes, manifest)
    }
}

/// The manifest's bytes, checked to be an rbuild cache manifest; returns it parsed.
pub fn decode_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    let manifest: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| format!("the cache manifest is not a valid manifest: {e}"))?;
    if manifest.config.media_type != CACHE_CONFIG_MEDIA_TYPE {
        return Err(format!(
            "not an rbuild cache (its config is {:?}, expected {CACHE_CONFIG_MEDIA_TYPE})",
            manifest.config.media_type
        ));
    }
    if manifest.config.size > MAX_CONFIG_SIZE {
        return Err(format!(
            "the cache config is {} bytes, more than the {MAX_CONFIG_SIZE} accepted",
            manifest.config.size
        ));
    }
    for layer in &manifest.layers {
        if !LAYER_MEDIA_TYPES.contains(&layer.media_type.as_str()) {
            return Err(format!(
                "layer {} has media type {:?}, not a layer type",
                layer.digest, layer.media_type
            ));
        }
    }
    Ok(manifest)
}

/// The index a cache manifest and its config blob (already verified against the manifest's
/// config digest) describe.
pub fn decode_index(manifest: &Manifest, config_bytes: &[u8]) -> Result<CacheIndex, String> {
    let config: CacheConfig = serde_json::from_slice(config_bytes)
        .map_err(|e| format!("the cache config is not valid: {e}"))?;
    if config.version != VERSION {
        return Err(format!(
            "the cache config has version {}, this rbuild reads version {VERSION}",
            config.version
        ));
    }
    let layer = |i: usize| {
        manifest.layers.get(i).cloned().ok_or_else(|| {
            format!(
                "the cache config names layer {i}, the manifest has {}",
                manifest.layers.len()
            )
        })
    };
    let mut index = CacheIndex::default();
    for r in config.records {
        let record = CacheRecord {
            key: r.key.clone(),
            layer: layer(r.layer)?,
            diff_id: r.diff_id,
            created: r.created,
        };
        index.records.insert(r.key, record);
    }
    for m in config.mounts {
        if m.id.is_empty() {
            return Err("the cache config has a mount with an empty id".into());
        }
        let mount = MountLayer {
            id: m.id.clone(),
            layer: layer(m.layer)?,
            diff_id: m.diff_id,
        };
        index.mounts.insert(m.id, mount);
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8, layer: u8) -> CacheRecord {
        CacheRecord {
            key: Digest::of(&[n]),
            layer: Descriptor::new(
                media_types::OCI_LAYER_GZIP,
                Digest::of(&[layer, 1]),
                10 + layer as u64,
            ),
            diff_id: Digest::of(&[layer, 2]),
            created: format!("2026-01-0{n}T00:00:00Z"),
        }
    }

    fn index(records: &[CacheRecord]) -> CacheIndex {
        CacheIndex {
            records: records.iter().map(|r| (r.key.clone(), r.clone())).collect(),
            mounts: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trips_and_shares_layers() {
        let mut idx = index(&[record(1, 1), record(2, 1), record(3, 2)]);
        idx.mounts.insert(
            "apt".into(),
            MountLayer {
                id: "apt".into(),
                layer: record(9, 9).layer,
                diff_id: Digest::of(b"m"),
            },
        );
        let (config, manifest) = idx.encode();
        assert_eq!(manifest.layers.len(), 3, "two records share a layer");
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let decoded = decode_manifest(&bytes).unwrap();
        assert_eq!(decode_index(&decoded, &config).unwrap(), idx);
        // Deterministic.
        assert_eq!(idx.encode().0, config);
    }

    #[test]
    fn merge_keeps_existing_records_and_unions() {
        let mut mine = index(&[record(1, 1)]);
        let theirs = index(&[record(1, 5), record(2, 2)]);
        assert!(!mine.covers(&theirs));
        mine.merge_records_keep_mine_mounts_theirs(&theirs);
        assert!(mine.covers(&theirs));
        assert_eq!(mine.records[&Digest::of(&[1])], record(1, 1));
        assert_eq!(mine.records.len(), 2);
    }

    #[test]
    fn foreign_and_damaged_manifests_are_refused() {
        let (config, mut manifest) = index(&[record(1, 1)]).encode();
        let mut image = manifest.clone();
        image.config.media_type = media_types::OCI_CONFIG.into();
        let e = decode_manifest(&serde_json::to_vec(&image).unwrap()).unwrap_err();
        assert!(e.contains("not an rbuild cache"), "{e}");
        assert!(decode_manifest(b"{\"schemaVersion\":").is_err());

        let mut odd = manifest.clone();
        odd.layers[0].media_type = "text/html".into();
        let e = decode_manifest(&serde_json::to_vec(&odd).unwrap()).unwrap_err();
        assert!(e.contains("not a layer type"), "{e}");

        let e = decode_index(&manifest, b"garbage").unwrap_err();
        assert!(e.contains("not valid"), "{e}");
        manifest.layers.clear();
        let e = decode_index(&manifest, &config).unwrap_err();
        assert!(e.contains("names layer 0"), "{e}");
        let bad_key =
            String::from_utf8(config.clone())
                .unwrap()
                .replacen("sha256:", "sha256:zz", 1);
        assert!(decode_index(&manifest, bad_key.as_bytes()).is_err());
    }
}
