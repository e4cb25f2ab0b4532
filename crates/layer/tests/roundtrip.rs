//! write_layer → apply_layer round trips, determinism, digests and the tar format written.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use rbuild_image::Digest;
use rbuild_layer::{
    apply_layer, compress_layer, list_entries, write_dir_layer, write_layer, Change, Compression,
    EntryKind, WriteOptions,
};
use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

/// Sets mtime without following symlinks.
fn set_mtime(path: &Path, secs: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A `security.capability` v2 value granting cap_net_bind_service (effective + permitted).
const CAP_NET_BIND_SERVICE: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// A tree with one of everything. `reverse` creates it in the opposite order; `mtime` is
/// given to every entry.
fn rich_tree(root: &Path, reverse: bool, mtime: i64) {
    let long_dir = "d".repeat(120);
    let long_name = format!("{long_dir}/{}", "n".repeat(200)); // > 255 bytes in total
    let mut steps: Vec<Box<dyn Fn()>> = vec![
        Box::new(|| fs::create_dir_all(root.join("etc/conf.d")).unwrap()),
        Box::new(|| put(root, "etc/conf.d/a.conf", b"a=1\n")),
        Box::new(|| put(root, "etc/passwd", b"root:x:0:0::/root:/bin/sh\n")),
        Box::new(|| {
            fs::create_dir_all(root.join("bin")).unwrap();
            fs::write(root.join("bin/tool"), vec![7u8; 70_000]).unwrap();
        }),
        Box::new(|| {
            fs::create_dir_all(root.join(&long_dir)).unwrap();
            fs::write(root.join(&long_name), b"long").unwrap();
        }),
        Box::new(|| {
            fs::create_dir_all(root.join("links")).unwrap();
            symlink("../etc/passwd", root.join("links/rel")).unwrap();
            symlink("/etc/passwd", root.join("links/abs")).unwrap();
            symlink("t".repeat(300), root.join("links/long-target")).unwrap();
            symlink("dangling/nowhere", root.join("links/dangling")).unwrap();
        }),
        Box::new(|| fs::write(root.join("empty"), b"").unwrap()),
    ];
    if reverse {
        steps.reverse();
    }
    for step in &steps {
        step();
    }
    // Hardlinks after their targets exist; the group is the same whichever name is first.
    fs::create_dir_all(root.join("hl")).unwrap();
    fs::write(root.join("hl/one"), b"shared").unwrap();
    if reverse {
        fs::hard_link(root.join("hl/one"), root.join("hl/zwei")).unwrap();
        fs::hard_link(root.join("hl/one"), root.join("bin/drei")).unwrap();
    } else {
        fs::hard_link(root.join("hl/one"), root.join("bin/drei")).unwrap();
        fs::hard_link(root.join("hl/one"), root.join("hl/zwei")).unwrap();
    }
    chmod(&root.join("bin/tool"), 0o4755);
    chmod(&root.join("etc/conf.d"), 0o2750);
    fs::create_dir_all(root.join("tmp")).unwrap();
    chmod(&root.join("tmp"), 0o1777);
    xattr::set(root.join("etc/passwd"), "user.note", b"hello").unwrap();
    xattr::set(root.join("etc/passwd"), "user.empty", b"").unwrap();
    rustix::fs::mknodat(
        CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        0o600.into(),
        0,
    )
    .unwrap();
    if common::is_root() {
        xattr::set(
            root.join("bin/tool"),
            "security.capability",
            &CAP_NET_BIND_SERVICE,
        )
        .unwrap();
        // chown clears capabilities, so set the owner of a different file.
        std::os::unix::fs::lchown(root.join("etc/conf.d/a.conf"), Some(1000), Some(1001)).unwrap();
        std::os::unix::fs::lchown(root.join("links/rel"), Some(7), Some(8)).unwrap();
    }
    if common::can_mknod() {
        fs::create_dir_all(root.join("dev")).unwrap();
        let dev = rustix::fs::makedev(1, 3);
        rustix::fs::mknodat(
            CWD,
            root.join("dev/null"),
            rustix::fs::FileType::CharacterDevice,
            0o666.into(),
            dev,
        )
        .unwrap();
    }
    // mtimes last, deepest first, so creating children does not disturb them.
    let mut all: Vec<_> = walk(root);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for path in all {
        set_mtime(&path, mtime);
    }
}

/// Writes a file, creating its parents.
fn put(root: &Path, rel: &str, content: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        out.push(entry.path());
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&entry.path()));
        }
    }
    out
}

