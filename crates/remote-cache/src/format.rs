//! The cache manifest: an OCI image manifest whose layers are the cached layers and whose
//! config blob (media type [`CACHE_CONFIG_MEDIA_TYPE`]) maps step keys and cache-mount ids
//! to those layers by index:
//!
//! ```json
//! {
//!   "version": 2,
//!   "records": [{"key": "sha256:…", "layer": 0, "diffId": "sha256:…", "created": "…",
//!                "lastUsed": "2026-12-06"}],
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
/// The config format's version written: 2 added `lastUsed` to records. Version 1 configs
/// (no `lastUsed`) are still read.
const VERSION: u32 = 2;
const READABLE_VERSIONS: &[u32] = &[1, 2];
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
    /// The day (UTC, `YYYY-MM-DD`) a build last exported this record: what the expiry of
    /// unused records goes by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_used: Option<String>,
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
    /// The day (days since 1970-01-01, UTC) each record was last exported by a build;
    /// records read from a version 1 config have none.
    pub last_used: BTreeMap<Digest, u32>,
}

impl CacheIndex {
    /// Merges this build's `ours` into the ref's current contents (`self`), as BuildKit's
    /// export replaces the ref with the build's records: for a key both have, ours wins
    /// (the result this build used or made is what the next importer must get); keys only
    /// the ref has stay (another builder's, exported concurrently or earlier). Our records
    /// are marked used `today`; a mount id both have takes ours (newer contents).
    pub fn merge_ours_win(&mut self, ours: &CacheIndex, today: u32) {
        // A record from before `lastUsed` existed starts its clock now; a day after today
        // (a writer with a wrong clock) counts as today, so no record escapes expiry.
        for key in self.records.keys() {
            let day = self.last_used.entry(key.clone()).or_insert(today);
            *day = (*day).min(today);
        }
        for (key, record) in &ours.records {
            self.records.insert(key.clone(), record.clone());
            self.last_used.insert(key.clone(), today);
        }
        for (id, mount) in &ours.mounts {
            self.mounts.insert(id.clone(), mount.clone());
        }
    }

    /// Drops the records no build has exported for more than `max_unused_days` days before
    /// `today`; returns how many.
    pub fn expire_unused(&mut self, today: u32, max_unused_days: u32) -> usize {
        let before = self.records.len();
        let last_used = &self.last_used;
        self.records.retain(|key, _| {
            last_used
                .get(key)
                .is_none_or(|&day| today.saturating_sub(day) <= max_unused_days)
        });
        let records = &self.records;
        self.last_used.retain(|key, _| records.contains_key(key));
        before - self.records.len()
    }

    /// Whether this index already holds `ours` exactly as a merge would leave it: every
    /// record with the same result, marked used `today`, and every mount with the same
    /// layer. Then an export has nothing to write.
    pub fn holds(&self, ours: &CacheIndex, today: u32) -> bool {
        ours.records.iter().all(|(key, record)| {
            self.records.get(key) == Some(record) && self.last_used.get(key) == Some(&today)
        }) && ours.mounts.iter().all(|(id, m)| {
            self.mounts
                .get(id)
                .is_some_and(|c| c.layer.digest == m.layer.digest)
        })
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
                    last_used: self.last_used.get(&r.key).map(|&day| format_day(day)),
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
    if !READABLE_VERSIONS.contains(&config.version) {
        return Err(format!(
            "the cache config has version {}, this rbuild reads versions {READABLE_VERSIONS:?}",
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
        if let Some(day) = &r.last_used {
            let day = parse_day(day)
                .ok_or_else(|| format!("the cache config has a bad lastUsed {day:?}"))?;
            index.last_used.insert(r.key.clone(), day);
        }
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

/// Days since 1970-01-01 as `YYYY-MM-DD` (proleptic Gregorian calendar, UTC).
pub fn format_day(days: u32) -> String {
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD` (from 1970 on) as days since 1970-01-01; `None` if it is not such a date.
pub fn parse_day(text: &str) -> Option<u32> {
    let mut parts = text.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let days = u32::try_from(days).ok()?;
    // Reject days that do not exist (2026-02-30).
    (format_day(days) == text).then_some(days)
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
            last_used: BTreeMap::new(),
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
    fn merge_takes_ours_for_shared_keys_and_unions() {
        let mut current = index(&[record(1, 1), record(3, 3)]);
        let ours = index(&[record(1, 5), record(2, 2)]);
        assert!(!current.covers(&ours));
        current.merge_ours_win(&ours, 100);
        assert!(current.covers(&ours));
        assert!(current.holds(&ours, 100));
        assert!(!current.holds(&ours, 101));
        assert_eq!(current.records[&Digest::of(&[1])], record(1, 5));
        assert_eq!(current.records.len(), 3);
        // The record only the ref had starts its clock at the merge.
        assert_eq!(current.last_used[&Digest::of(&[3])], 100);
        // A day in the future counts as today.
        current.last_used.insert(Digest::of(&[3]), 5000);
        current.merge_ours_win(&ours, 101);
        assert_eq!(current.last_used[&Digest::of(&[3])], 101);
        let (config, manifest) = current.encode();
        let decoded = decode_index(&manifest, &config).unwrap();
        assert_eq!(decoded, current);
    }

    #[test]
    fn unused_records_expire() {
        let mut current = index(&[record(1, 1), record(2, 2), record(3, 3)]);
        current.last_used.insert(Digest::of(&[1]), 80);
        current.last_used.insert(Digest::of(&[2]), 86);
        current.last_used.insert(Digest::of(&[3]), 100);
        assert_eq!(current.expire_unused(100, 14), 1);
        assert!(!current.records.contains_key(&Digest::of(&[1])));
        assert!(!current.last_used.contains_key(&Digest::of(&[1])));
        assert_eq!(current.records.len(), 2, "14 days unused is kept");
        assert_eq!(current.expire_unused(100, 0), 1);
        assert_eq!(current.records.len(), 1);
    }

    #[test]
    fn days_round_trip() {
        assert_eq!(format_day(0), "1970-01-01");
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(format_day(20_793), "2026-12-06");
        for day in [0, 59, 60, 365, 10_956, 20_793, 40_000] {
            assert_eq!(parse_day(&format_day(day)), Some(day));
        }
        for bad in [
            "2026-02-30",
            "1969-12-31",
            "2026-1-01",
            "x",
            "2026-13-01",
            "2026-12-06-1",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn version_1_configs_are_read() {
        let (config, manifest) = index(&[record(1, 1)]).encode();
        let v1 = String::from_utf8(config)
            .unwrap()
            .replace("\"version\":2", "\"version\":1");
        let decoded = decode_index(&manifest, v1.as_bytes()).unwrap();
        assert_eq!(decoded.records.len(), 1);
        assert!(decoded.last_used.is_empty());
        let v3 = v1.replace("\"version\":1", "\"version\":3");
        assert!(decode_index(&manifest, v3.as_bytes()).is_err());
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
