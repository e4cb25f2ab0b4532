//! The peer `rbuild-restricted`: rbuild in a Kubernetes "restricted" pod, i.e. the builder
//! image for restricted pods run by `docker run --user 1000:1000 --cap-drop ALL
//! --security-opt no-new-privileges` (Docker's default seccomp profile) on the bench's
//! private dockerd, rbuild as the entrypoint, `--isolation restricted`. The images are the
//! repository Dockerfile's `restricted` (busybox bases) and `restricted-debian` (usrmerge
//! bases) targets, built from the bench's rbuild binary; a build uses the one that fits its
//! base. Compared with rbuild's user-namespace mode on the host (issue 20: ≤ 1.5×).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{Builder, Cache, Kind};
use crate::bench::measure::median;
use crate::bench::plan::Row;
use crate::bench::pod_limit::{part_kind, POD_LIMIT};
use crate::bench::report::{clean_median, LIMIT};
use crate::builder_image::RESTRICTED_POD_FLAGS as POD_FLAGS;

pub const RESTRICTED: &str = "rbuild-restricted";

/// The column beside it: rbuild on the host (user namespaces) from an empty store in every
/// run, as every run of the pod starts (`sections/cold.rs`).
pub const EMPTY_STORE: &str = "rbuild-empty-store";

/// The two images' tags in the bench's dockerd.
pub(super) const IMAGE: &str = "rbuild-bench/restricted:latest";
const DEBIAN_IMAGE: &str = "rbuild-bench/restricted-debian:latest";

/// Where a dynamically linked rbuild's loader and libraries go in the images: under
/// /rbuild, which is never a stage's (under /usr/lib they would collide with a Debian
/// stage's own).
const LIB_IN_IMAGE: &str = "/rbuild/lib";

/// Builds both images with `rbuild_bin` into the dockerd at `docker_host`, under `work`.
pub fn restricted(rbuild_bin: &Path, docker_host: &str, work: &Path) -> Result<Builder> {
    let dir = super::super::fresh_dir(&work.join("restricted-images"))?;
    let context = dir.join("context");
    let ca = std::fs::read(crate::builder_image::CA_BUNDLE).unwrap_or_default();
    for (target, top_level, tag) in [
        (
            "restricted",
            crate::builder_image::RESTRICTED_TOP_LEVEL,
            IMAGE,
        ),
        (
            "restricted-debian",
            crate::builder_image::RESTRICTED_DEBIAN_TOP_LEVEL,
            DEBIAN_IMAGE,
        ),
    ] {
        let root = context.join(target);
        crate::builder_image::lay_out_restricted(&root, rbuild_bin, &ca, top_level)?;
        if crate::builder_image::has_interpreter(rbuild_bin)? {
            bundle_libraries(rbuild_bin, &root)?;
        }
        let archive = dir.join(format!("{target}.tar"));
        run(Command::new(rbuild_bin)
            .arg("--root")
            .arg(dir.join("store"))
            .args(["build", "-q", "--target", target, "-t", tag, "-f"])
            .arg(repo_dockerfile()?)
            .arg("-o")
            .arg(format!("type=docker,dest={}", archive.display()))
            .arg(&context))?;
        run(Command::new(super::DEBIAN_DOCKER)
            .args(["-H", docker_host, "load", "-i"])
            .arg(&archive))?;
    }
    super::remove_tree(&dir)?;
    Ok(Builder {
        name: RESTRICTED.into(),
        kind: Kind::Restricted {
            docker: PathBuf::from(super::DEBIAN_DOCKER),
            host: docker_host.to_string(),
        },
    })
}

fn repo_dockerfile() -> Result<PathBuf> {
    Ok(super::super::repo_root()?.join("Dockerfile"))
}

fn run(command: &mut Command) -> Result<()> {
    let out = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Copies the loader and libraries `ldd` lists for `binary` to `root`/rbuild/lib and points
/// `root`/rbuild/bin/rbuild at them (patchelf).
fn bundle_libraries(binary: &Path, root: &Path) -> Result<()> {
    let lib = root.join(LIB_IN_IMAGE.trim_start_matches('/'));
    std::fs::create_dir_all(&lib)?;
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut loader = None;
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')).map(Path::new) else {
            continue;
        };
        let name = path.file_name().context("a library without a name")?;
        std::fs::copy(path, lib.join(name))
            .with_context(|| format!("copying {}", path.display()))?;
        if name.to_string_lossy().starts_with("ld-") {
            loader = Some(Path::new(LIB_IN_IMAGE).join(name));
        }
    }
    let loader = loader.context("ldd listed no dynamic loader for rbuild")?;
    run(Command::new("patchelf")
        .arg("--set-interpreter")
        .arg(loader)
        .args(["--set-rpath", LIB_IN_IMAGE])
        .arg(root.join("rbuild/bin/rbuild")))
    .context("patchelf (Debian package patchelf) pointing rbuild at /rbuild/lib")
}

