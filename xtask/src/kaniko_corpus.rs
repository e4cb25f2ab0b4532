//! `cargo xtask kaniko-corpus --shared DIR [--quick] [--out FILE] [CASE...]`: builds Kaniko's
//! integration Dockerfiles (`DIR/conformance/kaniko-dockerfiles`, rewritten to local base
//! images) with rbuild and with the reference BuildKit v0.32 (`DIR/reference/buildkit`), and
//! compares the images with `rbuild_diff` as `cargo xtask fidelity` does (times and the
//! files of `testdata/fidelity-nondeterministic.txt` aside).
//!
//! Docker Hub is not reachable, so the base images are made here: Debian's static busybox
//! with every applet linked (for busybox and alpine), a Debian bookworm minbase from
//! debootstrap (for debian and ubuntu; cached under `target/`), and the corpus's own
//! `Dockerfile_onbuild_base` built on it. rbuild builds them, pushes them under every alias
//! the Dockerfiles name to a private registry, and both builders pull them from there.
//!
//! Each case's verdict is checked against `testdata/kaniko-corpus-expected.json`: a new
//! difference fails, and so does a fixed one (the file is then to be updated).

mod bases;
mod builders;
mod cases;
mod urls;
mod user_tools;
mod verdict;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use rbuild_diff::{compare, read_image, Change, ImageSource, Options as DiffOptions};
use rbuild_testutil::Registry;

use crate::fidelity::{buildkit_error_line, lock_state, BuildKit};
use bases::{make_bases, Places};
use builders::{
    build_buildkit, build_kaniko, build_rbuild, rbuild_error_line, safe, stage_dockerfile,
    start_kaniko, Built,
};
use verdict::{Row, Verdict};

const USAGE: &str = "usage: cargo xtask kaniko-corpus --shared DIR [--kaniko] [--quick] [--out FILE] [--expected FILE] [--write-expected] [--keep DIR] [CASE...]";

/// Where the corpus and the reference builders are, below `--shared`.
const CORPUS: &str = "conformance/kaniko-dockerfiles";
const BUILDKIT: &str = "reference/buildkit";
const KANIKO: &str = "reference/kaniko";

/// The Kaniko executor image `make-image.sh` loads into the private daemon.
const KANIKO_IMAGE: &str = "kaniko-corpus-executor:1";

struct Options {
    shared: PathBuf,
    quick: bool,
    /// Build every case with Kaniko v1.28 too (in a private dockerd) and compare its image
    /// with BuildKit's.
    kaniko: bool,
    out: Option<PathBuf>,
    expected: Option<PathBuf>,
    write_expected: bool,
    /// Where to keep both images of each case (else they are deleted once compared).
    keep: Option<PathBuf>,
    cases: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        shared: PathBuf::new(),
        quick: false,
        kaniko: false,
        out: None,
        expected: None,
        write_expected: false,
        keep: None,
        cases: Vec::new(),
    };
    let mut shared = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .map(PathBuf::from)
                .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--shared" => shared = Some(value("--shared")?),
            "--out" => options.out = Some(value("--out")?),
            "--expected" => options.expected = Some(value("--expected")?),
            "--keep" => options.keep = Some(value("--keep")?),
            "--quick" => options.quick = true,
            "--write-expected" => options.write_expected = true,
            "--kaniko" => options.kaniko = true,
            flag if flag.starts_with('-') => bail!("unknown option {flag}\n{USAGE}"),
            case => options.cases.push(case.to_string()),
        }
    }
    options.shared = shared.ok_or_else(|| anyhow!("--shared DIR is required\n{USAGE}"))?;
    if options.quick && !options.cases.is_empty() {
        bail!("--quick picks the cases itself: name cases or give --quick, not both");
    }
    Ok(options)
}

/// What the corpus's own steps write differently on every run: `Dockerfile_test_cache*`
/// run `date > /date` (Kaniko's test of its cache). Left out of the comparison like the
/// package managers' logs, else the verdict would depend on whether both builders ran the
/// step within the same second.
const CORPUS_NONDETERMINISTIC: &[&str] = &["/date"];

/// The ignore patterns of `testdata/fidelity-nondeterministic.txt` and the corpus's own.
fn nondeterministic(root: &Path) -> Result<Vec<String>> {
    let mut patterns = crate::fidelity::nondeterministic_ignores(root)?;
    patterns.extend(CORPUS_NONDETERMINISTIC.iter().map(|p| p.to_string()));
    Ok(patterns)
}

