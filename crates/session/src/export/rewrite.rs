//! `-o …,rewrite-timestamp=true`: the layers a build made, with every entry's time later
//! than the epoch set to the epoch, as BuildKit's image exporter does
//! (`exporter/containerimage/writer.go`, `rewriteRemoteWithEpoch`, and
//! `util/converter`, `rewriteTimestampInTarHeader`): the modification, access and change
//! times of each tar header (`if hdr.ModTime.After(epoch) { hdr.ModTime = epoch }`, the same
//! for `AccessTime` and `ChangeTime`), in the ustar fields, GNU's atime/ctime fields and PAX
//! records. Every such layer, changed or not, is annotated
//! `buildkit/rewritten-timestamp: <epoch>` in the manifest; the leading layers the build did
//! not make (the base image's: BuildKit's "immutable diffID") are left as they are.
//!
//! A layer whose bytes change is a new plain layer with its own diff id (compressed when it
//! leaves the machine, like any build layer); the stored image of the build is not touched:
//! the output gets a new manifest (and a new config only when a diff id changed), stored as
//! blobs leased for the life of the `Store`, not listed as an image.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use rbuild_image::{media_types, Descriptor, Digest, Manifest};
use rbuild_store::{ImageRecord, Store};

use super::ExportError;

/// The annotation BuildKit puts on each layer descriptor it rewrote: the epoch in seconds.
pub const REWRITTEN_TIMESTAMP: &str = "buildkit/rewritten-timestamp";

const BLOCK: usize = 512;
/// A PAX extended header larger than this is refused: real ones hold a few paths and
/// xattrs, and the whole header is read into memory to be rewritten.
const MAX_PAX_HEADER: u64 = 16 << 20;

/// `record` with the timestamps of the layers `build_layers` (the diff ids this build's
/// steps made) rewritten to `epoch`, from the first such layer on; the layers before it are
/// the base's and stay as they are. The new manifest (and config, when a layer's bytes
/// changed) is stored untagged; the record returned names it.
pub fn rewrite_image_timestamps(
    store: &Store,
    record: &ImageRecord,
    epoch: i64,
    build_layers: &HashSet<Digest>,
) -> Result<ImageRecord, ExportError> {
    if media_types::is_index(&record.manifest.media_type) {
        return Err(ExportError::Attribute {
            key: "rewrite-timestamp".into(),
            reason: format!(
                "the image {} is an index; rbuild rewrites single-platform images",
                record.manifest.digest
            ),
        });
    }
    let mut manifest: Manifest = store.read_manifest(&record.manifest.digest)?;
    let mut config = store.read_config(&manifest.config.digest)?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(ExportError::Attribute {
            key: "rewrite-timestamp".into(),
            reason: format!(
                "manifest {} lists {} layers but its config {} diff ids",
                record.manifest.digest,
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        });
    }
    let annotation = epoch.to_string();
    let mut diverged = false;
    let mut config_changed = false;
    for (layer, diff_id) in manifest
        .layers
        .iter_mut()
        .zip(config.rootfs.diff_ids.iter_mut())
    {
        diverged = diverged || build_layers.contains(diff_id);
        if !diverged {
            continue;
        }
        if let Some(rewritten) = rewrite_stored_layer(store, layer, diff_id, epoch)? {
            *diff_id = rewritten.digest.clone();
            let annotations = std::mem::take(&mut layer.annotations);
            *layer = rewritten;
            layer.annotations = annotations;
            config_changed = true;
        }
        layer
            .annotations
            .insert(REWRITTEN_TIMESTAMP.to_string(), annotation.clone());
    }
    if !diverged {
        return Ok(record.clone());
    }
    if config_changed {
        let bytes = config
            .to_canonical_json()
            .map_err(|e| ExportError::Attribute {
                key: "rewrite-timestamp".into(),
                reason: format!("encoding the rewritten image config: {e}"),
            })?;
        let blob = store.put_bytes(&bytes, None)?;
        store.protect(&blob.digest)?;
        manifest.config.digest = blob.digest;
        manifest.config.size = blob.size;
    }
    // Stored as a blob, leased for the life of this `Store` and not listed as an image (like
    // a shipped manifest): the store's image stays the build's.
    let bytes = manifest
        .to_canonical_json()
        .map_err(|e| ExportError::Attribute {
            key: "rewrite-timestamp".into(),
            reason: format!("encoding the rewritten manifest: {e}"),
        })?;
    let blob = store.put_bytes(&bytes, None)?;
    store.protect(&blob.digest)?;
    let mut descriptor = blob.descriptor(&record.manifest.media_type);
    descriptor.platform = record.manifest.platform.clone();
    Ok(ImageRecord {
        manifest: descriptor.clone(),
        image_manifest: descriptor,
        config: manifest.config.digest.clone(),
        names: Vec::new(),
    })
}

