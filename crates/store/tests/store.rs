//! Store behaviour: atomic verified blob writes, locking, gc, resolve and crash leftovers.

mod common;

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{files_in, image};
use rbuild_image::Digest;
use rbuild_store::{GcOptions, Store, StoreError};

const NO_GRACE: GcOptions = GcOptions {
    temp_grace: Duration::ZERO,
};

fn blobs_dir(root: &std::path::Path) -> std::path::PathBuf {
    root.join("oci/blobs/sha256")
}

#[test]
fn opening_creates_an_oci_layout() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let layout = std::fs::read_to_string(dir.path().join("oci/oci-layout")).unwrap();
    assert_eq!(layout, r#"{"imageLayoutVersion":"1.0.0"}"#);
    let index = std::fs::read_to_string(dir.path().join("oci/index.json")).unwrap();
    assert_eq!(
        index,
        r#"{"manifests":[],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}"#
    );
    assert!(store.images().unwrap().is_empty());
    // Opening again (e.g. a second process) changes nothing.
    drop(store);
    Store::open(dir.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("oci/index.json")).unwrap(),
        index
    );
}

#[test]
fn blob_writer_commits_verified_content_under_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"hello ").unwrap();
    w.write_all(b"world").unwrap();
    let blob = w.commit(Some(&Digest::of(b"hello world"))).unwrap();
    assert_eq!(blob.digest, Digest::of(b"hello world"));
    assert_eq!(blob.size, 11);
    assert_eq!(
        std::fs::read(blobs_dir(dir.path()).join(blob.digest.hex())).unwrap(),
        b"hello world"
    );
    assert!(store.has_blob(&blob.digest));
    assert_eq!(store.read_blob(&blob.digest).unwrap(), b"hello world");
    assert!(files_in(&dir.path().join("tmp")).is_empty());
}

#[test]
fn a_blob_hashed_by_its_caller_needs_the_callers_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut w = store.blob_writer_hashed_by_caller().unwrap();
    w.write_all(b"layer bytes").unwrap();
    let err = w.commit(None).unwrap_err().to_string();
    assert!(err.contains("without its digest"), "{err}");
    assert!(files_in(&blobs_dir(dir.path())).is_empty());
    assert!(files_in(&dir.path().join("tmp")).is_empty());

    let mut w = store.blob_writer_hashed_by_caller().unwrap();
    w.write_all(b"layer bytes").unwrap();
    let blob = w.commit(Some(&Digest::of(b"layer bytes"))).unwrap();
    assert_eq!(blob.digest, Digest::of(b"layer bytes"));
    assert_eq!(blob.size, 11);
    assert_eq!(store.read_blob(&blob.digest).unwrap(), b"layer bytes");
}

#[test]
fn writing_a_stored_blob_again_keeps_the_stored_copy_and_leases_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap();
    let stored = first.put_bytes(b"empty layer", None).unwrap();
    let path = blobs_dir(dir.path()).join(stored.digest.hex());
    let inode =
        |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = inode(&path);
    // Another process writes the same bytes while the first still holds its lease.
    let second = Store::open(dir.path()).unwrap();
    let mut w = second.blob_writer().unwrap();
    w.write_all(b"empty layer").unwrap();
    let again = w.commit(Some(&stored.digest)).unwrap();
    assert_eq!(again, stored);
    assert_eq!(inode(&path), before, "the stored blob was not replaced");
    assert!(files_in(&dir.path().join("tmp")).is_empty());
    // A wrong expectation is still refused though the digest is stored.
    let mut w = second.blob_writer().unwrap();
    w.write_all(b"empty layer").unwrap();
    let wrong = Digest::of(b"other");
    assert!(matches!(
        w.commit(Some(&wrong)).unwrap_err(),
        StoreError::DigestMismatch { .. }
    ));
    // The second writer's lease alone keeps the blob from gc.
    first.release_lease();
    second.gc_with(&NO_GRACE).unwrap();
    assert!(second.has_blob(&stored.digest));
    second.release_lease();
    second.gc_with(&NO_GRACE).unwrap();
    assert!(!second.has_blob(&stored.digest));
}

