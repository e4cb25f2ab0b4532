//! Registry credentials from `~/.docker/config.json` (or `$DOCKER_CONFIG/config.json`),
//! handed to the daemon: all of them as `X-Registry-Config` for the pulls of a build, and
//! the one for the pushed registry as `X-Registry-Auth`.
//!
//! Secrets stay in memory and in request headers only; errors name registries, never values.

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::auth::DockerCredentials;
use docker_credential::DockerCredential;

/// The key Docker uses for Docker Hub in config.json.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

fn config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The registries config.json knows about (`auths` and `credHelpers` keys).
fn configured_registries() -> Vec<String> {
    let Some(path) = config_path() else {
        return Vec::new();
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    registries_in_config(&json, helper_list)
}

/// The registry keys of a parsed config.json; `list_store` lists a `credsStore`'s servers.
fn registries_in_config(
    json: &serde_json::Value,
    list_store: impl Fn(&str) -> Vec<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for section in ["auths", "credHelpers"] {
        if let Some(map) = json.get(section).and_then(|v| v.as_object()) {
            out.extend(map.keys().cloned());
        }
    }
    if let Some(store) = json.get("credsStore").and_then(|v| v.as_str()) {
        out.extend(list_store(store));
    }
    out.sort();
    out.dedup();
    out
}

/// The registries a credential store holds: `docker-credential-<store> list` prints a JSON
/// object of server URL to user name. A failing helper contributes nothing.
fn helper_list(store: &str) -> Vec<String> {
    let output = std::process::Command::new(format!("docker-credential-{store}"))
        .arg("list")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    let Ok(output) = output else {
        return Vec::new();
    };
    if !output.status.success() {
        return Vec::new();
    }
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&output.stdout)
        .map(|map| map.keys().cloned().collect())
        .unwrap_or_default()
}

fn to_bollard(server: &str, cred: DockerCredential) -> DockerCredentials {
    match cred {
        DockerCredential::UsernamePassword(username, password) => DockerCredentials {
            username: Some(username),
            password: Some(password),
            serveraddress: Some(server.to_string()),
            ..Default::default()
        },
        DockerCredential::IdentityToken(token) => DockerCredentials {
            identitytoken: Some(token),
            serveraddress: Some(server.to_string()),
            ..Default::default()
        },
    }
}

/// Every credential config.json yields, keyed by registry, for `X-Registry-Config`.
/// Registries whose helper fails are left out: a build that needs them then fails at the
/// pull with the daemon's own message naming the registry.
pub fn all_credentials() -> HashMap<String, DockerCredentials> {
    let mut out = HashMap::new();
    for server in configured_registries() {
        if let Ok(cred) = docker_credential::get_credential(&server) {
            out.insert(server.clone(), to_bollard(&server, cred));
        }
    }
    out
}

/// The registry host of an image reference, as config.json keys it.
pub fn registry_key(reference: &str) -> String {
    let first = reference.split('/').next().unwrap_or("");
    let has_registry = reference.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    if !has_registry || first == "docker.io" || first == "index.docker.io" {
        DOCKER_HUB_KEY.to_string()
    } else {
        first.to_string()
    }
}

/// The credential for pushing `reference`, if config.json has one.
pub fn credentials_for(reference: &str) -> Option<DockerCredentials> {
    let key = registry_key(reference);
    let cred = docker_credential::get_credential(&key).ok()?;
    Some(to_bollard(&key, cred))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_registries_come_from_auths_helpers_and_the_store() {
        let json: serde_json::Value = serde_json::from_str(
            r#"{"auths": {"a.example": {"auth": "eDp5"}}, "credHelpers": {"b.example": "ecr"},
                "credsStore": "pass"}"#,
        )
        .unwrap();
        let got = registries_in_config(&json, |store| {
            assert_eq!(store, "pass");
            vec!["c.example".to_string(), "a.example".to_string()]
        });
        assert_eq!(got, vec!["a.example", "b.example", "c.example"]);
    }

    #[test]
    fn registry_keys_follow_docker_normalisation() {
        assert_eq!(registry_key("alpine"), DOCKER_HUB_KEY);
        assert_eq!(registry_key("library/alpine:3"), DOCKER_HUB_KEY);
        assert_eq!(registry_key("docker.io/me/app"), DOCKER_HUB_KEY);
        assert_eq!(registry_key("127.0.0.1:5000/x:y"), "127.0.0.1:5000");
        assert_eq!(registry_key("localhost/x"), "localhost");
        assert_eq!(registry_key("ghcr.io/o/app:1"), "ghcr.io");
    }
}
