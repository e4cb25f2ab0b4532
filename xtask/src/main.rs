//! `cargo xtask <task>`: developer tasks that are easier to write in Rust than in shell.

mod bench;
mod builder_image;
mod fidelity;
mod kaniko_corpus;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  bench [--quick] [--runs N] [--heavy-runs N] [--peers a,b] [--out FILE]
        [--bin-dir DIR] [--reference DIR] [--list] [WORKLOAD...]
        run the benchmark workloads with rbuild and each peer on this machine
        (docker build with BuildKit, buildah bud, root and rootless, the
        reference BuildKit v0.32 and Kaniko v1.28 of --reference DIR, default
        ../shared/reference, skipped if absent; skopeo, tar | gzip/pigz),
        alternating runs, and write a Markdown report of medians and ratios
        (default docs/benchmarks.md). --quick: smaller data, one run, no slow
        workloads; --heavy-runs: runs of the rows moving hundreds of MB;
        --bin-dir: use DIR/rbuild and DIR/examples/layer_bench instead of
        building them; --list: the workloads
  builder-image OUT_DIR
        build a static, stripped rbuild (debug info in OUT_DIR/rbuild.debug) and,
        with it, the builder images from the repository's Dockerfile:
        OUT_DIR/rbuild.tar (rbuild:latest) and OUT_DIR/rbuild-debug.tar
        (rbuild:debug), both docker-loadable
  fidelity --reference DIR [--update] [CASE...]
        build every case of testdata/buildkit-cases with the reference BuildKit
        (DIR/start.sh) and with rbuild; --update writes the goldens, else checks
        them and rbuild's images against BuildKit's
  kaniko-corpus --shared DIR [--kaniko] [--quick] [--out FILE] [--expected FILE]
        [--write-expected] [--keep DIR] [CASE...]
        build Kaniko's integration Dockerfiles (DIR/conformance/kaniko-dockerfiles)
        with rbuild and the reference BuildKit (DIR/reference/buildkit) on local
        stand-in bases, compare the images, and check each verdict against
        testdata/kaniko-corpus-expected.json (--expected); --out: a Markdown table
        of the results; --kaniko: build with Kaniko v1.28 (DIR/reference/kaniko,
        in a private dockerd) too and compare its images with BuildKit's
        (informational); --quick: a subset; --write-expected: record this
        run's verdicts instead of checking them; --keep: keep both images of
        each case in DIR
  help  this text";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("help") | Some("--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some("bench") => bench::main(&args[1..]),
        Some("builder-image") => builder_image::main(&args[1..]),
        Some("fidelity") => fidelity::main(&args[1..]),
        Some("kaniko-corpus") => kaniko_corpus::main(&args[1..]),
        Some(other) => {
            eprintln!("xtask: unknown task `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
