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
