//! `rbuild fsck`: rehash every blob in the store and check that everything the index reaches
//! is present. Exit status 1 when something is corrupt or missing.

use anyhow::Result;

use super::Globals;

/// Verify the store: every blob's content against its digest, every referenced blob present.
#[derive(clap::Args, Debug)]
pub struct FsckArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also fetch the layers still in their registry (registry-cache hits no reader has
    /// needed yet) and verify them; one that cannot be fetched is an error.
    #[arg(long)]
    pub fetch: bool,
}

pub fn run(globals: &Globals, args: FsckArgs) -> Result<u8> {
    let store = globals.open_store()?;
    let mut report = store.fsck()?;
    // Fetched layers are verified by `ensure_blob` (size, digest, diff id) as they arrive.
    let mut unfetchable: Vec<(String, String)> = Vec::new();
    if args.fetch {
        let mut still_remote = Vec::new();
        for digest in std::mem::take(&mut report.remote) {
            match store.ensure_blob(&digest) {
                Ok(()) => report.blobs_checked += 1,
                Err(e) => {
                    unfetchable.push((digest.to_string(), e.to_string()));
                    still_remote.push(digest);
                }
            }
        }
        report.remote = still_remote;
    }
    let code = if report.is_ok() && unfetchable.is_empty() {
        0
    } else {
        1
    };
    if args.json {
        let json = serde_json::json!({
            "ok": report.is_ok(),
            "blobs_checked": report.blobs_checked,
            "corrupt": report.corrupt.iter().map(|(name, actual)| serde_json::json!({
                "digest": name.to_string(),
                "content_digest": actual.to_string(),
            })).collect::<Vec<_>>(),
            "missing": report.missing.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "remote": report.remote.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "unfetchable": unfetchable.iter().map(|(digest, error)| serde_json::json!({
                "digest": digest,
                "error": error,
            })).collect::<Vec<_>>(),
            "stray_files": report.stray_files,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(code);
    }
    for (name, actual) in &report.corrupt {
        println!("corrupt: blob {name} now hashes to {actual}");
    }
    for digest in &report.missing {
        println!("missing: blob {digest} is referenced by an image but not in the store");
    }
    for (digest, error) in &unfetchable {
        println!("unfetchable: remote layer {digest}: {error}");
    }
    for digest in &report.remote {
        println!("remote: layer {digest} is still in its registry (fetched when first read)");
    }
    for name in &report.stray_files {
        println!("stray: blobs/sha256/{name} is not named by a digest (ignored)");
    }
    println!(
        "checked {} blobs in {}: {} corrupt, {} missing, {} remote",
        report.blobs_checked,
        store.root().display(),
        report.corrupt.len(),
        report.missing.len(),
        report.remote.len()
    );
    if report.is_ok() && !unfetchable.is_empty() {
        eprintln!(
            "error: {} remote layer(s) could not be fetched; the images using them cannot be \
             read until their registry serves them (or they are removed and built again)",
            unfetchable.len()
        );
    } else if code != 0 {
        eprintln!(
            "error: the store is damaged; remove the images that use these blobs (`rbuild rmi`) \
             and pull or build them again"
        );
    }
    Ok(code)
}