/// A value shortened for a table cell.
fn short(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 100 {
        format!("{}…", text.chars().take(100).collect::<String>())
    } else {
        text
    }
}

fn change_lines(section: &str, changes: &[Change], out: &mut Vec<String>) {
    for change in changes {
        out.push(format!(
            "{section} {}: {} → {}",
            change.what,
            short(&change.a),
            short(&change.b)
        ));
    }
}

/// The verdict of one case from what each builder gave (rbuild's image is `a`).
fn judge(ours: &Built, theirs: &Built, ignore: &[String]) -> Result<Verdict> {
    Ok(match (ours, theirs) {
        (Built::Failed(o), Built::Failed(t)) => Verdict::SameError {
            rbuild: rbuild_error_line(o),
            buildkit: buildkit_error_line(t),
        },
        (Built::Failed(o), Built::Image(_)) => Verdict::RbuildFailed(rbuild_error_line(o)),
        (Built::Image(_), Built::Failed(t)) => Verdict::BuildKitFailed(buildkit_error_line(t)),
        (Built::Image(a), Built::Image(b)) => {
            let read = |p: &Path| {
                read_image(&ImageSource::Archive(p.to_path_buf(), None), None)
                    .with_context(|| format!("reading {}", p.display()))
            };
            let options = DiffOptions {
                ignore: ignore.to_vec(),
                ignore_history: false,
                ignore_timestamps: true,
            };
            let report = compare(&read(a)?, &read(b)?, &options);
            if report.equal {
                Verdict::Equal
            } else {
                let mut lines = Vec::new();
                change_lines("file", &report.files, &mut lines);
                change_lines("config", &report.config, &mut lines);
                change_lines("history", &report.history, &mut lines);
                change_lines("layer", &report.layers, &mut lines);
                Verdict::Different(lines)
            }
        }
    })
}

