//! Downloads through a proxy that corrupts, truncates or replaces what the registry sends.

mod common;

use std::sync::atomic::Ordering;

use common::proxy::{Tamper, TamperProxy};
use common::{blob_file, client_with_config, pseudo_random, Auth, TestRegistry};
use rbuild_image::{Digest, Reference};
use rbuild_registry::ErrorKind;

async fn setup(
    tamper: Tamper,
) -> (
    TestRegistry,
    TamperProxy,
    tempfile::TempDir,
    (std::path::PathBuf, Digest, u64),
) {
    let registry = TestRegistry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let client = client_with_config(tmp.path());
    let layer = blob_file(tmp.path(), "layer", &pseudo_random(600_000, 21));
    client
        .push_blob_from_file(&registry.host(), "t/r", &layer.0, &layer.1, layer.2)
        .await
        .unwrap();
    let proxy = TamperProxy::start(registry.port, tamper).await;
    (registry, proxy, tmp, layer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_blob_is_refused_with_both_digests() {
    let (_registry, proxy, tmp, layer) = setup(Tamper::CorruptBlob).await;
    let client = client_with_config(tmp.path());
    let mut out = Vec::new();
    let err = client
        .pull_blob(&proxy.host(), "t/r", &layer.1, layer.2, &mut out)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::DigestMismatch, "{err}");
    let mut corrupted = std::fs::read(&layer.0).unwrap();
    let mid = corrupted.len() / 2;
    corrupted[mid] ^= 0xff;
    let expected = format!(
        "registry returned a blob whose digest does not match: expected {} got {}",
        layer.1,
        Digest::of(&corrupted)
    );
    assert!(err.message.contains(&expected), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_blob_is_refused_after_bounded_resumes() {
    let (_registry, proxy, tmp, layer) = setup(Tamper::TruncateBlobAlways).await;
    let client = client_with_config(tmp.path());
    let mut out = Vec::new();
    let err = client
        .pull_blob(&proxy.host(), "t/r", &layer.1, layer.2, &mut out)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::DigestMismatch, "{err}");
    assert!(err.message.contains("truncated"), "{err}");
    assert!(
        err.message.contains(&format!("of {} bytes", layer.2)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_download_resumes_with_range() {
    let (_registry, proxy, tmp, layer) = setup(Tamper::TruncateBlobOnce).await;
    let client = client_with_config(tmp.path());
    let mut out = Vec::new();
    client
        .pull_blob(&proxy.host(), "t/r", &layer.1, layer.2, &mut out)
        .await
        .unwrap();
    assert_eq!(out, std::fs::read(&layer.0).unwrap());
    assert_eq!(proxy.range_requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_schema1_manifests_are_refused() {
    let registry = TestRegistry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let client = client_with_config(tmp.path());
    let unknown = TamperProxy::start(
        registry.port,
        Tamper::ReplaceManifest {
            content_type: "application/vnd.example.thing+json".into(),
            body: br#"{"schemaVersion":2,"mediaType":"application/vnd.example.thing+json"}"#
                .to_vec(),
        },
    )
    .await;
    let r: Reference = format!("{}/a/b:1", unknown.host()).parse().unwrap();
    let err = client.get_manifest(&r).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnsupportedMediaType, "{err}");
    assert!(
        err.message.contains("application/vnd.example.thing+json"),
        "{err}"
    );

    let schema1 = TamperProxy::start(
        registry.port,
        Tamper::ReplaceManifest {
            content_type: "application/vnd.docker.distribution.manifest.v1+prettyjws".into(),
            body: br#"{"schemaVersion":1,"name":"a/b","tag":"1","fsLayers":[]}"#.to_vec(),
        },
    )
    .await;
    let r: Reference = format!("{}/a/b:1", schema1.host()).parse().unwrap();
    let err = client.get_manifest(&r).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnsupportedMediaType, "{err}");
    assert!(err.message.contains("schema 1"), "{err}");

    // A body that does not match the digest the reference pins.
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#.to_vec();
    let swapped = TamperProxy::start(
        registry.port,
        Tamper::ReplaceManifest {
            content_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body,
        },
    )
    .await;
    let pinned = Digest::of(b"the manifest we wanted");
    let r: Reference = format!("{}/a/b@{pinned}", swapped.host()).parse().unwrap();
    let err = client.get_manifest(&r).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::DigestMismatch, "{err}");
    assert!(err.message.contains(&format!("expected {pinned}")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_registries_are_retried_with_backoff_and_then_reported() {
    let registry = TestRegistry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let client = client_with_config(tmp.path());
    let layer = blob_file(tmp.path(), "layer", &pseudo_random(10_000, 5));
    // Two 503s then success: within the client's 2 retries.
    let flaky = TamperProxy::start(
        registry.port,
        Tamper::FailFirst {
            count: 2,
            status: 503,
        },
    )
    .await;
    client
        .push_blob_from_file(&flaky.host(), "t/r", &layer.0, &layer.1, layer.2)
        .await
        .unwrap();
    assert!(client
        .blob_exists(&flaky.host(), "t/r", &layer.1)
        .await
        .unwrap());
    // Always 429: reported after the bounded retries, with the status.
    let busy = TamperProxy::start(
        registry.port,
        Tamper::FailFirst {
            count: 1000,
            status: 429,
        },
    )
    .await;
    let err = client
        .blob_exists(&busy.host(), "t/r", &layer.1)
        .await
        .unwrap_err();
    assert!(err.message.contains("429"), "{err}");
    assert_eq!(busy.requests.load(Ordering::SeqCst), 3, "1 try + 2 retries");
    // 4xx other than 429 is not retried.
    let missing = Digest::of(b"missing");
    let before = flaky.requests.load(Ordering::SeqCst);
    assert!(!client
        .blob_exists(&flaky.host(), "t/r", &missing)
        .await
        .unwrap());
    assert_eq!(flaky.requests.load(Ordering::SeqCst), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_when_monolithic_put_is_refused() {
    let registry = TestRegistry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let client = rbuild_registry::Client::new(rbuild_registry::ClientOptions {
        chunk_size: 100_000,
        docker_config: rbuild_registry::DockerConfig::in_dir(tmp.path()),
        cert_dirs: Vec::new(),
        ..Default::default()
    });
    let layer = blob_file(tmp.path(), "layer", &pseudo_random(250_001, 9));
    let proxy = TamperProxy::start(registry.port, Tamper::RefuseMonolithicPut).await;
    client
        .push_blob_from_file(&proxy.host(), "t/chunked", &layer.0, &layer.1, layer.2)
        .await
        .unwrap();
    let mut out = Vec::new();
    client
        .pull_blob(&registry.host(), "t/chunked", &layer.1, layer.2, &mut out)
        .await
        .unwrap();
    assert_eq!(out, std::fs::read(&layer.0).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_another_host_carry_no_credentials() {
    let registry = TestRegistry::start(Auth::Basic {
        user: "frank".into(),
        password: "Redirect-pw1".into(),
    });
    let tmp = tempfile::tempdir().unwrap();
    {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode("frank:Redirect-pw1");
        std::fs::write(
            tmp.path().join("config.json"),
            serde_json::json!({"auths": {registry.host(): {"auth": auth}}}).to_string(),
        )
        .unwrap();
    }
    let client = client_with_config(tmp.path());
    let layer = blob_file(tmp.path(), "layer", &pseudo_random(50_000, 13));
    client
        .push_blob_from_file(&registry.host(), "t/r", &layer.0, &layer.1, layer.2)
        .await
        .unwrap();
    // "Storage": injects its own authorization, like a signed URL; records what it received.
    use base64::Engine as _;
    let storage_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("frank:Redirect-pw1")
    );
    let storage =
        TamperProxy::start(registry.port, Tamper::InjectAuthorization(storage_auth)).await;
    let front = TamperProxy::start(registry.port, Tamper::RedirectBlobsTo(storage.port)).await;
    // The front proxy's host needs the same credentials.
    let front_config = tempfile::tempdir().unwrap();
    {
        let auth = base64::engine::general_purpose::STANDARD.encode("frank:Redirect-pw1");
        std::fs::write(
            front_config.path().join("config.json"),
            serde_json::json!({"auths": {front.host(): {"auth": auth}}}).to_string(),
        )
        .unwrap();
    }
    let client = client_with_config(front_config.path());
    // A HEAD first, so the client holds credentials for the front host when it is redirected.
    assert!(client
        .blob_exists(&front.host(), "t/r", &layer.1)
        .await
        .unwrap());
    let mut out = Vec::new();
    client
        .pull_blob(&front.host(), "t/r", &layer.1, layer.2, &mut out)
        .await
        .unwrap();
    assert_eq!(Digest::of(&out), layer.1);
    assert!(storage.requests.load(Ordering::SeqCst) >= 1);
    assert_eq!(storage.authorized_requests.load(Ordering::SeqCst), 0);
    assert!(front.authorized_requests.load(Ordering::SeqCst) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_download_times_out_and_resumes() {
    let (_registry, proxy, tmp, layer) = setup(Tamper::StallBlobOnce).await;
    let client = rbuild_registry::Client::new(rbuild_registry::ClientOptions {
        read_timeout: std::time::Duration::from_secs(1),
        docker_config: rbuild_registry::DockerConfig::in_dir(tmp.path()),
        cert_dirs: Vec::new(),
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    client
        .pull_blob(&proxy.host(), "t/r", &layer.1, layer.2, &mut out)
        .await
        .unwrap();
    assert_eq!(Digest::of(&out), layer.1);
    assert_eq!(proxy.range_requests.load(Ordering::SeqCst), 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}
