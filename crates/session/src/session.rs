//! [`Session`]: one build from a [`BuildSpec`], start to finish: the context unpacked, the
//! Dockerfile read, secrets written and ssh agents started, registry caches imported, bases
//! pulled on demand, the executor run, every exporter given the image, the cache exported and
//! the result files written. The caller only chooses how to show progress.

use rbuild_executor::{BaseImages, BuildRequest, BuildResult, Event, PhaseTimes, Progress};
use rbuild_image::{Digest, Platform};
use rbuild_registry::Client;
use rbuild_sandbox::{Isolation, Network};
use rbuild_store::{ImageRecord, Store};
use rbuild_transfer::PullingBases;

use crate::context::{context_dir, read_dockerfile};
use crate::credentials::{secrets, ssh_agents};
use crate::error::SessionError;
use crate::export::{ExportContext, ExportOutcome, Exporter};
use crate::remote_cache::{self, CacheIo};
use crate::spec::{BuildSpec, NetworkMode};
use crate::NamedContext;

/// What the session tells its caller besides the build's own progress events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A tag was pushed; the registry holds this manifest digest.
    Pushed { tag: String, digest: Digest },
    /// A line about the registry cache (imported, restored, exported).
    Cache(String),
    /// Something the user should know that does not stop the build.
    Warning(String),
}

/// Where a session reports.
pub struct Reporter<'a> {
    /// The build's events (steps, warnings, phases).
    pub progress: &'a mut dyn Progress,
    /// Base pulls and pushes.
    pub transfer: &'a dyn rbuild_transfer::Progress,
    pub notes: &'a mut dyn FnMut(Note),
}

/// What a session made.
#[derive(Debug, Clone)]
pub struct SessionResult {
    pub build: BuildResult,
    /// The manifest digest: the first pushed one when pushed, the stored one otherwise.
    pub digest: Digest,
    /// Where the whole session's time went (pulls and pushes included).
    pub phases: PhaseTimes,
    /// What each exporter did, in order.
    pub exports: Vec<ExportOutcome>,
}

/// Builds images into a store, pulling from and pushing to registries with one client.
pub struct Session<'a> {
    store: &'a Store,
    client: Client,
    runtime: tokio::runtime::Handle,
}

impl<'a> Session<'a> {
    /// `runtime` runs registry work (the build itself is synchronous).
    /// The store fetches the layers it holds remote (registry-cache hits) with `client`'s
    /// credentials when something reads them.
    pub fn new(store: &'a Store, client: Client, runtime: tokio::runtime::Handle) -> Self {
        store.set_blob_fetcher(std::sync::Arc::new(
            rbuild_transfer::RegistryBlobFetcher::new(&client),
        ));
        Session {
            store,
            client,
            runtime,
        }
    }

    /// `rbuild build --check` (buildx's `--check`): the build checks of the Dockerfile
    /// `spec` names, for its `--target` (every stage without one) and build args, rendered
    /// with file and line. Nothing is pulled or built.
    pub fn check_dockerfile(&self, spec: &BuildSpec) -> Result<Vec<String>, SessionError> {
        // The unpacked context (a tar) lives until the Dockerfile is read.
        let (context, _unpacked) = context_dir(self.store, &spec.context)?;
        let dockerfile = read_dockerfile(&context, &spec.dockerfile)?;
        let mut request = BuildRequest::new(&context, dockerfile.text);
        request.dockerfile_name = dockerfile.name;
        request.build_args = spec.build_args.clone();
        request.target = spec.target.clone();
        Ok(rbuild_executor::check(&request)?)
    }

