//! The registry client: per-host HTTP clients, credentials, and sending a request with
//! authentication that reacts to the 401 challenge on the actual request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use reqwest::header::{HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

use crate::auth::challenge::{parse_challenges, Challenge};
use crate::auth::credentials::{Credential, DockerConfig, Found};
use crate::auth::token::{fetch_token, TokenCache};
use crate::body::{read_prefix, MAX_ERROR_BODY_BYTES};
use crate::error::{describe_error_body, ErrorKind, RegistryError, Result};
use crate::transport::{
    ca_certificates, client_identity, default_cert_dirs, has_cert_dir, is_loopback_host,
    send_with_retries, Deadline, Endpoint, RequestSpec, RetryPolicy,
};

/// How the client reaches registries and where it finds credentials.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries (`host[:port]` or `host`) spoken to over plain http, besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Registries (`host[:port]` or `host`) whose TLS certificates are not verified (Kaniko's
    /// `--skip-tls-verify`); https is still used, only the certificate check is skipped.
    pub skip_tls_verify: Vec<String>,
    /// Extra CA bundles trusted for every registry.
    pub ca_files: Vec<PathBuf>,
    /// Directories holding `<host[:port]>/*.crt` (CAs) and `*.cert`/`*.key` (a client
    /// certificate); default: Docker's, containers' and rbuild's own certs.d.
    pub cert_dirs: Vec<PathBuf>,
    /// Mirrors (`host[:port]`, optionally with `http://`/`https://`) tried first for docker.io.
    pub mirrors: Vec<String>,
    /// Where credentials are read and `login` writes.
    pub docker_config: DockerConfig,
    pub retry: RetryPolicy,
    /// Chunk size for chunked uploads, when a registry refuses a monolithic PUT.
    pub chunk_size: u64,
    /// Connecting (TCP and TLS) to a registry or token server must succeed within this.
    pub connect_timeout: Duration,
    /// A read that stalls this long fails (and a blob download resumes from where it was).
    pub read_timeout: Duration,
    /// Each request but blob transfers (manifests, tokens, existence checks, upload
    /// sessions) must be over, retries and body included, within this.
    pub request_timeout: Duration,
    /// One blob download or upload must be over, resumes and retries included, within this.
    pub blob_timeout: Duration,
}

