//! `rbuild prune`: untagged images, build cache over the given limits, unused blobs.

use anyhow::Result;

use super::human;
use crate::cmd::Globals;

/// Remove untagged images, build cache beyond the given limits, and every blob nothing
/// uses. Without `--keep-storage`, `--filter` or `--all` the build cache is kept (it is
/// bounded by default to 10% of the store's file system, at most 20 GB).
#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Keep at most this much build cache (`512MB`, `10GB`, `1.5GiB`, bytes), dropping
    /// the least recently used first.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub keep_storage: Option<u64>,
    /// `until=DURATION`: drop build cache not used for DURATION (`24h`, `90m`, `7d`).
    #[arg(long, value_name = "until=DURATION", value_parser = parse_until)]
    pub filter: Option<std::time::Duration>,
    /// Drop the whole build cache.
    #[arg(short, long)]
    pub all: bool,
}

/// `10GB`, `512MB`, `1.5GiB`, `1024`: decimal and binary units, as Docker's `--keep-storage`.
fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 512MB or 10GB"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    Ok((value * factor) as u64)
}

/// `until=24h` (Go duration syntax, plus `d` for days).
fn parse_until(text: &str) -> std::result::Result<std::time::Duration, String> {
    let value = text
        .strip_prefix("until=")
        .ok_or_else(|| format!("unsupported filter {text:?}: only until=DURATION is"))?;
    let bad = || format!("{value:?} is not a duration like 24h, 90m or 1h30m");
    let mut total = 0f64;
    let mut number = String::new();
    for c in value.chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let n: f64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total += n * match c {
            'd' => 86_400.0,
            'h' => 3_600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => return Err(bad()),
        };
    }
    if !number.is_empty() || value.is_empty() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

pub fn run_prune(globals: &Globals, args: PruneArgs) -> Result<u8> {
    let store = globals.open_store()?;
    let untagged = store.remove_untagged()?;
    for digest in &untagged {
        println!("Deleted untagged image: {digest}");
    }
    if args.all || args.keep_storage.is_some() || args.filter.is_some() {
        let (cache, _) = store.prune_cache(&rbuild_store::CachePrunePolicy {
            keep_bytes: args.keep_storage,
            unused_for: args.filter,
            all: args.all,
        })?;
        println!(
            "Removed {} build cache records ({} kept)",
            cache.removed_records, cache.kept_records
        );
    }
    let state = rbuild_executor::prune_build_state(&store);
    if state.dead.total() > 0 {
        println!(
            "Removed {} directories that crashed builds left ({} of them holding secrets)",
            state.dead.total(),
            state.dead.secrets
        );
    }
    match state.trash {
        Ok(n) => println!("Removed {n} finished build directories"),
        Err(e) => eprintln!("warning: emptying the store's trash: {e}"),
    }
    match state.trees {
        Ok(Some(n)) => println!("Removed {n} extracted base trees"),
        Ok(None) => println!("Kept the extracted base trees: a build is using them"),
        Err(e) => eprintln!("warning: removing the extracted base trees: {e}"),
    }
    let report = store.gc()?;
    println!(
        "Removed {} blobs and {} stale temp files; total reclaimed space: {}",
        report.removed_blobs.len(),
        report.removed_temp_files,
        human::size(report.freed_bytes)
    );
    Ok(0)
}

#[cfg(test)]
mod prune_flag_tests {
    use super::{parse_size, parse_until};
    use std::time::Duration;

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("512MB"), Ok(512_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(1_610_612_736));
        assert_eq!(parse_size("10gb"), Ok(10_000_000_000));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5XB").unwrap_err().contains("unknown size unit"));
    }

    #[test]
    fn until_takes_go_durations_and_days() {
        assert_eq!(parse_until("until=24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_until("until=1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_until("until=7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_until("until=5").is_err());
        assert!(parse_until("label=x").unwrap_err().contains("only until="));
    }
}