fn options(compression: Compression) -> WriteOptions {
    WriteOptions {
        compression,
        ..Default::default()
    }
}

fn sha256(data: &[u8]) -> Digest {
    Digest::of(data)
}

#[test]
fn rich_tree_round_trips_in_every_compression() {
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path(), false, 1_650_000_000);
    let expected = common::snapshot(src.path(), true);
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let mut blob = Vec::new();
        let info = write_dir_layer(src.path(), &mut blob, &options(compression)).unwrap();
        assert_eq!(info.media_type, compression.oci_media_type());
        assert_eq!(info.size, blob.len() as u64);
        assert_eq!(info.digest, sha256(&blob));
        let mut tar = Vec::new();
        rbuild_layer::compression::decompressing_reader(blob.as_slice())
            .unwrap()
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(
            info.diff_id,
            sha256(&tar),
            "{compression:?}: diff id is the tar's sha256"
        );
        assert_eq!(info.uncompressed_size, tar.len() as u64);
        if compression == Compression::None {
            assert_eq!(info.diff_id, info.digest);
        }

        let dst = tempfile::tempdir().unwrap();
        let stats = apply_layer(blob.as_slice(), dst.path(), &common::apply_options()).unwrap();
        assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
        assert_eq!(stats.hardlinks, 2);
        let got = common::snapshot(dst.path(), true);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>()
        );
        for (path, node) in &expected {
            assert_eq!(&got[path], node, "{compression:?}: {}", path.display());
        }
    }
}

#[test]
fn format_is_pax_ustar_without_names_sparse_or_followed_symlinks() {
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path(), false, 1_650_000_000);
    // A sparse file must be written as a plain regular file.
    let sparse = fs::File::create(src.path().join("sparse")).unwrap();
    sparse.set_len(4 << 20).unwrap();
    let mut blob = Vec::new();
    write_dir_layer(src.path(), &mut blob, &options(Compression::None)).unwrap();

    let mut archive = tar::Archive::new(blob.as_slice());
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header();
        assert!(header.as_ustar().is_some(), "ustar headers only");
        assert_eq!(header.username_bytes(), Some(&b""[..]));
        assert_eq!(header.groupname_bytes(), Some(&b""[..]));
        assert_ne!(header.entry_type(), tar::EntryType::GNUSparse);
        names.push(String::from_utf8(entry.path_bytes().into_owned()).unwrap());
    }
    let mut sorted = names.clone();
    sorted.sort_by(|a, b| Path::new(a).cmp(Path::new(b)));
    assert_eq!(names, sorted, "entries are in path order, parents first");
    assert!(names.iter().any(|n| n == "etc/"), "directories end with /");

    let entries = list_entries(blob.as_slice()).unwrap();
    let by_name = |n: &str| entries.iter().find(|e| e.path == Path::new(n)).unwrap();
    let sparse = by_name("sparse");
    assert_eq!((sparse.kind, sparse.size), (EntryKind::File, 4 << 20));
    let abs = by_name("links/abs");
    assert_eq!(abs.kind, EntryKind::Symlink);
    assert_eq!(abs.link_target.as_deref(), Some(Path::new("/etc/passwd")));
    let long = by_name("links/long-target");
    assert_eq!(long.link_target.as_deref().unwrap().as_os_str().len(), 300);
    // Hardlinks: the first name in order holds the data, the others are Link entries to it.
    assert_eq!(by_name("bin/drei").kind, EntryKind::File);
    let zwei = by_name("hl/zwei");
    assert_eq!(zwei.kind, EntryKind::Hardlink);
    assert_eq!(zwei.link_target.as_deref(), Some(Path::new("bin/drei")));
    let passwd = by_name("etc/passwd");
    assert_eq!(
        passwd.xattrs.get("user.note").map(Vec::as_slice),
        Some(&b"hello"[..])
    );
    assert_eq!(
        passwd.xattrs.get("user.empty").map(Vec::as_slice),
        Some(&b""[..])
    );
    assert_eq!(by_name("bin/tool").mode, 0o4755);
    assert_eq!(by_name("tmp/").mode, 0o1777);
    assert!(entries.iter().any(|e| e.path.as_os_str().len() > 255));
    if common::is_root() {
        assert_eq!(
            by_name("bin/tool")
                .xattrs
                .get("security.capability")
                .map(Vec::as_slice),
            Some(&CAP_NET_BIND_SERVICE[..])
        );
        let conf = by_name("etc/conf.d/a.conf");
        assert_eq!((conf.uid, conf.gid), (1000, 1001));
    }
    if common::can_mknod() {
        let null = by_name("dev/null");
        assert_eq!(
            (null.kind, null.device),
            (EntryKind::CharDevice, Some((1, 3)))
        );
    }
}

