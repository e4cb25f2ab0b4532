//! Base images: the [`BaseImages`] trait the caller implements (the CLI pulls missing
//! images; tests use [`LocalImages`]), loading an image's config and layers, and `scratch`.

use rbuild_image::{Descriptor, Digest, ImageConfig, Platform, RootFs};
use rbuild_store::{ImageRecord, Store};

/// Resolves a FROM (or `COPY --from`, `RUN --mount from=`) image reference to an image in
/// the store, fetching it first if the implementation can.
pub trait BaseImages {
    /// `reference` is as written after expansion (`busybox`, `alpine:3.19`, `x@sha256:..`).
    fn resolve(
        &self,
        store: &Store,
        reference: &str,
        platform: &Platform,
    ) -> Result<ImageRecord, BaseImageError>;
}

/// Why a base image could not be had. The fetcher's own error stays the source, so its kind
/// (a registry's refusal, a network failure) is not lost on the way up.
#[derive(Debug, thiserror::Error)]
pub enum BaseImageError {
    #[error("base image {reference:?}: {source}")]
    NotInStore {
        reference: String,
        #[source]
        source: rbuild_store::StoreError,
    },
    #[error(transparent)]
    Fetch(Box<dyn std::error::Error + Send + Sync>),
}

/// Resolves only images already in the store (by name, short name, digest or id).
pub struct LocalImages;

impl BaseImages for LocalImages {
    fn resolve(
        &self,
        store: &Store,
        reference: &str,
        _platform: &Platform,
    ) -> Result<ImageRecord, BaseImageError> {
        store
            .resolve(reference)
            .map_err(|source| BaseImageError::NotInStore {
                reference: reference.to_string(),
                source,
            })
    }
}

/// An image's config and its layers (bottom first).
#[derive(Debug, Clone)]
pub(crate) struct LoadedImage {
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    /// What names this image in cache keys: its manifest digest (a stage's output: the
    /// key of its file system).
    pub id: Digest,
}

pub(crate) fn load(store: &Store, record: &ImageRecord) -> crate::error::Result<LoadedImage> {
    use crate::error::BuildError;
    let manifest =
        store
            .read_manifest(&record.image_manifest.digest)
            .map_err(BuildError::store(format!(
                "reading manifest {}",
                record.image_manifest.digest
            )))?;
    let config = store
        .read_config(&record.config)
        .map_err(BuildError::store(format!(
            "reading config {}",
            record.config
        )))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(BuildError::other(format!(
            "image {} lists {} diff_ids for {} layers",
            record.config,
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    Ok(LoadedImage {
        config,
        layers: manifest.layers,
        id: record.image_manifest.digest.clone(),
    })
}

/// BuildKit's `emptyImage`: what `FROM scratch` starts from.
pub(crate) fn scratch(platform: &Platform) -> LoadedImage {
    let mut config = ImageConfig {
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
            extra: Default::default(),
        },
        ..Default::default()
    };
    config.config.working_dir = "/".into();
    config.config.env = vec![format!("PATH={}", rbuild_sandbox::DEFAULT_PATH)];
    LoadedImage {
        config,
        layers: Vec::new(),
        id: Digest::of(b"scratch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_local_base_names_it_and_keeps_the_store_error() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let err = LocalImages
            .resolve(&store, "nothere:1", &Platform::host())
            .unwrap_err();
        assert!(err.to_string().contains("\"nothere:1\""), "{err}");
        assert!(
            matches!(&err, BaseImageError::NotInStore { source, .. } if std::error::Error::source(&err).is_some() && !source.to_string().is_empty()),
            "{err:?}"
        );
    }
}
