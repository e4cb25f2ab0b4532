//! The canonical form of a change list, shared by both snapshotters so that the same step
//! gives the same list: sorted by path, every ancestor directory of a change present as an
//! `Upsert` (as an overlay copy-up and BuildKit's diff have them), no change below a deleted
//! path.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rbuild_layer::Change;

/// Normalises `changes` (see the module doc).
pub fn normalize(changes: Vec<Change>) -> Vec<Change> {
    let mut by_path: BTreeMap<PathBuf, Change> = BTreeMap::new();
    for change in changes {
        by_path.insert(change.path().to_path_buf(), change);
    }
    let paths: Vec<PathBuf> = by_path.keys().cloned().collect();
    for path in paths {
        let mut ancestor = path.parent();
        while let Some(dir) = ancestor {
            if dir.as_os_str().is_empty() {
                break;
            }
            by_path
                .entry(dir.to_path_buf())
                .or_insert_with(|| Change::Upsert(dir.to_path_buf()));
            ancestor = dir.parent();
        }
    }
    let mut out: Vec<Change> = Vec::with_capacity(by_path.len());
    // Sorting by components puts a directory right before its children.
    let mut sorted: Vec<(PathBuf, Change)> = by_path.into_iter().collect();
    sorted.sort_by(|a, b| a.0.components().cmp(b.0.components()));
    let mut deleted: Vec<PathBuf> = Vec::new();
    for (path, change) in sorted {
        if deleted.iter().any(|d| path.starts_with(d) && path != *d) {
            continue;
        }
        if matches!(change, Change::Delete(_)) {
            deleted.push(path.clone());
        }
        out.push(change);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_ancestors_sorts_and_drops_changes_under_deletes() {
        let changes = vec![
            Change::Upsert("a/b/c".into()),
            Change::Delete("x".into()),
            Change::Delete("x/y".into()),
            Change::OpaqueDir("a".into()),
            Change::Upsert("a.b".into()),
        ];
        assert_eq!(
            normalize(changes),
            vec![
                Change::OpaqueDir("a".into()),
                Change::Upsert("a/b".into()),
                Change::Upsert("a/b/c".into()),
                Change::Upsert("a.b".into()),
                Change::Delete("x".into()),
            ]
        );
    }
}
