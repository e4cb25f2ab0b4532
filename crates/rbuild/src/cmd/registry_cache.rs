//! `rbuild build --cache-to / --cache-from / --cache-repo` for the native engine: the flags
//! resolved before any work, the cache read once before the build (cache mounts restored),
//! and exported after it succeeded. The work is in `rbuild-remote-cache`.

use anyhow::{anyhow, Context, Result};
use rbuild_executor::{BuildResult, Event, NoRemoteCache, Progress, RemoteCache};
use rbuild_image::Reference;
use rbuild_registry::Client;
use rbuild_remote_cache::{
    cache_repo_target, export, parse_cache_from, parse_cache_to, CacheTarget, ExportInput,
    ImportEvent, MountRestore, RegistryCache,
};
use rbuild_store::Store;

use super::build::BuildArgs;

/// The registry caches a build reads and writes.
pub(super) struct CacheFlags {
    from: Vec<Reference>,
    to: Vec<CacheTarget>,
}

/// How informational lines are shown (warnings go through the build's progress).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Notes {
    Quiet,
    Plain,
    Json,
}

impl Notes {
    fn say(self, message: &str) {
        match self {
            Notes::Quiet => {}
            Notes::Plain => eprintln!("{message}"),
            Notes::Json => eprintln!(
                "{}",
                serde_json::json!({"event": "cache", "message": message})
            ),
        }
    }
}

/// What the cache work needs from the build command.
pub(super) struct CacheIo<'a> {
    pub client: &'a Client,
    pub runtime: &'a tokio::runtime::Runtime,
    pub store: &'a Store,
    pub notes: Notes,
}

/// The imported cache, or none.
pub(super) enum Imported {
    None(NoRemoteCache),
    Registry(RegistryCache),
}

impl Imported {
    pub(super) fn remote(&self) -> &(dyn RemoteCache + Sync) {
        match self {
            Imported::None(n) => n,
            Imported::Registry(r) => r,
        }
    }
}

impl CacheFlags {
    /// Parses the flags; `--cache-repo REPO` reads and writes `REPO:buildcache`.
    pub(super) fn parse(args: &BuildArgs) -> Result<CacheFlags> {
        let mut from = args
            .cache_from
            .iter()
            .map(|s| parse_cache_from(s).map_err(|e| anyhow!(e)))
            .collect::<Result<Vec<_>>>()?;
        let mut to = args
            .cache_to
            .iter()
            .map(|s| parse_cache_to(s).map_err(|e| anyhow!(e)))
            .collect::<Result<Vec<_>>>()?;
        if let Some(repo) = &args.cache_repo {
            let target = cache_repo_target(repo).map_err(|e| anyhow!(e))?;
            from.push(target.reference.clone());
            to.push(target);
        }
        Ok(CacheFlags { from, to })
    }

    /// Reads every `--cache-from` ref once and restores cache mounts the store lacks.
    pub(super) fn import(&self, io: &CacheIo<'_>, progress: &mut dyn Progress) -> Imported {
        let CacheIo {
            client,
            runtime,
            store,
            notes,
        } = *io;
        if self.from.is_empty() {
            return Imported::None(NoRemoteCache);
        }
        let cache = RegistryCache::import(client, runtime.handle(), &self.from, &mut |e| match e {
            ImportEvent::Reading(r) => notes.say(&format!("importing cache manifest from {r}")),
            ImportEvent::Loaded {
                reference,
                records,
                mounts,
            } => notes.say(&format!(
                "imported cache from {reference}: {records} steps, {mounts} cache mounts"
            )),
            ImportEvent::Missing(r) => notes.say(&format!("no cache at {r} yet")),
            ImportEvent::Ignored { reference, reason } => progress.event(&Event::Warning {
                message: format!("ignoring the cache at {reference}: {reason}"),
            }),
        });
        for restore in cache.restore_mounts(store) {
            match restore {
                MountRestore::Restored { id, bytes } => {
                    notes.say(&format!("restored cache mount {id:?} ({bytes} bytes)"))
                }
                MountRestore::KeptLocal { .. } => {}
                MountRestore::Failed { id, reason } => progress.event(&Event::Warning {
                    message: format!("cache mount {id:?} not restored: {reason}"),
                }),
            }
        }
        Imported::Registry(cache)
    }

    /// Exports the build's cache to every `--cache-to` ref (and `--cache-repo`).
    pub(super) fn export(
        &self,
        io: &CacheIo<'_>,
        imported: &Imported,
        result: &BuildResult,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let CacheIo {
            client,
            runtime,
            store,
            notes,
        } = *io;
        if self.to.is_empty() {
            return Ok(());
        }
        let final_layers: Vec<_> = store
            .read_manifest(&result.manifest)
            .context("reading back the built image")?
            .layers
            .into_iter()
            .map(|l| l.digest)
            .collect();
        let sources = match imported {
            Imported::Registry(cache) => cache.sources(),
            Imported::None(_) => Default::default(),
        };
        for target in &self.to {
            let report = export(
                client,
                runtime.handle(),
                store,
                target,
                &ExportInput {
                    records: &result.cache_records,
                    final_layers: &final_layers,
                    mounts: &result.cache_mounts,
                    sources: &sources,
                },
            )
            .map_err(|e| anyhow!("exporting the cache to {}: {e}", target.reference))?;
            for message in report.warnings {
                progress.event(&Event::Warning { message });
            }
            notes.say(&format!(
                "exporting cache: {} layers, {} pushed, {} already there{} to {} \
                 ({} steps{}, {} in the cache{})",
                report.layers,
                report.pushed,
                report.already_there,
                if report.mounted > 0 {
                    format!(", {} mounted", report.mounted)
                } else {
                    String::new()
                },
                target.reference,
                report.records,
                if report.mounts > 0 {
                    format!(", {} cache mounts", report.mounts)
                } else {
                    String::new()
                },
                report.total_records,
                if report.expired > 0 {
                    format!(", {} unused for too long dropped", report.expired)
                } else {
                    String::new()
                },
            ));
        }
        Ok(())
    }
}