#[test]
fn writing_a_blob_again_repairs_a_truncated_stored_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let stored = store.put_bytes(b"layer bytes", None).unwrap();
    let path = blobs_dir(dir.path()).join(stored.digest.hex());
    std::fs::write(&path, b"layer").unwrap();
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"layer bytes").unwrap();
    w.commit(Some(&stored.digest)).unwrap();
    assert_eq!(store.read_blob(&stored.digest).unwrap(), b"layer bytes");
    assert!(files_in(&dir.path().join("tmp")).is_empty());
}

#[test]
fn dropped_writer_leaves_no_blob_and_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"partial").unwrap();
    w.flush().unwrap();
    assert_eq!(files_in(&dir.path().join("tmp")).len(), 1);
    drop(w);
    assert!(files_in(&blobs_dir(dir.path())).is_empty());
    assert!(files_in(&dir.path().join("tmp")).is_empty());
}

#[test]
fn digest_mismatch_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let wrong = Digest::of(b"something else");
    let err = store.put_bytes(b"content", Some(&wrong)).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"content").unwrap();
    let err = w.commit(Some(&wrong)).unwrap_err();
    assert!(err.to_string().contains(&wrong.to_string()), "{err}");
    assert!(files_in(&blobs_dir(dir.path())).is_empty());
    assert!(files_in(&dir.path().join("tmp")).is_empty());
    let missing = store.open_blob(&wrong).unwrap_err();
    assert!(
        matches!(missing, StoreError::BlobNotFound { .. }),
        "{missing}"
    );
}

#[test]
fn tag_untag_and_resolve_by_every_kind_of_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = image(&store, &[("a.txt", "A")]);
    let b = image(&store, &[("b.txt", "B")]);
    store.tag("alpine", &a.manifest).unwrap();
    store.tag("localhost:5000/team/app:1", &b.manifest).unwrap();
    store.tag("app:2", &b.manifest).unwrap();

    let index = std::fs::read_to_string(dir.path().join("oci/index.json")).unwrap();
    assert!(
        index.contains(r#""org.opencontainers.image.ref.name":"docker.io/library/alpine:latest""#)
    );
    assert!(index.contains(r#""io.containerd.image.name":"docker.io/library/app:2""#));

    for name in [
        "alpine",
        "alpine:latest",
        "docker.io/library/alpine:latest",
        "library/alpine",
    ] {
        assert_eq!(
            store.resolve(name).unwrap().manifest.digest,
            a.manifest.digest,
            "{name}"
        );
    }
    let by_full = store.resolve("localhost:5000/team/app:1").unwrap();
    assert_eq!(by_full.manifest.digest, b.manifest.digest);
    assert_eq!(
        by_full.names,
        ["docker.io/library/app:2", "localhost:5000/team/app:1"]
    );
    assert_eq!(
        store
            .resolve(&b.manifest.digest.to_string())
            .unwrap()
            .config,
        b.config
    );
    assert_eq!(
        store
            .resolve(&a.config.to_string())
            .unwrap()
            .manifest
            .digest,
        a.manifest.digest
    );
    assert_eq!(store.resolve(a.config.short()).unwrap().config, a.config);
    assert_eq!(
        store
            .resolve(&format!("sha256:{}", &b.config.hex()[..8]))
            .unwrap()
            .config,
        b.config
    );
    let pinned = format!("app@{}", b.manifest.digest);
    assert_eq!(store.resolve(&pinned).unwrap().config, b.config);
    assert!(matches!(
        store.resolve("nginx"),
        Err(StoreError::ImageNotFound(_))
    ));
    assert!(matches!(
        store.resolve("ffffffffffff"),
        Err(StoreError::ImageNotFound(_)) | Err(StoreError::Ambiguous { .. })
    ));
    assert!(store
        .tag(&format!("app@{}", a.manifest.digest), &a.manifest)
        .is_err());

    // Retagging moves the name; untagging the last name removes the image from the index.
    let previous = store.tag("app:2", &a.manifest).unwrap();
    assert_eq!(previous, Some(b.manifest.digest.clone()));
    assert_eq!(store.resolve("app:2").unwrap().config, a.config);
    let (digest, gone) = store.untag("localhost:5000/team/app:1").unwrap();
    assert_eq!((digest, gone), (b.manifest.digest.clone(), true));
    assert!(store.resolve(&b.config.to_string()).is_err());
    assert!(matches!(
        store.untag("never-tagged"),
        Err(StoreError::ImageNotFound(_))
    ));
}

#[test]
fn ambiguous_id_prefix_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Enough images that some pair shares a first hex digit.
    let images: Vec<_> = (0..17)
        .map(|i| image(&store, &[("f", &i.to_string())]))
        .collect();
    let shared = images
        .iter()
        .find_map(|x| {
            let first = &x.config.hex()[..1];
            (images
                .iter()
                .filter(|y| y.config.hex().starts_with(first))
                .count()
                > 1)
            .then_some(first)
        })
        .expect("pigeonhole: 17 ids, 16 hex digits");
    let err = store.resolve(shared).unwrap_err();
    assert!(matches!(err, StoreError::Ambiguous { .. }), "{err}");
}

#[test]
fn list_images_reports_names_id_created_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = image(&store, &[("a", "A"), ("b", "BB")]);
    store.tag("x:1", &a.manifest).unwrap();
    store.tag("x:2", &a.manifest).unwrap();
    let untagged = image(&store, &[("c", "C")]);
    let list = store.list_images().unwrap();
    assert_eq!(list.len(), 2);
    let first = &list[0];
    assert_eq!(
        first.names,
        ["docker.io/library/x:1", "docker.io/library/x:2"]
    );
    assert_eq!(first.id, a.config);
    assert_eq!(first.created.as_deref(), Some("2024-05-06T07:08:09Z"));
    let manifest = store.read_manifest(&a.manifest.digest).unwrap();
    let expected = a.manifest.size
        + manifest.config.size
        + manifest.layers.iter().map(|l| l.size).sum::<u64>();
    assert_eq!(first.size, expected);
    assert_eq!(list[1].id, untagged.config);
    assert!(list[1].names.is_empty());
    assert_eq!(store.remove_untagged().unwrap(), [untagged.manifest.digest]);
    assert_eq!(store.list_images().unwrap().len(), 1);
}

