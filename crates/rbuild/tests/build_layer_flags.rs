//! `rbuild build --compression gzip|zstd|none --compression-level N --source-date-epoch N`:
//! the layers' media types and bytes follow the flags when the image leaves the machine (here
//! an OCI archive), a local-only build keeps its layers plain until one does, and two builds
//! with the same epoch in different stores give the same image digest. `FROM scratch` +
//! COPY: no sandbox needed.

use std::path::Path;
use std::process::{Command, Output};

use rbuild_image::{media_types, Digest};
use rbuild_store::Store;

fn build(root: &Path, context: &Path, flags: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(root)
        .arg("build")
        .args(["-q", "--digest-file"])
        .arg(root.join("digest"))
        .arg("-o")
        .arg(format!(
            "type=oci,dest={}",
            root.join("image.tar").display()
        ))
        .args(flags)
        .arg(context)
        .env_remove("RBUILD_ENGINE")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

/// Builds and returns (manifest digest, the one layer's media type, its bytes).
fn built(root: &Path, context: &Path, flags: &[&str]) -> (Digest, String, Vec<u8>) {
    let out = build(root, context, flags);
    assert!(
        out.status.success(),
        "build {flags:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest: Digest = std::fs::read_to_string(root.join("digest"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let store = Store::open(root).unwrap();
    let manifest = store.read_manifest(&digest).unwrap();
    assert_eq!(manifest.layers.len(), 1);
    let layer = &manifest.layers[0];
    (
        digest,
        layer.media_type.clone(),
        store.read_blob(&layer.digest).unwrap(),
    )
}

fn context() -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    // Compressible but not trivially so, so levels make different bytes.
    let text: String = (0..40_000u32)
        .map(|i| format!("{} ", i.wrapping_mul(2_654_435_761) % 1000))
        .collect();
    std::fs::write(ctx.path().join("data.txt"), text).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY data.txt /\n",
    )
    .unwrap();
    ctx
}

#[test]
fn compression_flags_choose_the_layer_format_and_level() {
    let ctx = context();
    let dir = tempfile::tempdir().unwrap();
    let store = |name: &str| dir.path().join(name);
    let epoch = ["--source-date-epoch", "1700000000"];

    let (_, media_type, zstd) = built(
        &store("zstd"),
        ctx.path(),
        &[&epoch[..], &["--compression", "zstd"]].concat(),
    );
    assert_eq!(media_type, media_types::OCI_LAYER_ZSTD);
    assert!(zstd.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "not zstd");

    let (_, media_type, plain) = built(
        &store("none"),
        ctx.path(),
        &[&epoch[..], &["--compression", "none"]].concat(),
    );
    assert_eq!(media_type, media_types::OCI_LAYER_TAR);
    assert_eq!(&plain[257..262], b"ustar", "not a tar");

    let (default_digest, media_type, gzip6) = built(&store("gzip"), ctx.path(), &epoch);
    assert_eq!(media_type, media_types::OCI_LAYER_GZIP);
    assert!(gzip6.starts_with(&[0x1f, 0x8b]));
    let (fast_digest, _, gzip1) = built(
        &store("gzip1"),
        ctx.path(),
        &[
            &epoch[..],
            &["--compression", "gzip", "--compression-level", "1"],
        ]
        .concat(),
    );
    assert!(gzip1.starts_with(&[0x1f, 0x8b]));
    assert_ne!(
        gzip1, gzip6,
        "level 1 and the default level 6 gave the same bytes"
    );
    assert_ne!(fast_digest, default_digest);
    assert!(plain.len() > gzip1.len());

    for (flags, message) in [
        (&["--compression-level", "10"][..], "out of range"),
        (
            &["--compression", "zstd", "--compression-level", "0"][..],
            "out of range",
        ),
        (
            &["--compression", "none", "--compression-level", "3"][..],
            "does not apply",
        ),
    ] {
        let out = build(&store("bad"), ctx.path(), flags);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(message),
            "{flags:?}: {stderr}"
        );
    }
}

#[test]
fn the_same_source_date_epoch_gives_the_same_image_digest() {
    let ctx = context();
    let dir = tempfile::tempdir().unwrap();
    let epoch = ["--source-date-epoch", "1700000000"];
    let (first, _, _) = built(&dir.path().join("a"), ctx.path(), &epoch);
    // Different file times on disk: the clamp makes them irrelevant.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(ctx.path().join("data.txt"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let (second, _, _) = built(&dir.path().join("b"), ctx.path(), &epoch);
    assert_eq!(first, second);
    let store = Store::open(dir.path().join("b")).unwrap();
    let manifest = store.read_manifest(&second).unwrap();
    let config = store.read_config(&manifest.config.digest).unwrap();
    assert_eq!(config.created.as_deref(), Some("2023-11-14T22:13:20Z"));

    // Another epoch, another digest.
    let (third, _, _) = built(
        &dir.path().join("c"),
        ctx.path(),
        &["--source-date-epoch", "1"],
    );
    assert_ne!(third, first);
}

#[test]
fn a_local_build_keeps_plain_layers_and_compresses_them_as_a_shipping_build_would() {
    let ctx = context();
    let dir = tempfile::tempdir().unwrap();
    let epoch = ["--source-date-epoch", "1700000000"];
    let (shipped_digest, media_type, shipped_layer) =
        built(&dir.path().join("shipping"), ctx.path(), &epoch);
    assert_eq!(media_type, media_types::OCI_LAYER_GZIP);

    // Local only: the stored layer is the plain tar (nothing was compressed).
    let local = dir.path().join("local");
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(&local)
        .args(["build", "-q", "-t", "local:1", "--digest-file"])
        .arg(local.join("digest"))
        .args(epoch)
        .arg(ctx.path())
        .env_remove("RBUILD_ENGINE")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local_digest: Digest = std::fs::read_to_string(local.join("digest"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(local_digest, shipped_digest);
    {
        let store = Store::open(&local).unwrap();
        let manifest = store.read_manifest(&local_digest).unwrap();
        assert_eq!(manifest.layers[0].media_type, media_types::OCI_LAYER_TAR);
        let plain = store.read_blob(&manifest.layers[0].digest).unwrap();
        assert!(
            plain.len() > 100_000,
            "the plain layer holds the 200 KB file"
        );
    }

    // Saved as an OCI layout it leaves compressed: the manifest and layer a shipping build
    // wrote, byte for byte.
    let archive = dir.path().join("saved.tar");
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(&local)
        .args(["save", "--format", "oci", "-o"])
        .arg(&archive)
        .arg("local:1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = Command::new("tar")
        .arg("-tf")
        .arg(&archive)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    let blob = |digest: &Digest| format!("blobs/sha256/{}", digest.hex());
    assert!(names.lines().any(|l| l == blob(&shipped_digest)), "{names}");
    let layer_digest = Digest::of(&shipped_layer);
    assert!(names.lines().any(|l| l == blob(&layer_digest)), "{names}");
    // Pushed later, it is the shipping build's manifest too.
    let registry = rbuild_testutil::Registry::start();
    let destination = format!("{}/flags/local:1", registry.host());
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(&local)
        .args(["push", "local:1", &destination])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        registry.manifest_status("flags/local", &shipped_digest.to_string()),
        Some(200)
    );
    // The local image is unchanged by the save and the push.
    let store = Store::open(&local).unwrap();
    let record = store.resolve("local:1").unwrap();
    assert_eq!(record.manifest.digest, local_digest);
}
