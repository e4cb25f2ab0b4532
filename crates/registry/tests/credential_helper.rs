//! Credentials from a `docker-credential-<name>` helper (credHelpers and credsStore).
//! Its own test binary, because it changes PATH for the process.

mod common;

use common::{client_with_config, Auth, TestRegistry};
use rbuild_image::Reference;
use rbuild_registry::{Credential, DockerConfig, ErrorKind};

const PASSWORD: &str = "Helper-Secret-9";

fn install_helper(bin_dir: &std::path::Path, name: &str, host: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let script = bin_dir.join(format!("docker-credential-{name}"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\nif [ \"$server\" = \"{host}\" ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"erin\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_helpers_supply_credentials() {
    let registry = TestRegistry::start(Auth::Basic {
        user: "erin".into(),
        password: PASSWORD.into(),
    });
    let host = registry.host();
    let bin = tempfile::tempdir().unwrap();
    install_helper(bin.path(), "test", &host);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin.path().to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    std::env::set_var("PATH", std::env::join_paths(dirs).unwrap());

    // credHelpers for this host.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::json!({"credHelpers": {&host: "test"}}).to_string(),
    )
    .unwrap();
    let found = DockerConfig::in_dir(dir.path())
        .lookup(&host)
        .unwrap()
        .unwrap();
    assert_eq!(
        found.credential,
        Credential::Basic {
            username: "erin".into(),
            password: PASSWORD.into()
        }
    );
    assert!(found.source.contains("docker-credential-test"));
    let client = client_with_config(dir.path());
    let r: Reference = format!("{host}/helper/app:1").parse().unwrap();
    let err = client.get_manifest(&r).await.unwrap_err();
    // Authenticated: the image just does not exist.
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");

    // credsStore: "credentials not found" falls back to auths (here: none).
    let store_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        store_dir.path().join("config.json"),
        serde_json::json!({"credsStore": "test"}).to_string(),
    )
    .unwrap();
    let cfg = DockerConfig::in_dir(store_dir.path());
    assert!(cfg.lookup(&host).unwrap().is_some());
    assert!(cfg.lookup("elsewhere.example").unwrap().is_none());

    // A helper that is not installed is a clear configuration error.
    std::fs::write(
        store_dir.path().join("config.json"),
        serde_json::json!({"credHelpers": {&host: "missing-helper"}}).to_string(),
    )
    .unwrap();
    let err = cfg.lookup(&host).unwrap_err();
    assert!(
        err.to_string().contains("docker-credential-missing-helper"),
        "{err}"
    );
}
