//! Pull and push between a store and a real `docker-registry`: a hand-made two-platform index
//! (amd64 and arm64 configs over one busybox layer) goes up whole and comes back into an
//! empty store with every digest unchanged; blobs are skipped, mounted and leased.

use std::process::Command;

use rbuild_image::{media_types, Descriptor, Digest, ImageConfig, Index, Platform, Reference};
use rbuild_registry::{Client, ClientOptions};
use rbuild_store::{ImageRecord, RemoteBlob, Store};
use rbuild_testutil::{busybox_rootfs, Registry};
use rbuild_transfer::{
    pull, push, Event, NoProgress, PlatformChoice, PullOptions, PushOptions, RecordingProgress,
    RegistryBlobFetcher,
};

fn client(dir: &std::path::Path) -> Client {
    Client::new(ClientOptions {
        // No credentials from the machine's own Docker config.
        docker_config: rbuild_registry::DockerConfig::in_dir(dir.join("docker-config")),
        ..ClientOptions::default()
    })
}

/// A gzip layer of a busybox rootfs, made with tar and gzip; returns (descriptor, diff id).
fn busybox_layer(store: &Store, dir: &std::path::Path) -> (Descriptor, Digest) {
    let rootfs = dir.join("rootfs");
    busybox_rootfs(&rootfs);
    let tar = Command::new("tar")
        .args(["--sort=name", "--owner=0", "--group=0", "--mtime=@0", "-C"])
        .arg(&rootfs)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let tar_path = dir.join("layer.tar");
    std::fs::write(&tar_path, &tar.stdout).unwrap();
    let gz = Command::new("gzip")
        .args(["-n", "-c"])
        .arg(&tar_path)
        .output()
        .unwrap();
    assert!(gz.status.success());
    let blob = store.put_bytes(&gz.stdout, None).unwrap();
    (
        blob.descriptor(media_types::OCI_LAYER_GZIP),
        Digest::of(&tar.stdout),
    )
}

