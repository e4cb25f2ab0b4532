//! `--cache-from` / `--cache-to` for the native engine: the registry caches read once before
//! the build (cache mounts restored) and written after it succeeded. The work is in
//! `rbuild-remote-cache`; informational lines go to the session's notes, warnings through the
//! build's progress.

use rbuild_executor::{BuildResult, Event, NoRemoteCache, Progress, RemoteCache};
use rbuild_image::Reference;
use rbuild_registry::Client;
use rbuild_remote_cache::{
    export, CacheTarget, ExportInput, ImportEvent, MountRestore, RegistryCache,
};
use rbuild_store::Store;

use crate::error::SessionError;

/// What the cache work needs from the session.
pub(crate) struct CacheIo<'a> {
    pub client: &'a Client,
    pub runtime: &'a tokio::runtime::Handle,
    pub store: &'a Store,
}

/// The imported cache, or none.
pub(crate) enum Imported {
    None(NoRemoteCache),
    Registry(RegistryCache),
}

impl Imported {
    pub(crate) fn remote(&self) -> &(dyn RemoteCache + Sync) {
        match self {
            Imported::None(n) => n,
            Imported::Registry(r) => r,
        }
    }
}

/// Reads every `--cache-from` ref once and restores cache mounts the store lacks.
pub(crate) fn import(
    from: &[Reference],
    io: &CacheIo<'_>,
    note: &mut dyn FnMut(String),
    progress: &mut dyn Progress,
) -> Imported {
    if from.is_empty() {
        return Imported::None(NoRemoteCache);
    }
    let cache = RegistryCache::import(io.client, io.runtime, from, &mut |e| match e {
        ImportEvent::Reading(r) => note(format!("importing cache manifest from {r}")),
        ImportEvent::Loaded {
            reference,
            records,
            mounts,
        } => note(format!(
            "imported cache from {reference}: {records} steps, {mounts} cache mounts"
        )),
        ImportEvent::Missing(r) => note(format!("no cache at {r} yet")),
        ImportEvent::Ignored { reference, reason } => progress.event(&Event::Warning {
            message: format!("ignoring the cache at {reference}: {reason}"),
        }),
    });
    for restore in cache.restore_mounts(io.store) {
        match restore {
            MountRestore::Restored { id, bytes } => {
                note(format!("restored cache mount {id:?} ({bytes} bytes)"))
            }
            MountRestore::KeptLocal { .. } => {}
            MountRestore::Failed { id, reason } => progress.event(&Event::Warning {
                message: format!("cache mount {id:?} not restored: {reason}"),
            }),
        }
    }
    Imported::Registry(cache)
}

/// Exports the build's cache to every `--cache-to` ref.
pub(crate) fn export_to(
    to: &[CacheTarget],
    io: &CacheIo<'_>,
    imported: &Imported,
    result: &BuildResult,
    note: &mut dyn FnMut(String),
    progress: &mut dyn Progress,
) -> Result<(), SessionError> {
    if to.is_empty() {
        return Ok(());
    }
    let final_layers: Vec<_> = io
        .store
        .read_manifest(&result.manifest)?
        .layers
        .into_iter()
        .map(|l| l.digest)
        .collect();
    let sources = match imported {
        Imported::Registry(cache) => cache.sources(),
        Imported::None(_) => Default::default(),
    };
    for target in to {
        let report = export(
            io.client,
            io.runtime,
            io.store,
            target,
            &ExportInput {
                records: &result.cache_records,
                final_layers: &final_layers,
                mounts: &result.cache_mounts,
                sources: &sources,
            },
        )
        .map_err(|e| {
            SessionError::Cache(format!("exporting the cache to {}: {e}", target.reference))
        })?;
        for message in report.warnings {
            progress.event(&Event::Warning { message });
        }
        let optional = |n: usize, what: &str| {
            if n > 0 {
                format!(", {n} {what}")
            } else {
                String::new()
            }
        };
        note(format!(
            "exporting cache: {} layers, {} pushed, {} already there{} to {} \
             ({} steps{}, {} in the cache{})",
            report.layers,
            report.pushed,
            report.already_there,
            optional(report.mounted, "mounted"),
            target.reference,
            report.records,
            optional(report.mounts, "cache mounts"),
            report.total_records,
            optional(report.expired, "unused for too long dropped"),
        ));
    }
    Ok(())
}
