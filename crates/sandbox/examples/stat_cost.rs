//! What the restricted supervisor costs a stat-bound command: runs each shell command given
//! (default: `find /usr -xdev | wc -l` and `ls -lR /usr >/dev/null`) unsupervised and under
//! the restricted filter (`restricted::run_command`), `--runs N` times each, and prints the
//! wall times. The figures in docs/sandbox.md ("Owners as root sees them") come from it:
//! `cargo run -p rbuild-sandbox --example stat_cost`.

use std::process::Command;
use std::time::Instant;

fn main() {
    let mut runs = 2;
    let mut commands = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--runs" {
            let value = args.next().unwrap_or_default();
            runs = match value.parse() {
                Ok(n) => n,
                Err(_) => {
                    eprintln!("--runs takes a number, got {value:?}");
                    std::process::exit(2);
                }
            };
        } else {
            commands.push(arg);
        }
    }
    if commands.is_empty() {
        commands = vec![
            "find /usr -xdev | wc -l >/dev/null".to_string(),
            "ls -lR /usr >/dev/null".to_string(),
        ];
    }
    for command in &commands {
        for run in 1..=runs {
            let started = Instant::now();
            let status = Command::new("/bin/sh").args(["-c", command]).status();
            let plain = started.elapsed();
            if !matches!(&status, Ok(s) if s.success()) {
                eprintln!("{command:?} failed unsupervised: {status:?}");
                std::process::exit(1);
            }
            let started = Instant::now();
            let finished = rbuild_sandbox::restricted::run_command(&["/bin/sh", "-c", command]);
            let supervised = started.elapsed();
            match finished {
                Ok(f) if f.exit_code() == Some(0) => {}
                other => {
                    eprintln!("{command:?} failed supervised: {other:?}");
                    std::process::exit(1);
                }
            }
            println!(
                "{command}\trun {run}\tunsupervised {:.2} s\tsupervised {:.2} s",
                plain.as_secs_f64(),
                supervised.as_secs_f64()
            );
        }
    }
}
