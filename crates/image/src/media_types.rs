//! Media type strings for OCI and Docker image objects. Kept as plain `&str` constants because
//! registries and archives carry types we do not know, and those must pass through unchanged.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI layer, uncompressed tar.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip-compressed tar.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd-compressed tar.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI empty descriptor (`{}`), used by artifacts.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (the Docker counterpart of an OCI index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer, gzip-compressed tar.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker layer, uncompressed tar (rare, but valid).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker "foreign" (non-distributable) gzip layer, e.g. Windows base layers.
pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// The `imageLayoutVersion` written to `oci-layout`.
pub const OCI_LAYOUT_VERSION: &str = "1.0.0";

/// Annotation naming an image in an OCI layout's index.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation carrying the full image name (also written by `docker save`).
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Whether `media_type` is a single-image manifest (OCI or Docker).
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Whether `media_type` is an index / manifest list (OCI or Docker).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Compression of a layer blob, as told by its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
    Zstd,
}

/// The compression of a layer media type, or `None` if it is not a layer type we know.
pub fn layer_compression(media_type: &str) -> Option<LayerCompression> {
    match media_type {
        OCI_LAYER_TAR
        | DOCKER_LAYER_TAR
        | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(LayerCompression::None),
        OCI_LAYER_GZIP
        | DOCKER_LAYER_GZIP
        | DOCKER_FOREIGN_LAYER_GZIP
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => {
            Some(LayerCompression::Gzip)
        }
        OCI_LAYER_ZSTD | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
            Some(LayerCompression::Zstd)
        }
        _ => None,
    }
}

/// Guesses a layer's compression from its first bytes (gzip and zstd magic numbers), for
/// archives such as legacy `docker save` output that carry no media types.
pub fn sniff_compression(head: &[u8]) -> LayerCompression {
    if head.starts_with(&[0x1f, 0x8b]) {
        LayerCompression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        LayerCompression::Zstd
    } else {
        LayerCompression::None
    }
}

/// The OCI layer media type for a compression.
pub fn oci_layer_type(compression: LayerCompression) -> &'static str {
    match compression {
        LayerCompression::None => OCI_LAYER_TAR,
        LayerCompression::Gzip => OCI_LAYER_GZIP,
        LayerCompression::Zstd => OCI_LAYER_ZSTD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_layer_types_and_magic() {
        assert_eq!(
            layer_compression(DOCKER_LAYER_GZIP),
            Some(LayerCompression::Gzip)
        );
        assert_eq!(
            layer_compression(OCI_LAYER_ZSTD),
            Some(LayerCompression::Zstd)
        );
        assert_eq!(
            layer_compression(OCI_LAYER_TAR),
            Some(LayerCompression::None)
        );
        assert_eq!(layer_compression(OCI_CONFIG), None);
        assert_eq!(sniff_compression(&[0x1f, 0x8b, 8]), LayerCompression::Gzip);
        assert_eq!(
            sniff_compression(&[0x28, 0xb5, 0x2f, 0xfd]),
            LayerCompression::Zstd
        );
        assert_eq!(sniff_compression(b"etc/passwd"), LayerCompression::None);
        assert!(is_manifest(DOCKER_MANIFEST) && is_index(OCI_INDEX) && !is_index(OCI_MANIFEST));
    }
}
