//! Where a finished image goes besides the store: one [`Exporter`] per `-o` output.
//!
//! Adding an output type is this file (a variant of [`OutputKind`], its name in
//! [`OutputKind::parse`] and its exporter in [`exporter_for`]) and the exporter's own module.

mod archive;
mod local;
mod registry;
mod rewrite;

use std::collections::HashSet;
use std::path::PathBuf;

use rbuild_image::Digest;
use rbuild_registry::Client;
use rbuild_store::archive::ArchiveFormat;
use rbuild_store::{ImageRecord, Store};

pub use crate::error::ExportError;
pub use archive::{write_archive_file, ArchiveExporter};
pub use local::LocalExporter;
pub use registry::RegistryExporter;
pub use rewrite::{rewrite_image_timestamps, rewrite_layer_timestamps, REWRITTEN_TIMESTAMP};

/// The kinds of output, as BuildKit names them in `-o type=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputKind {
    /// A `docker save` archive.
    Docker,
    /// An OCI image layout archive.
    Oci,
    /// The image's file system in a directory.
    Local,
    /// Every tag pushed to its registry.
    Registry,
}

impl OutputKind {
    /// Every kind, in the order the help text lists them.
    pub const ALL: [OutputKind; 4] = [
        OutputKind::Oci,
        OutputKind::Docker,
        OutputKind::Local,
        OutputKind::Registry,
    ];

    /// `type=NAME`; an unknown name is an error naming it.
    pub fn parse(name: &str) -> Result<OutputKind, ExportError> {
        OutputKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| ExportError::UnknownOutputType(name.to_string()))
    }

    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Docker => "docker",
            OutputKind::Oci => "oci",
            OutputKind::Local => "local",
            OutputKind::Registry => "registry",
        }
    }

    /// Whether the output is written to a path (`dest=`).
    pub fn needs_destination(self) -> bool {
        !matches!(self, OutputKind::Registry)
    }
}

impl std::fmt::Display for OutputKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One requested output: its kind, for the kinds that write files, where, and BuildKit's
/// image exporter attributes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub kind: OutputKind,
    pub dest: Option<PathBuf>,
    /// `rewrite-timestamp=true`: every layer the build made gets its entries' times clamped
    /// to the epoch and the annotation [`REWRITTEN_TIMESTAMP`] (BuildKit's
    /// `rewriteRemoteWithEpoch`).
    pub rewrite_timestamp: bool,
    /// `source-date-epoch=N` (`Some(Some(N))`) overrides the epoch the build got;
    /// `source-date-epoch=` (`Some(None)`) means no epoch for this output, whatever the
    /// build argument or the Dockerfile's `ARG SOURCE_DATE_EPOCH=` default say; `None`: not
    /// given, the build's epoch.
    pub source_date_epoch: Option<Option<i64>>,
}

impl OutputSpec {
    pub fn new(kind: OutputKind, dest: Option<PathBuf>) -> Result<OutputSpec, ExportError> {
        if kind.needs_destination() && dest.is_none() {
            return Err(ExportError::MissingDestination { kind: kind.name() });
        }
        Ok(OutputSpec {
            kind,
            dest,
            rewrite_timestamp: false,
            source_date_epoch: None,
        })
    }

