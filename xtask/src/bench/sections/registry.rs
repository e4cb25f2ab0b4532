//! Push and pull of a 500 MB image, against skopeo copy.

use std::cell::RefCell;
use std::process::Command;
use std::rc::Rc;

use anyhow::Result;
use rbuild_testutil::Registry;

use super::announce;
use crate::bench::plan::{run_row, Plan};
use crate::bench::report::Section;
use crate::bench::tools::{remove_tree, Cache, Op};
use crate::bench::workloads;
use crate::bench::Bench;

/// Removes rbuild's records of the compressed blobs it made of its plain layers
/// (`<store>/layers/<diff id>.<compression>-<level>`, beside the `.lazy` markers), so that
/// its next push compresses them again.
fn forget_compressions(layers: &std::path::Path) -> Result<()> {
    let entries = match std::fs::read_dir(layers) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let path = entry?.path();
        let kind = path.extension().and_then(|e| e.to_str()).unwrap_or("lazy");
        if kind != "lazy" {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

pub(super) fn registry(b: &Bench) -> Result<Option<Section>> {
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
    for t in tools.iter().filter(|t| t.cannot(Op::Push).is_none()) {
        let s = crate::bench::measure::run(
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
            let plan = Plan::for_builder(t, Op::Push, move |_| Ok(tt.push(&src, &d())));
            plans.push(if t.is_rbuild() {
                // Every run is a first push: rbuild remembers each layer's compressed blob
                // (a second push compresses nothing), while the other tools compress on
                // every push, so its records of the last run's compressions go first.
                let (start, layers) = (start.clone(), rbuild_root.join("layers"));
                plan.before(move |run| {
                    start(run)?;
                    forget_compressions(&layers)
                })
            } else {
                plan.before(start.clone())
            });
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
            &format!(
                "{mb} MB image (2 layers of random data) to an empty registry, a first push \
                 (compressed as it goes)"
            ),
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
        for t in tools.iter().filter(|t| t.cannot(Op::Push).is_none()) {
            let s = crate::bench::measure::run(
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
                Plan::for_builder(t, Op::Pull, move |_| Ok(vec![empty.pull(&src)]))
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
                store (an OCI layout of plain layers) to the registry, compressing them as \
                it goes. Every tool keeps layers uncompressed and compresses them while \
                pushing; rbuild remembers what it compressed (a second push compresses \
                nothing), so its records are removed before each run: every run is a first \
                push. Pull: from the local registry into an empty store \
                (rbuild: a new `--root`; skopeo: a new OCI layout directory; docker: after \
                `docker system prune --all`; Buildah, root or rootless: a new storage \
                root). rbuild and skopeo store the blobs; Docker and Buildah also decompress \
                and unpack them."
            .into(),
        rows,
    }))
}
