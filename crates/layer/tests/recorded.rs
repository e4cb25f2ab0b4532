//! The layer writer with owners, devices and file capabilities recorded per inode instead of
//! on the disk (`WriteOptions::recorded`, the restricted isolation's table).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rbuild_layer::{
    list_entries, write_layer, Change, EntryKind, RecordedDevice, RecordedDeviceKind,
    RecordedInodes, WriteOptions,
};

fn key(path: &Path) -> (u64, u64) {
    let md = fs::symlink_metadata(path).unwrap();
    (md.dev(), md.ino())
}

#[test]
fn recorded_owners_devices_and_capabilities_are_written_and_the_build_user_is_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("etc")).unwrap();
    fs::write(root.join("etc/owned"), "x").unwrap();
    fs::set_permissions(root.join("etc/owned"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(root.join("etc/owned"), root.join("etc/owned-link")).unwrap();
    fs::write(root.join("etc/null"), "").unwrap();
    fs::write(root.join("etc/ping"), "ping").unwrap();
    fs::write(root.join("etc/plain"), "plain").unwrap();
    // The build user: as root (CI), an arbitrary uid the files are given, so that mapping
    // it to 0 is seen; otherwise this user.
    let running_as_root = rustix::process::geteuid().is_root();
    let user = if running_as_root {
        for name in ["etc", "etc/owned", "etc/null", "etc/ping", "etc/plain"] {
            std::os::unix::fs::lchown(root.join(name), Some(4242), Some(4343)).unwrap();
        }
        fs::set_permissions(root.join("etc/owned"), fs::Permissions::from_mode(0o4755)).unwrap();
        (4242, 4343)
    } else {
        let disk = fs::metadata(root.join("etc/plain")).unwrap();
        (disk.uid(), disk.gid())
    };

    let mut recorded = RecordedInodes {
        build_user: user,
        ..Default::default()
    };
    recorded
        .owners
        .insert(key(&root.join("etc/owned")), (123, 456));
    recorded.devices.insert(
        key(&root.join("etc/null")),
        RecordedDevice {
            kind: RecordedDeviceKind::Char,
            major: 1,
            minor: 3,
            mode: 0o644,
        },
    );
    let capability = vec![1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    recorded
        .capabilities
        .insert(key(&root.join("etc/ping")), Some(capability.clone()));
    let options = WriteOptions {
        recorded: Some(Arc::new(recorded)),
        ..Default::default()
    };
    let changes: Vec<Change> = ["etc", "etc/null", "etc/owned", "etc/owned-link", "etc/ping"]
        .iter()
        .chain(["etc/plain"].iter())
        .map(|p| Change::Upsert(PathBuf::from(p)))
        .collect();
    let mut out = Vec::new();
    write_layer(root, &changes, &mut out, &options).unwrap();
    let entries = list_entries(out.as_slice()).unwrap();
    let find = |name: &str| {
        entries
            .iter()
            .find(|e| e.path.to_str().unwrap().trim_end_matches('/') == name)
            .unwrap_or_else(|| panic!("no {name} in {entries:?}"))
    };

    let owned = find("etc/owned");
    assert_eq!((owned.uid, owned.gid), (123, 456));
    assert_eq!(owned.mode, 0o4755);
    assert_eq!(find("etc/owned-link").kind, EntryKind::Hardlink);
    let null = find("etc/null");
    assert_eq!(null.kind, EntryKind::CharDevice);
    assert_eq!(null.device, Some((1, 3)));
    assert_eq!((null.mode, null.size), (0o644, 0));
    assert_eq!(
        find("etc/ping").xattrs.get("security.capability"),
        Some(&capability)
    );
    // What the build user owns on the disk, unrecorded, is root's in the layer.
    for name in ["etc", "etc/plain", "etc/null", "etc/ping"] {
        let e = find(name);
        assert_eq!((e.uid, e.gid), (0, 0), "{name}");
    }
}

/// Runs `f` with this thread's file-system uid and gid set to `id` (as root: permission
/// checks are then those of a user without capabilities, as in a restricted build, for
/// this thread alone; the layer writer reads its sources on the calling thread).
fn as_file_system_user<T>(id: u32, f: impl FnOnce() -> T) -> T {
    rbuild_testutil::require_root("switching the file-system uid");
    // SAFETY: setfsgid/setfsuid change only this thread's file-system credentials; no
    // memory is involved. They are put back below before the thread does anything else.
    unsafe {
        libc::setfsgid(id);
        libc::setfsuid(id);
    }
    let result = f();
    // SAFETY: as above, back to root's.
    unsafe {
        libc::setfsuid(0);
        libc::setfsgid(0);
    }
    result
}

/// `COPY --chmod=0` or `RUN chmod 000 f` in a build whose user has no CAP_DAC_OVERRIDE (the
/// restricted pod): the file is its own but its mode keeps it from reading it. The layer
/// still gets the file's bytes and mode 0000, and the file keeps that mode on the disk.
#[test]
fn a_file_of_the_build_user_with_mode_0_is_written_with_its_bytes_and_mode() {
    const USER: u32 = 4242;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("locked"), "the bytes of a mode-0 file").unwrap();
    std::os::unix::fs::lchown(root.join("locked"), Some(USER), Some(USER)).unwrap();
    fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    let changes = [Change::Upsert(PathBuf::from("locked"))];
    let mut out = Vec::new();
    let written = as_file_system_user(USER, || {
        // The user itself cannot open it (the case this reads around).
        assert!(fs::File::open(root.join("locked")).is_err());
        write_layer(root, &changes, &mut out, &WriteOptions::default())
    });
    written.unwrap();
    let entries = list_entries(out.as_slice()).unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].mode, 0o000, "{entries:?}");
    assert_eq!(entries[0].size, 26, "{entries:?}");
    assert_eq!(
        fs::symlink_metadata(root.join("locked")).unwrap().mode() & 0o7777,
        0o000
    );
    // The bytes themselves: the layer applied as root.
    let applied = tempfile::tempdir().unwrap();
    rbuild_layer::apply_layer(
        out.as_slice(),
        applied.path(),
        &rbuild_layer::ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(
        fs::read(applied.path().join("locked")).unwrap(),
        b"the bytes of a mode-0 file"
    );
}

/// The read-around is for the build user's own files only: a mode-0 file of another user
/// is neither read nor given a read bit.
#[test]
fn a_mode_0_file_of_another_user_is_not_read_nor_chmodded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("theirs"), "not ours").unwrap();
    std::os::unix::fs::lchown(root.join("theirs"), Some(4343), Some(4343)).unwrap();
    fs::set_permissions(root.join("theirs"), fs::Permissions::from_mode(0o000)).unwrap();
    let changes = [Change::Upsert(PathBuf::from("theirs"))];
    let mut out = Vec::new();
    let written = as_file_system_user(4242, || {
        write_layer(root, &changes, &mut out, &WriteOptions::default())
    });
    let error = written.unwrap_err().to_string();
    assert!(
        error.contains("theirs") && error.contains("Permission denied"),
        "{error}"
    );
    assert_eq!(
        fs::symlink_metadata(root.join("theirs")).unwrap().mode() & 0o7777,
        0o000
    );
}
