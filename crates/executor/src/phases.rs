//! Where a build's time goes, by phase: pull, extract, run, snapshot, write, push and cache.
//!
//! Counters (nanoseconds and a count per phase) that steps running on several threads at
//! once all add to; a phase's time is wall time summed over the threads that were in it,
//! and can exceed the build's own wall time. A call site times itself with one line,
//! `let _t = Phase::Extract.timer();`, which adds the elapsed time when dropped.
//!
//! Each build has its own counters ([`BuildPhases`]): the build enters them on every
//! thread it runs on ([`BuildPhases::enter`]), and a timer adds to the counters of the
//! build its thread is in, so two builds in one process do not count each other's time.
//! Every timer also adds to the process-wide counters ([`snapshot`]), which a caller timing
//! more than a build (the CLI: its push too) reads before and after.
//!
//! On one thread the innermost timer wins: starting a timer pauses the one already running
//! on that thread until the new one is dropped, so a pull that happens while a cache key is
//! computed counts as pull, not as both. [`snapshot`] reads the counters; the difference of
//! two snapshots ([`PhaseTimes::since`]) is what happened in between.
//!
//! `compress` is part of `write`: the time the layer writer waited on its compressor
//! (`rbuild_layer::compress_time`), so `write` minus `compress` is tar, hashing and storing.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// A part of a build that [`PhaseTimes`] reports on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Base and `--from` image pulls, and layers fetched from a registry cache.
    Pull,
    /// Applying layers onto a root filesystem.
    Extract,
    /// The sandbox running a RUN command.
    Run,
    /// Finding what a step changed (overlay upper directory or a walk of the rootfs).
    Snapshot,
    /// Writing a layer: tar, compress, hash and store.
    Write,
    /// `--push` and `-o type=registry`.
    Push,
    /// Cache lookups and hashing step inputs (context files) for cache keys.
    Cache,
}

const PHASES: usize = 7;

impl Phase {
    /// Every phase, in the order the summary shows them.
    pub const ALL: [Phase; PHASES] = [
        Phase::Pull,
        Phase::Extract,
        Phase::Run,
        Phase::Snapshot,
        Phase::Write,
        Phase::Push,
        Phase::Cache,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Pull => "pull",
            Phase::Extract => "extract",
            Phase::Run => "run",
            Phase::Snapshot => "snapshot",
            Phase::Write => "write",
            Phase::Push => "push",
            Phase::Cache => "cache",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Starts timing this phase on this thread until the guard is dropped.
    #[must_use = "the phase is timed until the guard is dropped"]
    pub fn timer(self) -> PhaseTimer {
        let now = Instant::now();
        let build = current_build();
        let _ = ACTIVE.try_with(|active| {
            let mut active = active.borrow_mut();
            // Pause the enclosing phase: this one's time is not also its time.
            if let Some(outer) = active.last_mut() {
                add(
                    outer.phase,
                    now.saturating_duration_since(outer.since),
                    0,
                    outer.build.as_deref(),
                );
                outer.since = now;
            }
            active.push(Running {
                phase: self,
                since: now,
                build,
            });
        });
        PhaseTimer {
            phase: self,
            _this_thread: PhantomData,
        }
    }
}

/// Runs `f` as `phase`: for timing one expression where a guard would time too much.
pub fn timed<T>(phase: Phase, f: impl FnOnce() -> T) -> T {
    let _t = phase.timer();
    f()
}

/// Nanoseconds and timed spans per phase.
struct Counters {
    nanos: [AtomicU64; PHASES],
    counts: [AtomicU64; PHASES],
}

impl Counters {
    const fn new() -> Self {
        Counters {
            nanos: [const { AtomicU64::new(0) }; PHASES],
            counts: [const { AtomicU64::new(0) }; PHASES],
        }
    }

    fn add(&self, phase: Phase, nanos: u64, count: u64) {
        self.nanos[phase.index()].fetch_add(nanos, Ordering::Relaxed);
        self.counts[phase.index()].fetch_add(count, Ordering::Relaxed);
    }

