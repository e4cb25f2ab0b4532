//! Cold builds: every tool builds each workload with its cache disabled.

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::Result;

use super::{announce, cold_plans};
use crate::bench::limit::LimitRun;
use crate::bench::plan::{run_row, Plan};
use crate::bench::pod_limit::{PodLimit, POD_LIMIT};
use crate::bench::report::{self, Section, LIMIT};
use crate::bench::services;
use crate::bench::tools::{self, remove_tree, restricted, Cache, EMPTY_STORE, RESTRICTED};
use crate::bench::workloads::{self, Context};
use crate::bench::Bench;

pub(super) fn cold_builds(b: &Bench) -> Result<Option<Section>> {
    let mut rows = Vec::new();
    let candidates: Vec<(Context, bool)> = vec![
        (workloads::tiny(), false),
        (workloads::large_diff(b.scale.large_diff_files), true),
        (workloads::steps("many-steps", 30), false),
        (workloads::multi_stage(), false),
        (workloads::toolchain(b.scale.toolchain_files), true),
        (workloads::large_layer(b.scale.large_layer_mb), true),
        (workloads::many_files(b.scale.many_files), true),
        (workloads::apt(), true),
        (workloads::pip(), true),
        (workloads::npm(), true),
    ];
    // Only the first build on each base is warmed up: it brings the base into the stores,
    // and the rows after it run on a machine already warm.
    let mut warm_bases = Vec::new();
    for (ctx, heavy) in candidates {
        if !b.opts.selected(ctx.name) {
            continue;
        }
        announce(ctx.name, &ctx.what);
        let dir = b.context(&ctx)?;
        let runs = if heavy {
            b.opts.heavy_runs
        } else {
            b.opts.runs
        };
        let warm_up = !warm_bases.contains(&ctx.base);
        warm_bases.push(ctx.base);
        let mut plans = cold_plans(b, &ctx, &dir, &b.builders(), warm_up);
        let pod_runs = b.peers.iter().any(|p| p.name == RESTRICTED);
        if pod_runs {
            // Beside rbuild's own column, so the tools still alternate run by run.
            plans.insert(1, empty_store_plan(b, &ctx, &dir));
        }
        if let Some(limit) = &ctx.limit {
            let run = Rc::new(RefCell::new(LimitRun::new(
                &b.work.join("limit").join(ctx.name),
                &services::base_rootfs(ctx.base, &b.work),
                &dir,
                limit,
                ctx.secrets,
                &b.work.join("limit-trash"),
            )?));
            // The restricted pod's floor: the same steps in a plain container of the base.
            let pod_limit = if pod_runs {
                Some(Rc::new(PodLimit::new(
                    &run.borrow(),
                    Path::new(tools::DEBIAN_DOCKER),
                    &b.services.docker_host(),
                    &b.services.base(ctx.base, &b.work)?,
                    ctx.secrets,
                )))
            } else {
                None
            };
            let prepare = run.clone();
            plans.push(
                Plan::new(LIMIT, move |_| Ok(vec![run.borrow().command()]))
                    .before(move |_| prepare.borrow_mut().prepare()),
            );
            if let Some(pod_limit) = pod_limit {
                let prepare = pod_limit.clone();
                plans.push(
                    Plan::new(POD_LIMIT, move |_| Ok(pod_limit.commands()))
                        .before(move |_| prepare.prepare()),
                );
            }
        }
        rows.push(run_row(ctx.name, &ctx.what, plans, runs, &b.logs));
    }
    // The limit's roots of every row, removed once the section is done, not between rows:
    // on ext4 without a journal, inodes freed in the last minute (six while their inode
    // table block is unwritten) are skipped one by one by every file created in their
    // block group, so removing a row's roots just before the next row's first timed run
    // (rbuild's) made that run up to 4x slower (docs/benchmarks.md, "The rows behind").
    remove_tree(&b.work.join("limit-trash"))?;
    remove_tree(&b.work.join("limit"))?;
    remove_tree(&b.work.join(EMPTY_STORE_TRASH))?;
    remove_tree(&empty_store_dir(b))?;
    crate::bench::settle_freed_inodes(b)?;
    // rbuild's own steps and phases, and those of its columns beside the pod's (the same
    // binary from an empty store, and in the pod), so the phases compare line by line.
    let mut notes: Vec<String> = Vec::new();
    for r in &rows {
        for tool in ["rbuild", EMPTY_STORE, RESTRICTED] {
            let Some(cell) = r.cell(tool) else { continue };
            let runs = cell.samples.len();
            let log = b
                .logs
                .join(format!("{}-{tool}-{}.log", r.name, runs.saturating_sub(1)));
            let text = fs::read_to_string(log).unwrap_or_default();
            let who = if tool == "rbuild" {
                "rbuild's".to_string()
            } else {
                format!("{tool}'s")
            };
            notes.push(format!(
                "{}, {who} steps in its last run: {}",
                r.name,
                report::rbuild_step_times(&text)
            ));
        }
    }
    notes.extend(rows.iter().filter_map(restricted::pod_note));
    Ok((!rows.is_empty()).then(|| Section {
        notes,
        title: "Cold builds".into(),
        intro: "Each tool builds with its cache disabled (`--no-cache`); the base image is \
                already in its store (the first row on each base is built once untimed, \
                which pulls it). The time is the whole command, from start to the image \
                tagged in the tool's store. RUN steps get the host network with every tool \
                (rbuild's default; `--network host` for docker and Buildah, whose private \
                dockerd here has no bridge). buildah-rootless is the same Buildah run as an \
                unprivileged user (`runuser -u USER -- env HOME=… XDG_RUNTIME_DIR=… \
                buildah …`) with a subordinate id range: its user namespace maps those ids, \
                its overlay is the kernel's own (mounted inside that namespace), its storage \
                is its user's; rbuild itself runs as root here. Peak RSS is the largest \
                single process of rbuild's tree (which includes the RUN commands, e.g. \
                apt-get); the docker client does no work and Buildah's is one process among \
                several, so the peers' memory is not shown. The pip and npm rows get the \
                machine's CA bundle as the build secret `ca` (their package managers speak \
                HTTPS, perhaps through a proxy with its own CA); it is in no layer. The notes \
                give rbuild's own per-step times (its `--progress plain` output) for its last \
                run, and where its time went (its `phases:` line: wall time per phase, summed \
                over threads). buildkit-v032 is the reference BuildKit v0.32 (`buildctl \
                build --output type=image,name=…` against a private rootful buildkitd; \
                buildkit-v032-rootless the same daemon under rootlesskit as an unprivileged \
                user); \
                kaniko is the reference Kaniko v1.28 (`docker run` of its executor image with \
                `--no-push --digest-file`); it has no image store, so it pulls the base from \
                the local registry in every run. Every build of those two is checked for the \
                image digest it wrote. The limit column runs the same RUN commands in a plain \
                chroot of a fresh copy of the base (made untimed; /dev, /proc, resolv.conf and \
                the secrets mounted; stages in parallel), with nothing recorded: no snapshot, \
                no layer, no image. A tool's cell shows its time above the limit in brackets, \
                and the last ratio column is rbuild's time above the limit over the smallest \
                of the peers' (— when that peer is at the limit). With the peer \
                rbuild-restricted (rbuild in a restricted pod: a fresh container per run, \
                timed as `docker create`, `docker start -a` and `docker rm` apart), the \
                column rbuild-empty-store is the host's rbuild from an empty store in every \
                run (the base pulled and extracted, as in each pod run), and the column pod-limit \
                is the pod's floor: the limit's same RUN commands in a plain container of \
                the base on the bench's dockerd (root, Docker's default seccomp profile and \
                capabilities, `--network host`; a fresh container per stage and run, stages \
                one after another, timed as the pod is), no builder at all; its bracket is \
                its time above the limit, what the container's environment costs. The notes \
                give the pod's parts, its ratio to both host columns, with and without the \
                container's creation and removal, and its time above pod-limit against the \
                host's rbuild's above the limit."
            .into(),
        rows,
    }))
}

