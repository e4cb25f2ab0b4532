//! /etc/subuid and /etc/subgid ranges, and writing a user namespace's id maps.

use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::process::{getegid, geteuid};
use serde::Serialize;

use crate::spec::IdMapping;
use crate::SandboxError;

/// One `name:start:count` line that applies to the current user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SubIdRange {
    pub start: u32,
    pub count: u32,
}

/// The current user's name from the host's /etc/passwd, if it has one.
pub fn current_user_name() -> Option<String> {
    let uid = geteuid().as_raw();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// The current user's name, or its uid when it has none (for messages).
pub fn current_user_label() -> String {
    current_user_name().unwrap_or_else(|| geteuid().as_raw().to_string())
}

/// Parses subordinate id file `content`, keeping the ranges of user `name` or numeric `id`.
pub fn parse_subid(content: &str, name: Option<&str>, id: u32) -> Vec<SubIdRange> {
    let id_text = id.to_string();
    content
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let owner = fields.next()?;
            let start = fields.next()?.parse().ok()?;
            let count = fields.next()?.parse().ok()?;
            let ours = Some(owner) == name || owner == id_text;
            (ours && count > 0).then_some(SubIdRange { start, count })
        })
        .collect()
}

/// The current user's ranges in `file` (/etc/subuid or /etc/subgid); empty when none or unreadable.
pub fn ranges_for_current_user(file: &Path, id: u32) -> Vec<SubIdRange> {
    let name = current_user_name();
    std::fs::read_to_string(file)
        .map(|c| parse_subid(&c, name.as_deref(), id))
        .unwrap_or_default()
}

/// Finds a setuid helper such as `newuidmap` in the usual places.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file());
    found
}

/// The subordinate ranges and setuid tools an unprivileged user needs for a ranged map.
struct SubIdSetup {
    uid: u32,
    gid: u32,
    subuids: Vec<SubIdRange>,
    subgids: Vec<SubIdRange>,
    newuidmap: PathBuf,
    newgidmap: PathBuf,
}

/// What an unprivileged caller has for a ranged mapping; `None` when a range or a tool is
/// missing (or when the caller is root, which needs neither).
fn subid_setup() -> Option<SubIdSetup> {
    let (uid, gid) = (geteuid().as_raw(), getegid().as_raw());
    if uid == 0 {
        return None;
    }
    let subuids = ranges_for_current_user(Path::new("/etc/subuid"), uid);
    let subgids = ranges_for_current_user(Path::new("/etc/subgid"), gid_owner_id(uid));
    if subuids.is_empty() || subgids.is_empty() {
        return None;
    }
    Some(SubIdSetup {
        uid,
        gid,
        subuids,
        subgids,
        newuidmap: find_tool("newuidmap")?,
        newgidmap: find_tool("newgidmap")?,
    })
}

/// The container → host id map every user namespace of this process gets when the caller
/// is unprivileged and has subordinate ranges and newuidmap/newgidmap: container 0 is the
/// caller, 1.. the ranges in order. `None` for root (identity) and for a single-id mapping.
pub fn subid_map() -> Option<rbuild_idmap::IdMap> {
    let setup = subid_setup()?;
    Some(rbuild_idmap::IdMap {
        uids: map_ranges(setup.uid, &setup.subuids),
        gids: map_ranges(setup.gid, &setup.subgids),
    })
}

/// Container ranges: 0 → `own_id`, then each subordinate range from container id 1 on
/// (stopping before the 32-bit id space runs out).
fn map_ranges(own_id: u32, ranges: &[SubIdRange]) -> Vec<rbuild_idmap::IdRange> {
    let mut out = vec![rbuild_idmap::IdRange {
        container_start: 0,
        host_start: own_id,
        len: 1,
    }];
    let mut next_inside: u64 = 1;
    for range in ranges {
        if next_inside + u64::from(range.count) > u64::from(u32::MAX) {
            break;
        }
        out.push(rbuild_idmap::IdRange {
            container_start: next_inside as u32,
            host_start: range.start,
            len: range.count,
        });
        next_inside += u64::from(range.count);
    }
    out
}

/// [`write_id_maps`] with the error as text, for the container-root worker (which moves to
/// the root-filesystem crate this round and sends the text to its helper); it takes the
/// typed error once it has moved.
pub fn write_maps(
    pid: i32,
    root_range: Option<&crate::root_range::RootRange>,
) -> Result<IdMapping, String> {
    write_id_maps(pid, root_range).map_err(|e| e.to_string())
}