#[test]
fn same_tree_in_other_order_and_times_gives_the_same_digest_with_source_date_epoch() {
    let epoch = 1_000_000_000;
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    rich_tree(a.path(), false, 1_700_000_000);
    rich_tree(b.path(), true, 1_700_000_555);
    let opts = WriteOptions {
        source_date_epoch: Some(epoch),
        ..Default::default()
    };
    let first = write_dir_layer(a.path(), std::io::sink(), &opts).unwrap();
    let second = write_dir_layer(b.path(), std::io::sink(), &opts).unwrap();
    assert_eq!(first, second);
    // Same tree twice gives the same bytes; without the epoch the mtimes differ.
    assert_eq!(
        write_dir_layer(a.path(), std::io::sink(), &opts).unwrap(),
        first
    );
    let plain = WriteOptions::default();
    assert_ne!(
        write_dir_layer(a.path(), std::io::sink(), &plain)
            .unwrap()
            .diff_id,
        write_dir_layer(b.path(), std::io::sink(), &plain)
            .unwrap()
            .diff_id
    );
    // Clamping only lowers: an older mtime is kept.
    let mut blob = Vec::new();
    let old = WriteOptions {
        source_date_epoch: Some(1_800_000_000),
        compression: Compression::None,
        ..Default::default()
    };
    write_dir_layer(a.path(), &mut blob, &old).unwrap();
    let entries = list_entries(blob.as_slice()).unwrap();
    assert!(entries.iter().all(|e| e.mtime == 1_700_000_000));
    let mut blob = Vec::new();
    write_dir_layer(
        a.path(),
        &mut blob,
        &WriteOptions {
            compression: Compression::None,
            ..opts
        },
    )
    .unwrap();
    assert!(list_entries(blob.as_slice())
        .unwrap()
        .iter()
        .all(|e| e.mtime == epoch));
}

