//! Work the build hands to container root (`rbuild_sandbox::ContainerRoot::run_task`) when
//! it runs rootless with subordinate ids: reading trees whose directories belong to other
//! container users. A RUN of `apt-get update` leaves `/var/lib/apt/lists/partial` owned by
//! `_apt` with mode 0700; as host ids that is a directory of the user's subordinate range,
//! which the user itself cannot list — but container root in the build's namespace can.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rbuild_layer::Change;
use rbuild_sandbox::Stub;
use serde::{Deserialize, Serialize};

/// The overlay snapshot of a step (`rbuild_snapshot::overlay_changes`).
pub(crate) const OVERLAY_CHANGES: &str = "overlay-changes";
/// The before/after index of a step that writes into the rootfs (`crate::snapshot`).
pub(crate) const SCAN_INDEX: &str = "scan-index";
/// One source of a `COPY --from` (`crate::copy`).
pub(crate) const COPY_FROM: &str = "copy-from";

/// Registers the tasks with the sandbox. Call first thing in `main`, before
/// `rbuild_sandbox::maybe_run_helper` (the worker is this executable started again).
pub fn register_root_tasks() {
    rbuild_sandbox::register_root_tasks(&[
        (OVERLAY_CHANGES, overlay_changes_task),
        (SCAN_INDEX, crate::snapshot::scan_task),
        (COPY_FROM, crate::copy::copy_from_task),
    ]);
}

#[derive(Serialize, Deserialize)]
struct OverlayChangesInput {
    upper: PathBuf,
    lowers: Vec<PathBuf>,
    stubs: Vec<Stub>,
}

/// The changes an overlay step made: as container root where this process could not read
/// them all, else here.
pub(crate) fn overlay_changes(
    upper: &Path,
    lowers: &[PathBuf],
    stubs: &[Stub],
) -> Result<Vec<Change>, String> {
    let Some(root) = crate::fsops::container_root() else {
        return rbuild_snapshot::overlay_changes(upper, lowers, stubs).map_err(|e| e.to_string());
    };
    let input = serde_json::to_string(&OverlayChangesInput {
        upper: upper.to_path_buf(),
        lowers: lowers.to_vec(),
        stubs: stubs.to_vec(),
    })
    .map_err(|e| e.to_string())?;
    decode_changes(&root.run_task(OVERLAY_CHANGES, &input)?)
}

fn overlay_changes_task(input: &str) -> Result<Vec<u8>, String> {
    let input: OverlayChangesInput = serde_json::from_str(input).map_err(|e| e.to_string())?;
    let changes = rbuild_snapshot::overlay_changes(&input.upper, &input.lowers, &input.stubs)
        .map_err(|e| e.to_string())?;
    Ok(encode_changes(&changes))
}

/// A kind byte (`u`, `d`, `o`) and the path, ended by a NUL, per change.
fn encode_changes(changes: &[Change]) -> Vec<u8> {
    let mut out = Vec::new();
    for change in changes {
        let (kind, path) = match change {
            Change::Upsert(p) => (b'u', p),
            Change::Delete(p) => (b'd', p),
            Change::OpaqueDir(p) => (b'o', p),
        };
        out.push(kind);
        out.extend_from_slice(path.as_os_str().as_bytes());
        out.push(0);
    }
    out
}

fn decode_changes(bytes: &[u8]) -> Result<Vec<Change>, String> {
    let mut changes = Vec::new();
    for record in bytes.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(&record[1..]));
        changes.push(match record[0] {
            b'u' => Change::Upsert(path),
            b'd' => Change::Delete(path),
            b'o' => Change::OpaqueDir(path),
            other => {
                return Err(format!(
                    "the container-root helper sent an unknown change kind {:?}",
                    other as char
                ))
            }
        });
    }
    Ok(changes)
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
}
