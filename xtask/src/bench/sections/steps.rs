//! The per-step overhead (RUN true × N against none) and the snapshot comparison.

use std::fs;
use std::process::Command;

use anyhow::Result;

use super::{announce, cold_plans, phase_notes};
use crate::bench::plan::{per_step, run_row, Plan};
use crate::bench::report::{self, Section};
use crate::bench::tools::{remove_tree, Builder, Cache, Op};
use crate::bench::workloads;
use crate::bench::{fresh_dir, Bench};

pub(super) fn step_overhead(b: &Bench) -> Result<Option<Section>> {
    if !b.opts.selected("step-overhead") {
        return Ok(None);
    }
    let n = b.scale.overhead_steps;
    let root = b
        .rbuild
        .rbuild_root()
        .expect("rbuild has a store")
        .to_path_buf();
    let mut tools = vec![
        Builder::rbuild_isolated(b.rbuild_bin.clone(), root.clone(), "userns"),
        Builder::rbuild_isolated(b.rbuild_bin.clone(), root, "chroot"),
    ];
    tools.extend(b.peers.iter().cloned());
    let mut rows = Vec::new();
    for (ctx, warm_up) in [
        (workloads::run_true(0), true),
        (workloads::run_true(n), false),
    ] {
        announce(ctx.name, &ctx.what);
        let dir = b.context(&ctx)?;
        let plans = cold_plans(b, &ctx, &dir, &tools, warm_up);
        rows.push(run_row(ctx.name, &ctx.what, plans, b.opts.runs, &b.logs));
    }
    let derived = per_step(
        "per RUN step",
        &format!("(time of {n} × RUN true − time without them) / {n}"),
        &rows[1],
        &rows[0],
        n,
    );
    rows.push(derived);
    Ok(Some(Section {
        notes: phase_notes(b, &rows),
        title: "Per-step overhead".into(),
        intro: format!(
            "Cold builds of `FROM busybox` + `ENV` with and without {n} `RUN true` steps; the \
             last row is the difference per step: what starting a step's sandbox, running \
             nothing, snapshotting the empty diff and committing it costs. rbuild runs once \
             with user namespaces (`--isolation userns`) and once with the chroot fallback \
             (`--isolation chroot`); the ratios compare the userns column."
        ),
        rows,
    }))
}

pub(super) fn snapshot(b: &Bench) -> Result<Option<Section>> {
    if !b.opts.selected("snapshot") {
        return Ok(None);
    }
    let files = b.scale.large_diff_files;
    let ctx = workloads::snapshot(files);
    announce(ctx.name, &ctx.what);
    let dir = b.context(&ctx)?;
    let root = b
        .rbuild
        .rbuild_root()
        .expect("rbuild has a store")
        .to_path_buf();
    // The base is pulled untimed; the rows time the step.
    let from = b.services.base(ctx.base, &b.work)?;
    let _ = crate::bench::measure::run(
        vec![b.rbuild.pull(&from)],
        &b.logs.join("snapshot-base-pull.log"),
    )?;
    // The same changes, made once on the host, for tar | gzip and tar | pigz.
    let changes = fresh_dir(&b.work.join("trees/snapshot-changes"))?;
    let status = Command::new("sh")
        .arg("-c")
        .arg(workloads::snapshot_script(
            &changes.display().to_string(),
            files,
        ))
        .status()?;
    anyhow::ensure!(status.success(), "writing the snapshot changes failed");
    let out = b.work.join("layer-out");
    fs::create_dir_all(&out)?;
    let mut plans: Vec<Plan> = ["userns", "chroot"]
        .into_iter()
        .map(|isolation| {
            let t = Builder::rbuild_isolated(b.rbuild_bin.clone(), root.clone(), isolation);
            let (dir, tag) = (dir.clone(), b.tag(ctx.name, &t.name));
            Plan::for_builder(&t.clone(), Op::Build, move |_| {
                Ok(t.build(&dir, &tag, Cache::Off))
            })
        })
        .collect();
    for compressor in ["gzip", "pigz"] {
        let pipeline = format!(
            "tar -C '{}' -cf - data | {compressor} -6 > '{}'",
            changes.display(),
            out.join(format!("changes.{compressor}")).display()
        );
        plans.push(Plan::new(&format!("tar+{compressor}"), move |_| {
            let mut c = Command::new("sh");
            c.args(["-c", &pipeline]);
            Ok(vec![c])
        }));
    }
    let row = run_row(ctx.name, &ctx.what, plans, b.opts.heavy_runs, &b.logs);
    let notes = ["rbuild-userns", "rbuild-chroot"]
        .iter()
        .map(|tool| {
            let runs = row.cell(tool).map(|c| c.samples.len()).unwrap_or(0);
            let log = b
                .logs
                .join(format!("snapshot-{tool}-{}.log", runs.saturating_sub(1)));
            let text = fs::read_to_string(log).unwrap_or_default();
            format!("{tool}'s steps: {}", report::rbuild_step_times(&text))
        })
        .collect();
    let _ = remove_tree(&changes);
    crate::bench::settle_freed_inodes(b)?;
    Ok(Some(Section {
        title: "Snapshots".into(),
        intro: "A cold build whose one RUN writes the files on top of Debian bookworm \
                (minbase), with user namespaces (`--isolation userns`: overlay snapshot, the \
                upper directory is the diff) and with the chroot fallback (walk snapshot: \
                compare a private copy of the rootfs). Against them, `tar | gzip -6` and \
                `tar | pigz -6` of just those changes, made beforehand on the host: the \
                issue's bar is a whole rbuild step (run the command, find the changes, \
                write the layer) under the time of tar | gzip alone. The notes give the \
                RUN step's own time from rbuild's output, and its time per phase (run, \
                snapshot, write)."
            .into(),
        rows: vec![row],
        notes,
    }))
}