#[test]
fn gc_keeps_reachable_and_removes_unreachable_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let (kept, dropped, stray) = {
        let store = Store::open(dir.path()).unwrap();
        let kept = image(&store, &[("keep", "K")]);
        store.tag("kept", &kept.manifest).unwrap();
        let dropped = image(&store, &[("drop", "D")]);
        store.tag("dropped", &dropped.manifest).unwrap();
        store.untag("dropped").unwrap();
        let stray = store.put_bytes(b"stray blob", None).unwrap();
        // While this process's store lives, its lease protects everything it wrote.
        let other = Store::open(dir.path()).unwrap();
        assert!(other.gc_with(&NO_GRACE).unwrap().removed_blobs.is_empty());
        (kept, dropped, stray)
    };
    let store = Store::open(dir.path()).unwrap();
    let before = files_in(&blobs_dir(dir.path())).len();
    let report = store.gc_with(&NO_GRACE).unwrap();
    let kept_manifest = store.read_manifest(&kept.manifest.digest).unwrap();
    for blob in [
        &kept.manifest.digest,
        &kept.config,
        &kept_manifest.layers[0].digest,
    ] {
        assert!(store.has_blob(blob), "reachable {blob} was removed");
    }
    assert!(!store.has_blob(&stray.digest));
    assert!(!store.has_blob(&dropped.manifest.digest));
    assert!(!store.has_blob(&dropped.config));
    assert_eq!(report.removed_blobs.len(), before - 3);
    assert!(report.freed_bytes >= b"stray blob".len() as u64);
    assert_eq!(store.resolve("kept").unwrap().config, kept.config);
    assert!(store.fsck().unwrap().is_ok());
}

#[test]
fn protect_keeps_an_unindexed_blob_alive_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path()).unwrap();
    let blob = writer.put_bytes(b"cached layer", None).unwrap();
    let collector = Store::open(dir.path()).unwrap();
    collector.gc_with(&NO_GRACE).unwrap();
    assert!(collector.has_blob(&blob.digest));
    writer.release_lease();
    collector.gc_with(&NO_GRACE).unwrap();
    assert!(!collector.has_blob(&blob.digest));
    assert!(
        !writer.protect(&blob.digest).unwrap(),
        "protect reports the blob is gone"
    );
}

