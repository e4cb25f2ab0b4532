//! Layer write: rbuild's layer writer against tar | gzip and tar | pigz.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::Result;

use super::announce;
use crate::bench::plan::{run_row, Plan};
use crate::bench::report::Section;
use crate::bench::tools::remove_tree;
use crate::bench::workloads;
use crate::bench::{fresh_dir, Bench};

pub(super) fn layer_write(b: &Bench) -> Result<Option<Section>> {
    if !b.opts.selected("layer-write") {
        return Ok(None);
    }
    anyhow::ensure!(
        b.layer_bench_bin.is_file(),
        "{} is missing (cargo build --release -p rbuild-layer --example layer_bench)",
        b.layer_bench_bin.display()
    );
    let want = b.scale.layer_tree_bytes;
    let source = Path::new("/usr/lib");
    let tree = b.work.join(format!("trees/usr-lib-{}mb", want / 1_000_000));
    announce("layer-write", &format!("a {} MB tree", want / 1_000_000));
    let (files, bytes) = workloads::layer_tree(&tree, source, want)?;
    // Read once so that every tool finds it in the page cache.
    let _ = Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .args(["-cf", "/dev/null", "."])
        .status();
    let out = fresh_dir(&b.work.join("layer-out"))?;
    let shell = |pipeline: String| {
        let mut c = Command::new("sh");
        c.args(["-c", &pipeline]);
        vec![c]
    };
    let tar_to = |compressor: &str, file: &str| {
        format!(
            "tar -C '{}' -cf - . | {compressor} -6 > '{}'",
            tree.display(),
            out.join(file).display()
        )
    };
    let rbuild_cmd = {
        let (bin, tree, out) = (b.layer_bench_bin.clone(), tree.clone(), out.clone());
        move || {
            let mut c = Command::new(&bin);
            c.arg(&tree)
                .args(["gzip", "6"])
                .arg(format!("--out={}", out.join("rbuild.tar.gz").display()));
            vec![c]
        }
    };
    let gzip = tar_to("gzip", "gzip.tar.gz");
    let pigz = tar_to("pigz", "pigz.tar.gz");
    let plans = vec![
        Plan::new("rbuild", move |_| Ok(rbuild_cmd())),
        Plan::new("tar+gzip", move |_| Ok(shell(gzip.clone()))),
        Plan::new("tar+pigz", move |_| Ok(shell(pigz.clone()))),
    ];
    let mut row = run_row(
        "layer-write",
        &format!(
            "{} MB in {files} files: the first of {} in path order; gzip level 6",
            bytes / 1_000_000,
            source.display()
        ),
        plans,
        b.opts.heavy_runs,
        &b.logs,
    );
    row.bytes = Some(bytes);
    let sizes: Vec<String> = ["rbuild.tar.gz", "gzip.tar.gz", "pigz.tar.gz"]
        .iter()
        .map(|f| {
            let len = fs::metadata(out.join(f)).map(|m| m.len()).unwrap_or(0);
            format!("{f}: {} MB", len / 1_000_000)
        })
        .collect();
    let _ = remove_tree(&out);
    Ok(Some(Section {
        notes: vec![],
        title: "Layer write".into(),
        intro: format!(
            "One gzip layer of a tree already in the page cache, written to a file on the \
             same disk: rbuild's layer writer (`layer_bench`, the code a build commits a \
             step with: deterministic tar, gzip on all cores, diff id and digest in the \
             same pass) against `tar | gzip -6` and `tar | pigz -6` (which compute no \
             digest). Throughput is uncompressed MB per second. Output sizes of the last \
             run: {}.",
            sizes.join(", ")
        ),
        rows: vec![row],
    }))
}
