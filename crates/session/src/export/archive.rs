//! `-o type=docker|oci,dest=FILE`: the image as a `docker save` or OCI layout archive,
//! written beside the destination and renamed into place once complete.

use std::path::PathBuf;

use rbuild_store::archive::ArchiveFormat;
use rbuild_store::ImageRecord;

use super::{ExportContext, ExportError, ExportOutcome, Exporter, OutputKind};

pub struct ArchiveExporter {
    format: ArchiveFormat,
    dest: PathBuf,
}

impl ArchiveExporter {
    pub fn new(format: ArchiveFormat, dest: PathBuf) -> Self {
        ArchiveExporter { format, dest }
    }
}

impl Exporter for ArchiveExporter {
    fn kind(&self) -> OutputKind {
        match self.format {
            ArchiveFormat::Docker => OutputKind::Docker,
            ArchiveFormat::Oci => OutputKind::Oci,
        }
    }

    fn export(
        &self,
        cx: &ExportContext<'_>,
        image: &ImageRecord,
    ) -> Result<ExportOutcome, ExportError> {
        write_archive_file(
            cx.store,
            std::slice::from_ref(image),
            self.format,
            &cx.layers,
            &self.dest,
        )?;
        Ok(ExportOutcome::Written(self.dest.clone()))
    }
}

/// Writes `records` as one archive at `output`: a partial file beside it, fsynced, then
/// renamed, so a failed or interrupted write leaves no half archive under the name.
pub fn write_archive_file(
    store: &rbuild_store::Store,
    records: &[ImageRecord],
    format: ArchiveFormat,
    layers: &rbuild_layer::WriteOptions,
    output: &std::path::Path,
) -> Result<(), ExportError> {
    let partial = output.with_file_name(format!(
        ".{}.partial-{}",
        output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let io = |what: &'static str, path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Io { what, path, source }
    };
    let result = (|| -> Result<(), ExportError> {
        let file = std::fs::File::create(&partial).map_err(io("creating", &partial))?;
        let mut writer = std::io::BufWriter::new(file);
        rbuild_store::archive::save(store, records, format, layers, &mut writer).map_err(|e| {
            ExportError::Archive {
                path: output.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        let file = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .map_err(io("writing", &partial))?;
        file.sync_all().map_err(io("fsync", &partial))?;
        std::fs::rename(&partial, output).map_err(io("renaming the archive to", output))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}
