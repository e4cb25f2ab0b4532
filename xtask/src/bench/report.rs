//! The Markdown report: one table per section, medians per tool and rbuild's ratio to each
//! peer (the median of the per-pair ratios, so that drift between pairs cancels out).

use std::fmt::Write as _;

use super::measure::median;
use super::plan::{Cell, Row};

/// A table of the report.
pub struct Section {
    pub title: String,
    /// What the rows measure and how, above the table.
    pub intro: String,
    pub rows: Vec<Row>,
    /// Lines under the table (where rbuild's time went, sizes, ...).
    pub notes: Vec<String>,
}

/// The line after which docs/benchmarks.md is written by hand: a new run keeps it.
pub const KEEP_MARKER: &str =
    "<!-- Written by hand below this line; cargo xtask bench keeps it. -->";

/// The hand-written part of an earlier report (from the marker on), if any.
pub fn kept_part(old: &str) -> Option<&str> {
    old.find(KEEP_MARKER).map(|i| &old[i..])
}

/// rbuild's per-step times from its `--progress plain` log: `#N [stage i/n] INSTR` and
/// `#N DONE 1.2s (layer ...)`, the total from `writing image ... done (Ts)`, and the time
/// per phase from its last line, `phases: pull 0.00s, extract ...`.
pub fn rbuild_step_times(log: &str) -> String {
    let mut names: Vec<(String, String)> = Vec::new();
    let mut parts = Vec::new();
    for line in log.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            if let Some(i) = line.rfind("done (") {
                if line.starts_with("writing image") {
                    parts.push(format!("total {}", line[i + 6..].trim_end_matches(')')));
                }
            }
            continue;
        };
        let Some((id, what)) = rest.split_once(' ') else {
            continue;
        };
        if let Some(step) = what.strip_prefix('[') {
            let instr = step.split_once("] ").map(|(_, i)| i).unwrap_or(step);
            let short: String = instr.chars().take(24).collect();
            let short = if instr.chars().count() > 24 {
                format!("{short}…")
            } else {
                short
            };
            names.retain(|(i, _)| i != id);
            names.push((id.to_string(), short));
        } else if let Some(done) = what.strip_prefix("DONE ") {
            if let Some((_, name)) = names.iter().find(|(i, _)| i == id) {
                parts.push(format!("`{}` {done}", name.replace('`', "'")));
            }
        }
    }
    parts.extend(rbuild_phases(log));
    parts.join("; ")
}

/// rbuild's time per phase from its `--progress plain` log: its last `phases: …` line
/// (`phases: pull 0.00s, extract 1.20s, …`), if it printed one.
pub fn rbuild_phases(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .find(|l| l.starts_with("phases: "))
        .map(|l| l.trim_end().to_string())
}

/// The column of the limit: the row's RUN commands in a plain chroot, nothing recorded.
pub const LIMIT: &str = "limit";

/// The restricted pod's floor (`pod_limit.rs`): a floor like the limit, not a peer, so
/// no ratio column and never the best peer.
use super::pod_limit::POD_LIMIT;

/// Columns named `rbuild...` are rbuild (the first is the one the ratios compare); the
/// others are peers.
fn is_rbuild(tool: &str) -> bool {
    tool.starts_with("rbuild")
}

fn columns(rows: &[Row]) -> Vec<String> {
    let mut cols: Vec<String> = Vec::new();
    for r in rows {
        for c in &r.cells {
            if !cols.contains(&c.tool) {
                cols.push(c.tool.clone());
            }
        }
    }
    cols
}

fn ok_secs(cell: &Cell) -> Vec<f64> {
    cell.samples
        .iter()
        .filter(|s| s.error.is_none())
        .map(|s| s.wall.as_secs_f64())
        .collect()
}

fn fmt_time(secs: f64, millis: bool) -> String {
    if millis || secs < 1.0 {
        format!("{:.0} ms", secs * 1000.0)
    } else {
        format!("{secs:.2} s")
    }
}

/// The median of a cell's runs, if every run succeeded.
pub fn clean_median(cell: &Cell) -> Option<f64> {
    if cell.unsupported.is_some() || cell.samples.iter().any(|s| s.error.is_some()) {
        return None;
    }
    median(&mut ok_secs(cell))
}

/// `tool`'s time above the row's limit (its median − the limit's median), in seconds.
pub fn overhead(row: &Row, tool: &str) -> Option<f64> {
    Some(clean_median(row.cell(tool)?)? - clean_median(row.cell(LIMIT)?)?)
}

