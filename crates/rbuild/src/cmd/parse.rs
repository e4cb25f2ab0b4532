//! `rbuild parse`: prints a Dockerfile as BuildKit's AST dump (`--dump`) or as the typed
//! instructions and stages in JSON (`--json`, the default).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::Globals;

/// Parse a Dockerfile and print it.
#[derive(clap::Args, Debug)]
pub struct ParseArgs {
    /// The Dockerfile to read (`-` or nothing for standard input).
    pub file: Option<PathBuf>,
    /// Print BuildKit's AST dump (as in its parser `result` files).
    #[arg(long, conflicts_with = "json")]
    pub dump: bool,
    /// Print the typed instructions and stages as JSON (the default).
    #[arg(long)]
    pub json: bool,
}

/// Reads the file (or stdin), returning its display name and text.
fn read_input(file: Option<&PathBuf>) -> Result<(String, String)> {
    let mut bytes = Vec::new();
    let name = match file.filter(|p| p.as_os_str() != "-") {
        Some(path) => {
            bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        }
        None => {
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading the Dockerfile from standard input")?;
            "Dockerfile".to_string()
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{name}: not valid UTF-8 (at byte {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok((name, text))
}

pub fn run(_globals: &Globals, args: ParseArgs) -> Result<u8> {
    let (name, text) = read_input(args.file.as_ref())?;
    if args.dump {
        let parsed = rbuild_dockerfile::syntax::parse(&text).map_err(|e| {
            let source = rbuild_dockerfile::Source::new(&name, &text);
            anyhow::anyhow!(
                "{}",
                source.error(e.start_line, e.end_line, None, e.message)
            )
        })?;
        println!("{}", parsed.ast.dump());
        for w in &parsed.warnings {
            eprintln!("[WARNING]: {}", w.short);
        }
        return Ok(0);
    }
    let dockerfile =
        rbuild_dockerfile::parse_dockerfile(&name, &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{}", serde_json::to_string_pretty(&dockerfile)?);
    Ok(0)
}
