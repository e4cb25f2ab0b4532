//! Where a finished image goes besides the store: one [`Exporter`] per `-o` output.
//!
//! Adding an output type is this file (a variant of [`OutputKind`], its name in
//! [`OutputKind::parse`] and its exporter in [`exporter_for`]) and the exporter's own module.

mod archive;
mod local;
mod registry;

use std::path::PathBuf;

use rbuild_image::Digest;
use rbuild_registry::Client;
use rbuild_store::archive::ArchiveFormat;
use rbuild_store::{ImageRecord, Store};

pub use crate::error::ExportError;
pub use archive::{write_archive_file, ArchiveExporter};
pub use local::LocalExporter;
pub use registry::RegistryExporter;

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

/// One requested output: its kind and, for the kinds that write files, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub kind: OutputKind,
    pub dest: Option<PathBuf>,
}

impl OutputSpec {
    pub fn new(kind: OutputKind, dest: Option<PathBuf>) -> Result<OutputSpec, ExportError> {
        if kind.needs_destination() && dest.is_none() {
            return Err(ExportError::MissingDestination { kind: kind.name() });
        }
        Ok(OutputSpec { kind, dest })
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
    Ok(match spec.kind {
        OutputKind::Docker => Box::new(ArchiveExporter::new(ArchiveFormat::Docker, dest()?)),
        OutputKind::Oci => Box::new(ArchiveExporter::new(ArchiveFormat::Oci, dest()?)),
        OutputKind::Local => Box::new(LocalExporter::new(dest()?)),
        OutputKind::Registry => Box::new(RegistryExporter),
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
}