/// The rewritten blob of one stored layer (a plain tar whose digest is its diff id), or
/// `None` when no time in it is later than `epoch` (the layers rbuild writes under an epoch
/// are already clamped to it, so this is the usual answer). Read once to check, and again
/// to write only when something changes.
fn rewrite_stored_layer(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    epoch: i64,
) -> Result<Option<Descriptor>, ExportError> {
    let failed = |reason: String| ExportError::Rewrite {
        layer: diff_id.clone(),
        reason,
    };
    let open = || -> Result<Box<dyn Read + '_>, ExportError> {
        let blob = io::BufReader::new(store.open_blob(&layer.digest)?);
        rbuild_layer::compression::decompressing_reader(blob).map_err(|e| failed(e.to_string()))
    };
    let changed =
        rewrite_layer_timestamps(open()?, io::sink(), epoch).map_err(|e| failed(e.to_string()))?;
    if !changed {
        return Ok(None);
    }
    let mut writer = io::BufWriter::new(store.blob_writer()?);
    rewrite_layer_timestamps(open()?, &mut writer, epoch).map_err(|e| failed(e.to_string()))?;
    let writer = writer
        .into_inner()
        .map_err(|e| failed(e.into_error().to_string()))?;
    let blob = writer.commit(None)?;
    store.protect(&blob.digest)?;
    // A plain layer of this build: compressed when it leaves the machine, under its own
    // diff id (never the one it was rewritten from).
    store.mark_lazy_layer(&blob.digest)?;
    Ok(Some(blob.descriptor(media_types::OCI_LAYER_TAR)))
}

