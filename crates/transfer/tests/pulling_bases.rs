//! Base images for a build (`PullingBases`) against a real `docker-registry`: a missing base
//! is pulled once and then found in the store; `--pull` pulls once per build even when the
//! store has it; a bad reference and an image the registry lacks fail naming them, the
//! registry's error kept as the source.

use std::cell::Cell;
use std::process::Command;

use rbuild_image::{media_types, ImageConfig, Platform, Reference};
use rbuild_registry::{Client, ClientOptions};
use rbuild_store::Store;
use rbuild_testutil::Registry;
use rbuild_transfer::{push, BaseImageError, NoProgress, PullingBases, PushOptions};

fn client(dir: &std::path::Path) -> Client {
    Client::new(ClientOptions {
        // No credentials from the machine's own Docker config.
        docker_config: rbuild_registry::DockerConfig::in_dir(dir.join("docker-config")),
        ..ClientOptions::default()
    })
}

/// Pushes a one-layer image for this machine's platform to `reference`.
fn push_image(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    dir: &std::path::Path,
    reference: &Reference,
) -> rbuild_image::Digest {
    let store = Store::open(dir.join("source-store")).unwrap();
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/base-marker"), "base\n").unwrap();
    let tar = Command::new("tar")
        .args(["--sort=name", "--owner=0", "--group=0", "--mtime=@0", "-C"])
        .arg(&rootfs)
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let blob = store.put_bytes(&tar.stdout, None).unwrap();
    let host = Platform::host();
    let config = ImageConfig::from_slice(
        serde_json::json!({
            "architecture": host.architecture,
            "os": host.os,
            "rootfs": {"type": "layers", "diff_ids": [blob.digest.to_string()]},
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let record = store
        .put_image(&config, &[blob.descriptor(media_types::OCI_LAYER_TAR)])
        .unwrap();
    runtime
        .block_on(push(
            client,
            &store,
            &record.manifest,
            reference,
            &PushOptions::default(),
            &NoProgress,
        ))
        .unwrap();
    record.manifest.digest
}

#[test]
fn a_missing_base_is_pulled_once_then_found_in_the_store() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = client(dir.path());
    let name = format!("{}/bases/app:1", registry.host());
    let pushed = push_image(&runtime, &client, dir.path(), &name.parse().unwrap());

    let store = Store::open(dir.path().join("build-store")).unwrap();
    let pulls = Cell::new(0);
    let count = || pulls.set(pulls.get() + 1);
    let bases = PullingBases::new(client.clone(), runtime.handle().clone(), false, &NoProgress);
    let record = bases
        .resolve_with(&store, &name, &Platform::host(), count)
        .unwrap();
    assert_eq!(record.image_manifest.digest, pushed);
    assert_eq!(pulls.get(), 1);
    bases
        .resolve_with(&store, &name, &Platform::host(), count)
        .unwrap();
    assert_eq!(
        pulls.get(),
        1,
        "the second stage finds the base in the store"
    );

    // `--pull`: a new build pulls once although the store has the image.
    let always = PullingBases::new(client.clone(), runtime.handle().clone(), true, &NoProgress);
    for _ in 0..2 {
        always
            .resolve_with(&store, &name, &Platform::host(), count)
            .unwrap();
    }
    assert_eq!(
        pulls.get(),
        2,
        "one pull for the --pull build, not one per stage"
    );

    // What the registry lacks fails naming it, with the registry's error as the source.
    let missing = format!("{}/bases/nothere:1", registry.host());
    let err = bases
        .resolve_with(&store, &missing, &Platform::host(), count)
        .unwrap_err();
    assert!(err.to_string().contains(&missing), "{err}");
    assert!(
        matches!(
            &err,
            BaseImageError::Pull {
                source: rbuild_transfer::TransferError::Registry(_),
                ..
            }
        ),
        "{err:?}"
    );
    // Asked again in the same build (a stage after the build's look-ahead): the same
    // error at once, no second pull.
    let before = pulls.get();
    let again = bases
        .resolve_with(&store, &missing, &Platform::host(), count)
        .unwrap_err();
    assert_eq!(pulls.get(), before, "a failed pull is not tried again");
    assert!(
        matches!(again, BaseImageError::FailedEarlier { .. }),
        "{again:?}"
    );
    assert!(
        again.to_string().contains(&err.to_string()),
        "{again} keeps {err}"
    );
}

#[test]
fn a_bad_reference_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let bases = PullingBases::new(
        client(dir.path()),
        runtime.handle().clone(),
        false,
        &NoProgress,
    );
    let err = bases
        .resolve_with(&store, "UPPER/Case::x", &Platform::host(), || ())
        .unwrap_err();
    assert!(
        matches!(err, BaseImageError::BadReference { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"UPPER/Case::x\""), "{err}");
}
