//! The report's sections: which rows each has, and how every tool runs each row.

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use anyhow::Result;
use rbuild_testutil::Registry;

use super::plan::{per_step, run_row, Plan, Row};
use super::report::{self, Section};
use super::tools::{remove_tree, Builder, Cache};
use super::workloads::{self, Context};
use super::{fresh_dir, Bench};

pub fn run_all(b: &Bench) -> Result<Vec<Section>> {
    let mut sections = Vec::new();
    let mut add = |s: Option<Section>| {
        if let Some(s) = s {
            sections.push(s);
        }
    };
    add(cold_builds(b)?);
    add(step_overhead(b)?);
    add(snapshot(b)?);
    add(cache(b)?);
    add(registry(b)?);
    add(layer_write(b)?);
    Ok(sections)
}

impl Bench<'_> {
    fn builders(&self) -> Vec<Builder> {
        let mut all = vec![self.rbuild.clone()];
        all.extend(self.peers.iter().cloned());
        all
    }

    /// Writes `ctx` under the work directory, on its base image; returns the directory.
    fn context(&self, ctx: &Context) -> Result<PathBuf> {
        let from = self.services.base(ctx.base, &self.work)?;
        let dir = fresh_dir(&self.work.join("contexts").join(ctx.name))?;
        (ctx.make)(&dir, &from)?;
        Ok(dir)
    }

    fn tag(&self, ctx: &str, tool: &str) -> String {
        format!(
            "{}/bench/{ctx}-{tool}:latest",
            self.services.registry_addr()
        )
    }

    /// A private, empty store for `tool` (its contents are removed before each use).
    fn empty_store(&self, tool: &Builder) -> Builder {
        tool.with_store(&self.work.join("stores/empty").join(&tool.name))
    }
}

fn announce(name: &str, what: &str) {
    eprintln!("==> {name}: {what}");
}

/// Plans for a cold (`--no-cache`) build of `dir` by each of `tools`; with `warm_up`, one
/// untimed build first (which also brings the base image into each tool's store).
fn cold_plans<'a>(
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
            let (t, dir, tag) = (t.clone(), dir.to_path_buf(), b.tag(ctx.name, &t.name));
            let name = t.name.clone();
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
            Plan::new(&name, move |_| build()).prime(prime, false)
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

fn cold_builds(b: &Bench) -> Result<Option<Section>> {
    let mut rows = Vec::new();
    let candidates: Vec<(Context, bool)> = vec![
        (workloads::tiny(), false),
        (workloads::large_diff(b.scale.large_diff_files), true),
        (workloads::steps("many-steps", 30), false),
        (workloads::multi_stage(), false),
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
        let plans = cold_plans(b, &ctx, &dir, &b.builders(), warm_up);
        rows.push(run_row(ctx.name, &ctx.what, plans, runs, &b.logs));
    }
    let notes = rows
        .iter()
        .map(|r| {
            let runs = r.cell("rbuild").map(|c| c.samples.len()).unwrap_or(0);
            let log = b
                .logs
                .join(format!("{}-rbuild-{}.log", r.name, runs.saturating_sub(1)));
            let text = fs::read_to_string(log).unwrap_or_default();
            format!(
                "{}, rbuild's steps in its last run: {}",
                r.name,
                report::rbuild_step_times(&text)
            )
        })
        .collect();
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
                over threads)."
            .into(),
        rows,
    }))
}

