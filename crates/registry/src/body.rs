//! Reading a response body into memory with a cap that holds whatever the transfer encoding:
//! `Content-Length` is checked up front when sent, and the bytes are counted as they arrive
//! (a chunked body declares no length). Manifests, indexes, tokens and error bodies are
//! read this way; blobs are streamed to disk instead (`blob.rs`).

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use reqwest::Response;

use crate::error::{describe_transport, ErrorKind, RegistryError, Result};
use crate::transport::Deadline;

/// The largest manifest or index accepted (as containerd).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// The largest token-endpoint answer accepted: a token is a few kilobytes.
pub const MAX_TOKEN_BYTES: usize = 1 << 20;

/// How much of an error body is read to describe a failure (the rest is dropped).
pub const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// The whole body, or an error naming `what` and `limit` once it exceeds `limit` bytes.
/// A body that is still arriving at `deadline` is a timeout error.
pub(crate) async fn read_capped(
    operation: &str,
    response: Response,
    what: &str,
    limit: usize,
    deadline: &Deadline,
) -> Result<Bytes> {
    let too_large = || {
        RegistryError::new(
            operation,
            ErrorKind::Protocol,
            format!("the {what} is larger than the limit of {limit} bytes"),
        )
    };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if deadline.passed() {
                deadline.error(operation)
            } else {
                RegistryError::new(operation, ErrorKind::Transport, describe_transport(e))
            }
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// At most the first `limit` bytes of the body (to describe an error), ignoring failures:
/// the status already says something went wrong.
pub(crate) async fn read_prefix(response: Response, limit: usize) -> Bytes {
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    body.freeze()
}
