//! Turns the daemon's build stream into rbuild's own progress output: one line per step
//! (`[2/5] RUN make`), the steps' own output indented under it, and failures that name the
//! step, the command and its exit code.

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
}

impl<W: Write> Renderer<W> {
    pub fn new(out: W, mode: ProgressMode) -> Self {
        Renderer {
            out,
            mode,
            step: None,
            image_id: None,
            last_status: None,
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
