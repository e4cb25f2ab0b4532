//! Turning a change set into the ordered list of tar entries to write.
//!
//! Order is what makes layers deterministic: entries are sorted component-wise by path, so
//! a directory comes immediately before its children whatever order the snapshotter found
//! them in, and a whiteout `dir/.wh.NAME` sorts among `dir`'s children by its own name.
//! Every ancestor of a changed path is written too (as containerd does), so a consumer never
//! has to invent a parent's owner or mode.

use std::collections::{BTreeMap, BTreeSet};
#[cfg(test)]
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
#[cfg(test)]
use std::os::unix::ffi::OsStringExt;

use crate::change::Change;
use crate::error::{Error, Result};

/// Whether a directory entry is followed by an opaque marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opaque {
    No,
    /// The path was deleted and re-created in the same step: if it is now a directory, hide
    /// the old one's contents.
    IfDir,
    /// An explicit [`Change::OpaqueDir`]: the path must be a directory.
    Required,
}

/// A path as its components joined by NUL bytes (which no file name holds); the root is
/// empty. One allocation per path, and byte order is component-wise path order: a NUL sorts
/// below every name byte, so a directory's children come right after it (`a`, `a/b`, `a-b`),
/// as Rust's `Path` order puts them. With 200,000 changes, a `Vec<OsString>` per path and a
/// second sort key per entry was most of the writer's memory.
pub(crate) type Key = Vec<u8>;

/// The path components of a [`Key`].
#[cfg(test)]
fn components(key: &[u8]) -> Vec<OsString> {
    if key.is_empty() {
        return Vec::new();
    }
    key.split(|&b| b == 0)
        .map(|c| OsString::from_vec(c.to_vec()))
        .collect()
}

/// The [`Key`] of a change's path: its components (as
/// [`normalize_entry_name`](crate::path::normalize_entry_name) splits them: no empty or `.`
/// ones) joined by NUL, built in one allocation. `None` when a component is `..`.
fn entry_key(raw: &[u8]) -> Option<Key> {
    let mut key = Vec::with_capacity(raw.len());
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return None,
            _ => {
                if !key.is_empty() {
                    key.push(0);
                }
                key.extend_from_slice(part);
            }
        }
    }
    Some(key)
}

/// Whether `key` is `ancestor` or below it.
fn is_at_or_below(key: &[u8], ancestor: &[u8]) -> bool {
    key.starts_with(ancestor)
        && (key.len() == ancestor.len() || ancestor.is_empty() || key[ancestor.len()] == 0)
}

/// One entry to write, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Planned {
    Upsert {
        path: Key,
        opaque: Opaque,
    },
    /// The `.wh.NAME` marker of a deleted path: `path` ends with that marker's name.
    Whiteout {
        path: Key,
    },
}

impl Planned {
    fn key(&self) -> &[u8] {
        match self {
            Planned::Upsert { path, .. } | Planned::Whiteout { path } => path,
        }
    }
}