/// `subject`'s overhead above the limit over the smallest overhead of `peers`; none when
/// that is not above zero (a peer at the limit leaves nothing to divide by).
pub fn overhead_ratio(row: &Row, subject: &str, peers: &[&String]) -> Option<f64> {
    let best = peers
        .iter()
        .filter_map(|p| overhead(row, p))
        .min_by(|a, b| a.total_cmp(b))?;
    (best > 0.0).then_some(overhead(row, subject)? / best)
}

fn fmt_signed(secs: f64, millis: bool) -> String {
    let sign = if secs < 0.0 { "−" } else { "+" };
    format!("{sign}{}", fmt_time(secs.abs(), millis))
}

/// The text of one cell: the median, or why there is none.
pub fn cell_text(row: &Row, cell: &Cell) -> String {
    if let Some(why) = &cell.unsupported {
        if why.starts_with("skipped: ") {
            return clean(why);
        }
        return format!("unsupported ({})", clean(why));
    }
    if let Some(e) = cell.samples.iter().find_map(|s| s.error.clone()) {
        return clean(&e);
    }
    let Some(m) = median(&mut ok_secs(cell)) else {
        return "—".into();
    };
    let mut text = fmt_time(m, row.millis);
    if let Some(bytes) = row.bytes {
        let _ = write!(text, " ({:.0} MB/s)", bytes as f64 / 1e6 / m);
    }
    if let (Some(n), Some(k)) = (
        row.cacheable_steps,
        cell.samples.last().and_then(|s| s.cached),
    ) {
        let _ = write!(text, " ({}/{n} cached)", k.min(n));
    }
    text
}

/// Table cells must not contain pipes or newlines, and a long error is cut.
fn clean(text: &str) -> String {
    let t: String = text.replace('|', "/").replace('\n', " ");
    if t.chars().count() > 160 {
        format!("{}…", t.chars().take(160).collect::<String>())
    } else {
        t
    }
}

/// rbuild's ratio to `peer` in `row`: the median over the runs both completed.
pub fn ratio(row: &Row, subject: &str, peer: &str) -> Option<f64> {
    let (a, b) = (row.cell(subject)?, row.cell(peer)?);
    if a.unsupported.is_some() || b.unsupported.is_some() {
        return None;
    }
    let mut ratios: Vec<f64> = a
        .samples
        .iter()
        .zip(&b.samples)
        .filter(|(x, y)| x.error.is_none() && y.error.is_none() && y.wall.as_nanos() > 0)
        .map(|(x, y)| x.wall.as_secs_f64() / y.wall.as_secs_f64())
        .collect();
    median(&mut ratios)
}

