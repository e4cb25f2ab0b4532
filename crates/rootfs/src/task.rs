//! The requests the container-root worker serves ([`RootTask`]) and its answers, as they
//! travel over the worker's socket (one JSON message per packet; paths as bytes, so any
//! path a root holds survives the trip).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rbuild_layer::{Change, Compression};
use rbuild_sandbox::Stub;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RootfsError};

/// One piece of work for container root. A task that takes or gives a file (a layer blob,
/// a COPY's source, an output) has it sent as the packet's descriptor.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootTask {
    /// Apply the layer blob sent as the packet's descriptor onto `dir`, owners kept.
    ApplyLayer { dir: Vec<u8> },
    /// Fill the empty directory `dst` with hard links to `src`'s files
    /// (`rbuild_layer::link_tree`).
    LinkTree { src: Vec<u8>, dst: Vec<u8> },
    /// `lchown(path, uid, gid)` with container ids.
    Lchown { path: Vec<u8>, uid: u32, gid: u32 },
    /// Remove `path` and everything below it (never following symlinks).
    RemoveAll { path: Vec<u8> },
    /// `mkdir(path, mode)` (then chmod, so the umask does not matter).
    CreateDir { path: Vec<u8>, mode: u32 },
    /// Remove a non-directory, or an empty directory.
    Remove { path: Vec<u8>, dir: bool },
    /// Create the symlink `path` pointing at `target`.
    Symlink { target: Vec<u8>, path: Vec<u8> },
    /// Create `path` (which must not exist, mode 0600) with the content of the file sent as
    /// the packet's descriptor, then as `SetMeta` (one round trip for a COPY's file).
    CopyFile {
        path: Vec<u8>,
        owner: Option<(u32, u32)>,
        mode: Option<u32>,
        mtime: Option<(i64, i64)>,
    },
    /// Owner (lchown), then mode (not on a symlink), then mtime (never following).
    SetMeta {
        path: Vec<u8>,
        owner: Option<(u32, u32)>,
        mode: Option<u32>,
        mtime: Option<(i64, i64)>,
    },
    /// Part of the change set of the next `WriteLayer` (a change set can be larger than a
    /// packet): (kind: `u` upsert, `d` delete, `o` opaque dir; path). `first` starts a new
    /// set (whatever a failed earlier request left is dropped).
    LayerChanges {
        first: bool,
        changes: Vec<(char, Vec<u8>)>,
    },
    /// Write the layer of the changes sent before under `root` to the pipe sent as the
    /// packet's descriptor; the answer is [`Reply::Layer`].
    WriteLayer {
        root: Vec<u8>,
        compression: String,
        level: Option<u32>,
        source_date_epoch: Option<i64>,
        threads: usize,
        no_xattrs: bool,
    },
    /// The changes an overlay step made (`rbuild_snapshot::overlay_changes`), written to
    /// the file sent as the packet's descriptor ([`encode_changes`]).
    OverlayChanges {
        upper: Vec<u8>,
        lowers: Vec<Vec<u8>>,
        stubs: Vec<Stub>,
    },
    /// The walk snapshotter's index of `root` (`rbuild_snapshot::walk`), written to the
    /// file sent as the packet's descriptor (`rbuild_snapshot::encode_entries`).
    Scan { root: Vec<u8> },
    /// One source of a `COPY --from`, copied by the executor's COPY rules in the worker.
    CopyFrom(CopyFrom),
}

/// One source of a `COPY --from` for container root: another stage's files may sit in
/// directories only their container owner can read. The worker runs the executor's COPY
/// (see [`crate::CopyFromFn`]), as root there, so files are written and owned directly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyFrom {
    /// The source stage's root filesystem.
    pub from: PathBuf,
    /// The source path as written in the Dockerfile.
    pub src: String,
    pub parents: bool,
    pub exclude: Vec<String>,
    /// The root filesystem being written.
    pub root: PathBuf,
    /// The destination (container path).
    pub dest: String,
    pub dest_is_dir: bool,
    pub owner: Option<(u32, u32)>,
    pub chmod: Option<String>,
    pub dir_owner: (u32, u32),
}

/// worker → rbuild, one per task.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reply {
    Done,
    Failed(String),
    /// A layer was written: its digests (`sha256:...`) and sizes.
    Layer {
        diff_id: String,
        digest: String,
        size: u64,
        uncompressed_size: u64,
    },
}

pub(crate) fn path_bytes(path: &Path) -> Vec<u8> {
    path.as_os_str().as_bytes().to_vec()
}

pub(crate) fn bytes_path(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes))
}

pub(crate) fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
        Compression::None => "none",
    }
}

pub(crate) fn compression_from_name(name: &str) -> Result<Compression> {
    match name {
        "gzip" => Ok(Compression::Gzip),
        "zstd" => Ok(Compression::Zstd),
        "none" => Ok(Compression::None),
        other => Err(RootfsError::Task(format!("unknown compression {other:?}"))),
    }
}

pub(crate) fn change_kind(change: &Change) -> char {
    match change {
        Change::Upsert(_) => 'u',
        Change::Delete(_) => 'd',
        Change::OpaqueDir(_) => 'o',
    }
}

pub(crate) fn change_from(kind: char, path: PathBuf) -> Result<Change> {
    match kind {
        'u' => Ok(Change::Upsert(path)),
        'd' => Ok(Change::Delete(path)),
        'o' => Ok(Change::OpaqueDir(path)),
        other => Err(RootfsError::Protocol(format!(
            "an unknown change kind {other:?}"
        ))),
    }
}

/// A kind byte (`u`, `d`, `o`) and the path, ended by a NUL, per change.
pub(crate) fn encode_changes(changes: &[Change]) -> Vec<u8> {
    let mut out = Vec::new();
    for change in changes {
        out.push(change_kind(change) as u8);
        out.extend_from_slice(change.path().as_os_str().as_bytes());
        out.push(0);
    }
    out
}

/// The inverse of [`encode_changes`].
pub(crate) fn decode_changes(bytes: &[u8]) -> Result<Vec<Change>> {
    bytes
        .split(|&b| b == 0)
        .filter(|r| !r.is_empty())
        .map(|record| change_from(record[0] as char, bytes_path(record[1..].to_vec())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_the_encoding() {
        let changes = vec![
            Change::Upsert("var/lib/apt/lists/partial".into()),
            Change::Delete("etc/motd".into()),
            Change::OpaqueDir("srv/a b".into()),
            Change::Upsert(PathBuf::from(std::ffi::OsStr::from_bytes(b"odd\xffname"))),
        ];
        assert_eq!(decode_changes(&encode_changes(&changes)).unwrap(), changes);
        assert!(decode_changes(b"xpath\0").is_err());
    }

    #[test]
    fn a_task_survives_the_wire_with_a_path_that_is_not_utf8() {
        let task = RootTask::Lchown {
            path: b"etc/\xff".to_vec(),
            uid: 1000,
            gid: 1000,
        };
        let wire = serde_json::to_vec(&task).unwrap();
        match serde_json::from_slice::<RootTask>(&wire).unwrap() {
            RootTask::Lchown { path, uid, gid } => {
                assert_eq!((path.as_slice(), uid, gid), (&b"etc/\xff"[..], 1000, 1000))
            }
            other => panic!("decoded as {other:?}"),
        }
    }
}
