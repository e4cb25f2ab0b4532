//! `rbuild build --cache-to / --cache-from / --cache-repo` end to end: a real registry and
//! independent store roots standing for machines that share nothing but the registry. The
//! base image is made by rbuild from a busybox rootfs and pushed there. Runs as root (CI
//! does); needs the Debian packages busybox-static and docker-registry.

use std::path::Path;
use std::process::Output;

use rbuild_testutil::{require_root, Registry};

mod common;
use common::{ok, rbuild, store_with_busybox};

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
