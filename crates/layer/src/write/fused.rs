//! A guard around gzp's parallel compressor, which cannot be trusted after an error: once a
//! write into it has failed (the sink ran out of space, say), gzp has torn its pipeline
//! down, and any later `write`, `flush` or `finish` — the tar builder's end-of-archive
//! blocks written as it is dropped, a buffered writer's flush — panics on an `unwrap()`
//! inside gzp (`par/compress.rs`). This wrapper remembers the first error and returns it
//! again to every later call without touching gzp.

use std::io::{self, Write};

use gzp::ZWriter;

/// `inner` until its first error, then that error for ever.
pub(super) struct Fused<Z> {
    inner: Z,
    failed: Option<(io::ErrorKind, String)>,
}

impl<Z> Fused<Z> {
    pub(super) fn new(inner: Z) -> Fused<Z> {
        Fused {
            inner,
            failed: None,
        }
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            None => Ok(()),
        }
    }

    fn remember<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result {
            self.failed = Some((e.kind(), e.to_string()));
        }
        result
    }
}

impl<Z> Fused<Z> {
    /// Finishes the gzip stream, or returns the error that already ended it (gzp has then
    /// released its threads and channels, so dropping it does nothing more).
    pub(super) fn finish<W>(&mut self) -> io::Result<()>
    where
        Z: ZWriter<W>,
    {
        self.check()?;
        let finished = self.inner.finish().map(|_| ()).map_err(|e| match e {
            gzp::GzpError::Io(e) => e,
            other => io::Error::other(other.to_string()),
        });
        self.remember(finished)
    }
}

impl<Z: Write> Write for Fused<Z> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        let written = self.inner.write(buf);
        self.remember(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        let flushed = self.inner.flush();
        self.remember(flushed)
    }
}
