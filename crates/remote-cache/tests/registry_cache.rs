//! The registry cache against a real `docker-registry`: export, import, concurrent writers,
//! damaged and foreign manifests, layers whose content lies, cache-mount round trips.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Barrier};

use bytes::Bytes;
use rbuild_executor::{cache_mount_dir, RemoteCache};
use rbuild_image::{media_types, Descriptor, Digest, Reference};
use rbuild_layer::WriteOptions;
use rbuild_registry::Client;
use rbuild_remote_cache::{
    export, parse_cache_to, CacheIndex, ExportInput, ImportEvent, MountRestore, RegistryCache,
};
use rbuild_store::{CacheRecord, Store};
use rbuild_testutil::Registry;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A layer holding one file with `content`, stored in `store`, and a record for it.
fn record_with_layer(store: &Store, content: &str) -> CacheRecord {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), content).unwrap();
    let mut writer = store.blob_writer().unwrap();
    let info =
        rbuild_layer::write_dir_layer(dir.path(), &mut writer, &WriteOptions::default()).unwrap();
    let blob = writer.commit(Some(&info.digest)).unwrap();
    let record = CacheRecord {
        key: Digest::of(format!("key of {content}").as_bytes()),
        layer: Descriptor::new(info.media_type, blob.digest, blob.size),
        diff_id: info.diff_id,
        created: "2026-01-01T00:00:00Z".into(),
    };
    store.cache_put(&record).unwrap();
    record
}

fn import(
    client: &Client,
    rt: &tokio::runtime::Runtime,
    r: &str,
) -> (RegistryCache, Vec<ImportEvent>) {
    let mut events = Vec::new();
    let cache = RegistryCache::import(
        client,
        rt.handle(),
        &[Reference::parse(r).unwrap()],
        &mut |e| events.push(e),
    );
    (cache, events)
}

fn export_records(
    client: &Client,
    rt: &tokio::runtime::Runtime,
    store: &Store,
    spec: &str,
    records: &[CacheRecord],
) -> rbuild_remote_cache::ExportReport {
    let target = parse_cache_to(spec).unwrap();
    let sources = HashMap::new();
    export(
        client,
        rt.handle(),
        store,
        &target,
        &ExportInput {
            records,
            final_layers: &[],
            mounts: &[],
            sources: &sources,
        },
    )
    .unwrap()
}

#[test]
fn exported_records_import_into_an_empty_store_with_verified_layers() {
    let registry = Registry::start();
    let rt = runtime();
    let client = Client::default();
    let a = tempfile::tempdir().unwrap();
    let store_a = Store::open(a.path()).unwrap();
    let records: Vec<_> = (0..3)
        .map(|i| record_with_layer(&store_a, &format!("step {i}")))
        .collect();
    let cache_ref = format!("{}/team/cache", registry.host());
    let spec = format!("type=registry,ref={cache_ref},mode=max");

    let report = export_records(&client, &rt, &store_a, &spec, &records);
    assert_eq!((report.records, report.layers, report.pushed), (3, 3, 3));
    assert_eq!(report.attempts, 1);
    // mode=min with no final layers exports nothing new; a second max export finds all.
    let again = export_records(&client, &rt, &store_a, &spec, &records);
    assert_eq!(again.already_there, 3);
    assert_eq!(
        again.attempts, 0,
        "nothing new: the manifest is not rewritten"
    );

    let b = tempfile::tempdir().unwrap();
    let store_b = Store::open(b.path()).unwrap();
    let (cache, events) = import(&client, &rt, &format!("{cache_ref}:buildcache"));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ImportEvent::Loaded { records: 3, .. })),
        "{events:?}"
    );
    for record in &records {
        let hit = cache.lookup(&record.key).expect("imported record");
        assert_eq!(&hit, record);
        assert!(!store_b.has_blob(&hit.layer.digest));
        cache.fetch_layer(&store_b, &hit).unwrap();
        assert!(store_b.has_blob(&hit.layer.digest));
    }
    assert!(cache.lookup(&Digest::of(b"never built")).is_none());

    // Mode min keeps only the final image's layers.
    let only_first = {
        let target = parse_cache_to(&format!("type=registry,ref={cache_ref}:min")).unwrap();
        let sources = HashMap::new();
        export(
            &client,
            rt.handle(),
            &store_a,
            &target,
            &ExportInput {
                records: &records,
                final_layers: &[records[0].layer.digest.clone()],
                mounts: &[],
                sources: &sources,
            },
        )
        .unwrap()
    };
    assert_eq!(only_first.records, 1);
    let (min_cache, _) = import(&client, &rt, &format!("{cache_ref}:min"));
    assert_eq!(min_cache.len(), 1);
    assert!(min_cache.lookup(&records[0].key).is_some());

    // Exporting to another repository of the same registry mounts the known layers.
    let mounted = {
        let target = parse_cache_to(&format!(
            "type=registry,ref={}/other/cache",
            registry.host()
        ))
        .unwrap();
        export(
            &client,
            rt.handle(),
            &store_b,
            &target,
            &ExportInput {
                records: &records,
                final_layers: &records
                    .iter()
                    .map(|r| r.layer.digest.clone())
                    .collect::<Vec<_>>(),
                mounts: &[],
                sources: &cache.sources(),
            },
        )
        .unwrap()
    };
    assert_eq!((mounted.mounted, mounted.pushed), (3, 0), "{mounted:?}");
}

