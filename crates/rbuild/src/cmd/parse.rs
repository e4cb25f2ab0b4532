//! `rbuild parse`: filled in by the frontend work.

use anyhow::Result;

use super::Globals;

/// Parse a Dockerfile and print it.
#[derive(clap::Args, Debug)]
pub struct ParseArgs {
    /// The Dockerfile to read (`-` or nothing for standard input).
    pub file: Option<std::path::PathBuf>,
}

pub fn run(_globals: &Globals, _args: ParseArgs) -> Result<u8> {
    anyhow::bail!("rbuild parse is not implemented yet")
}
