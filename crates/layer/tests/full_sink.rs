//! Writing a layer into a sink that runs out of space (a full disk) is an error naming the
//! cause, for every compression, never a panic (gzp, the parallel gzip crate, panics when it
//! is used again after a failed write).

use std::io::{self, Write};

use rbuild_layer::{write_dir_layer, Compression, WriteOptions};

/// Accepts `room` bytes, then fails every write as a full disk does.
struct FullAfter {
    room: usize,
}

impl Write for FullAfter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.room == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }
}

/// A tree whose layer is a few MB even compressed (pseudo-random bytes do not compress).
fn incompressible_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for file in 0..4 {
        let mut bytes = Vec::with_capacity(1 << 20);
        while bytes.len() < 1 << 20 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.extend_from_slice(&state.to_le_bytes());
        }
        std::fs::write(dir.path().join(format!("blob-{file}")), bytes).unwrap();
    }
    dir
}

#[test]
fn a_full_sink_is_an_error_not_a_panic_for_every_compression() {
    let tree = incompressible_tree();
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        // At the header, in the middle of the data, and near the end.
        for room in [0, 10, 300_000, 3_900_000] {
            for threads in [1, 4] {
                let options = WriteOptions {
                    compression,
                    threads,
                    ..WriteOptions::default()
                };
                let written = std::panic::catch_unwind(|| {
                    write_dir_layer(tree.path(), FullAfter { room }, &options)
                });
                let result = written.unwrap_or_else(|_| {
                    panic!("{compression:?}, {threads} threads, room {room}: the writer panicked")
                });
                let error = result.expect_err("a full sink must fail the layer");
                let text = format!("{error:#}");
                assert!(
                    text.contains("No space left on device"),
                    "{compression:?}, room {room}: the cause is lost: {text}"
                );
            }
        }
    }
}

#[test]
fn a_sink_with_room_still_gets_the_whole_layer() {
    let tree = incompressible_tree();
    let options = WriteOptions {
        compression: Compression::Gzip,
        threads: 2,
        ..WriteOptions::default()
    };
    let info = write_dir_layer(tree.path(), FullAfter { room: 64 << 20 }, &options).unwrap();
    assert!(info.size > 4 << 20, "compressed size {}", info.size);
}