#[test]
fn concurrent_exporters_to_one_ref_keep_the_union() {
    let registry = Registry::start();
    let cache_ref = format!("{}/shared/cache:ci", registry.host());
    let spec = format!("type=registry,ref={cache_ref},mode=max");
    const WRITERS: usize = 3;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let mut all = Vec::new();
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let records: Vec<_> = (0..4)
                .map(|i| record_with_layer(&store, &format!("writer {w} step {i}")))
                .collect();
            all.extend(records.iter().map(|r| r.key.clone()));
            let (barrier, spec) = (barrier.clone(), spec.clone());
            std::thread::spawn(move || {
                let rt = runtime();
                let client = Client::default();
                barrier.wait();
                let report = export_records(&client, &rt, &store, &spec, &records);
                drop(dir);
                report
            })
        })
        .collect();
    let reports: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let rt = runtime();
    let (cache, _) = import(&Client::default(), &rt, &cache_ref);
    for key in &all {
        assert!(
            cache.lookup(key).is_some(),
            "record {key} lost; reports: {reports:?}"
        );
    }
    assert_eq!(cache.len(), all.len());
}

/// Pushes `config` and a manifest naming it (and `layers`) under `reference`.
fn push_raw(
    client: &Client,
    rt: &tokio::runtime::Runtime,
    reference: &Reference,
    config: &[u8],
    config_media_type: &str,
    layers: Vec<Descriptor>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(&path, config).unwrap();
    let digest = Digest::of(config);
    let mut manifest = rbuild_image::Manifest::new_oci(
        Descriptor::new(config_media_type, digest.clone(), config.len() as u64),
        layers,
    );
    manifest.annotations.clear();
    rt.block_on(async {
        client
            .push_blob_from_file(
                reference.registry(),
                reference.repository(),
                &path,
                &digest,
                config.len() as u64,
            )
            .await
            .unwrap();
        client
            .push_manifest(
                reference,
                Bytes::from(serde_json::to_vec(&manifest).unwrap()),
                media_types::OCI_MANIFEST,
            )
            .await
            .unwrap();
    });
}