#[test]
fn gzip_output_does_not_depend_on_thread_count() {
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path(), false, 1_650_000_000);
    let digests: Vec<_> = [1, 2, 3]
        .into_iter()
        .map(|threads| {
            let opts = WriteOptions {
                threads,
                ..Default::default()
            };
            write_dir_layer(src.path(), std::io::sink(), &opts)
                .unwrap()
                .digest
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
    assert_eq!(digests[0], digests[2]);
}

/// Hands out at most 777 bytes a read, so the compressor sees other chunks than the tar
/// writer gave it.
struct Dribble<R>(R);

impl<R: Read> Read for Dribble<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(777);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn a_plain_layer_compressed_later_is_the_layer_written_compressed() {
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path(), false, 1_650_000_000);
    // Several gzip blocks (128 KiB each) of poorly compressible bytes.
    let noise: Vec<u8> = (0u32..600_000)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    put(src.path(), "noise.bin", &noise);
    let mut plain = Vec::new();
    let plain_info = write_dir_layer(src.path(), &mut plain, &options(Compression::None)).unwrap();
    assert_eq!(plain_info.digest, plain_info.diff_id);
    assert_eq!(sha256(&plain), plain_info.diff_id);
    for (compression, level) in [
        (Compression::Gzip, None),
        (Compression::Gzip, Some(1)),
        (Compression::Zstd, None),
    ] {
        let opts = WriteOptions {
            compression,
            level,
            ..Default::default()
        };
        let mut direct = Vec::new();
        let direct_info = write_dir_layer(src.path(), &mut direct, &opts).unwrap();
        let mut later = Vec::new();
        let later_info = compress_layer(Dribble(&plain[..]), &mut later, &opts).unwrap();
        assert_eq!(later_info, direct_info, "{compression:?} level {level:?}");
        assert!(
            later == direct,
            "{compression:?} level {level:?}: bytes differ"
        );
        assert_eq!(later_info.diff_id, plain_info.diff_id);
        assert_eq!(later_info.uncompressed_size, plain.len() as u64);
        assert_ne!(later_info.digest, plain_info.diff_id);
    }
}

#[test]
fn random_data_is_stored_in_one_gzip_member_the_same_for_any_thread_count() {
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path(), false, 1_650_000_000);
    let noise = rbuild_testutil::incompressible_bytes(3 << 20, 7);
    put(src.path(), "a-noise.bin", &noise);
    let text = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n".repeat(40_000);
    put(src.path(), "b-text.txt", &text);
    let mut plain = Vec::new();
    write_dir_layer(src.path(), &mut plain, &options(Compression::None)).unwrap();
    let mut outputs = Vec::new();
    for threads in [1, 3] {
        let opts = WriteOptions {
            threads,
            ..Default::default()
        };
        let mut blob = Vec::new();
        let info = compress_layer(&plain[..], &mut blob, &opts).unwrap();
        assert_eq!(info.digest, sha256(&blob));
        outputs.push(blob);
    }
    assert!(
        outputs[0] == outputs[1],
        "the thread count changed the bytes"
    );
    let blob = &outputs[0];
    // One member: `GzDecoder` stops after the first, so a second would be missing here.
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(&blob[..])
        .read_to_end(&mut inflated)
        .unwrap();
    assert!(
        inflated == plain,
        "the gzip stream does not inflate to the tar"
    );
    // The noise is stored (5 bytes a 64 KiB block: well under 0.1% more), the text deflated
    // to a small fraction of itself.
    let noise_overhead = noise.len() / 1000;
    assert!(
        blob.len()
            < noise.len()
                + noise_overhead
                + text.len() / 20
                + (plain.len() - noise.len() - text.len()),
        "{} bytes compressed from {} ({} of noise, {} of text)",
        blob.len(),
        plain.len(),
        noise.len(),
        text.len()
    );
    assert!(blob.len() > noise.len(), "noise cannot shrink");
}

#[test]
fn compression_levels_are_checked() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("f"), b"x").unwrap();
    let bad = WriteOptions {
        level: Some(10),
        ..Default::default()
    };
    let err = write_dir_layer(src.path(), std::io::sink(), &bad).unwrap_err();
    assert!(err.to_string().contains("level 10"), "{err}");
    let bad = WriteOptions {
        compression: Compression::Zstd,
        level: Some(0),
        ..Default::default()
    };
    assert!(write_dir_layer(src.path(), std::io::sink(), &bad).is_err());
    let fast = WriteOptions {
        level: Some(1),
        ..Default::default()
    };
    let best = WriteOptions {
        level: Some(9),
        ..Default::default()
    };
    assert_ne!(
        write_dir_layer(src.path(), std::io::sink(), &fast)
            .unwrap()
            .digest,
        write_dir_layer(src.path(), std::io::sink(), &best)
            .unwrap()
            .digest
    );
}