    /// The counters as times (`compress` left at zero).
    fn read(&self) -> PhaseTimes {
        let mut out = PhaseTimes::default();
        for phase in Phase::ALL {
            let i = phase.index();
            *out.get_mut(phase) = PhaseTime::of(
                self.nanos[i].load(Ordering::Relaxed),
                self.counts[i].load(Ordering::Relaxed),
            );
        }
        out
    }
}

/// Every timer of the process.
static PROCESS: Counters = Counters::new();

/// One build's phase counters. The build enters them on each thread it runs on; timers
/// started there add to them (and to the process's).
#[derive(Clone)]
pub struct BuildPhases {
    counters: Arc<Counters>,
    /// The process's compression time when the build started.
    compress_start: PhaseTime,
}

impl Default for BuildPhases {
    fn default() -> Self {
        BuildPhases {
            counters: Arc::new(Counters::new()),
            compress_start: compress_now(),
        }
    }
}

impl BuildPhases {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes timers started on this thread count for this build until the guard drops
    /// (the thread's previous build, if any, is restored then).
    #[must_use = "the build's counters are entered until the guard is dropped"]
    pub fn enter(&self) -> BuildPhasesScope {
        let previous = BUILD.with(|b| b.replace(Some(self.counters.clone())));
        BuildPhasesScope {
            previous,
            _this_thread: PhantomData,
        }
    }

    /// This build's time per phase so far. `compress` is the process's layer writers'
    /// since the build started (`rbuild_layer::compress_time` is process-wide).
    pub fn times(&self) -> PhaseTimes {
        let mut out = self.counters.read();
        out.compress = compress_now().minus(self.compress_start);
        out
    }
}

/// While alive, this thread's timers count for a build (see [`BuildPhases::enter`]).
pub struct BuildPhasesScope {
    previous: Option<Arc<Counters>>,
    _this_thread: PhantomData<*const ()>,
}

impl Drop for BuildPhasesScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        let _ = BUILD.try_with(|b| b.replace(previous));
    }
}

/// A timer running on this thread.
struct Running {
    phase: Phase,
    /// When it last resumed.
    since: Instant,
    /// The build it counts for, as entered on this thread when it started.
    build: Option<Arc<Counters>>,
}

thread_local! {
    /// The timers running on this thread, innermost last.
    static ACTIVE: RefCell<Vec<Running>> = const { RefCell::new(Vec::new()) };
    /// The build this thread works for.
    static BUILD: RefCell<Option<Arc<Counters>>> = const { RefCell::new(None) };
}

fn current_build() -> Option<Arc<Counters>> {
    BUILD.try_with(|b| b.borrow().clone()).ok().flatten()
}

fn add(phase: Phase, elapsed: Duration, count: u64, build: Option<&Counters>) {
    let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    PROCESS.add(phase, nanos, count);
    if let Some(build) = build {
        build.add(phase, nanos, count);
    }
}

/// The process's layer writers' compression time and layer count now.
fn compress_now() -> PhaseTime {
    let (compress, layers) = rbuild_layer::compress_time();
    PhaseTime::of(
        u64::try_from(compress.as_nanos()).unwrap_or(u64::MAX),
        layers,
    )
}

/// Times a phase until dropped (see [`Phase::timer`]). Bound to the thread that started it,
/// since pausing and resuming are per thread.
pub struct PhaseTimer {
    phase: Phase,
    _this_thread: PhantomData<*const ()>,
}

impl Drop for PhaseTimer {
    fn drop(&mut self) {
        let now = Instant::now();
        let phase = self.phase;
        let _ = ACTIVE.try_with(|active| {
            let mut active = active.borrow_mut();
            let Some(i) = active.iter().rposition(|r| r.phase == phase) else {
                return;
            };
            let innermost = i + 1 == active.len();
            let running = active.remove(i);
            // A timer inside one of its own phase is the same span: count it once.
            let count = u64::from(i == 0 || active[i - 1].phase != phase);
            let build = running.build.as_deref();
            if innermost {
                add(
                    phase,
                    now.saturating_duration_since(running.since),
                    count,
                    build,
                );
                if let Some(outer) = active.last_mut() {
                    outer.since = now;
                }
            } else {
                // Dropped out of order: it was paused by the timers above it since `since`.
                add(phase, Duration::ZERO, count, build);
            }
        });
    }
}