#[test]
fn damaged_foreign_and_lying_caches_are_never_trusted() {
    let registry = Registry::start();
    let rt = runtime();
    let client = Client::default();
    let a = tempfile::tempdir().unwrap();
    let store = Store::open(a.path()).unwrap();
    let record = record_with_layer(&store, "honest");

    // Garbage config under our media type: ignored with a reason.
    let damaged = Reference::parse(&format!("{}/c/damaged:buildcache", registry.host())).unwrap();
    push_raw(
        &client,
        &rt,
        &damaged,
        b"{\"version\": 1, \"records\": [garbage",
        rbuild_remote_cache::CACHE_CONFIG_MEDIA_TYPE,
        vec![],
    );
    let (cache, events) = import(&client, &rt, &damaged.to_string());
    assert!(cache.is_empty());
    assert!(
        matches!(&events[1], ImportEvent::Ignored { reason, .. } if reason.contains("not valid")),
        "{events:?}"
    );

    // An image (foreign config type) under the tag: ignored.
    let foreign = Reference::parse(&format!("{}/c/foreign:buildcache", registry.host())).unwrap();
    push_raw(
        &client,
        &rt,
        &foreign,
        b"{}",
        media_types::OCI_CONFIG,
        vec![],
    );
    let (cache, events) = import(&client, &rt, &foreign.to_string());
    assert!(cache.is_empty());
    assert!(
        matches!(&events[1], ImportEvent::Ignored { reason, .. } if reason.contains("not an rbuild cache")),
        "{events:?}"
    );

    // ... and an export never replaces it.
    let e = export(
        &client,
        rt.handle(),
        &store,
        &parse_cache_to(&format!("type=registry,ref={foreign},mode=max")).unwrap(),
        &ExportInput {
            records: std::slice::from_ref(&record),
            final_layers: &[],
            mounts: &[],
            sources: &HashMap::new(),
        },
    )
    .unwrap_err();
    assert!(e.contains("refusing to replace it"), "{e}");
    let (_, events) = import(&client, &rt, &foreign.to_string());
    assert!(
        matches!(&events[1], ImportEvent::Ignored { reason, .. } if reason.contains("not an rbuild cache")),
        "{events:?}"
    );

    // A missing ref is no error.
    let (_, events) = import(&client, &rt, &format!("{}/c/none:x", registry.host()));
    assert!(matches!(&events[1], ImportEvent::Missing(_)), "{events:?}");

    // A cache whose record claims a diff id its layer does not have: the hit's fetch fails
    // (the executor then runs the step), nothing is trusted.
    let lying = Reference::parse(&format!("{}/c/lying:buildcache", registry.host())).unwrap();
    let honest_spec = format!("type=registry,ref={lying},mode=max");
    export_records(
        &client,
        &rt,
        &store,
        &honest_spec,
        std::slice::from_ref(&record),
    );
    let mut lie = record.clone();
    lie.diff_id = Digest::of(b"something else");
    let index = CacheIndex {
        records: [(lie.key.clone(), lie.clone())].into_iter().collect(),
        ..Default::default()
    };
    let (config, manifest) = index.encode();
    push_raw(
        &client,
        &rt,
        &lying,
        &config,
        rbuild_remote_cache::CACHE_CONFIG_MEDIA_TYPE,
        manifest.layers,
    );
    let (cache, _) = import(&client, &rt, &lying.to_string());
    let hit = cache.lookup(&lie.key).unwrap();
    let b = tempfile::tempdir().unwrap();
    let e = cache
        .fetch_layer(&Store::open(b.path()).unwrap(), &hit)
        .unwrap_err();
    assert!(e.message.contains("uncompresses to"), "{e}");
    // Not what the cache claimed: the kind says so, apart from the message.
    assert_eq!(e.kind, rbuild_executor::RemoteCacheErrorKind::Untrusted);

    // Exporting over a damaged cache replaces it with a good one.
    let report = export_records(
        &client,
        &rt,
        &store,
        &format!("type=registry,ref={damaged},mode=max"),
        std::slice::from_ref(&record),
    );
    assert_eq!(report.total_records, 1);
    let (cache, _) = import(&client, &rt, &damaged.to_string());
    assert!(cache.lookup(&record.key).is_some());
}