#[test]
fn leftovers_of_a_killed_process_are_harmless_and_collected() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap();
    // A half-written temp file, a lease file whose owner died, and the lock files, as a
    // process killed mid-build leaves them.
    std::fs::write(
        dir.path().join("tmp/blob-999999-0-000000000.partial"),
        b"half a lay",
    )
    .unwrap();
    let orphan = Digest::of(b"orphan");
    std::fs::write(blobs_dir(dir.path()).join(orphan.hex()), b"orphan").unwrap();
    std::fs::write(
        dir.path().join("leases/999999-1.lease"),
        format!("{orphan}\nsha256:12"),
    )
    .unwrap();
    assert!(dir.path().join("locks/index.lock").exists());

    let store = Store::open(dir.path()).unwrap();
    let img = image(&store, &[("f", "x")]);
    store.tag("after-crash", &img.manifest).unwrap();
    assert_eq!(store.resolve("after-crash").unwrap().config, img.config);

    // The default grace period keeps a fresh temp file (it could be a writer about to lock it).
    let report = store.gc().unwrap();
    assert_eq!(report.removed_temp_files, 0);
    assert_eq!(
        report.removed_blobs,
        vec![orphan.clone()],
        "dead lease must not protect"
    );
    let report = store.gc_with(&NO_GRACE).unwrap();
    assert_eq!(report.removed_temp_files, 1);
    assert!(files_in(&dir.path().join("tmp")).is_empty());
    assert!(files_in(&dir.path().join("leases"))
        .iter()
        .all(|n| !n.starts_with("999999")));
}

#[test]
fn fsck_finds_corrupt_and_missing_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let img = image(&store, &[("f", "content")]);
    store.tag("checked", &img.manifest).unwrap();
    assert!(store.fsck().unwrap().is_ok());
    let manifest = store.read_manifest(&img.manifest.digest).unwrap();
    let layer = &manifest.layers[0].digest;
    std::fs::write(blobs_dir(dir.path()).join(layer.hex()), b"bit rot").unwrap();
    std::fs::remove_file(blobs_dir(dir.path()).join(img.config.hex())).unwrap();
    let report = store.fsck().unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.corrupt, [(layer.clone(), Digest::of(b"bit rot"))]);
    assert_eq!(report.missing, vec![img.config.clone()]);
    let err = store.read_config(&img.config).unwrap_err();
    assert!(err.to_string().contains(img.config.hex()), "{err}");
}

