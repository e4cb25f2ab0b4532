//! One error type for every registry operation: a single line naming the operation (e.g.
//! `pull 127.0.0.1:5000/foo:latest`) and what went wrong. Never carries credentials.

use std::fmt;

/// What kind of failure, for callers that react differently (e.g. a missing blob).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 401/403 from the registry or its token server.
    Unauthorized,
    /// 404: manifest, blob or repository unknown.
    NotFound,
    /// Content whose digest or size is not what was asked for.
    DigestMismatch,
    /// A manifest type we do not handle (schema1, unknown types).
    UnsupportedMediaType,
    /// No index entry for the requested platform.
    NoMatchingPlatform,
    /// Connection, TLS or timeout failures (after retries).
    Transport,
    /// Any other unexpected HTTP status or malformed answer.
    Protocol,
    /// Local files: reading a blob to push, writing a pulled blob, config.json.
    Io,
    /// Bad input from the caller or the local configuration.
    Config,
}

/// A failed registry operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    pub operation: String,
    pub kind: ErrorKind,
    pub message: String,
}

impl RegistryError {
    pub fn new(operation: impl Into<String>, kind: ErrorKind, message: impl Into<String>) -> Self {
        RegistryError {
            operation: operation.into(),
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.operation, self.message)
    }
}

impl std::error::Error for RegistryError {}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// A reqwest error without its URL: redirect targets may carry signed query strings.
pub(crate) fn describe_transport(err: reqwest::Error) -> String {
    let kind = if err.is_connect() {
        "cannot connect"
    } else if err.is_timeout() {
        "timed out"
    } else if err.is_body() || err.is_decode() {
        "connection dropped while reading the body"
    } else {
        "request failed"
    };
    let err = err.without_url();
    let mut text = format!("{kind}: {err}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The `errors` array of a registry error body, as `CODE: message` pairs, bounded in length.
pub(crate) fn describe_error_body(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(env) = serde_json::from_slice::<Envelope>(body) {
        let parts: Vec<String> = env
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect();
        if !parts.is_empty() {
            return truncate(&parts.join("; "));
        }
    }
    truncate(String::from_utf8_lossy(body).trim())
}

fn truncate(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
