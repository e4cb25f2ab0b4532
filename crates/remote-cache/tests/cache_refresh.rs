//! The export keeps a cache ref fresh: this build's result wins for a key the ref already
//! holds (BuildKit's export replaces the ref with the build's records), and records no
//! build has exported for longer than `expire-unused` are dropped. Against a real
//! `docker-registry`; needs the Debian package docker-registry.

use std::collections::HashMap;

use rbuild_executor::RemoteCache;
use rbuild_image::{Descriptor, Digest, Reference};
use rbuild_layer::WriteOptions;
use rbuild_registry::Client;
use rbuild_remote_cache::{export_on_day, parse_cache_to, ExportInput, RegistryCache};
use rbuild_store::{CacheRecord, Store};
use rbuild_testutil::Registry;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A record for `key` whose layer holds one file with `content`, stored in `store`.
fn record(store: &Store, key: &str, content: &str) -> CacheRecord {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), content).unwrap();
    let mut writer = store.blob_writer().unwrap();
    let info =
        rbuild_layer::write_dir_layer(dir.path(), &mut writer, &WriteOptions::default()).unwrap();
    let blob = writer.commit(Some(&info.digest)).unwrap();
    CacheRecord {
        key: Digest::of(key.as_bytes()),
        layer: Descriptor::new(info.media_type, blob.digest, blob.size),
        diff_id: info.diff_id,
        created: "2026-01-01T00:00:00Z".into(),
    }
}

struct Exporter {
    client: Client,
    rt: tokio::runtime::Runtime,
    store: Store,
    _dir: tempfile::TempDir,
}

impl Exporter {
    fn new() -> Exporter {
        let dir = tempfile::tempdir().unwrap();
        Exporter {
            client: Client::default(),
            rt: runtime(),
            store: Store::open(dir.path()).unwrap(),
            _dir: dir,
        }
    }

    fn export(
        &self,
        spec: &str,
        records: &[CacheRecord],
        day: u32,
    ) -> rbuild_remote_cache::ExportReport {
        let target = parse_cache_to(spec).unwrap();
        let sources = HashMap::new();
        export_on_day(
            &self.client,
            self.rt.handle(),
            &self.store,
            &target,
            &ExportInput {
                records,
                final_layers: &[],
                mounts: &[],
                sources: &sources,
            },
            day,
        )
        .unwrap()
    }

    fn import(&self, reference: &str) -> RegistryCache {
        RegistryCache::import(
            &self.client,
            self.rt.handle(),
            &[Reference::parse(reference).unwrap()],
            &mut |_| {},
        )
    }
}

#[test]
fn this_builds_record_wins_and_unused_records_expire() {
    let registry = Registry::start();
    let cache_ref = format!("{}/team/cache:ci", registry.host());
    let spec = format!("type=registry,ref={cache_ref},mode=max");
    let x = Exporter::new();

    // A first build exports step K with result "old", and step J.
    let old = record(&x.store, "K", "old");
    let j = record(&x.store, "J", "j");
    x.export(&spec, &[old.clone(), j.clone()], 100);
    // A later build (say `--no-cache`) made another result for K: the ref now gives it.
    let new = record(&x.store, "K", "new");
    let report = x.export(&spec, std::slice::from_ref(&new), 100);
    assert_eq!(report.attempts, 1, "the ref is rewritten: {report:?}");
    assert_eq!(report.total_records, 2);
    let cache = x.import(&cache_ref);
    assert_eq!(cache.lookup(&new.key), Some(new.clone()));
    assert_eq!(cache.lookup(&j.key), Some(j.clone()), "other keys stay");
    // The same export again, the same day, writes nothing.
    let again = x.export(&spec, std::slice::from_ref(&new), 100);
    assert_eq!(again.attempts, 0, "{again:?}");

    // Day 110: a build exports only K. J (last used day 100) is still within 14 days.
    let report = x.export(&spec, std::slice::from_ref(&new), 110);
    assert_eq!((report.attempts, report.expired), (1, 0), "{report:?}");
    assert!(x.import(&cache_ref).lookup(&j.key).is_some());
    // Day 115: J has not been exported for 15 days; it is dropped, K is kept.
    let report = x.export(&spec, std::slice::from_ref(&new), 115);
    assert_eq!(report.expired, 1, "{report:?}");
    let cache = x.import(&cache_ref);
    assert!(cache.lookup(&j.key).is_none());
    assert_eq!(cache.lookup(&new.key), Some(new.clone()));

    // expire-unused is configurable, and `never` keeps everything.
    let keep_ref = format!("{}/team/cache:keep", registry.host());
    let keep = format!("type=registry,ref={keep_ref},mode=max,expire-unused=never");
    x.export(&keep, std::slice::from_ref(&j), 100);
    let report = x.export(&keep, std::slice::from_ref(&new), 1000);
    assert_eq!(report.expired, 0);
    assert!(x.import(&keep_ref).lookup(&j.key).is_some());
    let short = format!("type=registry,ref={keep_ref},mode=max,expire-unused=2d");
    let report = x.export(&short, std::slice::from_ref(&new), 1003);
    assert_eq!(report.expired, 1, "{report:?}");
    assert!(x.import(&keep_ref).lookup(&j.key).is_none());
}