#[test]
fn concurrent_tagging_from_threads_loses_no_tag() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let img = image(&store, &[("f", "x")]);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (store, manifest, root) = (
                store.clone(),
                img.manifest.clone(),
                dir.path().to_path_buf(),
            );
            std::thread::spawn(move || {
                // Half the threads share the Store, half open their own, as separate tools would.
                let own;
                let s: &Store = if t % 2 == 0 {
                    &store
                } else {
                    own = Store::open(&root).unwrap();
                    &own
                };
                for i in 0..15 {
                    s.tag(&format!("thread{t}:{i}"), &manifest).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.resolve("thread0:0").unwrap().names.len(), 60);
}

/// Run as a child process by `concurrent_tagging_from_processes_loses_no_tag`.
#[test]
#[ignore = "child process helper"]
fn child_tagger() {
    let root = std::env::var("RBUILD_TEST_ROOT").expect("run by the parent test");
    let prefix = std::env::var("RBUILD_TEST_PREFIX").unwrap();
    let digest: Digest = std::env::var("RBUILD_TEST_MANIFEST")
        .unwrap()
        .parse()
        .unwrap();
    let store = Store::open(&root).unwrap();
    let record = store.resolve(&digest.to_string()).unwrap();
    for i in 0..20 {
        store
            .tag(&format!("{prefix}:{i}"), &record.manifest)
            .unwrap();
    }
}

#[test]
fn concurrent_tagging_from_processes_loses_no_tag() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let img = image(&store, &[("f", "x")]);
    store.tag("seed", &img.manifest).unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["proc-a", "proc-b", "proc-c"]
        .iter()
        .map(|prefix| {
            Command::new(&exe)
                .args(["--exact", "child_tagger", "--ignored", "--quiet"])
                .env("RBUILD_TEST_ROOT", dir.path())
                .env("RBUILD_TEST_PREFIX", prefix)
                .env("RBUILD_TEST_MANIFEST", img.manifest.digest.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    // Tag from this process too while the children run.
    for i in 0..20 {
        store.tag(&format!("parent:{i}"), &img.manifest).unwrap();
    }
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let names = store.resolve("seed").unwrap().names;
    assert_eq!(names.len(), 1 + 20 * 4, "{names:?}");
}

/// Run as a child process: writes half a blob and dies without cleaning up.
#[test]
#[ignore = "child process helper"]
fn child_killed_mid_write() {
    let root = std::env::var("RBUILD_TEST_ROOT").expect("run by the parent test");
    let store = Store::open(&root).unwrap();
    let mut w = store.blob_writer().unwrap();
    w.write_all(&[7u8; 100_000]).unwrap();
    w.flush().unwrap();
    std::process::exit(0); // no destructors: like SIGKILL
}

#[test]
fn process_killed_mid_write_leaves_only_a_collectable_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_killed_mid_write", "--ignored", "--quiet"])
        .env("RBUILD_TEST_ROOT", dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        files_in(&blobs_dir(dir.path())).is_empty(),
        "no blob under a final name"
    );
    assert_eq!(files_in(&dir.path().join("tmp")).len(), 1);
    // A live writer's temp file is locked, so gc leaves it alone even with no grace period.
    let mut live = store.blob_writer().unwrap();
    live.write_all(b"in flight").unwrap();
    live.flush().unwrap();
    let report = store.gc_with(&NO_GRACE).unwrap();
    assert_eq!(report.removed_temp_files, 1);
    assert!(report.freed_bytes >= 100_000);
    assert_eq!(
        files_in(&dir.path().join("tmp")).len(),
        1,
        "the live writer's file stays"
    );
    let blob = live.commit(None).unwrap();
    assert!(store.has_blob(&blob.digest));
}

#[test]
fn gc_refuses_to_run_when_a_reachable_manifest_is_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let img = {
        let store = Store::open(dir.path()).unwrap();
        let img = image(&store, &[("f", "x")]);
        store.tag("precious", &img.manifest).unwrap();
        img
    };
    std::fs::write(
        blobs_dir(dir.path()).join(img.manifest.digest.hex()),
        b"garbage",
    )
    .unwrap();
    let store = Store::open(dir.path()).unwrap();
    let before = files_in(&blobs_dir(dir.path()));
    let err = store.gc_with(&NO_GRACE).unwrap_err();
    assert!(err.to_string().contains("nothing was deleted"), "{err}");
    assert_eq!(files_in(&blobs_dir(dir.path())), before);
}

#[test]
fn gc_removes_a_dead_writers_blob_temp_file_without_waiting_ten_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a_minute_ago = std::time::SystemTime::now() - Duration::from_secs(60);
    // A killed build's half-written layer (never locked again), and an index replacement
    // left by a killed process (never locked at all: it keeps the full grace).
    for name in ["blob-999999-0-1.partial", "file-999999-1-1.partial"] {
        let path = dir.path().join("tmp").join(name);
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(a_minute_ago)
            .unwrap();
    }
    // A live writer of the same age is locked: kept.
    let mut live = store.blob_writer().unwrap();
    live.write_all(b"in flight").unwrap();
    live.flush().unwrap();
    for entry in std::fs::read_dir(dir.path().join("tmp")).unwrap().flatten() {
        std::fs::File::options()
            .write(true)
            .open(entry.path())
            .unwrap()
            .set_modified(a_minute_ago)
            .unwrap();
    }
    let report = store.gc().unwrap();
    assert_eq!(report.removed_temp_files, 1);
    let mut left = files_in(&dir.path().join("tmp"));
    left.sort();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter().any(|n| n == "file-999999-1-1.partial"),
        "{left:?}"
    );
    assert!(
        !left.iter().any(|n| n == "blob-999999-0-1.partial"),
        "{left:?}"
    );
    live.commit(None).unwrap();
}
