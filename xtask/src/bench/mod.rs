//! `cargo xtask bench`: builds the workloads with rbuild and with each peer on this machine,
//! alternating runs (A B A B ...) so that the machine's drift cancels out, and writes a
//! Markdown table of medians and per-pair ratios.

mod measure;
mod tools;
mod workloads;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use measure::Sample;
use tools::Tool;
use workloads::{Mode, Workload};

struct Options {
    quick: bool,
    runs: usize,
    peers: Vec<String>,
    out: PathBuf,
    only: Vec<String>,
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        quick: false,
        runs: 3,
        peers: vec!["docker-buildkit".into(), "buildah".into()],
        out: PathBuf::from("docs/benchmarks.md"),
        only: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--runs" => {
                o.runs = it
                    .next()
                    .context("--runs needs a number")?
                    .parse()
                    .context("--runs needs a number")?
            }
            "--peers" => {
                o.peers = it
                    .next()
                    .context("--peers needs a list")?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            "--out" => o.out = PathBuf::from(it.next().context("--out needs a file")?),
            flag if flag.starts_with('-') => bail!("unknown option {flag}"),
            name => o.only.push(name.to_string()),
        }
    }
    if o.quick {
        o.runs = o.runs.min(2);
    }
    if o.runs == 0 {
        bail!("--runs must be at least 1");
    }
    Ok(o)
}

/// The results of one workload: per tool, one sample per timed run.
struct Row {
    workload: &'static str,
    what: &'static str,
    samples: Vec<(String, Vec<Sample>)>,
}

pub fn main(args: &[String]) -> Result<()> {
    let opts = parse_options(args)?;
    let repo = repo_root()?;
    let work = repo.join("target/bench");
    fs::create_dir_all(work.join("logs"))?;

    let selected: Vec<Workload> = workloads::all()
        .into_iter()
        .filter(|w| opts.only.is_empty() || opts.only.iter().any(|n| n == w.name))
        .filter(|w| !(opts.quick && w.slow) || opts.only.iter().any(|n| n == w.name))
        .collect();
    if selected.is_empty() {
        bail!("no workload selected (known: {})", names().join(", "));
    }

    eprintln!("==> building rbuild (release)");
    let status = Command::new(env!("CARGO"))
        .current_dir(&repo)
        .args(["build", "--release", "--quiet", "--bin", "rbuild"])
        .status()?;
    if !status.success() {
        bail!("building rbuild failed");
    }
    let rbuild_bin = repo.join("target/release/rbuild");

    let env = services::Services::start(&work)?;
    let mut tools = vec![Tool::rbuild(rbuild_bin, work.join("rbuild-root"))];
    for peer in &opts.peers {
        match peer.as_str() {
            "docker-buildkit" => tools.push(Tool::docker_buildkit(
                PathBuf::from(services::DEBIAN_DOCKER),
                env.docker_host(),
            )),
            "buildah" => tools.push(Tool::buildah(&work)),
            other => bail!("unknown peer {other} (known: docker-buildkit, buildah)"),
        }
    }

    let mut rows = Vec::new();
    for w in &selected {
        let from = env.base(w.base, &work)?;
        eprintln!("==> {} ({})", w.name, w.what);
        rows.push(run_workload(w, &from, &tools, &opts, &work, &env)?);
    }
    let versions: Vec<(String, String)> = tools
        .iter()
        .map(|t| (t.name.to_string(), version_of(t)))
        .collect();
    let report = render(&rows, &tools, &versions, &opts);
    fs::write(repo.join(&opts.out), &report)
        .with_context(|| format!("writing {}", opts.out.display()))?;
    println!("{report}");
    eprintln!("==> wrote {}", opts.out.display());
    Ok(())
}

fn names() -> Vec<&'static str> {
    workloads::all().iter().map(|w| w.name).collect()
}

fn repo_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf())
}

