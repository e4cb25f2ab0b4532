//! Running one row of a table: each tool's priming step once, then the timed runs with the
//! tools alternating (A B C A B C ...), so that the machine's drift cancels out in the
//! per-pair ratios.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use super::measure::{self, Sample};
use super::tools::{Builder, Op};

type Commands<'a> = Box<dyn FnMut(usize) -> Result<Vec<Command>> + 'a>;
type Prepare<'a> = Box<dyn FnMut(usize) -> Result<()> + 'a>;

/// How one tool runs one row.
pub struct Plan<'a> {
    pub tool: String,
    /// Run once before the timed runs: a warm-up, the build that fills a cache, the image
    /// to push.
    pub prime: Vec<Command>,
    /// When priming fails, report its error instead of timing: a cache that could not be
    /// exported cannot be imported, and timing the fallback would be a fake number.
    pub prime_must_succeed: bool,
    /// Untimed preparation before timed run `i` (empty a store, change a file, ...).
    pub before: Prepare<'a>,
    /// The commands timed in run `i`.
    pub timed: Commands<'a>,
    /// Counts the cached steps of each timed run's log with this builder's conventions.
    pub count_cached: Option<Builder>,
    /// Why this tool does not run the row at all (a skipped peer, an operation it lacks).
    pub skip: Option<String>,
}

impl<'a> Plan<'a> {
    pub fn new(tool: &str, timed: impl FnMut(usize) -> Result<Vec<Command>> + 'a) -> Plan<'a> {
        Plan {
            tool: tool.to_string(),
            prime: Vec::new(),
            prime_must_succeed: false,
            before: Box::new(|_| Ok(())),
            timed: Box::new(timed),
            count_cached: None,
            skip: None,
        }
    }

    /// The plan of builder `b` doing `op`: not run, saying why, if `b` cannot do it.
    pub fn for_builder(
        b: &Builder,
        op: Op,
        timed: impl FnMut(usize) -> Result<Vec<Command>> + 'a,
    ) -> Plan<'a> {
        let mut plan = Plan::new(&b.name, timed);
        plan.skip = b.cannot(op);
        plan
    }

    pub fn prime(mut self, cmds: Vec<Command>, must_succeed: bool) -> Self {
        self.prime = cmds;
        self.prime_must_succeed = must_succeed;
        self
    }

    pub fn before(mut self, f: impl FnMut(usize) -> Result<()> + 'a) -> Self {
        self.before = Box::new(f);
        self
    }

    pub fn counting_cached(mut self, b: &Builder) -> Self {
        self.count_cached = Some(b.clone());
        self
    }
}

/// One tool's results in a row.
#[derive(Debug, Clone)]
pub struct Cell {
    pub tool: String,
    pub samples: Vec<Sample>,
    /// Why the tool could not run this row at all.
    pub unsupported: Option<String>,
}

/// One line of a table.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub what: String,
    pub cells: Vec<Cell>,
    /// Steps a fully cached build answers from the cache (shown as "k/n cached").
    pub cacheable_steps: Option<usize>,
    /// Bytes processed, for a throughput figure.
    pub bytes: Option<u64>,
    /// Show times in milliseconds.
    pub millis: bool,
}

impl Row {
    pub fn cell(&self, tool: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.tool == tool)
    }
}

/// Untimed, before each timed run: writes back what earlier commands left dirty (the
/// previous tool's layers, a limit root just copied, files the harness wrote), so that its
/// writeback is not timed as part of the next tool's run. It does not undo freed inodes:
/// see "The rows behind" in docs/benchmarks.md for why the harness removes no large tree
/// between the runs of a section.
fn settle_writeback() -> anyhow::Result<()> {
    let status = std::process::Command::new("sync")
        .status()
        .map_err(|e| anyhow::anyhow!("running sync before a timed run: {e}"))?;
    anyhow::ensure!(status.success(), "sync before a timed run failed: {status}");
    Ok(())
}

/// Runs `plans` (priming, then `runs` alternating timed runs) and collects a row.
pub fn run_row(name: &str, what: &str, mut plans: Vec<Plan>, runs: usize, logs: &Path) -> Row {
    let log = |tool: &str, run: &str| logs.join(format!("{name}-{tool}-{run}.log"));
    let mut cells: Vec<Cell> = plans
        .iter()
        .map(|p| Cell {
            tool: p.tool.clone(),
            samples: Vec::new(),
            unsupported: None,
        })
        .collect();
    for (plan, cell) in plans.iter_mut().zip(&mut cells) {
        if let Some(why) = &plan.skip {
            cell.unsupported = Some(why.clone());
            continue;
        }
        if plan.prime.is_empty() {
            continue;
        }
        let cmds = std::mem::take(&mut plan.prime);
        let s = measure::run(cmds, &log(&plan.tool, "prime"));
        let error = match s {
            Ok(s) => s.error,
            Err(e) => Some(format!("failed: {e:#}")),
        };
        if let Some(e) = error {
            eprintln!("    {:<16} prime: {e}", plan.tool);
            if plan.prime_must_succeed {
                cell.unsupported = Some(e);
            }
        }
    }
    for run in 0..runs {
        for (plan, cell) in plans.iter_mut().zip(&mut cells) {
            if cell.unsupported.is_some() {
                continue;
            }
            let path = log(&plan.tool, &run.to_string());
            let sample = (plan.before)(run)
                .and_then(|()| settle_writeback())
                .and_then(|()| (plan.timed)(run))
                .and_then(|cmds| measure::run(cmds, &path));
            let mut sample = sample.unwrap_or_else(|e| Sample {
                error: Some(format!("failed: {e:#}")),
                ..Sample::default()
            });
            if let Some(b) = &plan.count_cached {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                sample.cached = Some(b.cached_steps(&text));
            }
            eprintln!(
                "    {:<16} run {run}: {:>8.3}s {}{}",
                plan.tool,
                sample.wall.as_secs_f64(),
                sample
                    .cached
                    .map(|k| format!("({k} cached) "))
                    .unwrap_or_default(),
                sample.error.as_deref().unwrap_or("")
            );
            cell.samples.push(sample);
        }
    }
    Row {
        name: name.to_string(),
        what: what.to_string(),
        cells,
        cacheable_steps: None,
        bytes: None,
        millis: false,
    }
}