#[test]
fn cache_mount_contents_round_trip_and_local_contents_win() {
    let registry = Registry::start();
    let rt = runtime();
    let client = Client::default();
    let a = tempfile::tempdir().unwrap();
    let store_a = Store::open(a.path()).unwrap();
    let mount_dir = cache_mount_dir(&store_a, "apt").unwrap();
    std::fs::create_dir_all(mount_dir.join("archives")).unwrap();
    std::fs::write(mount_dir.join("archives/pkg.deb"), "package bytes").unwrap();
    let target = parse_cache_to(&format!(
        "type=registry,ref={}/c/mounts,mounts=true",
        registry.host()
    ))
    .unwrap();
    let sources = HashMap::new();
    let mounts = vec![("apt".to_string(), mount_dir.clone())];
    let report = export(
        &client,
        rt.handle(),
        &store_a,
        &target,
        &ExportInput {
            records: &[],
            final_layers: &[],
            mounts: &mounts,
            sources: &sources,
        },
    )
    .unwrap();
    assert_eq!((report.mounts, report.pushed), (1, 1));

    let b = tempfile::tempdir().unwrap();
    let store_b = Store::open(b.path()).unwrap();
    let (cache, _) = import(&client, &rt, &target.reference.to_string());
    let restored = cache.restore_mounts(&store_b);
    assert!(
        matches!(&restored[..], [MountRestore::Restored { id, bytes: 13 }] if id == "apt"),
        "{restored:?}"
    );
    let dir_b = cache_mount_dir(&store_b, "apt").unwrap();
    assert_eq!(
        std::fs::read_to_string(dir_b.join("archives/pkg.deb")).unwrap(),
        "package bytes"
    );
    let mode = std::fs::metadata(&dir_b).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o755
    );
    // Local contents are newer: kept.
    std::fs::write(dir_b.join("archives/pkg.deb"), "newer").unwrap();
    let again = cache.restore_mounts(&store_b);
    assert!(
        matches!(&again[..], [MountRestore::KeptLocal { .. }]),
        "{again:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir_b.join("archives/pkg.deb")).unwrap(),
        "newer"
    );
    assert_no_leftovers(dir_b.parent().unwrap());
}

fn assert_no_leftovers(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            !name.to_string_lossy().starts_with(".import-"),
            "staging directory left behind: {name:?}"
        );
    }
}