fn run_workload(
    w: &Workload,
    from: &str,
    tools: &[Tool],
    opts: &Options,
    work: &Path,
    env: &services::Services,
) -> Result<Row> {
    let ctx = work.join("contexts").join(w.name);
    let _ = fs::remove_dir_all(&ctx);
    fs::create_dir_all(&ctx)?;
    (w.make)(&ctx, from)?;
    let tag = |t: &Tool| format!("{}/bench/{}-{}:latest", env.registry_addr(), w.name, t.name);
    let log = |t: &Tool, run: &str| {
        work.join("logs")
            .join(format!("{}-{}-{run}.log", w.name, t.name))
    };

    // Priming builds: the warm-up run for cold workloads, the cache for warm ones, the
    // image to push for the push workload. Their failures show up in the timed runs.
    for t in tools {
        let _ = measure::run(
            t.build(&ctx, &tag(t), w.mode == Mode::Cold),
            &log(t, "prime"),
        )?;
    }
    let mut samples: Vec<(String, Vec<Sample>)> = tools
        .iter()
        .map(|t| (t.name.to_string(), Vec::new()))
        .collect();
    for run in 0..opts.runs {
        for (i, t) in tools.iter().enumerate() {
            if w.mode == Mode::OneChange {
                let file = w
                    .changed_file
                    .expect("one-change workloads name their file");
                fs::write(
                    ctx.join(file),
                    format!("changed for run {run} of {}\n", t.name),
                )?;
            }
            let cmd = match w.mode {
                Mode::Cold => t.build(&ctx, &tag(t), true),
                Mode::Warm | Mode::OneChange => t.build(&ctx, &tag(t), false),
                Mode::Push => t.push(&tag(t)),
            };
            let s = measure::run(cmd, &log(t, &run.to_string()))?;
            eprintln!(
                "    {:<16} run {run}: {:>8.2}s {}",
                t.name,
                s.wall.as_secs_f64(),
                s.error.as_deref().unwrap_or("")
            );
            samples[i].1.push(s);
        }
    }
    Ok(Row {
        workload: w.name,
        what: w.what,
        samples,
    })
}

fn version_of(t: &Tool) -> String {
    let mut c = t.version();
    match c.output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "unknown".to_string(),
    }
}

fn fmt_secs(s: Option<f64>) -> String {
    s.map(|v| format!("{v:.2} s")).unwrap_or_else(|| "—".into())
}

/// Renders the report: a table of medians, then rbuild's ratio to each peer per pair of
/// runs (median of the per-pair ratios, so that drift between pairs cancels out).
fn render(rows: &[Row], tools: &[Tool], versions: &[(String, String)], opts: &Options) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Written by `cargo xtask bench{}`; {} timed run(s) per tool after one priming run, \
         tools alternating. Machine: {} cores, {}, kernel {}. Date: {}.\n",
        if opts.quick { " --quick" } else { "" },
        opts.runs,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        mem_total(),
        command_line("uname", &["-r"]),
        command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    );
    let _ = writeln!(s, "| tool | version |\n|---|---|");
    for (name, v) in versions {
        let _ = writeln!(s, "| {name} | {v} |");
    }
    let _ = writeln!(s);
    let mut header = String::from("| workload | what |");
    let mut rule = String::from("|---|---|");
    for t in tools {
        let _ = write!(header, " {} |", t.name);
        rule.push_str("---|");
        if !t.is_rbuild() {
            let _ = write!(header, " rbuild/{} |", t.name);
            rule.push_str("---|");
        }
    }
    header.push_str(" rbuild peak RSS |");
    rule.push_str("---|");
    let _ = writeln!(s, "{header}\n{rule}");
    for row in rows {
        let mut line = format!("| {} | {} |", row.workload, row.what);
        let rbuild = &row.samples[0].1;
        for (t, (_, samples)) in tools.iter().zip(&row.samples) {
            let failed = samples.iter().find_map(|x| x.error.clone());
            let mut secs: Vec<f64> = samples
                .iter()
                .filter(|x| x.error.is_none())
                .map(|x| x.wall.as_secs_f64())
                .collect();
            match (&failed, measure::median(&mut secs)) {
                (Some(e), _) => {
                    let _ = write!(line, " {} |", e.replace('|', "/"));
                }
                (None, m) => {
                    let _ = write!(line, " {} |", fmt_secs(m));
                }
            }
            if !t.is_rbuild() {
                let mut ratios: Vec<f64> = rbuild
                    .iter()
                    .zip(samples)
                    .filter(|(a, b)| a.error.is_none() && b.error.is_none())
                    .map(|(a, b)| a.wall.as_secs_f64() / b.wall.as_secs_f64())
                    .collect();
                let _ = match measure::median(&mut ratios) {
                    Some(r) => write!(line, " {r:.2} |"),
                    None => write!(line, " — |"),
                };
            }
        }
        let peak = rbuild.iter().map(|x| x.max_rss_kib).max().unwrap_or(0);
        let _ = write!(line, " {} MiB |", peak / 1024);
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(
        s,
        "\nA ratio under 1 means rbuild was faster. \"—\" means no pair of runs succeeded; \
         a cell starting with \"failed:\" quotes the tool's last line of output. The docker \
         client's memory is not the build's (the daemon does the work), so only rbuild's \
         peak RSS is shown.\n\n{}",
        notes_for(tools)
    );
    s
}

