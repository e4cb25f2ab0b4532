//! Commands on the local image store: `images`, `inspect`, `tag`, `rmi`, `prune`, `save`,
//! `load`. Each has a clap `Args` struct and a `run_*` function; all logic is in rbuild-store.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rbuild_image::Reference;
use rbuild_store::archive::{self, ArchiveFormat};
use rbuild_store::{ImageRecord, Store, StoreError};

use super::Globals;

mod human;
mod prune;

pub use prune::{run_prune, PruneArgs};

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
        let size = match image.remote_size {
            0 => human::size(image.size),
            remote => format!(
                "{} ({} remote)",
                human::size(image.size),
                human::size(remote)
            ),
        };
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
    // gzip at the default level, as a push without build options sends them.
    let layers = rbuild_layer::WriteOptions::default();
    if args.output.as_os_str() == "-" {
        let stdout = std::io::stdout().lock();
        archive::save(
            &store,
            &records,
            format,
            &layers,
            std::io::BufWriter::new(stdout),
        )?;
        return Ok(0);
    }
    rbuild_session::export::write_archive_file(&store, &records, format, &layers, &args.output)?;
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
