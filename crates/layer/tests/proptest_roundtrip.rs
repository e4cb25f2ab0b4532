//! Property: any tree of files, directories, symlinks and hardlinks with any modes (and, as
//! root, owners) survives write_dir_layer → apply_layer unchanged.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rbuild_layer::{apply_layer, write_dir_layer, Compression, WriteOptions};
use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

#[derive(Debug, Clone)]
enum Op {
    File {
        content: Vec<u8>,
        mode: u32,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        target: String,
    },
    /// A hardlink to the n-th file created so far (modulo their number).
    Hardlink {
        to: usize,
    },
}

#[derive(Debug, Clone)]
struct Step {
    path: Vec<&'static str>,
    op: Op,
    owner: (u32, u32),
    mtime: i64,
}

fn step() -> impl Strategy<Value = Step> {
    let name = prop::sample::select(vec![
        "a",
        "b",
        "c",
        "long-name-for-a-directory-entry-that-is-long",
        "é",
    ]);
    let path = prop::collection::vec(name, 1..4);
    let op = prop_oneof![
        (
            prop::collection::vec(any::<u8>(), 0..300),
            prop::sample::select(vec![0o644, 0o600, 0o755, 0o4755, 0o2711, 0o444, 0o000])
        )
            .prop_map(|(content, mode)| Op::File { content, mode }),
        prop::sample::select(vec![0o755, 0o700, 0o555, 0o1777, 0o2775])
            .prop_map(|mode| Op::Dir { mode }),
        prop::sample::select(vec!["a", "../b", "/etc/passwd", "c/d/e", "."]).prop_map(|t| {
            Op::Symlink {
                target: t.to_string(),
            }
        }),
        (0usize..8).prop_map(|to| Op::Hardlink { to }),
    ];
    let owner = prop::sample::select(vec![(0, 0), (1000, 1000), (65534, 100)]);
    (path, op, owner, 0i64..2_000_000_000).prop_map(|(path, op, owner, mtime)| Step {
        path,
        op,
        owner,
        mtime,
    })
}

/// Builds the tree; steps that collide with what exists are skipped. Directory modes and
/// all mtimes are set at the end, deepest first.
fn build(root: &Path, steps: &[Step]) {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    let mut times: Vec<(PathBuf, i64)> = Vec::new();
    for s in steps {
        let rel: PathBuf = s.path.iter().collect();
        let path = root.join(&rel);
        let parent_ok = path
            .parent()
            .map(|p| p == root || fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false));
        if parent_ok != Some(true) || fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        match &s.op {
            Op::File { content, mode } => {
                fs::write(&path, content).unwrap();
                if common::is_root() {
                    std::os::unix::fs::lchown(&path, Some(s.owner.0), Some(s.owner.1)).unwrap();
                }
                // Unprivileged, an unreadable source file cannot be put in a layer at all.
                let mode = if common::is_root() {
                    *mode
                } else {
                    *mode | 0o400
                };
                fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
                files.push(path.clone());
            }
            Op::Dir { mode } => {
                fs::create_dir(&path).unwrap();
                if common::is_root() {
                    std::os::unix::fs::lchown(&path, Some(s.owner.0), Some(s.owner.1)).unwrap();
                }
                dirs.push((path.clone(), *mode));
            }
            Op::Symlink { target } => {
                std::os::unix::fs::symlink(target, &path).unwrap();
                if common::is_root() {
                    std::os::unix::fs::lchown(&path, Some(s.owner.0), Some(s.owner.1)).unwrap();
                }
            }
            Op::Hardlink { to } => {
                if files.is_empty() {
                    continue;
                }
                fs::hard_link(&files[to % files.len()], &path).unwrap();
            }
        }
        times.push((path, s.mtime));
    }
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (dir, mode) in &dirs {
        fs::set_permissions(dir, fs::Permissions::from_mode(*mode)).unwrap();
    }
    times.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (path, secs) in times {
        let t = Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        };
        let ts = Timestamps {
            last_access: t,
            last_modification: t,
        };
        rustix::fs::utimensat(CWD, &path, &ts, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }
}

/// Makes every directory writable again so the temp dirs can be removed when not root.
fn unlock(root: &Path) {
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        if entry.file_type().is_dir() {
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o755));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn any_tree_round_trips(steps in prop::collection::vec(step(), 1..25), zstd in any::<bool>()) {
        let src = tempfile::tempdir().unwrap();
        build(src.path(), &steps);
        let compression = if zstd { Compression::Zstd } else { Compression::Gzip };
        let options = WriteOptions { compression, threads: 2, ..Default::default() };
        let mut blob = Vec::new();
        write_dir_layer(src.path(), &mut blob, &options).unwrap();
        let dst = tempfile::tempdir().unwrap();
        apply_layer(blob.as_slice(), dst.path(), &common::apply_options()).unwrap();
        let want = common::snapshot(src.path(), true);
        let got = common::snapshot(dst.path(), true);
        unlock(src.path());
        unlock(dst.path());
        prop_assert_eq!(got, want);
    }
}