/// The time spent in one phase and how many timed spans it had.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PhaseTime {
    pub seconds: f64,
    pub count: u64,
}

impl PhaseTime {
    fn of(nanos: u64, count: u64) -> PhaseTime {
        PhaseTime {
            seconds: nanos as f64 / 1e9,
            count,
        }
    }

    fn minus(self, earlier: PhaseTime) -> PhaseTime {
        PhaseTime {
            seconds: (self.seconds - earlier.seconds).max(0.0),
            count: self.count.saturating_sub(earlier.count),
        }
    }
}

/// Time per phase: wall time summed over threads (see the module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PhaseTimes {
    pub pull: PhaseTime,
    pub extract: PhaseTime,
    pub run: PhaseTime,
    pub snapshot: PhaseTime,
    pub write: PhaseTime,
    /// Part of `write`: the layer writer waiting on its compressor.
    pub compress: PhaseTime,
    pub push: PhaseTime,
    pub cache: PhaseTime,
}

impl PhaseTimes {
    pub fn get(&self, phase: Phase) -> PhaseTime {
        match phase {
            Phase::Pull => self.pull,
            Phase::Extract => self.extract,
            Phase::Run => self.run,
            Phase::Snapshot => self.snapshot,
            Phase::Write => self.write,
            Phase::Push => self.push,
            Phase::Cache => self.cache,
        }
    }

    fn get_mut(&mut self, phase: Phase) -> &mut PhaseTime {
        match phase {
            Phase::Pull => &mut self.pull,
            Phase::Extract => &mut self.extract,
            Phase::Run => &mut self.run,
            Phase::Snapshot => &mut self.snapshot,
            Phase::Write => &mut self.write,
            Phase::Push => &mut self.push,
            Phase::Cache => &mut self.cache,
        }
    }

    /// What was added between `earlier` and `self`.
    pub fn since(&self, earlier: &PhaseTimes) -> PhaseTimes {
        let mut out = PhaseTimes::default();
        for phase in Phase::ALL {
            *out.get_mut(phase) = self.get(phase).minus(earlier.get(phase));
        }
        out.compress = self.compress.minus(earlier.compress);
        out
    }
}

/// The summary line's text (after `phases: `):
/// `pull 0.00s, extract 1.20s, run 3.40s, snapshot 0.30s, write 2.10s (compress 1.50s),
/// push 0.00s, cache 0.01s`.
impl fmt::Display for PhaseTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, phase) in Phase::ALL.into_iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} {:.2}s", phase.name(), self.get(phase).seconds)?;
            if phase == Phase::Write {
                write!(f, " (compress {:.2}s)", self.compress.seconds)?;
            }
        }
        Ok(())
    }
}

