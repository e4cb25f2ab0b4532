//! Hostile layers: nothing may be written outside the target directory.

mod common;

use std::fs;
use std::path::Path;

use common::RawTar;
use rbuild_layer::{apply_layer, Error};

/// A sandbox: `outside/` is what a hostile layer would like to reach, `root/` is the target.
struct Sandbox {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn sandbox() -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("passwd"), b"original").unwrap();
    Sandbox {
        _dir: dir,
        root,
        outside,
    }
}

fn apply(layer: &[u8], root: &Path) -> Result<rbuild_layer::ApplyStats, Error> {
    apply_layer(layer, root, &common::apply_options())
}

fn assert_outside_untouched(s: &Sandbox) {
    let mut names: Vec<_> = fs::read_dir(&s.outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, vec![std::ffi::OsString::from("passwd")]);
    assert_eq!(fs::read(s.outside.join("passwd")).unwrap(), b"original");
}

#[test]
fn dotdot_entry_is_refused() {
    let s = sandbox();
    let layer = RawTar::new().file("../outside/passwd", b"pwned").finish();
    let err = apply(&layer, &s.root).unwrap_err();
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    assert!(err.to_string().contains("../outside/passwd"), "{err}");
    let layer = RawTar::new().file("../../etc/passwd", b"pwned").finish();
    assert!(apply(&layer, &s.root).is_err());
    assert_outside_untouched(&s);
}

#[test]
fn absolute_path_with_dotdot_is_refused_and_plain_absolute_is_rooted() {
    let s = sandbox();
    let layer = RawTar::new().file("/abs/../../x", b"pwned").finish();
    let err = apply(&layer, &s.root).unwrap_err();
    assert!(err.to_string().contains("`..`"), "{err}");
    // A plain absolute name is taken relative to the root, as containerd does.
    let layer = RawTar::new().file("/etc/hostname", b"box").finish();
    apply(&layer, &s.root).unwrap();
    assert_eq!(fs::read(s.root.join("etc/hostname")).unwrap(), b"box");
    assert_outside_untouched(&s);
}

#[test]
fn symlink_to_absolute_root_is_resolved_inside_the_target() {
    let s = sandbox();
    let outside = s.outside.to_str().unwrap();
    // `a -> <host path of outside>` then `a/passwd`: chroot semantics land it in root/<...>.
    let layer = RawTar::new()
        .link("a", tar::EntryType::Symlink, outside)
        .file("a/passwd", b"pwned")
        .finish();
    apply(&layer, &s.root).unwrap();
    assert_outside_untouched(&s);
    let inside = s.root.join(outside.trim_start_matches('/')).join("passwd");
    assert_eq!(fs::read(inside).unwrap(), b"pwned");
    // The symlink itself is kept as written.
    assert_eq!(fs::read_link(s.root.join("a")).unwrap(), Path::new(outside));
}

#[test]
fn symlink_to_slash_and_dotdot_stay_inside() {
    let s = sandbox();
    let layer = RawTar::new()
        .link("a", tar::EntryType::Symlink, "/")
        .file("a/x", b"via slash")
        .link("b", tar::EntryType::Symlink, "..")
        .file("b/y", b"via dotdot")
        .link("c", tar::EntryType::Symlink, "../../outside")
        .file("c/passwd", b"pwned")
        .finish();
    apply(&layer, &s.root).unwrap();
    assert_eq!(fs::read(s.root.join("x")).unwrap(), b"via slash");
    assert_eq!(fs::read(s.root.join("y")).unwrap(), b"via dotdot");
    // `../../outside` clamps at the root: it is root/outside, created as a parent.
    assert_eq!(fs::read(s.root.join("outside/passwd")).unwrap(), b"pwned");
    assert_outside_untouched(&s);
}

#[test]
fn existing_symlink_in_target_is_not_written_through() {
    let s = sandbox();
    std::os::unix::fs::symlink(&s.outside, s.root.join("etc")).unwrap();
    let layer = RawTar::new().file("etc/passwd", b"pwned").finish();
    apply(&layer, &s.root).unwrap();
    assert_outside_untouched(&s);
    // And replacing a symlink with a file replaces the link, not its target.
    std::os::unix::fs::symlink(s.outside.join("passwd"), s.root.join("f")).unwrap();
    let layer = RawTar::new().file("f", b"new").finish();
    apply(&layer, &s.root).unwrap();
    assert!(!fs::symlink_metadata(s.root.join("f"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(s.root.join("f")).unwrap(), b"new");
    assert_outside_untouched(&s);
}

#[test]
fn dir_symlink_then_file_through_it_stays_inside() {
    let s = sandbox();
    let layer = RawTar::new()
        .dir("real", 0o755)
        .link("d", tar::EntryType::Symlink, "real")
        .file("d/f", b"through")
        .finish();
    apply(&layer, &s.root).unwrap();
    assert_eq!(fs::read(s.root.join("real/f")).unwrap(), b"through");
    assert!(fs::symlink_metadata(s.root.join("d"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn hardlink_outside_is_refused() {
    let s = sandbox();
    let layer = RawTar::new()
        .link("h", tar::EntryType::Link, "../outside/passwd")
        .finish();
    let err = apply(&layer, &s.root).unwrap_err();
    assert!(err.to_string().contains("leaves the root"), "{err}");
    // Through a symlink: the target resolves inside the root, where it does not exist.
    let outside = s.outside.to_str().unwrap().to_string();
    let layer = RawTar::new()
        .link("s", tar::EntryType::Symlink, &outside)
        .link("h2", tar::EntryType::Link, "s/passwd")
        .finish();
    let err = apply(&layer, &s.root).unwrap_err();
    assert!(err.to_string().contains("not in the tree"), "{err}");
    assert_outside_untouched(&s);
}

#[test]
fn hardlink_to_a_symlink_links_the_symlink_not_its_target() {
    let s = sandbox();
    let layer = RawTar::new()
        .link(
            "s",
            tar::EntryType::Symlink,
            s.outside.join("passwd").to_str().unwrap(),
        )
        .link("h", tar::EntryType::Link, "s")
        .finish();
    apply(&layer, &s.root).unwrap();
    let meta = fs::symlink_metadata(s.root.join("h")).unwrap();
    assert!(meta.file_type().is_symlink());
    assert_outside_untouched(&s);
}

#[test]
fn whiteout_through_symlink_cannot_delete_outside() {
    let s = sandbox();
    let layer = RawTar::new()
        .link("a", tar::EntryType::Symlink, s.outside.to_str().unwrap())
        .file("a/.wh.passwd", b"")
        .link("b", tar::EntryType::Symlink, "../outside")
        .file("b/.wh..wh..opq", b"")
        .finish();
    apply(&layer, &s.root).unwrap();
    assert_outside_untouched(&s);
}

#[test]
fn entry_under_a_regular_file_is_an_error_naming_it() {
    let s = sandbox();
    let layer = RawTar::new().file("f", b"x").file("f/child", b"y").finish();
    let err = apply(&layer, &s.root).unwrap_err();
    assert!(err.to_string().contains("f/child"), "{err}");
    assert!(err.to_string().contains("not a directory"), "{err}");
}
