//! How long layer writers waited on their compressor, process-wide: the tar stream's
//! writes into the compressor (for parallel gzip, the time its workers were behind) and
//! the final flush. Read by the build executor's per-phase report.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static NANOS: AtomicU64 = AtomicU64::new(0);
static LAYERS: AtomicU64 = AtomicU64::new(0);

/// Time this process's layer writers spent waiting on compression, and how many compressed
/// layers they finished (uncompressed layers add nothing).
pub fn compress_time() -> (Duration, u64) {
    (
        Duration::from_nanos(NANOS.load(Ordering::Relaxed)),
        LAYERS.load(Ordering::Relaxed),
    )
}

fn add(since: Instant) {
    let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
    NANOS.fetch_add(nanos, Ordering::Relaxed);
}

/// Finishing a compressed stream: its time counts, and it completes one layer.
pub(super) fn finishing<T>(finish: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = finish();
    add(started);
    LAYERS.fetch_add(1, Ordering::Relaxed);
    result
}

/// A writer whose writes into the compressor are timed.
pub(super) struct Timed<W>(pub W);

impl<W: Write> Write for Timed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let started = Instant::now();
        let n = self.0.write(buf);
        add(started);
        n
    }

    fn flush(&mut self) -> io::Result<()> {
        let started = Instant::now();
        let r = self.0.flush();
        add(started);
        r
    }
}
