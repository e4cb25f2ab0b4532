//! The compressions of a local tar that ADD unpacks beyond a layer's (gzip, zstd, plain):
//! bzip2 and xz, as BuildKit does (its `IsArchivePath` decompresses and reads a tar header;
//! the Dockerfile reference: "`gzip`, `bzip2` or `xz`, or uncompressed"). Measured with
//! BuildKit v0.32.2 on Kaniko's `Dockerfile_test_add`: `file.bz2`, a bzip2-compressed tar,
//! is unpacked. A bzip2 or xz file whose content is not a tar is copied as it is, as
//! BuildKit copies it.
//!
//! Such an archive is decompressed into an unnamed temporary file before its layer is
//! applied (the applier knows a layer's compressions only). The plain tar is bounded
//! ([`MAX_DECOMPRESSED_BYTES`]): a few kilobytes of xz can stand for gigabytes of zeros, and
//! the build's context is untrusted.

use std::io::{self, BufRead, Read, Seek, Write};
use std::path::Path;

/// The largest plain tar a bzip2 or xz archive of an ADD may decompress to. Far above any
/// real archive an ADD unpacks, far below what a decompression bomb would write.
pub(crate) const MAX_DECOMPRESSED_BYTES: u64 = 16 << 30;

/// The most memory an xz block's decoder may take, in KiB: a dictionary of 256 MiB is four
/// times what `xz -9` uses; a header asking more (up to 4 GiB) is refused before anything
/// is allocated.
const XZ_MEM_LIMIT_KB: u32 = 256 << 10;

/// The magic of an xz stream.
const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// A compression of a tar that ADD unpacks by decompressing it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Bzip2,
    Xz,
}

impl Compression {
    /// The compression `head` (a file's first bytes) starts.
    fn of(head: &[u8]) -> Option<Compression> {
        if is_bzip2(head) {
            Some(Compression::Bzip2)
        } else if head.starts_with(&XZ_MAGIC) {
            Some(Compression::Xz)
        } else {
            None
        }
    }

    /// Decompresses `input` into `output`; an error of `output` stops it.
    fn decompress(self, input: impl BufRead, mut output: &mut dyn Write) -> io::Result<()> {
        match self {
            Compression::Bzip2 => {
                let mut decoder = bzip2::bufread::BzDecoder::new(input);
                io::copy(&mut decoder, &mut output).map(|_| ())
            }
            Compression::Xz => {
                let mut decoder = lzma_rust2::XzReader::new_mem_limit(input, true, XZ_MEM_LIMIT_KB);
                io::copy(&mut decoder, &mut output).map(|_| ())
            }
        }
    }
}

/// Whether `head` (a file's first bytes) starts a bzip2 stream: `BZh` and a block size.
fn is_bzip2(head: &[u8]) -> bool {
    head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3])
}

/// Whether `head` (a file's first bytes) starts a bzip2 or xz stream whose content, the
/// file at `path`, is a tar: its first decompressed block is a tar header (ustar magic, or
/// an old-style header whose checksum is right).
pub(crate) fn is_compressed_tar(head: &[u8], path: &Path) -> bool {
    let Some(compression) = Compression::of(head) else {
        return false;
    };
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut first = FirstBlock(Vec::with_capacity(512));
    // The sink refuses more than a block, which stops the decompression there.
    let _ = compression.decompress(io::BufReader::new(file), &mut first);
    match <&[u8; 512]>::try_from(first.0.as_slice()) {
        Ok(header) => is_tar_header(header),
        Err(_) => false,
    }
}

/// Keeps the first 512 bytes written, then refuses more.
struct FirstBlock(Vec<u8>);

impl Write for FirstBlock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = 512 - self.0.len();
        if room == 0 {
            return Err(io::Error::other("the first block is read"));
        }
        let n = room.min(buf.len());
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A tar header block: the ustar magic, or a v7 header whose checksum field matches.
fn is_tar_header(header: &[u8; 512]) -> bool {
    if &header[257..262] == b"ustar" {
        return true;
    }
    let field = String::from_utf8_lossy(&header[148..156]);
    let Ok(recorded) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    header[0] != 0 && sum == recorded
}

