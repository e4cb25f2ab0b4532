//! `rbuild build --cache-to / --cache-from / --cache-repo` end to end: a real registry and
//! independent store roots standing for machines that share nothing but the registry. The
//! base image is made by rbuild from a busybox rootfs and pushed there. Runs as root (CI
//! does); needs the Debian packages busybox-static and docker-registry.

use std::path::Path;
use std::process::Output;

use rbuild_testutil::{require_root, Registry};

mod common;
use common::{fails, ok, rbuild, store_with_busybox};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Pushes a busybox base image (built by rbuild) to the registry; returns its reference.
fn push_base(registry: &Registry) -> String {
    let root = store_with_busybox();
    let base = format!("{}/base/busybox:latest", registry.host());
    ok(rbuild(root.path())
        .args(["push", "busybox:latest", &base])
        .output()
        .unwrap());
    base
}

/// A context with `Dockerfile` and `app.txt`.
fn context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(ctx.path().join("app.txt"), "application\n").unwrap();
    ctx
}

/// Builds `ctx` into a store at `root` with `--progress json` and `extra` flags; returns
/// the JSON events and stderr.
fn build_json(
    root: &Path,
    base: &str,
    ctx: &Path,
    extra: &[&str],
) -> (Vec<serde_json::Value>, String) {
    let out = ok(rbuild(root)
        .args(["build", "--progress", "json", "-t", "app:1"])
        .args(["--build-arg", &format!("BASE={base}")])
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap());
    let log = stderr(&out);
    let events = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect();
    (events, log)
}

/// (stage, step, text) of each step that makes a layer (RUN, COPY).
fn layer_steps(events: &[serde_json::Value]) -> Vec<(String, u64, String)> {
    events
        .iter()
        .filter(|e| e["event"] == "step_started")
        .filter_map(|e| {
            let text = e["text"].as_str()?;
            (text.starts_with("RUN") || text.starts_with("COPY")).then(|| {
                (
                    e["stage"].as_str().unwrap_or_default().to_string(),
                    e["step"].as_u64().unwrap_or_default(),
                    text.to_string(),
                )
            })
        })
        .collect()
}

