//! The report's sections: which rows each has, and how every tool runs each row. Each
//! section is its own file; what they share (the tools of a row, contexts, cold-build
//! plans, rbuild's notes) is here.

mod cache;
mod cold;
mod layer_write;
mod registry;
mod steps;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use super::plan::{Plan, Row};
use super::report::{self, Section};
use super::tools::{Builder, Cache, Op};
use super::workloads::Context;
use super::{fresh_dir, Bench};

pub fn run_all(b: &Bench) -> Result<Vec<Section>> {
    let mut sections = Vec::new();
    let mut add = |s: Option<Section>| {
        if let Some(s) = s {
            sections.push(s);
        }
    };
    add(cold::cold_builds(b)?);
    add(steps::step_overhead(b)?);
    add(steps::snapshot(b)?);
    add(cache::cache(b)?);
    add(registry::registry(b)?);
    add(layer_write::layer_write(b)?);
    Ok(sections)
}

impl Bench<'_> {
    pub(super) fn builders(&self) -> Vec<Builder> {
        let mut all = vec![self.rbuild.clone()];
        all.extend(self.peers.iter().cloned());
        all
    }

    /// Writes `ctx` under the work directory, on its base image; returns the directory.
    pub(super) fn context(&self, ctx: &Context) -> Result<PathBuf> {
        let from = self.services.base(ctx.base, &self.work)?;
        let dir = fresh_dir(&self.work.join("contexts").join(ctx.name))?;
        (ctx.make)(&dir, &from)?;
        Ok(dir)
    }

    pub(super) fn tag(&self, ctx: &str, tool: &str) -> String {
        format!(
            "{}/bench/{ctx}-{tool}:latest",
            self.services.registry_addr()
        )
    }

    /// A private, empty store for `tool` (its contents are removed before each use).
    pub(super) fn empty_store(&self, tool: &Builder) -> Builder {
        tool.with_store(&self.work.join("stores/empty").join(&tool.name))
    }
}

pub(super) fn announce(name: &str, what: &str) {
    eprintln!("==> {name}: {what}");
}

/// Plans for a cold (`--no-cache`) build of `dir` by each of `tools`; with `warm_up`, one
/// untimed build first (which also brings the base image into each tool's store).
pub(super) fn cold_plans<'a>(
    b: &Bench,
    ctx: &Context,
    dir: &Path,
    tools: &[Builder],
    warm_up: bool,
) -> Vec<Plan<'a>> {
    let secrets = ctx.secrets;
    tools
        .iter()
        .map(|t| {
            let builder = t.clone();
            let (t, dir, tag) = (t.clone(), dir.to_path_buf(), b.tag(ctx.name, &t.name));
            let build = move || -> Result<Vec<Command>> {
                // A rootless builder's user may need its own copy of a secret file.
                let owned = t.readable_secrets(secrets)?;
                let secrets: Vec<(&str, &str)> = owned
                    .iter()
                    .map(|(i, s)| (i.as_str(), s.as_str()))
                    .collect();
                Ok(t.build_with_secrets(&dir, &tag, Cache::Off, &secrets))
            };
            let prime = if warm_up {
                build().unwrap_or_else(|e| vec![failing(&e)])
            } else {
                Vec::new()
            };
            Plan::for_builder(&builder, Op::Build, move |_| build()).prime(prime, false)
        })
        .collect()
}

/// A command that fails saying `e` (a priming step whose setup failed shows up in its log).
fn failing(e: &anyhow::Error) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", "echo \"error: $1\"; exit 1", "sh"])
        .arg(format!("{e:#}"));
    c
}

/// `ROW (TOOL): phases: …` for each rbuild cell of `rows`, from the `phases:` line of its
/// last timed run's log; rows without one (derived rows, failed runs) are left out.
pub(super) fn phase_notes(b: &Bench, rows: &[Row]) -> Vec<String> {
    let mut notes = Vec::new();
    for row in rows {
        for cell in row.cells.iter().filter(|c| c.tool.starts_with("rbuild")) {
            let last = cell.samples.len().saturating_sub(1);
            let log = b
                .logs
                .join(format!("{}-{}-{last}.log", row.name, cell.tool));
            let text = fs::read_to_string(log).unwrap_or_default();
            if let Some(phases) = report::rbuild_phases(&text) {
                notes.push(format!("{} ({}): {phases}", row.name, cell.tool));
            }
        }
    }
    notes
}
