//! Both snapshotters on real steps (no mocks): the same step must give the same changes.
//! Needs root (CI runs it as root) and busybox-static.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use rbuild_sandbox::test_support::{busybox_rootfs, require_root, run_tests};
use rbuild_sandbox::{Isolation, Rootfs, Sandbox, StepOutcome, StepSpec};
use rbuild_snapshot::{merge_upper, overlay_changes, walk, Change, Entries, Index, OverlayDirs};

fn main() -> ExitCode {
    rbuild_sandbox::maybe_run_helper();
    run_tests(&[
        ("noop_step_changes_nothing", noop_step_changes_nothing),
        ("create_modify_delete", create_modify_delete),
        (
            "dir_replaced_by_file_and_back",
            dir_replaced_by_file_and_back,
        ),
        ("dir_replaced_wholesale", dir_replaced_wholesale),
        (
            "nested_dir_replaced_wholesale",
            nested_dir_replaced_wholesale,
        ),
        ("links_modes_owners_fifos", links_modes_owners_fifos),
        (
            "a_new_directory_tree_merges_as_its_layer_applies",
            a_new_directory_tree_merges_as_its_layer_applies,
        ),
        (
            "a_link_to_a_lower_file_writes_the_new_name_alone",
            a_link_to_a_lower_file_writes_the_new_name_alone,
        ),
        (
            "xattrs_and_capabilities_survive",
            xattrs_and_capabilities_survive,
        ),
        (
            "failing_step_still_reports_changes",
            failing_step_still_reports_changes,
        ),
        (
            "a_second_step_over_whiteouts_and_opaque_dirs_of_a_lower",
            a_second_step_over_whiteouts_and_opaque_dirs_of_a_lower,
        ),
        ("hundred_thousand_files", hundred_thousand_files),
        (
            "snapshot_times_for_10000_files",
            snapshot_times_for_10000_files,
        ),
    ])
}

fn step(rootfs: Rootfs, script: &str, isolation: Isolation) -> StepOutcome {
    let mut spec = StepSpec::new(rootfs, vec!["/bin/sh".into(), "-c".into(), script.into()]);
    spec.isolation = isolation;
    let mut output = Vec::new();
    let outcome = Sandbox::new()
        .run(&spec, &mut |_, b| output.extend_from_slice(b))
        .unwrap_or_else(|e| panic!("step {script:?}: {e}"));
    assert!(
        outcome.status.success() || script.contains("exit"),
        "step {script:?} failed: {}",
        String::from_utf8_lossy(&output)
    );
    outcome
}

struct Results {
    overlay: Vec<Change>,
    walk: Vec<Change>,
    base: PathBuf,
    walk_dir: PathBuf,
    upper: PathBuf,
    _tmp: tempfile::TempDir,
}

/// Runs `script` on a busybox rootfs prepared by `setup`, once with the overlay snapshotter
/// (userns) and once with the walk snapshotter (chroot).
fn both(setup: &dyn Fn(&Path), script: &str) -> Results {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir(&base).unwrap();
    busybox_rootfs(&base);
    setup(&base);

    let dirs = OverlayDirs::create(&tmp.path().join("ovl").tap_mkdir()).unwrap();
    let outcome = step(dirs.rootfs(vec![base.clone()]), script, Isolation::Userns);
    let overlay =
        overlay_changes(&dirs.upperdir, std::slice::from_ref(&base), &outcome.stubs).unwrap();
    // (Not for the 100,000-file case: three more copies of it would only cost CI time.)
    if overlay.len() < 10_000 {
        assert_merge_equals_applying_the_layer(tmp.path(), &base, &dirs.upperdir, &overlay);
    }

    let walk_dir = tmp.path().join("walk");
    copy_tree(&base, &walk_dir);
    let before = Index::scan(&walk_dir).unwrap();
    let outcome = step(Rootfs::Dir(walk_dir.clone()), script, Isolation::Chroot);
    rbuild_sandbox::remove_stubs(&walk_dir, &outcome.stubs).unwrap();
    let mut walk = before.changes(&walk_dir).unwrap();
    // Whatever the rules list, applying the list must give the tree the step left (not
    // for the 100,000-file case: `applied` is quadratic).
    if walk.len() < 10_000 {
        let expected: BTreeSet<PathBuf> = walk_paths(&walk_dir);
        assert_eq!(
            applied(&base, &walk, &walk_dir),
            expected,
            "walk of {script:?}"
        );
    }
    // The walk lists upserts before deletes; sorted by path it compares with the overlay's.
    walk.sort_by(|a, b| a.path().components().cmp(b.path().components()));
    Results {
        overlay,
        walk,
        base,
        walk_dir,
        upper: dirs.upperdir,
        _tmp: tmp,
    }
}