/// The restricted pod's build of `context` in the image that fits its base, as three
/// commands timed apart (`measure::Sample::parts`): `docker create` (the container and
/// its writable layer), `docker start -a` (the runtime starting it, and rbuild's build in
/// it) and `docker rm -v` (removing it with the store it wrote). Together they are what
/// `docker run --rm` does; apart, the runtime's share is reported instead of hidden in the
/// cell. The context is read-only at /workspace, secrets read-only under /rbuild-secrets.
pub(super) fn restricted_build(
    c: Command,
    context: &Path,
    tag: &str,
    cache: Cache,
    secrets: &[(&str, &str)],
) -> Vec<Command> {
    // The bench's Debian base is `…/bench/debian:latest`; every other is busybox.
    let dockerfile = std::fs::read_to_string(context.join("Dockerfile")).unwrap_or_default();
    let debian = dockerfile
        .lines()
        .find(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM"))
        .is_some_and(|l| l.contains("/bench/debian"));
    let name = container_name();
    let mut create = same_command(&c);
    create
        .args(["create", "--name", &name, "--network", "host"])
        .args(POD_FLAGS)
        .arg("-v")
        .arg(format!("{}:/workspace:ro", context.display()));
    for (id, src) in secrets {
        create
            .arg("-v")
            .arg(format!("{src}:/rbuild-secrets/{id}:ro"));
    }
    create.arg(if debian { DEBIAN_IMAGE } else { IMAGE }).args([
        "build",
        "--isolation",
        "restricted",
        "--progress",
        "plain",
    ]);
    // Each run is a fresh pod: its store starts empty, so there is no local cache to skip.
    if cache == Cache::Off {
        create.arg("--no-cache");
    }
    for (id, _) in secrets {
        create
            .arg("--secret")
            .arg(format!("id={id},src=/rbuild-secrets/{id}"));
    }
    create.args(["-t", tag, "/workspace"]);
    let mut start = same_command(&c);
    start.args(["start", "--attach", &name]);
    let mut remove = same_command(&c);
    remove.args(["rm", "--volumes", &name]);
    vec![create, start, remove]
}

/// The parts of a restricted build's [`restricted_build`] commands, in order.
pub const PARTS: [&str; 3] = [
    "docker create",
    "docker start -a (rbuild's build)",
    "docker rm",
];

/// What a row's restricted cell is made of, as a line under the table: the median time of
/// each part ([`PARTS`]: the runtime's container creation and removal apart from the start
/// and build), and the pod's ratio to rbuild on the host with its kept store (the `rbuild`
/// column) and from an empty store ([`EMPTY_STORE`]), each with and without the
/// container's creation and removal. `None` when the row has no successful restricted run.
pub fn pod_note(row: &Row) -> Option<String> {
    let pod = row.cell(RESTRICTED)?;
    if pod.unsupported.is_some()
        || pod.samples.is_empty()
        || pod
            .samples
            .iter()
            .any(|s| s.error.is_some() || s.parts.len() != PARTS.len())
    {
        return None;
    }
    let part = |i: usize| {
        let mut secs: Vec<f64> = pod
            .samples
            .iter()
            .map(|s| s.parts[i].as_secs_f64())
            .collect();
        median(&mut secs).unwrap_or_default()
    };
    let parts: Vec<String> = PARTS
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{name} {:.2} s", part(i)))
        .collect();
    let whole = clean_median(pod)?;
    let in_container = part(1);
    let mut line = format!(
        "{} ({RESTRICTED}): {} (medians of {} runs)",
        row.name,
        parts.join(", "),
        pod.samples.len()
    );
    for (column, what) in [("rbuild", "kept store"), (EMPTY_STORE, "empty store")] {
        if let Some(host) = row.cell(column).and_then(clean_median) {
            line.push_str(&format!(
                "; against the host's {what} ({column}, {host:.2} s): {:.2}× with the \
                 container's create and rm, {:.2}× without",
                whole / host,
                in_container / host
            ));
        }
    }
    if let Some(floors) = floor_note(row, whole) {
        line.push_str(&floors);
    }
    Some(line)
}

/// The pod's time above its floor ([`POD_LIMIT`]: the same steps in a plain container)
/// against rbuild's on the host above the host's ([`LIMIT`]: in a chroot), for both host
/// columns, and the ratio with the pod's floor taken as the host's (the pod's time
/// above pod-limit on top of the limit, over the host column's time). `None` without
/// both floors.
fn floor_note(row: &Row, pod: f64) -> Option<String> {
    let floor_cell = row.cell(POD_LIMIT)?;
    let floor = clean_median(floor_cell)?;
    let limit = clean_median(row.cell(LIMIT)?)?;
    let mut kinds = [Vec::new(), Vec::new(), Vec::new()];
    for s in &floor_cell.samples {
        let mut sums = [0.0; 3];
        for (i, d) in s.parts.iter().enumerate() {
            sums[part_kind(i, s.parts.len())] += d.as_secs_f64();
        }
        for (kind, sum) in kinds.iter_mut().zip(sums) {
            kind.push(sum);
        }
    }
    let parts: Vec<String> = PARTS
        .iter()
        .zip(&mut kinds)
        .map(|(name, secs)| {
            let name = name.split(" (").next().unwrap_or(name);
            format!("{name} {:.2} s", median(secs).unwrap_or_default())
        })
        .collect();
    let above = pod - floor;
    let mut text = format!(
        "; its floor {POD_LIMIT} {floor:.2} s ({}), the host's {LIMIT} {limit:.2} s: the pod \
         {} above {POD_LIMIT}",
        parts.join(", "),
        signed(above)
    );
    for column in ["rbuild", EMPTY_STORE] {
        let Some(host) = row.cell(column).and_then(clean_median) else {
            continue;
        };
        let host_above = host - limit;
        let over = if host_above > 0.0 {
            format!("{:.2}×", above / host_above)
        } else {
            "—".into()
        };
        text.push_str(&format!(
            ", against {column}'s {} above {LIMIT}: {over} (on the host's floor the pod would \
             take {:.2} s, {:.2}× {column})",
            signed(host_above),
            limit + above,
            (limit + above) / host
        ));
    }
    Some(text)
}

/// Seconds with their sign.
fn signed(secs: f64) -> String {
    if secs < 0.0 {
        format!("−{:.2} s", -secs)
    } else {
        format!("+{secs:.2} s")
    }
}

/// A container name no other run of this process has used: a run that failed before its
/// `docker rm` leaves its container behind (in the bench's private dockerd, removed with
/// it), and the next run must not collide with it.
fn container_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    format!("rbuild-bench-restricted-{}-{run}", std::process::id())
}