    /// Parses one of BuildKit's image exporter attributes, `-o type=…,KEY=VALUE`, into this
    /// output: `rewrite-timestamp` (a boolean as Go's `strconv.ParseBool` reads one) and
    /// `source-date-epoch` (seconds since 1970, or empty for none). Any other key, a bad
    /// value, or one of them on an output that writes no image (`type=local`) is an error
    /// naming it.
    pub fn set_attribute(&mut self, key: &str, value: &str) -> Result<(), ExportError> {
        let bad = |reason: String| ExportError::Attribute {
            key: key.to_string(),
            reason,
        };
        if self.kind == OutputKind::Local
            && matches!(key, "rewrite-timestamp" | "source-date-epoch")
        {
            return Err(bad(
                "only image outputs (oci, docker, registry) take it; type=local writes files"
                    .to_string(),
            ));
        }
        match key {
            "rewrite-timestamp" => {
                self.rewrite_timestamp = parse_bool(value)
                    .ok_or_else(|| bad(format!("{value:?} is not a boolean (true or false)")))?;
            }
            "source-date-epoch" => {
                self.source_date_epoch = Some(if value.is_empty() {
                    None
                } else {
                    let not_seconds = || {
                        bad(format!(
                            "{value:?} is not a number of seconds since 1970 (or empty for none)"
                        ))
                    };
                    let epoch = value.parse::<i64>().map_err(|_| not_seconds())?;
                    if epoch < 0 {
                        return Err(not_seconds());
                    }
                    Some(epoch)
                });
            }
            _ => {
                return Err(bad(
                    "not supported; use type=, dest=, rewrite-timestamp= or source-date-epoch="
                        .to_string(),
                ))
            }
        }
        Ok(())
    }

    /// The epoch of this output's image: the `source-date-epoch` attribute when given, else
    /// the build's.
    pub fn epoch(&self, build_epoch: Option<i64>) -> Option<i64> {
        self.source_date_epoch.unwrap_or(build_epoch)
    }
}

/// A boolean as Go's `strconv.ParseBool` (which BuildKit's exporter options use) reads one.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// What an exporter gets besides the image: the store it is in, the registry client, the
/// image's tags, and where transfers report.
pub struct ExportContext<'a> {
    pub store: &'a Store,
    pub client: &'a Client,
    pub runtime: &'a tokio::runtime::Handle,
    pub tags: &'a [String],
    pub transfer_progress: &'a dyn rbuild_transfer::Progress,
    /// The build's layer compression, for what leaves the machine compressed (a push, an
    /// OCI archive); the local image keeps the plain layers a build made.
    pub layers: rbuild_layer::WriteOptions,
    /// The epoch the build used (the build argument, `--source-date-epoch`, the
    /// Dockerfile's `ARG SOURCE_DATE_EPOCH=` default), if any.
    pub build_epoch: Option<i64>,
    /// The diff ids of the layers this build's steps made (cached or run): what
    /// `rewrite-timestamp=true` rewrites, from the first of them in the image on.
    pub build_layers: &'a HashSet<Digest>,
}

impl ExportContext<'_> {
    /// The image an output gets: `image` itself, or with `rewrite-timestamp=true` and an
    /// epoch (the output's `source-date-epoch`, else the build's) the image whose build
    /// layers are rewritten to it ([`rewrite_image_timestamps`]). Without an epoch nothing
    /// is rewritten, as in BuildKit (the session warns).
    pub fn image_for(
        &self,
        rewrite_timestamp: bool,
        source_date_epoch: Option<Option<i64>>,
        image: &ImageRecord,
    ) -> Result<ImageRecord, ExportError> {
        let epoch = source_date_epoch.unwrap_or(self.build_epoch);
        match epoch {
            Some(epoch) if rewrite_timestamp => {
                let mut rewritten =
                    rewrite_image_timestamps(self.store, image, epoch, self.build_layers)?;
                rewritten.names = image.names.clone();
                Ok(rewritten)
            }
            _ => Ok(image.clone()),
        }
    }
}

/// What an export did that the caller reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportOutcome {
    /// Written to a path.
    Written(PathBuf),
    /// Pushed: each tag with the manifest digest the registry has.
    Pushed(Vec<(String, Digest)>),
}

/// Writes a built image somewhere.
pub trait Exporter {
    fn kind(&self) -> OutputKind;
    fn export(
        &self,
        cx: &ExportContext<'_>,
        image: &ImageRecord,
    ) -> Result<ExportOutcome, ExportError>;
}

