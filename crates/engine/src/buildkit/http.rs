//! Plain HTTP/1.1 to the daemon for the two requests bollard cannot make: the `/session`
//! upgrade (the connection then carries HTTP/2 the other way round) and the BuildKit `/build`,
//! whose stream holds `moby.buildkit.trace` records bollard's types do not accept.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::host::{DaemonAddress, TlsFiles};

/// The body type of every request rbuild sends this way.
pub type RequestBody = BoxBody<Bytes, std::io::Error>;

/// An empty request body.
pub fn empty_body() -> RequestBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// How long connecting and the response headers may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A TLS client configuration from a Docker cert directory's files: the daemon is trusted
/// through `ca.pem` only (as the Docker CLI does with `DOCKER_TLS_VERIFY`), and rbuild
/// presents `cert.pem` with `key.pem`.
fn tls_config(files: &TlsFiles) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&read(&files.ca)?) {
        let cert =
            cert.with_context(|| format!("{} is not a PEM certificate", files.ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("{} holds an unusable CA certificate", files.ca.display()))?;
    }
    let certs = CertificateDer::pem_slice_iter(&read(&files.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate", files.cert.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?)
        .with_context(|| format!("{} holds no PEM private key", files.key.display()))?;
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("rustls has no protocol version for the daemon")?
    .with_root_certificates(roots)
    .with_client_auth_cert(certs, key)
    .with_context(|| {
        format!(
            "{} and {} do not make a client certificate",
            files.cert.display(),
            files.key.display()
        )
    })
}

/// Sends one request on a fresh connection and returns the response head and body.
/// `with_upgrades` keeps the connection usable after a `101 Switching Protocols`.
pub async fn send(
    address: &DaemonAddress,
    request: Request<RequestBody>,
    header_timeout: Duration,
) -> Result<Response<Incoming>> {
    let what = format!("{} {}", request.method(), request.uri());
    let mut sender = match address {
        DaemonAddress::Unix(path) => {
            let stream =
                tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(path))
                    .await
                    .map_err(|_| anyhow!("connecting to {} timed out", path.display()))?
                    .with_context(|| {
                        format!("cannot connect to the daemon at {}", path.display())
                    })?;
            handshake(TokioIo::new(stream)).await?
        }
        DaemonAddress::Tcp {
            host_port,
            tls: None,
        } => {
            let stream =
                tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(host_port))
                    .await
                    .map_err(|_| anyhow!("connecting to {host_port} timed out"))?
                    .with_context(|| format!("cannot connect to the daemon at {host_port}"))?;
            handshake(TokioIo::new(stream)).await?
        }
        DaemonAddress::Tcp {
            host_port,
            tls: Some(files),
        } => {
            let connector =
                tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls_config(files)?));
            let host = host_port
                .rsplit_once(':')
                .map_or(host_port.as_str(), |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .with_context(|| format!("{host:?} is not a host name for TLS"))?;
            let tcp =
                tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(host_port))
                    .await
                    .map_err(|_| anyhow!("connecting to {host_port} timed out"))?
                    .with_context(|| format!("cannot connect to the daemon at {host_port}"))?;
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| anyhow!("the TLS handshake with {host_port} timed out"))?
                .with_context(|| {
                    format!("the TLS handshake with the daemon at {host_port} failed")
                })?;
            handshake(TokioIo::new(stream)).await?
        }
    };
    tokio::time::timeout(header_timeout, sender.send_request(request))
        .await
        .map_err(|_| {
            anyhow!(
                "the daemon did not answer {what} within {} s",
                header_timeout.as_secs()
            )
        })?
        .with_context(|| format!("the daemon failed {what}"))
}

async fn handshake<T>(
    io: TokioIo<T>,
) -> Result<hyper::client::conn::http1::SendRequest<RequestBody>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .context("HTTP handshake with the daemon failed")?;
    tokio::spawn(async move {
        // An error here surfaces as the request's or the upgraded stream's own error.
        let _ = connection.with_upgrades().await;
    });
    Ok(sender)
}

/// A request to the daemon's API (the URI path and query only; the host is a placeholder).
pub fn request(method: &str, path_and_query: &str) -> Result<hyper::http::request::Builder> {
    Ok(Request::builder()
        .method(method)
        .uri(format!("http://docker{path_and_query}"))
        .header(hyper::header::HOST, "docker"))
}

/// Reads a whole (small) response body, refusing more than `limit` bytes.
pub async fn read_body(response: Response<Incoming>, limit: usize) -> Result<Vec<u8>> {
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the daemon's response failed")?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > limit {
                bail!("the daemon's response is larger than {limit} bytes");
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out)
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(encode("Dockerfile.x-1_~"), "Dockerfile.x-1_~");
    }
}