/// A new command with `c`'s program and arguments (`Command` is not `Clone`).
fn same_command(c: &Command) -> Command {
    let mut copy = Command::new(c.get_program());
    copy.args(c.get_args());
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::Cell;

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_build_runs_as_the_restricted_pod_in_the_image_that_fits_its_base() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            "# syntax\nFROM 127.0.0.1:5000/bench/debian:latest\nRUN true\n",
        )
        .unwrap();
        let built = restricted_build(
            Command::new("docker"),
            dir.path(),
            "t:1",
            Cache::Off,
            &[("ca", "/etc/ca.crt")],
        );
        assert_eq!(built.len(), PARTS.len());
        let a = args(&built[0]);
        let joined = a.join(" ");
        assert_eq!(a[0], "create", "{joined}");
        let name = &a[2];
        assert!(name.starts_with("rbuild-bench-restricted-"), "{joined}");
        assert_eq!(args(&built[1]), ["start", "--attach", name.as_str()]);
        assert_eq!(args(&built[2]), ["rm", "--volumes", name.as_str()]);
        assert!(
            joined.contains("--user 1000:1000 --cap-drop ALL --security-opt no-new-privileges"),
            "{joined}"
        );
        assert!(a.contains(&DEBIAN_IMAGE.to_string()), "{joined}");
        assert!(joined.contains("--isolation restricted"), "{joined}");
        assert!(joined.contains("--no-cache"), "{joined}");
        assert!(
            joined.contains("/etc/ca.crt:/rbuild-secrets/ca:ro"),
            "{joined}"
        );
        assert!(
            joined.contains("--secret id=ca,src=/rbuild-secrets/ca"),
            "{joined}"
        );

        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM 127.0.0.1:5000/bench/busybox:latest\n",
        )
        .unwrap();
        let mut base = Command::new("docker");
        base.args(["-H", "unix:///d.sock"]);
        let again = restricted_build(base, dir.path(), "t:1", Cache::Local, &[]);
        let a = args(&again[0]);
        assert!(a.contains(&IMAGE.to_string()), "{a:?}");
        assert_ne!(a[4], args(&built[0])[2], "every run has its own container");
        for c in &again {
            assert_eq!(
                args(c)[..2],
                ["-H", "unix:///d.sock"],
                "the bench's dockerd"
            );
        }
        assert!(!a.contains(&"--no-cache".to_string()), "{a:?}");
    }

    fn sample(parts: &[f64]) -> crate::bench::measure::Sample {
        let parts: Vec<std::time::Duration> = parts
            .iter()
            .map(|s| std::time::Duration::from_secs_f64(*s))
            .collect();
        crate::bench::measure::Sample {
            wall: parts.iter().sum(),
            parts,
            ..Default::default()
        }
    }

    fn row(cells: Vec<(&str, Vec<crate::bench::measure::Sample>)>) -> Row {
        Row {
            name: "apt".into(),
            what: "apt".into(),
            cells: cells
                .into_iter()
                .map(|(tool, samples)| Cell {
                    tool: tool.into(),
                    samples,
                    unsupported: None,
                })
                .collect(),
            cacheable_steps: None,
            bytes: None,
            millis: false,
        }
    }

    #[test]
    fn the_pods_note_shows_the_runtimes_share_and_both_host_ratios() {
        let r = row(vec![
            ("rbuild", vec![sample(&[4.0]), sample(&[6.0])]),
            (EMPTY_STORE, vec![sample(&[6.0]), sample(&[6.0])]),
            (
                RESTRICTED,
                vec![sample(&[0.2, 7.0, 1.0]), sample(&[0.4, 8.0, 1.2])],
            ),
        ]);
        let note = pod_note(&r).unwrap();
        assert!(
            note.starts_with(
                "apt (rbuild-restricted): docker create 0.30 s, docker start -a (rbuild's \
                 build) 7.50 s, docker rm 1.10 s (medians of 2 runs)"
            ),
            "{note}"
        );
        // Whole pod run 8.9 s (median of 8.2 and 9.6), its build 7.5 s.
        assert!(
            note.contains("kept store (rbuild, 5.00 s): 1.78× with the container's create and rm, 1.50× without"),
            "{note}"
        );
        assert!(
            note.contains("empty store (rbuild-empty-store, 6.00 s): 1.48× with the container's create and rm, 1.25× without"),
            "{note}"
        );

        // No floors, no floor note.
        assert!(!note.contains(POD_LIMIT), "{note}");
        let failed = crate::bench::measure::Sample {
            error: Some("failed: x".into()),
            ..sample(&[0.2, 1.0])
        };
        assert!(pod_note(&row(vec![(RESTRICTED, vec![failed])])).is_none());
        assert!(pod_note(&row(vec![("rbuild", vec![sample(&[1.0])])])).is_none());
    }

    #[test]
    fn the_pods_note_sets_its_time_above_pod_limit_against_rbuilds_above_the_limit() {
        let r = row(vec![
            ("rbuild", vec![sample(&[5.0]), sample(&[5.0])]),
            (EMPTY_STORE, vec![sample(&[6.0]), sample(&[6.0])]),
            (
                RESTRICTED,
                vec![sample(&[0.2, 10.0, 0.8]), sample(&[0.2, 10.0, 0.8])],
            ),
            (LIMIT, vec![sample(&[3.0]), sample(&[3.0])]),
            // Two stages: create, create, start, start, rm, rm.
            (
                POD_LIMIT,
                vec![
                    sample(&[0.1, 0.1, 3.0, 4.0, 0.2, 0.3]),
                    sample(&[0.1, 0.1, 3.0, 4.0, 0.2, 0.3]),
                ],
            ),
        ]);
        let note = pod_note(&r).unwrap();
        // The pod 11 s, its floor 7.7 s: 3.3 s above it; rbuild 2 s above the limit's 3 s,
        // the empty store 3 s.
        assert!(
            note.contains(
                "; its floor pod-limit 7.70 s (docker create 0.20 s, docker start -a 7.00 s, \
                 docker rm 0.50 s), the host's limit 3.00 s: the pod +3.30 s above pod-limit, \
                 against rbuild's +2.00 s above limit: 1.65× (on the host's floor the pod \
                 would take 6.30 s, 1.26× rbuild), against rbuild-empty-store's +3.00 s above \
                 limit: 1.10× (on the host's floor the pod would take 6.30 s, 1.05× \
                 rbuild-empty-store)"
            ),
            "{note}"
        );
        // A failed floor run leaves the floor out, not the note.
        let mut failed = r.clone();
        failed.cells[4].samples[0].error = Some("failed: x".into());
        let note = pod_note(&failed).unwrap();
        assert!(!note.contains(POD_LIMIT), "{note}");
        assert!(
            note.contains("2.20× with the container's create and rm"),
            "{note}"
        );
    }
}
