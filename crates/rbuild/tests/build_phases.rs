//! `rbuild build` reports where its time went, per phase: one `phases:` line at the end of
//! plain progress, a `phases` event in JSON progress and `rbuild.phases` in the metadata
//! file. A real build (busybox base made by rbuild, a COPY and a RUN) and a real push to a
//! real registry. Runs as root (CI does).

use std::path::Path;

use rbuild_testutil::{require_root, Registry};

mod common;
use common::{ok, rbuild, store_with_busybox};

const PHASES: [&str; 7] = [
    "pull", "extract", "run", "snapshot", "write", "push", "cache",
];

/// The phases line's entries: `name N.NNs`, with `(compress N.NNs)` after write.
fn parse_phases(line: &str) -> Vec<(String, f64)> {
    let text = line
        .strip_prefix("phases: ")
        .unwrap_or_else(|| panic!("not a phases line: {line:?}"));
    let secs = |s: &str| -> f64 {
        s.strip_suffix('s')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{s:?} in {line:?} is not a time"))
    };
    let mut out = Vec::new();
    for entry in text.split(", ") {
        let (name, rest) = entry.split_once(' ').unwrap();
        let (time, extra) = match rest.split_once(" (") {
            Some((time, extra)) => (time, Some(extra)),
            None => (rest, None),
        };
        out.push((name.to_string(), secs(time)));
        if let Some(extra) = extra {
            let inner = extra.strip_suffix(')').unwrap();
            let (name, time) = inner.split_once(' ').unwrap();
            out.push((name.to_string(), secs(time)));
        }
    }
    out
}

fn context(dir: &Path) {
    std::fs::write(dir.join("app.txt"), "app\n").unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM busybox\nCOPY app.txt /app.txt\nRUN sleep 0.2 && cat /app.txt > /made\n",
    )
    .unwrap();
}

#[test]
fn plain_json_and_metadata_report_time_per_phase() {
    require_root("native builds in this test");
    let root = store_with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path());

    // Plain: the last line says where the time went.
    let out = ok(rbuild(root.path())
        .args(["build", "--progress", "plain", "-t", "app"])
        .arg(ctx.path())
        .output()
        .unwrap());
    let log = String::from_utf8_lossy(&out.stderr);
    let last = log.lines().last().unwrap_or_default();
    assert_eq!(log.matches("phases: ").count(), 1, "{log}");
    let phases = parse_phases(last);
    let names: Vec<&str> = phases.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["pull", "extract", "run", "snapshot", "write", "compress", "push", "cache"],
        "{last}"
    );
    let time = |name: &str| phases.iter().find(|(n, _)| n == name).unwrap().1;
    // The RUN sleeps 0.2 s inside the sandbox.
    assert!(time("run") >= 0.2, "{last}");
    assert!(time("compress") <= time("write"), "{last}");
    assert_eq!(time("push"), 0.0, "nothing was pushed: {last}");

    // JSON and the metadata file, with a real push: the same phases, with counts.
    let registry = Registry::start();
    let tag = format!("{}/phases/app:1", registry.host());
    let metadata = ctx.path().join("metadata.json");
    let out = ok(rbuild(root.path())
        .args([
            "build",
            "--progress",
            "json",
            "--no-cache",
            "--push",
            "-t",
            &tag,
        ])
        .arg("--metadata-file")
        .arg(&metadata)
        .arg(ctx.path())
        .output()
        .unwrap());
    let log = String::from_utf8_lossy(&out.stderr);
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let phase_events: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["event"] == "phases").collect();
    assert_eq!(phase_events.len(), 1, "{log}");
    let json = &phase_events[0]["phases"];
    for name in PHASES {
        assert!(json[name]["seconds"].as_f64().is_some(), "{name}: {json}");
        assert!(json[name]["count"].as_u64().is_some(), "{name}: {json}");
    }
    assert_eq!(json["run"]["count"], 1, "{json}");
    assert!(json["run"]["seconds"].as_f64().unwrap() >= 0.2, "{json}");
    // COPY and RUN each wrote a gzip layer, in this process (root); the base, built in this
    // store, kept its layer plain and has it compressed as it leaves with the push.
    assert_eq!(json["write"]["count"], 2, "{json}");
    assert_eq!(json["compress"]["count"], 3, "{json}");
    assert!(json["write"]["seconds"].as_f64().unwrap() > 0.0, "{json}");
    assert_eq!(json["push"]["count"], 1, "{json}");
    assert!(json["push"]["seconds"].as_f64().unwrap() > 0.0, "{json}");
    // The base is in the store already: nothing pulled.
    assert_eq!(json["pull"]["count"], 0, "{json}");

    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metadata).unwrap()).unwrap();
    assert_eq!(&meta["rbuild.phases"], json, "{meta}");
}
