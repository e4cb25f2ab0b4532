//! A writer that hashes and counts what passes through it (the "tee" of the single-pass
//! digest computation).

use std::io::{self, Write};

use rbuild_image::digest::Hasher;
use rbuild_image::Digest;

/// Forwards writes to `inner`, hashing and counting exactly the bytes `inner` accepted.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    bytes: u64,
}

/// The digest and length of everything written.
pub(crate) struct Hashed {
    pub digest: Digest,
    pub bytes: u64,
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(),
            bytes: 0,
        }
    }

    pub fn into_parts(self) -> (W, Hashed) {
        let hashed = Hashed {
            digest: self.hasher.finish(),
            bytes: self.bytes,
        };
        (self.inner, hashed)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
