//! Running the plan's stages: dependencies first, and stages that do not depend on each
//! other at the same time, one thread each, as many as the machine has cores. A stage's
//! own steps stay in order and each stage has its own rootfs, so stages share nothing but
//! the builder's locked state. Base images are resolved (pulled when missing) at the start,
//! beside the first stages, instead of when each stage reaches its FROM.
//!
//! Events of stages running at once reach the caller's `Progress` on the caller's thread,
//! in the order they happened (the progress writers need no locking of their own).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Mutex};

use rbuild_dockerfile::{Base, BuildPlan};

use crate::context::{lock, BuildContext};
use crate::error::{BuildError, Result};
use crate::progress::{Event, Progress};

/// What a thread the build starts takes from the build: its phase counters (read per
/// thread, see `phases`). Left when dropped. (How files are owned is not per thread: it is
/// the build's `owners`, handed to what writes files.)
struct BuildThread {
    _phases: crate::phases::BuildPhasesScope,
}

impl BuildThread {
    fn enter(builder: &BuildContext<'_>) -> Self {
        BuildThread {
            _phases: builder.phases.enter(),
        }
    }
}

/// What a stage thread tells the thread that called the build.
enum Message {
    Event(Event),
    Done(usize, Result<()>),
}

/// The `Progress` of a stage thread: events go to the calling thread.
struct Forward(mpsc::Sender<Message>);

impl Progress for Forward {
    fn event(&mut self, event: &Event) {
        let _ = self.0.send(Message::Event(event.clone()));
    }
}

/// Runs the stages of `plan` (all of `plan.order`).
pub(crate) fn run_stages(
    builder: &BuildContext<'_>,
    plan: &BuildPlan,
    progress: &mut dyn Progress,
) -> Result<()> {
    let threads = builder
        .request
        .max_parallel_stages
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    std::thread::scope(|scope| {
        let bases = base_images(builder, plan);
        if bases.len() > 1 || plan.order.len() > 1 {
            // The stages find their bases in the store when they get there. A failure
            // here is not reported: the stage that needs the image reports it, in place.
            for reference in bases {
                scope.spawn(move || {
                    let _build = BuildThread::enter(builder);
                    let _ = builder
                        .bases
                        .resolve(builder.store, &reference, &builder.platform);
                });
            }
        }
        for level in &plan.levels {
            if level.len() == 1 || threads == 1 {
                for &index in level {
                    builder.run_stage(index, progress)?;
                }
            } else {
                run_level(builder, level, threads, progress)?;
            }
        }
        Ok(())
    })
}

/// The distinct images the plan's stages start from (not `scratch`, not stages), a named
/// image context's included.
fn base_images(builder: &BuildContext<'_>, plan: &BuildPlan) -> BTreeSet<String> {
    plan.order
        .iter()
        .filter_map(|&i| match builder.df.stage_base(i, &builder.global) {
            Ok(Base::Image(reference)) => Some(reference),
            Ok(Base::Context(key)) => match builder.named(&key) {
                Ok(crate::NamedContext::Image(reference)) => Some(reference.clone()),
                _ => None,
            },
            _ => None,
        })
        .filter(|reference| !reference.eq_ignore_ascii_case("scratch"))
        .collect()
}

/// Runs the independent stages of one level on up to `threads` threads. When one fails,
/// the others stop before their next step, and the error of the first failing stage (in
/// the plan's order) is the build's.
fn run_level(
    builder: &BuildContext<'_>,
    level: &[usize],
    threads: usize,
    progress: &mut dyn Progress,
) -> Result<()> {
    let queue = Mutex::new(level.iter().copied().collect::<VecDeque<usize>>());
    let mut errors = BTreeMap::new();
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        for _ in 0..threads.min(level.len()) {
            let tx = tx.clone();
            let queue = &queue;
            scope.spawn(move || {
                let _build = BuildThread::enter(builder);
                loop {
                    // (A `while let` would hold the queue's lock for the whole stage.)
                    let next = lock(queue).pop_front();
                    let Some(index) = next else { break };
                    let result = builder.run_stage(index, &mut Forward(tx.clone()));
                    if result.is_err() {
                        builder.shared.cancelled.store(true, Ordering::SeqCst);
                    }
                    let _ = tx.send(Message::Done(index, result));
                }
            });
        }
        drop(tx);
        for message in rx {
            match message {
                Message::Event(event) => progress.event(&event),
                Message::Done(index, Err(e)) => {
                    errors.insert(index, e);
                }
                Message::Done(_, Ok(())) => {}
            }
        }
    });
    // A stage stopped because another failed only says so; the failure itself is the
    // error to show.
    let first = errors
        .iter()
        .find(|(_, e)| !matches!(e, BuildError::Cancelled))
        .map(|(&i, _)| i)
        .or_else(|| errors.keys().next().copied());
    match first.and_then(|i| errors.remove(&i)) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
