//! Writes a layer of a directory and reports throughput; optionally applies it back.
//!
//! `cargo run --release -p rbuild-layer --example layer_bench -- <dir> [gzip|zstd|none] [level] [threads] [--apply] [--out=FILE]`
//!
//! Prints one line of `key=value` pairs (easy to parse for a bench harness): the
//! uncompressed tar size, the blob size, seconds and MB/s (uncompressed MB per second,
//! 1 MB = 10^6 bytes) for writing and, with `--apply`, for applying into a temp dir.

use std::path::PathBuf;
use std::time::Instant;

use rbuild_layer::{apply_layer, write_dir_layer, ApplyOptions, Compression, WriteOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let apply = args.iter().any(|a| a == "--apply");
    let keep = args
        .iter()
        .find_map(|a| a.strip_prefix("--out="))
        .map(PathBuf::from);
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let Some(dir) = positional.first().map(PathBuf::from) else {
        return Err(
            "usage: layer_bench <dir> [gzip|zstd|none] [level] [threads] [--apply] [--out=FILE]"
                .into(),
        );
    };
    let compression = match positional.get(1).map(|s| s.as_str()) {
        None | Some("gzip") => Compression::Gzip,
        Some("zstd") => Compression::Zstd,
        Some("none") => Compression::None,
        Some(other) => return Err(format!("unknown compression {other:?}").into()),
    };
    let level = positional.get(2).map(|s| s.parse()).transpose()?;
    let threads = positional
        .get(3)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(0);
    let options = WriteOptions {
        compression,
        level,
        threads,
        ..Default::default()
    };

    let scratch = tempfile::tempdir()?;
    let blob_path = keep.unwrap_or_else(|| scratch.path().join("layer.blob"));
    let blob = std::io::BufWriter::new(std::fs::File::create(&blob_path)?);
    let started = Instant::now();
    let info = write_dir_layer(&dir, blob, &options)?;
    let write_secs = started.elapsed().as_secs_f64();
    let mb = info.uncompressed_size as f64 / 1e6;
    print!(
        "compression={compression:?} tar_bytes={} blob_bytes={} ratio={:.3} write_secs={write_secs:.2} write_mb_s={:.1} digest={}",
        info.uncompressed_size,
        info.size,
        info.size as f64 / info.uncompressed_size.max(1) as f64,
        mb / write_secs,
        info.digest,
    );
    if apply {
        let target = scratch.path().join("rootfs");
        std::fs::create_dir(&target)?;
        let started = Instant::now();
        let reader = std::io::BufReader::new(std::fs::File::open(&blob_path)?);
        apply_layer(reader, &target, &ApplyOptions::default())?;
        let apply_secs = started.elapsed().as_secs_f64();
        print!(
            " apply_secs={apply_secs:.2} apply_mb_s={:.1}",
            mb / apply_secs
        );
    }
    println!();
    Ok(())
}