/// Writes the id maps of the process `pid`, which has just unshared its user namespace.
/// Returns which kind of mapping it got. As root, `root_range` (when given) is mapped
/// instead of the identity: root may write any map itself, no newuidmap needed.
pub fn write_id_maps(
    pid: i32,
    root_range: Option<&crate::root_range::RootRange>,
) -> Result<IdMapping, SandboxError> {
    let (uid, gid) = (geteuid().as_raw(), getegid().as_raw());
    if let (0, Some(range)) = (uid, root_range) {
        write_proc_map(
            pid,
            "uid_map",
            &format!("0 {} {}\n", range.uid_start, range.count),
        )?;
        write_proc_map(
            pid,
            "gid_map",
            &format!("0 {} {}\n", range.gid_start, range.count),
        )?;
        return Ok(IdMapping::RootRange);
    }
    if uid == 0 {
        write_proc_map(pid, "uid_map", "0 0 4294967295\n")?;
        write_proc_map(pid, "gid_map", "0 0 4294967295\n")?;
        return Ok(IdMapping::Identity);
    }
    if let Some(setup) = subid_setup() {
        run_map_tool(&setup.newuidmap, pid, &map_ranges(uid, &setup.subuids))?;
        run_map_tool(&setup.newgidmap, pid, &map_ranges(gid, &setup.subgids))?;
        return Ok(IdMapping::SubIds);
    }
    // Without subordinate ids an unprivileged process may only map itself, and must give
    // up setgroups(2) first.
    write_proc_map(pid, "setgroups", "deny\n")?;
    write_proc_map(pid, "uid_map", &format!("0 {uid} 1\n"))?;
    write_proc_map(pid, "gid_map", &format!("0 {gid} 1\n"))?;
    Ok(IdMapping::SingleId)
}

/// /etc/subgid is keyed by user name or uid (not gid), like /etc/subuid.
fn gid_owner_id(uid: u32) -> u32 {
    uid
}

fn write_proc_map(pid: i32, file: &str, content: &str) -> Result<(), SandboxError> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, content)
        .map_err(|e| SandboxError::io(format!("writing {path:?} ({content:?})"), e))
}

/// `newuidmap PID 0 ID 1 1 START COUNT [2 START COUNT]...`: the caller becomes root, the
/// subordinate ranges follow from id 1 on.
fn run_map_tool(
    tool: &Path,
    pid: i32,
    ranges: &[rbuild_idmap::IdRange],
) -> Result<(), SandboxError> {
    let mut args = vec![pid.to_string()];
    for range in ranges {
        args.extend([
            range.container_start.to_string(),
            range.host_start.to_string(),
            range.len.to_string(),
        ]);
    }
    let output = Command::new(tool)
        .args(&args)
        .output()
        .map_err(|e| SandboxError::io(format!("running {}", tool.display()), e))?;
    if !output.status.success() {
        return Err(SandboxError::MapTool {
            tool: tool.to_path_buf(),
            args: args.join(" "),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_by_name_and_uid_and_skips_others() {
        let content = "# comment\nalice:100000:65536\nbob:165536:65536\n1000:300000:10\nalice:400000:0\nbad line\n";
        let ranges = parse_subid(content, Some("alice"), 1000);
        assert_eq!(
            ranges,
            vec![
                SubIdRange {
                    start: 100000,
                    count: 65536
                },
                SubIdRange {
                    start: 300000,
                    count: 10
                }
            ]
        );
        assert!(parse_subid(content, Some("carol"), 7).is_empty());
    }

    #[test]
    fn map_ranges_put_the_caller_first_and_the_ranges_after() {
        let ranges = map_ranges(
            1000,
            &[
                SubIdRange {
                    start: 100000,
                    count: 65536,
                },
                SubIdRange {
                    start: 300000,
                    count: 10,
                },
            ],
        );
        let map = rbuild_idmap::IdMap {
            uids: ranges.clone(),
            gids: ranges,
        };
        assert_eq!(map.host_uid(0), Some(1000));
        assert_eq!(map.host_uid(1), Some(100000));
        assert_eq!(map.host_uid(65536), Some(165535));
        assert_eq!(map.host_uid(65537), Some(300000));
        assert_eq!(map.host_uid(65547), None);
    }
}