/// Moving the upper directory into a copy of the base (`merge_upper`, what a root build
/// does after an overlay step) gives the tree that writing the step's layer and applying it
/// onto another copy gives (what it did before, and what a rootless build still does).
fn assert_merge_equals_applying_the_layer(
    tmp: &Path,
    base: &Path,
    upper: &Path,
    changes: &[Change],
) {
    use rbuild_layer::{apply_layer, write_layer, ApplyOptions, WriteOptions};
    let applied = tmp.join("applied");
    copy_tree(base, &applied);
    let mut layer = Vec::new();
    write_layer(upper, changes, &mut layer, &WriteOptions::default()).unwrap();
    apply_layer(layer.as_slice(), &applied, &ApplyOptions::default()).unwrap();

    let merged = tmp.join("merged");
    copy_tree(base, &merged);
    let upper_copy = tmp.join("upper-copy");
    copy_tree(upper, &upper_copy);
    merge_upper(&upper_copy, &merged, changes).unwrap();

    let want = walk(&applied).unwrap();
    let got = walk(&merged).unwrap();
    let mut want_paths: Vec<_> = want.keys().collect();
    let mut got_paths: Vec<_> = got.keys().collect();
    want_paths.sort();
    got_paths.sort();
    assert_eq!(
        got_paths, want_paths,
        "merged and applied trees hold the same paths"
    );
    for (path, w) in &want {
        let g = &got[path];
        let what = format!("{} after merging", path.display());
        assert_eq!(
            (g.mode, g.uid, g.gid, &g.link),
            (w.mode, w.uid, w.gid, &w.link),
            "{what}"
        );
        assert_eq!(
            xattrs(&merged.join(path)),
            xattrs(&applied.join(path)),
            "{what}"
        );
        // Layers keep whole seconds; the moved files keep their nanoseconds too, which
        // every layer written from them drops again.
        if !w.is_dir() {
            assert_eq!((g.size, g.mtime.0), (w.size, w.mtime.0), "{what}");
        }
        if w.is_regular() {
            assert_eq!(
                std::fs::read(merged.join(path)).unwrap(),
                std::fs::read(applied.join(path)).unwrap(),
                "{what}"
            );
        }
    }
    // Hard links stay links.
    let links = |index: &Entries| {
        let mut by_inode: std::collections::BTreeMap<u64, Vec<PathBuf>> = Default::default();
        for (path, meta) in index {
            if meta.is_regular() && meta.nlink > 1 {
                by_inode.entry(meta.ino).or_default().push(path.clone());
            }
        }
        // A group of one: the file's other name is outside the tree (a merged file's
        // copied-up twin left in the upper directory).
        let mut groups: Vec<Vec<PathBuf>> = by_inode
            .into_values()
            .filter(|v| v.len() > 1)
            .map(|mut v| {
                v.sort();
                v
            })
            .collect();
        groups.sort();
        groups
    };
    assert_eq!(links(&got), links(&want), "hard link groups");
    for dir in [applied, merged, upper_copy] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// A faithful copy of the tree `src` in the new directory `dst` (content, owners, modes,
/// xattrs, hard links, special files, times).
fn copy_tree(src: &Path, dst: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg("--preserve=all")
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        src.display(),
        dst.display()
    );
}

