//! Cache rows: cold, warm, one change and registry cache for each cache workload.

use std::fs;

use anyhow::Result;

use super::{announce, cold_plans, phase_notes};
use crate::bench::plan::{run_row, Plan};
use crate::bench::report::Section;
use crate::bench::tools::{Cache, Op};
use crate::bench::workloads::{self, Context};
use crate::bench::Bench;

pub(super) fn cache(b: &Bench) -> Result<Option<Section>> {
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
                Plan::for_builder(&t.clone(), Op::Build, move |_| {
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
                Plan::for_builder(t, Op::Build, move |_| {
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
                Plan::for_builder(t, Op::Build, move |_| {
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
