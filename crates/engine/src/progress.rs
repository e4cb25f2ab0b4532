//! Turns the daemon's build stream into rbuild's own progress output: one line per step
//! (`[2/5] RUN make`), the steps' own output indented under it, and failures that name the
//! step, the command and its exit code.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use bollard::models::BuildInfo;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
    /// Nothing but errors.
    Quiet,
}

/// The build step the daemon was running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub index: u32,
    pub total: u32,
    pub instruction: String,
}

/// Why a daemon build failed, in rbuild's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildFailure {
    #[error("{}RUN exited with code {code}: {command}", step_prefix(.step))]
    RunFailed {
        step: Option<Step>,
        command: String,
        code: i64,
    },
    #[error("{}{message}", step_prefix(.step))]
    Daemon { step: Option<Step>, message: String },
}

fn step_prefix(step: &Option<Step>) -> String {
    match step {
        Some(s) => format!("step {}/{} `{}` failed: ", s.index, s.total, s.instruction),
        None => String::new(),
    }
}

/// Renders the stream and remembers what the caller needs afterwards.
pub struct Renderer<W: Write> {
    out: W,
    mode: ProgressMode,
    step: Option<Step>,
    image_id: Option<String>,
    last_status: Option<String>,
    /// BuildKit vertices by digest: their names, and which have been shown.
    vertex_names: HashMap<String, String>,
    shown_vertices: HashSet<String>,
    /// The name of the BuildKit vertex that reported an error.
    failed_vertex: Option<String>,
}

impl<W: Write> Renderer<W> {
    pub fn new(out: W, mode: ProgressMode) -> Self {
        Renderer {
            out,
            mode,
            step: None,
            image_id: None,
            last_status: None,
            vertex_names: HashMap::new(),
            shown_vertices: HashSet::new(),
            failed_vertex: None,
        }
    }

    /// The image ID the daemon reported (`sha256:...`).
    pub fn image_id(&self) -> Option<&str> {
        self.image_id.as_deref()
    }

    /// Handles one message of the build stream.
    pub fn handle(&mut self, info: &BuildInfo) {
        if let Some(id) = info.aux.as_ref().and_then(|aux| aux.id.clone()) {
            self.image_id = Some(id);
        }
        if let Some(text) = &info.stream {
            for line in text.lines() {
                self.stream_line(line);
            }
        }
        if let Some(status) = &info.status {
            // Pull progress repeats the same status per layer; one line per change is enough.
            let line = match &info.id {
                Some(id) if info.progress_detail.is_none() => format!("{id}: {status}"),
                _ => status.clone(),
            };
            if self.last_status.as_deref() != Some(line.as_str()) {
                self.emit_log(&format!("pull: {line}"));
                self.last_status = Some(line);
            }
        }
    }

    /// Handles one BuildKit status record: a line when a vertex starts (`[2/5] RUN make`,
    /// ` CACHED` when it came from the cache), its output indented under it.
    pub fn handle_trace(&mut self, status: &crate::buildkit::proto::StatusResponse) {
        for vertex in &status.vertexes {
            self.vertex_names
                .insert(vertex.digest.clone(), vertex.name.clone());
            if !vertex.error.is_empty() && self.failed_vertex.is_none() {
                self.failed_vertex = Some(vertex.name.clone());
            }
            let started = vertex.started.is_some() || vertex.cached;
            if !started || !self.shown_vertices.insert(vertex.digest.clone()) {
                continue;
            }
            let step = parse_buildkit_step(&vertex.name);
            match (self.mode, &step) {
                (ProgressMode::Plain, _) => {
                    let cached = if vertex.cached { " CACHED" } else { "" };
                    let _ = writeln!(self.out, "{}{cached}", vertex.name);
                }
                (ProgressMode::Json, Some(step)) => self.json(serde_json::json!({
                    "type": "step",
                    "index": step.index,
                    "total": step.total,
                    "instruction": step.instruction,
                    "cached": vertex.cached,
                })),
                (ProgressMode::Json, None) => {
                    self.json(serde_json::json!({"type": "note", "text": vertex.name}))
                }
                (ProgressMode::Quiet, _) => {}
            }
            if step.is_some() {
                self.step = step;
            }
        }
        for log in &status.logs {
            let text = String::from_utf8_lossy(&log.msg).into_owned();
            for line in text.lines() {
                self.emit_log(line);
            }
        }
    }

