//! Bounds on the tar headers of a layer, checked on the stream before the `tar` crate sees
//! it. The `tar` crate reads a GNU long name (`L`), long link (`K`) or PAX extended header
//! (`x`) into memory whole, whatever size its header claims, so one entry claiming
//! gigabytes would exhaust memory. Go's `archive/tar` (containerd, BuildKit, Docker) refuses
//! such members over 1 MiB; so do we, with an error naming the entry.
//!
//! The reader passes every byte through unchanged and follows the archive's structure the
//! way the `tar` crate walks it (`EntriesFields::next_entry_raw`): a header block, then the
//! entry's data rounded up to 512 bytes, where a pending PAX `size` record overrides the
//! header's size and GNU sparse headers may be followed by extension blocks. Anything it
//! cannot follow (a bad checksum, the zero block ending the archive) stops the checks; the
//! `tar` crate then fails or stops at the same place.

use std::io::{self, Read};

use tar::Header;

/// The largest GNU long name, long link or PAX extended header accepted (Go's
/// `archive/tar` `maxSpecialFileSize`).
pub const MAX_SPECIAL_ENTRY_BYTES: u64 = 1 << 20;

const BLOCK: u64 = 512;

enum State {
    /// Collecting a 512-byte header block.
    Header,
    /// Passing `remaining` bytes of data and padding.
    Skip { remaining: u64 },
    /// Collecting `remaining` bytes of PAX records (kept), then `padding` bytes.
    Pax { remaining: u64, padding: u64 },
    /// Collecting GNU sparse extension blocks, then the entry's data (`data` bytes).
    SparseExtension { data: u64 },
    /// The structure ended or cannot be followed: pass everything through.
    Done,
}

/// A reader that refuses oversized special tar members (see the module docs).
pub struct TarBounds<R> {
    inner: R,
    state: State,
    block: Vec<u8>,
    /// The records of a PAX header waiting for the entry they describe.
    pending_pax: Option<Vec<u8>>,
    collecting_pax: Vec<u8>,
}

impl<R: Read> TarBounds<R> {
    pub fn new(inner: R) -> Self {
        TarBounds {
            inner,
            state: State::Header,
            block: Vec::with_capacity(BLOCK as usize),
            pending_pax: None,
            collecting_pax: Vec::new(),
        }
    }

    /// Follows the structure over `bytes`, which were just read.
    fn observe(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Skip { remaining } => {
                    let n = (*remaining).min(bytes.len() as u64) as usize;
                    *remaining -= n as u64;
                    bytes = &bytes[n..];
                    if *remaining == 0 {
                        self.state = State::Header;
                    }
                }
                State::Pax { remaining, padding } => {
                    let n = (*remaining).min(bytes.len() as u64) as usize;
                    self.collecting_pax.extend_from_slice(&bytes[..n]);
                    *remaining -= n as u64;
                    bytes = &bytes[n..];
                    if *remaining == 0 {
                        self.pending_pax = Some(std::mem::take(&mut self.collecting_pax));
                        self.state = if *padding == 0 {
                            State::Header
                        } else {
                            State::Skip {
                                remaining: *padding,
                            }
                        };
                    }
                }
                State::Header | State::SparseExtension { .. } => {
                    let want = BLOCK as usize - self.block.len();
                    let n = want.min(bytes.len());
                    self.block.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if self.block.len() == BLOCK as usize {
                        let block = std::mem::take(&mut self.block);
                        self.block.reserve(BLOCK as usize);
                        self.state = match self.state {
                            State::SparseExtension { data } => sparse_extension(&block, data),
                            _ => self.header(&block)?,
                        };
                    }
                }
            }
        }
        Ok(())
    }

    /// What follows the header `block`.
    fn header(&mut self, block: &[u8]) -> io::Result<State> {
        if block.iter().all(|&b| b == 0) {
            return Ok(State::Done);
        }
        let header = Header::from_byte_slice(block);
        let sum: u32 = block[..148]
            .iter()
            .chain(&block[156..])
            .map(|&b| u32::from(b))
            .sum::<u32>()
            + 8 * 32;
        if header.cksum().ok() != Some(sum) {
            return Ok(State::Done);
        }
        let kind = header.entry_type();
        let is_extension = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        let Ok(mut size) = header.entry_size() else {
            return Ok(State::Done);
        };
        if !is_extension {
            if let Some(pax_size) = self.pending_pax.as_deref().and_then(pax_size) {
                size = pax_size;
            }
        }
        let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
        let special = if kind.is_gnu_longname() {
            Some("GNU long name")
        } else if kind.is_gnu_longlink() {
            Some("GNU long link name")
        } else if kind.is_pax_local_extensions() {
            Some("PAX extended header")
        } else {
            None
        };
        let padded = |size: u64| -> io::Result<u64> {
            size.checked_add(BLOCK - 1)
                .map(|s| s & !(BLOCK - 1))
                .ok_or_else(|| invalid("an entry size overflows"))
        };
        if let (true, Some(what)) = (recognized, special) {
            if size > MAX_SPECIAL_ENTRY_BYTES {
                let name = String::from_utf8_lossy(&header.path_bytes()).into_owned();
                return Err(invalid(&format!(
                    "tar member {name:?}: a {what} of {size} bytes is larger than the limit \
                     of {MAX_SPECIAL_ENTRY_BYTES} bytes"
                )));
            }
            if kind.is_pax_local_extensions() {
                self.collecting_pax.clear();
                let padding = padded(size)? - size;
                if size == 0 {
                    self.pending_pax = Some(Vec::new());
                    return Ok(skip(padding));
                }
                return Ok(State::Pax {
                    remaining: size,
                    padding,
                });
            }
            return Ok(skip(padded(size)?));
        }
        // The entry the pending headers describe: they are used up.
        self.pending_pax = None;
        if kind.is_gnu_sparse() && header.as_gnu().is_some_and(|gnu| gnu.is_extended()) {
            return Ok(State::SparseExtension {
                data: padded(size)?,
            });
        }
        Ok(skip(padded(size)?))
    }
}

