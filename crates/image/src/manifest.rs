//! Descriptors, image manifests (OCI and Docker schema 2 share one shape) and indexes /
//! Docker manifest lists, with unknown fields kept so foreign objects round-trip unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{media_types, Digest, Platform};

/// A pointer to a blob: its media type, digest and size, plus optional platform and annotations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `urls`, `data`, `artifactType` and anything newer.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Descriptor {
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }
}

/// An image manifest: one config and its layers, bottom first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// Absent in some OCI manifests; always present in Docker ones.
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    /// BuildKit writes `"layers": null` for an image without layers (`FROM scratch` and
    /// config instructions only), as Go encodes an empty slice.
    #[serde(default, deserialize_with = "crate::config::null_as_default")]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `artifactType`, `subject` and anything newer.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Manifest {
    /// A new OCI manifest for `config` and `layers`.
    pub fn new_oci(config: Descriptor, layers: Vec<Descriptor>) -> Self {
        Manifest {
            schema_version: 2,
            media_type: Some(media_types::OCI_MANIFEST.into()),
            config,
            layers,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// The media type to use in a descriptor of this manifest (OCI when the field is absent).
    pub fn descriptor_media_type(&self) -> &str {
        self.media_type
            .as_deref()
            .unwrap_or(media_types::OCI_MANIFEST)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn to_canonical_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        crate::canonical::to_vec(self)
    }
}

/// An OCI image index or Docker manifest list; also the shape of an OCI layout's `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            schema_version: 2,
            media_type: Some(media_types::OCI_INDEX.into()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }
}

impl Index {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn to_canonical_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        crate::canonical::to_vec(self)
    }

    /// The first manifest entry for `platform` (normalised match); entries without a platform
    /// never match.
    pub fn find_platform(&self, platform: &Platform) -> Option<&Descriptor> {
        self.manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| p.matches(platform)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn null_layers_are_no_layers() {
        // What BuildKit v0.32 writes for `FROM scratch` + `ENV foo bar`.
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","size":3,"digest":"{EMPTY}"}},"layers":null}}"#,
            media_types::OCI_MANIFEST,
            media_types::OCI_CONFIG,
        );
        let m = Manifest::from_slice(json.as_bytes()).unwrap();
        assert!(m.layers.is_empty());
    }

    #[test]
    fn docker_manifest_round_trips() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","size":7023,"digest":"{EMPTY}"}},"layers":[{{"mediaType":"{}","size":32654,"digest":"{EMPTY}","urls":["https://x"]}}]}}"#,
            media_types::DOCKER_MANIFEST,
            media_types::DOCKER_CONFIG,
            media_types::DOCKER_LAYER_GZIP
        );
        let m = Manifest::from_slice(json.as_bytes()).unwrap();
        assert_eq!(m.descriptor_media_type(), media_types::DOCKER_MANIFEST);
        assert_eq!(m.layers[0].size, 32654);
        let back: serde_json::Value =
            serde_json::from_slice(&m.to_canonical_json().unwrap()).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(&json).unwrap()
        );
    }

    #[test]
    fn index_finds_platform_with_normalisation() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[
              {{"mediaType":"{m}","size":1,"digest":"{EMPTY}","platform":{{"architecture":"amd64","os":"linux"}}}},
              {{"mediaType":"{m}","size":2,"digest":"{EMPTY}","platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#,
            media_types::DOCKER_MANIFEST_LIST,
            m = media_types::DOCKER_MANIFEST
        );
        let idx = Index::from_slice(json.as_bytes()).unwrap();
        let arm = idx
            .find_platform(&"linux/aarch64".parse().unwrap())
            .unwrap();
        assert_eq!(arm.size, 2);
        assert!(idx.find_platform(&"linux/s390x".parse().unwrap()).is_none());
    }

    #[test]
    fn bad_digest_in_descriptor_is_refused() {
        let json = r#"{"mediaType":"x","size":1,"digest":"sha256:../../etc"}"#;
        assert!(serde_json::from_str::<Descriptor>(json).is_err());
    }
}
