//! `USER name[:group]` resolved against the rootfs's own /etc/passwd and /etc/group.

use std::path::Path;

use crate::spec::UserIds;
use crate::SandboxError;

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`, ...) against `rootfs`'s
/// /etc/passwd and /etc/group, as Docker does: a numeric user missing from passwd gets gid 0;
/// supplementary groups are those listing the user by name (only when no group is given
/// explicitly, as runc does).
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<UserIds, SandboxError> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if user_part.is_empty() {
        return Err(SandboxError::EmptyUserName(user.to_string()));
    }
    let passwd = read_db(rootfs, "etc/passwd")?;
    let group = read_db(rootfs, "etc/group")?;

    let passwd_entry = passwd.iter().find(|f| {
        f.first().map(String::as_str) == Some(user_part)
            || (user_part.parse::<u32>().is_ok() && f.get(2).map(String::as_str) == Some(user_part))
    });
    let (name, uid, primary_gid) = match (passwd_entry, user_part.parse::<u32>()) {
        (Some(fields), _) => (
            Some(fields[0].clone()),
            parse_id(fields.get(2), "uid", user_part)?,
            parse_id(fields.get(3), "gid", user_part)?,
        ),
        (None, Ok(uid)) => (None, uid, 0),
        (None, Err(_)) => return Err(SandboxError::NoSuchUser(user_part.to_string())),
    };

    if let Some(group_part) = group_part {
        let gid = match group_part.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .iter()
                .find(|f| f.first().map(String::as_str) == Some(group_part))
                .map(|f| parse_id(f.get(2), "gid", group_part))
                .transpose()?
                .ok_or_else(|| SandboxError::NoSuchGroup(group_part.to_string()))?,
        };
        return Ok(UserIds {
            uid,
            gid,
            groups: Vec::new(),
        });
    }

    let mut groups = Vec::new();
    if let Some(name) = &name {
        for fields in &group {
            let members = fields.get(3).map(String::as_str).unwrap_or("");
            if members.split(',').any(|m| m == name) {
                let gid = parse_id(fields.get(2), "gid", &fields[0])?;
                if gid != primary_gid && !groups.contains(&gid) {
                    groups.push(gid);
                }
            }
        }
    }
    Ok(UserIds {
        uid,
        gid: primary_gid,
        groups,
    })
}

/// The home directory runc gives a process of `uid` when its environment has no HOME: the
/// first /etc/passwd entry with that uid, else `/`.
pub fn home_dir(rootfs: &Path, uid: u32) -> Result<String, SandboxError> {
    let passwd = read_db(rootfs, "etc/passwd")?;
    let uid = uid.to_string();
    Ok(passwd
        .iter()
        .find(|f| f.get(2) == Some(&uid))
        .and_then(|f| f.get(5).cloned())
        .unwrap_or_else(|| "/".into()))
}

/// Reads a colon-separated database; a missing file is an empty database (scratch images).
fn read_db(rootfs: &Path, rel: &str) -> Result<Vec<Vec<String>>, SandboxError> {
    let path = crate::rootpath::host_path_in_root(rootfs, rel)
        .map_err(|e| SandboxError::io(format!("resolving /{rel} in {}", rootfs.display()), e))?;
    let content = match path {
        None => return Ok(Vec::new()),
        Some(p) => match std::fs::read_to_string(&p) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SandboxError::io(format!("reading {}", p.display()), e)),
        },
    };
    Ok(content
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect())
}

fn parse_id(field: Option<&String>, what: &'static str, entry: &str) -> Result<u32, SandboxError> {
    field
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| SandboxError::BadUserEntry {
            field: what,
            entry: entry.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\naudio:x:29:app\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn home_comes_from_passwd_by_uid() {
        let dir = rootfs();
        assert_eq!(home_dir(dir.path(), 1000).unwrap(), "/home/app");
        assert_eq!(home_dir(dir.path(), 0).unwrap(), "/root");
        assert_eq!(home_dir(dir.path(), 4242).unwrap(), "/");
    }

    #[test]
    fn name_gets_primary_and_supplementary_groups() {
        let dir = rootfs();
        let ids = resolve_user(dir.path(), "app").unwrap();
        assert_eq!(
            ids,
            UserIds {
                uid: 1000,
                gid: 1000,
                groups: vec![10, 29]
            }
        );
    }

    #[test]
    fn explicit_group_by_name_or_number() {
        let dir = rootfs();
        assert_eq!(resolve_user(dir.path(), "app:wheel").unwrap().gid, 10);
        assert_eq!(resolve_user(dir.path(), "app:55").unwrap().gid, 55);
        assert_eq!(resolve_user(dir.path(), "0:audio").unwrap().gid, 29);
    }

    #[test]
    fn numeric_unknown_user_gets_gid_zero_and_unknown_name_fails() {
        let dir = rootfs();
        assert_eq!(
            resolve_user(dir.path(), "4242").unwrap(),
            UserIds {
                uid: 4242,
                gid: 0,
                groups: vec![]
            }
        );
        // Typed, so a caller can tell a user the image lacks from a failed read; the text
        // is Docker's.
        let err = resolve_user(dir.path(), "nobody").unwrap_err();
        assert!(
            matches!(&err, SandboxError::NoSuchUser(name) if name == "nobody"),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("unable to find user nobody"),
            "{err}"
        );
        let err = resolve_user(dir.path(), "app:nogroup").unwrap_err();
        assert!(
            matches!(&err, SandboxError::NoSuchGroup(name) if name == "nogroup"),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("unable to find group nogroup"),
            "{err}"
        );
    }

    #[test]
    fn passwd_symlink_escaping_the_root_stays_inside() {
        let dir = rootfs();
        std::fs::remove_file(dir.path().join("etc/passwd")).unwrap();
        // An absolute link must resolve inside the rootfs, never to the host's /etc/passwd.
        std::os::unix::fs::symlink("/../../etc/shadow-missing", dir.path().join("etc/passwd"))
            .unwrap();
        let err = resolve_user(dir.path(), "root").unwrap_err();
        assert!(
            err.to_string().contains("unable to find user root"),
            "{err}"
        );
    }
}