/// The steps reported as cache hits from `source`.
fn cached_steps(events: &[serde_json::Value], source: &str) -> Vec<(String, u64)> {
    events
        .iter()
        .filter(|e| e["event"] == "step_cached" && e["source"] == source)
        .map(|e| {
            (
                e["stage"].as_str().unwrap_or_default().to_string(),
                e["step"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// The manifest's layer digests of `app:1` in the store at `root`.
fn layers(root: &Path) -> Vec<String> {
    let out = ok(rbuild(root).args(["inspect", "app:1"]).output().unwrap());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json[0]["Manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// (layers, pushed) of the `exporting cache: N layers, M pushed, ...` line.
fn export_counts(log: &str) -> (usize, usize) {
    let line = log
        .lines()
        .find_map(|l| l.split("exporting cache: ").nth(1))
        .unwrap_or_else(|| panic!("no export line in:\n{log}"));
    let number = |word: &str| -> usize {
        let before = line.split(word).next().unwrap();
        before.split_whitespace().last().unwrap().parse().unwrap()
    };
    (number(" layers"), number(" pushed"))
}

const APP: &str = "ARG BASE\n\
FROM ${BASE} AS build\n\
RUN echo $RANDOM$RANDOM$RANDOM > /random.txt\n\
FROM ${BASE}\n\
COPY app.txt /app.txt\n\
COPY --from=build /random.txt /random.txt\n\
RUN cat /app.txt /random.txt > /combined.txt\n";

#[test]
fn an_empty_store_builds_from_the_registry_cache_without_running_a_step() {
    require_root("native builds in this test");
    let registry = Registry::start();
    let base = push_base(&registry);
    let cache = format!("{}/cache/app", registry.host());
    let ctx = context(APP);

    // Machine A: a cold build exporting every step (mode=max: the `build` stage too).
    let a = tempfile::tempdir().unwrap();
    let (events_a, log_a) = build_json(
        a.path(),
        &base,
        ctx.path(),
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );
    assert!(cached_steps(&events_a, "registry").is_empty(), "{log_a}");
    // Four steps (the build stage's RUN and the COPY of its file may make the same layer).
    let (layers_a, pushed_a) = export_counts(&log_a);
    assert!(
        (3..=4).contains(&layers_a) && pushed_a == layers_a,
        "{log_a}"
    );
    assert!(log_a.contains("(4 steps, 4 in the cache)"), "{log_a}");

    // Machine B: an empty store reading the cache. No RUN or COPY runs; the RUN with random
    // output gives A's layer.
    let b = tempfile::tempdir().unwrap();
    let (events_b, log_b) = build_json(
        b.path(),
        &base,
        ctx.path(),
        &["--cache-from", &format!("type=registry,ref={cache}")],
    );
    assert!(
        log_b.contains(&format!("importing cache manifest from {cache}:buildcache")),
        "{log_b}"
    );
    let steps = layer_steps(&events_b);
    assert_eq!(steps.len(), 4, "{log_b}");
    let cached = cached_steps(&events_b, "registry");
    for (stage, step, text) in &steps {
        assert!(
            cached.contains(&(stage.clone(), *step)),
            "[{stage} {step}] {text} was not a registry cache hit:\n{log_b}"
        );
    }
    assert!(
        !events_b.iter().any(|e| e["event"] == "step_output"),
        "a step ran:\n{log_b}"
    );
    assert_eq!(layers(b.path()), layers(a.path()));

    // B again: hits again (local for the layers B fetched; the `build` stage's layer was
    // not needed by B's image, so it was never pulled and still comes from the registry),
    // and exporting to the same ref adds nothing.
    let (events_b2, log_b2) = build_json(
        b.path(),
        &base,
        ctx.path(),
        &[
            "--cache-from",
            &format!("type=registry,ref={cache}"),
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
        ],
    );
    assert_eq!(
        cached_steps(&events_b2, "local").len() + cached_steps(&events_b2, "registry").len(),
        4,
        "{log_b2}"
    );
    assert!(
        !events_b2.iter().any(|e| e["event"] == "step_output"),
        "a step ran:\n{log_b2}"
    );
    assert_eq!(export_counts(&log_b2), (layers_a, 0), "{log_b2}");
    assert!(
        log_b2.contains(&format!("0 pushed, {layers_a} already there")),
        "{log_b2}"
    );
}

/// Whether the store at `root` has the blob `digest` on disk, and whether it records it
/// remote (still in its registry).
fn blob_state(root: &Path, digest: &str) -> (bool, bool) {
    let hex = digest.strip_prefix("sha256:").unwrap();
    (
        root.join("oci/blobs/sha256").join(hex).is_file(),
        root.join("remote").join(format!("{hex}.json")).is_file(),
    )
}

/// `rbuild fsck` of `root` passes; returns its output.
fn fsck_ok(root: &Path) -> String {
    let out = ok(rbuild(root).arg("fsck").output().unwrap());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An empty store building `ctx` from the registry cache alone (every step a hit); the
/// digest of its last layer (the RUN's).
fn all_hit_build(root: &Path, base: &str, ctx: &Path, cache: &str) -> String {
    let (events, log) = build_json(
        root,
        base,
        ctx,
        &["--cache-from", &format!("type=registry,ref={cache}")],
    );
    assert!(
        layer_steps(&events)
            .iter()
            .all(|(stage, step, _)| cached_steps(&events, "registry")
                .contains(&(stage.clone(), *step))),
        "not every step was a registry cache hit:\n{log}"
    );
    layers(root).pop().unwrap()
}

const BIG_LAYER: &str = "ARG BASE\n\
FROM ${BASE}\n\
RUN head -c 3000000 /dev/urandom > /big.bin\n";

#[test]
fn an_all_hit_registry_cache_build_keeps_its_layer_remote_until_something_reads_it() {
    require_root("native builds in this test");
    let registry = Registry::start();
    let base = push_base(&registry);
    let cache = format!("{}/cache/lazy", registry.host());
    let ctx = context(BIG_LAYER);
    let a = tempfile::tempdir().unwrap();
    build_json(
        a.path(),
        &base,
        ctx.path(),
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
    );

    // B: the image is stored, its RUN layer recorded remote and not downloaded.
    let b = tempfile::tempdir().unwrap();
    let layer = all_hit_build(b.path(), &base, ctx.path(), &cache);
    assert_eq!(blob_state(b.path(), &layer), (false, true), "{layer}");
    let report = fsck_ok(b.path());
    assert!(
        report.contains(&format!("remote: layer {layer}")),
        "{report}"
    );
    let images = ok(rbuild(b.path())
        .args(["images", "--json"])
        .output()
        .unwrap());
    let images: serde_json::Value = serde_json::from_slice(&images.stdout).unwrap();
    let app = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["names"][0] == "docker.io/library/app:1")
        .unwrap();
    let remote_size = app["remote_size"].as_u64().unwrap();
    assert!(
        remote_size > 3_000_000 && remote_size < app["size"].as_u64().unwrap(),
        "{images}"
    );

    // `save` fetches it (once: then it is on disk and the record gone); the archive loads
    // into another store whose fsck rehashes every blob.
    let archive = b.path().join("app.tar");
    ok(rbuild(b.path())
        .args(["save", "app:1", "--format", "oci", "-o"])
        .arg(&archive)
        .output()
        .unwrap());
    assert_eq!(blob_state(b.path(), &layer), (true, false));
    fsck_ok(b.path());
    let c = tempfile::tempdir().unwrap();
    ok(rbuild(c.path())
        .args(["load", "-i"])
        .arg(&archive)
        .output()
        .unwrap());
    assert_eq!(layers(c.path()), layers(b.path()));
    assert!(fsck_ok(c.path()).contains(" 0 remote"));

    // D: the registry serves a damaged blob: `save` fails naming the registry, the
    // repository and the digest; the store is unchanged and consistent.
    let d = tempfile::tempdir().unwrap();
    assert_eq!(all_hit_build(d.path(), &base, ctx.path(), &cache), layer);
    let served = registry.blob_data_path(layer.strip_prefix("sha256:").unwrap());
    let original = std::fs::read(&served).unwrap();
    let mut damaged = original.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x55;
    std::fs::write(&served, &damaged).unwrap();
    let err = fails(
        rbuild(d.path())
            .args(["save", "app:1", "-o"])
            .arg(d.path().join("app.tar"))
            .output()
            .unwrap(),
    );
    assert!(err.contains(cache.as_str()), "{err}");
    assert!(err.contains(&layer), "{err}");
    assert_eq!(blob_state(d.path(), &layer), (false, true));
    fsck_ok(d.path());
    let out = rbuild(d.path()).args(["fsck", "--fetch"]).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains(&format!("unfetchable: remote layer {layer}")) && report.contains(&cache),
        "{report}"
    );
    assert_eq!(blob_state(d.path(), &layer), (false, true));
    std::fs::write(&served, &original).unwrap();

    // A build FROM that image with a RUN on top fetches the layer and works.
    let on_top = context("FROM app:1\nRUN wc -c /big.bin > /size.txt && cat /size.txt\n");
    ok(rbuild(d.path())
        .args(["build", "-t", "app:2"])
        .arg(on_top.path())
        .output()
        .unwrap());
    assert_eq!(blob_state(d.path(), &layer), (true, false));
    fsck_ok(d.path());
    // Fetched, it is remembered as coming from the cache's repository: a push to the same
    // registry mounts it from there rather than uploading it.
    let out = ok(rbuild(d.path())
        .args(["push", "app:1", &format!("{}/third/app:1", registry.host())])
        .output()
        .unwrap());
    let log = stderr(&out);
    assert!(log.contains("Mounted from cache/lazy"), "{log}");

    // F: `fsck --fetch` fetches and verifies what is still remote.
    let f = tempfile::tempdir().unwrap();
    assert_eq!(all_hit_build(f.path(), &base, ctx.path(), &cache), layer);
    let report = String::from_utf8_lossy(
        &ok(rbuild(f.path()).args(["fsck", "--fetch"]).output().unwrap()).stdout,
    )
    .into_owned();
    assert!(report.contains(" 0 remote"), "{report}");
    assert_eq!(blob_state(f.path(), &layer), (true, false));

    // E: a push to another repository of the same registry mounts the remote layer (no
    // download); a push to another registry fetches it and uploads it.
    let e = tempfile::tempdir().unwrap();
    assert_eq!(all_hit_build(e.path(), &base, ctx.path(), &cache), layer);
    let same = format!("{}/other/app:1", registry.host());
    let out = ok(rbuild(e.path())
        .args(["push", "app:1", &same])
        .output()
        .unwrap());
    let log = stderr(&out);
    let short = &layer["sha256:".len().."sha256:".len() + 12];
    assert!(
        log.lines()
            .any(|l| l.contains("Mounted from cache/lazy") && l.contains(short)),
        "{log}"
    );
    assert_eq!(blob_state(e.path(), &layer), (false, true));
    assert_eq!(registry.manifest_status("other/app", "1"), Some(200));
    let elsewhere = Registry::start();
    ok(rbuild(e.path())
        .args(["push", "app:1", &format!("{}/app:1", elsewhere.host())])
        .output()
        .unwrap());
    assert_eq!(blob_state(e.path(), &layer), (true, false));
    assert_eq!(elsewhere.manifest_status("app", "1"), Some(200));
    fsck_ok(e.path());
}

#[test]
fn a_damaged_cache_is_ignored_with_a_warning_and_cache_repo_replaces_it() {
    require_root("native builds in this test");
    let registry = Registry::start();
    let base = push_base(&registry);
    let repo = format!("{}/kaniko/cache", registry.host());
    push_garbage_cache(&format!("{repo}:buildcache"));
    let ctx = context(APP);

    // Kaniko's flag reads REPO:buildcache: damaged, so a warning and a full build.
    let a = tempfile::tempdir().unwrap();
    let (events_a, log_a) = build_json(a.path(), &base, ctx.path(), &["--cache-repo", &repo]);
    assert!(
        events_a.iter().any(|e| e["event"] == "warning"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("ignoring the cache at") && m.contains("not valid"))),
        "{log_a}"
    );
    assert!(cached_steps(&events_a, "registry").is_empty(), "{log_a}");

    // ... and it writes REPO:buildcache, replacing the damaged manifest.
    let b = tempfile::tempdir().unwrap();
    let (events_b, log_b) = build_json(b.path(), &base, ctx.path(), &["--cache-repo", &repo]);
    assert_eq!(cached_steps(&events_b, "registry").len(), 4, "{log_b}");
    assert_eq!(layers(b.path()), layers(a.path()));
}

/// A manifest with our config media type whose config blob is not JSON.
fn push_garbage_cache(reference: &str) {
    let reference = rbuild_image::Reference::parse(reference).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = b"{\"version\": 1, \"records\": [garbage".to_vec();
    let path = dir.path().join("config");
    std::fs::write(&path, &config).unwrap();
    let digest = rbuild_image::Digest::of(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": rbuild_image::media_types::OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.rbuild.cache.config.v1+json",
            "digest": digest.to_string(),
            "size": config.len(),
        },
        "layers": [],
    });
    let client = rbuild_registry::Client::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
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
                &reference,
                bytes::Bytes::from(manifest.to_string()),
                rbuild_image::media_types::OCI_MANIFEST,
            )
            .await
            .unwrap();
    });
}

