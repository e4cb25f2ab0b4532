//! Test helpers: a real `docker-registry` on 127.0.0.1 with temporary storage, a token server
//! issuing ES256 JWTs the registry trusts, and a tampering proxy.
#![allow(dead_code)]

pub mod http;
pub mod proxy;
pub mod token_server;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rbuild_registry::{Client, ClientOptions, DockerConfig, RetryPolicy};

const REGISTRY_BIN: &str = "docker-registry";

/// How the registry authenticates.
pub enum Auth {
    None,
    /// htpasswd with one bcrypt user.
    Basic {
        user: String,
        password: String,
    },
    /// Token auth trusting `cert_pem`, with tokens from `realm`.
    Token {
        realm: String,
        service: String,
        issuer: String,
        cert_pem: String,
    },
}

/// A running registry, killed on drop.
pub struct TestRegistry {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

fn find_registry_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        let candidate = dir.join(REGISTRY_BIN);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the `{REGISTRY_BIN}` binary is needed by the registry tests and was not found on PATH: \
         install the Debian package with `apt-get install -y docker-registry`"
    );
}

impl TestRegistry {
    pub fn start(auth: Auth) -> Self {
        let binary = find_registry_binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let auth_yaml = match &auth {
            Auth::None => String::new(),
            Auth::Basic { user, password } => {
                let hash = bcrypt::hash(password, 5).expect("bcrypt");
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                    htpasswd.display()
                )
            }
            Auth::Token {
                realm,
                service,
                issuer,
                cert_pem,
            } => {
                let bundle = dir.path().join("token-ca.pem");
                std::fs::write(&bundle, cert_pem).unwrap();
                format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                    bundle.display()
                )
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: test-secret\n{auth_yaml}",
            storage.display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(&binary)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut registry = TestRegistry { child, port, dir };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "docker-registry exited with {status} before answering: {}",
                    self.log()
                );
            }
            if answers_v2(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not answer /v2/ within 20s: {}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn answers_v2(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client with its own (empty unless written) Docker config dir and fast retries.
pub fn client_with_config(config_dir: &Path) -> Client {
    Client::new(ClientOptions {
        docker_config: DockerConfig::in_dir(config_dir),
        cert_dirs: Vec::new(),
        retry: RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        },
        ..ClientOptions::default()
    })
}

/// Writes `data` to a file in `dir` and returns its path, digest and size.
pub fn blob_file(dir: &Path, name: &str, data: &[u8]) -> (PathBuf, rbuild_image::Digest, u64) {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    (path, rbuild_image::Digest::of(data), data.len() as u64)
}

/// An OCI image manifest referring to a config blob and one layer.
pub fn oci_manifest(
    config: &(PathBuf, rbuild_image::Digest, u64),
    layer: &(PathBuf, rbuild_image::Digest, u64),
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.1.to_string(), "size": config.2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer.1.to_string(), "size": layer.2}]
    }))
    .unwrap()
}

/// Deterministic pseudo-random bytes (so layers do not compress or dedupe by accident).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
