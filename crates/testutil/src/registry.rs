//! A real `docker-registry` (distribution 2.x) on 127.0.0.1 with temporary storage.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::{free_port, http_status};

/// Debian's registry (package `docker-registry`).
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

/// A running registry; killed on drop.
pub struct Registry {
    child: Child,
    port: u16,
    /// `user:pass` in base64, for registries started with a password.
    basic: Option<String>,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// An open registry.
    pub fn start() -> Registry {
        Self::start_inner(None)
    }

    /// A registry that wants HTTP basic auth for `user`/`pass` (bcrypt htpasswd, made with
    /// `htpasswd` from `apache2-utils`).
    pub fn start_with_htpasswd(user: &str, pass: &str) -> Registry {
        Self::start_inner(Some((user, pass)))
    }

    /// A registry speaking TLS only, with this server certificate and key (PEM files), that
    /// requires client certificates signed by `client_ca`.
    pub fn start_with_client_tls(certificate: &Path, key: &Path, client_ca: &Path) -> Registry {
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n    clientcas:\n      - {}\n",
            certificate.display(),
            key.display(),
            client_ca.display()
        );
        Self::start_with(None, Some(tls))
    }

    fn start_inner(auth: Option<(&str, &str)>) -> Registry {
        Self::start_with(auth, None)
    }

    fn start_with(auth: Option<(&str, &str)>, tls: Option<String>) -> Registry {
        crate::require_binary(DOCKER_REGISTRY, "docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("rbuild-test-registry-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some(tls) = &tls {
            config.push_str(tls);
        }
        if let Some((user, pass)) = auth {
            let htpasswd = dir.path().join("htpasswd");
            write_htpasswd(&htpasswd, user, pass);
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(DOCKER_REGISTRY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {DOCKER_REGISTRY}: {e}"));
        let mut registry = Registry {
            child,
            port,
            basic: auth.map(|(user, pass)| crate::base64(&format!("{user}:{pass}"))),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        // `/v2/` answers 200 (open) or 401 (auth) once the registry listens.
        // A TLS registry cannot answer plain http: it is up once it accepts connections.
        let up = || match tls {
            None => matches!(http_status(port, "/v2/", &[]), Some(200 | 401)),
            Some(_) => std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        };
        while !up() {
            let exited = registry.child.try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(registry._dir.path().join("registry.log"))
                    .unwrap_or_default();
                panic!("the test registry did not come up ({exited:?}); its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The file the registry serves the blob `sha256:<hex>` from (distribution's
    /// filesystem layout), for tests that damage what it serves.
    pub fn blob_data_path(&self, hex: &str) -> std::path::PathBuf {
        self._dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// `127.0.0.1:PORT`, the prefix of image names in this registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The status of `GET /v2/<repo>/manifests/<tag>` (asking for Docker and OCI manifests),
    /// without credentials.
    pub fn manifest_status(&self, repo: &str, tag: &str) -> Option<u16> {
        self.manifest_status_as(repo, tag, None)
    }

    /// Like [`Registry::manifest_status`], with the registry's own credentials (the user and
    /// password it was started with).
    pub fn manifest_status_logged_in(&self, repo: &str, tag: &str) -> Option<u16> {
        self.manifest_status_as(repo, tag, self.basic.as_deref())
    }

    fn manifest_status_as(&self, repo: &str, tag: &str, basic: Option<&str>) -> Option<u16> {
        let accept = "application/vnd.docker.distribution.manifest.v2+json, \
                      application/vnd.oci.image.manifest.v1+json";
        let authorization = basic.map(|b| format!("Basic {b}"));
        let mut headers = vec![("Accept", accept)];
        if let Some(value) = &authorization {
            headers.push(("Authorization", value.as_str()));
        }
        http_status(self.port, &format!("/v2/{repo}/manifests/{tag}"), &headers)
    }

    /// A Docker `config.json` holding this registry's credentials (`{"auths":{}}` for an
    /// open registry), as `docker login` or `rbuild login` writes it.
    pub fn docker_config_json(&self) -> String {
        match &self.basic {
            Some(basic) => format!(
                "{{\"auths\":{{\"{}\":{{\"auth\":\"{basic}\"}}}}}}",
                self.host()
            ),
            None => "{\"auths\":{}}".to_string(),
        }
    }
}

fn write_htpasswd(path: &Path, user: &str, pass: &str) {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, pass])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run htpasswd ({e}): install the Debian package `apache2-utils`")
        });
    assert!(
        out.status.success(),
        "htpasswd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(path, out.stdout).unwrap();
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