#[test]
fn cache_mount_contents_travel_with_mounts_true() {
    require_root("native builds in this test");
    let registry = Registry::start();
    let base = push_base(&registry);
    let cache = format!("{}/cache/mounts", registry.host());

    // A: a RUN fills its package cache.
    let a = tempfile::tempdir().unwrap();
    let fill = context(
        "ARG BASE\nFROM ${BASE}\n\
         RUN --mount=type=cache,id=pkgs,target=/var/cache/pkgs \
         echo downloaded-in-a > /var/cache/pkgs/pkg.bin\n",
    );
    let (_, log_a) = build_json(
        a.path(),
        &base,
        fill.path(),
        &[
            "--cache-to",
            &format!("type=registry,ref={cache},mounts=true"),
        ],
    );
    assert!(log_a.contains("exporting cache:"), "{log_a}");

    // B: another Dockerfile (so nothing is a step hit) sees A's cache contents.
    let b = tempfile::tempdir().unwrap();
    let out_dir = b.path().join("out");
    let read = context(
        "ARG BASE\nFROM ${BASE}\n\
         RUN --mount=type=cache,id=pkgs,target=/cache cat /cache/pkg.bin > /seen.txt\n",
    );
    let (_, log_b) = build_json(
        b.path(),
        &base,
        read.path(),
        &[
            "--cache-from",
            &format!("type=registry,ref={cache}"),
            "-o",
            &format!("type=local,dest={}", out_dir.display()),
        ],
    );
    assert!(
        log_b.contains("restored cache mount \\\"pkgs\\\"")
            || log_b.contains("restored cache mount \"pkgs\""),
        "{log_b}"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("seen.txt")).unwrap(),
        "downloaded-in-a\n"
    );
}

#[test]
fn daemon_engines_refuse_the_registry_cache_flags() {
    let ctx = context("FROM scratch\n");
    let root = tempfile::tempdir().unwrap();
    for flags in [
        ["--cache-to", "type=registry,ref=localhost:5000/c"],
        ["--cache-from", "type=registry,ref=localhost:5000/c"],
        ["--cache-repo", "localhost:5000/c"],
    ] {
        let out = rbuild(root.path())
            .args(["build", "--engine", "dood"])
            .args(flags)
            .arg(ctx.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let log = stderr(&out);
        assert!(
            log.contains("--cache-to, --cache-from and --cache-repo")
                && log.contains("--engine native"),
            "{log}"
        );
    }
    // A malformed spec is refused before any work.
    let out = rbuild(root.path())
        .args(["build", "--cache-to", "type=local,dest=x"])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("only type=registry"),
        "{}",
        stderr(&out)
    );
}
