//! The rows that write a lot: a multi-stage toolchain build whose large builder stage is
//! never shipped, one layer of a gigabyte, and one step of 200,000 files. With the
//! smaller rows they show how time grows with the size of the change, and that memory
//! does not.

use super::{write, Base, Context, Limit, LimitStage};

/// Directories of `files` files of `size` bytes under `root`, 100 per directory, written by
/// the base's own shell: `head -c SIZE /dev/urandom` for random data (which does not
/// compress), `echo` for tiny files.
fn files_script(root: &str, files: usize, size: Option<usize>) -> String {
    let dirs = files.div_ceil(100);
    let per_dir = files.min(100);
    let write = match size {
        Some(bytes) => format!("head -c {bytes} /dev/urandom > {root}/d$i/f$j"),
        None => format!("echo $i-$j > {root}/d$i/f$j"),
    };
    format!(
        "for i in $(seq 1 {dirs}); do mkdir -p {root}/d$i; for j in $(seq 1 {per_dir}); do \
         {write}; done; done"
    )
}

/// A toolchain-shaped multi-stage build: the builder stage writes `files` files of 100 KB
/// (a compiler, its libraries, the build's objects) and one small result; the final stage
/// copies only that result.
pub fn toolchain(files: usize) -> Context {
    let run = format!(
        "{} && echo 'the built program' > /out.bin",
        files_script("/toolchain", files, Some(100_000))
    );
    Context {
        name: "toolchain",
        what: format!(
            "multi-stage: a builder stage writing {files} files, {} MB of random data, that \
             the final stage never copies; the final stage copies one small file",
            files * 100_000 / 1_000_000
        ),
        base: Base::Busybox,
        cacheable_steps: 2,
        changed_file: None,
        secrets: &[],
        limit: Some(Limit {
            stages: vec![LimitStage {
                copies: Vec::new(),
                runs: vec![("/", run.clone())],
            }],
        }),
        make: Box::new(move |dir, from| {
            write(
                dir,
                "Dockerfile",
                &format!(
                    "FROM {from} AS build\nRUN {run}\n\
                     FROM {from}\nCOPY --from=build /out.bin /usr/local/bin/program\n"
                ),
            )
        }),
    }
}

/// One RUN writing `megabytes` MB of random data as files of 10 MB: a single large layer.
pub fn large_layer(megabytes: usize) -> Context {
    let run = files_script("/big", megabytes.div_ceil(10), Some(10_000_000));
    Context {
        name: "large-layer",
        what: format!(
            "one RUN writing {megabytes} MB of random data in {} files of 10 MB: one layer",
            megabytes.div_ceil(10)
        ),
        base: Base::Busybox,
        cacheable_steps: 1,
        changed_file: None,
        secrets: &[],
        limit: Some(Limit::commands(vec![run.clone()])),
        make: Box::new(move |dir, from| {
            write(dir, "Dockerfile", &format!("FROM {from}\nRUN {run}\n"))
        }),
    }
}

/// One RUN writing `files` tiny files in directories of 100: a layer of many entries.
pub fn many_files(files: usize) -> Context {
    let run = files_script("/many", files, None);
    Context {
        name: "many-files",
        what: format!("one RUN writing {files} tiny files (directories of 100): one layer"),
        base: Base::Busybox,
        cacheable_steps: 1,
        changed_file: None,
        secrets: &[],
        limit: Some(Limit::commands(vec![run.clone()])),
        make: Box::new(move |dir, from| {
            write(dir, "Dockerfile", &format!("FROM {from}\nRUN {run}\n"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `script` with the host's shell under a temporary directory standing for `/`.
    fn run_under(dir: &std::path::Path, script: &str, root: &str) {
        let script = script.replace(root, &format!("{}{root}", dir.display()));
        let ok = std::process::Command::new("sh")
            .args(["-c", &script])
            .status()
            .unwrap()
            .success();
        assert!(ok, "{script}");
    }

    fn count_files(dir: &std::path::Path) -> (usize, u64) {
        let (mut n, mut bytes) = (0, 0);
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                let (a, b) = count_files(&e.path());
                n += a;
                bytes += b;
            } else {
                n += 1;
                bytes += m.len();
            }
        }
        (n, bytes)
    }

    #[test]
    fn the_scripts_write_the_files_and_sizes_the_rows_claim() {
        let dir = tempfile::tempdir().unwrap();
        run_under(dir.path(), &files_script("/many", 250, None), "/many");
        assert_eq!(count_files(&dir.path().join("many")).0, 300);
        run_under(dir.path(), &files_script("/big", 3, Some(1000)), "/big");
        assert_eq!(count_files(&dir.path().join("big")), (3, 3000));
        run_under(dir.path(), &files_script("/tc", 200, Some(100)), "/tc");
        assert_eq!(count_files(&dir.path().join("tc")), (200, 20_000));
    }

    #[test]
    fn the_toolchain_row_ships_only_the_small_result() {
        let c = toolchain(20);
        let dir = tempfile::tempdir().unwrap();
        (c.make)(dir.path(), "b").unwrap();
        let text = std::fs::read_to_string(dir.path().join("Dockerfile")).unwrap();
        let final_stage = text.rsplit("FROM ").next().unwrap();
        assert_eq!(
            final_stage,
            "b\nCOPY --from=build /out.bin /usr/local/bin/program\n"
        );
        assert!(text.contains("/toolchain/d$i/f$j"), "{text}");
    }
}
