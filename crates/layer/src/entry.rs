//! What a tar entry says, gathered in one place from its header and PAX records: shared by
//! the applier and by [`list_entries`](crate::list_entries).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use crate::error::{show, Error, IoContext, Result};

/// The kind of a layer entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    CharDevice,
    BlockDevice,
    Fifo,
}

/// The metadata of one layer entry (its content is not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// The name as stored (long names and PAX `path` resolved), not normalised.
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    /// Seconds since the epoch (PAX `mtime` if present, else the header field).
    pub mtime: i64,
    /// Nanoseconds of a PAX `mtime`, 0 otherwise.
    pub mtime_nanos: u32,
    /// Symlink target or hardlink target.
    pub link_target: Option<PathBuf>,
    /// `(major, minor)` of device nodes.
    pub device: Option<(u32, u32)>,
    /// Extended attributes from PAX `SCHILY.xattr.*` records.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl EntryInfo {
    /// Reads the metadata of `entry`. Entries of kinds a layer must not contain (GNU sparse,
    /// unknown types) are an error naming the entry.
    pub(crate) fn from_entry<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<EntryInfo> {
        use std::os::unix::ffi::OsStrExt;

        let path_bytes = entry.path_bytes().into_owned();
        let shown = show(&path_bytes);
        let header = entry.header();
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink,
            tar::EntryType::Link => EntryKind::Hardlink,
            tar::EntryType::Char => EntryKind::CharDevice,
            tar::EntryType::Block => EntryKind::BlockDevice,
            tar::EntryType::Fifo => EntryKind::Fifo,
            other => {
                return Err(Error::Unsupported {
                    entry: shown,
                    reason: format!("tar entry type {:?} (byte {})", other, other.as_byte()),
                })
            }
        };
        // A field left blank (all NUL or spaces) reads as 0, as Go's archive/tar does.
        let field = |what: &str, raw: &[u8], r: std::io::Result<u64>| match r {
            Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
            r => r.ctx(|| format!("reading the {what} field of layer entry {shown:?}")),
        };
        let old = header.as_old();
        let mode = field("mode", &old.mode, header.mode().map(u64::from))? as u32 & 0o7777;
        let mut uid = field("uid", &old.uid, header.uid())?;
        let mut gid = field("gid", &old.gid, header.gid())?;
        let size = entry.size();
        let mut mtime = field("mtime", &old.mtime, header.mtime())? as i64;
        let mut mtime_nanos = 0u32;
        let device = match kind {
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                let major = header.device_major();
                let minor = header.device_minor();
                let major = major.ctx(|| format!("reading the device major of {shown:?}"))?;
                let minor = minor.ctx(|| format!("reading the device minor of {shown:?}"))?;
                Some((major.unwrap_or(0), minor.unwrap_or(0)))
            }
            _ => None,
        };
        let link_target = entry
            .link_name_bytes()
            .filter(|_| matches!(kind, EntryKind::Symlink | EntryKind::Hardlink))
            .map(|b| PathBuf::from(std::ffi::OsStr::from_bytes(&b)));

        let mut xattrs = BTreeMap::new();
        if let Some(extensions) = entry
            .pax_extensions()
            .ctx(|| format!("reading PAX records of {shown:?}"))?
        {
            for ext in extensions {
                let ext = ext.ctx(|| format!("reading PAX records of {shown:?}"))?;
                let Ok(key) = ext.key() else { continue };
                let value = ext.value_bytes();
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(name.to_string(), value.to_vec());
                    continue;
                }
                let text = std::str::from_utf8(value).unwrap_or("");
                match key {
                    "uid" => uid = parse_pax_number(&shown, key, text)?,
                    "gid" => gid = parse_pax_number(&shown, key, text)?,
                    "mtime" => (mtime, mtime_nanos) = parse_pax_time(&shown, text)?,
                    _ => {}
                }
            }
        }
        Ok(EntryInfo {
            path: PathBuf::from(std::ffi::OsStr::from_bytes(&path_bytes)),
            kind,
            mode,
            uid,
            gid,
            size,
            mtime,
            mtime_nanos,
            link_target,
            device,
            xattrs,
        })
    }
}

fn parse_pax_number(entry: &str, key: &str, text: &str) -> Result<u64> {
    text.parse().map_err(|_| Error::UnsafeEntry {
        entry: entry.to_string(),
        reason: format!("PAX {key} {text:?} is not a number"),
    })
}

/// PAX times are decimal seconds with an optional fraction (`1700000000.123456789`).
fn parse_pax_time(entry: &str, text: &str) -> Result<(i64, u32)> {
    let bad = || Error::UnsafeEntry {
        entry: entry.to_string(),
        reason: format!("PAX mtime {text:?} is not a time"),
    };
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let mut nanos: u32 = digits.parse().map_err(|_| bad())?;
    // A negative time with a fraction counts back from the whole second below it.
    if text.starts_with('-') && nanos > 0 {
        return Ok((secs - 1, 1_000_000_000 - nanos));
    }
    if frac.is_empty() {
        nanos = 0;
    }
    Ok((secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_parse_with_and_without_fractions() {
        assert_eq!(
            parse_pax_time("e", "1700000000").unwrap(),
            (1_700_000_000, 0)
        );
        assert_eq!(parse_pax_time("e", "12.5").unwrap(), (12, 500_000_000));
        assert_eq!(parse_pax_time("e", "-1.25").unwrap(), (-2, 750_000_000));
        assert!(parse_pax_time("e", "x").is_err());
        assert!(parse_pax_time("e", "1.2x").is_err());
    }
}
