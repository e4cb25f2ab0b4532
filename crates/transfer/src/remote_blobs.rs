//! The registry side of the store's remote blobs (`rbuild_store::RemoteBlob`): a
//! [`RegistryBlobFetcher`] installed on a `Store` pulls a recorded layer when its first
//! reader needs the bytes.

use std::io::Write;

use rbuild_registry::{Client, ClientOptions, SyncWriter};
use rbuild_store::{BlobFetcher, RemoteBlob, Store};

/// Pulls remote blobs with a registry client's options (its credentials, CAs, insecure
/// registries and timeouts). Each fetch runs on a thread of its own with its own runtime,
/// so a reader may be synchronous code or a task of another runtime (a push) alike.
#[derive(Debug, Clone)]
pub struct RegistryBlobFetcher {
    options: ClientOptions,
}

impl RegistryBlobFetcher {
    /// A fetcher with `client`'s options.
    pub fn new(client: &Client) -> Self {
        RegistryBlobFetcher {
            options: client.options().clone(),
        }
    }
}

impl BlobFetcher for RegistryBlobFetcher {
    fn fetch(&self, blob: &RemoteBlob, out: &mut (dyn Write + Send)) -> Result<(), String> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("starting the async runtime: {e}"))?;
                    let client = Client::new(self.options.clone());
                    let mut sink = SyncWriter(out);
                    runtime
                        .block_on(client.pull_blob(
                            &blob.registry,
                            &blob.repository,
                            &blob.descriptor.digest,
                            blob.descriptor.size,
                            &mut sink,
                        ))
                        .map_err(|e| e.to_string())
                })
                .join()
                .map_err(|_| "the fetching thread panicked".to_string())?
        })
    }

    /// A push to another repository of the same registry mounts the recorded layer, with
    /// no fetch (`push_blob`'s cross-repository mount, as for any blob of known source).
    fn recorded(&self, store: &Store, blob: &RemoteBlob) {
        self.fetched(store, blob);
    }

    /// A push to another repository of the same registry mounts the fetched layer.
    fn fetched(&self, store: &Store, blob: &RemoteBlob) {
        // A hint (`sources.rs`): not recording it only costs an upload later.
        let _ = crate::record_blob_source(
            store,
            &blob.descriptor.digest,
            &blob.registry,
            &blob.repository,
        );
    }
}