#[test]
fn a_cache_mount_layer_that_escapes_its_directory_is_refused() {
    let registry = Registry::start();
    let rt = runtime();
    let client = Client::default();
    // A plain tar whose only entry is `../escaped`.
    let mut header = tar::Header::new_gnu();
    let name = b"../escaped";
    header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    header.set_size(5);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &b"owned"[..]).unwrap();
    let layer = builder.into_inner().unwrap();

    let a = tempfile::tempdir().unwrap();
    let store_a = Store::open(a.path()).unwrap();
    let blob = store_a.put_bytes(&layer, None).unwrap();
    let reference = Reference::parse(&format!("{}/c/evil:buildcache", registry.host())).unwrap();
    let descriptor = Descriptor::new(media_types::OCI_LAYER_TAR, blob.digest.clone(), blob.size);
    let index = CacheIndex {
        records: Default::default(),
        mounts: [(
            "pkgs".to_string(),
            rbuild_remote_cache::MountLayer {
                id: "pkgs".into(),
                layer: descriptor.clone(),
                diff_id: blob.digest.clone(),
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let blob_path = store_a
        .layout_dir()
        .join("blobs/sha256")
        .join(blob.digest.hex());
    rt.block_on(client.push_blob_from_file(
        reference.registry(),
        reference.repository(),
        &blob_path,
        &blob.digest,
        blob.size,
    ))
    .unwrap();
    let (config, manifest) = index.encode();
    push_raw(
        &client,
        &rt,
        &reference,
        &config,
        rbuild_remote_cache::CACHE_CONFIG_MEDIA_TYPE,
        manifest.layers,
    );

    let b = tempfile::tempdir().unwrap();
    let store_b = Store::open(b.path()).unwrap();
    let (cache, _) = import(&client, &rt, &reference.to_string());
    let restored = cache.restore_mounts(&store_b);
    assert!(
        matches!(&restored[..], [MountRestore::Failed { id, reason }]
            if id == "pkgs" && reason.contains("escaped")),
        "{restored:?}"
    );
    let dir = cache_mount_dir(&store_b, "pkgs").unwrap();
    assert!(!dir.exists(), "a refused mount leaves no directory");
    let parent = dir.parent().unwrap();
    assert!(!parent.join("escaped").exists());
    assert!(!parent.parent().unwrap().join("escaped").exists());
    assert_no_leftovers(parent);
}

/// A build step's layer as the executor stores it: plain, marked lazy, with its record.
fn lazy_record(store: &Store, content: &str) -> CacheRecord {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), content.repeat(1000)).unwrap();
    let mut writer = store.blob_writer().unwrap();
    let plain = WriteOptions {
        compression: rbuild_layer::Compression::None,
        ..Default::default()
    };
    let info = rbuild_layer::write_dir_layer(dir.path(), &mut writer, &plain).unwrap();
    let blob = writer.commit(Some(&info.digest)).unwrap();
    store.mark_lazy_layer(&info.diff_id).unwrap();
    let record = CacheRecord {
        key: Digest::of(format!("lazy key of {content}").as_bytes()),
        layer: Descriptor::new(info.media_type, blob.digest, blob.size),
        diff_id: info.diff_id,
        created: "2026-01-01T00:00:00Z".into(),
    };
    store.cache_put(&record).unwrap();
    record
}

/// How many of the store's blobs are gzip or zstd.
fn compressed_blob_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("oci/blobs/sha256"))
        .unwrap()
        .filter(|entry| {
            let bytes = std::fs::read(entry.as_ref().unwrap().path()).unwrap();
            rbuild_layer::Compression::detect(&bytes[..bytes.len().min(4)])
                != rbuild_layer::Compression::None
        })
        .count()
}

#[test]
fn lazy_layers_are_exported_compressed_and_a_second_export_compresses_nothing() {
    let registry = Registry::start();
    let rt = runtime();
    let client = Client::default();
    let a = tempfile::tempdir().unwrap();
    let store_a = Store::open(a.path()).unwrap();
    let records: Vec<_> = (0..2)
        .map(|i| lazy_record(&store_a, &format!("lazy step {i}\n")))
        .collect();
    assert_eq!(compressed_blob_count(a.path()), 0);
    let cache_ref = format!("{}/team/lazy-cache", registry.host());
    let spec = format!("type=registry,ref={cache_ref},mode=max");

    let report = export_records(&client, &rt, &store_a, &spec, &records);
    assert_eq!((report.records, report.pushed), (2, 2));
    assert_eq!(
        compressed_blob_count(a.path()),
        2,
        "each layer compressed once"
    );
    let again = export_records(&client, &rt, &store_a, &spec, &records);
    assert_eq!(again.already_there, 2);
    assert_eq!(
        compressed_blob_count(a.path()),
        2,
        "the second export compressed"
    );

    // What the registry holds is gzip, and imports as the same steps on the same diff ids.
    let b = tempfile::tempdir().unwrap();
    let store_b = Store::open(b.path()).unwrap();
    let (cache, _) = import(&client, &rt, &format!("{cache_ref}:buildcache"));
    for record in &records {
        let hit = cache.lookup(&record.key).expect("imported record");
        assert_eq!(hit.diff_id, record.diff_id);
        assert_eq!(hit.layer.media_type, media_types::OCI_LAYER_GZIP);
        assert_ne!(hit.layer.digest, record.layer.digest);
        cache.fetch_layer(&store_b, &hit).unwrap();
        assert!(store_b.has_blob(&hit.layer.digest));
    }
}