fn image_for(store: &Store, arch: &str, layer: &Descriptor, diff_id: &Digest) -> Descriptor {
    let config = ImageConfig::from_slice(
        serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let record = store
        .put_image(&config, std::slice::from_ref(layer))
        .unwrap();
    let mut desc = record.manifest;
    desc.platform = Some(Platform::new("linux", arch, ""));
    desc
}

/// The stored index: two platforms over one layer. Returns (index descriptor, manifests).
fn two_platform_index(store: &Store, dir: &std::path::Path) -> (Descriptor, Vec<Descriptor>) {
    let (layer, diff_id) = busybox_layer(store, dir);
    let manifests = vec![
        image_for(store, "amd64", &layer, &diff_id),
        image_for(store, "arm64", &layer, &diff_id),
    ];
    let index = Index {
        manifests: manifests.clone(),
        ..Index::default()
    };
    let desc = store
        .put_index_bytes(&index.to_canonical_json().unwrap())
        .unwrap();
    assert_eq!(desc.media_type, media_types::OCI_INDEX);
    (desc, manifests)
}

fn count(events: &[Event], pred: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_platform_index_round_trips_with_digests_unchanged() {
    let registry = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let client = client(tmp.path());
    let source = Store::open(tmp.path().join("source")).unwrap();
    let (index_desc, manifests) = two_platform_index(&source, tmp.path());
    let destination: Reference = format!("{}/multi/app:v1", registry.host()).parse().unwrap();

    let progress = RecordingProgress::default();
    let pushed = push(
        &client,
        &source,
        &index_desc,
        &destination,
        &PushOptions::default(),
        &progress,
    )
    .await
    .unwrap();
    assert_eq!(pushed, index_desc.digest);
    let events = progress.events();
    // One shared layer and two configs, each uploaded once; two manifests and the index.
    assert_eq!(
        count(&events, |e| matches!(e, Event::BlobPushed { .. })),
        3,
        "{events:#?}"
    );
    assert_eq!(
        count(&events, |e| matches!(e, Event::ManifestPushed { .. })),
        3
    );

    // Again: the registry has everything.
    let progress = RecordingProgress::default();
    push(
        &client,
        &source,
        &index_desc,
        &destination,
        &PushOptions::default(),
        &progress,
    )
    .await
    .unwrap();
    let events = progress.events();
    assert_eq!(
        count(&events, |e| matches!(e, Event::BlobExists { .. })),
        3,
        "{events:#?}"
    );
    assert_eq!(count(&events, |e| matches!(e, Event::BlobPushed { .. })), 0);

    // To another repository of the same registry: mounted, not uploaded.
    let copy: Reference = format!("{}/multi/copy:v1", registry.host())
        .parse()
        .unwrap();
    let progress = RecordingProgress::default();
    push(
        &client,
        &source,
        &index_desc,
        &copy,
        &PushOptions::default(),
        &progress,
    )
    .await
    .unwrap();
    let events = progress.events();
    assert_eq!(
        count(
            &events,
            |e| matches!(e, Event::BlobMounted { from, .. } if from == "multi/app")
        ),
        3,
        "{events:#?}"
    );

    // With cross-repository mounts off, no mount is asked for: every blob is uploaded.
    let unmounted: Reference = format!("{}/multi/unmounted:v1", registry.host())
        .parse()
        .unwrap();
    let progress = RecordingProgress::default();
    push(
        &client,
        &source,
        &index_desc,
        &unmounted,
        &PushOptions {
            cross_repository_mount: false,
            ..PushOptions::default()
        },
        &progress,
    )
    .await
    .unwrap();
    let events = progress.events();
    assert_eq!(
        count(&events, |e| matches!(e, Event::BlobMounted { .. })),
        0,
        "{events:#?}"
    );
    assert_eq!(
        count(&events, |e| matches!(e, Event::BlobPushed { .. })),
        3,
        "{events:#?}"
    );

    // All platforms into an empty store: the index and both manifests, byte for byte.
    let all = Store::open(tmp.path().join("all")).unwrap();
    let options = PullOptions {
        platforms: PlatformChoice::All,
        ..PullOptions::default()
    };
    let record = pull(&client, &all, &copy, &options, &NoProgress)
        .await
        .unwrap();
    assert_eq!(record.manifest.digest, index_desc.digest);
    assert_eq!(record.manifest.media_type, media_types::OCI_INDEX);
    assert_eq!(record.names, [copy.to_string()]);
    assert_eq!(
        all.read_blob(&index_desc.digest).unwrap(),
        source.read_blob(&index_desc.digest).unwrap()
    );
    for manifest in &manifests {
        assert_eq!(
            all.read_blob(&manifest.digest).unwrap(),
            source.read_blob(&manifest.digest).unwrap()
        );
        let parsed = all.read_manifest(&manifest.digest).unwrap();
        for blob in std::iter::once(&parsed.config).chain(&parsed.layers) {
            assert!(all.has_blob(&blob.digest), "{} missing", blob.digest);
        }
    }
    assert!(all.fsck().unwrap().is_ok());
    // And it pushes back whole from there.
    let again: Reference = format!("{}/multi/again:v1", registry.host())
        .parse()
        .unwrap();
    let digest = push(
        &client,
        &all,
        &record.manifest,
        &again,
        &PushOptions::default(),
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(digest, index_desc.digest);

    // One platform: that manifest alone, its config's architecture the one asked for.
    let one = Store::open(tmp.path().join("one")).unwrap();
    let options = PullOptions {
        platforms: PlatformChoice::One("linux/arm64".parse().unwrap()),
        ..PullOptions::default()
    };
    let progress = RecordingProgress::default();
    let record: ImageRecord = pull(&client, &one, &copy, &options, &progress)
        .await
        .unwrap();
    assert_eq!(record.manifest.digest, manifests[1].digest);
    assert_eq!(
        one.read_config(&record.config).unwrap().architecture,
        "arm64"
    );
    assert!(!one.has_blob(&index_desc.digest));
    assert!(!one.has_blob(&manifests[0].digest));
    let events = progress.events();
    assert_eq!(
        count(&events, |e| matches!(e, Event::BlobPulled { .. })),
        2,
        "{events:#?}"
    );

    // A platform the index lacks is a clear error naming what it has.
    let err = pull(
        &client,
        &Store::open(tmp.path().join("none")).unwrap(),
        &copy,
        &PullOptions {
            platforms: PlatformChoice::One("linux/s390x".parse().unwrap()),
            ..PullOptions::default()
        },
        &NoProgress,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("linux/s390x") && err.contains("linux/arm64"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_being_pushed_are_leased_against_a_concurrent_prune() {
    let registry = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let image = {
        let store = Store::open(&root).unwrap();
        let (layer, diff_id) = busybox_layer(&store, tmp.path());
        image_for(&store, "amd64", &layer, &diff_id)
        // The writer's lease ends here: nothing but the push's own lease protects the blobs.
    };
    let pusher = Store::open(&root).unwrap();
    pusher.remove_untagged().unwrap();
    let destination: Reference = format!("{}/leased:v1", registry.host()).parse().unwrap();
    push(
        &client(tmp.path()),
        &pusher,
        &image,
        &destination,
        &PushOptions::default(),
        &NoProgress,
    )
    .await
    .unwrap();

    // Another process's prune (a second open of the store holds its own locks).
    let pruner = Store::open(&root).unwrap();
    let report = pruner.gc().unwrap();
    assert!(report.removed_blobs.is_empty(), "{report:?}");
    let manifest = pusher.read_manifest(&image.digest).unwrap();
    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
        assert!(pusher.has_blob(&blob.digest));
    }
    // Once the pusher is gone, the unreferenced blobs are collectable.
    drop(pusher);
    let report = pruner.gc().unwrap();
    assert_eq!(report.removed_blobs.len(), 3, "{report:?}");
}

/// A plain layer of `files` (name, bytes) recorded as lazy, as a build step stores it.
fn lazy_layer(store: &Store, dir: &std::path::Path, files: &[(&str, Vec<u8>)]) -> Descriptor {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let mut writer = store.blob_writer().unwrap();
    let options = rbuild_layer::WriteOptions {
        compression: rbuild_layer::Compression::None,
        source_date_epoch: Some(0),
        ..Default::default()
    };
    let info = rbuild_layer::write_dir_layer(dir, &mut writer, &options).unwrap();
    let blob = writer.commit(Some(&info.digest)).unwrap();
    store.mark_lazy_layer(&info.diff_id).unwrap();
    Descriptor::new(info.media_type, blob.digest, blob.size)
}

/// Issue 18: a local image's lazy plain layers are compressed for the push (each upload
/// starting as its blob is ready) and go up as the manifest a compressing build would have
/// stored; a second push compresses and uploads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_images_plain_layers_go_up_compressed_and_only_once() {
    let registry = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let client = client(tmp.path());
    let store = Store::open(tmp.path().join("store")).unwrap();
    // Three layers, one large enough to take several gzip blocks.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let layers = vec![
        lazy_layer(&store, &tmp.path().join("l1"), &[("big", big)]),
        lazy_layer(&store, &tmp.path().join("l2"), &[("a", b"a\n".to_vec())]),
        lazy_layer(&store, &tmp.path().join("l3"), &[("b", b"b\n".to_vec())]),
    ];
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.to_string()).collect();
    let config = ImageConfig::from_slice(
        serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let record = store.put_image(&config, &layers).unwrap();
    let destination: Reference = format!("{}/lazy/app:v1", registry.host()).parse().unwrap();

    let progress = RecordingProgress::default();
    let pushed = push(
        &client,
        &store,
        &record.manifest,
        &destination,
        &PushOptions::default(),
        &progress,
    )
    .await
    .unwrap();
    // The manifest that went up lists gzip layers, each hashing (decompressed) to its diff
    // id, and is the one the store gives as shipped (now compressing nothing).
    let shipped = store
        .shipped_manifest(&record.manifest, &rbuild_layer::WriteOptions::default())
        .unwrap();
    assert_eq!(pushed, shipped.digest);
    assert_ne!(pushed, record.manifest.digest);
    let manifest = store.read_manifest(&shipped.digest).unwrap();
    assert_eq!(manifest.layers.len(), 3);
    for (layer, plain) in manifest.layers.iter().zip(&layers) {
        assert_eq!(layer.media_type, media_types::OCI_LAYER_GZIP);
        let blob = store.read_blob(&layer.digest).unwrap();
        let mut tar = Vec::new();
        std::io::Read::read_to_end(
            &mut rbuild_layer::compression::decompressing_reader(&blob[..]).unwrap(),
            &mut tar,
        )
        .unwrap();
        assert_eq!(Digest::of(&tar), plain.digest);
    }
    let events = progress.events();
    // Three layers and the config, each uploaded once.
    assert_eq!(
        count(&events, |e| matches!(e, Event::BlobPushed { .. })),
        4,
        "{events:#?}"
    );

    // Again, to another tag: every blob is there and nothing is compressed again.
    let blobs_before = std::fs::read_dir(store.layout_dir().join("blobs/sha256"))
        .unwrap()
        .count();
    let again: Reference = format!("{}/lazy/app:v2", registry.host()).parse().unwrap();
    let progress = RecordingProgress::default();
    let pushed_again = push(
        &client,
        &store,
        &record.manifest,
        &again,
        &PushOptions::default(),
        &progress,
    )
    .await
    .unwrap();
    assert_eq!(pushed_again, pushed);
    let events = progress.events();
    assert_eq!(
        count(&events, |e| matches!(e, Event::BlobPushed { .. })),
        0,
        "{events:#?}"
    );
    let blobs_after = std::fs::read_dir(store.layout_dir().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs_after, blobs_before, "a second push wrote blobs");
}

/// A layer recorded remote (a registry-cache hit) goes to another repository of its
/// registry by a cross-repository mount, without being fetched; with mounts off it is
/// fetched and uploaded, and no mount is asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_layer_is_mounted_unfetched_unless_mounts_are_off() {
    let registry = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let client = client(tmp.path());
    // The layer goes up from one store...
    let first = Store::open(tmp.path().join("first")).unwrap();
    let (layer, diff_id) = busybox_layer(&first, tmp.path());
    let image = image_for(&first, "amd64", &layer, &diff_id);
    let cache: Reference = format!("{}/cache/layers:v1", registry.host())
        .parse()
        .unwrap();
    push(
        &client,
        &first,
        &image,
        &cache,
        &PushOptions::default(),
        &NoProgress,
    )
    .await
    .unwrap();

    // ... and another store only records it as being there.
    let store = Store::open(tmp.path().join("lazy")).unwrap();
    store.set_blob_fetcher(std::sync::Arc::new(RegistryBlobFetcher::new(&client)));
    store
        .record_remote_blob(&RemoteBlob {
            registry: registry.host().to_string(),
            repository: "cache/layers".into(),
            descriptor: layer.clone(),
            diff_id: diff_id.clone(),
        })
        .unwrap();
    let image = image_for(&store, "amd64", &layer, &diff_id);
    let short = |reference: &str| -> Reference {
        format!("{}/{reference}", registry.host()).parse().unwrap()
    };

    let progress = RecordingProgress::default();
    push(
        &client,
        &store,
        &image,
        &short("other/app:v1"),
        &PushOptions::default(),
        &progress,
    )
    .await
    .unwrap();
    let events = progress.events();
    assert_eq!(
        count(&events, |e| matches!(
            e,
            Event::BlobMounted { digest, from, .. } if digest == &layer.digest && from == "cache/layers"
        )),
        1,
        "{events:#?}"
    );
    assert!(!store.has_blob(&layer.digest), "the push fetched the layer");
    assert!(store.has_blob_or_remote(&layer.digest));

    let progress = RecordingProgress::default();
    push(
        &client,
        &store,
        &image,
        &short("unmounted/app:v1"),
        &PushOptions {
            cross_repository_mount: false,
            ..PushOptions::default()
        },
        &progress,
    )
    .await
    .unwrap();
    let events = progress.events();
    assert_eq!(
        count(&events, |e| matches!(e, Event::BlobMounted { .. })),
        0,
        "{events:#?}"
    );
    assert_eq!(
        count(
            &events,
            |e| matches!(e, Event::BlobPushed { digest, .. } if digest == &layer.digest)
        ),
        1,
        "{events:#?}"
    );
    assert!(store.has_blob(&layer.digest), "uploaded without its bytes");
    assert!(store.fsck().unwrap().is_ok());
}
