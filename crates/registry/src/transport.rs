//! How to reach a registry host: http or https (plain http for loopback and listed insecure
//! registries, as Docker does), which extra CA certificates to trust, and sending one request
//! with bounded exponential-backoff retries on 429, 5xx and connection errors.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode};

use crate::error::{describe_transport, ErrorKind, RegistryError, Result};

/// Where the extra CA certificates of a registry are looked up by default.
pub const DEFAULT_CERT_DIRS: &[&str] = &["/etc/docker/certs.d", "/etc/containers/certs.d"];

/// One registry host as the API is spoken to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The registry name credentials are looked up under (`docker.io`, `localhost:5000`).
    pub registry: String,
    /// `host[:port]` requests go to (`registry-1.docker.io`).
    pub host: String,
    /// `http` or `https`.
    pub scheme: &'static str,
}

impl Endpoint {
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }
}

/// Whether Docker would talk plain http to `host` by default: localhost, 127.0.0.0/8 and ::1.
pub fn is_loopback_host(host_port: &str) -> bool {
    let host = strip_port(host_port);
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// `host` of `host:port`, `[v6]:port` or `host`.
pub fn strip_port(host_port: &str) -> &str {
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => host_port,
    }
}

/// CA certificates for `host`: `*.crt` in `<dir>/<host[:port]>/` for each cert dir, plus the
/// explicitly given files.
pub fn ca_certificates(
    host: &str,
    cert_dirs: &[PathBuf],
    ca_files: &[PathBuf],
) -> Result<Vec<reqwest::Certificate>> {
    let mut files: Vec<PathBuf> = ca_files.to_vec();
    for dir in cert_dirs {
        let host_dir = dir.join(host);
        let Ok(entries) = std::fs::read_dir(&host_dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        found.sort();
        files.extend(found);
    }
    let mut certs = Vec::new();
    for file in files {
        certs.extend(read_pem_bundle(&file)?);
    }
    Ok(certs)
}

/// rbuild's own certs dir, searched after Docker's and containers': `$XDG_CONFIG_HOME/rbuild/
/// certs.d`, else `~/.config/rbuild/certs.d`. Laid out as Docker's: `<host[:port]>/*.crt`
/// (CAs), `*.cert` with `*.key` (a client certificate).
pub fn user_cert_dir() -> Option<PathBuf> {
    let config = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(config.join("rbuild").join("certs.d"))
}

/// The cert dirs a default client searches: Docker's, containers' and rbuild's own.
pub fn default_cert_dirs() -> Vec<PathBuf> {
    DEFAULT_CERT_DIRS
        .iter()
        .map(PathBuf::from)
        .chain(user_cert_dir())
        .collect()
}

/// Whether some cert dir holds TLS material for `host` (then it is spoken to over https even
/// on loopback: someone set up certificates for it).
pub fn has_cert_dir(host: &str, cert_dirs: &[PathBuf]) -> bool {
    cert_dirs.iter().any(|dir| dir.join(host).is_dir())
}

/// The client certificate for `host`, as Docker finds it: in `<dir>/<host[:port]>/`, a
/// `NAME.cert` and its `NAME.key` (PEM), the first pair by name in the first dir that has one.
/// A certificate without its key (or a key without its certificate) is an error.
pub fn client_identity(host: &str, cert_dirs: &[PathBuf]) -> Result<Option<reqwest::Identity>> {
    for dir in cert_dirs {
        let host_dir = dir.join(host);
        let Ok(entries) = std::fs::read_dir(&host_dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        let fail = |file: &Path, msg: String| {
            RegistryError::new(
                format!("load client certificate {}", file.display()),
                ErrorKind::Config,
                msg,
            )
        };
        for key in files
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "key"))
        {
            if !key.with_extension("cert").is_file() {
                return Err(fail(
                    key,
                    format!(
                        "missing client certificate {}",
                        key.with_extension("cert").display()
                    ),
                ));
            }
        }
        let Some(cert) = files
            .iter()
            .find(|p| p.extension().is_some_and(|x| x == "cert"))
        else {
            continue;
        };
        let key = cert.with_extension("key");
        let mut pem = std::fs::read(cert).map_err(|e| fail(cert, e.to_string()))?;
        let key_pem = std::fs::read(&key)
            .map_err(|e| fail(cert, format!("missing key {}: {e}", key.display())))?;
        pem.push(b'\n');
        pem.extend_from_slice(&key_pem);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            fail(
                cert,
                format!("not a PEM certificate and key ({}): {e}", key.display()),
            )
        })?;
        return Ok(Some(identity));
    }
    Ok(None)
}

