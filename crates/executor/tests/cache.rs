//! The local step cache, end to end with real RUN steps: what hits, what misses, and that a
//! hit reproduces the first build exactly. Needs root and Debian's busybox-static. The
//! binary is its own sandbox helper, so it has its own `main`.

mod support;

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use std::sync::Mutex;

use rbuild_executor::{
    build_with_cache, BuildError, BuildRequest, LocalImages, RemoteCache, RemoteCacheError,
    RemoteCacheErrorKind,
};
use rbuild_image::Digest;
use rbuild_sandbox::test_support::run_tests;
use rbuild_store::CachePrunePolicy;
use rbuild_store::{CacheRecord, Store};
use support::{serve_dir, Fixture};

fn main() -> ExitCode {
    rbuild_sandbox::maybe_run_helper();
    run_tests(&[
        (
            "warm_rebuild_runs_nothing_and_gives_the_same_image",
            warm_rebuild_runs_nothing_and_gives_the_same_image,
        ),
        (
            "comments_unrelated_files_touch_ignored_files_and_labels_hit",
            comments_unrelated_files_touch_ignored_files_and_labels_hit,
        ),
        (
            "content_and_mode_changes_miss_from_that_step_and_are_explained",
            content_and_mode_changes_miss_from_that_step_and_are_explained,
        ),
        (
            "build_args_invalidate_only_steps_that_see_them",
            build_args_invalidate_only_steps_that_see_them,
        ),
        ("no_cache_and_no_cache_filter", no_cache_and_no_cache_filter),
        (
            "bind_mount_content_counts_secret_content_does_not",
            bind_mount_content_counts_secret_content_does_not,
        ),
        (
            "stages_served_from_the_cache_are_extracted_only_when_read",
            stages_served_from_the_cache_are_extracted_only_when_read,
        ),
        (
            "a_registry_layer_that_cannot_be_fetched_fails_with_its_kind",
            a_registry_layer_that_cannot_be_fetched_fails_with_its_kind,
        ),
        (
            "add_url_is_keyed_by_content_or_checksum",
            add_url_is_keyed_by_content_or_checksum,
        ),
        (
            "copying_the_same_file_again_changes_nothing",
            copying_the_same_file_again_changes_nothing,
        ),
        (
            "remote_hits_fetch_only_the_layers_that_are_needed",
            remote_hits_fetch_only_the_layers_that_are_needed,
        ),
        (
            "cache_keeps_layers_through_gc_and_prune_drops_them",
            cache_keeps_layers_through_gc_and_prune_drops_them,
        ),
        (
            "a_copy_after_cached_steps_writes_into_an_empty_tree_the_layer_of_the_full_rootfs",
            a_copy_after_cached_steps_writes_into_an_empty_tree_the_layer_of_the_full_rootfs,
        ),
        (
            "a_copy_after_steps_run_leaves_their_tree_for_the_next_build",
            a_copy_after_steps_run_leaves_their_tree_for_the_next_build,
        ),
        (
            "a_copy_the_empty_tree_cannot_stand_for_runs_on_the_full_rootfs",
            a_copy_the_empty_tree_cannot_stand_for_runs_on_the_full_rootfs,
        ),
        (
            "a_stages_last_run_leaves_its_changes_off_the_rootfs_until_read",
            a_stages_last_run_leaves_its_changes_off_the_rootfs_until_read,
        ),
        (
            "a_copy_into_an_empty_tree_follows_hostile_symlinks_inside_the_root",
            a_copy_into_an_empty_tree_follows_hostile_symlinks_inside_the_root,
        ),
    ])
}

/// FROM(1) ARG(2) ENV(3) WORKDIR(4) COPY(5) COPY(6) RUN random(7) RUN(8) LABEL(9).
const APP: &str = "FROM busybox
# a comment
ARG V=1
ENV A=1
WORKDIR /app
COPY app.txt ./
COPY dir/ ./dir/
RUN head -c 16 /dev/urandom | od -x > random && echo ran-$V
RUN cat app.txt > copy && ls dir > listing
LABEL x=1
";

fn app_fixture() -> Fixture {
    let fx = Fixture::new();
    fx.file("app.txt", "hello\n", 0o644)
        .file("dir/a", "a\n", 0o644)
        .file("dir/skip.log", "log 1\n", 0o644)
        .file("unrelated.txt", "1\n", 0o644)
        .file(".dockerignore", "dir/*.log\n", 0o644);
    fx
}

fn steps(list: &[(String, usize)]) -> Vec<usize> {
    list.iter().map(|(_, s)| *s).collect()
}

