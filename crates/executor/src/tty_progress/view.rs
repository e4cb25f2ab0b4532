//! The live view's state: the running steps with their last output lines, and how the
//! block and the permanent lines are drawn.

use super::*;

/// A step that started and has not finished.
pub(super) struct Running {
    pub(super) stage: String,
    pub(super) step: usize,
    pub(super) steps: usize,
    pub(super) text: String,
    pub(super) started: Instant,
    /// The last [`KEPT_LINES`] output lines, already made printable.
    pub(super) lines: VecDeque<String>,
}

impl Running {
    pub(super) fn label(&self) -> String {
        format!(
            "[{} {}/{}] {}",
            self.stage, self.step, self.steps, self.text
        )
    }
}

/// The state behind the live view and how it is drawn.
pub(super) struct View {
    pub(super) out: Box<dyn Write + Send>,
    pub(super) size: TerminalSize,
    pub(super) colour: bool,
    /// In the order they started.
    pub(super) running: Vec<Running>,
    /// Lines the block occupies on the screen now (the cursor is on the line below it).
    pub(super) drawn: usize,
    /// Output arrived since the last redraw.
    pub(super) dirty: bool,
    /// The build is over (BuildDone): no block any more, only permanent lines.
    pub(super) finished: bool,
}

impl View {
    pub(super) fn paint(&self, colour: &str, text: &str) -> String {
        if self.colour {
            format!("{colour}{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    pub(super) fn position(&self, stage: &str, step: usize) -> Option<usize> {
        self.running
            .iter()
            .position(|r| r.stage == stage && r.step == step)
    }

    /// `[stage n/m] TEXT` of a running step, or `[stage n]` for one that never started.
    pub(super) fn label_of(&self, stage: &str, step: usize) -> String {
        match self.position(stage, step) {
            Some(i) => self.running[i].label(),
            None => format!("[{} {step}]", printable(stage)),
        }
    }

    pub(super) fn event(&mut self, event: &Event, now: Instant) {
        let mut permanent = Vec::new();
        match event {
            Event::BuildStarted { stages } => {
                let names: Vec<String> = stages.iter().map(|s| printable(s)).collect();
                permanent.push(format!("building stages: {}", names.join(", ")));
            }
            Event::StepStarted {
                stage,
                step,
                steps,
                text,
            } => self.running.push(Running {
                stage: printable(stage),
                step: *step,
                steps: *steps,
                text: printable(text),
                started: now,
                lines: VecDeque::new(),
            }),
            Event::StepOutput { stage, step, line } => {
                let line = printable(line);
                match self.position(&printable(stage), *step) {
                    Some(i) => {
                        let lines = &mut self.running[i].lines;
                        if lines.len() == KEPT_LINES {
                            lines.pop_front();
                        }
                        lines.push_back(line);
                        self.dirty = true;
                        // Drawn by the ticker: at most ten frames a second, however
                        // chatty the step.
                        return;
                    }
                    None => permanent.push(format!(
                        "{} {line}",
                        self.label_of(&printable(stage), *step)
                    )),
                }
            }
            Event::StepDone {
                stage,
                step,
                seconds,
                layer_size,
            } => {
                let label = self.label_of(&printable(stage), *step);
                self.forget(stage, *step);
                let mut status = format!("DONE {seconds:.1}s");
                if let Some(size) = layer_size {
                    status.push_str(&format!(" (layer {})", human_size(*size)));
                }
                permanent.push(format!("{label}  {}", self.paint(GREEN, &status)));
            }
            Event::StepCached {
                stage,
                step,
                source,
                ..
            } => {
                let label = self.label_of(&printable(stage), *step);
                self.forget(stage, *step);
                let status = match source.as_str() {
                    "local" => "CACHED".to_string(),
                    "build" => "CACHED (the same step of another stage)".to_string(),
                    other => format!("CACHED (from the {} cache)", printable(other)),
                };
                permanent.push(format!("{label}  {}", self.paint(CYAN, &status)));
            }
            Event::CacheMiss {
                stage,
                step,
                reason,
            } => {
                let label = self.label_of(&printable(stage), *step);
                permanent.push(format!("{label}  cache miss: {}", printable(reason)));
            }
            Event::Warning { message } => {
                permanent.push(format!(
                    "{} {}",
                    self.paint(YELLOW, "WARNING:"),
                    printable(message)
                ));
            }
            Event::Phases { phases } => permanent.push(format!("phases: {phases}")),
            Event::BuildDone {
                image_id,
                tags,
                seconds,
                ..
            } => {
                self.running.clear();
                permanent.push(format!("writing image {image_id} done ({seconds:.1}s)"));
                for tag in tags {
                    permanent.push(format!("naming to {} done", printable(tag)));
                }
                self.draw(&permanent, now);
                self.finished = true;
                return;
            }
        }
        self.draw(&permanent, now);
    }

    pub(super) fn forget(&mut self, stage: &str, step: usize) {
        if let Some(i) = self.position(&printable(stage), step) {
            self.running.remove(i);
        }
    }

    /// The ticker's redraw: timers move even when nothing else happened.
    pub(super) fn tick(&mut self, now: Instant) {
        if !self.running.is_empty() || self.dirty {
            self.draw(&[], now);
        }
    }

    /// The build ended without BuildDone (it failed): the block goes, and the steps that
    /// were still running are printed for good with their last lines, so what failed
    /// stays readable above the error message.
    pub(super) fn fail(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        let mut permanent = Vec::new();
        for r in &self.running {
            let elapsed = now.duration_since(r.started).as_secs_f64();
            let status = format!("did not finish ({elapsed:.1}s)");
            permanent.push(format!("{}  {}", r.label(), self.paint(RED, &status)));
            for line in &r.lines {
                permanent.push(format!("  {line}"));
            }
        }
        self.running.clear();
        self.draw(&permanent, now);
        self.finished = true;
    }

    /// The block's lines for a terminal of `columns` × `rows`, each cut to fit one row.
    pub(super) fn block(&self, now: Instant, columns: usize, rows: usize) -> Vec<String> {
        if self.finished || self.running.is_empty() {
            return Vec::new();
        }
        // A block taller than the screen could not be moved back over: keep a row free.
        let budget = rows.saturating_sub(1).max(1);
        // Headers first, then output lines shared out in the rows left; with more steps
        // than rows, the last row says how many are not shown.
        let steps = self.running.len();
        let (shown_steps, per_step) = if steps > budget {
            (budget - 1, 0)
        } else {
            (steps, ((budget - steps) / steps).min(SHOWN_LINES))
        };
        // One column is left free: a line filling the row exactly wraps on some terminals.
        let width = columns.saturating_sub(1).max(1);
        let mut lines = Vec::new();
        for r in &self.running[..shown_steps] {
            let elapsed = now.duration_since(r.started).as_secs_f64();
            let timer = format!("  {elapsed:.1}s");
            let label = cut(&r.label(), width.saturating_sub(timer.chars().count()));
            lines.push(self.paint(BLUE, &format!("{label}{timer}")));
            let skip = r.lines.len().saturating_sub(per_step);
            for line in r.lines.iter().skip(skip) {
                lines.push(self.paint(DIM, &cut(&format!("  {line}"), width)));
            }
        }
        if shown_steps < self.running.len() {
            let more = format!("… and {} more running", self.running.len() - shown_steps);
            lines.push(cut(&more, width));
        }
        lines
    }

    /// Replaces the block with `permanent` lines (which stay) followed by the new block,
    /// in one write: the cursor goes up over the old block, each line is cleared as it is
    /// overwritten, and what is left of a taller old block is cleared below.
    pub(super) fn draw(&mut self, permanent: &[String], now: Instant) {
        let (columns, rows) = self.size.get();
        let block = self.block(now, columns, rows);
        let mut frame = String::new();
        if self.drawn > 0 {
            let _ = write!(frame, "\x1b[{}A\r", self.drawn);
        }
        for line in permanent.iter().chain(&block) {
            let _ = writeln!(frame, "\x1b[2K{line}");
        }
        if self.drawn > block.len() + permanent.len() {
            frame.push_str("\x1b[J");
        }
        self.drawn = block.len();
        self.dirty = false;
        if frame.is_empty() {
            return;
        }
        // Progress is best effort: a closed stderr must not fail the build.
        let _ = self.out.write_all(frame.as_bytes());
        let _ = self.out.flush();
    }
}
