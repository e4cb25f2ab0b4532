//! The tree of the layer-write comparison, linked from the machine's own files.

use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};

/// Makes the tree of the layer-write comparison: the regular files of `source` (this
/// machine's /usr/lib: binaries, libraries, scripts, data, as in a real image) in path
/// order, until `bytes` bytes are reached, hard-linked (copied across file systems) with
/// their relative paths. Returns the tree's file count and size.
pub fn layer_tree(dir: &Path, source: &Path, bytes: u64) -> Result<(u64, u64)> {
    let marker = dir.with_extension("complete");
    if let Ok(text) = fs::read_to_string(&marker) {
        if let Some((n, size)) = text.trim().split_once(' ') {
            return Ok((n.parse()?, size.parse()?));
        }
    }
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    let (mut files, mut total) = (0u64, 0u64);
    link_in_path_order(source, source, dir, bytes, &mut files, &mut total)?;
    anyhow::ensure!(
        total >= bytes,
        "{} has only {total} bytes of regular files, less than {bytes}",
        source.display()
    );
    fs::write(&marker, format!("{files} {total}\n"))?;
    Ok((files, total))
}

fn link_in_path_order(
    source: &Path,
    dir: &Path,
    dest_root: &Path,
    bytes: u64,
    files: &mut u64,
    total: &mut u64,
) -> Result<()> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(());
    };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if *total >= bytes {
            break;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            link_in_path_order(source, &path, dest_root, bytes, files, total)?;
        } else if meta.is_file() {
            let dest = dest_root.join(path.strip_prefix(source)?);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)?;
            }
            if fs::hard_link(&path, &dest).is_err() {
                fs::copy(&path, &dest).with_context(|| format!("copying {}", path.display()))?;
            }
            *files += 1;
            *total += meta.len();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_tree_takes_files_in_path_order_up_to_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for (name, len) in [("a/1", 400), ("a/2", 400), ("b/1", 400), ("c", 400)] {
            let p = src.join(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, vec![b'x'; len]).unwrap();
        }
        std::os::unix::fs::symlink("c", src.join("d")).unwrap();
        let tree = dir.path().join("t");
        let (files, total) = layer_tree(&tree, &src, 1000).unwrap();
        assert_eq!((files, total), (3, 1200));
        assert_eq!(walk_sizes(&tree), 1200);
        assert!(tree.join("b/1").exists() && !tree.join("c").exists());
        // The second call finds the tree made.
        assert_eq!(layer_tree(&tree, &src, 1000).unwrap(), (3, 1200));
        assert!(layer_tree(&dir.path().join("u"), &src, 10_000).is_err());
    }

    fn walk_sizes(dir: &Path) -> u64 {
        let mut total = 0;
        for e in fs::read_dir(dir).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                total += walk_sizes(&e.path());
            } else {
                total += m.len();
            }
        }
        total
    }
}