pub fn main(args: &[String]) -> Result<()> {
    let options = parse(args)?;
    let root = crate::fidelity::repository_root()?;
    let shared = options
        .shared
        .canonicalize()
        .with_context(|| format!("--shared {}", options.shared.display()))?;
    let corpus = shared.join(CORPUS);
    let cases_path = corpus.join("cases.json");
    let all = cases::parse_cases(
        &std::fs::read_to_string(&cases_path)
            .with_context(|| format!("reading {}", cases_path.display()))?,
    )
    .with_context(|| cases_path.display().to_string())?;
    let onbuild = all
        .iter()
        .find(|c| c.name == "Dockerfile_onbuild_base")
        .cloned();
    let selected = cases::select(all, &options.cases, options.quick)?;
    let expected_path = options
        .expected
        .clone()
        .unwrap_or_else(|| root.join("testdata/kaniko-corpus-expected.json"));
    let expected = match std::fs::read_to_string(&expected_path) {
        Ok(text) => verdict::parse_expectations(&text)
            .with_context(|| expected_path.display().to_string())?,
        Err(err) if options.write_expected && err.kind() == std::io::ErrorKind::NotFound => {
            BTreeMap::new()
        }
        Err(err) => {
            return Err(err).with_context(|| format!("reading {}", expected_path.display()))
        }
    };
    let ignore = nondeterministic(&root)?;
    let started = Instant::now();

    eprintln!("kaniko-corpus: building rbuild");
    let (bin, target_dir) = crate::fidelity::compile_rbuild(&root)?;
    let cache = target_dir.join("xtask-kaniko-corpus");

    let work = tempfile::tempdir().context("creating a work directory")?;
    let work = work.path();
    let store = work.join("store");
    let registry = Registry::start();
    let state = cache.join("buildkit");
    let _lock = lock_state(&state)?;
    eprintln!("kaniko-corpus: starting the reference BuildKit");
    let buildkit = BuildKit::start(&shared.join(BUILDKIT), &state, &registry.host())?;
    let registry_host = registry.host();
    let url_server = urls::start().context("starting the URL stand-ins")?;
    let debian_cache = cache.join("debian-base");
    let places = Places {
        bin: &bin,
        store: &store,
        work,
        cache: &debian_cache,
        registry: &registry_host,
        url_server: &url_server,
        corpus: &corpus,
    };
    make_bases(&places, &selected, onbuild.as_ref())?;
    let kaniko = if options.kaniko {
        eprintln!("kaniko-corpus: starting a private dockerd for Kaniko");
        Some(start_kaniko(&shared)?)
    } else {
        None
    };
    let setup = started.elapsed().as_secs_f64();
    eprintln!("kaniko-corpus: set-up done in {setup:.0} s");

    let mut problems = Vec::new();
    let mut rows = Vec::new();
    for case in &selected {
        let case_started = Instant::now();
        let mut kaniko_verdict = None;
        let verdict = match &case.skip {
            Some(reason) => Verdict::Skipped(reason.clone()),
            None => {
                let dockerfile =
                    stage_dockerfile(&corpus, case, (&registry_host, &url_server), work)?;
                let context = corpus.join(&case.context);
                let ours_dest = work.join(format!("{}-rbuild.tar", safe(&case.name)));
                let theirs_dest = work.join(format!("{}-buildkit.tar", safe(&case.name)));
                let kaniko_dest = work
                    .join("kaniko")
                    .join(safe(&case.name))
                    .join("kaniko.tar");
                let (ours, theirs, by_kaniko) = std::thread::scope(|scope| {
                    let theirs = scope.spawn(|| {
                        build_buildkit(&buildkit, case, &dockerfile, &context, &theirs_dest)
                    });
                    let by_kaniko = kaniko.as_ref().map(|dockerd| {
                        scope.spawn(|| -> Result<Built> {
                            if let Some(dir) = kaniko_dest.parent() {
                                std::fs::create_dir_all(dir)?;
                            }
                            build_kaniko(dockerd, &corpus, case, &dockerfile, &kaniko_dest)
                        })
                    });
                    let ours = build_rbuild(&bin, &store, case, &dockerfile, &context, &ours_dest);
                    let theirs = theirs
                        .join()
                        .unwrap_or_else(|_| Err(anyhow!("the BuildKit build panicked")));
                    let by_kaniko = by_kaniko.map(|handle| {
                        handle
                            .join()
                            .unwrap_or_else(|_| Err(anyhow!("the Kaniko build panicked")))
                    });
                    (ours, theirs, by_kaniko)
                });
                let ((ours, output), theirs) = (ours?, theirs?);
                // The work directory's name is random: out of the error lines.
                let work_name = work.display().to_string();
                let unrandom = |built: Built| match built {
                    Built::Failed(text) => Built::Failed(text.replace(&work_name, "<work>")),
                    image => image,
                };
                let (ours, theirs) = (unrandom(ours), unrandom(theirs));
                if let Some(by_kaniko) = by_kaniko {
                    kaniko_verdict = Some(judge(&unrandom(by_kaniko?), &theirs, &ignore)?);
                    let _ = std::fs::remove_file(&kaniko_dest);
                }
                for secret in &case.secret_values {
                    if output.contains(secret.as_str()) {
                        problems.push(format!(
                            "{}: a build-arg value from the environment shows in rbuild's output",
                            case.name
                        ));
                    }
                }
                let verdict = judge(&ours, &theirs, &ignore)?;
                for path in [&ours_dest, &theirs_dest] {
                    match (&options.keep, path.file_name()) {
                        (Some(keep), Some(name)) if path.is_file() => {
                            std::fs::create_dir_all(keep)
                                .with_context(|| format!("creating {}", keep.display()))?;
                            std::fs::copy(path, keep.join(name))
                                .with_context(|| format!("keeping {}", path.display()))?;
                        }
                        _ => {}
                    }
                    let _ = std::fs::remove_file(path);
                }
                verdict
            }
        };
        let wanted = expected.get(&case.name).cloned();
        if let Err(problem) = verdict::check(&case.name, &verdict, wanted.as_deref()) {
            problems.push(problem);
        }
        let seconds = case_started.elapsed().as_secs_f64();
        eprintln!(
            "kaniko-corpus: {:<48} {:<15} ({seconds:.1} s) {}",
            case.name,
            verdict.label(),
            verdict.detail()
        );
        if let Some(k) = &kaniko_verdict {
            eprintln!(
                "kaniko-corpus: {:<48} Kaniko: {}",
                "",
                k.label().replace("rbuild", "kaniko")
            );
        }
        rows.push(Row {
            case: case.name.clone(),
            verdict,
            expected: wanted,
            seconds,
            kaniko: kaniko_verdict,
        });
    }
    drop(buildkit);
    drop(kaniko);

    let verdicts: Vec<(String, Verdict)> = rows
        .iter()
        .map(|r| (r.case.clone(), r.verdict.clone()))
        .collect();
    let counts = verdict::counts(&verdicts);
    let mut summary = format!(
        "{} cases in {:.0} s (set-up {setup:.0} s): rbuild vs BuildKit {counts:?}",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    let by_kaniko: Vec<(String, Verdict)> = rows
        .iter()
        .filter_map(|r| r.kaniko.clone().map(|k| (r.case.clone(), k)))
        .collect();
    if !by_kaniko.is_empty() {
        summary.push_str(&format!(
            "; Kaniko vs BuildKit {:?} (rbuild-failed: Kaniko failed)",
            verdict::counts(&by_kaniko)
        ));
    }
    eprintln!("kaniko-corpus: {summary}");
    if let Some(out) = &options.out {
        let text = format!(
            "# Kaniko's integration Dockerfiles: rbuild vs BuildKit v0.32\n\n{summary}\n\n{}",
            verdict::table(&rows)
        );
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    }
    if options.write_expected {
        let updated = verdict::expectations_from(&verdicts, &expected);
        let mut text = serde_json::to_string_pretty(&updated)?;
        text.push('\n');
        std::fs::write(&expected_path, text)
            .with_context(|| format!("writing {}", expected_path.display()))?;
        eprintln!("kaniko-corpus: wrote {}", expected_path.display());
        return Ok(());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        for p in &problems {
            eprintln!("kaniko-corpus: {p}");
        }
        bail!("{} problems (above)", problems.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_need_shared_and_refuse_what_they_cannot_do() {
        assert!(parse(&args(&["--quick"])).is_err());
        let o = parse(&args(&["--shared", "s", "--out", "r.md", "a", "b"])).unwrap();
        assert_eq!(o.shared, PathBuf::from("s"));
        assert_eq!(o.out, Some(PathBuf::from("r.md")));
        assert_eq!(o.cases, ["a", "b"]);
        assert!(parse(&args(&["--shared", "s", "--quick", "a"])).is_err());
        assert!(parse(&args(&["--shared", "s", "--bogus"])).is_err());
        assert!(parse(&args(&["--shared"])).is_err());
        assert!(parse(&args(&["--shared", "s", "--kaniko"])).unwrap().kaniko);
        assert!(!parse(&args(&["--shared", "s"])).unwrap().kaniko);
    }

    #[test]
    fn failures_on_either_side_are_told_apart() {
        let failed = |s: &str| Built::Failed(s.to_string());
        let both = judge(
            &failed("step 2\nError: RUN exited with 42\n"),
            &failed("error: failed to solve: exit code: 42\n"),
            &[],
        )
        .unwrap();
        assert_eq!(
            both,
            Verdict::SameError {
                rbuild: "Error: RUN exited with 42".into(),
                buildkit: "error: failed to solve: exit code: 42".into()
            }
        );
        let reason = judge(
            &failed("error: Dockerfile:6: COPY a* b dest\n  When using COPY with more than one source file\nnot indented\n"),
            &Built::Image(PathBuf::from("/x.tar")),
            &[],
        )
        .unwrap();
        assert_eq!(
            reason,
            Verdict::RbuildFailed(
                "error: Dockerfile:6: COPY a* b dest: When using COPY with more than one source file".into()
            )
        );
        let image = Built::Image(PathBuf::from("/nonexistent.tar"));
        assert_eq!(
            judge(&failed("boom"), &image, &[]).unwrap().label(),
            "rbuild-failed"
        );
        assert_eq!(
            judge(&image, &failed("error: x"), &[]).unwrap(),
            Verdict::BuildKitFailed("error: x".into())
        );
        // Two images that cannot be read are an error, not a verdict.
        assert!(judge(&image, &image, &[]).is_err());
    }

    #[test]
    fn the_ignores_are_fidelitys_and_the_corpus_date() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let ignore = nondeterministic(&root).unwrap();
        assert!(ignore.iter().any(|p| p == "/var/log/apt"), "{ignore:?}");
        assert!(ignore.iter().any(|p| p == "/date"), "{ignore:?}");
        assert!(!ignore.iter().any(|p| p.starts_with('#') || p.is_empty()));
    }

    #[test]
    fn case_names_become_safe_file_names() {
        assert_eq!(safe("with-context/issue-57"), "with-context-issue-57");
        assert_eq!(safe("../x"), "..-x");
        assert!(!safe("a/../../b").contains('/'));
    }

    #[test]
    fn the_committed_expectations_parse_and_name_only_real_cases() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text =
            std::fs::read_to_string(root.join("testdata/kaniko-corpus-expected.json")).unwrap();
        let expected = verdict::parse_expectations(&text).unwrap();
        assert!(expected.len() >= cases::QUICK.len());
        for name in cases::QUICK {
            assert!(expected.contains_key(*name), "{name} has no expectation");
        }
        assert!(
            !expected.values().any(|l| l == "unexplained"),
            "every difference is named"
        );
    }
}
