//! Blobs: existence checks, streaming verified downloads with Range resume, and uploads
//! (monolithic streaming PUT, chunked PATCH fallback, cross-repository mounts).

use std::path::Path;

use futures_util::StreamExt as _;
use rbuild_image::digest::Hasher;
use rbuild_image::Digest;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, Response, StatusCode};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use crate::auth::{pull_scope, push_scope};
use crate::client::Client;
use crate::error::{describe_transport, ErrorKind, RegistryError, Result};
use crate::manifest::digest_mismatch;
use crate::transport::{BodySource, Endpoint, RequestSpec};

/// What `mount_or_push_blob` ended up doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    AlreadyExists,
    Mounted,
    Uploaded,
}

impl Client {
    /// Whether `repository` on `registry` has the blob (HEAD).
    pub async fn blob_exists(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool> {
        let operation = format!("check blob {digest} in {registry}/{repository}");
        let endpoint = self.endpoint(registry);
        let url = format!("{}/v2/{repository}/blobs/{digest}", endpoint.base_url());
        let spec = RequestSpec::new(Method::HEAD, url);
        let scopes = [pull_scope(repository)];
        let response = self
            .send_following_redirects(&operation, &endpoint, &scopes, &spec)
            .await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(&operation, response).await),
        }
    }

    /// Streams blob `digest` of `registry/repository` into `sink`, verifying size and sha256 as
    /// it goes. A connection dropped mid-way is resumed with a Range request when the server
    /// honours it. Nothing is flushed past a mismatch: the caller must discard the sink on error.
    pub async fn pull_blob<W: AsyncWrite + Unpin + Send>(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        expected_size: u64,
        sink: &mut W,
    ) -> Result<()> {
        let operation = format!("pull blob {digest} from {registry}/{repository}");
        let mut last_error = None;
        for endpoint in self.read_endpoints(registry) {
            match self
                .pull_blob_from(
                    &operation,
                    &endpoint,
                    repository,
                    digest,
                    expected_size,
                    sink,
                )
                .await
            {
                Ok(()) => return Ok(()),
                // Once bytes were written the sink is dirty: a mirror failure is final too.
                Err((e, wrote)) if wrote => return Err(e),
                Err((e, _)) => last_error = Some(e),
            }
        }
        // Cannot fail: the endpoint list always holds the registry itself, so the loop ran.
        Err(last_error.expect("at least the registry itself is tried"))
    }

    async fn pull_blob_from<W: AsyncWrite + Unpin + Send>(
        &self,
        operation: &str,
        endpoint: &Endpoint,
        repository: &str,
        digest: &Digest,
        expected_size: u64,
        sink: &mut W,
    ) -> std::result::Result<(), (RegistryError, bool)> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", endpoint.base_url());
        let scopes = [pull_scope(repository)];
        let mut hasher = Hasher::new();
        let mut received: u64 = 0;
        let mut resumes = 0;
        let max_resumes = self.options().retry.max_retries;
        // One deadline for the whole download, resumes included: a registry dripping
        // bytes must not be able to keep it going forever.
        let deadline = self.blob_deadline();
        loop {
            let mut spec = RequestSpec::new(Method::GET, url.clone()).deadline(deadline);
            if received > 0 {
                spec = spec.header(RANGE, &format!("bytes={received}-"));
            }
            let response = self
                .send_following_redirects(operation, endpoint, &scopes, &spec)
                .await
                .map_err(|e| (e, received > 0))?;
            let status = response.status();
            let acceptable = if received == 0 {
                status == StatusCode::OK
            } else {
                status == StatusCode::PARTIAL_CONTENT && range_starts_at(&response, received)
            };
            if !acceptable {
                if received > 0 && status == StatusCode::OK {
                    return Err((
                        truncated(
                            operation,
                            received,
                            expected_size,
                            "the registry does not support resuming (Range)",
                        ),
                        true,
                    ));
                }
                return Err((self.status_error(operation, response).await, received > 0));
            }
            let dropped = stream_into(response, sink, &mut hasher, &mut received, expected_size)
                .await
                .map_err(|e| match e {
                    StreamFailure::Write(e) => (
                        RegistryError::new(
                            operation,
                            ErrorKind::Io,
                            format!("cannot write the blob: {e}"),
                        ),
                        true,
                    ),
                    StreamFailure::TooLong => (
                        RegistryError::new(
                            operation,
                            ErrorKind::DigestMismatch,
                            format!(
                                "registry returned more than the expected {expected_size} bytes"
                            ),
                        ),
                        true,
                    ),
                })?;
            if received == expected_size {
                break;
            }
            if deadline.passed() {
                return Err((deadline.error(operation), received > 0));
            }
            if resumes >= max_resumes {
                let why = dropped.unwrap_or_else(|| "the connection closed early".into());
                return Err((
                    truncated(operation, received, expected_size, &why),
                    received > 0,
                ));
            }
            resumes += 1;
            tokio::time::sleep(self.options().retry.base_delay).await;
        }
        sink.flush().await.map_err(|e| {
            (
                RegistryError::new(
                    operation,
                    ErrorKind::Io,
                    format!("cannot write the blob: {e}"),
                ),
                true,
            )
        })?;
        let got = hasher.finish();
        if &got != digest {
            return Err((digest_mismatch(operation, "blob", digest, &got), true));
        }
        Ok(())
    }

    /// Uploads `path` (whose digest and size the caller knows) as a blob: POST, then one
    /// streaming PUT; if the registry refuses a monolithic upload, chunked PATCHes.
    pub async fn push_blob_from_file(
        &self,
        registry: &str,
        repository: &str,
        path: &Path,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        let operation = format!("push blob {digest} to {registry}/{repository}");
        let endpoint = self.endpoint(registry);
        check_file_size(&operation, path, size)?;
        let location = self.open_upload(&operation, &endpoint, repository).await?;
        match self
            .put_monolithic(
                &operation, &endpoint, repository, &location, path, digest, size,
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind == ErrorKind::Protocol && refuses_monolithic(&e) => {
                let location = self.open_upload(&operation, &endpoint, repository).await?;
                self.put_chunked(
                    &operation, &endpoint, repository, location, path, digest, size,
                )
                .await
            }
            Err(e) => Err(e),
        }
    }

    /// Asks the registry to mount `digest` from `from_repository` into `repository`. Returns
    /// false (and cancels the upload session the registry opened instead) when it declines.
    pub async fn mount_blob(
        &self,
        registry: &str,
        repository: &str,
        from_repository: &str,
        digest: &Digest,
    ) -> Result<bool> {
        let operation =
            format!("mount blob {digest} from {from_repository} into {registry}/{repository}");
        let endpoint = self.endpoint(registry);
        match self
            .start_upload(
                &operation,
                &endpoint,
                repository,
                Some((from_repository, digest)),
            )
            .await?
        {
            UploadStart::Mounted => Ok(true),
            UploadStart::Session(location) => {
                self.cancel_upload(&operation, &endpoint, repository, &location)
                    .await;
                Ok(false)
            }
        }
    }

    /// Mounts the blob from `from_repository` if possible, else uploads `path` in the upload
    /// session the registry opened in its 202 answer; skips both if the blob is there already.
    #[allow(clippy::too_many_arguments)]
    pub async fn mount_or_push_blob(
        &self,
        registry: &str,
        repository: &str,
        from_repository: &str,
        path: &Path,
        digest: &Digest,
        size: u64,
    ) -> Result<PushOutcome> {
        if self.blob_exists(registry, repository, digest).await? {
            return Ok(PushOutcome::AlreadyExists);
        }
        let operation = format!("push blob {digest} to {registry}/{repository}");
        let endpoint = self.endpoint(registry);
        check_file_size(&operation, path, size)?;
        match self
            .start_upload(
                &operation,
                &endpoint,
                repository,
                Some((from_repository, digest)),
            )
            .await?
        {
            UploadStart::Mounted => Ok(PushOutcome::Mounted),
            UploadStart::Session(location) => {
                match self
                    .put_monolithic(
                        &operation, &endpoint, repository, &location, path, digest, size,
                    )
                    .await
                {
                    Ok(()) => {}
                    Err(e) if e.kind == ErrorKind::Protocol && refuses_monolithic(&e) => {
                        let location = self.open_upload(&operation, &endpoint, repository).await?;
                        self.put_chunked(
                            &operation, &endpoint, repository, location, path, digest, size,
                        )
                        .await?;
                    }
                    Err(e) => return Err(e),
                }
                Ok(PushOutcome::Uploaded)
            }
        }
    }

    async fn start_upload(
        &self,
        operation: &str,
        endpoint: &Endpoint,
        repository: &str,
        mount: Option<(&str, &Digest)>,
    ) -> Result<UploadStart> {
        let mut url = format!("{}/v2/{repository}/blobs/uploads/", endpoint.base_url());
        let mut scopes = vec![push_scope(repository)];
        if let Some((from, digest)) = mount {
            url.push_str(&format!("?mount={digest}&from={from}"));
            // The source needs its own pull scope in the same token (Docker Hub insists).
            scopes.push(pull_scope(from));
        }
        let spec = RequestSpec::new(Method::POST, url).body(BodySource::Empty);
        let response = self.send(operation, endpoint, &scopes, &spec).await?;
        match response.status() {
            StatusCode::CREATED if mount.is_some() => Ok(UploadStart::Mounted),
            StatusCode::ACCEPTED => {
                Ok(UploadStart::Session(upload_location(operation, &response)?))
            }
            _ => Err(self.status_error(operation, response).await),
        }
    }

    /// Opens a plain upload session; returns its URL.
    async fn open_upload(
        &self,
        operation: &str,
        endpoint: &Endpoint,
        repository: &str,
    ) -> Result<String> {
        match self
            .start_upload(operation, endpoint, repository, None)
            .await?
        {
            UploadStart::Session(location) => Ok(location),
            UploadStart::Mounted => Err(RegistryError::new(
                operation,
                ErrorKind::Protocol,
                "registry answered an upload request as if it were a mount",
            )),
        }
    }

    async fn cancel_upload(
        &self,
        operation: &str,
        endpoint: &Endpoint,
        repository: &str,
        location: &str,
    ) {
        let spec = RequestSpec::new(Method::DELETE, location);
        // Best effort: an abandoned session only costs the registry some storage until GC.
        let _ = self
            .send(operation, endpoint, &[push_scope(repository)], &spec)
            .await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn put_monolithic(
        &self,
        operation: &str,
        endpoint: &Endpoint,
        repository: &str,
        location: &str,
        path: &Path,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        let url = with_query(location, &format!("digest={digest}"));
        let spec = RequestSpec::new(Method::PUT, url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(BodySource::File {
                path: path.to_path_buf(),
                offset: 0,
                len: size,
            })
            .deadline(self.blob_deadline());
        let response = self
            .send(operation, endpoint, &[push_scope(repository)], &spec)
            .await?;
        if response.status() == StatusCode::CREATED {
            return Ok(());
        }
        Err(self.status_error(operation, response).await)
    }

    #[allow(clippy::too_many_arguments)]
    async fn put_chunked(
        &self,
        operation: &str,
        endpoint: &Endpoint,
        repository: &str,
        mut location: String,
        path: &Path,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        let scopes = [push_scope(repository)];
        let chunk = self.options().chunk_size.max(1);
        let deadline = self.blob_deadline();
        let mut offset = 0;
        while offset < size {
            let len = chunk.min(size - offset);
            let spec = RequestSpec::new(Method::PATCH, location.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_RANGE, &format!("{offset}-{}", offset + len - 1))
                .body(BodySource::File {
                    path: path.to_path_buf(),
                    offset,
                    len,
                })
                .deadline(deadline);
            let response = self.send(operation, endpoint, &scopes, &spec).await?;
            if response.status() != StatusCode::ACCEPTED {
                return Err(self.status_error(operation, response).await);
            }
            location = upload_location(operation, &response)?;
            offset += len;
        }
        let url = with_query(&location, &format!("digest={digest}"));
        let spec = RequestSpec::new(Method::PUT, url).body(BodySource::Empty);
        let response = self.send(operation, endpoint, &scopes, &spec).await?;
        if response.status() == StatusCode::CREATED {
            return Ok(());
        }
        Err(self.status_error(operation, response).await)
    }
}

enum UploadStart {
    Mounted,
    /// The absolute URL of the upload session.
    Session(String),
}

fn upload_location(operation: &str, response: &Response) -> Result<String> {
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            RegistryError::new(
                operation,
                ErrorKind::Protocol,
                "upload answer without a Location",
            )
        })?;
    response
        .url()
        .join(location)
        .map(|u| u.to_string())
        .map_err(|_| {
            RegistryError::new(
                operation,
                ErrorKind::Protocol,
                "upload Location is not a URL",
            )
        })
}

