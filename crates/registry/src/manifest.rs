//! Manifests: fetching with the media types we accept (verified against the pinned digest and
//! `Docker-Content-Digest`), pushing, and picking a platform out of an index.

use bytes::Bytes;
use rbuild_image::{Descriptor, Digest, Platform, Reference};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use crate::auth::{pull_scope, push_scope};
use crate::client::Client;
use crate::error::{ErrorKind, RegistryError, Result};
use crate::transport::{BodySource, RequestSpec};

pub use rbuild_image::media_types::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST,
};
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
/// Manifests larger than this are refused, as containerd does, so a hostile registry cannot
/// make us buffer an arbitrary amount.
const MAX_MANIFEST_SIZE: usize = crate::body::MAX_MANIFEST_BYTES;

/// Layers in one image manifest. Docker cannot run an image deeper than 127 layers
/// (overlayfs), so a manifest listing more than this is refused before any blob is fetched.
pub const MAX_LAYERS: usize = 1000;

/// The largest image config accepted (real ones are a few kilobytes; the config is read
/// into memory).
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;

/// Refuses an image manifest with more than [`MAX_LAYERS`] layers or a config over
/// [`MAX_CONFIG_BYTES`]. Other manifests (indexes, rbuild's cache manifests, whose config
/// is not an image config) are left to their readers.
fn check_image_manifest(operation: &str, bytes: &[u8]) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        #[serde(default)]
        size: u64,
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        config: Option<Config>,
        #[serde(default)]
        layers: Vec<serde::de::IgnoredAny>,
    }
    let Ok(Probe {
        config: Some(config),
        layers,
    }) = serde_json::from_slice::<Probe>(bytes)
    else {
        return Ok(());
    };
    let image_config = matches!(
        config.media_type.as_str(),
        rbuild_image::media_types::OCI_CONFIG | rbuild_image::media_types::DOCKER_CONFIG
    );
    if !image_config {
        return Ok(());
    }
    if layers.len() > MAX_LAYERS {
        return Err(RegistryError::new(
            operation,
            ErrorKind::Protocol,
            format!(
                "the image has {} layers, more than the limit of {MAX_LAYERS}",
                layers.len()
            ),
        ));
    }
    if config.size > MAX_CONFIG_BYTES {
        return Err(RegistryError::new(
            operation,
            ErrorKind::Protocol,
            format!(
                "the image config is {} bytes, more than the limit of {MAX_CONFIG_BYTES}",
                config.size
            ),
        ));
    }
    Ok(())
}

/// The manifest types we accept.
pub const ACCEPTED_MANIFEST_TYPES: &[&str] = &[
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
];

/// A manifest exactly as the registry sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawManifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

impl RawManifest {
    /// Whether this is an index or manifest list (pick a platform with `resolve_platform`).
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_MANIFEST_LIST
    }
}

/// The entry of `index` for `platform`; attestation entries (`unknown/unknown`) never match.
pub fn resolve_platform(index: &RawManifest, platform: &Platform) -> Result<Descriptor> {
    #[derive(serde::Deserialize)]
    struct Index {
        manifests: Vec<Descriptor>,
    }
    let operation = format!("select {platform} from index {}", index.digest);
    if !index.is_index() {
        return Err(RegistryError::new(
            operation,
            ErrorKind::Config,
            format!("{} is not an index or manifest list", index.media_type),
        ));
    }
    let parsed: Index = serde_json::from_slice(&index.bytes).map_err(|e| {
        RegistryError::new(
            &operation,
            ErrorKind::Protocol,
            format!("malformed index: {e}"),
        )
    })?;
    let mut available = Vec::new();
    for entry in parsed.manifests {
        let Some(p) = &entry.platform else { continue };
        if p.matches(platform) {
            return Ok(entry);
        }
        available.push(p.to_string());
    }
    Err(RegistryError::new(
        operation,
        ErrorKind::NoMatchingPlatform,
        format!(
            "no manifest for {platform}; the index has: {}",
            available.join(", ")
        ),
    ))
}

