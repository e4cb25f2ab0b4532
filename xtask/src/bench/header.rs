//! The report's head: the machine it ran on, the load, and every tool's version.

use std::fmt::Write as _;
use std::fs;
use std::process::Command;

use super::report::{self, Section};
use super::tools;
use super::{Bench, Options};

fn first_line(mut c: Command) -> String {
    match c.output() {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or("").trim().to_string()
        }
        _ => "unknown".to_string(),
    }
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

pub fn versions(b: &Bench) -> Vec<(String, String)> {
    let source = match &b.opts.bin_dir {
        Some(_) => "binary given with --bin-dir".to_string(),
        None => {
            let commit = cmd_output("git", &["rev-parse", "--short", "HEAD"]);
            let dirty =
                !cmd_output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
            format!(
                "built from commit {commit}{}",
                if dirty {
                    " with uncommitted changes"
                } else {
                    ""
                }
            )
        }
    };
    let mut v = vec![(
        "rbuild".to_string(),
        format!("{} ({source})", first_line(b.rbuild.version())),
    )];
    for p in &b.peers {
        let version = match p.cannot(tools::Op::Build) {
            Some(why) => why,
            None => first_line(p.version()),
        };
        v.push((p.name.clone(), version));
    }
    for (name, c) in [
        ("skopeo", cmd("skopeo", &["--version"])),
        ("runc", cmd("runc", &["--version"])),
        ("docker-registry", cmd("docker-registry", &["--version"])),
        ("gzip", cmd("gzip", &["--version"])),
        ("pigz", cmd("pigz", &["--version"])),
        ("GNU tar", cmd("tar", &["--version"])),
    ] {
        v.push((name.to_string(), first_line(c)));
    }
    v
}

/// The 1-minute load average: other work on the machine during the run shows here.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

pub fn render(
    sections: &[Section],
    versions: &[(String, String)],
    opts: &Options,
    secs: u64,
    load: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Written by `cargo xtask bench{}{}` in {} min {} s on {}. Machine: {} cores ({}), {}, \
         kernel {}, {}; load average {load}. {} timed run(s) per tool for the quick rows \
         and {} for the rows that move hundreds of megabytes, tools alternating; a cell is \
         the median, a ratio the median of the per-pair ratios.\n",
        if opts.quick { " --quick" } else { "" },
        if opts.only.is_empty() {
            String::new()
        } else {
            format!(" {}", opts.only.join(" "))
        },
        secs / 60,
        secs % 60,
        cmd_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model(),
        mem_total(),
        cmd_output("uname", &["-r"]),
        filesystem(),
        opts.runs,
        opts.heavy_runs,
    );
    let _ = writeln!(s, "| tool | version |\n|---|---|");
    for (name, v) in versions {
        let _ = writeln!(s, "| {name} | {} |", v.replace('|', "/"));
    }
    let _ = writeln!(s);
    for sec in sections {
        s.push_str(&report::render_section(sec));
    }
    s
}

fn cmd_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into())
}

fn mem_total() -> String {
    let text = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| format!("{} GiB RAM", (kib + 512 * 1024) / 1024 / 1024))
        .unwrap_or_else(|| "unknown RAM".into())
}

fn filesystem() -> String {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let t = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"/")).then(|| f.get(2).copied().unwrap_or("?"))
        })
        .next_back()
        .unwrap_or("unknown");
    format!("{t} root file system")
}
