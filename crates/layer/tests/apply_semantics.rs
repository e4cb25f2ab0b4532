//! OCI apply semantics: whiteouts, opaque directories, replacement, deferred directory
//! metadata, devices and ownership.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::RawTar;
use rbuild_layer::{apply_layer, ApplyOptions, DeviceNodes, Error, IdMap, Ownership};

fn apply(layer: &[u8], root: &Path) -> rbuild_layer::ApplyStats {
    apply_layer(layer, root, &common::apply_options()).unwrap()
}

/// A target with a "lower layer" already applied.
fn lower() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let layer = RawTar::new()
        .dir("a/", 0o755)
        .file("a/f", b"lower f")
        .file("a/g", b"lower g")
        .dir("d/", 0o755)
        .file("d/old", b"old")
        .dir("d/sub/", 0o755)
        .file("d/sub/old2", b"old2")
        .file("keep", b"keep")
        .finish();
    apply(&layer, dir.path());
    dir
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

#[test]
fn file_whiteout_removes_only_that_file() {
    let t = lower();
    let stats = apply(&RawTar::new().file("a/.wh.f", b"").finish(), t.path());
    assert_eq!(stats.whiteouts, 1);
    assert!(!exists(&t.path().join("a/f")));
    assert!(
        !exists(&t.path().join("a/.wh.f")),
        "the marker itself is not extracted"
    );
    assert_eq!(fs::read(t.path().join("a/g")).unwrap(), b"lower g");
}

#[test]
fn dir_whiteout_removes_recursively() {
    let t = lower();
    apply(&RawTar::new().file(".wh.d", b"").finish(), t.path());
    assert!(!exists(&t.path().join("d")));
    assert!(exists(&t.path().join("keep")));
}

#[test]
fn whiteout_of_absent_path_is_harmless() {
    let t = lower();
    let stats = apply(
        &RawTar::new()
            .file("nope/.wh.x", b"")
            .file(".wh.y", b"")
            .finish(),
        t.path(),
    );
    assert_eq!(stats.whiteouts, 2);
    assert!(!exists(&t.path().join("nope")));
}

#[test]
fn opaque_dir_hides_lower_contents_but_keeps_this_layers_in_either_order() {
    for marker_first in [true, false] {
        let t = lower();
        let layer = if marker_first {
            RawTar::new()
                .dir("d/", 0o755)
                .file("d/.wh..wh..opq", b"")
                .file("d/new", b"new")
                .finish()
        } else {
            RawTar::new()
                .dir("d/", 0o755)
                .file("d/new", b"new")
                .file("d/.wh..wh..opq", b"")
                .finish()
        };
        let stats = apply(&layer, t.path());
        assert_eq!(stats.opaque_dirs, 1);
        let mut names: Vec<_> = fs::read_dir(t.path().join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["new"], "marker_first={marker_first}");
        assert_eq!(fs::read(t.path().join("d/new")).unwrap(), b"new");
        assert!(exists(&t.path().join("keep")));
    }
}

#[test]
fn whiteout_of_a_path_replaced_in_the_same_layer_keeps_the_new_one() {
    for whiteout_first in [true, false] {
        let t = lower();
        let layer = if whiteout_first {
            RawTar::new()
                .file(".wh.keep", b"")
                .file("keep", b"new keep")
                .finish()
        } else {
            RawTar::new()
                .file("keep", b"new keep")
                .file(".wh.keep", b"")
                .finish()
        };
        apply(&layer, t.path());
        assert_eq!(
            fs::read(t.path().join("keep")).unwrap(),
            b"new keep",
            "whiteout_first={whiteout_first}"
        );
    }
    // A directory whited out and re-created: the old contents are gone.
    let t = lower();
    let layer = RawTar::new()
        .file(".wh.d", b"")
        .dir("d/", 0o755)
        .file("d/n", b"n")
        .finish();
    apply(&layer, t.path());
    assert!(!exists(&t.path().join("d/old")));
    assert_eq!(fs::read(t.path().join("d/n")).unwrap(), b"n");
}

