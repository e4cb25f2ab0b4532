//! The unprivileged host id range a root build's user namespaces map container ids to
//! ("root never means host root"): `root`'s subordinate range in /etc/subuid and
//! /etc/subgid when the administrator gave it one, else a range rbuild reserves for itself
//! above 2^31 and records in the store, so that every build of that store reuses it (the
//! trees extracted for one range serve the next build). See docs/sandbox.md, "Root's id
//! range".

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::idmap::{parse_subid, SubIdRange};
use crate::SandboxError;

/// The fewest ids a root build maps: container ids 0..65535, as a rootless build with a
/// usual `/etc/subuid` line gets. Root's line in /etc/subuid must give at least these; a
/// reserved range is this long only when the wide one ([`WIDE_RANGE_LEN`]) is not free.
pub const ROOT_RANGE_LEN: u32 = 65536;

/// The ids rbuild's own range maps when it can: every host id from [`RESERVED_BASE`] up to
/// the last block of [`ROOT_RANGE_LEN`] (never taken: it holds 4294967294, the old
/// `nfsnobody`, and 4294967295, "no id"), so container ids 0..2147418111. A layer or a tar
/// keeps any owner in that span as a rootful BuildKit does (one of Kaniko's tests unpacks
/// a tar of uid 491327), where 65536 ids made such an owner an error.
pub const WIDE_RANGE_LEN: u32 = (1 << 31) - ROOT_RANGE_LEN;

/// Where rbuild's own ranges start: 2^31, far above the ranges `useradd` hands out
/// (100000 up, 65536 per user: it would take 32000 users to reach it) and above the ids
/// systemd reserves for its dynamic users and containers (below 2^31).
pub const RESERVED_BASE: u32 = 1 << 31;

/// The record's file name in the store's root.
pub const RECORD_FILE: &str = "userns-range.json";

/// Where a root build's range comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootRangeSource {
    /// `root:START:COUNT` (or `0:...`) lines of /etc/subuid and /etc/subgid.
    SubIdFiles,
    /// rbuild's reserved range, recorded in the store.
    Reserved,
}

/// Container ids 0..`count` map to host uids `uid_start..` and gids `gid_start..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootRange {
    pub uid_start: u32,
    pub gid_start: u32,
    pub count: u32,
    pub source: RootRangeSource,
}

impl RootRange {
    /// The container → host id map of this range.
    pub fn id_map(&self) -> rbuild_idmap::IdMap {
        let range = |host_start| rbuild_idmap::IdRange {
            container_start: 0,
            host_start,
            len: self.count,
        };
        rbuild_idmap::IdMap {
            uids: vec![range(self.uid_start)],
            gids: vec![range(self.gid_start)],
        }
    }
}