fn read_pem_bundle(file: &Path) -> Result<Vec<reqwest::Certificate>> {
    let fail = |msg: String| {
        RegistryError::new(
            format!("load CA certificate {}", file.display()),
            ErrorKind::Config,
            msg,
        )
    };
    let pem = std::fs::read(file).map_err(|e| fail(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// A request body that can be produced again for a retry.
#[derive(Debug, Clone)]
pub enum BodySource {
    Empty,
    Bytes(Bytes),
    /// `len` bytes of a file starting at `offset`, streamed.
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

impl BodySource {
    fn len(&self) -> u64 {
        match self {
            BodySource::Empty => 0,
            BodySource::Bytes(b) => b.len() as u64,
            BodySource::File { len, .. } => *len,
        }
    }

    fn to_body(&self) -> std::io::Result<reqwest::Body> {
        Ok(match self {
            BodySource::Empty => reqwest::Body::from(Bytes::new()),
            BodySource::Bytes(b) => reqwest::Body::from(b.clone()),
            BodySource::File { path, offset, len } => file_body(path, *offset, *len)?,
        })
    }
}

fn file_body(path: &Path, offset: u64, len: u64) -> std::io::Result<reqwest::Body> {
    use std::io::{Seek as _, SeekFrom};
    use tokio::io::AsyncReadExt as _;
    const CHUNK: usize = 256 * 1024;
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let file = tokio::fs::File::from_std(file);
    let stream = futures_util::stream::unfold((file, len), |(mut file, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        let want = remaining.min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; want];
        match file.read(&mut buf).await {
            Ok(0) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file shorter than its declared size",
                )),
                (file, 0),
            )),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), (file, remaining - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    Ok(reqwest::Body::wrap_stream(stream))
}

/// When a request must be over: every attempt, every wait between attempts and the
/// reading of its body. Without it a registry sending one byte every minute keeps a pull
/// waiting forever (an idle-read timeout never fires).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    /// The limit it was set from, for messages.
    pub limit: Duration,
    /// Which limit: "request" (`ClientOptions::request_timeout`) or "blob"
    /// (`ClientOptions::blob_timeout`).
    pub which: &'static str,
}

impl Deadline {
    pub fn after(limit: Duration, which: &'static str) -> Deadline {
        Deadline {
            at: Instant::now() + limit,
            limit,
            which,
        }
    }

    /// Time left, or `None` once it has passed.
    pub fn remaining(&self) -> Option<Duration> {
        self.at
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    pub fn passed(&self) -> bool {
        self.remaining().is_none()
    }

    /// The error for a request that ran past this deadline.
    pub fn error(&self, operation: &str) -> RegistryError {
        RegistryError::new(
            operation,
            ErrorKind::Transport,
            format!(
                "timed out: the registry did not finish answering within the {} timeout of {}",
                self.which,
                describe_duration(self.limit)
            ),
        )
    }
}

/// `300s`, `1.5s`.
pub fn describe_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Everything needed to (re)build one HTTP request.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: Method,
    pub url: String,
    pub headers: HeaderMap,
    pub body: BodySource,
    /// When the request must be over; `None` means the client's request timeout from the
    /// moment it is sent.
    pub deadline: Option<Deadline>,
}

impl RequestSpec {
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        RequestSpec {
            method,
            url: url.into(),
            headers: HeaderMap::new(),
            body: BodySource::Empty,
            deadline: None,
        }
    }

    pub fn deadline(mut self, deadline: Deadline) -> Self {
        self.deadline = Some(deadline);
        self
    }

    pub fn header(mut self, name: reqwest::header::HeaderName, value: &str) -> Self {
        if let Ok(mut v) = HeaderValue::from_str(value) {
            // Keeps credentials out of Debug output should a spec ever be logged.
            v.set_sensitive(name == AUTHORIZATION);
            self.headers.insert(name, v);
        }
        self
    }

    pub fn body(mut self, body: BodySource) -> Self {
        self.body = body;
        self
    }
}

