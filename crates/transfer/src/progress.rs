//! What a pull or push reports as it goes, and reporters: human lines (`Pushing sha256:…
//! 12.3 MiB`, `Layer already exists`, `Mounted from`, `Pulled`), JSON lines (one event per
//! line), nothing, or a recorder for tests.
//!
//! Blobs move in parallel, so reporters take `&self` and are `Send + Sync`.

use std::io::Write;
use std::sync::Mutex;

use rbuild_image::Digest;
use serde::Serialize;

/// One thing that happened during a pull or push.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The registry's manifest or index for `reference`.
    Resolved {
        reference: String,
        digest: Digest,
        media_type: String,
    },
    /// A download has started.
    BlobPulling { digest: Digest, size: u64 },
    /// A blob is in the store, verified.
    BlobPulled { digest: Digest, size: u64 },
    /// A blob the store already had; not downloaded.
    BlobInStore { digest: Digest, size: u64 },
    /// An upload has started.
    BlobPushing { digest: Digest, size: u64 },
    /// An upload finished.
    BlobPushed { digest: Digest, size: u64 },
    /// The registry already had the blob in the destination repository.
    BlobExists { digest: Digest, size: u64 },
    /// The registry mounted the blob from another repository instead of an upload.
    BlobMounted {
        digest: Digest,
        size: u64,
        from: String,
    },
    /// A manifest or index was uploaded (`reference` names a tag or a digest).
    ManifestPushed {
        reference: String,
        digest: Digest,
        media_type: String,
    },
    /// A pull is complete: `digest` is what the store now holds for `reference`.
    Pulled { reference: String, digest: Digest },
    /// A push is complete: `digest` is what `reference` now points to.
    Pushed { reference: String, digest: Digest },
}

/// Receives transfer events as they happen (from several tasks at once).
pub trait Progress: Send + Sync {
    fn event(&self, event: &Event);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: &Event) {}
}

/// Keeps every event, for tests and for callers that summarise afterwards.
#[derive(Debug, Default)]
pub struct RecordingProgress {
    events: Mutex<Vec<Event>>,
}

impl RecordingProgress {
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Progress for RecordingProgress {
    fn event(&self, event: &Event) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event.clone());
    }
}

/// Human-readable lines, as `docker push`/`docker pull` print them (without the live bars).
pub struct PlainProgress<W: Write + Send> {
    out: Mutex<W>,
}

impl PlainProgress<std::io::Stderr> {
    pub fn stderr() -> Self {
        PlainProgress::new(std::io::stderr())
    }
}

impl<W: Write + Send> PlainProgress<W> {
    pub fn new(out: W) -> Self {
        PlainProgress {
            out: Mutex::new(out),
        }
    }

    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

/// `12.3 MiB`, `512 B`: sizes as people read them (the store's rendering).
pub use rbuild_store::human_bytes as human_size;

/// `sha256:` and the first 12 hex digits, as Docker shortens ids.
fn short(digest: &Digest) -> String {
    format!("sha256:{}…", &digest.hex()[..12])
}

/// The line for an event.
pub fn plain_line(event: &Event) -> String {
    match event {
        Event::Resolved {
            reference, digest, ..
        } => format!("{reference}: resolved to {digest}"),
        Event::BlobPulling { digest, size } => {
            format!("Pulling {} {}", short(digest), human_size(*size))
        }
        Event::BlobPulled { digest, size } => {
            format!("Pulled {} {}", short(digest), human_size(*size))
        }
        Event::BlobInStore { digest, .. } => format!("Already in store {}", short(digest)),
        Event::BlobPushing { digest, size } => {
            format!("Pushing {} {}", short(digest), human_size(*size))
        }
        Event::BlobPushed { digest, size } => {
            format!("Pushed {} {}", short(digest), human_size(*size))
        }
        Event::BlobExists { digest, .. } => format!("Layer already exists {}", short(digest)),
        Event::BlobMounted { digest, from, .. } => {
            format!("Mounted from {from} {}", short(digest))
        }
        Event::ManifestPushed {
            reference, digest, ..
        } => format!("Pushed manifest {reference} {}", short(digest)),
        Event::Pulled { reference, digest } => format!("{reference}: digest: {digest}"),
        Event::Pushed { reference, digest } => format!("{reference}: digest: {digest}"),
    }
}

impl<W: Write + Send> Progress for PlainProgress<W> {
    fn event(&self, event: &Event) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // Progress is best effort: a closed stderr must not fail the transfer.
        let _ = writeln!(out, "{}", plain_line(event));
        let _ = out.flush();
    }
}

/// One JSON object per line, `{"event":"blob_pushed","digest":...,"size":...}`.
pub struct JsonProgress<W: Write + Send> {
    out: Mutex<W>,
}

impl JsonProgress<std::io::Stderr> {
    pub fn stderr() -> Self {
        JsonProgress::new(std::io::stderr())
    }
}

impl<W: Write + Send> JsonProgress<W> {
    pub fn new(out: W) -> Self {
        JsonProgress {
            out: Mutex::new(out),
        }
    }

    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl<W: Write + Send> Progress for JsonProgress<W> {
    fn event(&self, event: &Event) {
        let Ok(line) = serde_json::to_string(event) else {
            return;
        };
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_lines_read_like_docker() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(12_897_485), "12.3 MiB");
        let digest = Digest::of(b"x");
        let line = plain_line(&Event::BlobPushing {
            digest: digest.clone(),
            size: 12_897_485,
        });
        assert_eq!(
            line,
            format!("Pushing sha256:{}… 12.3 MiB", &digest.hex()[..12])
        );
        let line = plain_line(&Event::BlobMounted {
            digest,
            size: 1,
            from: "library/busybox".into(),
        });
        assert!(
            line.starts_with("Mounted from library/busybox sha256:"),
            "{line}"
        );
    }

    #[test]
    fn json_progress_writes_one_tagged_object_per_line() {
        let progress = JsonProgress::new(Vec::new());
        let digest = Digest::of(b"x");
        progress.event(&Event::BlobExists {
            digest: digest.clone(),
            size: 3,
        });
        progress.event(&Event::BlobPulled { digest, size: 3 });
        let text = String::from_utf8(progress.into_inner()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "blob_exists");
        assert_eq!(lines[1]["event"], "blob_pulled");
        assert_eq!(lines[1]["size"], 3);
    }
}
