//! Running commands and measuring them: wall time and the peak resident memory of the
//! process tree waited for (from `wait4`'s rusage, so no sampling is involved).

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// What one run cost, or why it failed.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub wall: Duration,
    /// Peak RSS in KiB of the largest process the commands waited for.
    pub max_rss_kib: u64,
    pub error: Option<String>,
    /// Build steps answered from the cache, for the runs where that matters.
    pub cached: Option<usize>,
    /// The wall time of each command run, in order (their sum is `wall`): the restricted
    /// pod's container creation, the build in it and its removal are reported apart.
    pub parts: Vec<Duration>,
}

/// Runs `cmds` one after another (stopping at the first failure) with their output
/// appended to `log`, and measures them together.
pub fn run(cmds: Vec<Command>, log: &Path) -> Result<Sample> {
    File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut total = Sample::default();
    for cmd in cmds {
        let s = run_one(cmd, log)?;
        total.wall += s.wall;
        total.parts.push(s.wall);
        total.max_rss_kib = total.max_rss_kib.max(s.max_rss_kib);
        if s.error.is_some() {
            total.error = s.error;
            break;
        }
    }
    Ok(total)
}

/// A command running longer than this is killed (with its process group) and reported
/// as failed, so that one hung tool cannot stall the whole benchmark.
pub const TIMEOUT: Duration = Duration::from_secs(15 * 60);

fn run_one(cmd: Command, log: &Path) -> Result<Sample> {
    run_with_timeout(cmd, log, TIMEOUT)
}

fn run_with_timeout(mut cmd: Command, log: &Path, timeout: Duration) -> Result<Sample> {
    use std::os::unix::process::CommandExt as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let out = OpenOptions::new().append(true).open(log)?;
    let err = out.try_clone()?;
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let pid = child.id() as libc::pid_t;
    let done = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (done, timed_out) = (done.clone(), timed_out.clone());
        std::thread::spawn(move || {
            while start.elapsed() < timeout {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !done.load(Ordering::SeqCst) {
                timed_out.store(true, Ordering::SeqCst);
                // SAFETY: the child's own process group (it is not reaped before `done`).
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        })
    };
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet reaped; the pointers are to live locals.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    done.store(true, Ordering::SeqCst);
    let _ = watchdog.join();
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("wait4");
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let error = if timed_out.load(Ordering::SeqCst) {
        Some(format!("failed: killed after {} s", timeout.as_secs()))
    } else {
        (!ok).then(|| {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            format!("failed: {}", reason(&text))
        })
    };
    Ok(Sample {
        wall,
        max_rss_kib: usage.ru_maxrss as u64,
        error,
        cached: None,
        parts: vec![wall],
    })
}

/// The line of a failed command's output that says why: the last one mentioning an error,
/// else the last non-empty one (clap, for one, ends with a "try --help" line).
pub fn reason(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find(|l| l.to_ascii_lowercase().contains("error"))
        .or(lines.last())
        .map(|l| l.to_string())
        .unwrap_or_else(|| "(no output)".into())
}

/// The median of a list (the mean of the two middle values for even lengths).
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn median_of_odd_and_even_lists() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn run_reports_failure_with_the_line_that_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let s = run(
            vec![sh(
                "echo first; echo 'error: the reason' >&2; echo 'try --help'; exit 3",
            )],
            &dir.path().join("log"),
        )
        .unwrap();
        assert_eq!(s.error.as_deref(), Some("failed: error: the reason"));
        let s = run(vec![sh("true")], &dir.path().join("log2")).unwrap();
        assert!(s.error.is_none());
        assert!(s.max_rss_kib > 0);
    }

    #[test]
    fn a_hung_command_is_killed_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "").unwrap();
        let s = run_with_timeout(sh("sleep 30"), &log, Duration::from_millis(300)).unwrap();
        assert_eq!(s.error.as_deref(), Some("failed: killed after 0 s"));
        assert!(s.wall < Duration::from_secs(10));
    }

    #[test]
    fn a_sequence_stops_at_the_first_failure_and_keeps_all_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let s = run(
            vec![sh("echo one"), sh("echo two; exit 1"), sh("echo three")],
            &log,
        )
        .unwrap();
        assert_eq!(s.error.as_deref(), Some("failed: two"));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\n");
    }

    #[test]
    fn each_commands_time_is_kept_apart_and_they_sum_to_the_wall_time() {
        let dir = tempfile::tempdir().unwrap();
        let s = run(
            vec![sh("true"), sh("sleep 0.3"), sh("true")],
            &dir.path().join("log"),
        )
        .unwrap();
        assert!(s.error.is_none());
        assert_eq!(s.parts.len(), 3);
        assert!(s.parts[1] >= Duration::from_millis(300), "{:?}", s.parts);
        assert!(
            s.parts[0] < s.parts[1] && s.parts[2] < s.parts[1],
            "{:?}",
            s.parts
        );
        assert_eq!(s.parts.iter().sum::<Duration>(), s.wall);
    }
}
