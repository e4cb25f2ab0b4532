//! The compressions of a local tar that ADD unpacks beyond a layer's (gzip, zstd, plain):
//! bzip2, as BuildKit does (its `IsArchivePath` decompresses and reads a tar header; the
//! Dockerfile reference: "`gzip`, `bzip2` or `xz`, or uncompressed"). Measured with
//! BuildKit v0.32.2 on Kaniko's `Dockerfile_test_add`: `file.bz2`, a bzip2-compressed tar,
//! is unpacked. A bzip2 file whose content is not a tar is copied as it is, as BuildKit
//! copies it.

use std::io::{Read, Seek};
use std::path::Path;

/// Whether `head` (a file's first bytes) starts a bzip2 stream: `BZh` and a block size.
pub(crate) fn is_bzip2(head: &[u8]) -> bool {
    head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3])
}

/// Whether the bzip2 file at `path` holds a tar: its first decompressed block has a tar
/// header (ustar magic, or an old-style header whose checksum is right).
pub(crate) fn is_bzip2_tar(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut decoder = bzip2::read::BzDecoder::new(std::io::BufReader::new(file));
    let mut header = [0u8; 512];
    if decoder.read_exact(&mut header).is_err() {
        return false;
    }
    is_tar_header(&header)
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

/// The plain tar of the archive at `path` when it is bzip2-compressed (`None` otherwise).
pub(crate) fn plain_tar_of_bzip2(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    let mut head = [0u8; 4];
    let mut file = std::fs::File::open(path)?;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..])? {
            0 => return Ok(None),
            n => filled += n,
        }
    }
    if !is_bzip2(&head) {
        return Ok(None);
    }
    decompress_bzip2(path).map(Some)
}

/// The plain tar of the bzip2 file at `path`, in an unnamed temporary file (gone when
/// closed), positioned at its start.
fn decompress_bzip2(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::File::open(path)?;
    let mut decoder = bzip2::read::BzDecoder::new(std::io::BufReader::new(file));
    let mut plain = tempfile::tempfile()?;
    std::io::copy(&mut decoder, &mut plain)?;
    plain.rewind()?;
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_bzip2_tar_is_an_archive_and_other_bzip2_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
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
        let compress = |data: &[u8], name: &str| {
            let path = dir.path().join(name);
            let mut enc = bzip2::write::BzEncoder::new(
                std::fs::File::create(&path).unwrap(),
                bzip2::Compression::default(),
            );
            enc.write_all(data).unwrap();
            enc.finish().unwrap();
            path
        };
        let tar_bz2 = compress(&tar, "a.tar.bz2");
        let text_bz2 = compress(&[b'x'; 2000], "text.bz2");
        let head = std::fs::read(&tar_bz2).unwrap();
        assert!(is_bzip2(&head));
        assert!(!is_bzip2(b"BZh0"));
        assert!(is_bzip2_tar(&tar_bz2));
        assert!(!is_bzip2_tar(&text_bz2));
        let mut plain = Vec::new();
        decompress_bzip2(&tar_bz2)
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, tar);
    }
}
