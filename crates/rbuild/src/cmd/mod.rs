//! One module per subcommand. Each exposes a clap `Args` struct and a `run` function
//! returning the process exit code.

pub mod parse;

use std::path::PathBuf;

/// Options every subcommand accepts.
#[derive(clap::Args, Debug, Clone)]
pub struct Globals {
    /// The store directory (default: $RBUILD_ROOT, else ~/.local/share/rbuild, or /var/lib/rbuild for root).
    #[arg(long, global = true, env = "RBUILD_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
}