/// Copies the tar stream `input` to `output` with every time later than `epoch` (seconds)
/// set to `epoch`: each header's mtime, GNU atime and ctime, and PAX `mtime`, `atime` and
/// `ctime` records. File contents are copied as they are. Whether anything changed.
/// Input that is not a tar stream (a bad header checksum, a bad number, a truncated entry,
/// a malformed PAX record) is an error.
pub fn rewrite_layer_timestamps(
    mut input: impl Read,
    mut output: impl Write,
    epoch: i64,
) -> io::Result<bool> {
    if epoch < 0 {
        return Err(invalid(format!("the epoch {epoch} is before 1970")));
    }
    let mut changed = false;
    let mut offset: u64 = 0;
    let mut header = [0u8; BLOCK];
    loop {
        if !read_block(&mut input, &mut header)? {
            break;
        }
        if header.iter().all(|&b| b == 0) {
            // The end-of-archive blocks, and whatever padding follows them.
            output.write_all(&header)?;
            io::copy(&mut input, &mut output)?;
            break;
        }
        check_checksum(&header, offset)?;
        let size = read_number(&header[124..136])
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| invalid(format!("the tar header at byte {offset} has a bad size")))?;
        let mut header_changed = clamp_field(&mut header[136..148], epoch, offset)?;
        if &header[257..265] == b"ustar  \0" {
            // GNU's format keeps atime and ctime where ustar has the name prefix.
            header_changed |= clamp_field(&mut header[345..357], epoch, offset)?;
            header_changed |= clamp_field(&mut header[357..369], epoch, offset)?;
        }
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        if matches!(header[156], b'x' | b'g') {
            if size > MAX_PAX_HEADER {
                return Err(invalid(format!(
                    "the PAX header at byte {offset} is {size} bytes (more than {MAX_PAX_HEADER})"
                )));
            }
            let mut data = vec![0u8; padded as usize];
            input.read_exact(&mut data).map_err(truncated(offset))?;
            data.truncate(size as usize);
            if let Some(records) = clamp_pax_records(&data, epoch, offset)? {
                data = records;
                write_number(&mut header[124..136], data.len() as i64);
                header_changed = true;
            }
            if header_changed {
                write_checksum(&mut header);
                changed = true;
            }
            output.write_all(&header)?;
            output.write_all(&data)?;
            let pad = data.len().div_ceil(BLOCK) * BLOCK - data.len();
            output.write_all(&[0u8; BLOCK][..pad])?;
            offset += BLOCK as u64 + padded;
            continue;
        }
        if header_changed {
            write_checksum(&mut header);
            changed = true;
        }
        output.write_all(&header)?;
        let copied = io::copy(&mut (&mut input).take(padded), &mut output)?;
        if copied != padded {
            return Err(truncated(offset)(io::ErrorKind::UnexpectedEof.into()));
        }
        offset += BLOCK as u64 + padded;
    }
    output.flush()?;
    Ok(changed)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn truncated(offset: u64) -> impl Fn(io::Error) -> io::Error {
    move |e| invalid(format!("the tar entry at byte {offset} is cut short: {e}"))
}

