//! The owner BuildKit gives what a file operation creates for a `user[:group]` (WORKDIR's
//! directories under USER, `COPY/ADD --chown`): LLB's `WithUser` parses each part as an id (`root` is 0) or a
//! name, and the solver's `readUser` resolves names in the stage's /etc/passwd and
//! /etc/group. Unlike a RUN's user, nothing here fails: a name that no file lists (or a
//! missing file) leaves the id at 0, and a user given by id also gives its group id.

use std::io::Read;
use std::path::{Path, PathBuf};

use rbuild_inroot::host_path_in_root;

use crate::error::{BuildError, Result};

/// BuildKit's `maxUserFileBytes`: a larger passwd or group file is an error.
const MAX_USER_FILE_BYTES: u64 = 10 << 20;

/// An owner as BuildKit's file operations resolve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileOwner {
    pub uid: u32,
    pub gid: u32,
    /// Names no file listed (BuildKit silently uses id 0 for them): for a warning.
    pub unlisted: Vec<String>,
}

impl FileOwner {
    pub(crate) fn ids(&self) -> (u32, u32) {
        (self.uid, self.gid)
    }

    /// The warning to show when a name was not found, naming what asked for it.
    pub(crate) fn warning(&self, what: &str) -> Option<String> {
        (!self.unlisted.is_empty()).then(|| {
            format!(
                "{what}: {} not found, so {}:{} is used (as BuildKit does)",
                self.unlisted.join(" and "),
                self.uid,
                self.gid
            )
        })
    }
}

/// The parts of `user[:group]` that are names, not ids (`root` counts as the id 0).
pub(crate) fn names_in(user: &str) -> Vec<&str> {
    user.split(':')
        .take(2)
        .filter(|part| parse_id(part).is_none())
        .collect()
}

/// The owner of what a file operation creates for `user` in `rootfs`, as BuildKit's.
pub(crate) fn file_op_owner(rootfs: &Path, user: &str) -> Result<FileOwner> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let mut owner = FileOwner {
        uid: 0,
        gid: 0,
        unlisted: Vec::new(),
    };
    match parse_id(user_part) {
        // `case *pb.UserOpt_ByID: us.UID = int(u.ByID); us.GID = int(u.ByID)`
        Some(id) => (owner.uid, owner.gid) = (id, id),
        None => match find_entry(rootfs, "etc/passwd", user_part)? {
            Some(fields) => {
                owner.uid = field_id(&fields, 2, "uid", user_part)?;
                owner.gid = field_id(&fields, 3, "gid", user_part)?;
            }
            None => owner
                .unlisted
                .push(format!("user {user_part:?} (in /etc/passwd)")),
        },
    }
    if let Some(group_part) = group_part {
        match parse_id(group_part) {
            Some(id) => owner.gid = id,
            None => match find_entry(rootfs, "etc/group", group_part)? {
                Some(fields) => owner.gid = field_id(&fields, 2, "gid", group_part)?,
                None => owner
                    .unlisted
                    .push(format!("group {group_part:?} (in /etc/group)")),
            },
        }
    }
    Ok(owner)
}

/// LLB's `parseUID`: `root` is 0, else a decimal id.
fn parse_id(text: &str) -> Option<u32> {
    if text == "root" {
        return Some(0);
    }
    text.parse().ok()
}

fn field_id(fields: &[String], index: usize, what: &str, name: &str) -> Result<u32> {
    fields
        .get(index)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| BuildError::other(format!("invalid {what} in the entry for {name:?}")))
}

/// The first entry of the colon-separated database `rel` in `rootfs` named `name`; `None`
/// when the file is missing or lists no such name.
fn find_entry(rootfs: &Path, rel: &str, name: &str) -> Result<Option<Vec<String>>> {
    // Errors name the container path (`/etc/passwd`), not the host's.
    let shown = PathBuf::from(format!("/{rel}"));
    let path = match host_path_in_root(rootfs, rel)
        .map_err(BuildError::system(format!("resolving /{rel} in the stage")))?
    {
        Some(p) => p,
        None => return Ok(None),
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
        Err(e) => return Err(BuildError::io("reading", &shown)(e)),
    };
    let md = file.metadata().map_err(BuildError::io("reading", &shown))?;
    if !md.is_file() {
        return Err(BuildError::other(format!("/{rel} is not a regular file")));
    }
    let mut text = String::new();
    file.take(MAX_USER_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(BuildError::io("reading", &shown))?;
    if text.len() as u64 > MAX_USER_FILE_BYTES {
        return Err(BuildError::other(format!(
            "/{rel} exceeds {MAX_USER_FILE_BYTES} bytes"
        )));
    }
    Ok(text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
        .find(|f| f.first().map(String::as_str) == Some(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_parts_that_are_not_ids() {
        assert_eq!(names_in("app:app"), vec!["app", "app"]);
        assert_eq!(names_in("1000:staff"), vec!["staff"]);
        assert_eq!(names_in("root:root"), Vec::<&str>::new());
        assert_eq!(names_in("7:0"), Vec::<&str>::new());
        assert_eq!(names_in("app"), vec!["app"]);
    }

    #[test]
    fn ids_names_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let ids = |user: &str| file_op_owner(dir.path(), user).unwrap().ids();
        // No /etc at all: ids as given, names are 0.
        assert_eq!(ids("root"), (0, 0));
        assert_eq!(ids("root:root"), (0, 0));
        assert_eq!(ids("1000"), (1000, 1000));
        assert_eq!(ids("1000:5"), (1000, 5));
        assert_eq!(ids("7:wheel"), (7, 7));
        assert_eq!(ids("nobody"), (0, 0));
        assert!(file_op_owner(dir.path(), "root:root")
            .unwrap()
            .warning("x")
            .is_none());
        let w = file_op_owner(dir.path(), "nobody:staff")
            .unwrap()
            .warning("COPY --chown=nobody:staff")
            .unwrap();
        assert!(
            w.contains("user \"nobody\"") && w.contains("group \"staff\"") && w.contains("0:0"),
            "{w}"
        );
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "wheel:x:10:app\n").unwrap();
        assert_eq!(ids("app"), (1000, 1001));
        assert_eq!(ids("app:wheel"), (1000, 10));
        assert_eq!(ids("app:nogroup"), (1000, 1001));
        assert_eq!(ids("nobody"), (0, 0));
    }
}
