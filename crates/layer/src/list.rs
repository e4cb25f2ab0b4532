//! Listing a layer's entries (for tests, diffing and debugging).

use std::io::Read;

use crate::compression::decompressing_reader;
use crate::entry::EntryInfo;
use crate::error::{IoContext, Result};

/// The metadata of every entry of a layer (gzip, zstd or plain tar), in tar order. Content is
/// streamed past, never held.
pub fn list_entries<R: Read>(reader: R) -> Result<Vec<EntryInfo>> {
    let reader = decompressing_reader(reader).ctx(|| "reading the layer's first bytes".into())?;
    let mut archive = tar::Archive::new(crate::TarBounds::new(reader));
    let mut infos = Vec::new();
    for entry in archive.entries().ctx(|| "reading the layer tar".into())? {
        let mut entry = entry.ctx(|| "reading the next layer tar entry".into())?;
        infos.push(EntryInfo::from_entry(&mut entry)?);
    }
    Ok(infos)
}
