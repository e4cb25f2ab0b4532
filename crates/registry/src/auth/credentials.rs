//! Credentials from Docker's `config.json`: `credHelpers`, then `credsStore`, then `auths`
//! (the Docker CLI's order), and `login`/`logout` writing `auths`. Secrets are redacted from
//! Debug output and never put into error messages.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::error::{ErrorKind, RegistryError, Result};

/// The key Docker stores Docker Hub credentials under.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A credential for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken`, or a helper's `<token>` user).
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// Where a credential came from, for error messages.
#[derive(Debug, Clone)]
pub struct Found {
    pub credential: Credential,
    pub source: String,
}

/// The Docker client configuration directory's `config.json`.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn from_env() -> Self {
        let dir = match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => {
                let home = std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_default();
                home.join(".docker")
            }
        };
        Self::in_dir(dir)
    }

    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        DockerConfig {
            path: dir.into().join("config.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(serde_json::Value::Object(map)) => Ok(map),
                Ok(_) => Err(self.error("is not a JSON object".into())),
                Err(e) => Err(self.error(format!("is not valid JSON: {e}"))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
            Err(e) => Err(self.error(format!("cannot be read: {e}"))),
        }
    }

    fn error(&self, what: String) -> RegistryError {
        RegistryError::new(
            format!("read {}", self.path.display()),
            ErrorKind::Config,
            what,
        )
    }

    /// The credential for `registry` (as written in references, e.g. `docker.io`), if any.
    pub fn lookup(&self, registry: &str) -> Result<Option<Found>> {
        let config = self.load()?;
        let server = auth_key(registry);
        if let Some(helper) = config
            .get("credHelpers")
            .and_then(|h| h.get(registry).or_else(|| h.get(&server)))
            .and_then(|v| v.as_str())
        {
            return run_helper(helper, &server);
        }
        if let Some(store) = config.get("credsStore").and_then(|v| v.as_str()) {
            if !store.is_empty() {
                if let Some(found) = run_helper(store, &server)? {
                    return Ok(Some(found));
                }
            }
        }
        let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
            return Ok(None);
        };
        let entry = auths
            .iter()
            .find(|(key, _)| normalize_key(key) == normalize_key(&server))
            .map(|(_, v)| v);
        let Some(entry) = entry else {
            return Ok(None);
        };
        let source = format!("{} (auths)", self.path.display());
        let field = |name: &str| {
            entry
                .get(name)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        };
        if let Some(token) = field("identitytoken") {
            return Ok(Some(Found {
                credential: Credential::IdentityToken(token.to_string()),
                source,
            }));
        }
        if let Some(auth) = field("auth") {
            let decoded = BASE64
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    self.error(format!(
                        "auths entry for {registry}: `auth` is not base64 of user:password"
                    ))
                })?;
            let (username, password) = decoded.split_once(':').ok_or_else(|| {
                self.error(format!(
                    "auths entry for {registry}: `auth` has no ':' between user and password"
                ))
            })?;
            return Ok(Some(Found {
                credential: Credential::Basic {
                    username: username.to_string(),
                    password: password.to_string(),
                },
                source,
            }));
        }
        if let (Some(username), Some(password)) = (field("username"), field("password")) {
            return Ok(Some(Found {
                credential: Credential::Basic {
                    username: username.to_string(),
                    password: password.to_string(),
                },
                source,
            }));
        }
        Ok(None)
    }

    /// Stores `user:password` for `registry` under `auths`, keeping every other field; the file
    /// is written to a temporary sibling with mode 0600 and renamed over the old one.
    pub fn store_basic(&self, registry: &str, username: &str, password: &str) -> Result<()> {
        let mut config = self.load()?;
        let auths = config
            .entry("auths")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        let Some(auths) = auths.as_object_mut() else {
            return Err(self.error("`auths` is not an object".into()));
        };
        let server = auth_key(registry);
        auths.retain(|key, _| normalize_key(key) != normalize_key(&server));
        auths.insert(
            server,
            serde_json::json!({ "auth": BASE64.encode(format!("{username}:{password}")) }),
        );
        self.write(&config)
    }

    /// Removes the `auths` entry for `registry`; returns whether there was one.
    pub fn remove(&self, registry: &str) -> Result<bool> {
        let mut config = self.load()?;
        let server = auth_key(registry);
        let removed = match config.get_mut("auths").and_then(|a| a.as_object_mut()) {
            Some(auths) => {
                let before = auths.len();
                auths.retain(|key, _| normalize_key(key) != normalize_key(&server));
                before != auths.len()
            }
            None => false,
        };
        if removed {
            self.write(&config)?;
        }
        Ok(removed)
    }

    fn write(&self, config: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let write_error = |e: std::io::Error| {
            RegistryError::new(
                format!("write {}", self.path.display()),
                ErrorKind::Io,
                e.to_string(),
            )
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(write_error)?;
        let tmp = dir.join(format!(".config.json.{}.tmp", std::process::id()));
        // Cannot fail: a JSON value with string keys always serialises.
        let mut bytes = serde_json::to_vec_pretty(config).expect("JSON map serialises");
        bytes.push(b'\n');
        let result = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(write_error)
    }
}