fn step_overhead(b: &Bench) -> Result<Option<Section>> {
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

fn snapshot(b: &Bench) -> Result<Option<Section>> {
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
    let _ = super::measure::run(
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
            Plan::new(&t.name.clone(), move |_| {
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

fn cache(b: &Bench) -> Result<Option<Section>> {
    let mut rows = Vec::new();
    // The large-diff Dockerfile is the one of the cold builds' large-diff row: its cold time
    // is there, and is not measured twice.
    let candidates: Vec<(Context, &str, bool)> = vec![
        (workloads::steps("ten-steps", 10), "cache-ten-steps", false),
        (
            workloads::large_diff(b.scale.large_diff_files),
            "cache-large-diff",
            true,
        ),
    ];
    for (ctx, selector, heavy) in candidates {
        let with_cold = !heavy;
        if !b.opts.selected(selector) {
            continue;
        }
        let runs = if heavy {
            b.opts.heavy_runs
        } else {
            b.opts.runs
        };
        let dir = b.context(&ctx)?;
        let name = ctx.name;
        let changed = ctx
            .changed_file
            .expect("cache contexts name a file to change");
        let tools = b.builders();

        if with_cold {
            let row_name = format!("{name} cold");
            announce(&row_name, "no cache");
            rows.push(run_row(
                &row_name,
                &format!("{}, `--no-cache`", ctx.what),
                cold_plans(b, &ctx, &dir, &tools, true),
                runs,
                &b.logs,
            ));
        }

        let row_name = format!("{name} warm");
        announce(&row_name, "nothing changed");
        let plans = tools
            .iter()
            .map(|t| {
                let (t, dir, tag) = (t.clone(), dir.clone(), b.tag(name, &t.name));
                let prime = t.build(&dir, &tag, Cache::Local);
                Plan::new(&t.name.clone(), move |_| {
                    Ok(t.build(&dir, &tag, Cache::Local))
                })
                .prime(prime, false)
            })
            .zip(&tools)
            .map(|(p, t)| p.counting_cached(t))
            .collect();
        let mut row = run_row(&row_name, "rebuild, nothing changed", plans, runs, &b.logs);
        row.cacheable_steps = Some(ctx.cacheable_steps);
        rows.push(row);

        let row_name = format!("{name} one change");
        announce(&row_name, &format!("{changed} changed"));
        let plans = tools
            .iter()
            .map(|t| {
                let (tt, dir, tag) = (t.clone(), dir.clone(), b.tag(name, &t.name));
                let file = dir.join(changed);
                let tool = t.name.clone();
                let prime = t.build(&dir, &tag, Cache::Local);
                Plan::new(&t.name.clone(), move |_| {
                    Ok(tt.build(&dir, &tag, Cache::Local))
                })
                .prime(prime, false)
                .before(move |run| {
                    fs::write(&file, format!("changed for run {run} of {tool}\n"))?;
                    Ok(())
                })
                .counting_cached(t)
            })
            .collect();
        let mut row = run_row(
            &row_name,
            &format!("rebuild after `{changed}` changed"),
            plans,
            runs,
            &b.logs,
        );
        row.cacheable_steps = Some(ctx.cacheable_steps);
        rows.push(row);

        let row_name = format!("{name} registry cache");
        announce(&row_name, "empty store, cache from the registry");
        let reg = b.services.registry_addr();
        let plans = tools
            .iter()
            .map(|t| {
                let cache_ref = t.cache_ref(&format!("{reg}/cache/{name}-{}", t.name));
                let tag = b.tag(name, &t.name);
                let prime = t.build(&dir, &tag, Cache::ExportTo(&cache_ref));
                let empty = b.empty_store(t);
                let reset = empty.clone();
                let dir = dir.clone();
                Plan::new(&t.name.clone(), move |_| {
                    Ok(empty.build(&dir, &tag, Cache::ImportFrom(&cache_ref)))
                })
                .prime(prime, true)
                .before(move |_| reset.reset())
                .counting_cached(t)
            })
            .collect();
        let mut row = run_row(
            &row_name,
            "empty store (base image included), cache imported from the local registry",
            plans,
            runs,
            &b.logs,
        );
        row.cacheable_steps = Some(ctx.cacheable_steps);
        rows.push(row);
    }
    Ok((!rows.is_empty()).then(|| Section {
        notes: phase_notes(b, &rows),
        title: "Cache".into(),
        intro: "For each Dockerfile: a cold build (`--no-cache`; for large-diff see the \
                cold builds' large-diff row, the same Dockerfile); a rebuild with nothing \
                changed; a rebuild after one copied source file changed (rewritten before \
                each run with new content); and a build on an empty store (base image \
                included) importing the cache that a previous build exported to the local \
                registry. rbuild: `--cache-to type=registry,ref=REPO:cache,mode=max`, then \
                `--cache-from type=registry,ref=REPO:cache`. Docker 20.10 from Debian has no \
                buildx, hence no `--cache-to`: its cache travels inline \
                (`--build-arg BUILDKIT_INLINE_CACHE=1`, pushed, then `--cache-from REF` after \
                `docker system prune --all`). Buildah: `bud --layers --cache-to REPO`, then \
                `--cache-from REPO` on a fresh storage root (buildah-rootless the same, as its \
                user). \"k/n cached\" counts the steps each tool's log reports as answered \
                from the cache in the last run \
                (BuildKit's `CACHED`, Buildah's `Using cache`, rbuild's `CACHED`); \
                \"unsupported\" means exporting the cache failed, with the tool's error."
            .into(),
        rows,
    }))
}

fn registry(b: &Bench) -> Result<Option<Section>> {
    let (push, pull) = (b.opts.selected("push"), b.opts.selected("pull"));
    if !push && !pull {
        return Ok(None);
    }
    let ctx = workloads::push_image(b.scale.push_layer_bytes);
    let dir = b.context(&ctx)?;
    let tools = b.builders();
    let mb = 2 * b.scale.push_layer_bytes / 1_000_000;
    // Every tool builds the image once (untimed): what it pushes.
    announce("push-image", &ctx.what);
    for t in &tools {
        let s = super::measure::run(
            t.build(&dir, &b.tag(ctx.name, &t.name), Cache::Local),
            &b.logs.join(format!("push-image-{}-build.log", t.name)),
        )?;
        if let Some(e) = s.error {
            eprintln!("    {:<16} build: {e}", t.name);
        }
    }
    let rbuild_root = b
        .rbuild
        .rbuild_root()
        .expect("rbuild has a store")
        .to_path_buf();
    let rbuild_src = b.tag(ctx.name, &b.rbuild.name);
    let mut rows = Vec::new();

    if push {
        announce("push", "to an empty registry per run");
        // A new registry for every run: nothing to skip or mount from an earlier push.
        let fresh: Rc<RefCell<Option<Registry>>> = Rc::new(RefCell::new(None));
        let dest = {
            let fresh = fresh.clone();
            move || {
                let host = fresh
                    .borrow()
                    .as_ref()
                    .map(|r| r.host())
                    .unwrap_or_default();
                format!("{host}/bench/pushed:latest")
            }
        };
        let start = {
            let fresh = fresh.clone();
            move |_: usize| -> Result<()> {
                *fresh.borrow_mut() = None;
                *fresh.borrow_mut() = Some(Registry::start());
                Ok(())
            }
        };
        let mut plans = Vec::new();
        for t in &tools {
            let (tt, src, d) = (t.clone(), b.tag(ctx.name, &t.name), dest.clone());
            plans.push(
                Plan::new(&t.name.clone(), move |_| Ok(tt.push(&src, &d()))).before(start.clone()),
            );
            if t.is_rbuild() {
                let (root, src, dest) = (rbuild_root.clone(), rbuild_src.clone(), dest.clone());
                plans.push(
                    Plan::new("skopeo", move |_| {
                        let mut c = Command::new("skopeo");
                        c.args(["copy", "--dest-tls-verify=false"])
                            .arg(format!("oci:{}:{src}", root.join("oci").display()))
                            .arg(format!("docker://{}", dest()));
                        Ok(vec![c])
                    })
                    .before(start.clone()),
                );
            }
        }
        let mut row = run_row(
            "push",
            &format!("{mb} MB image (2 layers of random data) to an empty registry"),
            plans,
            b.opts.heavy_runs,
            &b.logs,
        );
        row.bytes = Some(2 * b.scale.push_layer_bytes);
        rows.push(row);
        *fresh.borrow_mut() = None;
    }

    if pull {
        announce("pull", "into an empty store");
        let source = format!("{}/bench/pull-source:latest", b.services.registry_addr());
        // rbuild's image is the one pulled; docker's if rbuild could not push it.
        let mut pushed = false;
        for t in &tools {
            let s = super::measure::run(
                t.push(&b.tag(ctx.name, &t.name), &source),
                &b.logs.join(format!("pull-source-{}.log", t.name)),
            )?;
            if s.error.is_none() {
                pushed = true;
                break;
            }
            eprintln!("    {:<16} push of the pull source: {:?}", t.name, s.error);
        }
        anyhow::ensure!(pushed, "no tool could push the image the pull row pulls");
        let mut plans = Vec::new();
        for t in &tools {
            let empty = b.empty_store(t);
            let (reset, src) = (empty.clone(), source.clone());
            plans.push(
                Plan::new(&t.name.clone(), move |_| Ok(vec![empty.pull(&src)]))
                    .before(move |_| reset.reset()),
            );
            if t.is_rbuild() {
                let dir = b.work.join("stores/empty/skopeo");
                let (dir2, src) = (dir.clone(), source.clone());
                plans.push(
                    Plan::new("skopeo", move |_| {
                        let mut c = Command::new("skopeo");
                        c.args(["copy", "--src-tls-verify=false"])
                            .arg(format!("docker://{src}"))
                            .arg(format!("oci:{}:pulled", dir2.display()));
                        Ok(vec![c])
                    })
                    .before(move |_| remove_tree(&dir)),
                );
            }
        }
        let mut row = run_row(
            "pull",
            &format!("{mb} MB image (2 layers) from the local registry into an empty store"),
            plans,
            b.opts.heavy_runs,
            &b.logs,
        );
        row.bytes = Some(2 * b.scale.push_layer_bytes);
        rows.push(row);
    }
    Ok(Some(Section {
        notes: vec![],
        title: "Registry".into(),
        intro: "Push: each tool pushes the image it built (two layers of random data, so \
                compression cannot shrink them) to a registry started empty for that run, \
                so nothing is skipped or mounted. skopeo copies rbuild's image from rbuild's \
                store (an OCI layout) to the registry: the same bytes rbuild pushes. Docker \
                and Buildah keep layers uncompressed and compress them while pushing; rbuild \
                stores them compressed. Pull: from the local registry into an empty store \
                (rbuild: a new `--root`; skopeo: a new OCI layout directory; docker: after \
                `docker system prune --all`; Buildah, root or rootless: a new storage \
                root). rbuild and skopeo store the blobs; Docker and Buildah also decompress \
                and unpack them."
            .into(),
        rows,
    }))
}

fn layer_write(b: &Bench) -> Result<Option<Section>> {
    if !b.opts.selected("layer-write") {
        return Ok(None);
    }
    anyhow::ensure!(
        b.layer_bench_bin.is_file(),
        "{} is missing (cargo build --release -p rbuild-layer --example layer_bench)",
        b.layer_bench_bin.display()
    );
    let want = b.scale.layer_tree_bytes;
    let source = Path::new("/usr/lib");
    let tree = b.work.join(format!("trees/usr-lib-{}mb", want / 1_000_000));
    announce("layer-write", &format!("a {} MB tree", want / 1_000_000));
    let (files, bytes) = workloads::layer_tree(&tree, source, want)?;
    // Read once so that every tool finds it in the page cache.
    let _ = Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .args(["-cf", "/dev/null", "."])
        .status();
    let out = fresh_dir(&b.work.join("layer-out"))?;
    let shell = |pipeline: String| {
        let mut c = Command::new("sh");
        c.args(["-c", &pipeline]);
        vec![c]
    };
    let tar_to = |compressor: &str, file: &str| {
        format!(
            "tar -C '{}' -cf - . | {compressor} -6 > '{}'",
            tree.display(),
            out.join(file).display()
        )
    };
    let rbuild_cmd = {
        let (bin, tree, out) = (b.layer_bench_bin.clone(), tree.clone(), out.clone());
        move || {
            let mut c = Command::new(&bin);
            c.arg(&tree)
                .args(["gzip", "6"])
                .arg(format!("--out={}", out.join("rbuild.tar.gz").display()));
            vec![c]
        }
    };
    let gzip = tar_to("gzip", "gzip.tar.gz");
    let pigz = tar_to("pigz", "pigz.tar.gz");
    let plans = vec![
        Plan::new("rbuild", move |_| Ok(rbuild_cmd())),
        Plan::new("tar+gzip", move |_| Ok(shell(gzip.clone()))),
        Plan::new("tar+pigz", move |_| Ok(shell(pigz.clone()))),
    ];
    let mut row = run_row(
        "layer-write",
        &format!(
            "{} MB in {files} files: the first of {} in path order; gzip level 6",
            bytes / 1_000_000,
            source.display()
        ),
        plans,
        b.opts.heavy_runs,
        &b.logs,
    );
    row.bytes = Some(bytes);
    let sizes: Vec<String> = ["rbuild.tar.gz", "gzip.tar.gz", "pigz.tar.gz"]
        .iter()
        .map(|f| {
            let len = fs::metadata(out.join(f)).map(|m| m.len()).unwrap_or(0);
            format!("{f}: {} MB", len / 1_000_000)
        })
        .collect();
    let _ = remove_tree(&out);
    Ok(Some(Section {
        notes: vec![],
        title: "Layer write".into(),
        intro: format!(
            "One gzip layer of a tree already in the page cache, written to a file on the \
             same disk: rbuild's layer writer (`layer_bench`, the code a build commits a \
             step with: deterministic tar, gzip on all cores, diff id and digest in the \
             same pass) against `tar | gzip -6` and `tar | pigz -6` (which compute no \
             digest). Throughput is uncompressed MB per second. Output sizes of the last \
             run: {}.",
            sizes.join(", ")
        ),
        rows: vec![row],
    }))
}

/// `ROW (TOOL): phases: …` for each rbuild cell of `rows`, from the `phases:` line of its
/// last timed run's log; rows without one (derived rows, failed runs) are left out.
fn phase_notes(b: &Bench, rows: &[Row]) -> Vec<String> {
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