/// The media type of a manifest body whose Content-Type was missing or generic.
fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        schema_version: Option<u64>,
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    if let Some(mt) = probe.media_type {
        return Some(mt);
    }
    match probe.schema_version {
        Some(1) => Some(DOCKER_SCHEMA1[0].to_string()),
        Some(2) if probe.manifests.is_some() => Some(OCI_INDEX.to_string()),
        Some(2) if probe.config.is_some() => Some(OCI_MANIFEST.to_string()),
        _ => None,
    }
}

impl Client {
    /// Fetches the manifest (or index) `reference` names, verifying its digest.
    pub async fn get_manifest(&self, reference: &Reference) -> Result<RawManifest> {
        let operation = format!("pull {reference}");
        let mut last_error = None;
        for endpoint in self.read_endpoints(reference.registry()) {
            match self
                .get_manifest_from(&operation, &endpoint, reference)
                .await
            {
                Ok(m) => return Ok(m),
                // A digest mismatch or an unsupported type is an answer, not an outage: stop.
                Err(e)
                    if matches!(
                        e.kind,
                        ErrorKind::DigestMismatch | ErrorKind::UnsupportedMediaType
                    ) =>
                {
                    return Err(e)
                }
                Err(e) => last_error = Some(e),
            }
        }
        // Cannot fail: the endpoint list always holds the registry itself, so the loop ran.
        Err(last_error.expect("at least the registry itself is tried"))
    }

    async fn get_manifest_from(
        &self,
        operation: &str,
        endpoint: &crate::transport::Endpoint,
        reference: &Reference,
    ) -> Result<RawManifest> {
        let url = format!(
            "{}/v2/{}/manifests/{}",
            endpoint.base_url(),
            reference.repository(),
            reference.manifest_selector()
        );
        let spec =
            RequestSpec::new(Method::GET, url).header(ACCEPT, &ACCEPTED_MANIFEST_TYPES.join(", "));
        let scopes = [pull_scope(reference.repository())];
        let deadline = self.deadline_of(&spec);
        let spec = spec.deadline(deadline);
        let response = self
            .send_following_redirects(operation, endpoint, &scopes, &spec)
            .await?;
        if response.status() != StatusCode::OK {
            return Err(self.status_error(operation, response).await);
        }
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let bytes = crate::body::read_capped(
            operation,
            response,
            "manifest",
            MAX_MANIFEST_SIZE,
            &deadline,
        )
        .await?;
        let media_type = if ACCEPTED_MANIFEST_TYPES.contains(&content_type.as_str()) {
            content_type
        } else {
            sniff_media_type(&bytes).unwrap_or(content_type)
        };
        if DOCKER_SCHEMA1.contains(&media_type.as_str()) {
            return Err(RegistryError::new(
                operation,
                ErrorKind::UnsupportedMediaType,
                "the registry sent a Docker schema 1 manifest, which is deprecated and not supported; push the image again with a current client",
            ));
        }
        if !ACCEPTED_MANIFEST_TYPES.contains(&media_type.as_str()) {
            return Err(RegistryError::new(
                operation,
                ErrorKind::UnsupportedMediaType,
                format!(
                    "unsupported manifest media type {media_type:?} (accepted: {})",
                    ACCEPTED_MANIFEST_TYPES.join(", ")
                ),
            ));
        }
        check_image_manifest(operation, &bytes)?;
        let digest = Digest::of(&bytes);
        if let Some(pinned) = reference.digest() {
            if &digest != pinned {
                return Err(digest_mismatch(operation, "manifest", pinned, &digest));
            }
        }
        if let Some(header) = header_digest {
            // Only sha256 is comparable; other algorithms are left to the pinned-digest check.
            if let Ok(claimed) = header.parse::<Digest>() {
                if claimed != digest {
                    return Err(digest_mismatch(operation, "manifest", &claimed, &digest));
                }
            }
        }
        Ok(RawManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Fetches the manifest a digest names in the repository of `reference`.
    pub async fn get_manifest_by_digest(
        &self,
        reference: &Reference,
        digest: &Digest,
    ) -> Result<RawManifest> {
        self.get_manifest(&reference.with_digest(digest.clone()))
            .await
    }

    /// Uploads a manifest under the tag (or digest) of `reference`; returns its digest.
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        bytes: Bytes,
        media_type: &str,
    ) -> Result<Digest> {
        let operation = format!("push manifest {reference}");
        let endpoint = self.endpoint(reference.registry());
        let digest = Digest::of(&bytes);
        if let Some(pinned) = reference.digest() {
            if pinned != &digest {
                return Err(digest_mismatch(&operation, "manifest", pinned, &digest));
            }
        }
        let selector = reference
            .tag()
            .map(str::to_string)
            .unwrap_or_else(|| digest.to_string());
        let url = format!(
            "{}/v2/{}/manifests/{}",
            endpoint.base_url(),
            reference.repository(),
            selector
        );
        let spec = RequestSpec::new(Method::PUT, url)
            .header(CONTENT_TYPE, media_type)
            .body(BodySource::Bytes(bytes));
        let scopes = [push_scope(reference.repository())];
        let response = self.send(&operation, &endpoint, &scopes, &spec).await?;
        if !response.status().is_success() {
            return Err(self.status_error(&operation, response).await);
        }
        if let Some(claimed) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok())
        {
            if claimed != digest {
                return Err(digest_mismatch(&operation, "manifest", &digest, &claimed));
            }
        }
        Ok(digest)
    }
}

