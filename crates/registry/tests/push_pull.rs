//! Push and pull against a real `docker-registry` (anonymous, plain http on 127.0.0.1).

mod common;

use bytes::Bytes;
use common::{blob_file, client_with_config, oci_manifest, pseudo_random, Auth, TestRegistry};
use rbuild_image::{Digest, Reference};
use rbuild_registry::manifest::{OCI_INDEX, OCI_MANIFEST};
use rbuild_registry::{resolve_platform, ErrorKind, Platform, PushOutcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_gives_back_the_same_bytes_and_digests() {
    let registry = TestRegistry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let client = client_with_config(tmp.path());
    let host = registry.host();
    let config = blob_file(
        tmp.path(),
        "config",
        br#"{"architecture":"amd64","os":"linux"}"#,
    );
    let layer = blob_file(tmp.path(), "layer", &pseudo_random(3 * 1024 * 1024 + 17, 1));

    assert!(!client
        .blob_exists(&host, "app/web", &layer.1)
        .await
        .unwrap());
    for blob in [&config, &layer] {
        client
            .push_blob_from_file(&host, "app/web", &blob.0, &blob.1, blob.2)
            .await
            .unwrap();
        assert!(client.blob_exists(&host, "app/web", &blob.1).await.unwrap());
    }
    let manifest = oci_manifest(&config, &layer);
    let reference: Reference = format!("{host}/app/web:v1").parse().unwrap();
    let pushed = client
        .push_manifest(&reference, Bytes::from(manifest.clone()), OCI_MANIFEST)
        .await
        .unwrap();
    assert_eq!(pushed, Digest::of(&manifest));

    let got = client.get_manifest(&reference).await.unwrap();
    assert_eq!(got.bytes.as_ref(), manifest.as_slice());
    assert_eq!(got.digest, pushed);
    assert_eq!(got.media_type, OCI_MANIFEST);
    // By digest too.
    let by_digest = client
        .get_manifest(&reference.with_digest(pushed.clone()))
        .await
        .unwrap();
    assert_eq!(by_digest.bytes, got.bytes);

    let mut out = Vec::new();
    client
        .pull_blob(&host, "app/web", &layer.1, layer.2, &mut out)
        .await
        .unwrap();
    assert_eq!(Digest::of(&out), layer.1);
    assert_eq!(out, std::fs::read(&layer.0).unwrap());

    // A wrong pinned digest is refused.
    let wrong = reference.with_digest(Digest::of(b"something else"));
    let err = client.get_manifest(&wrong).await.unwrap_err();
    assert_ne!(err.kind, ErrorKind::Transport, "{err}");

    // Unknown tags are NotFound, with the registry's reason.
    let missing: Reference = format!("{host}/app/web:nope").parse().unwrap();
    let err = client.get_manifest(&missing).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("pull {host}/app/web:nope: ")),
        "{err}"
    );
    assert!(err.message.contains("MANIFEST_UNKNOWN"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_round_trip_and_platform_selection() {
    let registry = TestRegistry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let client = client_with_config(tmp.path());
    let host = registry.host();
    let mut entries = Vec::new();
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let config = blob_file(
            tmp.path(),
            &format!("c{i}"),
            format!(r#"{{"architecture":"{arch}","os":"linux"}}"#).as_bytes(),
        );
        let layer = blob_file(tmp.path(), &format!("l{i}"), &pseudo_random(1000, i as u64));
        for b in [&config, &layer] {
            client
                .push_blob_from_file(&host, "multi", &b.0, &b.1, b.2)
                .await
                .unwrap();
        }
        let m = oci_manifest(&config, &layer);
        let r: Reference = format!("{host}/multi@{}", Digest::of(&m)).parse().unwrap();
        let d = client
            .push_manifest(&r, Bytes::from(m.clone()), OCI_MANIFEST)
            .await
            .unwrap();
        entries.push(serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": m.len(), "platform": {"os": "linux", "architecture": arch}}));
    }
    let index = serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
    )
    .unwrap();
    let r: Reference = format!("{host}/multi:latest").parse().unwrap();
    client
        .push_manifest(&r, Bytes::from(index), OCI_INDEX)
        .await
        .unwrap();
    let got = client.get_manifest(&r).await.unwrap();
    assert!(got.is_index());
    let arm = resolve_platform(&got, &Platform::new("linux", "arm64", "")).unwrap();
    assert_eq!(
        arm.digest.to_string(),
        entries[1]["digest"].as_str().unwrap()
    );
    let child = client
        .get_manifest_by_digest(&r, &arm.digest)
        .await
        .unwrap();
    assert_eq!(child.digest, arm.digest);
    assert!(!child.is_index());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_across_repositories_and_skip_existing() {
    let registry = TestRegistry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let client = client_with_config(tmp.path());
    let host = registry.host();
    let layer = blob_file(tmp.path(), "layer", &pseudo_random(200_000, 7));
    client
        .push_blob_from_file(&host, "src/repo", &layer.0, &layer.1, layer.2)
        .await
        .unwrap();

    assert!(client
        .mount_blob(&host, "dst/repo", "src/repo", &layer.1)
        .await
        .unwrap());
    assert!(client
        .blob_exists(&host, "dst/repo", &layer.1)
        .await
        .unwrap());

    // Mounting from a repository that lacks the blob is declined (202) ...
    let other = blob_file(tmp.path(), "other", &pseudo_random(5000, 8));
    assert!(!client
        .mount_blob(&host, "dst2/repo", "src/repo", &other.1)
        .await
        .unwrap());
    // ... and mount_or_push falls back to uploading in that session.
    let outcome = client
        .mount_or_push_blob(&host, "dst2/repo", "src/repo", &other.0, &other.1, other.2)
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::Uploaded);
    let outcome = client
        .mount_or_push_blob(&host, "dst3/repo", "src/repo", &layer.0, &layer.1, layer.2)
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::Mounted);
    let outcome = client
        .mount_or_push_blob(&host, "dst3/repo", "src/repo", &layer.0, &layer.1, layer.2)
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::AlreadyExists);
    let mut out = Vec::new();
    client
        .pull_blob(&host, "dst2/repo", &other.1, other.2, &mut out)
        .await
        .unwrap();
    assert_eq!(Digest::of(&out), other.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_share_one_client() {
    let registry = TestRegistry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let client = client_with_config(tmp.path());
    let host = registry.host();
    let a = blob_file(tmp.path(), "a", &pseudo_random(1_500_000, 11));
    let b = blob_file(tmp.path(), "b", &pseudo_random(1_700_000, 12));
    let (ra, rb) = tokio::join!(
        {
            let (c, h, a) = (client.clone(), host.clone(), a.clone());
            tokio::spawn(async move { c.push_blob_from_file(&h, "par/one", &a.0, &a.1, a.2).await })
        },
        {
            let (c, h, b) = (client.clone(), host.clone(), b.clone());
            tokio::spawn(async move { c.push_blob_from_file(&h, "par/two", &b.0, &b.1, b.2).await })
        }
    );
    ra.unwrap().unwrap();
    rb.unwrap().unwrap();
    assert!(client.blob_exists(&host, "par/one", &a.1).await.unwrap());
    assert!(client.blob_exists(&host, "par/two", &b.1).await.unwrap());
    assert!(!client.blob_exists(&host, "par/one", &b.1).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_refuses_a_file_of_the_wrong_size_and_a_wrong_digest() {
    let registry = TestRegistry::start(Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let client = client_with_config(tmp.path());
    let host = registry.host();
    let blob = blob_file(tmp.path(), "x", b"hello world");
    let err = client
        .push_blob_from_file(&host, "r", &blob.0, &blob.1, 99)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Io);
    assert!(err.message.contains("expected 99"), "{err}");
    let wrong = Digest::of(b"not hello");
    let err = client
        .push_blob_from_file(&host, "r", &blob.0, &wrong, blob.2)
        .await
        .unwrap_err();
    assert!(err.message.contains("DIGEST_INVALID"), "{err}");
    assert!(!client.blob_exists(&host, "r", &wrong).await.unwrap());
}

#[tokio::test]
async fn loopback_registries_use_http_and_others_https() {
    let tmp = tempfile::tempdir().unwrap();
    let client = client_with_config(tmp.path());
    assert_eq!(client.endpoint("127.0.0.1:5000").scheme, "http");
    assert_eq!(client.endpoint("localhost:5000").scheme, "http");
    assert_eq!(client.endpoint("registry.example.com").scheme, "https");
    let hub = client.endpoint("docker.io");
    assert_eq!(
        (hub.host.as_str(), hub.scheme),
        ("registry-1.docker.io", "https")
    );
    // Nothing listens here: the error names the operation and says it could not connect.
    let port = common::free_port();
    let r: Reference = format!("127.0.0.1:{port}/x:1").parse().unwrap();
    let err = client.get_manifest(&r).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transport, "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("pull 127.0.0.1:{port}/x:1: cannot connect")),
        "{err}"
    );
    assert!(err.message.contains("after 3 attempts"), "{err}");
}
