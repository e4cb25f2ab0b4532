//! Layer compression: detecting it on read (by magic bytes, never by media type, since
//! registries and old images mislabel blobs), and the choices for writing.

use std::io::{self, Read};

/// How a layer blob is (to be) compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// gzip, written in parallel blocks (pigz-style, one gzip member). The default because
    /// every consumer reads it.
    #[default]
    Gzip,
    /// zstd: 3–4× faster to write and smaller, but needs containerd ≥ 1.5 / Docker ≥ 23.
    Zstd,
    /// A plain tar.
    None,
}

impl Compression {
    /// The OCI media type of a layer blob with this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    /// The level used when none is given: gzip 6 (as `gzip` and Docker), zstd 3.
    pub fn default_level(self) -> u32 {
        match self {
            Compression::Gzip => 6,
            Compression::Zstd => 3,
            Compression::None => 0,
        }
    }

    /// Recognises a blob's compression from its first bytes.
    pub fn detect(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps `reader` in the decompressor its magic bytes call for. Streams: nothing beyond the
/// first four bytes is read ahead here.
pub fn decompressing_reader<'a, R: Read + 'a>(mut reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut magic = [0u8; 4];
    let mut filled = 0;
    while filled < magic.len() {
        match reader.read(&mut magic[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let prefix = io::Cursor::new(magic[..filled].to_vec());
    let whole = prefix.chain(reader);
    Ok(match Compression::detect(&magic[..filled]) {
        // Multi-member: pigz-style and concatenated gzip streams are valid layers.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(whole)?),
        Compression::None => Box::new(whole),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_magic() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"usr/"), Compression::None);
        assert_eq!(Compression::detect(b""), Compression::None);
    }

    #[test]
    fn short_plain_input_passes_through() {
        let mut out = Vec::new();
        decompressing_reader(&b"ab"[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"ab");
    }
}
