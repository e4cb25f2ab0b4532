//! One module per subcommand. Each exposes a clap `Args` struct and a `run` function
//! returning the process exit code.

pub mod build;
pub mod cancel;
pub mod diff;
pub mod fsck;
pub mod images;
pub mod info;
pub mod kaniko;
pub mod parse;
pub mod registry;

use std::path::PathBuf;

use anyhow::{Context, Result};
use rbuild_store::Store;

/// Options every subcommand accepts.
#[derive(clap::Args, Debug, Clone)]
pub struct Globals {
    /// The store directory (default: $RBUILD_ROOT, else ~/.local/share/rbuild, or /var/lib/rbuild for root).
    #[arg(long, global = true, env = "RBUILD_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
}

impl Globals {
    /// The store directory: `--root`, `$RBUILD_ROOT`, or the default for this user.
    pub fn store_root(&self) -> Result<PathBuf> {
        match &self.root {
            Some(root) => Ok(root.clone()),
            None => Ok(rbuild_store::default_root()?),
        }
    }

    /// Opens (creating if needed) the store, and removes what crashed builds left in it
    /// (their secrets first; see `rbuild_executor::sweep_dead`). Layers the store holds
    /// remote (registry-cache hits) are fetched when read, with the default registry
    /// options and credentials; a command with registry options installs its own client.
    pub fn open_store(&self) -> Result<Store> {
        let root = self.store_root()?;
        let store = Store::open(&root)
            .with_context(|| format!("opening the store at {}", root.display()))?;
        store.set_blob_fetcher(std::sync::Arc::new(
            rbuild_transfer::RegistryBlobFetcher::new(&rbuild_registry::Client::default()),
        ));
        rbuild_executor::sweep_dead(&store, false);
        Ok(store)
    }
}