    /// Runs the build `spec` asks for and hands the image to every exporter in order.
    pub fn run(
        &self,
        spec: &BuildSpec,
        exporters: &[Box<dyn Exporter>],
        report: Reporter<'_>,
    ) -> Result<SessionResult, SessionError> {
        spec.check()?;
        let Reporter {
            progress,
            transfer,
            notes,
        } = report;
        let phases_before = rbuild_executor::phases::snapshot();
        let store = self.store;
        // Each of these lives until the build is over: the unpacked context, the secret
        // files, the private ssh-agents.
        let (context, unpacked) = context_dir(store, &spec.context)?;
        let dockerfile = read_dockerfile(&context, &spec.dockerfile)?;
        let mut secret_files = None;
        let mut agents = Vec::new();
        let mut request = BuildRequest::new(&context, dockerfile.text);
        request.dockerfile_name = dockerfile.name;
        request.dockerfile_path = dockerfile.path;
        request.build_args = spec.build_args.clone();
        request.target = spec.target.clone();
        request.tags = spec.tags.clone();
        request.labels = spec.labels.clone();
        request.no_cache = spec.no_cache;
        request.no_cache_filter = spec.no_cache_filter.clone();
        request.explain_misses = spec.explain_misses;
        request.platform = spec.platform.clone();
        request.network = match spec.network {
            NetworkMode::Default | NetworkMode::Host => Network::Host,
            NetworkMode::None => Network::None,
        };
        request.allow_network_host = spec.allow_network_host;
        request.isolation = spec.isolation;
        request.seccomp = spec.seccomp;
        request.secrets = secrets(store, &spec.secrets, &mut secret_files, &mut |w| {
            notes(Note::Warning(w))
        })?;
        request.ssh = ssh_agents(store, &spec.ssh, &mut agents)?;
        request.source_date_epoch = spec.source_date_epoch;
        request.output_epoch = spec.output_epoch()?;
        request.max_parallel_stages = spec.max_parallel_stages;
        request.compression = spec.compression;
        request.compression_level = spec.compression_level;
        request.target_ships = spec.target_ships();
        // A registry-cache export reads every step's layer: none may stay unwritten.
        request.defer_unshipped_layers = spec.cache_to.is_empty();
        request.helper = spec.helper.clone();
        // An OCI layout context is copied into the store: the build reads it as an image.
        request.named_contexts = spec
            .named_contexts
            .iter()
            .map(|(name, context)| {
                Ok((
                    name.clone(),
                    match context {
                        NamedContext::OciLayout(layout) => NamedContext::Image(
                            crate::oci_layout::import(store, layout)?.to_string(),
                        ),
                        other => other.clone(),
                    },
                ))
            })
            .collect::<Result<_, SessionError>>()?;
        request.named_context_epochs = spec.named_context_epochs.clone();

        let pulling = PullingBases::new(
            self.client.clone(),
            self.runtime.clone(),
            spec.pull,
            transfer,
        );
        let bases = TimedPulls(&pulling);
        let cache_io = CacheIo {
            client: &self.client,
            runtime: &self.runtime,
            store,
        };
        let mut cache_note = |line: String| notes(Note::Cache(line));
        let imported = remote_cache::import(&spec.cache_from, &cache_io, &mut cache_note, progress);
        let build = rbuild_executor::build_with_cache(
            &request,
            store,
            &bases,
            imported.remote(),
            progress,
        )?;
        drop(unpacked);
        drop(secret_files);
        drop(agents);

        let record = store.resolve(&build.manifest.to_string())?;
        let exports = self.export(spec, exporters, &record, &build, transfer, notes)?;
        let mut cache_note = |line: String| notes(Note::Cache(line));
        remote_cache::export_to(
            &spec.cache_to,
            &cache_io,
            &imported,
            &build,
            &mut cache_note,
            progress,
        )?;
        let phases = rbuild_executor::phases::snapshot().since(&phases_before);
        progress.event(&Event::Phases { phases });
        let pushed = exports.iter().find_map(|e| match e {
            ExportOutcome::Pushed(tags) => tags.first().map(|(_, d)| d.clone()),
            ExportOutcome::Written(_) => None,
        });
        let result = SessionResult {
            digest: pushed.unwrap_or_else(|| build.manifest.clone()),
            build,
            phases,
            exports,
        };
        write_result_files(spec, &result)?;
        Ok(result)
    }

