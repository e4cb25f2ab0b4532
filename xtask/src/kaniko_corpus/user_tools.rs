//! `adduser` and `addgroup` for the busybox stand-in: Debian's static busybox is built
//! without them, and five of the corpus's Dockerfiles (written for Alpine and busybox) add
//! users before what they test (`COPY --chown` into new directories, a download into a
//! user's directory). These shell scripts take the busybox options the corpus uses (and a
//! few more), append to `/etc/passwd` and `/etc/group` and make the home directory. They
//! are not busybox: both builders run the very same scripts, so the images still compare.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

/// `adduser [-u UID] [-G GROUP] [-g GECOS] [-h HOME] [-s SHELL] [-S] [-D] [-H] USER [GROUP]`,
/// with busybox's long forms, options before or after the operands. Without a group, one of
/// the user's name and id is made.
const ADDUSER: &str = r#"#!/bin/sh
# adduser stand-in for the Kaniko corpus's busybox base (Debian's busybox has none).
etc=${ETC_DIR:-/etc}
uid= group= gecos= home= shell=/bin/sh nohome= name=
# Options may follow the user's name (`adduser -u 1005 -S al -G appgroup`); a second
# operand is the group (`adduser USER GROUP`).
while [ $# -gt 0 ]; do
  case "$1" in
    -u|--uid) uid=$2; shift 2 ;;
    -G|--ingroup) group=$2; shift 2 ;;
    -g|--gecos) gecos=$2; shift 2 ;;
    -h|--home) home=$2; shift 2 ;;
    -s|--shell) shell=$2; shift 2 ;;
    -k|--skel) shift 2 ;;
    -S|--system|-D|--disabled-password|--empty-password) shift ;;
    -H|--no-create-home) nohome=1; shift ;;
    -*) echo "adduser: unknown option $1" >&2; exit 1 ;;
    *) if [ -z "$name" ]; then name=$1; elif [ -z "$group" ]; then group=$1; else
         echo "adduser: too many operands" >&2; exit 1; fi; shift ;;
  esac
done
[ -n "$name" ] || { echo "usage: adduser [OPTIONS] USER [GROUP]" >&2; exit 1; }
if grep -q "^$name:" "$etc/passwd"; then echo "adduser: user '$name' in use" >&2; exit 1; fi
if [ -z "$uid" ]; then
  uid=1000
  while cut -d: -f3 "$etc/passwd" | grep -qx "$uid"; do uid=$((uid + 1)); done
fi
if [ -n "$group" ]; then
  gid=$(grep "^$group:" "$etc/group" | cut -d: -f3)
  [ -n "$gid" ] || { echo "adduser: unknown group $group" >&2; exit 1; }
else
  gid=$uid
  echo "$name:x:$gid:" >> "$etc/group"
fi
home=${home:-/home/$name}
echo "$name:x:$uid:$gid:$gecos:$home:$shell" >> "$etc/passwd"
if [ -z "$nohome" ]; then
  mkdir -p "${ROOT_DIR:-}$home" && chown "$uid:$gid" "${ROOT_DIR:-}$home"
fi
"#;

/// `addgroup [-g GID] [-S] GROUP`.
const ADDGROUP: &str = r#"#!/bin/sh
# addgroup stand-in for the Kaniko corpus's busybox base (Debian's busybox has none).
etc=${ETC_DIR:-/etc}
gid=
while [ $# -gt 0 ]; do
  case "$1" in
    -g|--gid) gid=$2; shift 2 ;;
    -S|--system) shift ;;
    --) shift; break ;;
    -*) echo "addgroup: unknown option $1" >&2; exit 1 ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || { echo "usage: addgroup [-g GID] [-S] GROUP (adding a user to a group is not supported)" >&2; exit 1; }
name=$1
if grep -q "^$name:" "$etc/group"; then echo "addgroup: group '$name' in use" >&2; exit 1; fi
if [ -z "$gid" ]; then
  gid=1000
  while cut -d: -f3 "$etc/group" | grep -qx "$gid"; do gid=$((gid + 1)); done
fi
echo "$name:x:$gid:" >> "$etc/group"
"#;

/// Writes `bin/adduser` and `bin/addgroup` (mode 0755) into the stand-in's root.
pub fn install(rootfs: &Path) -> Result<()> {
    for (name, script) in [("adduser", ADDUSER), ("addgroup", ADDGROUP)] {
        let path = rootfs.join("bin").join(name);
        // A link to busybox of that name would be followed by the write.
        if std::fs::symlink_metadata(&path).is_ok() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs `script` with the host's shell against a temporary /etc and root.
    fn run(script: &str, args: &[&str], root: &Path) -> std::process::Output {
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(script.lines().nth(1).unwrap_or("x"))
            .args(args)
            .env("ETC_DIR", root.join("etc"))
            .env("ROOT_DIR", root)
            .output()
            .unwrap()
    }

    #[test]
    fn users_and_groups_are_added_as_the_corpus_uses_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
        let ok = |out: std::process::Output| {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ok(run(ADDGROUP, &["-g", "1001", "-S", "appgroup"], root));
        ok(run(
            ADDUSER,
            &["-u", "1005", "-S", "al", "-G", "appgroup"],
            root,
        ));
        ok(run(ADDUSER, &["-u", "1001", "dev"], root));
        ok(run(
            ADDUSER,
            &[
                "--disabled-password",
                "--gecos",
                "",
                "--uid",
                "1000",
                "user",
            ],
            root,
        ));
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(
            passwd.contains("al:x:1005:1001::/home/al:/bin/sh\n"),
            "{passwd}"
        );
        assert!(
            passwd.contains("dev:x:1001:1001::/home/dev:/bin/sh\n"),
            "{passwd}"
        );
        assert!(
            passwd.contains("user:x:1000:1000::/home/user:/bin/sh\n"),
            "{passwd}"
        );
        let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
        assert!(group.contains("appgroup:x:1001:\n"), "{group}");
        assert!(group.contains("dev:x:1001:\n"), "{group}");
        assert!(root.join("home/dev").is_dir());
        // A user or group that exists, an unknown group, an unknown option: errors.
        assert!(!run(ADDUSER, &["dev"], root).status.success());
        assert!(!run(ADDGROUP, &["appgroup"], root).status.success());
        assert!(!run(ADDUSER, &["-G", "nope", "x"], root).status.success());
        assert!(!run(ADDUSER, &["--bogus", "x"], root).status.success());
        assert!(!run(ADDUSER, &["x", "root", "extra"], root).status.success());
        assert!(!run(ADDGROUP, &["al", "appgroup"], root).status.success());
    }
}
