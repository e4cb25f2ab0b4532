//! Writing a deterministic, compressed layer from a change set, computing its diff id,
//! digest and size in the same single streaming pass:
//!
//! `tar → tee(sha256 = diff id) → gzip | zstd | none → tee(sha256 = digest, size) → out`

mod fused;
mod header;
mod pipe;
mod plan;
mod recorded;
mod source;
mod stored;
mod tee;
mod timing;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use gzp::par::compress::ParCompressBuilder;
use rbuild_image::Digest;
use rustix::fs::{FileType, Mode, OFlags};

use crate::change::Change;
use crate::compression::Compression;
use crate::error::{Error, IoContext, Result};
use crate::idmap::IdMap;
use crate::path::{open_dir_in_root, ParentSymlinks};
use header::TarEntry;
use plan::{Opaque, Planned};
pub use recorded::{RecordedDevice, RecordedDeviceKind, RecordedInodes};
use stored::GzipStoringIncompressible;
use tee::HashingWriter;
pub use timing::compress_time;

/// How to write a layer.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub compression: Compression,
    /// Compression level; `None` means [`Compression::default_level`]. gzip takes 0–9,
    /// zstd 1–22.
    pub level: Option<u32>,
    /// SOURCE_DATE_EPOCH: every mtime newer than this is clamped to it.
    pub source_date_epoch: Option<i64>,
    /// Compression threads for gzip; 0 means all cores. The output does not depend on it.
    pub threads: usize,
    /// Leave out all xattrs (they are kept by default, except host-only ones such as
    /// `security.selinux` and overlay bookkeeping).
    pub no_xattrs: bool,
    /// Host ids on disk → the ids recorded in the layer, through the inverse of this
    /// container → host map (uid and gid separately; an id the map does not cover is
    /// recorded as it is). A rootless build's files, created in a user namespace, are owned
    /// on disk by host ids (the user for container root, the subordinate range for the
    /// others), which mean the container's ids in the image.
    pub id_map: Option<IdMap>,
    /// Owners, device nodes and file capabilities recorded per inode instead of on the
    /// disk (the `restricted` isolation); they win over the disk and `id_map`.
    pub recorded: Option<std::sync::Arc<RecordedInodes>>,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar (goes into the image config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// sha256 of the bytes written to `out` (the blob digest in the manifest).
    pub digest: Digest,
    /// Bytes written to `out`.
    pub size: u64,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
    pub media_type: &'static str,
}

/// gzp's block size. Fixed, because the compressed bytes (and so the digest) depend on it.
const GZIP_BLOCK_SIZE: usize = 128 * 1024;

/// Bytes buffered between the tar writer and the hash + compression stages.
const TAR_BUFFER: usize = 1 << 20;

/// Writes the layer for `changes` (paths relative to `source_root`) to `out`.
pub fn write_layer<W: Write + Send>(
    source_root: &Path,
    changes: &[Change],
    out: W,
    options: &WriteOptions,
) -> Result<LayerInfo> {
    write_layer_keeping(source_root, changes, out, options, None)
}

/// A path's modification time with a fraction of a second: (path relative to the source
/// root, seconds, nanoseconds).
pub type PreciseMtime = (std::path::PathBuf, i64, u32);

/// [`write_layer`], also returning the modification times with a fraction of a second
/// (which a tar header cannot hold) of the paths it wrote, as it read them: a caller that
/// must set them again elsewhere needs no second walk of the source. Ancestors written
/// because a changed path is below them are listed too.
pub fn write_layer_with_times<W: Write + Send>(
    source_root: &Path,
    changes: &[Change],
    out: W,
    options: &WriteOptions,
) -> Result<(LayerInfo, Vec<PreciseMtime>)> {
    let mut times = Vec::new();
    let info = write_layer_keeping(source_root, changes, out, options, Some(&mut times))?;
    Ok((info, times))
}

