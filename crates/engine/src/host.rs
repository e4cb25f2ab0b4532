//! Which daemon to talk to, read from the environment the way the Docker CLI reads it, and
//! the connection to it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bollard::Docker;

/// The socket the Docker CLI uses when `DOCKER_HOST` is unset.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Builds and pushes stream for as long as they take; bollard's timeout covers the wait for
/// the response headers, which for `/build` arrive only once the whole context is uploaded.
const REQUEST_TIMEOUT_SECS: u64 = 6 * 60 * 60;

/// Client certificate files for a TLS daemon (`ca.pem`, `cert.pem`, `key.pem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The three files of a Docker cert directory (`DOCKER_CERT_PATH`, or `client/` under
    /// `DOCKER_TLS_CERTDIR`).
    pub fn in_dir(dir: &Path) -> Self {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

/// A daemon address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonAddress {
    Unix(PathBuf),
    /// `host:port`, plain HTTP when `tls` is `None`.
    Tcp {
        host_port: String,
        tls: Option<TlsFiles>,
    },
}

/// The environment variables that choose the daemon, captured so resolution is testable.
#[derive(Debug, Clone, Default)]
pub struct DockerEnv {
    pub docker_host: Option<String>,
    pub tls_verify: Option<String>,
    pub cert_path: Option<String>,
    pub tls_certdir: Option<String>,
    pub home: Option<String>,
}

impl DockerEnv {
    pub fn from_process() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        DockerEnv {
            docker_host: var("DOCKER_HOST"),
            tls_verify: var("DOCKER_TLS_VERIFY"),
            cert_path: var("DOCKER_CERT_PATH"),
            tls_certdir: var("DOCKER_TLS_CERTDIR"),
            home: var("HOME"),
        }
    }

    /// The certificate directory: `DOCKER_CERT_PATH`, else `$DOCKER_TLS_CERTDIR/client` (the
    /// layout `docker:dind` writes), else `~/.docker`.
    fn cert_dir(&self) -> Option<PathBuf> {
        if let Some(path) = &self.cert_path {
            return Some(PathBuf::from(path));
        }
        if let Some(dir) = &self.tls_certdir {
            return Some(Path::new(dir).join("client"));
        }
        self.home.as_ref().map(|h| Path::new(h).join(".docker"))
    }

    /// TLS is on when `DOCKER_TLS_VERIFY` is set (any non-empty value, as in the Docker CLI),
    /// or when `DOCKER_TLS_CERTDIR` holds a client CA: that is how `docker:dind` services are
    /// reached without further settings.
    fn wants_tls(&self) -> bool {
        if self.tls_verify.is_some() {
            return true;
        }
        match &self.tls_certdir {
            Some(dir) => Path::new(dir).join("client/ca.pem").is_file(),
            None => false,
        }
    }

    /// Resolves the daemon address.
    pub fn resolve(&self) -> Result<DaemonAddress> {
        let host = self
            .docker_host
            .clone()
            .unwrap_or_else(|| format!("unix://{DEFAULT_SOCKET}"));
        parse_host(&host, || {
            if !self.wants_tls() {
                return Ok(None);
            }
            let dir = self.cert_dir().context(
                "DOCKER_TLS_VERIFY is set but no certificate directory is known: \
                 set DOCKER_CERT_PATH",
            )?;
            let files = TlsFiles::in_dir(&dir);
            for file in [&files.ca, &files.cert, &files.key] {
                if !file.is_file() {
                    bail!(
                        "TLS to the Docker daemon needs {} (from DOCKER_CERT_PATH or \
                         DOCKER_TLS_CERTDIR/client), but it does not exist",
                        file.display()
                    );
                }
            }
            Ok(Some(files))
        })
    }
}

fn parse_host(host: &str, tls: impl FnOnce() -> Result<Option<TlsFiles>>) -> Result<DaemonAddress> {
    if let Some(path) = host.strip_prefix("unix://") {
        if path.is_empty() {
            bail!("DOCKER_HOST {host:?} names no socket path");
        }
        return Ok(DaemonAddress::Unix(PathBuf::from(path)));
    }
    if let Some(rest) = host.strip_prefix("tcp://") {
        let host_port = rest.trim_end_matches('/');
        if host_port.is_empty() {
            bail!("DOCKER_HOST {host:?} names no host");
        }
        let tls = tls()?;
        // The Docker CLI's defaults: 2376 with TLS, 2375 without.
        let host_port = if host_port.contains(':') {
            host_port.to_string()
        } else if tls.is_some() {
            format!("{host_port}:2376")
        } else {
            format!("{host_port}:2375")
        };
        return Ok(DaemonAddress::Tcp { host_port, tls });
    }
    bail!(
        "DOCKER_HOST {host:?} is not supported: use unix:///path/to/docker.sock or tcp://host:port"
    )
}

