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

mod text;
mod view;

use text::{cut, human_size, printable};
use view::View;

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

#[cfg(test)]
mod tests;