fn write_layer_keeping<W: Write + Send>(
    source_root: &Path,
    changes: &[Change],
    out: W,
    options: &WriteOptions,
    times: Option<&mut Vec<PreciseMtime>>,
) -> Result<LayerInfo> {
    let planned = plan::plan(changes)?;
    let root = rustix::fs::open(
        source_root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("opening source root {}", source_root.display()))?;
    let mut tar_writer = TarWriter {
        root: root.as_fd(),
        root_path: source_root,
        options,
        hardlinks: HashMap::new(),
        times,
        dirs: OpenDirs::default(),
        noatime_refused: std::cell::Cell::new(false),
    };
    encode(out, options, |tar| {
        tar_writer.write_all(tar, &planned).map(drop)
    })
}

/// Compresses an uncompressed layer tar read from `tar` into `out` with `options`'
/// compression and level, returning the same [`LayerInfo`] that [`write_layer`] gives for
/// that tar: the encoder, its block size and level are the same, and gzip's blocks do not
/// depend on how the input is chunked, so a layer written plain and compressed later has
/// the digest it would have had written compressed in one pass. This is how a lazy layer
/// (recorded by its diff id, stored plain) is compressed when it leaves the machine.
pub fn compress_layer<R: Read, W: Write + Send>(
    mut tar: R,
    out: W,
    options: &WriteOptions,
) -> Result<LayerInfo> {
    encode(out, options, |target| {
        let mut buffer = vec![0u8; TAR_BUFFER];
        loop {
            let n = match tar.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).ctx(|| "reading the layer tar".into()),
            };
            target
                .write_all(&buffer[..n])
                .ctx(|| "compressing the layer tar".into())?;
        }
    })
}

/// The one pass shared by [`write_layer`] and [`compress_layer`]: `produce` writes the
/// uncompressed tar into a hashing tee (the diff id), which feeds the encoder, whose output
/// is hashed and counted (the digest) on its way to `out`.
fn encode<W: Write + Send>(
    out: W,
    options: &WriteOptions,
    produce: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<LayerInfo> {
    let level = options.level.unwrap_or(options.compression.default_level());
    let mut sink = HashingWriter::new(out);
    // `None` for a plain layer: the blob is the tar itself, so the sink's digest is the
    // diff id and the stream is hashed once (a second tee here hashed every plain layer
    // twice).
    let diff = match options.compression {
        Compression::None => {
            // Hashing and writing out on a second thread; the compressed forms have their
            // encoder's threads.
            pipe::through_thread(&mut sink, produce)?;
            None
        }
        Compression::Zstd => {
            if !(1..=22).contains(&level) {
                return Err(bad_level("zstd", level));
            }
            let encoder = zstd::Encoder::new(&mut sink, level as i32)
                .ctx(|| "starting the zstd encoder".into())?;
            let mut tee = HashingWriter::new(timing::Timed(encoder));
            produce(&mut tee)?;
            let (timing::Timed(encoder), diff) = tee.into_parts();
            timing::finishing(|| encoder.finish()).ctx(|| "finishing the zstd stream".into())?;
            Some(diff)
        }
        Compression::Gzip => {
            if level > 9 {
                return Err(bad_level("gzip", level));
            }
            let threads = match options.threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            };
            std::thread::scope(|scope| -> Result<tee::Hashed> {
                // Incompressible blocks are stored, not deflated (`stored.rs`).
                let builder = ParCompressBuilder::<GzipStoringIncompressible>::new()
                    .num_threads(threads)
                    .and_then(|b| b.buffer_size(GZIP_BLOCK_SIZE))
                    .map_err(|e| io::Error::other(e.to_string()))
                    .ctx(|| "configuring parallel gzip".into())?
                    .compression_level(gzp::Compression::new(level));
                let mut gzip = fused::Fused::new(builder.from_borrowed_writer(&mut sink, scope));
                let mut tee = HashingWriter::new(timing::Timed(&mut gzip));
                let written = produce(&mut tee).map(|()| tee.into_parts().1);
                // Always finish: dropping an unfinished gzp writer panics on errors. After a
                // failed write, `Fused` returns that error instead of calling into gzp.
                let finished = timing::finishing(|| gzip.finish());
                let diff = written?;
                finished.ctx(|| "finishing the gzip stream".into())?;
                Ok(diff)
            })
            .map(Some)?
        }
    };
    let (_, blob) = sink.into_parts();
    let (diff_id, uncompressed_size) = match diff {
        Some(diff) => (diff.digest, diff.bytes),
        None => (blob.digest.clone(), blob.bytes),
    };
    Ok(LayerInfo {
        diff_id,
        digest: blob.digest,
        size: blob.bytes,
        uncompressed_size,
        media_type: options.compression.oci_media_type(),
    })
}

