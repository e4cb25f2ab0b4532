//! `--cache-to` after `--no-cache`: the registry cache then gives what this build made, as
//! BuildKit's export (which replaces the ref) does. Independent store roots stand for
//! machines sharing nothing but a real registry. Runs as root (CI does); needs the Debian
//! packages busybox-static and docker-registry.

use std::path::Path;

use rbuild_testutil::{require_root, Registry};

mod common;
use common::{ok, rbuild, store_with_busybox};

/// Random content in every RUN; the COPY between them chains on the first RUN's layer.
const RANDOM_STEPS: &str = "ARG BASE\n\
FROM ${BASE}\n\
RUN echo $RANDOM$RANDOM$RANDOM > /r1\n\
COPY app.txt /app.txt\n\
RUN echo $RANDOM$RANDOM$RANDOM > /r2\n";

fn build(root: &Path, base: &str, ctx: &Path, extra: &[&str]) -> String {
    let out = ok(rbuild(root)
        .args(["build", "--progress", "plain", "-t", "app:1"])
        .args(["--build-arg", &format!("BASE={base}")])
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn image_id(root: &Path) -> String {
    let out = ok(rbuild(root).args(["inspect", "app:1"]).output().unwrap());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json[0]["Id"].as_str().unwrap().to_string()
}

#[test]
fn an_import_of_a_just_exported_cache_gives_the_exporting_builds_image() {
    require_root("native builds in this test");
    let registry = Registry::start();
    let base = {
        let root = store_with_busybox();
        let base = format!("{}/base/busybox:latest", registry.host());
        ok(rbuild(root.path())
            .args(["push", "busybox:latest", &base])
            .output()
            .unwrap());
        base
    };
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), RANDOM_STEPS).unwrap();
    std::fs::write(ctx.path().join("app.txt"), "application\n").unwrap();
    let cache_to = format!("type=registry,ref={}/cache/app,mode=max", registry.host());
    let cache_from = format!("type=registry,ref={}/cache/app", registry.host());

    // The builder: a first build fills the cache ref, then a nightly `--no-cache` rebuild
    // makes new random results for the same steps and exports them.
    let builder = tempfile::tempdir().unwrap();
    build(
        builder.path(),
        &base,
        ctx.path(),
        &["--cache-to", &cache_to],
    );
    let first = image_id(builder.path());
    let log = build(
        builder.path(),
        &base,
        ctx.path(),
        &["--no-cache", "--cache-to", &cache_to],
    );
    let rebuilt = image_id(builder.path());
    assert_ne!(first, rebuilt, "random steps give another image:\n{log}");

    // Another machine, empty store: every step comes from the registry, and it is the
    // rebuilt image, not the first one.
    let other = tempfile::tempdir().unwrap();
    let log = build(
        other.path(),
        &base,
        ctx.path(),
        &["--cache-from", &cache_from],
    );
    assert_eq!(
        log.matches("CACHED (from the registry cache)").count(),
        3,
        "every RUN and COPY is a registry hit:\n{log}"
    );
    assert_eq!(image_id(other.path()), rebuilt, "{log}");
}