fn skip(remaining: u64) -> State {
    if remaining == 0 {
        State::Header
    } else {
        State::Skip { remaining }
    }
}

/// After a GNU sparse extension block: another one if it says so, else the data.
fn sparse_extension(block: &[u8], data: u64) -> State {
    // `isextended` is byte 504 of an extension block.
    if block[504] != 0 {
        State::SparseExtension { data }
    } else {
        skip(data)
    }
}

/// The first `size` record of PAX records, as the `tar` crate reads it (a malformed record
/// before it, or a value that is not a number, means none).
fn pax_size(records: &[u8]) -> Option<u64> {
    for record in tar::PaxExtensions::new(records) {
        let record = record.ok()?;
        if record.key() != Ok("size") {
            continue;
        }
        return record.value().ok()?.parse().ok();
    }
    None
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

impl<R: Read> Read for TarBounds<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_through(bytes: &[u8], chunk: usize) -> io::Result<()> {
        let mut reader = TarBounds::new(bytes);
        let mut buf = vec![0u8; chunk];
        while reader.read(&mut buf)? != 0 {}
        Ok(())
    }

    /// An archive exercising every structure the reader follows, then an entry whose long
    /// name is just over the limit: the reader must still be in step to catch it.
    #[test]
    fn follows_pax_sizes_long_names_and_sparse_extensions() {
        let mut builder = tar::Builder::new(Vec::new());
        // A long name within the limit (GNU `L`) and a long link.
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, "d/".repeat(300) + "f", "t/".repeat(300) + "x")
            .unwrap();
        // A PAX header whose size record overrides the (wrong) header size of the entry.
        let mut pax = Vec::new();
        let record = |key: &str, value: &str| {
            let body = format!(" {key}={value}\n");
            let mut len = body.len() + 1;
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            format!("{len}{body}")
        };
        pax.extend_from_slice(record("path", "pax/name").as_bytes());
        pax.extend_from_slice(record("size", "700").as_bytes());
        let mut pax_header = tar::Header::new_ustar();
        pax_header.set_entry_type(tar::EntryType::XHeader);
        pax_header.set_size(pax.len() as u64);
        pax_header.set_cksum();
        builder.append(&pax_header, &pax[..]).unwrap();
        let mut file = tar::Header::new_ustar();
        file.set_entry_type(tar::EntryType::Regular);
        file.set_path("short").unwrap();
        file.set_size(3); // overridden by the PAX record: 700 bytes follow
        file.set_cksum();
        let mut raw = builder.into_inner().unwrap();
        // `into_inner` wrote the end-of-archive blocks: drop them to go on by hand.
        raw.truncate(raw.len() - 1024);
        raw.extend_from_slice(file.as_bytes());
        raw.extend_from_slice(&[b'z'; 700]);
        raw.resize(raw.len().div_ceil(512) * 512, 0);
        // A GNU sparse entry with one extension block.
        let mut sparse = tar::Header::new_gnu();
        sparse.set_entry_type(tar::EntryType::GNUSparse);
        sparse.set_path("sparse").unwrap();
        sparse.set_size(512);
        if let Some(gnu) = sparse.as_gnu_mut() {
            gnu.isextended[0] = 1;
        }
        sparse.set_cksum();
        raw.extend_from_slice(sparse.as_bytes());
        raw.extend_from_slice(&[0u8; 512]); // extension block, not extended further
        raw.extend_from_slice(&[b's'; 512]);
        // A long name one byte over the limit.
        let mut long = tar::Header::new_gnu();
        long.set_entry_type(tar::EntryType::GNULongName);
        long.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        long.set_size(MAX_SPECIAL_ENTRY_BYTES + 1);
        long.set_cksum();
        let before_long = raw.len();
        raw.extend_from_slice(long.as_bytes());
        for chunk in [1, 7, 512, 4096] {
            read_through(&raw[..before_long], chunk).unwrap();
            let err = read_through(&raw, chunk).unwrap_err();
            assert!(
                err.to_string().contains("GNU long name of 1048577 bytes"),
                "chunk {chunk}: {err}"
            );
        }
    }

    #[test]
    fn an_oversized_pax_header_is_refused() {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::XHeader);
        header.set_path("PaxHeaders/x").unwrap();
        header.set_size(6 << 20);
        header.set_cksum();
        let err = read_through(header.as_bytes(), 512).unwrap_err();
        assert!(
            err.to_string()
                .contains("PAX extended header of 6291456 bytes is larger than the limit"),
            "{err}"
        );
    }
}
