//! gRPC over the session's HTTP/2 streams: length-prefixed messages (bounded by
//! [`MAX_MESSAGE`]), the response headers and trailers, and sending within the peer's
//! flow-control window.

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use h2::RecvStream;
use hyper::http;
use prost::Message;

/// The largest gRPC message accepted from the daemon (requests are small; agent traffic
/// comes in chunks).
pub(super) const MAX_MESSAGE: usize = 4 << 20;

/// Sends one message, waiting for the peer's flow-control window instead of buffering.
pub(super) async fn send_message<M: Message>(
    stream: &mut h2::SendStream<Bytes>,
    message: &M,
) -> Result<()> {
    let mut data = frame(&message.encode_to_vec());
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let capacity = futures_util::future::poll_fn(|cx| stream.poll_capacity(cx))
            .await
            .ok_or_else(|| anyhow!("the daemon closed the file sync"))?
            .context("the file sync failed")?;
        let chunk = data.split_to(capacity.min(data.len()));
        stream
            .send_data(chunk, false)
            .context("the file sync failed")?;
    }
    Ok(())
}

pub(super) fn grpc_response() -> http::Response<()> {
    let mut response = http::Response::new(());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

pub(super) fn trailers(code: u32, message: &str) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    map.insert("grpc-status", http::HeaderValue::from(code));
    if !message.is_empty() {
        // grpc-message is percent-encoded; a plain ASCII rendering is enough for the daemon.
        let text: String = message
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if let Ok(value) = http::HeaderValue::from_str(&text.replace('%', "%25")) {
            map.insert("grpc-message", value);
        }
    }
    map
}

/// One length-prefixed gRPC message.
pub(super) fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.freeze()
}

/// A request stream read as length-prefixed gRPC messages.
pub(super) struct MessageReader {
    body: RecvStream,
    /// Bytes received but not yet consumed: the start of the next message.
    pending: BytesMut,
}

impl MessageReader {
    pub(super) fn new(body: RecvStream) -> Self {
        MessageReader {
            body,
            pending: BytesMut::new(),
        }
    }

    /// The next message, `None` at the stream's end.
    pub(super) async fn next(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(message) = take_message(&mut self.pending)? {
                return Ok(Some(message));
            }
            match self.body.data().await {
                None => {
                    if self.pending.is_empty() {
                        return Ok(None);
                    }
                    bail!("the session call ended inside a message");
                }
                Some(chunk) => {
                    let chunk = chunk.context("the session call failed")?;
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.pending.extend_from_slice(&chunk);
                }
            }
        }
    }
}

/// Takes one complete message off the front of `buf`.
pub(super) fn take_message(buf: &mut BytesMut) -> Result<Option<Vec<u8>>> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] != 0 {
        bail!("the daemon sent a compressed gRPC message, which rbuild did not offer");
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_MESSAGE {
        bail!("the daemon sent a {len}-byte session message (limit {MAX_MESSAGE})");
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(buf.split_to(len).to_vec()))
}