/// The plain tar of the archive at `path` when it is bzip2- or xz-compressed (`None`
/// otherwise), in an unnamed temporary file (gone when closed), positioned at its start.
pub(crate) fn plain_tar_of_compressed(path: &Path) -> io::Result<Option<std::fs::File>> {
    plain_tar_bounded(path, MAX_DECOMPRESSED_BYTES)
}

fn plain_tar_bounded(path: &Path, limit: u64) -> io::Result<Option<std::fs::File>> {
    let mut head = [0u8; 6];
    let mut file = std::fs::File::open(path)?;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    let Some(compression) = Compression::of(&head[..filled]) else {
        return Ok(None);
    };
    file.rewind()?;
    let mut plain = Bounded {
        inner: tempfile::tempfile()?,
        written: 0,
        limit,
    };
    compression.decompress(io::BufReader::new(file), &mut plain)?;
    let mut plain = plain.inner;
    plain.rewind()?;
    Ok(Some(plain))
}

/// A writer that refuses to hold more than `limit` bytes.
struct Bounded<W> {
    inner: W,
    written: u64,
    limit: u64,
}

impl<W: Write> Write for Bounded<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written.saturating_add(buf.len() as u64) > self.limit {
            return Err(io::Error::other(format!(
                "the archive decompresses to more than {} bytes, the limit",
                self.limit
            )));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of_one_file() -> Vec<u8> {
        let mut tar = Vec::new();
        {
            let mut builder = tar::Builder::new(&mut tar);
            let mut header = tar::Header::new_gnu();
            header.set_size(3);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, "f", &b"abc"[..]).unwrap();
            builder.finish().unwrap();
        }
        tar
    }

    fn bzip2(data: &[u8]) -> Vec<u8> {
        let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let options = lzma_rust2::XzOptions::with_preset(6);
        let mut enc = lzma_rust2::XzWriter::new(Vec::new(), options).unwrap();
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn bzip2_and_xz_tars_are_archives_and_other_compressed_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of_one_file();
        for (name, compress) in [
            ("bz2", bzip2 as fn(&[u8]) -> Vec<u8>),
            ("xz", xz as fn(&[u8]) -> Vec<u8>),
        ] {
            let tar_path = dir.path().join(format!("a.tar.{name}"));
            std::fs::write(&tar_path, compress(&tar)).unwrap();
            let text_path = dir.path().join(format!("text.{name}"));
            std::fs::write(&text_path, compress(&[b'x'; 2000])).unwrap();
            let head = std::fs::read(&tar_path).unwrap();
            assert!(is_compressed_tar(&head, &tar_path), "{name}");
            let head = std::fs::read(&text_path).unwrap();
            assert!(!is_compressed_tar(&head, &text_path), "{name}");
            let mut plain = Vec::new();
            plain_tar_of_compressed(&tar_path)
                .unwrap()
                .expect("a compressed tar")
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(plain, tar, "{name}");
        }
        assert!(!is_bzip2(b"BZh0"));
        let plain = dir.path().join("plain.tar");
        std::fs::write(&plain, &tar).unwrap();
        assert!(plain_tar_of_compressed(&plain).unwrap().is_none());
        assert!(!is_compressed_tar(&tar, &plain));
    }

    /// A small archive of many zeros (a decompression bomb) stops at the bound with an
    /// error naming it, for both compressions.
    #[test]
    fn decompression_stops_at_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let zeros = vec![0u8; 1 << 20];
        for (name, compressed) in [("bz2", bzip2(&zeros)), ("xz", xz(&zeros))] {
            assert!(
                compressed.len() < zeros.len() / 10,
                "{name} compresses zeros"
            );
            let path = dir.path().join(format!("bomb.{name}"));
            std::fs::write(&path, &compressed).unwrap();
            let err = plain_tar_bounded(&path, 64 << 10).unwrap_err().to_string();
            assert!(
                err.contains("more than 65536 bytes, the limit"),
                "{name}: {err}"
            );
            let whole = plain_tar_bounded(&path, 1 << 20).unwrap().unwrap();
            assert_eq!(whole.metadata().unwrap().len(), 1 << 20, "{name}");
        }
    }

    #[test]
    fn a_corrupt_xz_stream_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = xz(&tar_of_one_file());
        let middle = data.len() / 2;
        data[middle] ^= 0xff;
        let path = dir.path().join("bad.tar.xz");
        std::fs::write(&path, &data).unwrap();
        assert!(plain_tar_of_compressed(&path).is_err());
    }
}