/// A lower tree, an upper tree and the changes between them: applying the lower layer and
/// then the change layer gives the upper tree.
#[test]
fn change_set_layer_turns_lower_into_upper() {
    let lower = tempfile::tempdir().unwrap();
    let l = lower.path();
    fs::create_dir_all(l.join("a")).unwrap();
    fs::write(l.join("a/f1"), b"v1").unwrap();
    fs::write(l.join("a/f2"), b"gone").unwrap();
    fs::create_dir_all(l.join("d/sub")).unwrap();
    fs::write(l.join("d/old"), b"old").unwrap();
    fs::write(l.join("d/sub/old"), b"old").unwrap();
    fs::create_dir_all(l.join("r")).unwrap();
    fs::write(l.join("r/x"), b"x").unwrap();
    fs::write(l.join("keep"), b"keep").unwrap();

    let upper = tempfile::tempdir().unwrap();
    let u = upper.path();
    fs::create_dir_all(u.join("a")).unwrap();
    fs::write(u.join("a/f1"), b"v2").unwrap();
    fs::create_dir_all(u.join("d")).unwrap();
    fs::write(u.join("d/new"), b"new").unwrap();
    fs::create_dir_all(u.join("r")).unwrap(); // r deleted and re-made empty
    fs::write(u.join("keep"), b"keep").unwrap();
    fs::write(u.join("added"), b"added").unwrap();
    let changes = vec![
        Change::Upsert("a/f1".into()),
        Change::Delete("a/f2".into()),
        Change::OpaqueDir("d".into()),
        Change::Upsert("d/new".into()),
        Change::Delete("r".into()),
        Change::Upsert("r".into()),
        Change::Upsert("/added".into()),
    ];

    let target = tempfile::tempdir().unwrap();
    let mut base = Vec::new();
    write_dir_layer(l, &mut base, &WriteOptions::default()).unwrap();
    apply_layer(base.as_slice(), target.path(), &common::apply_options()).unwrap();
    let mut diff = Vec::new();
    write_layer(u, &changes, &mut diff, &options(Compression::Zstd)).unwrap();

    let names: Vec<_> = list_entries(diff.as_slice())
        .unwrap()
        .into_iter()
        .map(|e| e.path.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "a/",
            "a/.wh.f2",
            "a/f1",
            "added",
            "d/",
            "d/.wh..wh..opq",
            "d/new",
            "r/",
            "r/.wh..wh..opq"
        ]
    );
    let stats = apply_layer(diff.as_slice(), target.path(), &common::apply_options()).unwrap();
    assert_eq!((stats.whiteouts, stats.opaque_dirs), (1, 2));
    let got = common::snapshot(target.path(), false);
    let want = common::snapshot(u, false);
    assert_eq!(got, want);
}

#[test]
fn bad_change_sets_are_clear_errors() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("file"), b"x").unwrap();
    symlink("/", src.path().join("link")).unwrap();
    let write = |changes: &[Change]| {
        write_layer(
            src.path(),
            changes,
            std::io::sink(),
            &WriteOptions::default(),
        )
    };
    let err = write(&[Change::Upsert("missing".into())]).unwrap_err();
    assert!(
        err.to_string().contains("missing") && err.to_string().contains("not found"),
        "{err}"
    );
    let err = write(&[Change::Upsert("link/etc/passwd".into())]).unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    let err = write(&[Change::OpaqueDir("file".into())]).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    let err = write(&[Change::Upsert("../x".into())]).unwrap_err();
    assert!(err.to_string().contains(".."), "{err}");
    // A symlink itself is written as a symlink, not followed.
    let mut blob = Vec::new();
    write_layer(
        src.path(),
        &[Change::Upsert("link".into())],
        &mut blob,
        &options(Compression::None),
    )
    .unwrap();
    let entries = list_entries(blob.as_slice()).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].kind, EntryKind::Symlink);
    assert_eq!(
        fs::symlink_metadata(src.path().join("file"))
            .unwrap()
            .size(),
        1
    );
}

/// A sink that fails once it has taken `left` bytes.
struct FailingSink {
    left: usize,
}

