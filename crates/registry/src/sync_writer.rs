//! An `AsyncWrite` over a blocking `std::io::Write`, so a pulled blob can stream straight into
//! a writer such as the store's `BlobWriter`. Each write runs inline on the calling task: fine
//! for local files, whose writes are short next to the network reads feeding them.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// Wraps a blocking writer; `into_inner` gives it back.
#[derive(Debug)]
pub struct SyncWriter<W>(pub W);

impl<W> SyncWriter<W> {
    pub fn into_inner(self) -> W {
        self.0
    }
}

impl<W: Write + Unpin> AsyncWrite for SyncWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.get_mut().0.write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.get_mut().0.flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.get_mut().0.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test]
    async fn writes_reach_the_inner_writer() {
        let mut w = SyncWriter(Vec::new());
        w.write_all(b"hello ").await.unwrap();
        w.write_all(b"world").await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(w.into_inner(), b"hello world");
    }
}
