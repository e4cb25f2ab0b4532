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
    /// A step's result came from the cache (`source`: `local` or `registry`) or from the
    /// same step of another stage of this build (`build`); nothing ran.
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
    /// Where the time went, by phase (after the build and anything done with its result,
    /// such as a push).
    Phases { phases: crate::phases::PhaseTimes },
}

/// Receives build events as they happen.
pub trait Progress {
    fn event(&mut self, event: &Event);
}

/// Human-readable lines, as `docker build --progress=plain` shows them.
///
/// Steps are numbered `#N` in the order they start, over the whole build (as BuildKit
/// numbers its vertices): the lines of stages running at once interleave, and the number
/// says which step a line belongs to. In a one-stage build `#N` is the step number.
pub struct PlainProgress<W: Write> {
    out: W,
    numbers: std::collections::HashMap<(String, usize), usize>,
}

impl PlainProgress<std::io::Stderr> {
    /// Writes to stderr.
    pub fn stderr() -> Self {
        PlainProgress::new(std::io::stderr())
    }
}

impl<W: Write> PlainProgress<W> {
    pub fn new(out: W) -> Self {
        PlainProgress {
            out,
            numbers: Default::default(),
        }
    }

    /// The build-wide number of a stage's step (new steps get the next one).
    fn number(&mut self, stage: &str, step: usize) -> usize {
        let next = self.numbers.len() + 1;
        *self
            .numbers
            .entry((stage.to_string(), step))
            .or_insert(next)
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
                let n = self.number(stage, *step);
                writeln!(self.out, "#{n} [{stage} {step}/{steps}] {text}")
            }
            Event::StepOutput { stage, step, line } => {
                let n = self.number(stage, *step);
                writeln!(self.out, "#{n} {line}")
            }
            Event::StepDone {
                stage,
                step,
                seconds,
                layer_size,
            } => {
                let n = self.number(stage, *step);
                match layer_size {
                    Some(size) => writeln!(
                        self.out,
                        "#{n} DONE {} (layer {size} bytes)",
                        secs(*seconds)
                    ),
                    None => writeln!(self.out, "#{n} DONE {}", secs(*seconds)),
                }
            }
            Event::StepCached {
                stage,
                step,
                source,
                ..
            } => {
                let n = self.number(stage, *step);
                match source.as_str() {
                    "local" => writeln!(self.out, "#{n} CACHED"),
                    "build" => writeln!(self.out, "#{n} CACHED (the same step of another stage)"),
                    other => writeln!(self.out, "#{n} CACHED (from the {other} cache)"),
                }
            }
            Event::CacheMiss {
                stage,
                step,
                reason,
            } => {
                let n = self.number(stage, *step);
                writeln!(self.out, "#{n} cache miss: {reason}")
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
            Event::Phases { phases } => writeln!(self.out, "phases: {phases}"),
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
        plain.event(&started("build", 1, "FROM busybox"));
        plain.event(&event);
        assert_eq!(
            String::from_utf8(plain.out).unwrap(),
            "#1 [build 1/2] FROM busybox\n#2 [build 2/3] RUN echo hi\n"
        );
        let mut json = JsonProgress::new(Vec::new());
        json.event(&event);
        let value: serde_json::Value = serde_json::from_slice(&json.out).unwrap();
        assert_eq!(value["event"], "step_started");
        assert_eq!(value["text"], "RUN echo hi");
    }

    fn started(stage: &str, step: usize, text: &str) -> Event {
        Event::StepStarted {
            stage: stage.into(),
            step,
            steps: 2,
            text: text.into(),
        }
    }

    #[test]
    fn plain_numbers_steps_of_interleaved_stages_build_wide() {
        let mut plain = PlainProgress::new(Vec::new());
        let output = |stage: &str, line: &str| Event::StepOutput {
            stage: stage.into(),
            step: 2,
            line: line.into(),
        };
        let done = |stage: &str| Event::StepDone {
            stage: stage.into(),
            step: 2,
            seconds: 0.5,
            layer_size: None,
        };
        for event in [
            started("one", 1, "FROM a"),
            started("two", 1, "FROM b"),
            started("one", 2, "RUN x"),
            started("two", 2, "RUN y"),
            output("one", "from one"),
            output("two", "from two"),
            done("two"),
            done("one"),
        ] {
            plain.event(&event);
        }
        assert_eq!(
            String::from_utf8(plain.out).unwrap(),
            "#1 [one 1/2] FROM a\n#2 [two 1/2] FROM b\n#3 [one 2/2] RUN x\n\
             #4 [two 2/2] RUN y\n#3 from one\n#4 from two\n#4 DONE 0.5s\n#3 DONE 0.5s\n"
        );
    }
}
