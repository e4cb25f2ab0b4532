//! `rbuild diff A B`: compares two images (store names, docker or OCI archives, OCI layouts)
//! by flattened filesystem, layers, config and history. Exit 0 equal, 1 different.

use anyhow::{anyhow, Result};
use rbuild_diff::{compare, read_image, ImageSource, Options};

use super::Globals;

#[derive(clap::Args, Debug, Clone)]
pub struct DiffArgs {
    /// The first image: a name or id in the store, `docker-archive:PATH[:NAME]`,
    /// `oci-archive:PATH[:NAME]`, `oci:DIR[:NAME]`, or an archive file or layout directory.
    pub a: String,
    /// The second image, as the first.
    pub b: String,
    /// Leave this path (and what is below it) out; `*` matches any characters. Repeatable.
    #[arg(long = "ignore", value_name = "PATH")]
    pub ignore: Vec<String>,
    /// Leave the history out.
    #[arg(long)]
    pub ignore_history: bool,
    /// Leave out file mtimes and the config's and history's creation times.
    #[arg(long)]
    pub ignore_timestamps: bool,
    /// Print the differences as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Exit 0 equal, 1 different, 2 when an image cannot be read (as `diff` and `cmp` do, so
/// that a script cannot take an error for a difference).
pub fn run(globals: &Globals, args: DiffArgs) -> Result<u8> {
    match compare_images(globals, args) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(2)
        }
    }
}

fn compare_images(globals: &Globals, args: DiffArgs) -> Result<u8> {
    let sources = [ImageSource::parse(&args.a), ImageSource::parse(&args.b)];
    let store = if sources.iter().any(|s| matches!(s, ImageSource::Store(_))) {
        Some(globals.open_store()?)
    } else {
        None
    };
    let mut images = Vec::new();
    for (source, shown) in sources.iter().zip([&args.a, &args.b]) {
        images.push(read_image(source, store.as_ref()).map_err(|e| anyhow!("{shown}: {e}"))?);
    }
    let options = Options {
        ignore: args.ignore,
        ignore_history: args.ignore_history,
        ignore_timestamps: args.ignore_timestamps,
    };
    let report = compare(&images[0], &images[1], &options);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.equal { 0 } else { 1 })
}
