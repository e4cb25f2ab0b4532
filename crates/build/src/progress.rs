//! Build progress: the events a build reports, and two reporters (plain text and JSON
//! lines). The CLI picks one; tests can implement [`Progress`] to record events.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;

/// One thing that happened during a build.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The stages that will run, in order (names or `stage-N`).
    BuildStarted { stages: Vec<String> },
    /// `[stage step/steps] TEXT`; step 1 is the FROM.
    StepStarted {
        stage: String,
        step: usize,
        steps: usize,
        text: String,
    },
    /// One line a RUN printed (stdout and stderr combined).
    StepOutput {
        stage: String,
        step: usize,
        line: String,
    },
    /// A step finished; `layer_size` is the compressed size of the layer it made, if any.
    StepDone {
        stage: String,
        step: usize,
        seconds: f64,
        layer_size: Option<u64>,
    },
    /// A step's result came from the cache (`source`: `local` or `registry`); nothing ran.
    StepCached {
        stage: String,
        step: usize,
        layer_size: u64,
        source: String,
    },
    /// A step's cache key had no record (only with explain-misses): which of its inputs
    /// changed since the last build of this step.
    CacheMiss {
        stage: String,
        step: usize,
        reason: String,
    },
    /// Something the user should know that does not stop the build.
    Warning { message: String },
    /// The image is in the store.
    BuildDone {
        image_id: String,
        manifest: String,
        tags: Vec<String>,
        seconds: f64,
    },
}

/// Receives build events as they happen.
pub trait Progress {
    fn event(&mut self, event: &Event);
}

/// Human-readable lines, as `docker build --progress=plain` shows them.
pub struct PlainProgress<W: Write> {
    out: W,
}

impl PlainProgress<std::io::Stderr> {
    /// Writes to stderr.
    pub fn stderr() -> Self {
        PlainProgress {
            out: std::io::stderr(),
        }
    }
}

impl<W: Write> PlainProgress<W> {
    pub fn new(out: W) -> Self {
        PlainProgress { out }
    }
}

fn secs(d: f64) -> String {
    format!("{:.1}s", d)
}

impl<W: Write> Progress for PlainProgress<W> {
    fn event(&mut self, event: &Event) {
        // Progress is best effort: a closed stderr must not fail the build.
        let _ = match event {
            Event::BuildStarted { stages } => {
                writeln!(self.out, "building stages: {}", stages.join(", "))
            }
            Event::StepStarted {
                stage,
                step,
                steps,
                text,
            } => {
                writeln!(self.out, "#{step} [{stage} {step}/{steps}] {text}")
            }
            Event::StepOutput { step, line, .. } => writeln!(self.out, "#{step} {line}"),
            Event::StepDone {
                step,
                seconds,
                layer_size,
                ..
            } => match layer_size {
                Some(size) => writeln!(
                    self.out,
                    "#{step} DONE {} (layer {size} bytes)",
                    secs(*seconds)
                ),
                None => writeln!(self.out, "#{step} DONE {}", secs(*seconds)),
            },
            Event::StepCached { step, source, .. } => match source.as_str() {
                "local" => writeln!(self.out, "#{step} CACHED"),
                other => writeln!(self.out, "#{step} CACHED (from the {other} cache)"),
            },
            Event::CacheMiss { step, reason, .. } => {
                writeln!(self.out, "#{step} cache miss: {reason}")
            }
            Event::Warning { message } => writeln!(self.out, "WARNING: {message}"),
            Event::BuildDone {
                image_id,
                tags,
                seconds,
                ..
            } => {
                let mut r = writeln!(
                    self.out,
                    "writing image {image_id} done ({})",
                    secs(*seconds)
                );
                for tag in tags {
                    r = r.and_then(|_| writeln!(self.out, "naming to {tag} done"));
                }
                r
            }
        };
    }
}

/// One JSON object per line, for tools.
pub struct JsonProgress<W: Write> {
    out: W,
}

impl JsonProgress<std::io::Stderr> {
    pub fn stderr() -> Self {
        JsonProgress {
            out: std::io::stderr(),
        }
    }
}

impl<W: Write> JsonProgress<W> {
    pub fn new(out: W) -> Self {
        JsonProgress { out }
    }
}

impl<W: Write> Progress for JsonProgress<W> {
    fn event(&mut self, event: &Event) {
        if let Ok(line) = serde_json::to_string(event) {
            let _ = writeln!(self.out, "{line}");
        }
    }
}

/// Discards every event.
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&mut self, _: &Event) {}
}

pub(crate) fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_json_render_steps() {
        let event = Event::StepStarted {
            stage: "build".into(),
            step: 2,
            steps: 3,
            text: "RUN echo hi".into(),
        };
        let mut plain = PlainProgress::new(Vec::new());
        plain.event(&event);
        assert_eq!(
            String::from_utf8(plain.out).unwrap(),
            "#2 [build 2/3] RUN echo hi\n"
        );
        let mut json = JsonProgress::new(Vec::new());
        json.event(&event);
        let value: serde_json::Value = serde_json::from_slice(&json.out).unwrap();
        assert_eq!(value["event"], "step_started");
        assert_eq!(value["text"], "RUN echo hi");
    }
}