    /// A line of the daemon's own output (not a step's).
    pub fn log_line(&mut self, line: &str) {
        if !line.trim().is_empty() {
            self.emit_log(line);
        }
    }

    /// Interprets BuildKit's error message, naming the step whose vertex failed.
    pub fn buildkit_failure(&mut self, message: &str) -> BuildFailure {
        let step = self
            .failed_vertex
            .as_deref()
            .and_then(parse_buildkit_step)
            .or_else(|| self.step.clone());
        let failure = classify_buildkit(step, message);
        if self.mode == ProgressMode::Json {
            self.json(serde_json::json!({"type": "error", "message": failure.to_string()}));
        }
        failure
    }

    fn stream_line(&mut self, line: &str) {
        if let Some(step) = parse_step(line) {
            match self.mode {
                ProgressMode::Plain => {
                    let _ = writeln!(
                        self.out,
                        "[{}/{}] {}",
                        step.index, step.total, step.instruction
                    );
                }
                ProgressMode::Json => self.json(serde_json::json!({
                    "type": "step",
                    "index": step.index,
                    "total": step.total,
                    "instruction": step.instruction,
                })),
                ProgressMode::Quiet => {}
            }
            self.step = Some(step);
            return;
        }
        // The classic builder's bookkeeping lines; rbuild reports the result itself.
        let noise = [
            " ---> ",
            "Removing intermediate container",
            "Successfully built",
            "Successfully tagged",
            "Sending build context",
        ];
        if noise.iter().any(|p| line.starts_with(p)) || line.trim().is_empty() {
            return;
        }
        self.emit_log(line);
    }

    fn emit_log(&mut self, line: &str) {
        match self.mode {
            ProgressMode::Plain => {
                let _ = writeln!(self.out, "    {line}");
            }
            ProgressMode::Json => self.json(serde_json::json!({"type": "log", "text": line})),
            ProgressMode::Quiet => {}
        }
    }

    fn json(&mut self, value: serde_json::Value) {
        let _ = writeln!(self.out, "{value}");
    }

    /// Writes a free-form status line (tagging, pushing, exporting).
    pub fn note(&mut self, line: &str) {
        match self.mode {
            ProgressMode::Plain => {
                let _ = writeln!(self.out, "{line}");
            }
            ProgressMode::Json => self.json(serde_json::json!({"type": "note", "text": line})),
            ProgressMode::Quiet => {}
        }
    }

    /// Interprets the daemon's error message for the current step.
    pub fn failure(&mut self, message: &str) -> BuildFailure {
        let failure = classify(self.step.clone(), message);
        if self.mode == ProgressMode::Json {
            self.json(serde_json::json!({"type": "error", "message": failure.to_string()}));
        }
        failure
    }
}

/// `Step 2/5 : RUN make` → step 2 of 5.
fn parse_step(line: &str) -> Option<Step> {
    let rest = line.strip_prefix("Step ")?;
    let (counts, instruction) = rest.split_once(" : ")?;
    let (index, total) = counts.split_once('/')?;
    Some(Step {
        index: index.trim().parse().ok()?,
        total: total.trim().parse().ok()?,
        instruction: instruction.trim().to_string(),
    })
}

/// `[2/5] RUN make` (a BuildKit vertex name; `[stage 2/5]` in multi-stage builds) → step 2
/// of 5.
fn parse_buildkit_step(name: &str) -> Option<Step> {
    let rest = name.strip_prefix('[')?;
    let (counts, instruction) = rest.split_once("] ")?;
    let counts = counts.rsplit(' ').next()?;
    let (index, total) = counts.split_once('/')?;
    Some(Step {
        index: index.trim().parse().ok()?,
        total: total.trim().parse().ok()?,
        instruction: instruction.trim().to_string(),
    })
}

