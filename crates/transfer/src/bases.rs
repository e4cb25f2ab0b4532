//! Base images for a build: from the store, pulled from their registry when missing (or
//! always with `--pull`, once per build). The executor's `BaseImages` is implemented over
//! this by the build session, so the executor never calls back into its caller.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rbuild_image::{Platform, Reference};
use rbuild_registry::Client;
use rbuild_store::{ImageRecord, Store};

use crate::{PlatformChoice, Progress, PullOptions, TransferError};

/// Why a base image could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BaseImageError {
    #[error("base image {reference:?}: {reason}")]
    BadReference { reference: String, reason: String },
    #[error("pulling {reference}: {source}")]
    Pull {
        reference: String,
        #[source]
        source: TransferError,
    },
    /// This build pulled `reference` for the same platform before and that pull failed
    /// (`message`): it is not tried again, as BuildKit resolves a base once per build. A
    /// registry that hangs until the transfer deadline is waited on once, not once by the
    /// build's look-ahead (the build checks need every base's config) and again by the
    /// stage that needs the image.
    #[error("pulling {reference}: {message} (failed earlier in this build, not tried again)")]
    FailedEarlier { reference: String, message: String },
    /// A thread holding one of the pull locks panicked.
    #[error("pulling {0}: a concurrent pull of the same image failed")]
    Poisoned(String),
}

/// Resolves base image references, pulling what the store lacks.
pub struct PullingBases<'a> {
    client: Client,
    runtime: tokio::runtime::Handle,
    always_pull: bool,
    pulled: Mutex<Vec<String>>,
    /// One lock per image name: stages (and the build's look-ahead) asking for the same
    /// image wait for one pull, while different images are pulled at the same time.
    pulling: Mutex<BTreeMap<String, Arc<Mutex<()>>>>,
    /// The pulls that failed, by image name and platform: their errors' messages.
    failed: Mutex<BTreeMap<(String, String), String>>,
    progress: &'a dyn Progress,
}

impl<'a> PullingBases<'a> {
    /// `always_pull` is `--pull`: each image is pulled once per build even when stored.
    pub fn new(
        client: Client,
        runtime: tokio::runtime::Handle,
        always_pull: bool,
        progress: &'a dyn Progress,
    ) -> Self {
        PullingBases {
            client,
            runtime,
            always_pull,
            pulled: Mutex::new(Vec::new()),
            pulling: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
            progress,
        }
    }

    /// The image `reference` names for `platform`. `on_pull` is called just before a pull
    /// starts and what it returns is dropped when the pull ends (a phase timer).
    pub fn resolve_with<G>(
        &self,
        store: &Store,
        reference: &str,
        platform: &Platform,
        on_pull: impl FnOnce() -> G,
    ) -> Result<ImageRecord, BaseImageError> {
        let parsed = Reference::parse(reference).map_err(|e| BaseImageError::BadReference {
            reference: reference.to_string(),
            reason: e.to_string(),
        })?;
        let name = parsed.to_string();
        let poisoned = || BaseImageError::Poisoned(reference.to_string());
        let name_lock = self
            .pulling
            .lock()
            .map_err(|_| poisoned())?
            .entry(name.clone())
            .or_default()
            .clone();
        let _pulling = name_lock.lock().map_err(|_| poisoned())?;
        let pulled_already = self.pulled.lock().map_err(|_| poisoned())?.contains(&name);
        if !self.always_pull || pulled_already {
            if let Ok(record) = store.resolve(&name) {
                return Ok(record);
            }
        }
        let key = (name.clone(), format!("{platform:?}"));
        if let Some(message) = self.failed.lock().map_err(|_| poisoned())?.get(&key) {
            return Err(BaseImageError::FailedEarlier {
                reference: reference.to_string(),
                message: message.clone(),
            });
        }
        let _guard = on_pull();
        let options = PullOptions {
            platforms: PlatformChoice::One(platform.clone()),
            ..Default::default()
        };
        let record = match self.runtime.block_on(crate::pull(
            &self.client,
            store,
            &parsed,
            &options,
            self.progress,
        )) {
            Ok(record) => record,
            Err(source) => {
                self.failed
                    .lock()
                    .map_err(|_| poisoned())?
                    .insert(key, source.to_string());
                return Err(BaseImageError::Pull {
                    reference: reference.to_string(),
                    source,
                });
            }
        };
        self.pulled.lock().map_err(|_| poisoned())?.push(name);
        Ok(record)
    }
}