pub fn render_section(s: &Section) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## {}\n\n{}\n", s.title, s.intro);
    let cols = columns(&s.rows);
    let subject = cols.iter().find(|c| is_rbuild(c)).cloned();
    let mut header = String::from("| row | what |");
    let mut rule = String::from("|---|---|");
    for c in &cols {
        let _ = write!(header, " {c} |");
        rule.push_str("---:|");
    }
    let peers: Vec<&String> = cols
        .iter()
        .filter(|c| !is_rbuild(c) && c.as_str() != LIMIT && c.as_str() != POD_LIMIT)
        .collect();
    let has_limit = cols.iter().any(|c| c == LIMIT);
    if let Some(subject) = &subject {
        for p in &peers {
            let _ = write!(header, " {subject}/{p} |");
            rule.push_str("---:|");
        }
        if has_limit {
            let _ = write!(header, " {subject} overhead / best peer's |");
            rule.push_str("---:|");
        }
        let _ = write!(header, " {subject} peak RSS |");
        rule.push_str("---:|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    for row in &s.rows {
        let mut line = format!("| {} | {} |", row.name, clean(&row.what));
        for c in &cols {
            let mut text = row
                .cell(c)
                .map(|cell| cell_text(row, cell))
                .unwrap_or_else(|| "n/a".into());
            if c != LIMIT {
                if let Some(o) = overhead(row, c) {
                    let _ = write!(text, " ({})", fmt_signed(o, row.millis));
                }
            }
            let _ = write!(line, " {text} |");
        }
        if let Some(subject) = &subject {
            for p in &peers {
                let text = match (row.cell(subject), row.cell(p)) {
                    (Some(_), Some(_)) => ratio(row, subject, p)
                        .map(|r| format!("{r:.2}"))
                        .unwrap_or_else(|| "—".into()),
                    _ => "n/a".into(),
                };
                let _ = write!(line, " {text} |");
            }
            if has_limit {
                let text = overhead_ratio(row, subject, &peers)
                    .map(|r| format!("{r:.2}"))
                    .unwrap_or_else(|| "—".into());
                let _ = write!(line, " {text} |");
            }
            let peak = row
                .cell(subject)
                .and_then(|c| c.samples.iter().map(|x| x.max_rss_kib).max())
                .filter(|kib| *kib > 0 && !row.millis);
            let _ = match peak {
                Some(kib) => write!(line, " {} MiB |", kib.div_ceil(1024)),
                None => write!(line, " — |"),
            };
        }
        let _ = writeln!(out, "{line}");
    }
    out.push('\n');
    for n in &s.notes {
        let _ = writeln!(out, "- {n}");
    }
    if !s.notes.is_empty() {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn step_times_from_rbuild_plain_progress() {
        let log =
            "building stages: stage-0\n#1 [stage-0 1/3] FROM r/busybox:latest\n#1 DONE 2.0s\n\
                   #2 [stage-0 2/3] RUN for i in $(seq 1 10); do mkdir -p /data/d$i; done\n\
                   #2 DONE 15.7s (layer 30078674 bytes)\n\
                   writing image sha256:b7 done (18.4s)\nnaming to x done\n";
        assert_eq!(
            super::rbuild_step_times(log),
            "`FROM r/busybox:latest` 2.0s; `RUN for i in $(seq 1 10)…` 15.7s (layer \
             30078674 bytes); total 18.4s"
        );
        let with_phases = format!(
            "{log}phases: pull 0.00s, extract 1.20s, run 14.10s, snapshot 0.30s, write 1.00s \
             (compress 0.70s), push 0.00s, cache 0.01s\n"
        );
        assert_eq!(
            super::rbuild_step_times(&with_phases),
            "`FROM r/busybox:latest` 2.0s; `RUN for i in $(seq 1 10)…` 15.7s (layer \
             30078674 bytes); total 18.4s; phases: pull 0.00s, extract 1.20s, run 14.10s, \
             snapshot 0.30s, write 1.00s (compress 0.70s), push 0.00s, cache 0.01s"
        );
        let two_builds = "phases: pull 1.00s\n#1 [x 1/1] FROM y\nphases: pull 0.00s, run 2.00s\n";
        assert_eq!(
            super::rbuild_phases(two_builds).as_deref(),
            Some("phases: pull 0.00s, run 2.00s")
        );
        assert_eq!(super::rbuild_phases("#1 DONE 0.1s\n"), None);
    }

    #[test]
    fn the_hand_written_part_survives() {
        let old = format!("# Benchmarks\ntable\n{}\nmy analysis\n", super::KEEP_MARKER);
        assert_eq!(
            super::kept_part(&old),
            Some(format!("{}\nmy analysis\n", super::KEEP_MARKER).as_str())
        );
        assert_eq!(super::kept_part("no marker"), None);
    }

    use super::*;
    use crate::bench::measure::Sample;
    use std::time::Duration;

    fn ok(secs: f64) -> Sample {
        Sample {
            wall: Duration::from_secs_f64(secs),
            max_rss_kib: 2048,
            ..Sample::default()
        }
    }

    fn cell(tool: &str, samples: Vec<Sample>) -> Cell {
        Cell {
            tool: tool.into(),
            samples,
            unsupported: None,
        }
    }

    fn row(cells: Vec<Cell>) -> Row {
        Row {
            name: "tiny".into(),
            what: "w".into(),
            cells,
            cacheable_steps: None,
            bytes: None,
            millis: false,
        }
    }

    #[test]
    fn medians_and_per_pair_ratios() {
        let s = Section {
            title: "t".into(),
            intro: "i".into(),
            rows: vec![row(vec![
                cell("rbuild", vec![ok(1.0), ok(2.0)]),
                cell("buildah", vec![ok(4.0), ok(4.0)]),
            ])],
            notes: vec!["a note".into()],
        };
        let text = render_section(&s);
        assert!(
            text.contains("| tiny | w | 1.50 s | 4.00 s | 0.38 | 2 MiB |"),
            "{text}"
        );
        assert!(text.contains("rbuild/buildah"), "{text}");
        assert!(text.ends_with("- a note\n\n"), "{text}");
    }

    #[test]
    fn failures_and_unsupported_cells_are_shown_not_timed() {
        let failed = Sample {
            error: Some("failed: no | engine".into()),
            ..ok(1.0)
        };
        let mut unsupported = cell("rbuild", vec![]);
        unsupported.unsupported = Some("failed: error: unexpected argument '--cache-to'".into());
        let s = Section {
            title: "t".into(),
            intro: "i".into(),
            rows: vec![
                row(vec![
                    cell("rbuild", vec![failed]),
                    cell("buildah", vec![ok(4.0)]),
                ]),
                row(vec![unsupported, cell("buildah", vec![ok(4.0)])]),
            ],
            notes: vec![],
        };
        let text = render_section(&s);
        assert!(
            text.contains("failed: no / engine | 4.00 s | — |"),
            "{text}"
        );
        assert!(
            text.contains(
                "unsupported (failed: error: unexpected argument '--cache-to') | 4.00 s | — |"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_limit_gives_each_tool_its_overhead_and_rbuild_its_ratio_to_the_best_peer() {
        let mut failed = ok(1.0);
        failed.error = Some("failed: x".into());
        let s = Section {
            title: "t".into(),
            intro: "i".into(),
            rows: vec![
                row(vec![
                    cell("rbuild", vec![ok(3.0), ok(3.0)]),
                    cell("buildah", vec![ok(6.0), ok(6.0)]),
                    cell("kaniko", vec![ok(4.0), ok(4.0)]),
                    cell("docker", vec![failed]),
                    cell(LIMIT, vec![ok(2.0), ok(2.0)]),
                ]),
                // A peer at the limit leaves no ratio; a row without a limit shows none.
                row(vec![
                    cell("rbuild", vec![ok(2.5)]),
                    cell("buildah", vec![ok(0.5)]),
                    cell(LIMIT, vec![ok(0.5)]),
                ]),
                row(vec![cell("rbuild", vec![ok(1.0)])]),
            ],
            notes: vec![],
        };
        let text = render_section(&s);
        assert!(
            text.contains(
                "| row | what | rbuild | buildah | kaniko | docker | limit | rbuild/buildah | \
                 rbuild/kaniko | rbuild/docker | rbuild overhead / best peer's | rbuild peak RSS |"
            ),
            "{text}"
        );
        // rbuild 1 s above the limit, the best peer (kaniko) 2 s: 0.50; the failed peer
        // is not the best.
        assert!(
            text.contains(
                "| tiny | w | 3.00 s (+1.00 s) | 6.00 s (+4.00 s) | 4.00 s (+2.00 s) | \
                 failed: x | 2.00 s | 0.50 | 0.75 | — | 0.50 | 2 MiB |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| 2.50 s (+2.00 s) | 500 ms (+0 ms) | n/a | n/a | 500 ms | 5.00 | n/a | n/a | — |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| 1.00 s | n/a | n/a | n/a | n/a | n/a | n/a | n/a | — |"),
            "{text}"
        );
        assert_eq!(fmt_signed(-0.25, false), "−250 ms");

        // The pod's floor is a floor, not a peer: no ratio column, never the best peer
        // (its 0.5 s above the limit would otherwise be the smallest overhead).
        let s = Section {
            title: "t".into(),
            intro: "i".into(),
            rows: vec![row(vec![
                cell("rbuild", vec![ok(3.0)]),
                cell("kaniko", vec![ok(4.0)]),
                cell(LIMIT, vec![ok(2.0)]),
                cell(POD_LIMIT, vec![ok(2.5)]),
            ])],
            notes: vec![],
        };
        let text = render_section(&s);
        assert!(
            text.contains(
                "| row | what | rbuild | kaniko | limit | pod-limit | rbuild/kaniko | \
                 rbuild overhead / best peer's | rbuild peak RSS |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| tiny | w | 3.00 s (+1.00 s) | 4.00 s (+2.00 s) | 2.00 s | 2.50 s (+500 ms) | 0.75 | 0.50 | 2 MiB |"),
            "{text}"
        );
    }

    #[test]
    fn cached_steps_throughput_and_missing_tools() {
        let mut warm = ok(0.25);
        warm.cached = Some(9);
        let mut r = row(vec![cell("rbuild", vec![warm]), cell("x", vec![ok(2.0)])]);
        r.cacheable_steps = Some(10);
        assert_eq!(cell_text(&r, &r.cells[0]), "250 ms (9/10 cached)");
        r.cacheable_steps = None;
        r.bytes = Some(1_000_000_000);
        assert_eq!(cell_text(&r, &r.cells[1]), "2.00 s (500 MB/s)");
        let other = row(vec![cell("rbuild", vec![ok(1.0)])]);
        let s = Section {
            title: "t".into(),
            intro: String::new(),
            rows: vec![r, other],
            notes: vec![],
        };
        let text = render_section(&s);
        assert!(text.contains("| 1.00 s | n/a | n/a |"), "{text}");
    }
}