pub(crate) fn digest_mismatch(
    operation: &str,
    what: &str,
    expected: &Digest,
    got: &Digest,
) -> RegistryError {
    RegistryError::new(
        operation,
        ErrorKind::DigestMismatch,
        format!(
            "registry returned a {what} whose digest does not match: expected {expected} got {got}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(json: serde_json::Value) -> RawManifest {
        let bytes = Bytes::from(json.to_string());
        RawManifest {
            digest: Digest::of(&bytes),
            bytes,
            media_type: OCI_INDEX.into(),
        }
    }

    #[test]
    fn resolves_platform_with_variant_and_skips_attestations() {
        let d = |n: u8| format!("sha256:{}", hex::encode([n; 32]));
        let idx = index(serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": d(1), "size": 10, "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": OCI_MANIFEST, "digest": d(2), "size": 11, "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
                {"mediaType": OCI_MANIFEST, "digest": d(3), "size": 12, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
                {"mediaType": OCI_MANIFEST, "digest": d(4), "size": 13, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": OCI_MANIFEST, "digest": d(5), "size": 14, "platform": {"os": "unknown", "architecture": "unknown"}}
            ]
        }));
        let pick =
            |p: &str| resolve_platform(&idx, &p.parse().unwrap()).map(|e| e.digest.to_string());
        assert_eq!(pick("linux/amd64").unwrap(), d(1));
        assert_eq!(pick("linux/x86_64").unwrap(), d(1));
        assert_eq!(pick("linux/arm/v6").unwrap(), d(2));
        assert_eq!(pick("linux/arm").unwrap(), d(3));
        assert_eq!(pick("linux/arm64").unwrap(), d(4));
        assert_eq!(pick("linux/aarch64").unwrap(), d(4));
        let err = pick("linux/s390x").unwrap_err();
        assert_eq!(err.kind, ErrorKind::NoMatchingPlatform);
        assert!(err.message.contains("linux/arm/v6"), "{err}");
    }

    #[test]
    fn sniffs_types_from_bodies() {
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":1,"fsLayers":[]}"#).as_deref(),
            Some(DOCKER_SCHEMA1[0])
        );
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"manifests":[]}"#).as_deref(),
            Some(OCI_INDEX)
        );
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"mediaType":"x/y"}"#).as_deref(),
            Some("x/y")
        );
        assert_eq!(sniff_media_type(b"not json"), None);
    }
}
