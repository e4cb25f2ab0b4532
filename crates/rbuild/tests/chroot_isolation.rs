//! `--isolation chroot` as root on the host: the same Dockerfile gives the same image as
//! with `--isolation userns`, and the step is confined (Landlock, dropped capabilities).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{ok, rbuild};
use rbuild_testutil::{busybox_rootfs, require_root};

/// Every path under `root` with its type, mode, owner and (files) content or (links)
/// target.
fn listing(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let what = if meta.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                pending.push(path.clone());
                "dir".to_string()
            } else if meta.is_file() {
                format!("file {:?}", std::fs::read(&path).unwrap())
            } else {
                format!("other rdev {}", meta.rdev())
            };
            out.insert(
                rel,
                format!(
                    "{what} mode {:o} owner {}:{}",
                    meta.mode(),
                    meta.uid(),
                    meta.gid()
                ),
            );
        }
    }
    out
}

/// A base without /proc, /dev or /sys (the busybox rootfs has none), RUN steps on it.
fn build_with(isolation: &str, ctx: &Path) -> (tempfile::TempDir, std::path::PathBuf) {
    let store = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("rootfs");
    ok(rbuild(store.path())
        .args(["build", "--no-cache", "--isolation", isolation, "-o"])
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(ctx)
        .output()
        .unwrap());
    (out, dest)
}

#[test]
fn chroot_and_userns_give_the_same_files() {
    require_root("chroot isolation");
    let ctx = tempfile::tempdir().unwrap();
    busybox_rootfs(&ctx.path().join("rootfs"));
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\n\
         RUN echo hi > /x && mkdir -p /srv/app && echo data > /srv/app/f\n\
         RUN rm /x && echo second > /srv/second\n",
    )
    .unwrap();
    let (_keep_userns, userns) = build_with("userns", ctx.path());
    let (_keep_chroot, chroot) = build_with("chroot", ctx.path());
    let userns = listing(&userns);
    let chroot = listing(&chroot);
    for dir in ["proc", "dev", "sys"] {
        assert_eq!(
            userns.get(dir).map(String::as_str),
            Some("dir mode 40755 owner 0:0"),
            "userns leaves /{dir}"
        );
    }
    assert!(userns.contains_key("srv/second"));
    assert_eq!(userns, chroot, "the two isolations gave different files");
}