/// Default of [`ClientOptions::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`ClientOptions::read_timeout`].
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Default of [`ClientOptions::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Default of [`ClientOptions::blob_timeout`]: a 4 GiB layer at 1.2 MB/s.
pub const DEFAULT_BLOB_TIMEOUT: Duration = Duration::from_secs(3600);

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure_registries: Vec::new(),
            skip_tls_verify: Vec::new(),
            ca_files: Vec::new(),
            cert_dirs: default_cert_dirs(),
            mirrors: Vec::new(),
            docker_config: DockerConfig::from_env(),
            retry: RetryPolicy::default(),
            chunk_size: 16 * 1024 * 1024,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            blob_timeout: DEFAULT_BLOB_TIMEOUT,
        }
    }
}

/// Whether `list` names `host` (`host:port` exactly, or the host without its port).
fn names_host(list: &[String], host: &str) -> bool {
    list.iter()
        .any(|r| r == host || r == crate::transport::strip_port(host))
}

/// A registry client; cheap to clone, and clones share connections and cached tokens, so
/// several operations may run at once from different tasks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    options: ClientOptions,
    http: Mutex<HashMap<String, reqwest::Client>>,
    tokens: TokenCache,
    /// Hosts that asked for Basic auth: the header to send them up front.
    basic: Mutex<HashMap<String, HeaderValue>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new(ClientOptions::default())
    }
}

impl Client {
    pub fn new(options: ClientOptions) -> Self {
        Client {
            inner: Arc::new(Inner {
                options,
                http: Mutex::new(HashMap::new()),
                tokens: TokenCache::default(),
                basic: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The endpoint for a registry named in a reference.
    pub fn endpoint(&self, registry: &str) -> Endpoint {
        let host = if registry == "docker.io" {
            rbuild_image::reference::DOCKER_HUB_API_HOST.to_string()
        } else {
            registry.to_string()
        };
        let options = &self.inner.options;
        // Loopback speaks http as with Docker, unless certs.d holds certificates for it.
        let insecure = (is_loopback_host(&host) && !has_cert_dir(&host, &options.cert_dirs))
            || names_host(&options.insecure_registries, &host)
            || options.insecure_registries.iter().any(|r| r == registry);
        Endpoint {
            registry: registry.to_string(),
            host,
            scheme: if insecure { "http" } else { "https" },
        }
    }

    /// Endpoints to read from, in order: mirrors first for docker.io, then the registry.
    pub fn read_endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let mut out = Vec::new();
        if registry == "docker.io" {
            for mirror in &self.inner.options.mirrors {
                let (scheme, rest) = if let Some(r) = mirror.strip_prefix("http://") {
                    (Some("http"), r)
                } else if let Some(r) = mirror.strip_prefix("https://") {
                    (Some("https"), r)
                } else {
                    (None, mirror.as_str())
                };
                let host = rest.trim_end_matches('/').to_string();
                let mut ep = self.endpoint(&host);
                if let Some(scheme) = scheme {
                    ep.scheme = scheme;
                }
                out.push(ep);
            }
        }
        out.push(self.endpoint(registry));
        out
    }

    /// The HTTP client for `host`, trusting its extra CAs. Redirects are followed by hand so
    /// credentials are never sent to another host.
    pub(crate) fn http_for(&self, operation: &str, host: &str) -> Result<reqwest::Client> {
        if let Some(c) = self.inner.http.lock().expect("poisoned").get(host) {
            return Ok(c.clone());
        }
        let opts = &self.inner.options;
        let certs = ca_certificates(host, &opts.cert_dirs, &opts.ca_files)?;
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rbuild/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            // A backstop: requests sent through `send_with_retries` carry their own.
            .timeout(opts.request_timeout.max(opts.blob_timeout));
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
        if names_host(&opts.skip_tls_verify, host) {
            builder = builder.danger_accept_invalid_certs(true);
        }
        if let Some(identity) = client_identity(host, &opts.cert_dirs)? {
            builder = builder.identity(identity);
        }
        let client = builder.build().map_err(|e| {
            RegistryError::new(
                operation,
                ErrorKind::Config,
                format!("cannot set up HTTP for {host}: {e}"),
            )
        })?;
        self.inner
            .http
            .lock()
            .expect("poisoned")
            .insert(host.to_string(), client.clone());
        Ok(client)
    }

    fn lookup_credential(&self, operation: &str, registry: &str) -> Result<Option<Found>> {
        self.inner
            .options
            .docker_config
            .lookup(registry)
            .map_err(|e| RegistryError::new(operation, e.kind, e.to_string()))
    }

    fn no_credentials_note(&self, registry: &str) -> String {
        format!(
            "no credentials for {registry} in {}",
            self.inner.options.docker_config.path().display()
        )
    }

    /// The reason to give for a 401 that survived authentication.
    fn unauthorized(
        &self,
        operation: &str,
        endpoint: &Endpoint,
        status: StatusCode,
        body: &[u8],
    ) -> RegistryError {
        let why = match self.lookup_credential(operation, &endpoint.registry) {
            Ok(Some(found)) => format!("credentials from {} were rejected", found.source),
            Ok(None) => self.no_credentials_note(&endpoint.registry),
            Err(e) => e.message,
        };
        let detail = describe_error_body(body);
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(" [{detail}]")
        };
        RegistryError::new(
            operation,
            ErrorKind::Unauthorized,
            format!("unauthorized ({}): {why}{detail}", status.as_u16()),
        )
    }

    fn cached_authorization(&self, endpoint: &Endpoint, scopes: &[String]) -> Option<HeaderValue> {
        if let Some(token) = self.inner.tokens.get(&endpoint.host, scopes) {
            return HeaderValue::from_str(&format!("Bearer {token}")).ok();
        }
        self.inner
            .basic
            .lock()
            .expect("poisoned")
            .get(&endpoint.host)
            .cloned()
    }

    /// Answers a 401 challenge: a token for `scopes` (plus the challenge's own scope), or basic.
    async fn authorize(
        &self,
        operation: &str,
        endpoint: &Endpoint,
        scopes: &[String],
        challenges: &[Challenge],
    ) -> Result<Option<HeaderValue>> {
        let found = self.lookup_credential(operation, &endpoint.registry)?;
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let mut all_scopes: Vec<String> = scopes.to_vec();
            if let Some(extra) = bearer.param("scope") {
                for s in extra.split(' ').filter(|s| !s.is_empty()) {
                    if !all_scopes.iter().any(|x| x == s) {
                        all_scopes.push(s.to_string());
                    }
                }
            }
            let http = self.http_for(operation, &endpoint.host)?;
            let (token, lifetime) = fetch_token(
                operation,
                &http,
                bearer,
                &all_scopes,
                found.as_ref(),
                &self.no_credentials_note(&endpoint.registry),
                &Deadline::after(self.inner.options.request_timeout, "request"),
            )
            .await?;
            self.inner
                .tokens
                .put(&endpoint.host, scopes, token.clone(), lifetime);
            return Ok(HeaderValue::from_str(&format!("Bearer {token}")).ok());
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            if let Some(Found {
                credential: Credential::Basic { username, password },
                ..
            }) = &found
            {
                let mut value = HeaderValue::from_str(&format!(
                    "Basic {}",
                    BASE64.encode(format!("{username}:{password}"))
                ))
                .map_err(|_| {
                    RegistryError::new(
                        operation,
                        ErrorKind::Config,
                        "credentials contain characters not allowed in a header",
                    )
                })?;
                value.set_sensitive(true);
                self.inner
                    .basic
                    .lock()
                    .expect("poisoned")
                    .insert(endpoint.host.clone(), value.clone());
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// Sends a request to `endpoint` with auth for `scopes`. On a 401 it authenticates from the
    /// challenge and sends once more; a 401/403 after that becomes an Unauthorized error.
    pub(crate) async fn send(
        &self,
        operation: &str,
        endpoint: &Endpoint,
        scopes: &[String],
        spec: &RequestSpec,
    ) -> Result<Response> {
        let http = self.http_for(operation, &endpoint.host)?;
        let policy = &self.inner.options.retry;
        let deadline = self.deadline_of(spec);
        let mut authorization = self.cached_authorization(endpoint, scopes);
        let mut answered_challenge = false;
        loop {
            let response = send_with_retries(
                operation,
                &http,
                spec,
                authorization.as_ref(),
                policy,
                &deadline,
            )
            .await?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !answered_challenge {
                answered_challenge = true;
                let challenges: Vec<Challenge> = response
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(parse_challenges)
                    .collect();
                if let Some(value) = self
                    .authorize(operation, endpoint, scopes, &challenges)
                    .await?
                {
                    authorization = Some(value);
                    continue;
                }
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let body = read_prefix(response, MAX_ERROR_BODY_BYTES).await;
                return Err(self.unauthorized(operation, endpoint, status, &body));
            }
            return Ok(response);
        }
    }

    /// The deadline `spec` carries, else the request timeout from now.
    pub(crate) fn deadline_of(&self, spec: &RequestSpec) -> Deadline {
        spec.deadline
            .unwrap_or_else(|| Deadline::after(self.inner.options.request_timeout, "request"))
    }

    /// A deadline for one blob transfer, from now.
    pub(crate) fn blob_deadline(&self) -> Deadline {
        Deadline::after(self.inner.options.blob_timeout, "blob")
    }

    /// Like `send`, following redirects by hand: credentials go only to the registry's own host.
    pub(crate) async fn send_following_redirects(
        &self,
        operation: &str,
        endpoint: &Endpoint,
        scopes: &[String],
        spec: &RequestSpec,
    ) -> Result<Response> {
        const MAX_REDIRECTS: usize = 10;
        // One deadline for the request and the redirects it leads to.
        let mut spec = spec.clone();
        spec.deadline = Some(self.deadline_of(&spec));
        let spec = &spec;
        let mut response = self.send(operation, endpoint, scopes, spec).await?;
        for _ in 0..MAX_REDIRECTS {
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    RegistryError::new(
                        operation,
                        ErrorKind::Protocol,
                        "redirect without a Location",
                    )
                })?;
            let next = response.url().join(location).map_err(|_| {
                RegistryError::new(operation, ErrorKind::Protocol, "redirect to an invalid URL")
            })?;
            let next_host = host_port(&next);
            let mut next_spec = spec.clone();
            next_spec.url = next.to_string();
            response = if next_host == endpoint.host && next.scheme() == endpoint.scheme {
                self.send(operation, endpoint, scopes, &next_spec).await?
            } else {
                let http = self.http_for(operation, &next_host)?;
                send_with_retries(
                    operation,
                    &http,
                    &next_spec,
                    None,
                    &self.inner.options.retry,
                    &self.deadline_of(&next_spec),
                )
                .await?
            };
        }
        Err(RegistryError::new(
            operation,
            ErrorKind::Protocol,
            format!("more than {MAX_REDIRECTS} redirects"),
        ))
    }

    /// An error for an unexpected status, with the registry's own error text.
    pub(crate) async fn status_error(&self, operation: &str, response: Response) -> RegistryError {
        let status = response.status();
        let body = read_prefix(response, MAX_ERROR_BODY_BYTES).await;
        let kind = if status == StatusCode::NOT_FOUND {
            ErrorKind::NotFound
        } else {
            ErrorKind::Protocol
        };
        let detail = describe_error_body(&body);
        let reason = status.canonical_reason().unwrap_or("");
        RegistryError::new(
            operation,
            kind,
            if detail.is_empty() {
                format!("registry answered {} {reason}", status.as_u16())
            } else {
                format!("registry answered {} {reason}: {detail}", status.as_u16())
            },
        )
    }
}

pub(crate) fn host_port(url: &reqwest::Url) -> String {
    // host_str keeps the brackets of IPv6 addresses.
    let host = url.host_str().unwrap_or("").to_string();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}
