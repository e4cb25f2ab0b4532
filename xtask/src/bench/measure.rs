//! Running one command and measuring it: wall time and the peak resident memory of the
//! process tree it waited for (from `wait4`'s rusage, so no sampling is involved).

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// What one run cost, or why it failed.
#[derive(Debug, Clone)]
pub struct Sample {
    pub wall: Duration,
    /// Peak RSS in KiB of the largest process the command waited for.
    pub max_rss_kib: u64,
    pub error: Option<String>,
}

/// Runs `cmd` with its output going to `log`, and measures it.
pub fn run(mut cmd: Command, log: &Path) -> Result<Sample> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet reaped; the pointers are to live locals.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("wait4");
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let error = (!ok).then(|| {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("(no output)");
        format!("failed: {}", last.trim())
    });
    Ok(Sample {
        wall,
        max_rss_kib: usage.ru_maxrss as u64,
        error,
    })
}

/// The median of a non-empty list (the mean of the two middle values for even lengths).
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

    #[test]
    fn median_of_odd_and_even_lists() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }

    #[test]
    fn run_reports_failure_with_the_last_output_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Command::new("sh");
        c.args(["-c", "echo first; echo 'the reason' >&2; exit 3"]);
        let s = run(c, &dir.path().join("log")).unwrap();
        assert_eq!(s.error.as_deref(), Some("failed: the reason"));
        let mut ok = Command::new("sh");
        ok.args(["-c", "true"]);
        let s = run(ok, &dir.path().join("log2")).unwrap();
        assert!(s.error.is_none());
        assert!(s.max_rss_kib > 0);
    }
}
