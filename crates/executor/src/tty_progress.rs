//! `--progress tty`: a live view of a build in a terminal, as BuildKit's tty mode shows it.
//!
//! At the bottom of the terminal a block is redrawn in place: one line per running step
//! (`[stage n/m] TEXT  3.2s`, the timer ticking) and under each its last few output lines,
//! dimmed and cut to the terminal's width. Everything that is final (finished and cached
//! steps, warnings, cache misses, lines of other reporters through [`TtyPrinter`]) is
//! printed once above the block and stays in the scrollback.
//!
//! Events arrive on one thread, but timers must tick while a step prints nothing, so the
//! view lives behind a mutex shared with a ticker thread that redraws about ten times a
//! second; dropping the [`TtyProgress`] stops it. Output lines only mark the view dirty
//! (a chatty step would otherwise redraw for every line); the ticker draws them.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::progress::{Event, Progress};

/// Output lines shown under a running step.
const SHOWN_LINES: usize = 5;
/// Output lines kept per running step, printed for good if the build fails there.
const KEPT_LINES: usize = 10;
/// How often the ticker redraws.
const TICK: Duration = Duration::from_millis(100);
/// The terminal's size when it cannot be asked (not a terminal).
const FALLBACK_SIZE: (usize, usize) = (80, 24);

const DIM: &str = "\x1b[2m";
const BLUE: &str = "\x1b[34m";
const GREEN: &str = "\x1b[32m";
const CYAN: &str = "\x1b[36m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

/// Where the view's width and height come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalSize {
    /// Asked of file descriptor 2 (stderr) at every redraw, so a resize is followed.
    Stderr,
    /// Fixed columns and rows (tests, or output that is not a terminal).
    Fixed { columns: usize, rows: usize },
}

impl TerminalSize {
    /// (columns, rows).
    fn get(self) -> (usize, usize) {
        match self {
            TerminalSize::Fixed { columns, rows } => (columns.max(1), rows.max(1)),
            TerminalSize::Stderr => stderr_size().unwrap_or(FALLBACK_SIZE),
        }
    }
}

/// The size of the terminal on stderr, if stderr is one.
fn stderr_size() -> Option<(usize, usize)> {
    // SAFETY: winsize is plain integers, for which all zeroes is a valid value.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we own; on a descriptor that
    // is no terminal it fails and writes nothing.
    let ok = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then(|| (size.ws_col as usize, (size.ws_row as usize).max(1)))
}

/// Whether stderr is a terminal.
pub fn stderr_is_terminal() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(2) == 1 }
}

/// A step that started and has not finished.
struct Running {
    stage: String,
    step: usize,
    steps: usize,
    text: String,
    started: Instant,
    /// The last [`KEPT_LINES`] output lines, already made printable.
    lines: VecDeque<String>,
}

impl Running {
    fn label(&self) -> String {
        format!(
            "[{} {}/{}] {}",
            self.stage, self.step, self.steps, self.text
        )
    }
}

/// The state behind the live view and how it is drawn.
struct View {
    out: Box<dyn Write + Send>,
    size: TerminalSize,
    colour: bool,
    /// In the order they started.
    running: Vec<Running>,
    /// Lines the block occupies on the screen now (the cursor is on the line below it).
    drawn: usize,
    /// Output arrived since the last redraw.
    dirty: bool,
    /// The build is over (BuildDone): no block any more, only permanent lines.
    finished: bool,
}

impl View {
    fn paint(&self, colour: &str, text: &str) -> String {
        if self.colour {
            format!("{colour}{text}{RESET}")
        } else {
            text.to_string()
        }
    }

    fn position(&self, stage: &str, step: usize) -> Option<usize> {
        self.running
            .iter()
            .position(|r| r.stage == stage && r.step == step)
    }

    /// `[stage n/m] TEXT` of a running step, or `[stage n]` for one that never started.
    fn label_of(&self, stage: &str, step: usize) -> String {
        match self.position(stage, step) {
            Some(i) => self.running[i].label(),
            None => format!("[{} {step}]", printable(stage)),
        }
    }