/// The process's counters now: every build's timers, and those run outside any build.
pub fn snapshot() -> PhaseTimes {
    let mut out = PROCESS.read();
    out.compress = compress_now();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // The counters are process-wide: these tests time `push`, which nothing else in this
    // test binary does, one test at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sleep_ms(ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }

    #[test]
    fn a_guard_adds_its_time_and_one_count_when_dropped() {
        let _serial = serial();
        let before = snapshot();
        {
            let _t = Phase::Push.timer();
            sleep_ms(30);
            assert_eq!(
                snapshot().since(&before).push.count,
                0,
                "added only on drop"
            );
        }
        let spent = snapshot().since(&before).push;
        assert!(spent.seconds >= 0.030, "{spent:?}");
        assert!(spent.seconds < 5.0, "{spent:?}");
        assert_eq!(spent.count, 1);
    }

    #[test]
    fn the_innermost_timer_wins_and_nested_same_phase_counts_once() {
        let _serial = serial();
        let handle = std::thread::spawn(|| {
            let before = snapshot();
            let started = Instant::now();
            {
                let _outer = Phase::Push.timer();
                sleep_ms(20);
                {
                    let _inner = Phase::Pull.timer();
                    sleep_ms(60);
                }
                {
                    let _again = Phase::Push.timer();
                    sleep_ms(20);
                }
                sleep_ms(20);
            }
            let wall = started.elapsed().as_secs_f64();
            (snapshot().since(&before), wall)
        });
        let (spent, wall) = handle.join().unwrap();
        // Push ran 60 ms of its own; the 60 ms of pull inside it are not push's.
        assert!(spent.push.seconds >= 0.060, "{spent:?}");
        assert!(spent.push.seconds <= wall - 0.060, "{spent:?} wall {wall}");
        assert_eq!(spent.push.count, 1, "{spent:?}");
        assert!(spent.pull.seconds >= 0.060, "{spent:?}");
    }

    #[test]
    fn threads_add_up() {
        let _serial = serial();
        let before = snapshot();
        let workers: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(|| {
                    let _t = Phase::Push.timer();
                    sleep_ms(40);
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let spent = snapshot().since(&before).push;
        assert!(spent.seconds >= 0.120, "summed over threads: {spent:?}");
        assert!(spent.count >= 3, "{spent:?}");
    }

    #[test]
    fn timed_returns_the_value_and_times_it() {
        let _serial = serial();
        let before = snapshot();
        let v = timed(Phase::Push, || {
            sleep_ms(10);
            7
        });
        assert_eq!(v, 7);
        assert!(snapshot().since(&before).push.seconds >= 0.010);
    }

    #[test]
    fn builds_at_once_each_count_only_their_own_time() {
        let _serial = serial();
        let (a, b) = (BuildPhases::new(), BuildPhases::new());
        let before = snapshot();
        std::thread::scope(|scope| {
            for (build, ms) in [(&a, 20), (&b, 200)] {
                scope.spawn(move || {
                    let _build = build.enter();
                    // A thread the build starts enters it too.
                    std::thread::scope(|inner| {
                        inner.spawn(|| {
                            let _build = build.enter();
                            let _t = Phase::Push.timer();
                            sleep_ms(ms);
                        });
                    });
                    let _t = Phase::Push.timer();
                    sleep_ms(ms);
                });
            }
            // Outside both builds: the process counts it, neither build does.
            let _t = Phase::Pull.timer();
            sleep_ms(20);
        });
        let (a, b) = (a.times().push, b.times().push);
        assert_eq!((a.count, b.count), (2, 2));
        // Each build's two timers; a's would be at least 0.44 s with b's time in it.
        assert!(a.seconds >= 0.040 && a.seconds < 0.400, "{a:?}");
        assert!(b.seconds >= 0.400, "{b:?}");
        let process = snapshot().since(&before);
        assert!(
            process.push.seconds >= a.seconds + b.seconds - 1e-9,
            "{process:?}"
        );
        assert!(process.pull.seconds >= 0.020, "{process:?}");
    }

    #[test]
    fn leaving_a_build_restores_the_thread_to_the_one_before() {
        let _serial = serial();
        let (outer, inner) = (BuildPhases::new(), BuildPhases::new());
        let _outer = outer.enter();
        {
            let _inner = inner.enter();
            let _t = Phase::Push.timer();
        }
        {
            let _t = Phase::Push.timer();
        }
        assert_eq!(outer.times().push.count, 1);
        assert_eq!(inner.times().push.count, 1);
    }

    #[test]
    fn summary_line_and_json() {
        let mut t = PhaseTimes::default();
        t.pull.seconds = 0.004;
        t.extract.seconds = 1.2;
        t.run = PhaseTime {
            seconds: 3.456,
            count: 2,
        };
        t.snapshot.seconds = 0.3;
        t.write.seconds = 2.1;
        t.compress.seconds = 1.5;
        t.cache.seconds = 0.01;
        assert_eq!(
            t.to_string(),
            "pull 0.00s, extract 1.20s, run 3.46s, snapshot 0.30s, write 2.10s \
             (compress 1.50s), push 0.00s, cache 0.01s"
        );
        let json = serde_json::to_value(t).unwrap();
        assert_eq!(json["run"]["seconds"], 3.456);
        assert_eq!(json["run"]["count"], 2);
        assert_eq!(json["compress"]["seconds"], 1.5);
        let later = PhaseTimes {
            run: PhaseTime {
                seconds: 4.0,
                count: 5,
            },
            ..t
        };
        let diff = later.since(&t);
        assert!((diff.run.seconds - 0.544).abs() < 1e-9, "{diff:?}");
        assert_eq!(diff.run.count, 3);
        assert_eq!(diff.write, PhaseTime::default());
    }
}
