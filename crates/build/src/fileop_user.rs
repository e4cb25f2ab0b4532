//! The owner BuildKit gives what a file operation creates for a `user[:group]` (WORKDIR's
//! directories under USER): LLB's `WithUser` parses each part as an id (`root` is 0) or a
//! name, and the solver's `readUser` resolves names in the stage's /etc/passwd and
//! /etc/group. Unlike a RUN's user, nothing here fails: a name that no file lists (or a
//! missing file) leaves the id at 0, and a user given by id also gives its group id.

use std::io::Read;
use std::path::Path;

use rbuild_sandbox::rootpath::host_path_in_root;

/// BuildKit's `maxUserFileBytes`: a larger passwd or group file is an error.
const MAX_USER_FILE_BYTES: u64 = 10 << 20;

/// `(uid, gid)` for `user` as BuildKit's file operations resolve it in `rootfs`.
pub(crate) fn file_op_owner(rootfs: &Path, user: &str) -> Result<(u32, u32), String> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (mut uid, mut gid) = (0, 0);
    match parse_id(user_part) {
        // `case *pb.UserOpt_ByID: us.UID = int(u.ByID); us.GID = int(u.ByID)`
        Some(id) => (uid, gid) = (id, id),
        None => {
            if let Some(fields) = find_entry(rootfs, "etc/passwd", user_part)? {
                uid = field_id(&fields, 2, "uid", user_part)?;
                gid = field_id(&fields, 3, "gid", user_part)?;
            }
        }
    }
    if let Some(group_part) = group_part {
        match parse_id(group_part) {
            Some(id) => gid = id,
            None => {
                if let Some(fields) = find_entry(rootfs, "etc/group", group_part)? {
                    gid = field_id(&fields, 2, "gid", group_part)?;
                }
            }
        }
    }
    Ok((uid, gid))
}

/// LLB's `parseUID`: `root` is 0, else a decimal id.
fn parse_id(text: &str) -> Option<u32> {
    if text == "root" {
        return Some(0);
    }
    text.parse().ok()
}

fn field_id(fields: &[String], index: usize, what: &str, name: &str) -> Result<u32, String> {
    fields
        .get(index)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| format!("invalid {what} in the entry for {name:?}"))
}

/// The first entry of the colon-separated database `rel` in `rootfs` named `name`; `None`
/// when the file is missing or lists no such name.
fn find_entry(rootfs: &Path, rel: &str, name: &str) -> Result<Option<Vec<String>>, String> {
    let path = match host_path_in_root(rootfs, rel)
        .map_err(|e| format!("resolving /{rel} in the stage: {e}"))?
    {
        Some(p) => p,
        None => return Ok(None),
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
        Err(e) => return Err(format!("reading /{rel}: {e}")),
    };
    let md = file
        .metadata()
        .map_err(|e| format!("reading /{rel}: {e}"))?;
    if !md.is_file() {
        return Err(format!("/{rel} is not a regular file"));
    }
    let mut text = String::new();
    file.take(MAX_USER_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("reading /{rel}: {e}"))?;
    if text.len() as u64 > MAX_USER_FILE_BYTES {
        return Err(format!("/{rel} exceeds {MAX_USER_FILE_BYTES} bytes"));
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
    fn ids_names_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        // No /etc at all: ids as given, names are 0.
        assert_eq!(file_op_owner(dir.path(), "root").unwrap(), (0, 0));
        assert_eq!(file_op_owner(dir.path(), "1000").unwrap(), (1000, 1000));
        assert_eq!(file_op_owner(dir.path(), "1000:5").unwrap(), (1000, 5));
        assert_eq!(file_op_owner(dir.path(), "7:wheel").unwrap(), (7, 7));
        assert_eq!(file_op_owner(dir.path(), "nobody").unwrap(), (0, 0));
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "wheel:x:10:app\n").unwrap();
        assert_eq!(file_op_owner(dir.path(), "app").unwrap(), (1000, 1001));
        assert_eq!(file_op_owner(dir.path(), "app:wheel").unwrap(), (1000, 10));
        assert_eq!(
            file_op_owner(dir.path(), "app:nogroup").unwrap(),
            (1000, 1001)
        );
        assert_eq!(file_op_owner(dir.path(), "nobody").unwrap(), (0, 0));
    }
}