/// The key config.json and credential helpers use for a registry.
pub fn auth_key(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_AUTH_KEY.to_string(),
        other => other.to_string(),
    }
}

/// `https://host:port/v1/` and `host:port` name the same entry, as in Docker's
/// `ConvertToHostname`.
fn normalize_key(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

/// Runs `docker-credential-<helper> get` with the server on stdin.
fn run_helper(helper: &str, server: &str) -> Result<Option<Found>> {
    let program = format!("docker-credential-{helper}");
    let operation = format!("credential helper {program} get {server}");
    let fail = |kind, msg: String| RegistryError::new(operation.clone(), kind, msg);
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(ErrorKind::Config, format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading stdin is not an error in itself.
        let _ = stdin.write_all(server.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| fail(ErrorKind::Config, format!("{program} failed: {e}")))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        // The helper's output is not echoed: a broken helper could print a secret.
        return Err(fail(
            ErrorKind::Config,
            format!("{program} exited with {}", output.status),
        ));
    }
    #[derive(serde::Deserialize)]
    struct HelperAnswer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout).map_err(|e| {
        fail(
            ErrorKind::Config,
            format!(
                "{program} printed something that is not the expected JSON ({})",
                e.classify_name()
            ),
        )
    })?;
    let credential = if answer.username == "<token>" {
        Credential::IdentityToken(answer.secret)
    } else {
        Credential::Basic {
            username: answer.username,
            password: answer.secret,
        }
    };
    Ok(Some(Found {
        credential,
        source: format!("credential helper {program}"),
    }))
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "missing or wrong fields",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auths_in_all_forms_and_redacts_debug() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::json!({
                "auths": {
                    "https://index.docker.io/v1/": {"auth": BASE64.encode("hub:s3cret")},
                    "https://reg.example:5000/v2/": {"username": "u", "password": "p4ss"},
                    "tok.example": {"identitytoken": "refresh-abc"}
                }
            })
            .to_string(),
        )
        .unwrap();
        let cfg = DockerConfig::in_dir(dir.path());
        let hub = cfg.lookup("docker.io").unwrap().unwrap();
        assert_eq!(
            hub.credential,
            Credential::Basic {
                username: "hub".into(),
                password: "s3cret".into()
            }
        );
        let debug = format!("{hub:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("hub"),
            "{debug}"
        );
        let reg = cfg.lookup("reg.example:5000").unwrap().unwrap();
        assert!(
            matches!(reg.credential, Credential::Basic { ref password, .. } if password == "p4ss")
        );
        let tok = cfg.lookup("tok.example").unwrap().unwrap();
        assert_eq!(
            tok.credential,
            Credential::IdentityToken("refresh-abc".into())
        );
        assert!(!format!("{tok:?}").contains("refresh-abc"));
        assert!(cfg.lookup("other.example").unwrap().is_none());
    }

    #[test]
    fn store_and_remove_keep_other_fields_and_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"psFormat":"table","auths":{"a.example":{"auth":"eDp5"}}}"#,
        )
        .unwrap();
        let cfg = DockerConfig::in_dir(dir.path());
        cfg.store_basic("localhost:5000", "me", "pw:with:colons")
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let found = cfg.lookup("localhost:5000").unwrap().unwrap();
        assert_eq!(
            found.credential,
            Credential::Basic {
                username: "me".into(),
                password: "pw:with:colons".into()
            }
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("psFormat") && text.contains("a.example"),
            "{text}"
        );
        assert!(cfg.remove("localhost:5000").unwrap());
        assert!(!cfg.remove("localhost:5000").unwrap());
        assert!(cfg.lookup("localhost:5000").unwrap().is_none());
        assert!(cfg.lookup("a.example").unwrap().is_some());
    }

    #[test]
    fn malformed_config_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        let err = DockerConfig::in_dir(dir.path())
            .lookup("x.example")
            .unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
    }
}