/// Where the empty-store column's earlier stores wait, untimed, until the section ends
/// (removing them between runs would slow the next run: see "The rows behind").
const EMPTY_STORE_TRASH: &str = "empty-store-trash";

fn empty_store_dir(b: &Bench) -> PathBuf {
    b.work.join("stores/empty").join(EMPTY_STORE)
}

/// The host's rbuild (user namespaces) building from an empty store in every run, as each
/// run of the restricted pod does (a fresh container: the base pulled from the registry
/// and extracted, then the build): the like-for-like column of that peer, beside rbuild's
/// own, whose store keeps the base from the untimed first build.
fn empty_store_plan<'a>(b: &Bench, ctx: &Context, dir: &Path) -> Plan<'a> {
    let store = empty_store_dir(b);
    let mut builder = b.rbuild.with_store(&store);
    builder.name = EMPTY_STORE.into();
    let (dir, tag, secrets) = (dir.to_path_buf(), b.tag(ctx.name, EMPTY_STORE), ctx.secrets);
    let trash = b.work.join(EMPTY_STORE_TRASH).join(ctx.name);
    Plan::new(EMPTY_STORE, move |_| {
        Ok(builder.build_with_secrets(&dir, &tag, Cache::Off, secrets))
    })
    .before(move |run| {
        if store.exists() {
            fs::create_dir_all(&trash)?;
            fs::rename(&store, trash.join(run.to_string()))?;
        }
        Ok(())
    })
}
