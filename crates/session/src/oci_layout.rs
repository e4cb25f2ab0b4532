//! `--build-context NAME=oci-layout://DIR[:TAG][@DIGEST]`: an image read from a local OCI
//! image layout, as buildx and BuildKit read one (the context is then an image, like
//! `docker-image://`). The image is copied into the store before the build, so the build
//! uses it as it uses any base image.
//!
//! The layout is untrusted input: every file is opened inside DIR (symlinks resolved
//! inside it, never out), only regular files are read, the JSON files are bounded, each
//! blob must have the digest it is named by and the size its descriptor gives.

use std::path::{Path, PathBuf};

use rbuild_image::media_types::{self, ANNOTATION_REF_NAME};
use rbuild_image::{Descriptor, Digest, Index, Manifest, Platform};
use rbuild_store::Store;

pub use rbuild_executor::OciLayoutRef;

use crate::error::SessionError;

/// The most bytes `index.json`, a manifest, an index or a config may have (as a registry's
/// manifest limit).
const MAX_JSON_BYTES: u64 = 4 << 20;
/// The most layers an image of the layout may have (as a pull allows).
const MAX_LAYERS: usize = 1000;

/// Copies the image `layout` names into `store` (every blob verified) and returns its
/// manifest's digest, by which the build then finds it. An index is resolved to the
/// manifest of this machine's platform (else its first), as a pull does.
pub fn import(store: &Store, layout: &OciLayoutRef) -> Result<Digest, SessionError> {
    let shown = layout.to_string();
    let err = |what: String| SessionError::Invalid(format!("{shown}: {what}"));
    let reader = LayoutReader {
        dir: &layout.dir,
        store,
        shown: &shown,
    };
    let marker = reader.read_json_file("oci-layout")?;
    let version: serde_json::Value =
        serde_json::from_slice(&marker).map_err(|e| err(format!("oci-layout is not JSON: {e}")))?;
    if version
        .get("imageLayoutVersion")
        .and_then(|v| v.as_str())
        .is_none()
    {
        return Err(err(
            "oci-layout has no imageLayoutVersion: not an OCI layout".into(),
        ));
    }
    let index = Index::from_slice(&reader.read_json_file("index.json")?)
        .map_err(|e| err(format!("index.json: {e}")))?;
    let mut chosen = choose(&index, layout).map_err(err)?;
    // An index (at most two levels, as registries nest them): this platform's manifest.
    for _ in 0..3 {
        let bytes = reader.import_json_blob(&chosen)?;
        if !is_index_bytes(&chosen.media_type, &bytes) {
            let manifest = Manifest::from_slice(&bytes)
                .map_err(|e| err(format!("manifest {}: {e}", chosen.digest)))?;
            if manifest.layers.len() > MAX_LAYERS {
                return Err(err(format!(
                    "manifest {} has {} layers, more than the limit of {MAX_LAYERS}",
                    chosen.digest,
                    manifest.layers.len()
                )));
            }
            reader.import_blob(&manifest.config, Some(MAX_JSON_BYTES))?;
            for layer in &manifest.layers {
                reader.import_blob(layer, None)?;
            }
            let stored = store.put_manifest_bytes(&bytes)?;
            return Ok(stored.digest);
        }
        let nested =
            Index::from_slice(&bytes).map_err(|e| err(format!("index {}: {e}", chosen.digest)))?;
        chosen = nested
            .find_platform(&Platform::host())
            .or_else(|| nested.manifests.first())
            .cloned()
            .ok_or_else(|| err(format!("index {} lists no manifests", chosen.digest)))?;
    }
    Err(err("indexes nested more than two deep".into()))
}