/// One block; `false` at a clean end of the stream (a tar without end blocks).
fn read_block(input: &mut impl Read, block: &mut [u8; BLOCK]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < BLOCK {
        match input.read(&mut block[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(invalid("the tar stream ends inside a header".into())),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The header checksum: the sum of its bytes with the checksum field read as spaces
/// (unsigned, or signed as some old writers summed).
fn checksums(header: &[u8; BLOCK]) -> (i64, i64) {
    let mut unsigned = 0i64;
    let mut signed = 0i64;
    for (i, &b) in header.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    (unsigned, signed)
}

fn check_checksum(header: &[u8; BLOCK], offset: u64) -> io::Result<()> {
    let recorded = read_number(&header[148..156]);
    let (unsigned, signed) = checksums(header);
    if recorded == Some(unsigned) || recorded == Some(signed) {
        Ok(())
    } else {
        Err(invalid(format!(
            "the tar header at byte {offset} has a bad checksum (not a tar stream?)"
        )))
    }
}

fn write_checksum(header: &mut [u8; BLOCK]) {
    let (unsigned, _) = checksums(header);
    let text = format!("{unsigned:06o}\0 ");
    header[148..156].copy_from_slice(text.as_bytes());
}

/// A numeric header field: octal digits (NUL or space padded; empty is 0) or GNU's
/// base-256 (the high bit of the first byte set). `None` when it is neither.
fn read_number(field: &[u8]) -> Option<i64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let negative = field[0] & 0x40 != 0;
        let mut value: i128 = if negative { -1 } else { 0 };
        for (i, &b) in field.iter().enumerate() {
            let b = if i == 0 { b & 0x7f } else { b };
            let b = if i == 0 && negative { b | 0x80 } else { b };
            value = (value << 8) | i128::from(b);
            if value > i128::from(i64::MAX) || value < i128::from(i64::MIN) {
                return None;
            }
        }
        return i64::try_from(value).ok();
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    i64::from_str_radix(text, 8).ok()
}

/// Writes `value` (not negative) into a numeric field: octal when it fits, else base-256.
fn write_number(field: &mut [u8], value: i64) {
    let digits = field.len() - 1;
    let octal = format!("{value:0digits$o}");
    if octal.len() <= digits {
        field[..digits].copy_from_slice(octal.as_bytes());
        field[digits] = 0;
        return;
    }
    let bytes = value.to_be_bytes();
    field.fill(0);
    let n = field.len();
    field[n - bytes.len()..].copy_from_slice(&bytes);
    field[0] |= 0x80;
}

/// Sets a time field later than `epoch` to `epoch`; whether it did.
fn clamp_field(field: &mut [u8], epoch: i64, offset: u64) -> io::Result<bool> {
    let time = read_number(field)
        .ok_or_else(|| invalid(format!("the tar header at byte {offset} has a bad time")))?;
    if time > epoch {
        write_number(field, epoch);
        return Ok(true);
    }
    Ok(false)
}

/// PAX records (`LEN KEY=VALUE\n`) with `mtime`, `atime` and `ctime` values later than
/// `epoch` set to it; `None` when none is.
fn clamp_pax_records(data: &[u8], epoch: i64, offset: u64) -> io::Result<Option<Vec<u8>>> {
    let bad = || {
        invalid(format!(
            "the PAX header at byte {offset} has a malformed record"
        ))
    };
    let mut out = Vec::with_capacity(data.len());
    let mut changed = false;
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &rest[space + 1..len - 1];
        rest = &rest[len..];
        let (key, value) = match record.iter().position(|&b| b == b'=') {
            Some(eq) => (&record[..eq], &record[eq + 1..]),
            None => return Err(bad()),
        };
        if matches!(key, b"mtime" | b"atime" | b"ctime") && pax_time_after(value, epoch) {
            let key = std::str::from_utf8(key).map_err(|_| bad())?;
            out.extend_from_slice(&pax_record(key, &epoch.to_string()));
            changed = true;
        } else {
            out.extend_from_slice(&data[data.len() - rest.len() - len..data.len() - rest.len()]);
        }
    }
    Ok(changed.then_some(out))
}

/// Whether a PAX time (`SECONDS[.FRACTION]`, maybe negative) is later than `epoch` (not
/// negative). A value that is not a number is left alone, as it is not a time to clamp.
fn pax_time_after(value: &[u8], epoch: i64) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    if text.starts_with('-') {
        return false;
    }
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    match seconds.parse::<i64>() {
        Ok(s) => s > epoch || (s == epoch && fraction.bytes().any(|b| b != b'0')),
        // More digits than an i64 holds: later than any epoch.
        Err(_) => !seconds.is_empty() && seconds.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// One PAX record; its length counts its own digits.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + body.to_string().len();
    if len.to_string().len() + body != len {
        len = body + len.to_string().len();
    }
    format!("{len} {key}={value}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(builder: &mut tar::Builder<Vec<u8>>, path: &str, mtime: u64, data: &[u8]) {
        let mut header = tar::Header::new_ustar();
        header.set_path(path).unwrap();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_mtime(mtime);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }

    fn times(archive: &[u8]) -> Vec<(String, u64, Vec<u8>)> {
        let mut archive = tar::Archive::new(archive);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().display().to_string();
                let mtime = e.header().mtime().unwrap();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, mtime, data)
            })
            .collect()
    }

    #[test]
    fn later_mtimes_become_the_epoch_and_earlier_ones_stay() {
        let mut builder = tar::Builder::new(Vec::new());
        entry(&mut builder, "old", 100, b"kept");
        entry(&mut builder, "new", 2_000_000_000, b"clamped");
        entry(&mut builder, "same", 1_000, b"");
        let original = builder.into_inner().unwrap();
        let mut out = Vec::new();
        assert!(rewrite_layer_timestamps(&original[..], &mut out, 1_000).unwrap());
        assert_eq!(
            times(&out),
            vec![
                ("old".to_string(), 100, b"kept".to_vec()),
                ("new".to_string(), 1_000, b"clamped".to_vec()),
                ("same".to_string(), 1_000, Vec::new()),
            ]
        );
        assert_eq!(out.len(), original.len());
        // Nothing later than the epoch: the same bytes, and "unchanged".
        let mut again = Vec::new();
        assert!(!rewrite_layer_timestamps(&out[..], &mut again, 1_000).unwrap());
        assert_eq!(again, out);
    }

    #[test]
    fn pax_times_are_clamped_and_record_lengths_recomputed() {
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_pax_extensions([
                ("mtime", b"1999999999.123456789".as_slice()),
                ("atime", b"5.5".as_slice()),
                ("ctime", b"1000.000".as_slice()),
                ("SCHILY.xattr.user.k", b"v".as_slice()),
            ])
            .unwrap();
        entry(&mut builder, "f", 1_999_999_999, b"x");
        let original = builder.into_inner().unwrap();
        let mut out = Vec::new();
        assert!(rewrite_layer_timestamps(&original[..], &mut out, 1_000).unwrap());
        let mut archive = tar::Archive::new(&out[..]);
        let mut entries = archive.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        let pax: Vec<(String, String)> = e
            .pax_extensions()
            .unwrap()
            .unwrap()
            .map(|x| {
                let x = x.unwrap();
                (x.key().unwrap().to_string(), x.value().unwrap().to_string())
            })
            .collect();
        assert_eq!(
            pax,
            vec![
                ("mtime".to_string(), "1000".to_string()),
                ("atime".to_string(), "5.5".to_string()),
                ("ctime".to_string(), "1000.000".to_string()),
                ("SCHILY.xattr.user.k".to_string(), "v".to_string()),
            ]
        );
        assert_eq!(e.header().mtime().unwrap(), 1_000);
        let mut data = String::new();
        e.read_to_string(&mut data).unwrap();
        assert_eq!(data, "x");
    }

    #[test]
    fn a_stream_that_is_not_a_tar_is_an_error() {
        let mut builder = tar::Builder::new(Vec::new());
        entry(&mut builder, "f", 2_000, b"data");
        let mut bad = builder.into_inner().unwrap();
        bad[0] ^= 1; // the name changes, the checksum no longer matches
        let err = rewrite_layer_timestamps(&bad[..], io::sink(), 1_000).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        // A PAX header whose record claims more bytes than it has.
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::XHeader);
        header.set_path("pax").unwrap();
        let record = b"99 mtime=5\n";
        header.set_size(record.len() as u64);
        header.set_cksum();
        builder.append(&header, &record[..]).unwrap();
        let archive = builder.into_inner().unwrap();
        let err = rewrite_layer_timestamps(&archive[..], io::sink(), 1_000).unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
        // Cut inside an entry's data.
        let mut builder = tar::Builder::new(Vec::new());
        entry(&mut builder, "f", 2_000, &[7u8; 2000]);
        let archive = builder.into_inner().unwrap();
        let err = rewrite_layer_timestamps(&archive[..1024], io::sink(), 1_000).unwrap_err();
        assert!(err.to_string().contains("cut short"), "{err}");
    }

    fn layer(store: &Store, path: &str, mtime: u64) -> (Descriptor, Digest) {
        let mut builder = tar::Builder::new(Vec::new());
        entry(&mut builder, path, mtime, path.as_bytes());
        let bytes = builder.into_inner().unwrap();
        let blob = store.put_bytes(&bytes, None).unwrap();
        store.mark_lazy_layer(&blob.digest).unwrap();
        (blob.descriptor(media_types::OCI_LAYER_TAR), blob.digest)
    }

    /// A base layer (not made by the build) keeps its bytes and gets no annotation even
    /// with times past the epoch; the build's layers are annotated; the one whose time is
    /// past the epoch becomes a new layer under its own diff id, which is what ships
    /// (compressed from the rewritten plain blob, never from the original).
    #[test]
    fn build_layers_are_rewritten_and_annotated_and_the_base_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let epoch = 1_000_000;
        let (base, base_id) = layer(&store, "base", 2_000_000);
        let (clamped, clamped_id) = layer(&store, "clamped", 500);
        let (late, late_id) = layer(&store, "late", 2_000_000);
        let config = rbuild_image::ImageConfig::from_slice(
            format!(
                r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{base_id}","{clamped_id}","{late_id}"]}}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let record = store
            .put_image(&config, &[base.clone(), clamped.clone(), late.clone()])
            .unwrap();
        let build_layers: HashSet<Digest> = [clamped_id.clone(), late_id.clone()].into();

        let rewritten = rewrite_image_timestamps(&store, &record, epoch, &build_layers).unwrap();
        assert_ne!(rewritten.manifest.digest, record.manifest.digest);
        let manifest: Manifest = store.read_manifest(&rewritten.manifest.digest).unwrap();
        let config = store.read_config(&rewritten.config).unwrap();
        assert_eq!(manifest.layers[0], base, "the base layer is untouched");
        assert_eq!(
            manifest.layers[1].digest, clamped.digest,
            "nothing past the epoch"
        );
        assert_ne!(manifest.layers[2].digest, late.digest);
        let annotations: Vec<Option<&String>> = manifest
            .layers
            .iter()
            .map(|l| l.annotations.get(REWRITTEN_TIMESTAMP))
            .collect();
        let expected = epoch.to_string();
        assert_eq!(annotations, vec![None, Some(&expected), Some(&expected)]);
        let new_id = config.rootfs.diff_ids[2].clone();
        assert_eq!(
            manifest.layers[2].digest, new_id,
            "a plain layer: blob = diff id"
        );
        assert_eq!(&config.rootfs.diff_ids[..2], &[base_id, clamped_id]);
        let bytes = store.read_blob(&new_id).unwrap();
        assert_eq!(times(&bytes)[0].1, epoch as u64);

        // Shipped gzip-compressed: the rewritten layer's blob decompresses to the new diff
        // id (the original's compression is not taken for it), the annotation stays.
        let options = rbuild_layer::WriteOptions::default();
        let shipped = store.shipped_record(&rewritten, &options).unwrap();
        let shipped: Manifest = store.read_manifest(&shipped.manifest.digest).unwrap();
        let blob = store.read_blob(&shipped.layers[2].digest).unwrap();
        let mut plain = Vec::new();
        rbuild_layer::compression::decompressing_reader(&blob[..])
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(Digest::of(&plain), new_id);
        assert_eq!(
            shipped.layers[2].annotations.get(REWRITTEN_TIMESTAMP),
            Some(&expected)
        );

        // The store lists the build's image alone, not the rewritten one.
        let listed: Vec<Digest> = store
            .list_images()
            .unwrap()
            .into_iter()
            .map(|i| i.manifest_digest)
            .collect();
        assert_eq!(listed, vec![record.manifest.digest.clone()]);

        // No layer of the build in the image: the record as it is.
        let unchanged = rewrite_image_timestamps(&store, &record, epoch, &HashSet::new()).unwrap();
        assert_eq!(unchanged, record);
    }

    #[test]
    fn base_256_times_are_read_and_large_epochs_written() {
        let mut field = [0u8; 12];
        write_number(&mut field, 0o77777777777 + 1);
        assert_eq!(field[0] & 0x80, 0x80);
        assert_eq!(read_number(&field), Some(0o77777777777 + 1));
        write_number(&mut field, 1_700_000_000);
        assert_eq!(read_number(&field), Some(1_700_000_000));
        assert_eq!(&field[..], b"14524770400\0");
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        for value in ["1", "12345", &"9".repeat(95)] {
            let record = pax_record("mtime", value);
            let (len, _) = std::str::from_utf8(&record)
                .unwrap()
                .split_once(' ')
                .unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), record.len(), "{value}");
        }
    }
}