    fn export(
        &self,
        spec: &BuildSpec,
        exporters: &[Box<dyn Exporter>],
        record: &ImageRecord,
        build: &rbuild_executor::BuildResult,
        transfer: &dyn rbuild_transfer::Progress,
        notes: &mut dyn FnMut(Note),
    ) -> Result<Vec<ExportOutcome>, SessionError> {
        for output in &spec.outputs {
            if output.rewrite_timestamp && output.epoch(build.source_date_epoch).is_none() {
                // BuildKit's exporter warns the same way and rewrites nothing.
                notes(Note::Warning(format!(
                    "-o type={}: rewrite-timestamp is specified, but no source-date-epoch was \
                     found; the layers keep their times",
                    output.kind
                )));
            }
        }
        let build_layers: std::collections::HashSet<rbuild_image::Digest> = build
            .cache_records
            .iter()
            .map(|r| r.diff_id.clone())
            .collect();
        let cx = ExportContext {
            store: self.store,
            client: &self.client,
            runtime: &self.runtime,
            tags: &spec.tags,
            transfer_progress: transfer,
            layers: rbuild_layer::WriteOptions {
                compression: spec.compression,
                level: spec.compression_level,
                ..Default::default()
            },
            build_epoch: build.source_date_epoch,
            build_layers: &build_layers,
        };
        let mut outcomes = Vec::new();
        for exporter in exporters {
            let outcome = exporter.export(&cx, record)?;
            if let ExportOutcome::Pushed(tags) = &outcome {
                for (tag, digest) in tags {
                    notes(Note::Pushed {
                        tag: tag.clone(),
                        digest: digest.clone(),
                    });
                }
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }
}

impl BuildSpec {
    /// Refuses, before any work (the store is not even needed), what cannot give a correct
    /// image here or cannot be exported.
    pub fn check(&self) -> Result<(), SessionError> {
        if self.isolation == Isolation::Restricted {
            // Laying stages out in `/` is only done in a marked builder image, as non-root:
            // refused here before anything is pulled (and again by the executor).
            if let Some(why) = rbuild_sandbox::restricted::in_place_root_refusal() {
                return Err(SessionError::Invalid(why));
            }
        }
        if self.pushes() && self.tags.is_empty() {
            return Err(crate::ExportError::NoTagToPush.into());
        }
        self.output_epoch()?;
        Ok(())
    }
}

/// The executor's base images over transfer's pulls, the pull time counted as its phase.
struct TimedPulls<'p, 'a>(&'p PullingBases<'a>);

impl BaseImages for TimedPulls<'_, '_> {
    fn resolve(
        &self,
        store: &Store,
        reference: &str,
        platform: &Platform,
    ) -> Result<ImageRecord, rbuild_executor::BaseImageError> {
        // A bare digest names no repository to pull from: an image already in the store
        // (an OCI layout context, copied in before the build).
        if reference.parse::<rbuild_image::Digest>().is_ok() {
            return store.resolve(reference).map_err(|source| {
                rbuild_executor::BaseImageError::NotInStore {
                    reference: reference.to_string(),
                    source,
                }
            });
        }
        self.0
            .resolve_with(store, reference, platform, || {
                rbuild_executor::Phase::Pull.timer()
            })
            .map_err(|e| rbuild_executor::BaseImageError::Fetch(Box::new(e)))
    }
}

/// `--iidfile`, `--digest-file` (the pushed digest when pushed) and `--metadata-file`.
fn write_result_files(spec: &BuildSpec, result: &SessionResult) -> Result<(), SessionError> {
    let write = |path: &std::path::Path, text: &str| {
        std::fs::write(path, text)
            .map_err(|e| SessionError::io(format!("writing {}", path.display()), e))
    };
    if let Some(path) = &spec.iidfile {
        write(path, &result.build.image_id.to_string())?;
    }
    if let Some(path) = &spec.digest_file {
        write(path, &result.digest.to_string())?;
    }
    if let Some(path) = &spec.metadata_file {
        let metadata = serde_json::json!({
            "containerimage.digest": result.digest.to_string(),
            "containerimage.config.digest": result.build.image_id.to_string(),
            "image.name": spec.tags.join(","),
            "rbuild.phases": result.phases,
        });
        let text = serde_json::to_string_pretty(&metadata)
            .map_err(|e| SessionError::Invalid(format!("encoding the build metadata: {e}")))?;
        write(path, &text)?;
    }
    Ok(())
}