/// The exporter for one output.
pub fn exporter_for(spec: &OutputSpec) -> Result<Box<dyn Exporter>, ExportError> {
    let dest = || {
        spec.dest.clone().ok_or(ExportError::MissingDestination {
            kind: spec.kind.name(),
        })
    };
    let archive = |format| -> Result<Box<dyn Exporter>, ExportError> {
        Ok(Box::new(
            ArchiveExporter::new(format, dest()?)
                .with_timestamps(spec.rewrite_timestamp, spec.source_date_epoch),
        ))
    };
    Ok(match spec.kind {
        OutputKind::Docker => archive(ArchiveFormat::Docker)?,
        OutputKind::Oci => archive(ArchiveFormat::Oci)?,
        OutputKind::Local => Box::new(LocalExporter::new(dest()?)),
        OutputKind::Registry => Box::new(RegistryExporter {
            rewrite_timestamp: spec.rewrite_timestamp,
            source_date_epoch: spec.source_date_epoch,
        }),
    })
}

/// The exporters for a spec's outputs, in order.
pub fn exporters_for(outputs: &[OutputSpec]) -> Result<Vec<Box<dyn Exporter>>, ExportError> {
    outputs.iter().map(exporter_for).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_from_its_name() {
        for kind in OutputKind::ALL {
            assert_eq!(OutputKind::parse(kind.name()).unwrap(), kind);
        }
    }

    #[test]
    fn an_unknown_type_is_refused_with_its_name() {
        let err = OutputKind::parse("cacheonly").unwrap_err();
        assert!(matches!(&err, ExportError::UnknownOutputType(n) if n == "cacheonly"));
        assert!(err.to_string().contains("\"cacheonly\""), "{err}");
    }

    #[test]
    fn file_outputs_need_a_destination() {
        let err = OutputSpec::new(OutputKind::Oci, None).unwrap_err();
        assert!(err.to_string().contains("type=oci needs dest"), "{err}");
        assert!(OutputSpec::new(OutputKind::Registry, None).is_ok());
    }

    #[test]
    fn exporter_attributes_are_parsed_as_buildkit_reads_them() {
        let mut spec = OutputSpec::new(OutputKind::Oci, Some("x".into())).unwrap();
        spec.set_attribute("rewrite-timestamp", "true").unwrap();
        assert!(spec.rewrite_timestamp);
        spec.set_attribute("rewrite-timestamp", "0").unwrap();
        assert!(!spec.rewrite_timestamp);
        assert_eq!(spec.epoch(Some(5)), Some(5), "not given: the build's epoch");
        spec.set_attribute("source-date-epoch", "1700000000")
            .unwrap();
        assert_eq!(spec.source_date_epoch, Some(Some(1_700_000_000)));
        assert_eq!(spec.epoch(Some(5)), Some(1_700_000_000));
        spec.set_attribute("source-date-epoch", "").unwrap();
        assert_eq!(spec.source_date_epoch, Some(None), "empty resets");
        assert_eq!(spec.epoch(Some(5)), None);
    }

    #[test]
    fn bad_exporter_attributes_are_refused_naming_the_option() {
        let mut spec = OutputSpec::new(OutputKind::Docker, Some("x".into())).unwrap();
        let err = spec.set_attribute("rewrite-timestamp", "yes").unwrap_err();
        assert!(err.to_string().contains("rewrite-timestamp"), "{err}");
        assert!(err.to_string().contains("\"yes\""), "{err}");
        let err = spec.set_attribute("source-date-epoch", "soon").unwrap_err();
        assert!(err.to_string().contains("source-date-epoch"), "{err}");
        assert!(err.to_string().contains("\"soon\""), "{err}");
        let err = spec.set_attribute("source-date-epoch", "-1").unwrap_err();
        assert!(err.to_string().contains("since 1970"), "{err}");
        let err = spec.set_attribute("compression", "zstd").unwrap_err();
        assert!(err.to_string().contains("\"compression\""), "{err}");
        let mut local = OutputSpec::new(OutputKind::Local, Some("x".into())).unwrap();
        let err = local
            .set_attribute("rewrite-timestamp", "true")
            .unwrap_err();
        assert!(err.to_string().contains("type=local"), "{err}");
        assert_eq!(
            spec,
            OutputSpec::new(OutputKind::Docker, Some("x".into())).unwrap()
        );
    }
}