fn warm_rebuild_runs_nothing_and_gives_the_same_image() {
    let fx = app_fixture();
    let started = Instant::now();
    let (first, events) = fx.run(&fx.request(APP));
    let cold = started.elapsed();
    assert_eq!(
        steps(&events.ran()),
        vec![4, 5, 6, 7, 8],
        "cold: every layer step runs"
    );
    assert!(events.cached().is_empty());

    let started = Instant::now();
    let (second, events) = fx.run(&fx.request(APP));
    let warm = started.elapsed();
    assert_eq!(steps(&events.cached()), vec![4, 5, 6, 7, 8]);
    assert!(events.ran().is_empty(), "nothing runs: {:?}", events.ran());
    assert!(
        events.output().is_empty(),
        "no RUN printed anything: {:?}",
        events.output()
    );
    // The random RUN's layer, history times and so the whole image are the first build's.
    assert_eq!(second.manifest, first.manifest);
    assert_eq!(second.image_id, first.image_id);
    assert_eq!(second.cache_records, first.cache_records);
    assert_eq!(first.cache_records.len(), 5);
    eprintln!("    cold {cold:?}, warm {warm:?}");
}

fn comments_unrelated_files_touch_ignored_files_and_labels_hit() {
    let fx = app_fixture();
    let (first, _) = fx.run(&fx.request(APP));
    // A changed comment (which also moves every line), an unrelated file, a touched copied
    // file, a changed ignored file and a changed LABEL.
    let dockerfile = APP
        .replace("# a comment", "# another comment\n\n# and one more")
        .replace("LABEL x=1", "LABEL x=2");
    fx.file("unrelated.txt", "2\n", 0o644)
        .file("dir/skip.log", "log 2\n", 0o644);
    let later = SystemTime::now() + Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(fx.context.join("app.txt"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let (second, events) = fx.run(&fx.request(&dockerfile));
    assert_eq!(steps(&events.cached()), vec![4, 5, 6, 7, 8]);
    assert!(events.ran().is_empty());
    let layers = |r: &rbuild_executor::BuildResult| -> Vec<String> {
        r.cache_records
            .iter()
            .map(|c| c.layer.digest.to_string())
            .collect()
    };
    assert_eq!(layers(&second), layers(&first));
    assert_ne!(second.image_id, first.image_id, "the label did change");
}

fn content_and_mode_changes_miss_from_that_step_and_are_explained() {
    let fx = app_fixture();
    fx.run(&fx.request(APP));
    fx.file("app.txt", "changed\n", 0o644);
    let mut request = fx.request(APP);
    request.explain_misses = true;
    let (_, events) = fx.run(&request);
    assert_eq!(steps(&events.cached()), vec![4]);
    assert_eq!(steps(&events.ran()), vec![5, 6, 7, 8]);
    let misses = events.misses();
    assert_eq!(misses[0], "#5 source app.txt changed", "{misses:?}");
    assert_eq!(misses[1], "#6 the step before it changed", "{misses:?}");

    // Same content, another mode: a different file in the image, so a miss.
    fx.file("app.txt", "changed\n", 0o755);
    let (_, events) = fx.run(&request);
    assert_eq!(steps(&events.ran()), vec![5, 6, 7, 8]);
    assert_eq!(events.misses()[0], "#5 source app.txt changed");

    // A file added inside a copied directory.
    fx.file("dir/b", "b\n", 0o644);
    let (_, events) = fx.run(&request);
    assert_eq!(steps(&events.cached()), vec![4, 5]);
    assert_eq!(events.misses()[0], "#6 source dir/b is new");
}

fn build_args_invalidate_only_steps_that_see_them() {
    let fx = app_fixture();
    fx.run(&fx.request(APP));
    let (_, events) = fx.run(&fx.request(APP).with_build_arg("V", "2"));
    assert_eq!(steps(&events.cached()), vec![4, 5, 6]);
    assert_eq!(steps(&events.ran()), vec![7, 8]);
    assert!(events.output().contains(&"ran-2".to_string()));

    // An ARG declared only in a later stage does not touch the earlier one.
    let two = "FROM busybox AS a\nRUN echo a > /a\n\
               FROM a AS b\nARG ONLY_B=x\nRUN echo $ONLY_B > /b\n";
    fx.run(&fx.request(two));
    let (_, events) = fx.run(&fx.request(two).with_build_arg("ONLY_B", "y"));
    assert_eq!(events.cached(), vec![("a".to_string(), 2)]);
    assert_eq!(events.ran(), vec![("b".to_string(), 3)]);
    // Proxy args are not part of the key (BuildKit).
    let (_, events) = fx.run(
        &fx.request(two)
            .with_build_arg("ONLY_B", "y")
            .with_build_arg("HTTP_PROXY", "http://proxy.invalid:3128"),
    );
    assert_eq!(steps(&events.cached()), vec![2, 3]);
}

fn no_cache_and_no_cache_filter() {
    let fx = app_fixture();
    let (first, _) = fx.run(&fx.request(APP));
    let mut request = fx.request(APP);
    request.no_cache = true;
    let (second, events) = fx.run(&request);
    assert!(events.cached().is_empty());
    assert_eq!(steps(&events.ran()), vec![4, 5, 6, 7, 8]);
    assert_ne!(
        second.cache_records[3].diff_id, first.cache_records[3].diff_id,
        "the random step really ran again"
    );
    // The next build hits the newest results.
    let (third, events) = fx.run(&fx.request(APP));
    assert_eq!(steps(&events.cached()), vec![4, 5, 6, 7, 8]);
    assert_eq!(third.manifest, second.manifest);

    let two = "FROM busybox AS a\nRUN echo a > /a\nFROM a AS b\nRUN echo b > /b\n";
    fx.run(&fx.request(two));
    let mut request = fx.request(two);
    request.no_cache_filter = vec!["b".into()];
    let (_, events) = fx.run(&request);
    assert_eq!(events.cached(), vec![("a".to_string(), 2)]);
    assert_eq!(events.ran(), vec![("b".to_string(), 2)]);
}

fn bind_mount_content_counts_secret_content_does_not() {
    let fx = Fixture::new();
    fx.file("data.txt", "1\n", 0o644);
    let secret = fx.tmp.path().join("token");
    std::fs::write(&secret, "s3cret-1").unwrap();
    let df = "FROM busybox\n\
              RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /n\n\
              RUN --mount=type=bind,source=data.txt,target=/d cat /d > /out\n";
    let request = |fx: &Fixture| -> BuildRequest {
        let mut r = fx.request(df);
        r.secrets.insert("tok".into(), secret.clone());
        r
    };
    fx.run(&request(&fx));
    std::fs::write(&secret, "s3cret-2").unwrap();
    let (_, events) = fx.run(&request(&fx));
    assert_eq!(
        steps(&events.cached()),
        vec![2, 3],
        "a secret is not an input"
    );
    fx.file("data.txt", "2\n", 0o644);
    let mut explained = request(&fx);
    explained.explain_misses = true;
    let (_, events) = fx.run(&explained);
    assert_eq!(steps(&events.cached()), vec![2]);
    assert_eq!(steps(&events.ran()), vec![3], "the bound file is");
    assert_eq!(events.misses(), vec!["#3 mount /d data.txt changed"]);

    // A mount's flags are inputs too (here a secret's target), named by the mount.
    let moved = df
        .replace("id=tok ", "id=tok,target=/t ")
        .replace("/run/secrets/tok", "/t");
    let mut request = fx.request(&moved);
    request.secrets.insert("tok".into(), secret.clone());
    request.explain_misses = true;
    let (_, events) = fx.run(&request);
    assert_eq!(steps(&events.ran()), vec![2, 3]);
    let misses = events.misses();
    assert!(misses[0].starts_with("#2 "), "{misses:?}");
    assert!(misses[0].contains("mount 0 - is gone"), "{misses:?}");
    assert!(misses[0].contains("mount 0 /t is new"), "{misses:?}");
    assert!(misses[0].contains("command changed"), "{misses:?}");
    assert_eq!(misses[1], "#3 the step before it changed", "{misses:?}");
}

fn stages_served_from_the_cache_are_extracted_only_when_read() {
    let fx = Fixture::new();
    let df = |last: &str| {
        format!(
            "FROM busybox AS a\nRUN echo hi > /f\n\
             FROM busybox AS b\nCOPY --from=a /f /g\nRUN cat /g > /h\nRUN {last}\n"
        )
    };
    fx.run(&fx.request(&df("true")));
    // Only the last step changes: it runs on a rootfs made from the cached layers.
    let (_, events) = fx.run(&fx.request(&df("cat /g /h")));
    assert_eq!(
        events.cached(),
        vec![
            ("a".to_string(), 2),
            ("b".to_string(), 2),
            ("b".to_string(), 3)
        ]
    );
    assert_eq!(events.output(), vec!["hi", "hi"]);
    // A COPY --from that must run reads stage a's rootfs, made from its cached layer.
    let (_, events) = fx.run(&fx.request(
        "FROM busybox AS a\nRUN echo hi > /f\nFROM busybox\nCOPY --from=a /f /other\nRUN cat /other\n",
    ));
    assert_eq!(events.cached(), vec![("a".to_string(), 2)]);
    assert_eq!(events.output(), vec!["hi"]);
}

fn cache_keeps_layers_through_gc_and_prune_drops_them() {
    let fx = app_fixture();
    let (first, _) = fx.run(&fx.request(APP));
    // No image refers to the layers any more; the cache still does.
    fx.store.untag("test:latest").unwrap();
    fx.store.remove_untagged().unwrap();
    fx.store.gc().unwrap();
    for record in &first.cache_records {
        assert!(fx.store.has_blob(&record.layer.digest));
    }
    let usage = fx.store.cache_usage().unwrap();
    assert_eq!(usage.records, 5);
    assert!(usage.bytes > 0);
    let (_, events) = fx.run(&fx.request(APP));
    assert_eq!(steps(&events.cached()), vec![4, 5, 6, 7, 8]);

    // Records used recently survive an age limit; a size limit of zero drops them all.
    let (report, _) = fx
        .store
        .prune_cache(&CachePrunePolicy {
            unused_for: Some(Duration::from_secs(3600)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(report.removed_records, 0);
    fx.store.untag("test:latest").unwrap();
    fx.store.remove_untagged().unwrap();
    // As `rbuild prune` would run: in a process holding no lease on the build's blobs.
    fx.store.release_lease();
    let (report, gc) = fx
        .store
        .prune_cache(&CachePrunePolicy {
            keep_bytes: Some(0),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(report.removed_records, 5);
    assert!(gc.freed_bytes > 0);
    assert!(!fx.store.has_blob(&first.cache_records[3].layer.digest));
    let (_, events) = fx.run(&fx.request(APP));
    assert!(events.cached().is_empty());
    assert_eq!(steps(&events.ran()), vec![4, 5, 6, 7, 8]);
}

fn add_url_is_keyed_by_content_or_checksum() {
    let fx = Fixture::new();
    let served = fx.tmp.path().join("served");
    std::fs::create_dir(&served).unwrap();
    std::fs::write(served.join("file.txt"), "v1\n").unwrap();
    let port = serve_dir(served.clone());
    let df = format!("FROM busybox\nADD http://127.0.0.1:{port}/file.txt /f\nRUN cat /f\n");
    fx.run(&fx.request(&df));
    let (_, events) = fx.run(&fx.request(&df));
    assert_eq!(
        steps(&events.cached()),
        vec![2, 3],
        "same download, same key"
    );
    std::fs::write(served.join("file.txt"), "v2\n").unwrap();
    let (_, events) = fx.run(&fx.request(&df));
    assert!(events.cached().is_empty(), "{:?}", events.cached());
    assert_eq!(events.output(), vec!["v2"]);

    // With --checksum the key is the checksum: a hit downloads nothing, so it holds even
    // when the server is gone.
    let sum = rbuild_image::Digest::of(b"v2\n");
    let df = format!(
        "FROM busybox\nADD --checksum={sum} http://127.0.0.1:{port}/file.txt /f\nRUN cat /f\n"
    );
    fx.run(&fx.request(&df));
    std::fs::remove_file(served.join("file.txt")).unwrap();
    let (_, events) = fx.run(&fx.request(&df));
    assert_eq!(steps(&events.cached()), vec![2, 3]);
}

/// Another store's records, as a `--cache-from` import would offer them; counts fetches.
struct OtherStore<'a> {
    store: &'a Store,
    fetched: Mutex<Vec<Digest>>,
}

impl RemoteCache for OtherStore<'_> {
    fn lookup(&self, key: &Digest) -> Option<CacheRecord> {
        self.store.cache_lookup(key).ok().flatten()
    }
    fn fetch_layer(&self, store: &Store, record: &CacheRecord) -> Result<(), RemoteCacheError> {
        self.fetched
            .lock()
            .unwrap()
            .push(record.layer.digest.clone());
        let bytes = self
            .store
            .read_blob(&record.layer.digest)
            .map_err(|e| RemoteCacheError::new(RemoteCacheErrorKind::NotFound, e.to_string()))?;
        store
            .put_bytes(&bytes, Some(&record.layer.digest))
            .map(|_| ())
            .map_err(|e| RemoteCacheError::new(RemoteCacheErrorKind::Store, e.to_string()))
    }
}

fn remote_hits_fetch_only_the_layers_that_are_needed() {
    // Machine A fills its cache; B has the base image but no records.
    let a = Fixture::new();
    let b = Fixture::new();
    // The same base on both machines (each fixture's base layer has its own file times).
    copy_image(&a.store, &b.store, "busybox:latest");
    let df = "FROM busybox AS tools\nRUN echo tool > /tool && echo big > /big\n\
              FROM busybox\nCOPY --from=tools /tool /tool\nRUN cat /tool > /copy\n";
    let (built_a, _) = a.run(&a.request(df));
    let tools_layer = built_a.cache_records[0].layer.digest.clone();
    let remote = OtherStore {
        store: &a.store,
        fetched: Mutex::new(Vec::new()),
    };
    let mut events = support::Recorder::default();
    let built_b = build_with_cache(&b.request(df), &b.store, &LocalImages, &remote, &mut events)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        steps(&events.cached()),
        vec![2, 2, 3],
        "every step is a remote hit"
    );
    assert!(events.ran().is_empty());
    assert_eq!(built_b.manifest, built_a.manifest, "the same image");
    // The tools stage's layer is read by nothing that runs and is not in the image.
    assert!(!remote.fetched.lock().unwrap().contains(&tools_layer));
    assert!(!b.store.has_blob(&tools_layer));
    assert_eq!(
        remote.fetched.lock().unwrap().len(),
        2,
        "just the image's two new layers"
    );
    // What was fetched is recorded locally; the next build fetches nothing more.
    let mut events = support::Recorder::default();
    build_with_cache(&b.request(df), &b.store, &LocalImages, &remote, &mut events)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(steps(&events.cached()), vec![2, 2, 3]);
    assert_eq!(remote.fetched.lock().unwrap().len(), 2);
    let sources: Vec<String> = events
        .events
        .iter()
        .filter_map(|e| match e {
            rbuild_executor::Event::StepCached { source, .. } => Some(source.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(sources, vec!["registry", "local", "local"]);
}

/// A registry cache that has the records but refuses the layers.
struct Refusing<'a>(OtherStore<'a>);

impl RemoteCache for Refusing<'_> {
    fn lookup(&self, key: &Digest) -> Option<CacheRecord> {
        self.0.lookup(key)
    }
    fn fetch_layer(&self, _store: &Store, _record: &CacheRecord) -> Result<(), RemoteCacheError> {
        Err(RemoteCacheError::new(
            RemoteCacheErrorKind::Unauthorized,
            "401 from the registry",
        ))
    }
}

fn a_registry_layer_that_cannot_be_fetched_fails_with_its_kind() {
    let a = Fixture::new();
    let b = Fixture::new();
    copy_image(&a.store, &b.store, "busybox:latest");
    let df = "FROM busybox\nRUN echo a > /a\n";
    let (built_a, _) = a.run(&a.request(df));
    let remote = Refusing(OtherStore {
        store: &a.store,
        fetched: Mutex::new(Vec::new()),
    });
    let mut events = support::Recorder::default();
    let err = build_with_cache(&b.request(df), &b.store, &LocalImages, &remote, &mut events)
        .expect_err("the image's layer cannot be fetched");
    let text = err.to_string();
    match err {
        BuildError::RemoteCacheLayer { layer, source } => {
            assert_eq!(layer, built_a.cache_records[0].layer.digest);
            assert_eq!(source.kind, RemoteCacheErrorKind::Unauthorized);
        }
        other => panic!("not a registry-cache error: {other:?}"),
    }
    assert!(
        text.contains("401 from the registry") && text.contains("--no-cache"),
        "{text}"
    );
}

/// Copies image `name` from one store to another, blobs and manifest as they are.
fn copy_image(from: &Store, to: &Store, name: &str) {
    let record = from.resolve(name).unwrap();
    let manifest = from.read_manifest(&record.image_manifest.digest).unwrap();
    for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
        to.put_bytes(&from.read_blob(&d.digest).unwrap(), Some(&d.digest))
            .unwrap();
    }
    let bytes = from.read_blob(&record.image_manifest.digest).unwrap();
    let manifest = to.put_manifest_bytes(&bytes).unwrap();
    to.tag(name, &manifest).unwrap();
}

/// A COPY whose parent layers are cache hits writes into an empty tree of stand-ins for the
/// parent's entries it reaches (`copy_skeleton.rs`), without linking the parent's files
/// into a rootfs: its layer is the one the COPY on the full rootfs writes (here a chroot
/// build, whose rootfs is extracted and walked whole), through a symlink on the way, into a
/// directory of another owner, merging into an existing directory and replacing a file.
fn a_copy_after_cached_steps_writes_into_an_empty_tree_the_layer_of_the_full_rootfs() {
    let fx = Fixture::new();
    fx.file("app.txt", "v1\n", 0o644)
        .file("dir/sub/new.txt", "new\n", 0o600)
        .file("dir/sub/same.txt", "replaced\n", 0o644)
        .file("dir/top.txt", "top\n", 0o755);
    let dockerfile = "FROM busybox
RUN mkdir -p /srv/app/sub /data/d && echo x > /data/d/f && ln -s /srv/app /app \\
 && echo old > /srv/app/sub/same.txt && echo keep > /srv/app/sub/keep.txt \\
 && chown -R 1000:1000 /srv && chmod 750 /srv/app
COPY app.txt dir /app/
";
    let copy_layer = |result: &rbuild_executor::BuildResult| result.cache_records[1].clone();
    // The RUN runs: the COPY after it runs on the rootfs the RUN left.
    fx.run(&timeless_request(&fx, dockerfile));
    // The RUN is a hit: the COPY makes the parent's shared tree, then writes beside it.
    fx.file("app.txt", "v2\n", 0o644);
    let (_, events) = fx.run(&timeless_request(&fx, dockerfile));
    assert_eq!(events.cached().len(), 1, "{:?}", events.cached());
    // Again, the tree made: nothing is extracted or linked for the COPY.
    fx.file("app.txt", "v3\n", 0o644);
    let (in_empty_tree, events) = fx.run(&timeless_request(&fx, dockerfile));
    assert_eq!(events.cached().len(), 1, "{:?}", events.cached());
    assert_eq!(
        in_empty_tree.phases.extract.count, 0,
        "nothing extracted or linked: {:?}",
        in_empty_tree.phases
    );
    let copied = copy_layer(&in_empty_tree);
    // The layer: the symlink's target directory (its owner and mode kept), the files.
    let paths = fx.layer_paths(&copied.layer);
    assert_eq!(
        paths,
        vec![
            "srv",
            "srv/app",
            "srv/app/app.txt",
            "srv/app/sub",
            "srv/app/sub/new.txt",
            "srv/app/sub/same.txt",
            "srv/app/top.txt"
        ],
        "{paths:?}"
    );
    let app_dir = fx
        .entries(&copied.layer)
        .into_iter()
        .find(|e| e.path == std::path::Path::new("srv/app"))
        .expect("srv/app in the layer");
    assert_eq!(
        (app_dir.uid, app_dir.gid, app_dir.mode & 0o7777),
        (1000, 1000, 0o750)
    );
    // The same COPY on the full rootfs (chroot: extracted, walked before and after), with
    // its cache record gone so that it runs.
    remove_cache_record(&fx.store, &copied.key);
    let mut full = timeless_request(&fx, dockerfile);
    full.isolation = rbuild_sandbox::Isolation::Chroot;
    let (on_full_rootfs, events) = fx.run(&full);
    assert_eq!(events.cached(), vec![("stage-0".to_string(), 2)]);
    assert_eq!(
        copy_layer(&on_full_rootfs).diff_id,
        copied.diff_id,
        "the COPY in an empty tree writes the full rootfs's layer"
    );
    // A step after such a COPY gets the parent's files and the COPY's.
    fx.file("app.txt", "v4\n", 0o644);
    let (_, events) = fx.run(&timeless_request(&fx, &format!(
        "{dockerfile}RUN cat /app/app.txt /app/sub/new.txt /app/sub/keep.txt /srv/app/sub/same.txt\n"
    )));
    assert_eq!(events.cached().len(), 1, "{:?}", events.cached());
    assert_eq!(events.output(), vec!["v4", "new", "keep", "replaced"]);
}

/// A COPY after steps the build ran makes the stage's rootfs (the RUN's changes moved in)
/// the store's shared tree of their layers, by a rename (`keep_rootfs_as_tree`), and
/// writes into an empty tree of stand-ins read from it: the next build whose COPY follows
/// the same steps, now cache hits, extracts and links nothing (before, it extracted every
/// layer above the base into a new tree: seconds for a large RUN), and its layer has the
/// entries of the same COPY on a rootfs extracted from the layers (chroot). Later steps
/// get the RUN's files from the tree.
fn a_copy_after_steps_run_leaves_their_tree_for_the_next_build() {
    let fx = Fixture::new();
    fx.file("app.txt", "v1\n", 0o644);
    // No SOURCE_DATE_EPOCH: with one, the layers clamp the times the rootfs keeps, and
    // no tree is made of it.
    let dockerfile = "FROM busybox
RUN mkdir -p /srv/app/sub && echo old > /srv/app/sub/f && ln -s /srv/app /app \\
 && chown -R 1000:1000 /srv && chmod 750 /srv/app
COPY app.txt /app/sub/
";
    let (first, events) = fx.run(&fx.request(dockerfile));
    assert!(events.cached().is_empty(), "{:?}", events.cached());
    let first_copy = first.cache_records[1].clone();
    // The COPY's own layer: the directory through the symlink, its owner and mode kept
    // from the tree the RUN left.
    let copied_entries = |layer| {
        fx.entries(layer)
            .into_iter()
            .map(|e| {
                let path = e.path.to_string_lossy();
                let path = path.trim_start_matches("./").trim_end_matches('/');
                (path.to_string(), e.uid, e.gid, e.mode & 0o7777)
            })
            .collect::<Vec<_>>()
    };
    let expected = vec![
        ("srv".to_string(), 1000, 1000, 0o755),
        ("srv/app".to_string(), 1000, 1000, 0o750),
        ("srv/app/sub".to_string(), 1000, 1000, 0o755),
        ("srv/app/sub/app.txt".to_string(), 0, 0, 0o644),
    ];
    assert_eq!(copied_entries(&first_copy.layer), expected);
    // The tree left is what extracting the layers gives: the RUN's entries and the
    // directories above them with whole-second mtimes, as the layer records them.
    let trees: Vec<_> = std::fs::read_dir(fx.store.root().join("trees"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("srv/app/sub/f").exists())
        .collect();
    assert_eq!(trees.len(), 1, "{trees:?}");
    for rel in ["srv", "srv/app", "srv/app/sub", "srv/app/sub/f", "app"] {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(trees[0].join(rel)).unwrap();
        assert_eq!(meta.mtime_nsec(), 0, "{rel} in the kept tree");
    }

    fx.file("app.txt", "v2\n", 0o644);
    let (second, events) = fx.run(&fx.request(dockerfile));
    assert_eq!(events.cached(), vec![("stage-0".to_string(), 2)]);
    assert_eq!(
        second.phases.extract.count, 0,
        "the RUN's tree was left by the first build: nothing extracted or linked: {:?}",
        second.phases
    );
    let second_copy = second.cache_records[1].clone();
    assert_eq!(copied_entries(&second_copy.layer), expected);

    // The same COPY on a rootfs extracted from the layers (chroot), its record gone so
    // that it runs: the same entries.
    remove_cache_record(&fx.store, &second_copy.key);
    let mut full = fx.request(dockerfile);
    full.isolation = rbuild_sandbox::Isolation::Chroot;
    let (on_full_rootfs, events) = fx.run(&full);
    assert_eq!(events.cached(), vec![("stage-0".to_string(), 2)]);
    assert_eq!(
        copied_entries(&on_full_rootfs.cache_records[1].layer),
        expected
    );

    // A step after the COPY reads the RUN's files and the COPY's.
    fx.file("app.txt", "v3\n", 0o644);
    let (_, events) = fx.run(&fx.request(&format!(
        "{dockerfile}RUN cat /app/sub/app.txt /srv/app/sub/f\n"
    )));
    assert_eq!(events.cached().len(), 1, "{:?}", events.cached());
    assert_eq!(events.output(), vec!["v3", "old"]);
}

/// Where a copied directory lands on a symlink (which the copy may follow), the stand-ins
/// cannot stand for the parent: the COPY runs on the full rootfs after all, with the layer
/// a chroot build's COPY writes.
fn a_copy_the_empty_tree_cannot_stand_for_runs_on_the_full_rootfs() {
    let fx = Fixture::new();
    fx.file("dir/sub/new.txt", "new\n", 0o644)
        .file("app.txt", "v1\n", 0o644);
    let dockerfile = "FROM busybox
RUN mkdir -p /app /srv/real && ln -s /srv/real /app/sub
COPY app.txt dir /app/
";
    fx.run(&timeless_request(&fx, dockerfile));
    fx.file("app.txt", "v2\n", 0o644);
    let (fell_back, events) = fx.run(&timeless_request(&fx, dockerfile));
    assert_eq!(events.cached().len(), 1, "{:?}", events.cached());
    assert!(
        fell_back.phases.extract.count > 0,
        "the rootfs was brought up for the COPY: {:?}",
        fell_back.phases
    );
    let copied = fell_back.cache_records[1].clone();
    remove_cache_record(&fx.store, &copied.key);
    let mut full = timeless_request(&fx, dockerfile);
    full.isolation = rbuild_sandbox::Isolation::Chroot;
    let (on_full_rootfs, _) = fx.run(&full);
    assert_eq!(on_full_rootfs.cache_records[1].diff_id, copied.diff_id);
    let paths = fx.layer_paths(&copied.layer);
    assert!(paths.contains(&"app/app.txt".to_string()), "{paths:?}");
}

/// A root build's overlay step moves its upper directory into the stage's rootfs only when
/// a later step or stage reads the files: after the stage's last RUN nothing is moved (no
/// extract span beyond bringing the rootfs up, as for a WORKDIR), and a later stage's
/// `COPY --from` and a later RUN still see the files.
fn a_stages_last_run_leaves_its_changes_off_the_rootfs_until_read() {
    let fx = Fixture::new();
    let no_cache = |dockerfile: &str| {
        let mut request = timeless_request(&fx, dockerfile);
        request.no_cache = true;
        fx.run(&request)
    };
    // The base's shared tree, made once.
    no_cache("FROM busybox\nWORKDIR /warm\n");
    let (workdir, _) = no_cache("FROM busybox\nWORKDIR /w\n");
    let (last_run, _) =
        no_cache("FROM busybox\nRUN seq 1 50 | while read i; do echo $i > /f$i; done\n");
    assert_eq!(
        last_run.phases.extract.count, workdir.phases.extract.count,
        "the last RUN's changes were not moved into the rootfs: {:?} against {:?}",
        last_run.phases, workdir.phases
    );
    let (_, events) = no_cache(
        "FROM busybox AS a\nRUN echo one > /f1 && echo two > /f2\n\
         FROM busybox\nCOPY --from=a /f2 /g\nRUN cat /g\nRUN cat /g /f1 2>&1 || true\n",
    );
    assert_eq!(
        events.output(),
        vec![
            "two",
            "two",
            "cat: can't open '/f1': No such file or directory"
        ]
    );
    let (_, events) =
        no_cache("FROM busybox\nRUN echo one > /f\nRUN cat /f && echo two >> /f\nRUN cat /f\n");
    assert_eq!(events.output(), vec!["one", "one", "two"]);
}

/// The same file copied onto itself again is no change (BuildKit's `sameDirent`: Kaniko's
/// `Dockerfile_test_copy_same_file_many_times`), also when the first COPY could have
/// written into an empty tree: the second would then see the first one's file as its
/// layer's tar has it (mtime in whole seconds) and record it again.
fn copying_the_same_file_again_changes_nothing() {
    let fx = Fixture::new();
    fx.file("foo", "foo\n", 0o555);
    let no_cache = |dockerfile: &str| {
        let mut request = timeless_request(&fx, dockerfile);
        request.no_cache = true;
        fx.run(&request)
    };
    // The base's shared tree, made once: the first COPY's parent is on the store's tree.
    no_cache("FROM busybox\nWORKDIR /warm\n");
    let (result, _) = no_cache("FROM busybox\nCOPY foo /foo\nCOPY foo /foo\nCOPY foo /foo\n");
    assert_eq!(result.cache_records.len(), 3);
    assert_eq!(fx.layer_paths(&result.cache_records[0].layer), vec!["foo"]);
    for (i, record) in result.cache_records.iter().enumerate().skip(1) {
        let paths = fx.layer_paths(&record.layer);
        assert!(paths.is_empty(), "COPY {}: {paths:?}", i + 1);
    }
}

/// The parent's symlinks on a COPY's way, pointing out of the root (`../../..`, absolute),
/// are followed inside the root by the stand-ins as by the copy: nothing is read or
/// written outside, and the layer is the full rootfs's.
fn a_copy_into_an_empty_tree_follows_hostile_symlinks_inside_the_root() {
    let fx = Fixture::new();
    let outside = fx.tmp.path().join("host-escape");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "host").unwrap();
    fx.file("app.txt", "v1\n", 0o644);
    let escape = format!("../../../../../../..{}", outside.display());
    let dockerfile = format!(
        "FROM busybox\nRUN ln -s {escape} /app && ln -s {} /abs && mkdir -p {}\n\
         COPY app.txt /app/\nCOPY app.txt /abs/b.txt\n",
        outside.display(),
        outside.display(),
    );
    fx.run(&timeless_request(&fx, &dockerfile));
    fx.file("app.txt", "v2\n", 0o644);
    let (in_empty_tree, events) = fx.run(&timeless_request(&fx, &dockerfile));
    assert_eq!(events.cached().len(), 1, "{:?}", events.cached());
    let entries: Vec<String> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, vec!["secret"], "nothing written outside the root");
    let inside = outside.strip_prefix("/").unwrap().display().to_string();
    let paths = fx.layer_paths(&in_empty_tree.cache_records[1].layer);
    assert!(
        paths.contains(&format!("{inside}/app.txt")),
        "the copy landed inside the root: {paths:?}"
    );
    assert!(!paths.iter().any(|p| p.ends_with("secret")), "{paths:?}");
    let copied = in_empty_tree.cache_records[1].clone();
    remove_cache_record(&fx.store, &copied.key);
    let mut full = timeless_request(&fx, &dockerfile);
    full.isolation = rbuild_sandbox::Isolation::Chroot;
    // The second COPY's record stays: only the first runs again, on the full rootfs.
    let (on_full_rootfs, _) = fx.run(&full);
    assert_eq!(on_full_rootfs.cache_records[1].diff_id, copied.diff_id);
}

/// Removes the cache record of `key` from the store, so that its step runs again.
/// A request whose layers clamp mtimes to a fixed SOURCE_DATE_EPOCH: a COPY stamps the
/// directories it writes into with the time it runs, so two builds compared by diff id
/// would differ whenever they ran in different seconds.
fn timeless_request(fx: &Fixture, dockerfile: &str) -> rbuild_executor::BuildRequest {
    let mut request = fx.request(dockerfile);
    request.source_date_epoch = Some(1_600_000_000);
    request
}

fn remove_cache_record(store: &Store, key: &Digest) {
    let name = format!("{}.json", key.hex());
    let found: Vec<_> = walkdir::WalkDir::new(store.root())
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy() == name)
        .map(|e| e.into_path())
        .collect();
    assert_eq!(found.len(), 1, "one record for {key}: {found:?}");
    std::fs::remove_file(&found[0]).unwrap();
}