/// Orders `changes` into tar entries. Fails on paths with `..` or naming the root where that
/// makes no sense.
pub(crate) fn plan(changes: &[Change]) -> Result<Vec<Planned>> {
    let mut upserts: BTreeMap<Key, Opaque> = BTreeMap::new();
    let mut deletes: Vec<Key> = Vec::new();
    for change in changes {
        let raw = change.path().as_os_str().as_bytes();
        let key = entry_key(raw).ok_or_else(|| Error::Change {
            path: change.path().display().to_string(),
            reason: "path has a `..` component".into(),
        })?;
        match change {
            Change::Upsert(_) => {
                upserts.entry(key).or_insert(Opaque::No);
            }
            Change::OpaqueDir(_) => {
                upserts.insert(key, Opaque::Required);
            }
            Change::Delete(_) => {
                if key.is_empty() {
                    return Err(Error::Change {
                        path: change.path().display().to_string(),
                        reason: "the root cannot be deleted".into(),
                    });
                }
                deletes.push(key);
            }
        }
    }

    let mut whiteouts = Vec::new();
    for deleted in deletes {
        let recreated_below = upserts
            .range(deleted.clone()..)
            .next()
            .is_some_and(|(path, _)| is_at_or_below(path, &deleted));
        if recreated_below {
            // Deleted and made again: the new one must not show the old one's contents.
            let opaque = upserts.entry(deleted).or_insert(Opaque::IfDir);
            if *opaque == Opaque::No {
                *opaque = Opaque::IfDir;
            }
        } else {
            whiteouts.push(deleted);
        }
    }

    // Every ancestor of a change is written, with its current metadata. Walking up from
    // each path stops at the first ancestor already planned (its own ancestors are then
    // planned too), so only the missing directories are ever copied.
    let mut missing: BTreeSet<Key> = BTreeSet::new();
    for path in upserts.keys().chain(whiteouts.iter()) {
        let mut end = path.len();
        while let Some(cut) = path[..end].iter().rposition(|&b| b == 0) {
            let ancestor = &path[..cut];
            if upserts.contains_key(ancestor) || missing.contains(ancestor) {
                break;
            }
            missing.insert(ancestor.to_vec());
            end = cut;
        }
    }
    for ancestor in missing {
        upserts.entry(ancestor).or_insert(Opaque::No);
    }

    let mut ordered = Vec::with_capacity(upserts.len() + whiteouts.len());
    for (path, opaque) in upserts {
        if path.is_empty() && opaque == Opaque::No {
            // The root's own metadata is not part of a layer.
            continue;
        }
        ordered.push(Planned::Upsert { path, opaque });
    }
    for deleted in whiteouts {
        // `.wh.` goes before the last component's name: the marker sorts among the deleted
        // path's siblings by its own name.
        let name_at = deleted
            .iter()
            .rposition(|&b| b == 0)
            .map_or(0, |cut| cut + 1);
        let mut path = Vec::with_capacity(deleted.len() + 4);
        path.extend_from_slice(&deleted[..name_at]);
        path.extend_from_slice(b".wh.");
        path.extend_from_slice(&deleted[name_at..]);
        ordered.push(Planned::Whiteout { path });
    }
    // Upserts came sorted out of the map; the whiteouts join them. Stable: equal keys (a
    // change named like a whiteout marker) keep upsert first.
    ordered.sort_by(|a, b| a.key().cmp(b.key()));
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn names(plan: &[Planned]) -> Vec<String> {
        plan.iter()
            .map(|p| match p {
                Planned::Upsert { path, opaque } => {
                    let path: PathBuf = components(path).iter().collect();
                    let suffix = match opaque {
                        Opaque::No => "",
                        Opaque::IfDir => "+opq-if-dir",
                        Opaque::Required => "+opq",
                    };
                    format!("{}{suffix}", path.display())
                }
                Planned::Whiteout { path } => {
                    let mut parts = components(path);
                    let marker = parts.pop().unwrap();
                    let name = marker.to_str().unwrap().strip_prefix(".wh.").unwrap();
                    parts.push(name.into());
                    let path: PathBuf = parts.iter().collect();
                    format!("-{}", path.display())
                }
            })
            .collect()
    }

    #[test]
    fn parents_first_and_ancestors_added() {
        let changes = [
            Change::Upsert("a/b/c".into()),
            Change::Upsert("a.b".into()),
            Change::Delete("a/z".into()),
            Change::OpaqueDir("d".into()),
        ];
        let got = names(&plan(&changes).unwrap());
        // `.wh.z` sorts among `a`'s children by its own name, before `b`.
        assert_eq!(got, ["a", "-a/z", "a/b", "a/b/c", "a.b", "d+opq"]);
    }

    #[test]
    fn delete_then_recreate_below_becomes_opaque() {
        let changes = [Change::Delete("d".into()), Change::Upsert("d/new".into())];
        assert_eq!(names(&plan(&changes).unwrap()), ["d+opq-if-dir", "d/new"]);
        let changes = [Change::Delete("f".into()), Change::Upsert("f".into())];
        // Replaced in place: no whiteout; if `f` is now a directory the old one is hidden.
        assert_eq!(names(&plan(&changes).unwrap()), ["f+opq-if-dir"]);
    }

    #[test]
    fn order_does_not_depend_on_change_order() {
        let mut changes = vec![
            Change::Upsert("x/1".into()),
            Change::Upsert("b".into()),
            Change::Delete("x/0".into()),
            Change::Upsert("x".into()),
        ];
        let first = plan(&changes).unwrap();
        changes.reverse();
        assert_eq!(plan(&changes).unwrap(), first);
    }

    #[test]
    fn keys_split_as_tar_names_are_normalised() {
        for raw in [
            &b"/./usr//bin/./ls"[..],
            b"a",
            b"./",
            b"a/b/",
            b"x/./.y/..z",
        ] {
            let parts = crate::path::normalize_entry_name(raw).unwrap();
            let joined = parts
                .iter()
                .map(|c| c.as_bytes())
                .collect::<Vec<_>>()
                .join(&0u8);
            assert_eq!(
                entry_key(raw).unwrap(),
                joined,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(entry_key(b"a/../b"), None);
    }

    #[test]
    fn dotdot_paths_are_refused() {
        assert!(plan(&[Change::Upsert("a/../../etc".into())]).is_err());
        assert!(plan(&[Change::Delete("/".into())]).is_err());
    }
}