#[test]
fn replacing_dirs_files_and_symlinks() {
    let t = lower();
    let layer = RawTar::new()
        .file("d", b"d is a file now")
        .dir("keep/", 0o700)
        .link("a", tar::EntryType::Symlink, "d")
        .finish();
    apply(&layer, t.path());
    assert_eq!(fs::read(t.path().join("d")).unwrap(), b"d is a file now");
    assert!(fs::symlink_metadata(t.path().join("keep"))
        .unwrap()
        .is_dir());
    assert_eq!(fs::read_link(t.path().join("a")).unwrap(), Path::new("d"));

    // A dir entry over an existing dir merges and updates its mode.
    let t = lower();
    apply(
        &RawTar::new().dir("a/", 0o700).file("a/h", b"h").finish(),
        t.path(),
    );
    assert_eq!(fs::read(t.path().join("a/f")).unwrap(), b"lower f");
    assert_eq!(
        fs::metadata(t.path().join("a"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o700
    );

    // A dir entry over a symlink to a dir replaces the symlink (Lstat semantics).
    let t = lower();
    std::os::unix::fs::symlink("a", t.path().join("s")).unwrap();
    apply(&RawTar::new().dir("s/", 0o755).finish(), t.path());
    assert!(fs::symlink_metadata(t.path().join("s")).unwrap().is_dir());
    assert!(
        exists(&t.path().join("a/f")),
        "the symlink's target is untouched"
    );
}

#[test]
fn read_only_dirs_get_their_mode_and_mtime_after_children() {
    let t = tempfile::tempdir().unwrap();
    let layer = RawTar::new()
        .dir("ro/", 0o555)
        .dir("ro/inner/", 0o500)
        .file("ro/inner/f", b"f")
        .finish();
    let stats = apply(&layer, t.path());
    assert_eq!(stats.dirs, 2);
    let ro = fs::metadata(t.path().join("ro")).unwrap();
    assert_eq!(ro.mode() & 0o7777, 0o555);
    assert_eq!(
        ro.mtime(),
        1_600_000_000,
        "dir mtime set after its children were written"
    );
    assert_eq!(
        fs::metadata(t.path().join("ro/inner")).unwrap().mode() & 0o7777,
        0o500
    );
    assert_eq!(fs::read(t.path().join("ro/inner/f")).unwrap(), b"f");
    // Clean up: tempdir removal needs write permission when not root.
    fs::set_permissions(t.path().join("ro/inner"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(t.path().join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn hardlinks_share_the_inode() {
    let t = tempfile::tempdir().unwrap();
    let layer = RawTar::new()
        .file("f", b"content")
        .link("sub/h", tar::EntryType::Link, "f")
        .finish();
    let stats = apply(&layer, t.path());
    assert_eq!(stats.hardlinks, 1);
    let a = fs::metadata(t.path().join("f")).unwrap();
    let b = fs::metadata(t.path().join("sub/h")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
    assert_eq!(a.nlink(), 2);
}

#[test]
fn hardlink_to_a_missing_target_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let layer = RawTar::new()
        .link("h", tar::EntryType::Link, "later")
        .file("later", b"x")
        .finish();
    let err = apply_layer(layer.as_slice(), t.path(), &common::apply_options()).unwrap_err();
    assert!(matches!(err, Error::UnsafeEntry { .. }));
    assert!(err.to_string().contains("\"h\""), "{err}");
    assert!(err.to_string().contains("later"), "{err}");
}

#[test]
fn devices_are_created_as_root_or_skipped_with_a_warning() {
    let t = tempfile::tempdir().unwrap();
    let layer = RawTar::new()
        .device("dev/null", tar::EntryType::Char, 1, 3)
        .device("dev/loop9", tar::EntryType::Block, 7, 9)
        .device("pipe", tar::EntryType::Fifo, 0, 0)
        .finish();
    let stats = apply(&layer, t.path());
    let fifo = fs::symlink_metadata(t.path().join("pipe")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&fifo.file_type()));
    if common::can_mknod() {
        let null = fs::symlink_metadata(t.path().join("dev/null")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &null.file_type()
        ));
        assert_eq!(null.rdev(), libc::makedev(1, 3));
        assert_eq!(null.mode() & 0o7777, 0o640);
        let lo = fs::symlink_metadata(t.path().join("dev/loop9")).unwrap();
        assert_eq!(lo.rdev(), libc::makedev(7, 9));
        assert_eq!((stats.special_files, stats.skipped_devices), (3, 0));
    } else {
        assert_eq!((stats.special_files, stats.skipped_devices), (1, 2));
        assert!(
            stats.warnings.iter().any(|w| w.contains("dev/null")),
            "{:?}",
            stats.warnings
        );
        assert!(!exists(&t.path().join("dev/null")));
        // With devices required, the same layer fails.
        let t2 = tempfile::tempdir().unwrap();
        let options = ApplyOptions {
            device_nodes: DeviceNodes::Require,
            ..Default::default()
        };
        assert!(apply_layer(layer.as_slice(), t2.path(), &options).is_err());
    }
}

#[test]
fn ownership_preserve_map_and_ignore() {
    let layer = RawTar::new()
        .owned_file("a", b"a", 0o4755, 1000, 1001)
        .owned_file("b", b"b", 0o644, 0, 0)
        .finish();
    // SAFETY: geteuid and getegid have no preconditions and touch no memory of ours.
    let me = unsafe { (libc::geteuid(), libc::getegid()) };

    let t = tempfile::tempdir().unwrap();
    let options = ApplyOptions {
        ownership: Ownership::Ignore,
        ..Default::default()
    };
    apply_layer(layer.as_slice(), t.path(), &options).unwrap();
    let a = fs::metadata(t.path().join("a")).unwrap();
    assert_eq!((a.uid(), a.gid()), me);
    assert_eq!(a.mode() & 0o7777, 0o4755);

    // A map sending container 0 to us and 1000.. to unmapped ids: 1000 has no host id.
    let map = IdMap::rootless(me.0, me.1, 100_000, 100_000, 999);
    let t = tempfile::tempdir().unwrap();
    let options = ApplyOptions {
        ownership: Ownership::Map(map),
        ..Default::default()
    };
    let err = apply_layer(layer.as_slice(), t.path(), &options).unwrap_err();
    assert!(matches!(err, Error::UnmappedId { id: 1000, .. }), "{err}");

    if common::is_root() {
        let t = tempfile::tempdir().unwrap();
        apply(&layer, t.path());
        let a = fs::metadata(t.path().join("a")).unwrap();
        assert_eq!((a.uid(), a.gid()), (1000, 1001));
        assert_eq!(
            a.mode() & 0o7777,
            0o4755,
            "setuid survives chown (set after it)"
        );

        let map = IdMap::rootless(5000, 5001, 100_000, 200_000, 65536);
        let t = tempfile::tempdir().unwrap();
        let options = ApplyOptions {
            ownership: Ownership::Map(map),
            ..Default::default()
        };
        apply_layer(layer.as_slice(), t.path(), &options).unwrap();
        let a = fs::metadata(t.path().join("a")).unwrap();
        let b = fs::metadata(t.path().join("b")).unwrap();
        assert_eq!((a.uid(), a.gid()), (100_999, 201_000));
        assert_eq!((b.uid(), b.gid()), (5000, 5001));
    }
}

#[test]
fn compressed_and_plain_layers_all_apply() {
    let plain = RawTar::new().file("x", b"hello").finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(plain.as_slice(), 3).unwrap();
    for layer in [plain.clone(), gz, zst] {
        let t = tempfile::tempdir().unwrap();
        apply(&layer, t.path());
        assert_eq!(fs::read(t.path().join("x")).unwrap(), b"hello");
    }
}

#[test]
fn opaque_marker_keeps_implicit_parents_of_this_layers_entries() {
    let t = lower();
    // `d/sub/` is not listed, only created implicitly for `d/sub/new`; then `d` goes opaque.
    let layer = RawTar::new()
        .file("d/sub/new", b"new")
        .file("d/.wh..wh..opq", b"")
        .finish();
    apply(&layer, t.path());
    assert_eq!(fs::read(t.path().join("d/sub/new")).unwrap(), b"new");
    assert!(
        !exists(&t.path().join("d/sub/old2")),
        "lower contents of a kept dir still go"
    );
    assert!(!exists(&t.path().join("d/old")));
}

#[test]
fn xattrs_apply_and_privileged_ones_are_counted_when_refused() {
    let t = tempfile::tempdir().unwrap();
    let layer = RawTar::new()
        .pax(&[
            ("SCHILY.xattr.user.k", b"v"),
            ("SCHILY.xattr.trusted.k", b"t"),
            ("mtime", b"1500000000.5"),
        ])
        .file("f", b"x")
        .finish();
    let stats = apply(&layer, t.path());
    let f = t.path().join("f");
    assert_eq!(
        xattr::get(&f, "user.k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    let meta = fs::metadata(&f).unwrap();
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_500_000_000, 500_000_000),
        "PAX mtime"
    );
    if common::is_root() {
        assert_eq!(
            xattr::get(&f, "trusted.k").unwrap().as_deref(),
            Some(&b"t"[..])
        );
        assert_eq!(stats.skipped_xattrs, 0);
    } else {
        assert_eq!(stats.skipped_xattrs, 1);
        assert!(
            stats.warnings.iter().any(|w| w.contains("trusted.k")),
            "{:?}",
            stats.warnings
        );
    }
}

#[test]
fn gnu_long_names_and_long_link_targets_apply() {
    let long_dir = "d".repeat(150);
    let long_file = format!("{long_dir}/{}", "f".repeat(200));
    let long_target = format!("/{}", "t".repeat(300));
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o640);
    header.set_size(4);
    builder
        .append_data(&mut header, &long_file, &b"data"[..])
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    builder.append_link(&mut header, "l", &long_target).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Link);
    header.set_size(0);
    builder.append_link(&mut header, "h", &long_file).unwrap();
    let layer = builder.into_inner().unwrap();

    let t = tempfile::tempdir().unwrap();
    let stats = apply(&layer, t.path());
    assert_eq!((stats.files, stats.symlinks, stats.hardlinks), (1, 1, 1));
    assert_eq!(fs::read(t.path().join(&long_file)).unwrap(), b"data");
    assert_eq!(
        fs::read_link(t.path().join("l")).unwrap(),
        Path::new(&long_target)
    );
    assert_eq!(fs::read(t.path().join("h")).unwrap(), b"data");
}
