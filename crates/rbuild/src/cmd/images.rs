//! Commands on the local image store: `images`, `inspect`, `tag`, `rmi`, `prune`, `save`,
//! `load`. Each has a clap `Args` struct and a `run_*` function; all logic is in rbuild-store.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rbuild_image::Reference;
use rbuild_store::archive::{self, ArchiveFormat};
use rbuild_store::{ImageRecord, Store, StoreError};

use super::Globals;

/// The tag `input` names, if it is a name of `record` (rather than an id or digest).
fn named_tag(input: &str, record: &ImageRecord) -> Option<String> {
    let reference = Reference::parse(input).ok()?;
    if reference.digest().is_some() {
        return None;
    }
    let key = reference.to_string();
    record.names.contains(&key).then_some(key)
}

fn familiar(name: &str) -> String {
    Reference::parse(name)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| name.to_string())
}

// ---------------------------------------------------------------- images

/// List images in the store.
#[derive(clap::Args, Debug)]
pub struct ImagesArgs {
    /// Print JSON (one object per image) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Print image ids only.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run_images(globals: &Globals, args: ImagesArgs) -> Result<u8> {
    let store = globals.open_store()?;
    let images = store.list_images()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &images)?;
        writeln!(out)?;
        return Ok(0);
    }
    if args.quiet {
        for image in &images {
            writeln!(out, "{}", image.id.short())?;
        }
        return Ok(0);
    }
    let now = std::time::SystemTime::now();
    let mut rows = vec![[
        "NAME".to_string(),
        "TAG".into(),
        "IMAGE ID".into(),
        "CREATED".into(),
        "SIZE".into(),
    ]];
    for image in &images {
        let created = image
            .created
            .as_deref()
            .and_then(human::parse_rfc3339)
            .map(|t| human::ago(now, t))
            .unwrap_or_else(|| "N/A".into());
        let size = human::size(image.size);
        let names: Vec<(String, String)> = if image.names.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            image
                .names
                .iter()
                .map(|n| match Reference::parse(n) {
                    Ok(r) => {
                        let familiar = r.familiar();
                        let tag = r.tag().unwrap_or("<none>").to_string();
                        let repo = familiar
                            .strip_suffix(&format!(":{tag}"))
                            .unwrap_or(&familiar)
                            .to_string();
                        (repo, tag)
                    }
                    Err(_) => (n.clone(), "<none>".into()),
                })
                .collect()
        };
        for (repo, tag) in names {
            rows.push([
                repo,
                tag,
                image.id.short().to_string(),
                created.clone(),
                size.clone(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 < row.len() {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            } else {
                line.push_str(cell);
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(0)
}

// ---------------------------------------------------------------- inspect

/// Show an image's manifest and config as JSON.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Image names, ids (or id prefixes) or manifest digests.
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,
}

pub fn run_inspect(globals: &Globals, args: InspectArgs) -> Result<u8> {
    let store = globals.open_store()?;
    let mut out = Vec::new();
    for input in &args.refs {
        let record = store.resolve(input)?;
        let manifest = store.read_manifest(&record.image_manifest.digest)?;
        let config = store.read_config(&record.config)?;
        out.push(serde_json::json!({
            "Id": record.config,
            "RepoTags": record.names.iter().map(|n| familiar(n)).collect::<Vec<_>>(),
            "Names": record.names,
            "ManifestDigest": record.manifest.digest,
            "ManifestMediaType": record.image_manifest.media_type,
            "Manifest": manifest,
            "Config": config,
        }));
    }
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, &out)?;
    writeln!(stdout)?;
    Ok(0)
}

// ---------------------------------------------------------------- tag

/// Give an image another name.
#[derive(clap::Args, Debug)]
pub struct TagArgs {
    /// The image (name, id or digest).
    pub source: String,
    /// The new name, e.g. `app:2` or `registry.example:5000/team/app:2`.
    pub target: String,
}

pub fn run_tag(globals: &Globals, args: TagArgs) -> Result<u8> {
    let store = globals.open_store()?;
    let record = store.resolve(&args.source)?;
    store
        .tag(&args.target, &record.manifest)
        .with_context(|| format!("tagging {} as {}", args.source, args.target))?;
    Ok(0)
}

// ---------------------------------------------------------------- rmi

/// Remove image names; an image is removed with its last name.
#[derive(clap::Args, Debug)]
pub struct RmiArgs {
    /// Image names, ids or digests.
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,
    /// Remove an image given by id even if it has several names.
    #[arg(short, long)]
    pub force: bool,
}

pub fn run_rmi(globals: &Globals, args: RmiArgs) -> Result<u8> {
    let store = globals.open_store()?;
    let mut failed = false;
    let mut removed_any = false;
    for input in &args.refs {
        match rmi_one(&store, input, args.force) {
            Ok(removed) => removed_any |= removed,
            Err(err) => {
                eprintln!("error: {err:#}");
                failed = true;
            }
        }
    }
    if removed_any {
        // Free the space now, as `docker rmi` does; blobs other images share are kept.
        store.gc().context("freeing the removed images' blobs")?;
    }
    Ok(u8::from(failed))
}

/// Removes one name (or a whole image given by id). Returns whether an image left the store.
fn rmi_one(store: &Store, input: &str, force: bool) -> Result<bool> {
    let record = match store.resolve(input) {
        Ok(record) => record,
        // An image whose manifest is damaged cannot be resolved, but its name can still go.
        Err(err @ StoreError::Json { .. }) | Err(err @ StoreError::DigestMismatch { .. }) => {
            let (_, gone) = store.untag(input).map_err(|_| anyhow::Error::new(err))?;
            println!("Untagged: {input}");
            return Ok(gone);
        }
        Err(err) => return Err(err.into()),
    };
    if let Some(name) = named_tag(input, &record) {
        let (_, gone) = store.untag(&name)?;
        println!("Untagged: {}", familiar(&name));
        if gone {
            println!("Deleted: {}", record.config);
        }
        return Ok(gone);
    }
    if record.names.len() > 1 && !force {
        bail!(
            "image {} has several names ({}); remove them one by one or use --force",
            record.config.short(),
            record
                .names
                .iter()
                .map(|n| familiar(n))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for name in store.remove_image(&record.manifest.digest)? {
        println!("Untagged: {}", familiar(&name));
    }
    println!("Deleted: {}", record.config);
    Ok(true)
}

// ---------------------------------------------------------------- prune

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

// ---------------------------------------------------------------- save

/// Archive format for `save`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    /// docker-archive: OCI layout plus manifest.json/repositories (`docker load`).
    Docker,
    /// oci-archive: an OCI image layout in a tar (`skopeo copy oci-archive:FILE ...`).
    Oci,
}

/// Write images to a tar archive.
#[derive(clap::Args, Debug)]
pub struct SaveArgs {
    /// Images to save (names, ids or digests).
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,
    /// The archive to write (`-` for standard output).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    #[arg(long, value_enum, default_value = "docker")]
    pub format: SaveFormat,
}

pub fn run_save(globals: &Globals, args: SaveArgs) -> Result<u8> {
    let store = globals.open_store()?;
    let mut records = Vec::new();
    for input in &args.refs {
        let mut record = store.resolve(input)?;
        // Saved by name: only that name goes into the archive, as `docker save` does.
        if let Some(name) = named_tag(input, &record) {
            record.names = vec![name];
        }
        records.push(record);
    }
    let format = match args.format {
        SaveFormat::Docker => ArchiveFormat::Docker,
        SaveFormat::Oci => ArchiveFormat::Oci,
    };
    if args.output.as_os_str() == "-" {
        let stdout = std::io::stdout().lock();
        archive::save(&store, &records, format, std::io::BufWriter::new(stdout))?;
        return Ok(0);
    }
    rbuild_session::export::write_archive_file(&store, &records, format, &args.output)?;
    Ok(0)
}

// ---------------------------------------------------------------- load

/// Load images from a docker or OCI archive (tar, optionally gzipped).
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The archive to read (`-` for standard input).
    #[arg(short, long, value_name = "FILE")]
    pub input: PathBuf,
}

pub fn run_load(globals: &Globals, args: LoadArgs) -> Result<u8> {
    let store = globals.open_store()?;
    let loaded = if args.input.as_os_str() == "-" {
        archive::load(&store, std::io::stdin().lock())?
    } else {
        let file = std::fs::File::open(&args.input)
            .with_context(|| format!("opening {}", args.input.display()))?;
        archive::load(&store, file).with_context(|| format!("loading {}", args.input.display()))?
    };
    for image in loaded {
        if image.names.is_empty() {
            let record = store.resolve(&image.manifest.digest.to_string())?;
            println!("Loaded image ID: {}", record.config);
        }
        for name in &image.names {
            println!("Loaded image: {}", familiar(name));
        }
    }
    Ok(0)
}

// ---------------------------------------------------------------- formatting

/// Docker's human-readable sizes and ages (go-units), and the RFC 3339 parsing they need.
mod human {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// Decimal units, three significant digits: `512B`, `7.83MB`, `1.2GB`.
    pub fn size(bytes: u64) -> String {
        const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
        let mut value = bytes as f64;
        let mut unit = 0;
        while value >= 1000.0 && unit + 1 < UNITS.len() {
            value /= 1000.0;
            unit += 1;
        }
        let decimals = if value >= 100.0 {
            0
        } else if value >= 10.0 {
            1
        } else {
            2
        };
        let mut text = format!("{value:.decimals$}");
        if text.contains('.') {
            text = text.trim_end_matches('0').trim_end_matches('.').to_string();
        }
        format!("{text}{}", UNITS[unit])
    }

    /// `2 hours ago`, as `docker images` prints it.
    pub fn ago(now: SystemTime, then: SystemTime) -> String {
        let d = now.duration_since(then).unwrap_or(Duration::ZERO);
        let secs = d.as_secs();
        let hours = (d.as_secs_f64() / 3600.0).round() as u64;
        let text = if secs < 1 {
            "Less than a second".to_string()
        } else if secs == 1 {
            "1 second".into()
        } else if secs < 60 {
            format!("{secs} seconds")
        } else if secs / 60 == 1 {
            "About a minute".into()
        } else if secs < 3600 {
            format!("{} minutes", secs / 60)
        } else if hours == 1 {
            "About an hour".into()
        } else if hours < 48 {
            format!("{hours} hours")
        } else if hours < 24 * 7 * 2 {
            format!("{} days", hours / 24)
        } else if hours < 24 * 30 * 2 {
            format!("{} weeks", hours / 24 / 7)
        } else if hours < 24 * 365 * 2 {
            format!("{} months", hours / 24 / 30)
        } else {
            format!("{} years", hours / 24 / 365)
        };
        format!("{text} ago")
    }

    /// Parses `2024-05-06T07:08:09.123Z` / `...+02:00`; `None` if malformed or before 1970.
    pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
        let b = text.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return None;
        }
        let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let mut rest = &text[19..];
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            rest = &frac[digits..];
        }
        let offset = match rest {
            "Z" | "z" => 0,
            _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
                let minutes =
                    rest[1..3].parse::<i64>().ok()? * 60 + rest[4..6].parse::<i64>().ok()?;
                if rest.starts_with('-') {
                    -minutes * 60
                } else {
                    minutes * 60
                }
            }
            _ => return None,
        };
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return None;
        }
        let secs =
            days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset;
        u64::try_from(secs)
            .ok()
            .map(|s| UNIX_EPOCH + Duration::from_secs(s))
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (month + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146097 + doe - 719468
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn sizes_like_docker() {
            assert_eq!(size(512), "512B");
            assert_eq!(size(1500), "1.5kB");
            assert_eq!(size(7_830_000), "7.83MB");
            assert_eq!(size(123_456_789), "123MB");
            assert_eq!(size(1_000_000_000), "1GB");
        }

        #[test]
        fn parses_rfc3339_and_prints_ages() {
            let t = parse_rfc3339("2024-05-06T07:08:09.123456789Z").unwrap();
            assert_eq!(
                t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
                1_714_979_289
            );
            let offset = parse_rfc3339("2024-05-06T09:08:09+02:00").unwrap();
            assert_eq!(offset, UNIX_EPOCH + Duration::from_secs(1_714_979_289));
            assert!(parse_rfc3339("yesterday").is_none());
            assert!(parse_rfc3339("2024-13-06T07:08:09Z").is_none());
            assert_eq!(ago(t + Duration::from_secs(7200), t), "2 hours ago");
            assert_eq!(ago(t + Duration::from_secs(90), t), "About a minute ago");
            assert_eq!(ago(t + Duration::from_secs(86400 * 3), t), "3 days ago");
            assert_eq!(ago(t + Duration::from_secs(86400 * 800), t), "2 years ago");
        }
    }
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