fn with_query(url: &str, pair: &str) -> String {
    if url.contains('?') {
        format!("{url}&{pair}")
    } else {
        format!("{url}?{pair}")
    }
}

/// Registries that only take chunked uploads answer a monolithic PUT with one of these.
fn refuses_monolithic(e: &RegistryError) -> bool {
    [
        "answered 400",
        "answered 405",
        "answered 416",
        "answered 501",
    ]
    .iter()
    .any(|s| e.message.contains(s))
        && !e.message.contains("DIGEST_INVALID")
}

fn check_file_size(operation: &str, path: &Path, size: u64) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| {
        RegistryError::new(
            operation,
            ErrorKind::Io,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    if meta.len() != size {
        return Err(RegistryError::new(
            operation,
            ErrorKind::Io,
            format!(
                "{} is {} bytes, expected {size}",
                path.display(),
                meta.len()
            ),
        ));
    }
    Ok(())
}

fn range_starts_at(response: &Response, offset: u64) -> bool {
    response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split('-').next())
        .and_then(|start| start.parse::<u64>().ok())
        == Some(offset)
}

fn truncated(operation: &str, received: u64, expected: u64, why: &str) -> RegistryError {
    RegistryError::new(
        operation,
        ErrorKind::DigestMismatch,
        format!("registry returned a truncated blob: got {received} of {expected} bytes ({why})"),
    )
}

enum StreamFailure {
    Write(std::io::Error),
    TooLong,
}

/// Copies the body into the sink, hashing; returns why the body ended early, if it did.
async fn stream_into<W: AsyncWrite + Unpin + Send>(
    response: Response,
    sink: &mut W,
    hasher: &mut Hasher,
    received: &mut u64,
    expected_size: u64,
) -> std::result::Result<Option<String>, StreamFailure> {
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return Ok(Some(describe_transport(e))),
        };
        if *received + chunk.len() as u64 > expected_size {
            return Err(StreamFailure::TooLong);
        }
        hasher.update(&chunk);
        sink.write_all(&chunk).await.map_err(StreamFailure::Write)?;
        *received += chunk.len() as u64;
    }
    Ok(None)
}