/// Writes a layer holding everything under `source_root` (every path an upsert), for base
/// images and tests.
pub fn write_dir_layer<W: Write + Send>(
    source_root: &Path,
    out: W,
    options: &WriteOptions,
) -> Result<LayerInfo> {
    let mut changes = Vec::new();
    for entry in walkdir::WalkDir::new(source_root)
        .min_depth(1)
        .follow_links(false)
    {
        let entry = entry.map_err(|e| Error::Io {
            context: format!("walking {}", source_root.display()),
            source: e.into(),
        })?;
        let relative = entry
            .path()
            .strip_prefix(source_root)
            // Cannot fail: walkdir yields only paths below the root it was given.
            .expect("walkdir yields paths below its root");
        changes.push(Change::Upsert(relative.to_path_buf()));
    }
    write_layer(source_root, &changes, out, options)
}

fn bad_level(format: &str, level: u32) -> Error {
    Error::Io {
        context: format!("compression level {level} for {format}"),
        source: io::Error::new(io::ErrorKind::InvalidInput, "level out of range"),
    }
}

struct TarWriter<'a> {
    root: BorrowedFd<'a>,
    root_path: &'a Path,
    options: &'a WriteOptions,
    /// (dev, ino) → tar name of the first path written for a multiply-linked file.
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
    /// Where the changed paths' modification times with a fraction of a second go, when
    /// the caller wants them ([`write_layer_with_times`]).
    times: Option<&'a mut Vec<PreciseMtime>>,
    /// The directories the last entry was in, open.
    dirs: OpenDirs,
    /// `O_NOATIME` was refused (a file not this user's): files are opened without it.
    noatime_refused: std::cell::Cell<bool>,
}

/// The chain of directories from the source root down to the last entry's directory,
/// each open, with its name: the plan lists a directory right before its children, so an
/// entry's parent is nearly always open already, and reading an entry costs calls relative
/// to it instead of a walk from the root by component (which was most of the writer's
/// system calls for many small files).
#[derive(Default)]
struct OpenDirs {
    /// `(name, fd)` of each directory below the root, outermost first.
    chain: Vec<(Vec<u8>, OwnedFd)>,
}

impl OpenDirs {
    /// Makes the chain end at the directory `parent_key` (components joined by NUL, empty
    /// for the root), opening what is not open yet with `O_NOFOLLOW` opens from the nearest
    /// open one; returns its depth. A missing component or a symlink is the in-root
    /// resolver's error, as before.
    fn enter(
        &mut self,
        root: BorrowedFd<'_>,
        parent_key: &[u8],
        shown: &dyn Fn() -> String,
    ) -> Result<usize> {
        let components: Vec<&[u8]> = if parent_key.is_empty() {
            Vec::new()
        } else {
            parent_key.split(|&b| b == 0).collect()
        };
        let kept = self
            .chain
            .iter()
            .zip(&components)
            .take_while(|((open, _), wanted)| open.as_slice() == **wanted)
            .count();
        self.chain.truncate(kept);
        for component in &components[kept..] {
            let opened = rustix::fs::openat(
                self.fd(root),
                OsStr::from_bytes(component),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            );
            match opened {
                Ok(fd) => self.chain.push((component.to_vec(), fd)),
                Err(errno) => {
                    // Not a plain directory there: the in-root resolver says why (missing,
                    // a symlink, not a directory), as it did when it resolved every entry.
                    self.chain.clear();
                    let parents: Vec<OsString> = components
                        .iter()
                        .map(|c| OsStr::from_bytes(c).to_os_string())
                        .collect();
                    let resolved = open_dir_in_root(root, &parents, false, ParentSymlinks::Refuse)
                        .map_err(|e| Error::Change {
                            path: shown(),
                            reason: e.to_string(),
                        })?;
                    let component = String::from_utf8_lossy(component);
                    return Err(Error::Change {
                        path: shown(),
                        reason: match resolved {
                            None => "not found in the source".into(),
                            // Resolvable now but not a moment ago: changed under the writer.
                            Some(_) => format!("opening its parent {component:?}: {errno}"),
                        },
                    });
                }
            }
        }
        Ok(components.len())
    }

