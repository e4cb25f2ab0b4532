//! /etc/subuid and /etc/subgid ranges, and writing a user namespace's id maps.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::spec::IdMapping;

/// One `name:start:count` line that applies to the current user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SubIdRange {
    pub start: u32,
    pub count: u32,
}

/// The current user's name from the host's /etc/passwd, if it has one.
pub fn current_user_name() -> Option<String> {
    let uid = unsafe { libc::geteuid() };
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
    current_user_name().unwrap_or_else(|| unsafe { libc::geteuid() }.to_string())
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

/// Writes the id maps of the process `pid`, which has just unshared its user namespace.
/// Returns which kind of mapping it got.
pub fn write_maps(pid: i32) -> Result<IdMapping, String> {
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        write_proc_map(pid, "uid_map", "0 0 4294967295\n")?;
        write_proc_map(pid, "gid_map", "0 0 4294967295\n")?;
        return Ok(IdMapping::Identity);
    }
    let subuids = ranges_for_current_user(Path::new("/etc/subuid"), uid);
    let subgids = ranges_for_current_user(Path::new("/etc/subgid"), gid_owner_id(uid));
    let tools = (find_tool("newuidmap"), find_tool("newgidmap"));
    if let ((Some(newuidmap), Some(newgidmap)), false, false) =
        (tools, subuids.is_empty(), subgids.is_empty())
    {
        run_map_tool(&newuidmap, pid, uid, &subuids)?;
        run_map_tool(&newgidmap, pid, gid, &subgids)?;
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

fn write_proc_map(pid: i32, file: &str, content: &str) -> Result<(), String> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, content).map_err(|e| format!("writing {path:?} ({content:?}): {e}"))
}

/// `newuidmap PID 0 ID 1 1 START COUNT [next START COUNT]...`: the caller becomes root, the
/// subordinate ranges follow from id 1 on.
fn run_map_tool(tool: &Path, pid: i32, own_id: u32, ranges: &[SubIdRange]) -> Result<(), String> {
    let mut args = vec![pid.to_string(), "0".into(), own_id.to_string(), "1".into()];
    let mut next_inside: u64 = 1;
    for range in ranges {
        if next_inside + u64::from(range.count) > u64::from(u32::MAX) {
            break;
        }
        args.extend([
            next_inside.to_string(),
            range.start.to_string(),
            range.count.to_string(),
        ]);
        next_inside += u64::from(range.count);
    }
    let output = Command::new(tool)
        .args(&args)
        .output()
        .map_err(|e| format!("running {}: {e}", tool.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} {} failed ({}): {}",
            tool.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
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
}