fn notes_for(tools: &[Tool]) -> String {
    let peers: Vec<&str> = tools
        .iter()
        .filter(|t| !t.is_rbuild())
        .map(|t| t.name)
        .collect();
    format!("Peers measured in this run: {}.", peers.join(", "))
}

fn mem_total() -> String {
    let text = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| format!("{} GiB RAM", kib / 1024 / 1024))
        .unwrap_or_else(|| "unknown RAM".into())
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

mod services;

#[cfg(test)]
mod tests {
    use super::workloads::Base;
    use super::*;

    #[test]
    fn options_parse_and_reject_unknown_flags() {
        let o = parse_options(&["--quick".into(), "tiny".into()]).unwrap();
        assert!(o.quick);
        assert_eq!(o.only, vec!["tiny".to_string()]);
        assert!(o.runs <= 2);
        assert!(parse_options(&["--bogus".into()]).is_err());
        assert!(parse_options(&["--runs".into(), "0".into()]).is_err());
        let o = parse_options(&["--peers".into(), "buildah".into()]).unwrap();
        assert_eq!(o.peers, vec!["buildah".to_string()]);
    }

    #[test]
    fn report_shows_failures_and_ratios() {
        use std::time::Duration;
        let tools = vec![
            Tool::rbuild("rbuild".into(), "/r".into()),
            Tool::buildah(Path::new("/w")),
        ];
        let ok = |secs: f64| Sample {
            wall: Duration::from_secs_f64(secs),
            max_rss_kib: 2048,
            error: None,
        };
        let rows = vec![Row {
            workload: "tiny",
            what: "w",
            samples: vec![
                ("rbuild".into(), vec![ok(1.0), ok(2.0)]),
                ("buildah".into(), vec![ok(4.0), ok(4.0)]),
            ],
        }];
        let opts = parse_options(&[]).unwrap();
        let text = render(&rows, &tools, &[], &opts);
        assert!(
            text.contains("| tiny | w | 1.50 s | 4.00 s | 0.38 |"),
            "{text}"
        );
        let failed = vec![Row {
            workload: "tiny",
            what: "w",
            samples: vec![
                (
                    "rbuild".into(),
                    vec![Sample {
                        error: Some("failed: no | engine".into()),
                        ..ok(1.0)
                    }],
                ),
                ("buildah".into(), vec![ok(4.0)]),
            ],
        }];
        let text = render(&failed, &tools, &[], &opts);
        assert!(text.contains("failed: no / engine"), "{text}");
        assert!(text.contains("| 4.00 s | — |"), "{text}");
    }

    #[test]
    fn base_images_are_named_per_kind() {
        assert_ne!(
            services::base_name(Base::Busybox),
            services::base_name(Base::Debian)
        );
    }
}
