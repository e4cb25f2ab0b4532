//! Authentication against a real `docker-registry`: htpasswd basic auth and token auth with a
//! token server of our own, failures that name the cause without leaking the password, and
//! login/logout.

mod common;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use common::token_server::{TokenServer, ISSUER, SERVICE};
use common::{blob_file, client_with_config, oci_manifest, pseudo_random, Auth, TestRegistry};
use rbuild_image::Reference;
use rbuild_registry::manifest::OCI_MANIFEST;
use rbuild_registry::{DockerConfig, ErrorKind};

const PASSWORD: &str = "Sup3r-Secret-pw";

fn write_config(dir: &std::path::Path, host: &str, user: &str, password: &str) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        dir.join("config.json"),
        serde_json::json!({"auths": {host: {"auth": auth}}}).to_string(),
    )
    .unwrap();
}

/// Pushes a small image and pulls it back; panics with the error otherwise.
async fn round_trip(
    client: &rbuild_registry::Client,
    host: &str,
    repo: &str,
    tmp: &std::path::Path,
) {
    let config = blob_file(tmp, "config", br#"{"os":"linux","architecture":"amd64"}"#);
    let layer = blob_file(tmp, "layer", &pseudo_random(100_000, 3));
    for b in [&config, &layer] {
        if !client.blob_exists(host, repo, &b.1).await.unwrap() {
            client
                .push_blob_from_file(host, repo, &b.0, &b.1, b.2)
                .await
                .unwrap();
        }
    }
    let manifest = oci_manifest(&config, &layer);
    let r: Reference = format!("{host}/{repo}:1").parse().unwrap();
    client
        .push_manifest(&r, Bytes::from(manifest.clone()), OCI_MANIFEST)
        .await
        .unwrap();
    let got = client.get_manifest(&r).await.unwrap();
    assert_eq!(got.bytes.as_ref(), manifest.as_slice());
    let mut out = Vec::new();
    client
        .pull_blob(host, repo, &layer.1, layer.2, &mut out)
        .await
        .unwrap();
    assert_eq!(out.len() as u64, layer.2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_push_pull_and_failures() {
    let registry = TestRegistry::start(Auth::Basic {
        user: "alice".into(),
        password: PASSWORD.into(),
    });
    let host = registry.host();
    let tmp = tempfile::tempdir().unwrap();

    // No credentials at all.
    let anonymous = client_with_config(tmp.path());
    let r: Reference = format!("{host}/private/app:1").parse().unwrap();
    let err = anonymous.get_manifest(&r).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");
    let expected = format!(
        "pull {host}/private/app:1: unauthorized (401): no credentials for {host} in {}",
        tmp.path().join("config.json").display()
    );
    assert!(
        err.to_string().starts_with(&expected),
        "{err}\nexpected prefix: {expected}"
    );

    // Wrong password: rejected, and the password is not in the message.
    let wrong_dir = tempfile::tempdir().unwrap();
    write_config(wrong_dir.path(), &host, "alice", "wrong-Pa55word");
    let wrong = client_with_config(wrong_dir.path());
    let err = wrong.get_manifest(&r).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");
    assert!(err.message.contains("were rejected"), "{err}");
    assert!(
        !err.to_string().contains("wrong-Pa55word")
            && !format!("{err:?}").contains("wrong-Pa55word")
    );

    // Right password: full round trip.
    let good_dir = tempfile::tempdir().unwrap();
    write_config(good_dir.path(), &host, "alice", PASSWORD);
    let good = client_with_config(good_dir.path());
    round_trip(&good, &host, "private/app", tmp.path()).await;
    assert!(!format!("{good:?}").contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_with_scopes_caching_and_mounts() {
    let tokens = TokenServer::start("bob", PASSWORD, "refresh-xyz").await;
    let registry = TestRegistry::start(Auth::Token {
        realm: tokens.realm(),
        service: SERVICE.into(),
        issuer: ISSUER.into(),
        cert_pem: tokens.cert_pem.clone(),
    });
    let host = registry.host();
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), &host, "bob", PASSWORD);
    let client = client_with_config(tmp.path());
    round_trip(&client, &host, "team/app", tmp.path()).await;
    let issued = tokens.issued.load(Ordering::SeqCst);
    // A token per scope set (pull, push), not one per request.
    assert!(issued <= 3, "{issued} tokens issued");
    let layer = blob_file(tmp.path(), "layer", &pseudo_random(100_000, 3));
    assert!(client
        .blob_exists(&host, "team/app", &layer.1)
        .await
        .unwrap());
    assert_eq!(
        tokens.issued.load(Ordering::SeqCst),
        issued,
        "cached token reused"
    );

    // A mount asks for pull on the source and pull,push on the destination in one token.
    assert!(client
        .mount_blob(&host, "team/copy", "team/app", &layer.1)
        .await
        .unwrap());
    let requests = tokens.requests.lock().unwrap().clone();
    let mount_request = requests.last().unwrap();
    assert!(
        mount_request.contains(&"repository:team/app:pull".to_string()),
        "{requests:?}"
    );
    assert!(
        mount_request.contains(&"repository:team/copy:pull,push".to_string()),
        "{requests:?}"
    );

    // Identity tokens use the OAuth2 refresh_token grant.
    let id_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        id_dir.path().join("config.json"),
        serde_json::json!({"auths": {&host: {"identitytoken": "refresh-xyz"}}}).to_string(),
    )
    .unwrap();
    let id_client = client_with_config(id_dir.path());
    let r: Reference = format!("{host}/team/app:1").parse().unwrap();
    id_client.get_manifest(&r).await.unwrap();

    // Wrong password: the token server refuses; the message names the source, not the secret.
    let bad_dir = tempfile::tempdir().unwrap();
    write_config(bad_dir.path(), &host, "bob", "not-the-Pa55word");
    let bad = client_with_config(bad_dir.path());
    let err = bad.get_manifest(&r).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");
    assert!(
        err.message.contains("token server 127.0.0.1 refused"),
        "{err}"
    );
    assert!(err.message.contains("config.json"), "{err}");
    assert!(!err.to_string().contains("not-the-Pa55word"));

    // No credentials.
    let none_dir = tempfile::tempdir().unwrap();
    let err = client_with_config(none_dir.path())
        .get_manifest(&r)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");
    assert!(
        err.message.contains(&format!("no credentials for {host}")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_verifies_then_stores_and_logout_removes() {
    let registry = TestRegistry::start(Auth::Basic {
        user: "carol".into(),
        password: PASSWORD.into(),
    });
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let client = client_with_config(dir.path());
    let err = client
        .login(&host, "carol", "nope-Wrong1")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");
    assert!(!err.to_string().contains("nope-Wrong1"));
    assert!(
        !dir.path().join("config.json").exists(),
        "nothing stored on failure"
    );

    client.login(&host, "carol", PASSWORD).await.unwrap();
    let stored = DockerConfig::in_dir(dir.path())
        .lookup(&host)
        .unwrap()
        .unwrap();
    assert!(format!("{stored:?}").contains("carol"));
    round_trip(&client, &host, "carol/app", dir.path()).await;

    client.logout(&host).unwrap();
    assert!(DockerConfig::in_dir(dir.path())
        .lookup(&host)
        .unwrap()
        .is_none());
    let err = client.logout(&host).unwrap_err();
    assert!(err.message.contains("not logged in"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_through_a_token_server() {
    let tokens = TokenServer::start("dave", PASSWORD, "unused").await;
    let registry = TestRegistry::start(Auth::Token {
        realm: tokens.realm(),
        service: SERVICE.into(),
        issuer: ISSUER.into(),
        cert_pem: tokens.cert_pem.clone(),
    });
    let host = registry.host();
    let dir = tempfile::tempdir().unwrap();
    let client = client_with_config(dir.path());
    let err = client.login(&host, "dave", "bad-Pass1").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");
    client.login(&host, "dave", PASSWORD).await.unwrap();
    round_trip(&client, &host, "dave/app", dir.path()).await;
}
