//! Tar headers built by hand, so that nothing (the tar crate's Builder defaults, the host's
//! user names, atime/ctime) leaks into a layer: ustar headers, with a PAX record before an
//! entry whose name or link target exceeds 100 bytes or that carries xattrs.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

/// Everything written for one entry.
pub(crate) struct TarEntry<'a> {
    /// The entry name; directories end with `/`.
    pub name: Vec<u8>,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    pub link: Option<Vec<u8>>,
    pub device: Option<(u32, u32)>,
    pub xattrs: &'a BTreeMap<String, Vec<u8>>,
}

/// The widest name or link target a ustar header field holds.
const USTAR_NAME_LEN: usize = 100;

/// Appends `entry` (and its PAX record, if needed) with `data` as content.
pub(crate) fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    entry: &TarEntry<'_>,
    data: impl Read,
) -> io::Result<()> {
    let mut pax: Vec<u8> = Vec::new();
    if entry.name.len() > USTAR_NAME_LEN {
        pax_record(&mut pax, "path", &entry.name);
    }
    if let Some(link) = &entry.link {
        if link.len() > USTAR_NAME_LEN {
            pax_record(&mut pax, "linkpath", link);
        }
    }
    for (name, value) in entry.xattrs {
        pax_record(&mut pax, &format!("SCHILY.xattr.{name}"), value);
    }
    if !pax.is_empty() {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::XHeader);
        set_bytes(
            // Cannot fail: the header was made by new_ustar.
            &mut header.as_ustar_mut().expect("ustar").name,
            &pax_name(&entry.name),
        );
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(pax.len() as u64);
        header.set_cksum();
        builder.append(&header, pax.as_slice())?;
    }

    let mut header = tar::Header::new_ustar();
    header.set_entry_type(entry.kind);
    {
        // Cannot fail: the header was made by new_ustar.
        let ustar = header.as_ustar_mut().expect("ustar");
        // A long name is in the PAX record; the field keeps a truncated prefix, as Go does.
        set_bytes(
            &mut ustar.name,
            &entry.name[..entry.name.len().min(USTAR_NAME_LEN)],
        );
        if let Some(link) = &entry.link {
            set_bytes(&mut ustar.linkname, &link[..link.len().min(USTAR_NAME_LEN)]);
        }
    }
    header.set_mode(entry.mode);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(entry.mtime);
    header.set_size(entry.size);
    if let Some((major, minor)) = entry.device {
        header.set_device_major(major)?;
        header.set_device_minor(minor)?;
    }
    header.set_cksum();
    builder.append(&header, data)
}

/// One `"<len> <key>=<value>\n"` record; `len` counts the whole record including itself.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// The name of a PAX header entry: `PaxHeaders.0/<base name>` (like Go's `archive/tar`),
/// truncated to the field. Readers ignore it; it only has to be deterministic.
fn pax_name(entry_name: &[u8]) -> Vec<u8> {
    let trimmed = entry_name.strip_suffix(b"/").unwrap_or(entry_name);
    let base = trimmed.rsplit(|&b| b == b'/').next().unwrap_or(trimmed);
    let mut name = b"PaxHeaders.0/".to_vec();
    name.extend_from_slice(base);
    name.truncate(USTAR_NAME_LEN);
    name
}

fn set_bytes(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    field[..value.len()].copy_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(&mut out, "path", b"abc");
        assert_eq!(out, b"12 path=abc\n");
        let mut out = Vec::new();
        // 3+1+4+1+90+1 = 100 bytes with a 3-digit length: the length digit count grows.
        let value = vec![b'x'; 90];
        pax_record(&mut out, "path", &value);
        let text = String::from_utf8(out.clone()).unwrap();
        let len: usize = text.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(len, out.len());
    }

    #[test]
    fn pax_header_names_are_short_and_deterministic() {
        assert_eq!(pax_name(b"a/b/c/"), b"PaxHeaders.0/c");
        assert!(pax_name(&[b'y'; 300]).len() <= USTAR_NAME_LEN);
    }
}