/// The entry of `index.json` that `layout` names: by digest (an entry of that digest, or
/// the blob itself), by tag, else the only entry or the one tagged `latest`.
fn choose(index: &Index, layout: &OciLayoutRef) -> Result<Descriptor, String> {
    let tagged = |tag: &str| {
        index
            .manifests
            .iter()
            .find(|d| d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str) == Some(tag))
    };
    let tags = || {
        let names: Vec<&str> = index
            .manifests
            .iter()
            .filter_map(|d| d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str))
            .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    match (&layout.digest, &layout.tag) {
        (Some(digest), tag) => {
            if let Some(tag) = tag {
                let entry = tagged(tag)
                    .ok_or_else(|| format!("no image tagged {tag:?} (tags: {})", tags()))?;
                if &entry.digest != digest {
                    return Err(format!(
                        "the image tagged {tag:?} is {}, not {digest}",
                        entry.digest
                    ));
                }
            }
            Ok(index
                .manifests
                .iter()
                .find(|d| &d.digest == digest)
                .cloned()
                // Not listed: the blob itself (its kind is read from its JSON).
                .unwrap_or_else(|| Descriptor::new("", digest.clone(), 0)))
        }
        (None, Some(tag)) => tagged(tag)
            .cloned()
            .ok_or_else(|| format!("no image tagged {tag:?} (tags: {})", tags())),
        (None, None) => match index.manifests.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err("index.json lists no image".into()),
            _ => tagged("latest").cloned().ok_or_else(|| {
                format!(
                    "index.json lists {} images and none is tagged \"latest\": name one as \
                     :TAG or @DIGEST (tags: {})",
                    index.manifests.len(),
                    tags()
                )
            }),
        },
    }
}

/// Whether a blob is an index: by its descriptor's media type, or by its own when the
/// descriptor has none (a digest given on the command line).
fn is_index_bytes(media_type: &str, bytes: &[u8]) -> bool {
    if !media_type.is_empty() {
        return media_types::is_index(media_type);
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    match value.get("mediaType").and_then(|m| m.as_str()) {
        Some(own) => media_types::is_index(own),
        None => value.get("manifests").is_some(),
    }
}

struct LayoutReader<'a> {
    dir: &'a Path,
    store: &'a Store,
    shown: &'a str,
}

impl LayoutReader<'_> {
    fn error(&self, what: String) -> SessionError {
        SessionError::Invalid(format!("{}: {what}", self.shown))
    }

    /// A small JSON file of the layout (`oci-layout`, `index.json`).
    fn read_json_file(&self, name: &str) -> Result<Vec<u8>, SessionError> {
        rbuild_ignore::read_file_in_root(self.dir, Path::new(name), MAX_JSON_BYTES)
            .map_err(|e| self.error(format!("reading {name}: {e}")))
    }

    /// Imports a manifest or index blob and returns its bytes.
    fn import_json_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, SessionError> {
        self.import_blob(desc, Some(MAX_JSON_BYTES))?;
        Ok(self.store.read_blob(&desc.digest)?)
    }

    /// Copies the blob `desc` names into the store: its file opened inside the layout, a
    /// regular file no larger than `max` (and of the descriptor's size, when it gives one),
    /// whose content has the digest.
    fn import_blob(&self, desc: &Descriptor, max: Option<u64>) -> Result<(), SessionError> {
        let digest = &desc.digest;
        let rel = PathBuf::from("blobs")
            .join(digest.algorithm())
            .join(digest.hex());
        let mut file = rbuild_ignore::open_in_root(self.dir, &rel)
            .map_err(|e| self.error(format!("blob {digest}: {e}")))?;
        let metadata = file
            .metadata()
            .map_err(|e| self.error(format!("blob {digest}: {e}")))?;
        if !metadata.is_file() {
            return Err(self.error(format!("blob {digest} is not a regular file")));
        }
        let size = metadata.len();
        if max.is_some_and(|max| size > max) {
            return Err(self.error(format!(
                "blob {digest} has {size} bytes, more than the limit of {}",
                max.unwrap_or_default()
            )));
        }
        if desc.size != 0 && size != desc.size {
            return Err(self.error(format!(
                "blob {digest} has {size} bytes where its descriptor says {}",
                desc.size
            )));
        }
        self.store
            .put_blob(&mut file, Some(digest))
            .map_err(|e| self.error(format!("blob {digest}: {e}")))?;
        Ok(())
    }
}