    fn event(&mut self, event: &Event, now: Instant) {
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

    fn forget(&mut self, stage: &str, step: usize) {
        if let Some(i) = self.position(&printable(stage), step) {
            self.running.remove(i);
        }
    }

    /// The ticker's redraw: timers move even when nothing else happened.
    fn tick(&mut self, now: Instant) {
        if !self.running.is_empty() || self.dirty {
            self.draw(&[], now);
        }
    }

    /// The build ended without BuildDone (it failed): the block goes, and the steps that
    /// were still running are printed for good with their last lines, so what failed
    /// stays readable above the error message.
    fn fail(&mut self, now: Instant) {
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
    fn block(&self, now: Instant, columns: usize, rows: usize) -> Vec<String> {
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
    fn draw(&mut self, permanent: &[String], now: Instant) {
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

/// The view and the ticker's stop signal, shared with the ticker thread and printers.
struct Shared {
    view: Mutex<View>,
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Shared {
    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The live terminal view (see the module's documentation).
pub struct TtyProgress {
    shared: Arc<Shared>,
    ticker: Option<JoinHandle<()>>,
}

impl TtyProgress {
    /// Draws on stderr, sized like the terminal there; `colour: false` for `NO_COLOR`.
    pub fn stderr(colour: bool) -> Self {
        TtyProgress::new(Box::new(std::io::stderr()), TerminalSize::Stderr, colour)
    }

    /// Draws on `out`, with a ticker thread redrawing until this is dropped.
    pub fn new(out: Box<dyn Write + Send>, size: TerminalSize, colour: bool) -> Self {
        let shared = Arc::new(Shared {
            view: Mutex::new(View {
                out,
                size,
                colour,
                running: Vec::new(),
                drawn: 0,
                dirty: false,
                finished: false,
            }),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let ticking = Arc::clone(&shared);
        // Without a thread the view still works, only timers stand still between events.
        let ticker = std::thread::Builder::new()
            .name("progress-ticker".into())
            .spawn(move || ticker(&ticking))
            .ok();
        TtyProgress { shared, ticker }
    }

    /// A handle that prints lines above the block from any thread (base image pulls
    /// report through it while a FROM step is running).
    pub fn printer(&self) -> TtyPrinter {
        TtyPrinter {
            shared: Arc::clone(&self.shared),
        }
    }
}

fn ticker(shared: &Shared) {
    let mut stopped = shared.stop.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let (guard, _) = shared
            .wake
            .wait_timeout(stopped, TICK)
            .unwrap_or_else(|p| p.into_inner());
        stopped = guard;
        if *stopped {
            return;
        }
        shared.view().tick(Instant::now());
    }
}

impl Progress for TtyProgress {
    fn event(&mut self, event: &Event) {
        self.shared.view().event(event, Instant::now());
    }
}

impl Drop for TtyProgress {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
        self.shared.view().fail(Instant::now());
    }
}

/// Prints whole lines above a [`TtyProgress`]'s block; cheap to clone, usable from any
/// thread.
#[derive(Clone)]
pub struct TtyPrinter {
    shared: Arc<Shared>,
}

impl TtyPrinter {
    pub fn line(&self, text: &str) {
        self.shared.view().draw(&[printable(text)], Instant::now());
    }
}

/// `text` safe to put on a terminal: a command's output must not move the cursor or change
/// colours under the view. What follows the last carriage return is kept (what a progress
/// bar would have left on screen), tabs become spaces, and any other control character is
/// shown escaped (`^[` for ESC, `\u{9b}` for a C1 control).
fn printable(text: &str) -> String {
    let text = text.trim_end_matches('\r');
    let text = text.rsplit('\r').next().unwrap_or(text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' => out.push(' '),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(c as u8 + 0x40));
            }
            '\u{7f}' => out.push_str("^?"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// `text` in at most `width` characters, `…` marking a cut.
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        out.push('…');
    }
    out
}

/// `512 B`, `12.3 kB`: sizes as BuildKit prints them (decimal units).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose bytes the test can still read while the view owns it.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// What a terminal `columns` wide shows after `bytes`: scrollback and screen as one
    /// list of rows. It knows exactly the escapes the view may use and panics on any
    /// other control character, and on a row written past its width.
    fn screen(bytes: &str, columns: usize) -> Vec<String> {
        let mut rows: Vec<Vec<char>> = vec![Vec::new()];
        let (mut row, mut col) = (0usize, 0usize);
        let mut chars = bytes.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\n' => {
                    row += 1;
                    col = 0;
                    if rows.len() <= row {
                        rows.push(Vec::new());
                    }
                }
                '\r' => col = 0,
                '\x1b' => {
                    assert_eq!(chars.next(), Some('['), "only CSI escapes are used");
                    let mut param = String::new();
                    let command = loop {
                        let c = chars.next().expect("an unfinished escape");
                        if c.is_ascii_digit() || c == ';' {
                            param.push(c);
                        } else {
                            break c;
                        }
                    };
                    let n: usize = param.parse().unwrap_or(1);
                    match command {
                        'A' => row = row.checked_sub(n).expect("cursor moved above the top"),
                        'K' => {
                            assert_eq!(param, "2");
                            rows[row].clear();
                        }
                        'J' => {
                            rows[row].truncate(col);
                            rows.truncate(row + 1);
                        }
                        'm' => {}
                        other => panic!("unexpected escape {other:?}"),
                    }
                }
                c if c.is_control() => panic!("a raw control character {c:?} reached the terminal"),
                c => {
                    assert!(col < columns, "a line wider than the terminal: {rows:?}");
                    let line = &mut rows[row];
                    if line.len() <= col {
                        line.resize(col, ' ');
                        line.push(c);
                    } else {
                        line[col] = c;
                    }
                    col += 1;
                }
            }
        }
        // The cursor's empty row below the last line is not content.
        if rows.last().is_some_and(|r| r.is_empty()) {
            rows.pop();
        }
        rows.into_iter().map(|r| r.into_iter().collect()).collect()
    }

    fn new_view(columns: usize, rows: usize, colour: bool) -> (View, Captured) {
        let captured = Captured::default();
        let view = View {
            out: Box::new(captured.clone()),
            size: TerminalSize::Fixed { columns, rows },
            colour,
            running: Vec::new(),
            drawn: 0,
            dirty: false,
            finished: false,
        };
        (view, captured)
    }

    fn started(stage: &str, step: usize, steps: usize, text: &str) -> Event {
        Event::StepStarted {
            stage: stage.into(),
            step,
            steps,
            text: text.into(),
        }
    }

    fn output(stage: &str, step: usize, line: &str) -> Event {
        Event::StepOutput {
            stage: stage.into(),
            step,
            line: line.into(),
        }
    }

    fn done(stage: &str, step: usize, seconds: f64, layer_size: Option<u64>) -> Event {
        Event::StepDone {
            stage: stage.into(),
            step,
            seconds,
            layer_size,
        }
    }

    #[test]
    fn interleaved_stages_show_both_running_steps_with_their_last_lines() {
        let (mut view, out) = new_view(60, 40, false);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        view.event(
            &Event::BuildStarted {
                stages: vec!["a".into(), "b".into()],
            },
            at(0),
        );
        view.event(&started("a", 1, 2, "FROM busybox"), at(0));
        view.event(&done("a", 1, 0.04, None), at(40));
        view.event(&started("a", 2, 2, "RUN make"), at(50));
        view.event(&started("b", 2, 3, "RUN test"), at(60));
        for i in 1..=7 {
            view.event(&output("a", 2, &format!("a line {i}")), at(100 + i));
            view.event(&output("b", 2, &format!("b line {i}")), at(100 + i));
        }
        view.draw(&[], at(3250));
        assert_eq!(
            screen(&out.text(), 60),
            [
                "building stages: a, b",
                "[a 1/2] FROM busybox  DONE 0.0s",
                "[a 2/2] RUN make  3.2s",
                "  a line 3",
                "  a line 4",
                "  a line 5",
                "  a line 6",
                "  a line 7",
                "[b 2/3] RUN test  3.2s",
                "  b line 3",
                "  b line 4",
                "  b line 5",
                "  b line 6",
                "  b line 7",
            ]
        );

        // A finished step goes above the block for good, the other keeps running.
        view.event(&done("a", 2, 3.3, Some(12_345)), at(3300));
        view.event(&output("b", 2, "b line 8"), at(3400));
        view.tick(at(4000));
        assert_eq!(
            screen(&out.text(), 60),
            [
                "building stages: a, b",
                "[a 1/2] FROM busybox  DONE 0.0s",
                "[a 2/2] RUN make  DONE 3.3s (layer 12.3 kB)",
                "[b 2/3] RUN test  3.9s",
                "  b line 4",
                "  b line 5",
                "  b line 6",
                "  b line 7",
                "  b line 8",
            ]
        );

        // At the end the block is cleared and the summary printed as plain does.
        view.event(&done("b", 2, 4.0, None), at(4100));
        view.event(
            &Event::StepCached {
                stage: "b".into(),
                step: 3,
                layer_size: 10,
                source: "registry".into(),
            },
            at(4100),
        );
        view.event(
            &Event::BuildDone {
                image_id: "sha256:abc".into(),
                manifest: "sha256:def".into(),
                tags: vec!["app:1".into()],
                seconds: 4.2,
            },
            at(4200),
        );
        assert_eq!(
            screen(&out.text(), 60),
            [
                "building stages: a, b",
                "[a 1/2] FROM busybox  DONE 0.0s",
                "[a 2/2] RUN make  DONE 3.3s (layer 12.3 kB)",
                "[b 2/3] RUN test  DONE 4.0s",
                "[b 3]  CACHED (from the registry cache)",
                "writing image sha256:abc done (4.2s)",
                "naming to app:1 done",
            ]
        );
        let bytes = out.text().len();
        view.tick(at(5000));
        view.fail(at(5000));
        assert_eq!(out.text().len(), bytes, "nothing is drawn after the build");
    }

    #[test]
    fn the_block_moves_the_cursor_up_and_clears_lines() {
        let (mut view, out) = new_view(40, 20, false);
        let t0 = Instant::now();
        view.event(&started("s", 2, 2, "RUN x"), t0);
        view.event(&output("s", 2, "one"), t0);
        view.tick(t0 + TICK);
        let text = out.text();
        assert!(text.contains("\x1b[1A\r"), "{text:?}");
        assert!(text.contains("\x1b[2K"), "{text:?}");
        view.event(&done("s", 2, 0.1, None), t0 + TICK);
        // The two-line block became one permanent line: the rest is cleared.
        assert!(out.text().ends_with("\x1b[J"), "{:?}", out.text());
    }

    #[test]
    fn long_lines_are_cut_to_the_width_keeping_the_timer() {
        let (mut view, out) = new_view(30, 20, false);
        let t0 = Instant::now();
        view.event(
            &started("stage", 2, 2, &format!("RUN {}", "x".repeat(80))),
            t0,
        );
        view.event(&output("stage", 2, &"y".repeat(100)), t0);
        view.draw(&[], t0 + Duration::from_millis(1500));
        // `screen` panics on anything written past column 30.
        let rows = screen(&out.text(), 30);
        assert_eq!(
            rows,
            [
                "[stage 2/2] RUN xxxxxx…  1.5s",
                "  yyyyyyyyyyyyyyyyyyyyyyyyyy…"
            ]
        );
        assert!(rows.iter().all(|r| r.chars().count() < 30));
    }

    #[test]
    fn control_characters_from_a_command_are_escaped() {
        let (mut view, out) = new_view(80, 20, true);
        let t0 = Instant::now();
        view.event(&started("s", 2, 2, "RUN x"), t0);
        view.event(
            &output("s", 2, "red \x1b[31mtext\x1b[0m\x07 \x08\u{9b}2J"),
            t0,
        );
        view.event(&output("s", 2, "downloading 10%\rdownloading 100%\r"), t0);
        view.event(&output("s", 2, "a\tb"), t0);
        view.draw(&[], t0);
        // `screen` panics on a control character other than the view's own escapes.
        let rows = screen(&out.text(), 80);
        assert_eq!(
            &rows[1..],
            [
                "  red ^[[31mtext^[[0m^G ^H\\u{9b}2J",
                "  downloading 100%",
                "  a b"
            ]
        );
        // Colour is on here: the output lines are dimmed.
        assert!(out.text().contains(&format!("{DIM}  a b{RESET}")));
    }

    #[test]
    fn no_colour_means_no_sgr_escapes() {
        let (mut view, out) = new_view(80, 20, false);
        let t0 = Instant::now();
        view.event(&started("s", 2, 2, "RUN x"), t0);
        view.event(&output("s", 2, "hello"), t0);
        view.event(&done("s", 2, 0.5, Some(100)), t0);
        view.event(
            &Event::Warning {
                message: "careful".into(),
            },
            t0,
        );
        let text = out.text();
        for sgr in [RESET, DIM, GREEN, YELLOW] {
            assert!(!text.contains(sgr), "{text:?}");
        }
        assert_eq!(
            screen(&out.text(), 80),
            ["[s 2/2] RUN x  DONE 0.5s (layer 100 B)", "WARNING: careful"]
        );
    }

    #[test]
    fn a_failed_build_leaves_the_running_steps_and_their_last_lines() {
        let (mut view, out) = new_view(80, 20, false);
        let t0 = Instant::now();
        view.event(&started("s", 2, 3, "RUN ./configure && make"), t0);
        for i in 1..=12 {
            view.event(&output("s", 2, &format!("line {i}")), t0);
        }
        view.tick(t0 + Duration::from_secs(1));
        view.fail(t0 + Duration::from_secs(2));
        let mut expected =
            vec!["[s 2/3] RUN ./configure && make  did not finish (2.0s)".to_string()];
        expected.extend((3..=12).map(|i| format!("  line {i}")));
        assert_eq!(screen(&out.text(), 80), expected);
    }

    #[test]
    fn a_block_taller_than_the_terminal_is_shortened() {
        let (mut view, out) = new_view(40, 6, false);
        let t0 = Instant::now();
        for stage in ["a", "b", "c"] {
            view.event(&started(stage, 2, 2, "RUN x"), t0);
            for i in 0..5 {
                view.event(&output(stage, 2, &format!("{stage}{i}")), t0);
            }
        }
        view.draw(&[], t0);
        // Five rows to use: three headers and, in the two left, no room for a line each.
        assert_eq!(
            screen(&out.text(), 40),
            [
                "[a 2/2] RUN x  0.0s",
                "[b 2/2] RUN x  0.0s",
                "[c 2/2] RUN x  0.0s"
            ]
        );
        let (mut view, out) = new_view(40, 3, false);
        for stage in ["a", "b", "c"] {
            view.event(&started(stage, 2, 2, "RUN x"), t0);
        }
        assert_eq!(
            screen(&out.text(), 40),
            ["[a 2/2] RUN x  0.0s", "… and 2 more running"]
        );
    }

    #[test]
    fn the_ticker_redraws_timers_and_stops_on_drop() {
        let captured = Captured::default();
        let mut progress = TtyProgress::new(
            Box::new(captured.clone()),
            TerminalSize::Fixed {
                columns: 80,
                rows: 20,
            },
            false,
        );
        progress.event(&started("s", 2, 2, "RUN sleep 1"));
        let first = captured.text().len();
        std::thread::sleep(Duration::from_millis(450));
        let redraws = captured.text()[first..].matches("\x1b[1A").count();
        assert!(redraws >= 2, "the ticker redrew {redraws} times in 450 ms");

        // Lines from another thread go above the block.
        let printer = progress.printer();
        std::thread::spawn(move || printer.line("Pulled sha256:0123 1.0 kB"))
            .join()
            .unwrap();
        progress.event(&done("s", 2, 0.5, None));
        drop(progress);
        let after_drop = captured.text();
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(captured.text(), after_drop, "the ticker still draws");
        assert_eq!(
            screen(&after_drop, 80),
            [
                "Pulled sha256:0123 1.0 kB",
                "[s 2/2] RUN sleep 1  DONE 0.5s"
            ]
        );
    }

    #[test]
    fn sizes_are_decimal() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(12_345), "12.3 kB");
        assert_eq!(human_size(5_000_000), "5.0 MB");
    }
}