/// The per-step cost from a row of `n`-step builds and a row of the same builds without
/// those steps: per tool and per run, (with − without) / n.
pub fn per_step(name: &str, what: &str, with: &Row, without: &Row, n: usize) -> Row {
    let cells = with
        .cells
        .iter()
        .map(|c| {
            let base = without.cell(&c.tool);
            let samples = c
                .samples
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let b = base.and_then(|b| b.samples.get(i));
                    match b {
                        Some(b) if s.error.is_none() && b.error.is_none() => Sample {
                            wall: s.wall.saturating_sub(b.wall) / n.max(1) as u32,
                            max_rss_kib: s.max_rss_kib,
                            error: None,
                            cached: None,
                            parts: Vec::new(),
                        },
                        _ => Sample {
                            error: s
                                .error
                                .clone()
                                .or_else(|| b.and_then(|b| b.error.clone()))
                                .or_else(|| Some("failed: no baseline run".into())),
                            ..Sample::default()
                        },
                    }
                })
                .collect();
            Cell {
                tool: c.tool.clone(),
                samples,
                unsupported: c
                    .unsupported
                    .clone()
                    .or_else(|| base.and_then(|b| b.unsupported.clone())),
            }
        })
        .collect();
    Row {
        name: name.to_string(),
        what: what.to_string(),
        cells,
        cacheable_steps: None,
        bytes: None,
        millis: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sh(script: &str) -> Vec<Command> {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        vec![c]
    }

    #[test]
    fn a_failed_prime_that_must_succeed_makes_the_cell_unsupported_and_untimed() {
        let dir = tempfile::tempdir().unwrap();
        let mut timed_runs = 0;
        let plans = vec![
            Plan::new("a", |_| Ok(sh("true"))),
            Plan::new("b", |_| {
                timed_runs += 1;
                Ok(sh("true"))
            })
            .prime(
                sh("echo 'error: unexpected argument --cache-to'; exit 2"),
                true,
            ),
        ];
        let row = run_row("r", "w", plans, 2, dir.path());
        assert_eq!(row.cells[0].samples.len(), 2);
        assert!(row.cells[1].samples.is_empty());
        assert_eq!(
            row.cells[1].unsupported.as_deref(),
            Some("failed: error: unexpected argument --cache-to")
        );
        assert_eq!(timed_runs, 0);
    }

    #[test]
    fn a_skipped_tool_is_neither_primed_nor_timed_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let skipped = Builder::skipped("kaniko", "kaniko/executor.xz is missing".into());
        let mut timed_runs = 0;
        let plans = vec![
            Plan::new("a", |_| Ok(sh("true"))),
            Plan::for_builder(&skipped, Op::Build, |_| {
                timed_runs += 1;
                Ok(sh("true"))
            })
            .prime(sh("touch primed"), false),
        ];
        let row = run_row("r", "w", plans, 2, dir.path());
        assert_eq!(row.cells[1].tool, "kaniko");
        assert!(row.cells[1].samples.is_empty());
        assert_eq!(
            row.cells[1].unsupported.as_deref(),
            Some("skipped: kaniko/executor.xz is missing")
        );
        assert_eq!(timed_runs, 0);
        assert!(!dir.path().join("r-kaniko-prime.log").exists());
    }

    #[test]
    fn runs_alternate_and_prepare_before_each() {
        let dir = tempfile::tempdir().unwrap();
        let order = std::cell::RefCell::new(Vec::new());
        let plans = vec![
            Plan::new("a", |i| {
                order.borrow_mut().push(format!("a{i}"));
                Ok(sh("true"))
            }),
            Plan::new("b", |i| {
                order.borrow_mut().push(format!("b{i}"));
                Ok(sh("true"))
            })
            .before(|i| {
                order.borrow_mut().push(format!("prep-b{i}"));
                Ok(())
            }),
        ];
        run_row("r", "w", plans, 2, dir.path());
        assert_eq!(
            order.into_inner(),
            ["a0", "prep-b0", "b0", "a1", "prep-b1", "b1"]
        );
    }

    #[test]
    fn per_step_subtracts_the_baseline_pair_by_pair() {
        let ok = |ms: u64| Sample {
            wall: Duration::from_millis(ms),
            ..Sample::default()
        };
        let row = |samples: Vec<Sample>| Row {
            name: "x".into(),
            what: "x".into(),
            cells: vec![Cell {
                tool: "t".into(),
                samples,
                unsupported: None,
            }],
            cacheable_steps: None,
            bytes: None,
            millis: false,
        };
        let with = row(vec![ok(1200), ok(1400)]);
        let without = row(vec![ok(200), ok(400)]);
        let r = per_step("p", "w", &with, &without, 10);
        let walls: Vec<_> = r.cells[0].samples.iter().map(|s| s.wall).collect();
        assert_eq!(
            walls,
            [Duration::from_millis(100), Duration::from_millis(100)]
        );
        assert!(r.millis);
    }
}