impl std::fmt::Display for DaemonAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonAddress::Unix(path) => write!(f, "unix://{}", path.display()),
            DaemonAddress::Tcp { host_port, tls } => {
                let tls = if tls.is_some() { " (TLS)" } else { "" };
                write!(f, "tcp://{host_port}{tls}")
            }
        }
    }
}

/// Connects to the daemon and agrees on an API version it speaks (Debian 12's 20.10 daemon
/// tops out at 1.41, older than bollard's default).
pub async fn connect(address: &DaemonAddress) -> Result<Docker> {
    let version = bollard::API_DEFAULT_VERSION;
    let docker = match address {
        DaemonAddress::Unix(path) => {
            if !path.exists() {
                bail!(
                    "no Docker daemon socket at {}: start a daemon, mount its socket, set \
                     DOCKER_HOST, or use --engine dind or --engine native",
                    path.display()
                );
            }
            let url = format!("unix://{}", path.display());
            Docker::connect_with_unix(&url, REQUEST_TIMEOUT_SECS, version)
        }
        DaemonAddress::Tcp {
            host_port,
            tls: Some(tls),
        } => Docker::connect_with_ssl(
            &format!("tcp://{host_port}"),
            &tls.key,
            &tls.cert,
            &tls.ca,
            REQUEST_TIMEOUT_SECS,
            version,
        ),
        DaemonAddress::Tcp {
            host_port,
            tls: None,
        } => {
            Docker::connect_with_http(&format!("tcp://{host_port}"), REQUEST_TIMEOUT_SECS, version)
        }
    }
    .with_context(|| format!("cannot set up a client for the Docker daemon at {address}"))?;
    docker
        .negotiate_version()
        .await
        .with_context(|| format!("the Docker daemon at {address} does not answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_host_is_the_default_socket() {
        let env = DockerEnv::default();
        assert_eq!(
            env.resolve().unwrap(),
            DaemonAddress::Unix(PathBuf::from(DEFAULT_SOCKET))
        );
    }

    #[test]
    fn tcp_without_tls_defaults_to_2375() {
        let env = DockerEnv {
            docker_host: Some("tcp://docker".into()),
            ..Default::default()
        };
        assert_eq!(
            env.resolve().unwrap(),
            DaemonAddress::Tcp {
                host_port: "docker:2375".into(),
                tls: None
            }
        );
    }

    #[test]
    fn tls_certdir_layout_is_used_when_it_has_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("client")).unwrap();
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(dir.path().join("client").join(f), "x").unwrap();
        }
        let env = DockerEnv {
            docker_host: Some("tcp://docker:2376".into()),
            tls_certdir: Some(dir.path().to_str().unwrap().into()),
            ..Default::default()
        };
        match env.resolve().unwrap() {
            DaemonAddress::Tcp {
                host_port,
                tls: Some(tls),
            } => {
                assert_eq!(host_port, "docker:2376");
                assert_eq!(tls.ca, dir.path().join("client/ca.pem"));
            }
            other => panic!("expected TLS over tcp, got {other:?}"),
        }
    }

    #[test]
    fn tls_verify_with_missing_cert_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let env = DockerEnv {
            docker_host: Some("tcp://127.0.0.1:2376".into()),
            tls_verify: Some("1".into()),
            cert_path: Some(dir.path().to_str().unwrap().into()),
            ..Default::default()
        };
        let err = env.resolve().unwrap_err().to_string();
        assert!(err.contains("ca.pem"), "{err}");
    }

    #[test]
    fn unknown_scheme_is_rejected() {
        let env = DockerEnv {
            docker_host: Some("ssh://me@host".into()),
            ..Default::default()
        };
        let err = env.resolve().unwrap_err().to_string();
        assert!(err.contains("not supported"), "{err}");
    }
}