/// The paths under `root`.
fn walk_paths(root: &Path) -> BTreeSet<PathBuf> {
    walk(root).unwrap().into_keys().collect()
}

/// The extended attributes of `path` (not following a symlink), sorted.
fn xattrs(path: &Path) -> Vec<(std::ffi::OsString, Option<Vec<u8>>)> {
    let mut out: Vec<_> = xattr::list(path)
        .unwrap()
        .map(|name| {
            let value = xattr::get(path, &name).unwrap();
            (name, value)
        })
        .collect();
    out.sort();
    out
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

fn up(p: &str) -> Change {
    Change::Upsert(p.into())
}

fn del(p: &str) -> Change {
    Change::Delete(p.into())
}

/// The set of paths that result from applying `changes` to `base` (OCI whiteout semantics),
/// given `result` (the upper or changed tree) to tell files from directories.
fn applied(base: &Path, changes: &[Change], result: &Path) -> BTreeSet<PathBuf> {
    let mut paths: BTreeSet<PathBuf> = walk_paths(base);
    let remove_below = |paths: &mut BTreeSet<PathBuf>, p: &Path, including: bool| {
        paths.retain(|q| !(q.starts_with(p) && (including || q != p)));
    };
    for change in changes {
        match change {
            Change::Delete(p) => remove_below(&mut paths, p, true),
            Change::OpaqueDir(p) => {
                remove_below(&mut paths, p, true);
                paths.insert(p.clone());
            }
            Change::Upsert(p) => {
                if !result.join(p).symlink_metadata().unwrap().is_dir() {
                    remove_below(&mut paths, p, false);
                }
                paths.insert(p.clone());
            }
        }
    }
    paths
}

fn noop_step_changes_nothing() {
    // /etc/resolv.conf is missing, so the sandbox creates a stub for it.
    let r = both(&|_| {}, "true");
    assert_eq!(r.overlay, Vec::<Change>::new());
    assert_eq!(r.walk, Vec::<Change>::new());
    assert!(!r.walk_dir.join("etc/resolv.conf").exists());
    assert!(!r.upper.join("etc/resolv.conf").exists());
}

fn create_modify_delete() {
    let r = both(
        &|base| {
            std::fs::write(base.join("etc/a"), "a\n").unwrap();
            std::fs::write(base.join("etc/b"), "b\n").unwrap();
            std::fs::create_dir_all(base.join("d/e")).unwrap();
            std::fs::write(base.join("d/e/x"), "x").unwrap();
        },
        "echo new > /new && echo more >> /etc/a && rm /etc/b && rm -r /d && mkdir -p /n/m && touch /n/m/f",
    );
    assert_eq!(
        r.overlay,
        vec![
            del("d"),
            up("etc"),
            up("etc/a"),
            del("etc/b"),
            up("n"),
            up("n/m"),
            up("n/m/f"),
            up("new"),
        ]
    );
    // Removing the sandbox's stubs from /etc restores its mtime (and a directory's ctime
    // does not count): the walk lists no /etc.
    let mut without_etc = r.overlay.clone();
    without_etc.remove(1);
    assert_eq!(r.walk, without_etc);
}

/// A directory the base lacks moves into the root by one rename (`merge_upper`): what is
/// below it (nested directories, a hard link, a symlink, a lower file moved in, which
/// overlayfs copies up with its own xattrs, a mode) must read as applying the layer gives.
fn a_new_directory_tree_merges_as_its_layer_applies() {
    let r = both(
        &|base| {
            std::fs::write(base.join("etc/movable"), "lower\n").unwrap();
        },
        "mkdir -p /n/a/b && echo x > /n/a/b/f && ln /n/a/b/f /n/a/g && ln -s b/f /n/a/s \
         && mv /etc/movable /n/a/moved && chmod 700 /n/a && mkdir /n/a/b/empty \
         && touch -d @1000000000 /n/a/b/f",
    );
    assert_eq!(
        r.overlay,
        vec![
            up("etc"),
            del("etc/movable"),
            up("n"),
            up("n/a"),
            up("n/a/b"),
            up("n/a/b/empty"),
            up("n/a/b/f"),
            up("n/a/g"),
            up("n/a/moved"),
            up("n/a/s"),
        ]
    );
}

fn dir_replaced_by_file_and_back() {
    let r = both(
        &|base| {
            std::fs::create_dir(base.join("r")).unwrap();
            std::fs::write(base.join("r/child"), "c").unwrap();
            std::fs::write(base.join("f"), "f").unwrap();
        },
        "rm -r /r && echo x > /r && rm /f && mkdir /f && touch /f/in",
    );
    assert_eq!(r.overlay, vec![up("f"), up("f/in"), up("r")]);
    // The file's entry replaces the directory's whole subtree, as in BuildKit's layers: no
    // whiteout below it from either snapshotter.
    assert_eq!(r.walk, r.overlay);
}

fn dir_replaced_wholesale() {
    let r = both(
        &|base| {
            std::fs::create_dir(base.join("o")).unwrap();
            std::fs::write(base.join("o/old1"), "1").unwrap();
            std::fs::write(base.join("o/old2"), "2").unwrap();
        },
        "rm -r /o && mkdir /o && touch /o/new",
    );
    // One delete per entry of the replaced directory, not an opaque marker, as BuildKit
    // v0.32 writes it; the overlay lists `o` itself as the parent of its changes.
    assert_eq!(
        r.overlay,
        vec![up("o"), up("o/new"), del("o/old1"), del("o/old2")]
    );
    // The walk snapshotter says the same; `o` keeps its mode and owner, so it is written
    // only as the parent of its changes (BuildKit's `sameDirent`).
    assert_eq!(r.walk, vec![up("o/new"), del("o/old1"), del("o/old2")]);
    let expected: BTreeSet<PathBuf> = walk_paths(&r.walk_dir);
    assert_eq!(applied(&r.base, &r.overlay, &r.upper), expected);
    assert_eq!(applied(&r.base, &r.walk, &r.walk_dir), expected);
}

fn nested_dir_replaced_wholesale() {
    let r = both(
        &|base| {
            std::fs::create_dir_all(base.join("o/sub/deeper")).unwrap();
            std::fs::write(base.join("o/sub/old"), "1").unwrap();
            std::fs::write(base.join("o/sub/deeper/x"), "x").unwrap();
            std::fs::write(base.join("o/top"), "2").unwrap();
            std::fs::write(base.join("o/was-file"), "3").unwrap();
        },
        "rm -r /o && mkdir -p /o/sub /o/was-file && touch /o/sub/new /o/was-file/in",
    );
    // `o/sub` is a directory below too: it replaces that one as well, so what it had goes
    // (a plain merge would keep `o/sub/old` and `o/sub/deeper`); `o/was-file` replaces a
    // file, which its own entry does.
    let overlay_deletes: Vec<&Change> = r
        .overlay
        .iter()
        .filter(|c| matches!(c, Change::Delete(_)))
        .collect();
    assert_eq!(
        overlay_deletes,
        [&del("o/sub/deeper"), &del("o/sub/old"), &del("o/top")]
    );
    assert!(!r.overlay.iter().any(|c| matches!(c, Change::OpaqueDir(_))));
    let expected: BTreeSet<PathBuf> = walk_paths(&r.walk_dir);
    assert_eq!(applied(&r.base, &r.overlay, &r.upper), expected);
    assert_eq!(applied(&r.base, &r.walk, &r.walk_dir), expected);
}

fn links_modes_owners_fifos() {
    let r = both(
        &|base| std::fs::write(base.join("etc/a"), "a").unwrap(),
        "ln /etc/a /etc/a-link && ln -s /etc/a /sym && touch /suid && chmod 4755 /suid \
         && touch /owned && chown 1000:1000 /owned && mkfifo /fifo && chmod 1770 /tmp",
    );
    // /etc/a, linked to, is unchanged (overlayfs copied it up; only its link count and
    // ctime moved): BuildKit writes the new name alone.
    let expected = vec![
        up("etc"),
        up("etc/a-link"),
        up("fifo"),
        up("owned"),
        up("suid"),
        up("sym"),
        up("tmp"),
    ];
    assert_eq!(r.overlay, expected);
    // Removing the sandbox's stubs from /etc restores its mtime, and a directory's ctime
    // does not count: the walk lists no /etc.
    assert_eq!(r.walk[..], expected[1..]);
    use std::os::unix::fs::MetadataExt;
    for root in [&r.upper, &r.walk_dir] {
        let a = std::fs::metadata(root.join("etc/a")).unwrap();
        assert_eq!(
            a.ino(),
            std::fs::metadata(root.join("etc/a-link")).unwrap().ino()
        );
        assert_eq!(
            std::fs::metadata(root.join("suid")).unwrap().mode() & 0o7777,
            0o4755
        );
        assert_eq!(std::fs::metadata(root.join("owned")).unwrap().uid(), 1000);
    }
}

/// A step hard-links files of the base (`ln old new`), changes one it links, and removes
/// one name of a base hard link: in both snapshotters an unchanged linked file is no change
/// (as in BuildKit's image), and the layer links only names it writes itself.
fn a_link_to_a_lower_file_writes_the_new_name_alone() {
    let r = both(
        &|base| {
            for (name, text) in [("a", "a"), ("b", "b"), ("c", "c")] {
                std::fs::write(base.join("etc").join(name), text).unwrap();
            }
            std::fs::hard_link(base.join("etc/c"), base.join("etc/c2")).unwrap();
        },
        "ln /etc/a /etc/a-link && ln /etc/a /etc/a-link2 && echo more >> /etc/b \
         && ln /etc/b /etc/b-link && rm /etc/c2",
    );
    let expected = vec![
        up("etc"),
        up("etc/a-link"),
        up("etc/a-link2"),
        up("etc/b"),
        up("etc/b-link"),
        del("etc/c2"),
    ];
    assert_eq!(r.overlay, expected);
    assert_eq!(r.walk[..], expected[1..]);
    use rbuild_layer::{apply_layer, write_layer, ApplyOptions, WriteOptions};
    use std::os::unix::fs::MetadataExt;
    for (source, changes) in [(&r.upper, &r.overlay), (&r.walk_dir, &r.walk)] {
        let mut layer = Vec::new();
        write_layer(source, changes, &mut layer, &WriteOptions::default()).unwrap();
        let out = r._tmp.path().join("unpacked");
        std::fs::create_dir(&out).unwrap();
        apply_layer(layer.as_slice(), &out, &ApplyOptions::default()).unwrap();
        let meta = |name: &str| std::fs::symlink_metadata(out.join("etc").join(name)).unwrap();
        assert!(
            std::fs::symlink_metadata(out.join("etc/a")).is_err(),
            "{}",
            source.display()
        );
        assert_eq!(meta("a-link").ino(), meta("a-link2").ino());
        assert_eq!(
            meta("a-link").nlink(),
            2,
            "the new names link to each other only"
        );
        assert_eq!(meta("b").ino(), meta("b-link").ino());
        assert_eq!(std::fs::read(out.join("etc/a-link")).unwrap(), b"a");
        assert_eq!(std::fs::read(out.join("etc/b-link")).unwrap(), b"bmore\n");
        std::fs::remove_dir_all(&out).unwrap();
    }
}

fn xattrs_and_capabilities_survive() {
    // busybox has no setfattr/setcap: the base carries them, the step rewrites the files.
    let set = |base: &Path| {
        std::fs::write(base.join("etc/x"), "x").unwrap();
        xattr::set(base.join("etc/x"), "user.test", b"v1").unwrap();
        std::fs::write(base.join("etc/cap"), "c").unwrap();
        // security.capability v2 for cap_net_raw (bit 13), permitted+effective.
        let mut cap = vec![0u8; 20];
        cap[..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
        cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
        xattr::set(base.join("etc/cap"), "security.capability", &cap).unwrap();
    };
    let r = both(&set, "echo y >> /etc/x && echo d >> /etc/cap");
    assert_eq!(r.overlay, vec![up("etc"), up("etc/cap"), up("etc/x")]);
    // Rewriting files leaves their directory's metadata alone: the walk lists no copy-up.
    assert_eq!(r.walk, vec![up("etc/cap"), up("etc/x")]);
    for root in [&r.upper, &r.walk_dir] {
        assert_eq!(
            xattr::get(root.join("etc/x"), "user.test").unwrap(),
            Some(b"v1".to_vec())
        );
    }
    // Writing a file drops its capabilities, in both.
    assert_eq!(
        xattr::get(r.walk_dir.join("etc/cap"), "security.capability").unwrap(),
        None
    );

    // An xattr-only change (made from outside, as no busybox applet can) is an Upsert.
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir(&base).unwrap();
    busybox_rootfs(&base);
    set(&base);
    let work = tmp.path().join("w");
    copy_tree(&base, &work);
    let before = Index::scan(&work).unwrap();
    xattr::set(work.join("etc/x"), "user.test", b"v2").unwrap();
    assert_eq!(before.changes(&work).unwrap(), vec![up("etc/x")]);
}

/// Two overlay steps, the second on the first's upper directory as a lower one (with the
/// whiteouts and the opaque directory overlayfs left there): the lower lookups stop at a
/// lower's whiteout or opaque directory, and none happen below a directory the lowers lack.
fn a_second_step_over_whiteouts_and_opaque_dirs_of_a_lower() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir(&base).unwrap();
    busybox_rootfs(&base);
    for (path, content) in [
        ("o/a", "a"),
        ("o/b", "b"),
        ("k/x", "x"),
        ("w/f", "f"),
        ("keep/y", "y"),
    ] {
        std::fs::create_dir_all(base.join(path).parent().unwrap()).unwrap();
        std::fs::write(base.join(path), content).unwrap();
    }
    let first = OverlayDirs::create(&tmp.path().join("one").tap_mkdir()).unwrap();
    let outcome = step(
        first.rootfs(vec![base.clone()]),
        "rm -r /o && mkdir /o && touch /o/new1 && rm /k/x && rm -r /w && mkdir /fresh && echo 1 > /fresh/f",
        Isolation::Userns,
    );
    let lowers = vec![base.clone()];
    let changes = overlay_changes(&first.upperdir, &lowers, &outcome.stubs).unwrap();
    assert_eq!(
        changes,
        vec![
            up("fresh"),
            up("fresh/f"),
            up("k"),
            del("k/x"),
            up("o"),
            del("o/a"),
            del("o/b"),
            up("o/new1"),
            del("w"),
        ]
    );

    let second = OverlayDirs::create(&tmp.path().join("two").tap_mkdir()).unwrap();
    let lowers = vec![base.clone(), first.upperdir.clone()];
    let outcome = step(
        second.rootfs(lowers.clone()),
        "rm -r /o && mkdir /o && touch /o/n2 && mkdir /w && echo f > /w/f && touch /w/g \
         && mkdir -p /fresh/new/deep && echo z > /fresh/new/deep/z && touch /k/x2 \
         && mkdir -p /brandnew/d && touch /brandnew/d/f && echo y > /keep/y2",
        Isolation::Userns,
    );
    let changes = overlay_changes(&second.upperdir, &lowers, &outcome.stubs).unwrap();
    assert_eq!(
        changes,
        vec![
            up("brandnew"),
            up("brandnew/d"),
            up("brandnew/d/f"),
            up("fresh"),
            up("fresh/new"),
            up("fresh/new/deep"),
            up("fresh/new/deep/z"),
            up("k"),
            up("k/x2"),
            up("keep"),
            up("keep/y2"),
            // Only what the first step's opaque `o` holds is gone, not the base's `o/a`.
            up("o"),
            up("o/n2"),
            del("o/new1"),
            // `w` is new (the first step's whiteout hides the base's `w`): all below is new.
            up("w"),
            up("w/f"),
            up("w/g"),
        ]
    );
}

fn failing_step_still_reports_changes() {
    let r = both(&|_| {}, "touch /half && exit 7");
    assert_eq!(r.overlay, vec![up("half")]);
    assert_eq!(r.walk, r.overlay);
}

fn hundred_thousand_files() {
    let started = Instant::now();
    let r = both(
        &|_| {},
        "mkdir /many && cd /many && seq 1 100000 | xargs touch",
    );
    assert_eq!(r.overlay.len(), 100_001);
    assert_eq!(r.walk, r.overlay);
    println!(
        "  100,000 new files, both snapshotters: {:.2}s",
        started.elapsed().as_secs_f64()
    );
}

fn snapshot_times_for_10000_files() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir(&base).unwrap();
    busybox_rootfs(&base);
    for d in 0..100 {
        let dir = base.join(format!("data/{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            std::fs::write(dir.join(f.to_string()), format!("{d}-{f}")).unwrap();
        }
    }
    let script = "echo x >> /data/5/5 && rm /data/7/7 && touch /data/new";

    let work = tmp.path().join("walk");
    let t = Instant::now();
    copy_tree(&base, &work);
    let before = Index::scan(&work).unwrap();
    let copy_index = t.elapsed();
    let outcome = step(Rootfs::Dir(work.clone()), script, Isolation::Chroot);
    let t = Instant::now();
    rbuild_sandbox::remove_stubs(&work, &outcome.stubs).unwrap();
    let mut walk = before.changes(&work).unwrap();
    let compare = t.elapsed();
    walk.sort_by(|a, b| a.path().components().cmp(b.path().components()));

    let dirs = OverlayDirs::create(&tmp.path().join("ovl").tap_mkdir()).unwrap();
    let outcome = step(dirs.rootfs(vec![base.clone()]), script, Isolation::Userns);
    let t = Instant::now();
    let overlay =
        overlay_changes(&dirs.upperdir, std::slice::from_ref(&base), &outcome.stubs).unwrap();
    let convert = t.elapsed();
    assert_merge_equals_applying_the_layer(tmp.path(), &base, &dirs.upperdir, &overlay);
    println!(
        "  10,000 files: walk copy+index {:.0} ms, walk compare {:.0} ms, overlay convert {:.1} ms",
        copy_index.as_secs_f64() * 1e3,
        compare.as_secs_f64() * 1e3,
        convert.as_secs_f64() * 1e3
    );
    let expected = vec![
        up("data"),
        up("data/5"),
        up("data/5/5"),
        del("data/7/7"),
        up("data/new"),
    ];
    // data/7 changed too (an entry was removed from it).
    let mut expected = expected;
    expected.insert(3, up("data/7"));
    assert_eq!(overlay, expected);
    // The walk lists none of the directories, whose own metadata but the mtime did not
    // change (BuildKit's `sameDirent`); the layer writer adds them as parents.
    assert_eq!(walk, vec![up("data/5/5"), del("data/7/7"), up("data/new")]);
}