/// The range of root builds of the store at `store_root`: root's lines of /etc/subuid and
/// /etc/subgid when there are any, else the range recorded in the store, else a new
/// reserved range (recorded there). `None` when this process is root of a user namespace
/// that maps too few ids for a block of rbuild's (a container's, say): it is not host root
/// then, and steps keep its identity map.
pub fn root_range(store_root: &Path) -> Result<Option<RootRange>, SandboxError> {
    let read = |file: &str| match std::fs::read_to_string(file) {
        Ok(content) => Ok(content),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(SandboxError::io(format!("reading {file}"), e)),
    };
    let subuid = read("/etc/subuid")?;
    let subgid = read("/etc/subgid")?;
    if let Some(range) = range_from_subid_files(&subuid, &subgid)? {
        return Ok(Some(range));
    }
    let record = store_root.join(RECORD_FILE);
    let recorded = match std::fs::read(&record) {
        Ok(bytes) => Some(
            parse_record(&bytes)
                .map_err(|e| SandboxError::IdRange(format!("{}: {e}", record.display())))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(SandboxError::io(format!("reading {}", record.display()), e)),
    };
    let accounts = read("/etc/passwd")? + &read("/etc/group")?;
    if let Some(recorded) = recorded {
        // A store reserved before ranges were wide has the first block: its container ids
        // 0..65535 keep their host ids in the wide range, so its files and cache mounts
        // stay right, and it grows when the wide range is free.
        let own = OwnIds::read()?;
        return match upgrade(recorded, &subuid, &subgid, &accounts, &own) {
            Some(wide) => {
                write_record(&record, &wide)?;
                Ok(Some(wide))
            }
            None => Ok(Some(recorded)),
        };
    }
    let own = OwnIds::read()?;
    let range = match reserve_range(&subuid, &subgid, &accounts, &own) {
        Ok(range) => range,
        Err(_) if !own.initial => return Ok(None),
        Err(e) => return Err(e),
    };
    write_record(&record, &range)?;
    Ok(Some(range))
}

/// The ids this process's user namespace maps (the `inside` side of its maps, as
/// `[start, end)`), and whether it is the initial namespace (all ids, to themselves).
pub struct OwnIds {
    uids: Vec<(u64, u64)>,
    gids: Vec<(u64, u64)>,
    initial: bool,
}

impl OwnIds {
    /// The initial namespace's: every id.
    pub fn initial() -> OwnIds {
        OwnIds {
            uids: vec![(0, 1 << 32)],
            gids: vec![(0, 1 << 32)],
            initial: true,
        }
    }

    fn read() -> Result<OwnIds, SandboxError> {
        let read = |file: &str| {
            std::fs::read_to_string(file)
                .map_err(|e| SandboxError::io(format!("reading {file}"), e))
        };
        let (uid_map, gid_map) = (read("/proc/self/uid_map")?, read("/proc/self/gid_map")?);
        Ok(OwnIds::parse(&uid_map, &gid_map))
    }

    /// From the text of /proc/self/uid_map and gid_map.
    pub fn parse(uid_map: &str, gid_map: &str) -> OwnIds {
        let inside = |map: &str| -> Vec<(u64, u64)> {
            map.lines()
                .filter_map(|line| {
                    let mut fields = line.split_whitespace();
                    let start: u64 = fields.next()?.parse().ok()?;
                    let _outside: u64 = fields.next()?.parse().ok()?;
                    let count: u64 = fields.next()?.parse().ok()?;
                    Some((start, start + count))
                })
                .collect()
        };
        let full =
            |map: &str| map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
        OwnIds {
            uids: inside(uid_map),
            gids: inside(gid_map),
            initial: full(uid_map) && full(gid_map),
        }
    }

    fn holds(&self, start: u64, end: u64) -> bool {
        let within = |ranges: &[(u64, u64)]| ranges.iter().any(|&(s, e)| s <= start && end <= e);
        within(&self.uids) && within(&self.gids)
    }
}

/// Where a root build's range comes from on this host, in a sentence (`rbuild info`).
pub fn describe() -> String {
    let read = |file: &str| std::fs::read_to_string(file).unwrap_or_default();
    match range_from_subid_files(&read("/etc/subuid"), &read("/etc/subgid")) {
        Ok(Some(range)) => format!(
            "container 0..{} = an unprivileged host range: uids {}.., gids {}.. (root's \
             /etc/subuid and /etc/subgid)",
            range.count - 1,
            range.uid_start,
            range.gid_start
        ),
        Ok(None) => match OwnIds::read().and_then(|own| {
            let accounts = read("/etc/passwd") + &read("/etc/group");
            reserve_range(&read("/etc/subuid"), &read("/etc/subgid"), &accounts, &own)
        }) {
            Ok(range) => format!(
                "container 0..{} = an unprivileged host range reserved by rbuild and recorded \
                 in the store ({RECORD_FILE}; a new store takes host ids {}..{})",
                range.count - 1,
                range.uid_start,
                u64::from(range.uid_start) + u64::from(range.count) - 1
            ),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

/// Root's range from the subordinate id files: `None` when neither names root; an error
/// when they name it in a way that cannot serve (one file only, too short, or reaching
/// host id 0), since ignoring an administrator's line would be a silent surprise.
pub fn range_from_subid_files(
    subuid: &str,
    subgid: &str,
) -> Result<Option<RootRange>, SandboxError> {
    let uids = parse_subid(subuid, Some("root"), 0);
    let gids = parse_subid(subgid, Some("root"), 0);
    if uids.is_empty() && gids.is_empty() {
        return Ok(None);
    }
    let pick = |ranges: &[SubIdRange], file: &str| -> Result<(u32, u32), SandboxError> {
        if ranges.is_empty() {
            return Err(SandboxError::IdRange(format!(
                "{file} has no range for root while the other file has one: give root a \
                 range of {ROOT_RANGE_LEN} ids in both /etc/subuid and /etc/subgid, or in \
                 neither (rbuild then reserves one from {RESERVED_BASE} on)"
            )));
        }
        let range = ranges
            .iter()
            .find(|r| r.count >= ROOT_RANGE_LEN)
            .ok_or_else(|| {
                SandboxError::IdRange(format!(
                    "root's ranges in {file} are shorter than the {ROOT_RANGE_LEN} ids a build maps"
                ))
            })?;
        if range.start == 0 || u64::from(range.start) + u64::from(range.count) > u64::from(u32::MAX)
        {
            return Err(SandboxError::IdRange(format!(
                "root's range {}:{} in {file} would map a container id to host id 0 or past \
                 the last id",
                range.start, range.count
            )));
        }
        Ok((range.start, range.count))
    };
    let (uid_start, uid_count) = pick(&uids, "/etc/subuid")?;
    let (gid_start, gid_count) = pick(&gids, "/etc/subgid")?;
    // All the ids the administrator gave root (one count for both maps: the shorter).
    Ok(Some(RootRange {
        uid_start,
        gid_start,
        count: uid_count.min(gid_count),
        source: RootRangeSource::SubIdFiles,
    }))
}

/// rbuild's range for a new store: the wide one ([`WIDE_RANGE_LEN`] ids from
/// [`RESERVED_BASE`] on) when no line of either subordinate id file (any user's) touches
/// it, no account of `accounts` (the text of /etc/passwd and /etc/group) has an id in it
/// and `own` (this process's user namespace) maps it; else a block of
/// [`ROOT_RANGE_LEN`] ([`reserve`]).
pub fn reserve_range(
    subuid: &str,
    subgid: &str,
    accounts: &str,
    own: &OwnIds,
) -> Result<RootRange, SandboxError> {
    match wide_range(subuid, subgid, accounts, own) {
        Some(wide) => Ok(wide),
        None => reserve(subuid, subgid, own),
    }
}

/// The wide range, when it is free (see [`reserve_range`]).
fn wide_range(subuid: &str, subgid: &str, accounts: &str, own: &OwnIds) -> Option<RootRange> {
    let start = u64::from(RESERVED_BASE);
    let end = start + u64::from(WIDE_RANGE_LEN);
    let free = own.holds(start, end)
        && [subuid, subgid]
            .iter()
            .flat_map(|content| all_ranges(content))
            .all(|(s, e)| e <= start || s >= end)
        && account_ids(accounts).all(|id| id < start || id >= end);
    free.then_some(RootRange {
        uid_start: RESERVED_BASE,
        gid_start: RESERVED_BASE,
        count: WIDE_RANGE_LEN,
        source: RootRangeSource::Reserved,
    })
}

/// A store's recorded first block ([`ROOT_RANGE_LEN`] ids at [`RESERVED_BASE`]) grown to
/// the wide range when that is free: the same host ids for container ids 0..65535, more
/// after them. `None` when the record stays as it is.
pub fn upgrade(
    recorded: RootRange,
    subuid: &str,
    subgid: &str,
    accounts: &str,
    own: &OwnIds,
) -> Option<RootRange> {
    let first_block = recorded.count == ROOT_RANGE_LEN
        && recorded.uid_start == RESERVED_BASE
        && recorded.gid_start == RESERVED_BASE;
    if !first_block {
        return None;
    }
    // The block was free when the store reserved it, so no line or account holds it.
    wide_range(subuid, subgid, accounts, own)
}

/// The uids and gids of the accounts of `accounts` (lines of /etc/passwd and /etc/group:
/// `name:password:id:...`).
fn account_ids(accounts: &str) -> impl Iterator<Item = u64> + '_ {
    accounts
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            // passwd: uid then gid; group: gid then the members (no number).
            [fields.get(2), fields.get(3)]
                .into_iter()
                .flatten()
                .filter_map(|f| f.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
}

/// The first block of [`ROOT_RANGE_LEN`] ids from [`RESERVED_BASE`] on that no line of
/// either subordinate id file (any user's) touches and that `own` (this process's user
/// namespace) maps; the last block, which would hold id 4294967295 ("no id" to the
/// kernel), is never taken.
pub fn reserve(subuid: &str, subgid: &str, own: &OwnIds) -> Result<RootRange, SandboxError> {
    let taken: Vec<(u64, u64)> = [subuid, subgid]
        .iter()
        .flat_map(|content| all_ranges(content))
        .collect();
    let blocks = (u64::from(u32::MAX) + 1 - u64::from(RESERVED_BASE)) / u64::from(ROOT_RANGE_LEN);
    for k in 0..blocks - 1 {
        let start = u64::from(RESERVED_BASE) + k * u64::from(ROOT_RANGE_LEN);
        let end = start + u64::from(ROOT_RANGE_LEN);
        if own.holds(start, end) && taken.iter().all(|&(s, e)| e <= start || s >= end) {
            let start = start as u32;
            return Ok(RootRange {
                uid_start: start,
                gid_start: start,
                count: ROOT_RANGE_LEN,
                source: RootRangeSource::Reserved,
            });
        }
    }
    Err(SandboxError::IdRange(format!(
        "no free block of {ROOT_RANGE_LEN} ids from {RESERVED_BASE} on: /etc/subuid and \
         /etc/subgid hand them all out, or this user namespace does not map them; give root \
         a range in /etc/subuid and /etc/subgid"
    )))
}

/// Every `owner:start:count` range of a subordinate id file, whoever owns it, as
/// `[start, end)`.
fn all_ranges(content: &str) -> Vec<(u64, u64)> {
    content
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.trim().split(':').skip(1);
            let start: u64 = fields.next()?.parse().ok()?;
            let count: u64 = fields.next()?.parse().ok()?;
            Some((start, start + count))
        })
        .collect()
}

/// A recorded range, checked as untrusted input: only a range rbuild reserves is taken (the
/// wide range at [`RESERVED_BASE`], or a block of [`ROOT_RANGE_LEN`] inside rbuild's span
/// and short of the last id).
fn parse_record(bytes: &[u8]) -> Result<RootRange, SandboxError> {
    let range: RootRange = serde_json::from_slice(bytes).map_err(|e| {
        SandboxError::IdRange(format!(
            "not a recorded id range ({e}); remove it to reserve one again"
        ))
    })?;
    let inside = |start: u32| {
        start >= RESERVED_BASE
            && u64::from(start) + u64::from(range.count) < u64::from(u32::MAX)
            && (start - RESERVED_BASE) % ROOT_RANGE_LEN == 0
    };
    let block = range.count == ROOT_RANGE_LEN && inside(range.uid_start) && inside(range.gid_start);
    let wide = range.count == WIDE_RANGE_LEN
        && range.uid_start == RESERVED_BASE
        && range.gid_start == RESERVED_BASE;
    if range.source != RootRangeSource::Reserved || !(block || wide) {
        return Err(SandboxError::IdRange(format!(
            "the recorded range {}:{} (gids {}) is not one rbuild reserves ({WIDE_RANGE_LEN} \
             or {ROOT_RANGE_LEN} ids from {RESERVED_BASE} on); remove it to reserve one again",
            range.uid_start, range.count, range.gid_start
        )));
    }
    Ok(range)
}

/// Writes the record whole or not at all (a temporary file renamed over it): builds
/// starting together compute the same block and agree.
fn write_record(record: &Path, range: &RootRange) -> Result<(), SandboxError> {
    let dir = record.parent().ok_or_else(|| {
        SandboxError::IdRange(format!("{} has no parent directory", record.display()))
    })?;
    let context = |e: std::io::Error| {
        SandboxError::io(format!("recording the id range in {}", record.display()), e)
    };
    let mut tmp = tempfile_in(dir).map_err(context)?;
    let json = serde_json::to_vec(range)
        .map_err(|e| SandboxError::IdRange(format!("encoding the id range: {e}")))?;
    tmp.1.write_all(&json).map_err(context)?;
    tmp.1.sync_all().map_err(context)?;
    std::fs::rename(&tmp.0, record).map_err(|e| {
        let _ = std::fs::remove_file(&tmp.0);
        context(e)
    })
}

/// A new 0600 file in `dir` with a name no other process or thread uses (builds of one
/// process may start together).
fn tempfile_in(dir: &Path) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    loop {
        let path = dir.join(format!(
            ".{RECORD_FILE}.{}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path);
        match opened {
            Ok(file) => return Ok((path, file)),
            // Left by a killed process that had our pid: take the next name.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_keeps_its_range_across_builds() {
        let dir = tempfile::tempdir().unwrap();
        let first = root_range(dir.path())
            .unwrap()
            .expect("root of the initial namespace");
        assert_eq!(root_range(dir.path()).unwrap(), Some(first));
        let record = dir.path().join(RECORD_FILE);
        match first.source {
            RootRangeSource::Reserved => {
                assert_eq!(
                    parse_record(&std::fs::read(&record).unwrap()).unwrap(),
                    first
                );
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&record).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
            // This host gives root a range: nothing is reserved, nothing recorded.
            RootRangeSource::SubIdFiles => assert!(!record.exists()),
        }
        assert!(first.uid_start > 0 && first.gid_start > 0);
    }

    #[test]
    fn builds_starting_together_agree_on_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let ranges: Vec<RootRange> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| root_range(dir.path()).unwrap().unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ranges.iter().all(|r| *r == ranges[0]), "{ranges:?}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != RECORD_FILE)
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_namespace_mapping_few_ids_gets_a_block_inside_or_none() {
        // A container's namespace of 65536 ids: no block of rbuild's fits.
        let small = OwnIds::parse("0 100000 65536\n", "0 100000 65536\n");
        assert!(!small.initial);
        assert!(reserve("", "", &small).is_err());
        // One mapping ids from 2^31 + 2^16 on: the block there is taken.
        let base = u64::from(RESERVED_BASE) + u64::from(ROOT_RANGE_LEN);
        let wide = format!("0 0 65536\n{base} 1000000 131072\n");
        let range = reserve("", "", &OwnIds::parse(&wide, &wide)).unwrap();
        assert_eq!(u64::from(range.uid_start), base);
        assert!(OwnIds::parse("0 0 4294967295\n", "         0          0 4294967295\n").initial);
    }

    #[test]
    fn root_lines_in_both_files_give_the_range() {
        let subuid = "alice:100000:65536\nroot:1000000:131072\n";
        let subgid = "0:2000000:65536\n";
        let range = range_from_subid_files(subuid, subgid).unwrap().unwrap();
        assert_eq!(
            range,
            RootRange {
                uid_start: 1_000_000,
                gid_start: 2_000_000,
                count: ROOT_RANGE_LEN,
                source: RootRangeSource::SubIdFiles,
            }
        );
        let map = range.id_map();
        assert_eq!(map.host_uid(0), Some(1_000_000));
        assert_eq!(map.host_gid(65535), Some(2_065_535));
        assert_eq!(map.host_uid(65536), None);
    }

    #[test]
    fn no_root_line_means_none_and_bad_root_lines_are_errors() {
        assert_eq!(
            range_from_subid_files("alice:100000:65536\n", "").unwrap(),
            None
        );
        let err = range_from_subid_files("root:1000000:65536\n", "").unwrap_err();
        assert!(
            err.to_string()
                .contains("/etc/subgid has no range for root"),
            "{err}"
        );
        let err =
            range_from_subid_files("root:1000000:1000\n", "root:1000000:65536\n").unwrap_err();
        assert!(err.to_string().contains("shorter"), "{err}");
        let err = range_from_subid_files("root:0:65536\n", "root:0:65536\n").unwrap_err();
        assert!(err.to_string().contains("host id 0"), "{err}");
        let err =
            range_from_subid_files("root:4294960000:65536\n", "root:100000:65536\n").unwrap_err();
        assert!(err.to_string().contains("past the last id"), "{err}");
    }

    #[test]
    fn reserved_range_skips_blocks_others_hold() {
        let range = reserve("alice:100000:65536\n", "", &OwnIds::initial()).unwrap();
        assert_eq!(
            (range.uid_start, range.gid_start),
            (RESERVED_BASE, RESERVED_BASE)
        );
        assert_eq!(range.source, RootRangeSource::Reserved);
        // A line reaching one id into the first block (in either file) moves it on.
        let subgid = format!("bob:{}:2\n", RESERVED_BASE - 1);
        let range = reserve("", &subgid, &OwnIds::initial()).unwrap();
        assert_eq!(range.uid_start, RESERVED_BASE + ROOT_RANGE_LEN);
        // Everything from the base on handed out: no block, and a clear error.
        let all = format!("big:{RESERVED_BASE}:{}\n", 1u64 << 31);
        let err = reserve(&all, "", &OwnIds::initial()).unwrap_err();
        assert!(matches!(err, SandboxError::IdRange(_)), "{err:?}");
        assert!(err.to_string().contains("no free block"), "{err}");
    }

    #[test]
    fn the_range_is_recorded_and_reused_and_a_forged_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = reserve("", "", &OwnIds::initial()).unwrap();
        write_record(&dir.path().join(RECORD_FILE), &first).unwrap();
        let bytes = std::fs::read(dir.path().join(RECORD_FILE)).unwrap();
        assert_eq!(parse_record(&bytes).unwrap(), first);
        for forged in [
            r#"{"uid_start":0,"gid_start":0,"count":65536,"source":"reserved"}"#.to_string(),
            format!(
                r#"{{"uid_start":{RESERVED_BASE},"gid_start":{RESERVED_BASE},"count":4294967295,"source":"reserved"}}"#
            ),
            format!(
                r#"{{"uid_start":4294901760,"gid_start":{RESERVED_BASE},"count":65536,"source":"reserved"}}"#
            ),
            format!(
                r#"{{"uid_start":{RESERVED_BASE},"gid_start":{RESERVED_BASE},"count":65536,"source":"sub_id_files"}}"#
            ),
            "not json".to_string(),
        ] {
            let err = parse_record(forged.as_bytes()).unwrap_err();
            assert!(
                err.to_string().contains("remove it to reserve one again"),
                "{forged}: {err}"
            );
        }
    }

    #[test]
    fn a_new_store_gets_the_wide_range_unless_something_holds_ids_in_it() {
        let initial = OwnIds::initial();
        let wide = reserve_range(
            "alice:100000:65536\n",
            "",
            "root:x:0:0::/root:/bin/sh\n",
            &initial,
        )
        .unwrap();
        assert_eq!(
            (wide.uid_start, wide.gid_start, wide.count),
            (RESERVED_BASE, RESERVED_BASE, WIDE_RANGE_LEN)
        );
        let map = wide.id_map();
        // Kaniko's tar of 491327:89939, and the last id the range holds.
        assert_eq!(map.host_uid(491_327), Some(RESERVED_BASE + 491_327));
        assert_eq!(map.host_gid(89_939), Some(RESERVED_BASE + 89_939));
        assert_eq!(
            map.host_uid(u64::from(WIDE_RANGE_LEN) - 1),
            Some(u32::MAX - ROOT_RANGE_LEN)
        );
        assert_eq!(map.host_uid(u64::from(WIDE_RANGE_LEN)), None);
        // The last block (4294967294, 4294967295) is never the build's.
        assert!(
            u64::from(RESERVED_BASE) + u64::from(WIDE_RANGE_LEN) <= u64::from(u32::MAX) - 65535
        );
        // A subordinate line, a user or a group with an id in the span: only a block.
        let high = u64::from(RESERVED_BASE) + 5_000_000;
        for (subuid, subgid, accounts) in [
            (format!("bob:{high}:65536\n"), String::new(), String::new()),
            (String::new(), format!("bob:{high}:65536\n"), String::new()),
            (
                String::new(),
                String::new(),
                format!("svc:x:{high}:100::/:/bin/false\n"),
            ),
            (String::new(), String::new(), format!("svc:x:{high}:\n")),
        ] {
            let range = reserve_range(&subuid, &subgid, &accounts, &initial).unwrap();
            assert_eq!(range.count, ROOT_RANGE_LEN, "{subuid}{subgid}{accounts}");
            assert_eq!(range.uid_start, RESERVED_BASE);
        }
        // A namespace that does not map the span: a block inside it, as before.
        let base = u64::from(RESERVED_BASE);
        let some = format!("0 0 65536\n{base} 1000000 131072\n");
        let range = reserve_range("", "", "", &OwnIds::parse(&some, &some)).unwrap();
        assert_eq!(range.count, ROOT_RANGE_LEN);
    }

    #[test]
    fn a_store_with_the_first_block_grows_to_the_wide_range_and_others_stay() {
        let initial = OwnIds::initial();
        let first = reserve("", "", &initial).unwrap();
        assert_eq!(first.uid_start, RESERVED_BASE);
        let grown = upgrade(first, "", "", "", &initial).unwrap();
        assert_eq!(
            (grown.uid_start, grown.count),
            (RESERVED_BASE, WIDE_RANGE_LEN)
        );
        // Container ids 0..65535 keep their host ids.
        assert_eq!(
            grown.id_map().host_uid(65535),
            first.id_map().host_uid(65535)
        );
        // Another block (container 0 elsewhere), or a span someone holds: kept as is.
        let second = RootRange {
            uid_start: RESERVED_BASE + ROOT_RANGE_LEN,
            gid_start: RESERVED_BASE + ROOT_RANGE_LEN,
            ..first
        };
        assert_eq!(upgrade(second, "", "", "", &initial), None);
        let held = format!("bob:{}:10\n", u64::from(RESERVED_BASE) + 1_000_000);
        assert_eq!(upgrade(first, &held, "", "", &initial), None);
        assert_eq!(upgrade(grown, "", "", "", &initial), None);
        // The wide record reads back; a wide count anywhere else is refused.
        let dir = tempfile::tempdir().unwrap();
        write_record(&dir.path().join(RECORD_FILE), &grown).unwrap();
        let bytes = std::fs::read(dir.path().join(RECORD_FILE)).unwrap();
        assert_eq!(parse_record(&bytes).unwrap(), grown);
        let forged = format!(
            r#"{{"uid_start":{},"gid_start":{RESERVED_BASE},"count":{WIDE_RANGE_LEN},"source":"reserved"}}"#,
            RESERVED_BASE + ROOT_RANGE_LEN
        );
        assert!(parse_record(forged.as_bytes()).is_err());
    }

    #[test]
    fn root_gets_all_the_ids_its_subordinate_lines_give() {
        let range = range_from_subid_files("root:1000000:1000000\n", "root:3000000:2000000\n")
            .unwrap()
            .unwrap();
        assert_eq!((range.uid_start, range.gid_start), (1_000_000, 3_000_000));
        assert_eq!(range.count, 1_000_000);
        assert_eq!(range.id_map().host_uid(491_327), Some(1_491_327));
        let err = range_from_subid_files("root:4294000000:1000000\n", "root:100000:1000000\n")
            .unwrap_err();
        assert!(err.to_string().contains("past the last id"), "{err}");
    }
}
