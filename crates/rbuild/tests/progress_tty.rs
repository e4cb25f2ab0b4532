//! `rbuild build --progress tty|auto` end to end: the binary under a real pseudo-terminal
//! (util-linux `script`, from the essential package bsdutils), and with stderr a pipe.
//! Runs native builds, so as root (CI does).

use std::path::Path;
use std::process::{Command, Stdio};

use rbuild_testutil::{require_binary, require_root, Registry};

mod common;
use common::{ok, rbuild, store_with_busybox};

/// Two stages, the second copying from the first; the first prints, then sleeps long
/// enough for the live view to tick.
const TWO_STAGES: &str = "\
ARG BASE=busybox
FROM $BASE AS first
RUN echo first-output && sleep 1 && touch /first.txt
FROM $BASE
RUN echo second-output
COPY --from=first /first.txt /first.txt
";

fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    dir
}

fn sh_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Runs `rbuild --root ROOT ARGS` with stdout and stderr on a new pseudo-terminal, with
/// `env` set; returns whether it succeeded and everything the terminal received.
fn under_terminal(root: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    require_binary("/usr/bin/script", "bsdutils");
    let mut words = vec![
        sh_quote(env!("CARGO_BIN_EXE_rbuild")),
        "--root".to_string(),
        sh_quote(root.to_str().unwrap()),
    ];
    words.extend(args.iter().map(|a| sh_quote(a)));
    let mut script = Command::new("/usr/bin/script");
    script
        .args(["-q", "-e", "-f", "-c", &words.join(" "), "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env_remove("RBUILD_ENGINE")
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    for (key, value) in env {
        script.env(key, value);
    }
    let out = script.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The text of `raw` without escape sequences and carriage returns, as lines.
fn plain_lines(raw: &str) -> Vec<String> {
    let mut text = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: parameters up to the final letter.
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            '\r' => {}
            c => text.push(c),
        }
    }
    text.lines().map(str::to_string).collect()
}

/// Whether `raw` moves the cursor up (`ESC [ n A`).
fn moves_cursor_up(raw: &str) -> bool {
    raw.split("\x1b[").skip(1).any(|rest| {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        digits > 0 && rest[digits..].starts_with('A')
    })
}

fn line_with<'a>(lines: &'a [String], start: &str, also: &str) -> Option<&'a String> {
    lines
        .iter()
        .find(|l| l.starts_with(start) && l.contains(also))
}

#[test]
fn progress_tty_draws_a_live_view_and_auto_follows_the_terminal() {
    require_root("native builds in this test");
    // The base comes from a real registry, so its pull reports under the live view too.
    let registry = Registry::start();
    let base = format!("{}/base/busybox:latest", registry.host());
    ok(rbuild(store_with_busybox().path())
        .args(["push", "-q", "busybox:latest", &base])
        .output()
        .unwrap());
    let store = tempfile::tempdir().unwrap();
    let ctx = context(TWO_STAGES);
    let ctx_path = ctx.path().to_str().unwrap();
    let base_arg = format!("BASE={base}");

    // --progress tty in a terminal: the live view.
    let (success, raw) = under_terminal(
        store.path(),
        &[
            "build",
            "--progress",
            "tty",
            "--build-arg",
            &base_arg,
            "-t",
            "two:1",
            ctx_path,
        ],
        &[("TERM", "xterm")],
    );
    assert!(success, "the build failed:\n{raw}");
    assert!(moves_cursor_up(&raw), "no cursor movement:\n{raw:?}");
    assert!(raw.contains("\x1b[2K"), "no line clearing:\n{raw:?}");
    assert!(raw.contains("\x1b[32mDONE"), "no colour:\n{raw:?}");
    let lines = plain_lines(&raw);
    let first_run = "[first 2/2] RUN echo first-output && sleep 1";
    // While it slept, the running step showed a timer and its output line under it.
    let running = line_with(&lines, first_run, "touch /first.txt  ")
        .unwrap_or_else(|| panic!("no running line for the first stage's RUN:\n{lines:#?}"));
    assert!(running.ends_with('s'), "{running}");
    assert!(
        lines.iter().any(|l| l == "  first-output"),
        "the RUN's output was not shown under it:\n{lines:#?}"
    );
    // Finished steps are printed once, for good, with their status.
    for (start, status) in [
        (first_run, "DONE"),
        ("[stage-1 2/3] RUN echo second-output", "DONE"),
        ("[stage-1 3/3] COPY --from=first", "DONE"),
        ("[first 1/2] FROM ", "DONE"),
    ] {
        assert!(
            line_with(&lines, start, status).is_some(),
            "no {status} line for {start}:\n{lines:#?}"
        );
    }
    // The base's pull printed its lines above the view (the store was empty).
    assert!(
        lines.iter().any(|l| l.starts_with("Pulled sha256:")),
        "no pull lines:\n{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("writing image sha256:")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l == "naming to two:1 done"),
        "{lines:#?}"
    );

    // --progress auto with stderr a pipe (CI, logs): plain lines, no escapes.
    let out = ok(rbuild(store.path())
        .args(["build", "--progress", "auto", "--no-cache"])
        .args(["--build-arg", &base_arg, ctx_path])
        .output()
        .unwrap());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("#2 [first 2/2] RUN echo first-output"),
        "{log}"
    );
    assert!(log.contains("#2 first-output"), "{log}");
    assert!(log.contains("#2 DONE"), "{log}");
    assert!(!log.contains('\x1b'), "escapes in plain output:\n{log:?}");

    // In a terminal that cannot move its cursor, auto is plain too.
    let (success, raw) = under_terminal(
        store.path(),
        &[
            "build",
            "--progress",
            "auto",
            "--build-arg",
            &base_arg,
            ctx_path,
        ],
        &[("TERM", "dumb")],
    );
    assert!(success, "{raw}");
    assert!(
        raw.contains("#2 [first 2/2] RUN echo first-output"),
        "{raw}"
    );
    assert!(!raw.contains('\x1b'), "escapes with TERM=dumb:\n{raw:?}");
}

#[test]
fn a_failing_step_stays_visible_above_the_error() {
    require_root("native builds in this test");
    let store = store_with_busybox();
    let ctx = context("FROM busybox\nRUN echo the-last-words && sleep 0.3 && exit 3\n");

    // auto in a terminal is the live view; NO_COLOR keeps the cursor moves, drops colour.
    let (success, raw) = under_terminal(
        store.path(),
        &["build", ctx.path().to_str().unwrap()],
        &[("TERM", "xterm"), ("NO_COLOR", "1")],
    );
    assert!(!success, "the build should have failed:\n{raw}");
    assert!(
        moves_cursor_up(&raw),
        "auto did not pick the live view:\n{raw:?}"
    );
    assert!(
        !raw.contains("\x1b[0m"),
        "colour despite NO_COLOR:\n{raw:?}"
    );
    let lines = plain_lines(&raw);
    let failed = lines
        .iter()
        .position(|l| {
            l.starts_with("[stage-0 2/2] RUN echo the-last-words") && l.contains("did not finish")
        })
        .unwrap_or_else(|| panic!("the failed step was not kept:\n{lines:#?}"));
    assert_eq!(lines[failed + 1], "  the-last-words", "{lines:#?}");
    let error = lines
        .iter()
        .position(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error message:\n{lines:#?}"));
    assert!(
        error > failed,
        "the error must follow the view:\n{lines:#?}"
    );
}