impl std::io::Write for FailingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("disk full"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failing_output_is_an_error_not_a_panic() {
    let src = tempfile::tempdir().unwrap();
    rich_tree(src.path(), false, 1_650_000_000);
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let err = write_dir_layer(src.path(), FailingSink { left: 100 }, &options(compression))
            .unwrap_err();
        assert!(
            err.to_string().contains("disk full"),
            "{compression:?}: {err}"
        );
    }
}

/// The writer reads each entry relative to its open parent directory, and xattrs by the
/// entry's descriptor (files, directories) or path (symlinks, fifos): every entry of a
/// tree whose plan goes down and back up several levels is written with the xattrs its path
/// shows, a list longer than the first `flistxattr` buffer included, and a symlink met as
/// a parent is still refused after a sibling's directory was read.
#[test]
fn entries_read_relative_to_open_parents_keep_every_xattr() {
    let src = tempfile::tempdir().unwrap();
    let root = src.path();
    put(root, "a/b/c/deep", b"1");
    put(root, "a/b/sibling", b"2");
    put(root, "a/z", b"3");
    put(root, "top", b"4");
    fs::create_dir_all(root.join("a/b/empty")).unwrap();
    xattr::set(root.join("a/b"), "user.dir", b"on a directory").unwrap();
    xattr::set(root.join("a/b/c/deep"), "user.deep", b"deep").unwrap();
    // More names than one 1 KiB list holds.
    let long: Vec<String> = (0..40)
        .map(|i| format!("user.{}{i:02}", "n".repeat(40)))
        .collect();
    for name in &long {
        xattr::set(root.join("a/z"), name, b"v").unwrap();
    }
    rustix::fs::mknodat(
        CWD,
        root.join("a/b/fifo"),
        rustix::fs::FileType::Fifo,
        0o600.into(),
        0,
    )
    .unwrap();
    symlink("c", root.join("a/b/link")).unwrap();
    let changes: Vec<Change> = [
        "a/b/c/deep",
        "a/b/empty",
        "a/b/fifo",
        "a/b/link",
        "a/b/sibling",
        "a/z",
        "top",
    ]
    .iter()
    .map(|p| Change::Upsert(p.into()))
    .collect();
    let mut blob = Vec::new();
    write_layer(root, &changes, &mut blob, &options(Compression::None)).unwrap();
    let entries = list_entries(blob.as_slice()).unwrap();
    let names: Vec<String> = entries
        .iter()
        .map(|e| {
            e.path
                .display()
                .to_string()
                .trim_end_matches('/')
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "a",
            "a/b",
            "a/b/c",
            "a/b/c/deep",
            "a/b/empty",
            "a/b/fifo",
            "a/b/link",
            "a/b/sibling",
            "a/z",
            "top"
        ]
    );
    for entry in &entries {
        let path = root.join(&entry.path);
        let mut expected = std::collections::BTreeMap::new();
        for name in xattr::list(&path).unwrap() {
            let name = name.into_string().unwrap();
            let value = xattr::get(&path, &name).unwrap().unwrap();
            expected.insert(name, value);
        }
        assert_eq!(entry.xattrs, expected, "{}", entry.path.display());
    }
    let by_name = |n: &str| &entries[names.iter().position(|x| x == n).unwrap()];
    assert_eq!(by_name("a/b").xattrs["user.dir"], b"on a directory");
    assert_eq!(by_name("a/b/c/deep").xattrs["user.deep"], b"deep");
    assert_eq!(by_name("a/z").xattrs.len(), long.len());
    assert_eq!(by_name("a/b/c/deep").size, 1);
    assert_eq!(by_name("a/b/link").kind, EntryKind::Symlink);

    // A symlink at a parent position, after its sibling directory was read and kept open.
    symlink("/", root.join("a/escape")).unwrap();
    let err = write_layer(
        root,
        &[
            Change::Upsert("a/b/sibling".into()),
            Change::Upsert("a/escape/etc/passwd".into()),
        ],
        std::io::sink(),
        &options(Compression::None),
    )
    .unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
}