    /// Puts the directory `name`, just read at `depth`, at the end of the chain.
    fn push(&mut self, depth: usize, name: &[u8], fd: OwnedFd) {
        self.chain.truncate(depth);
        self.chain.push((name.to_vec(), fd));
    }

    /// The innermost open directory (the root when none is).
    fn fd<'a>(&'a self, root: BorrowedFd<'a>) -> BorrowedFd<'a> {
        self.chain.last().map_or(root, |(_, fd)| fd.as_fd())
    }
}

impl TarWriter<'_> {
    /// Writes every planned entry and the end-of-archive marker; returns the writer.
    fn write_all<T: Write>(&mut self, target: T, planned: &[Planned]) -> Result<T> {
        // Tar writes 512-byte headers and 8 KiB copies; encoders and hashers run much faster
        // on large chunks.
        let mut builder = tar::Builder::new(io::BufWriter::with_capacity(TAR_BUFFER, target));
        for entry in planned {
            match entry {
                Planned::Upsert { path, opaque } => {
                    self.write_upsert(&mut builder, path, *opaque)?
                }
                Planned::Whiteout { path } => {
                    let (parent, marker) = match path.iter().rposition(|&b| b == 0) {
                        Some(cut) => (&path[..cut], &path[cut + 1..]),
                        None => (&path[..0], &path[..]),
                    };
                    let parent: Vec<u8> = parent
                        .iter()
                        .map(|&b| if b == 0 { b'/' } else { b })
                        .collect();
                    write_marker(&mut builder, &parent, OsStr::from_bytes(marker))?;
                }
            }
        }
        builder
            .into_inner()
            .and_then(|buffered| buffered.into_inner().map_err(|e| e.into_error()))
            .ctx(|| "finishing the layer tar".into())
    }

    fn write_upsert<T: Write>(
        &mut self,
        builder: &mut tar::Builder<T>,
        key: &[u8],
        opaque: Opaque,
    ) -> Result<()> {
        if key.is_empty() {
            // An opaque root: only the marker (the root itself has no entry).
            return write_marker(builder, b"", ".wh..wh..opq".as_ref());
        }
        // The tar name: the key's components joined with `/`.
        let name: Vec<u8> = key.iter().map(|&b| if b == 0 { b'/' } else { b }).collect();
        let shown = || String::from_utf8_lossy(&name).into_owned();
        let (parent_key, leaf) = match key.iter().rposition(|&b| b == 0) {
            Some(cut) => (&key[..cut], &key[cut + 1..]),
            None => (&key[..0], key),
        };
        let leaf = OsStr::from_bytes(leaf);
        let depth = self.dirs.enter(self.root, parent_key, &shown)?;
        let host_path = || self.root_path.join(OsStr::from_bytes(&name));
        let parent = self.dirs.fd(self.root);
        let located = source::Located {
            parent,
            name: leaf,
            shown: &shown,
            host_path: &host_path,
            noatime_refused: &self.noatime_refused,
        };
        let (source, opened_dir) = source::read_source(&located, !self.options.no_xattrs)?;
        if let Some(fd) = opened_dir {
            // Its children come next in the plan: they are looked up in it.
            self.dirs.push(depth, leaf.as_bytes(), fd);
        }
        if let Some(times) = self.times.as_deref_mut() {
            if source.mtime_nsec != 0 {
                let path = std::path::PathBuf::from(OsStr::from_bytes(&name));
                times.push((path, source.mtime, source.mtime_nsec));
            }
        }
        let mtime = match self.options.source_date_epoch {
            Some(epoch) => source.mtime.min(epoch),
            None => source.mtime,
        }
        .max(0) as u64;
        let inode = (source.dev, source.ino);
        let recorded = self.options.recorded.as_deref();
        let (uid, gid) = match (recorded, &self.options.id_map) {
            (Some(recorded), _) => recorded.owner(inode, (source.uid, source.gid)),
            (None, Some(map)) => (
                map.container_uid(source.uid).map_or(source.uid, u64::from),
                map.container_gid(source.gid).map_or(source.gid, u64::from),
            ),
            (None, None) => (source.uid, source.gid),
        };
        let recorded_xattrs = recorded.and_then(|r| r.xattrs(inode, &source.xattrs));
        let recorded_device = recorded
            .filter(|_| source.kind == FileType::RegularFile)
            .and_then(|r| r.devices.get(&inode).copied());
        let mut entry = TarEntry {
            name: Vec::new(),
            kind: tar::EntryType::Regular,
            mode: source.mode,
            uid,
            gid,
            mtime,
            size: 0,
            link: None,
            device: None,
            xattrs: recorded_xattrs.as_ref().unwrap_or(&source.xattrs),
        };
        let mut data: Option<std::fs::File> = None;
        match source.kind {
            // A device node recorded for the empty file that stands for it on the disk.
            FileType::RegularFile if recorded_device.is_some() => {
                if let Some(device) = recorded_device {
                    entry.kind = match device.kind {
                        RecordedDeviceKind::Char => tar::EntryType::Char,
                        RecordedDeviceKind::Block => tar::EntryType::Block,
                    };
                    entry.mode = device.mode & 0o7777;
                    entry.device = Some((device.major, device.minor));
                }
            }
            FileType::RegularFile => {
                let first = (source.nlink > 1)
                    .then(|| self.hardlinks.get(&(source.dev, source.ino)).cloned())
                    .flatten();
                if let Some(first) = first {
                    entry.kind = tar::EntryType::Link;
                    entry.link = Some(first);
                } else {
                    if source.nlink > 1 {
                        self.hardlinks
                            .insert((source.dev, source.ino), name.clone());
                    }
                    entry.size = source.size;
                    data = source.file;
                }
            }
            FileType::Directory => {
                entry.kind = tar::EntryType::Directory;
            }
            FileType::Symlink => {
                entry.kind = tar::EntryType::Symlink;
                entry.link = source.link_target;
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                entry.kind = if source.kind == FileType::CharacterDevice {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                let dev = source.rdev;
                entry.device = Some((rustix::fs::major(dev), rustix::fs::minor(dev)));
            }
            FileType::Fifo => entry.kind = tar::EntryType::Fifo,
            FileType::Socket | FileType::Unknown => unreachable!("read_source refuses these"),
        }
        if opaque == Opaque::Required && source.kind != FileType::Directory {
            return Err(Error::Change {
                path: shown(),
                reason: "marked opaque but is not a directory".into(),
            });
        }
        entry.name = name.clone();
        if source.kind == FileType::Directory {
            entry.name.push(b'/');
        }
        let appended = match data {
            Some(file) => {
                let expected = entry.size;
                let mut content = ExactReader {
                    inner: file,
                    left: expected,
                };
                header::append(builder, &entry, &mut content)
            }
            None => header::append(builder, &entry, io::empty()),
        };
        appended.ctx(|| format!("writing {:?} into the layer", shown()))?;
        if opaque != Opaque::No && source.kind == FileType::Directory {
            write_marker(builder, &name, ".wh..wh..opq".as_ref())?;
        }
        Ok(())
    }
}

/// A whiteout or opaque marker in `parent` (its path, `/`-separated; empty for the root): an
/// empty regular file with fixed metadata, so layers do not depend on when a deletion
/// happened.
fn write_marker<T: Write>(
    builder: &mut tar::Builder<T>,
    parent: &[u8],
    marker: &std::ffi::OsStr,
) -> Result<()> {
    let mut name = parent.to_vec();
    if !name.is_empty() {
        name.push(b'/');
    }
    name.extend_from_slice(marker.as_bytes());
    let no_xattrs = Default::default();
    let entry = TarEntry {
        name,
        kind: tar::EntryType::Regular,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        size: 0,
        link: None,
        device: None,
        xattrs: &no_xattrs,
    };
    header::append(builder, &entry, io::empty()).ctx(|| {
        format!(
            "writing {} into the layer",
            String::from_utf8_lossy(&entry.name)
        )
    })
}

/// Yields exactly `left` bytes of a file, failing if it shrank and ignoring growth, since
/// the header already promised the size.
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while the layer was being written",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