/// BuildKit v0.8 reports a failed RUN as `... executor failed running [/bin/sh -c exit 3]:
/// exit code: 3`.
fn classify_buildkit(step: Option<Step>, message: &str) -> BuildFailure {
    let message = message.trim();
    const MARK: &str = "executor failed running [";
    if let Some(at) = message.find(MARK) {
        let rest = &message[at + MARK.len()..];
        if let Some((command, tail)) = rest.rsplit_once("]: exit code: ") {
            if let Ok(code) = tail.trim().parse() {
                return BuildFailure::RunFailed {
                    step,
                    command: command.to_string(),
                    code,
                };
            }
        }
    }
    let hint = if message.contains("network bridge not found") {
        " (the daemon has no bridge network, BuildKit's default for RUN: build with --network \
         host or --network none)"
    } else if message.contains("dockerfile parse error") {
        " (the daemon's built-in Dockerfile frontend knows the syntax of Dockerfile 1.2: no \
         heredocs, no COPY --link/--parents/--exclude; --engine native has them)"
    } else {
        ""
    };
    BuildFailure::Daemon {
        step,
        message: format!("{message}{hint}"),
    }
}

/// The classic builder reports a failed RUN as
/// `The command '/bin/sh -c exit 3' returned a non-zero code: 3`.
fn classify(step: Option<Step>, message: &str) -> BuildFailure {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("The command '") {
        if let Some((command, code)) = rest.rsplit_once("' returned a non-zero code: ") {
            if let Ok(code) = code.trim().parse() {
                return BuildFailure::RunFailed {
                    step,
                    command: command.to_string(),
                    code,
                };
            }
        }
    }
    BuildFailure::Daemon {
        step,
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildkit_step_names_and_run_failures_are_understood() {
        let step = parse_buildkit_step("[stage-1 3/4] RUN exit 3").unwrap();
        assert_eq!(
            (step.index, step.total, step.instruction.as_str()),
            (3, 4, "RUN exit 3")
        );
        assert!(parse_buildkit_step("[internal] load metadata").is_none());
        let failure = classify_buildkit(
            Some(step),
            "failed to solve with frontend dockerfile.v0: failed to build LLB: executor failed \
             running [/bin/sh -c exit 3]: exit code: 3",
        );
        assert_eq!(
            failure.to_string(),
            "step 3/4 `RUN exit 3` failed: RUN exited with code 3: /bin/sh -c exit 3"
        );
        let other = classify_buildkit(None, "failed to read dockerfile");
        assert_eq!(other.to_string(), "failed to read dockerfile");
        let parse = classify_buildkit(
            None,
            "dockerfile parse error line 3: unknown instruction: ECHO",
        );
        assert!(parse.to_string().contains("no heredocs"), "{parse}");
    }

    fn stream(text: &str) -> BuildInfo {
        BuildInfo {
            stream: Some(text.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn steps_and_output_are_rendered_and_noise_dropped() {
        let mut out = Vec::new();
        let mut r = Renderer::new(&mut out, ProgressMode::Plain);
        r.handle(&stream("Step 1/2 : FROM base\n"));
        r.handle(&stream(" ---> 0123abcd\n"));
        r.handle(&stream("Step 2/2 : RUN echo hi\n"));
        r.handle(&stream(" ---> Running in 77aa\n"));
        r.handle(&stream("hi\n"));
        r.handle(&stream("Removing intermediate container 77aa\n"));
        r.handle(&stream("Successfully built 99ff\n"));
        drop(r);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "[1/2] FROM base\n[2/2] RUN echo hi\n    hi\n");
    }

    #[test]
    fn failed_run_names_step_command_and_code() {
        let mut r = Renderer::new(Vec::new(), ProgressMode::Quiet);
        r.handle(&stream("Step 3/4 : RUN exit 3\n"));
        let failure = r.failure("The command '/bin/sh -c exit 3' returned a non-zero code: 3");
        assert_eq!(
            failure.to_string(),
            "step 3/4 `RUN exit 3` failed: RUN exited with code 3: /bin/sh -c exit 3"
        );
    }

    #[test]
    fn other_daemon_errors_are_kept_verbatim() {
        let mut r = Renderer::new(Vec::new(), ProgressMode::Quiet);
        let failure = r.failure("pull access denied for nope");
        assert_eq!(failure.to_string(), "pull access denied for nope");
    }

    #[test]
    fn json_mode_emits_one_object_per_event() {
        let mut out = Vec::new();
        let mut r = Renderer::new(&mut out, ProgressMode::Json);
        r.handle(&stream("Step 1/1 : FROM base\n"));
        r.handle(&stream("output line\n"));
        drop(r);
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["type"], "step");
        assert_eq!(lines[0]["instruction"], "FROM base");
        assert_eq!(lines[1]["text"], "output line");
    }
}