/// Retry policy: bounded attempts, exponential backoff, never on 4xx other than 429.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.min(16);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// Sends `spec` with `authorization`, retrying transient failures until `deadline`. A final
/// retryable status is returned as a response for the caller to describe. The response's
/// body must be read before the deadline too (each attempt carries what is left of it).
pub async fn send_with_retries(
    operation: &str,
    http: &reqwest::Client,
    spec: &RequestSpec,
    authorization: Option<&HeaderValue>,
    policy: &RetryPolicy,
    deadline: &Deadline,
) -> Result<Response> {
    let mut attempt = 0;
    loop {
        let Some(remaining) = deadline.remaining() else {
            return Err(deadline.error(operation));
        };
        let body = spec.body.to_body().map_err(|e| {
            RegistryError::new(
                operation,
                ErrorKind::Io,
                format!("cannot read the upload: {e}"),
            )
        })?;
        let mut builder = http
            .request(spec.method.clone(), &spec.url)
            .headers(spec.headers.clone())
            .timeout(remaining);
        if !matches!(spec.body, BodySource::Empty) || spec.method == Method::PUT {
            builder = builder
                .header(reqwest::header::CONTENT_LENGTH, spec.body.len())
                .body(body);
        }
        if let Some(auth) = authorization {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        let outcome = builder.send().await;
        let can_retry = attempt < policy.max_retries;
        match outcome {
            Ok(resp) if can_retry && is_retryable_status(resp.status()) => {
                let wait = retry_after(resp.headers())
                    .unwrap_or_else(|| policy.delay(attempt))
                    .min(policy.max_delay);
                if deadline.remaining().is_none_or(|left| left <= wait) {
                    // No time for another attempt: this answer is the last one.
                    return Ok(resp);
                }
                tokio::time::sleep(wait).await;
            }
            Ok(resp) => return Ok(resp),
            Err(_) if deadline.passed() => return Err(deadline.error(operation)),
            Err(e) if can_retry && is_transient(&e) => {
                let wait = policy.delay(attempt);
                if deadline.remaining().is_none_or(|left| left <= wait) {
                    return Err(deadline.error(operation));
                }
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                return Err(RegistryError::new(
                    operation,
                    ErrorKind::Transport,
                    format!(
                        "{} (after {} attempt{})",
                        describe_transport(e),
                        attempt + 1,
                        if attempt == 0 { "" } else { "s" }
                    ),
                ))
            }
        }
        attempt += 1;
    }
}

fn is_transient(e: &reqwest::Error) -> bool {
    (e.is_connect() || e.is_timeout() || e.is_request() || e.is_body())
        && !is_certificate_refusal(e)
}

/// A TLS handshake that failed over a certificate (the server's untrusted, or ours refused by
/// a registry that wants a client certificate) fails the same way every time: no retries.
/// rustls's error is not reachable through reqwest's types, so its text is matched.
fn is_certificate_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.to_string().to_ascii_lowercase().contains("certificate") {
            return true;
        }
        source = err.source();
    }
    false
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_use_http() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "example.com",
            "10.0.0.1:5000",
            "128.0.0.1",
            "localhost.example.com",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let p = RetryPolicy {
            max_retries: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        assert_eq!(p.delay(0), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(400));
        assert_eq!(p.delay(9), Duration::from_secs(1));
        assert!(is_retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(is_retryable_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!is_retryable_status(StatusCode::NOT_FOUND));
        assert!(!is_retryable_status(StatusCode::UNAUTHORIZED));
    }

    #[test]
    fn bad_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.crt");
        std::fs::write(&f, "not a certificate").unwrap();
        let err = ca_certificates("h", &[], std::slice::from_ref(&f)).unwrap_err();
        assert!(err.to_string().contains("ca.crt"), "{err}");
        let certs_d = dir.path().join("certs.d");
        std::fs::create_dir_all(certs_d.join("h:5000")).unwrap();
        assert!(ca_certificates("h:5000", &[certs_d], &[])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn client_certificates_are_found_as_docker_lays_them_out() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        let dirs = [first.clone(), second.clone()];
        assert!(client_identity("h:5000", &dirs).unwrap().is_none());
        assert!(!has_cert_dir("h:5000", &dirs));

        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let host = second.join("h:5000");
        std::fs::create_dir_all(&host).unwrap();
        assert!(has_cert_dir("h:5000", &dirs));
        // A key alone is an error naming the certificate it lacks.
        std::fs::write(host.join("client.key"), key.serialize_pem()).unwrap();
        let err = client_identity("h:5000", &dirs).unwrap_err().to_string();
        assert!(
            err.contains("missing client certificate") && err.contains("client.cert"),
            "{err}"
        );
        std::fs::write(host.join("client.cert"), cert.pem()).unwrap();
        assert!(client_identity("h:5000", &dirs).unwrap().is_some());
        // Only this host's directory counts.
        assert!(client_identity("other:5000", &dirs).unwrap().is_none());
        // A certificate without its key is an error too.
        std::fs::remove_file(host.join("client.key")).unwrap();
        let err = client_identity("h:5000", &dirs).unwrap_err().to_string();
        assert!(err.contains("missing key"), "{err}");
    }

    #[test]
    fn rbuilds_own_cert_dir_follows_xdg() {
        let dirs = default_cert_dirs();
        assert_eq!(dirs[0], PathBuf::from("/etc/docker/certs.d"));
        assert!(dirs.last().unwrap().ends_with("rbuild/certs.d"), "{dirs:?}");
    }
}
