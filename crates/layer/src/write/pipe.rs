//! Handing a plain layer's tar stream to a second thread: the thread making the tar reads
//! the source files (system calls, page-cache copies) while the other hashes the stream and
//! writes it out, where one thread did all of it in turn.

use std::io::{self, Write};
use std::sync::mpsc;

use crate::error::{IoContext, Result};

/// Chunks in flight between the two threads (each up to the tar writer's buffer, 1 MiB).
const CHUNKS_IN_FLIGHT: usize = 4;

/// Runs `produce` on this thread with a writer whose bytes reach `sink`, in order, on a
/// second one. `sink`'s error wins over the one `produce` then meets (the pipe closed).
pub(super) fn through_thread<W: Write + Send>(
    sink: &mut W,
    produce: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let (chunks, received) = mpsc::sync_channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    // Written chunks come back to be filled again: no allocation per chunk.
    let (spent, reusable) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let consumer = scope.spawn(move || -> io::Result<()> {
            for chunk in received {
                sink.write_all(&chunk)?;
                // The producer may be gone already (it failed): nothing to hand back to.
                let _ = spent.send(chunk);
            }
            sink.flush()
        });
        let mut pipe = ChunkSender {
            chunks: Some(chunks),
            reusable,
        };
        let produced = produce(&mut pipe);
        // Closing the channel ends the consumer's loop.
        drop(pipe);
        let consumed = match consumer.join() {
            Ok(consumed) => consumed,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        consumed.ctx(|| "writing the layer".into())?;
        produced
    })
}

/// The producer's end: each write is copied into a chunk sent to the consumer.
struct ChunkSender {
    chunks: Option<mpsc::SyncSender<Vec<u8>>>,
    reusable: mpsc::Receiver<Vec<u8>>,
}

impl Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "the layer's writer stopped");
        let chunks = self.chunks.as_ref().ok_or_else(closed)?;
        let mut chunk = self.reusable.try_recv().unwrap_or_default();
        chunk.clear();
        chunk.extend_from_slice(buf);
        chunks.send(chunk).map_err(|_| closed())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_in_order_and_the_sinks_error_wins() {
        let mut out = Vec::new();
        through_thread(&mut out, |w| {
            for i in 0..1000u32 {
                w.write_all(&i.to_le_bytes()).unwrap();
            }
            Ok(())
        })
        .unwrap();
        let expected: Vec<u8> = (0..1000u32).flat_map(|i| i.to_le_bytes()).collect();
        assert_eq!(out, expected);

        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = through_thread(&mut Full, |w| {
            // Keeps writing until the closed pipe stops it.
            loop {
                w.write_all(&[0u8; 4096]).ctx(|| "writing".into())?;
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("writing the layer"), "{err}");
        assert!(format!("{err:?}").contains("disk full"), "{err:?}");
    }
}
