//! Turning a change set into the ordered list of tar entries to write.
//!
//! Order is what makes layers deterministic: entries are sorted component-wise by path, so
//! a directory comes immediately before its children whatever order the snapshotter found
//! them in, and a whiteout `dir/.wh.NAME` sorts among `dir`'s children by its own name.
//! Every ancestor of a changed path is written too (as containerd does), so a consumer never
//! has to invent a parent's owner or mode.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use crate::change::Change;
use crate::error::{Error, Result};
use crate::path::normalize_entry_name;

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

/// One entry to write, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Planned {
    Upsert {
        components: Vec<OsString>,
        opaque: Opaque,
    },
    /// A `.wh.NAME` for the path.
    Whiteout { components: Vec<OsString> },
}

/// Orders `changes` into tar entries. Fails on paths with `..` or naming the root where that
/// makes no sense.
pub(crate) fn plan(changes: &[Change]) -> Result<Vec<Planned>> {
    let mut upserts: BTreeMap<Vec<OsString>, Opaque> = BTreeMap::new();
    let mut deletes: Vec<Vec<OsString>> = Vec::new();
    for change in changes {
        let raw = change.path().as_os_str().as_bytes();
        let components = normalize_entry_name(raw).map_err(|_| Error::Change {
            path: change.path().display().to_string(),
            reason: "path has a `..` component".into(),
        })?;
        match change {
            Change::Upsert(_) => {
                upserts.entry(components).or_insert(Opaque::No);
            }
            Change::OpaqueDir(_) => {
                upserts.insert(components, Opaque::Required);
            }
            Change::Delete(_) => {
                if components.is_empty() {
                    return Err(Error::Change {
                        path: change.path().display().to_string(),
                        reason: "the root cannot be deleted".into(),
                    });
                }
                deletes.push(components);
            }
        }
    }

    let mut whiteouts = Vec::new();
    for deleted in deletes {
        let recreated_below = upserts
            .range(deleted.clone()..)
            .next()
            .is_some_and(|(path, _)| path.starts_with(&deleted));
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

    // Every ancestor of a change is written, with its current metadata.
    let ancestors: Vec<Vec<OsString>> = upserts
        .keys()
        .chain(whiteouts.iter())
        .flat_map(|path| (1..path.len()).map(move |n| path[..n].to_vec()))
        .collect();
    for ancestor in ancestors {
        upserts.entry(ancestor).or_insert(Opaque::No);
    }

    let mut ordered: BTreeMap<Vec<Vec<u8>>, Planned> = BTreeMap::new();
    for (components, opaque) in upserts {
        if components.is_empty() && opaque == Opaque::No {
            // The root's own metadata is not part of a layer.
            continue;
        }
        ordered.insert(
            sort_key(&components),
            Planned::Upsert { components, opaque },
        );
    }
    for components in whiteouts {
        let mut key = sort_key(&components);
        if let Some(last) = key.last_mut() {
            last.splice(0..0, b".wh.".iter().copied());
        }
        ordered.insert(key, Planned::Whiteout { components });
    }
    Ok(ordered.into_values().collect())
}

fn sort_key(components: &[OsString]) -> Vec<Vec<u8>> {
    components.iter().map(|c| c.as_bytes().to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn names(plan: &[Planned]) -> Vec<String> {
        plan.iter()
            .map(|p| match p {
                Planned::Upsert { components, opaque } => {
                    let path: PathBuf = components.iter().collect();
                    let suffix = match opaque {
                        Opaque::No => "",
                        Opaque::IfDir => "+opq-if-dir",
                        Opaque::Required => "+opq",
                    };
                    format!("{}{suffix}", path.display())
                }
                Planned::Whiteout { components } => {
                    let path: PathBuf = components.iter().collect();
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
    fn dotdot_paths_are_refused() {
        assert!(plan(&[Change::Upsert("a/../../etc".into())]).is_err());
        assert!(plan(&[Change::Delete("/".into())]).is_err());
    }
}
