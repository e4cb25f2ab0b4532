//! `-o type=local,dest=DIR`: the image's file system, layers applied in order.

use std::path::PathBuf;

use rbuild_store::ImageRecord;

use super::{ExportContext, ExportError, ExportOutcome, Exporter, OutputKind};

pub struct LocalExporter {
    dest: PathBuf,
}

impl LocalExporter {
    pub fn new(dest: PathBuf) -> Self {
        LocalExporter { dest }
    }
}

impl Exporter for LocalExporter {
    fn kind(&self) -> OutputKind {
        OutputKind::Local
    }

    fn export(
        &self,
        cx: &ExportContext<'_>,
        image: &ImageRecord,
    ) -> Result<ExportOutcome, ExportError> {
        let dest = &self.dest;
        std::fs::create_dir_all(dest).map_err(|source| ExportError::Io {
            what: "creating",
            path: dest.clone(),
            source,
        })?;
        let manifest = cx.store.read_manifest(&image.image_manifest.digest)?;
        // Owners are kept only where this process may set them.
        let options = rbuild_layer::ApplyOptions {
            ownership: if is_root() {
                rbuild_layer::Ownership::Preserve
            } else {
                rbuild_layer::Ownership::Ignore
            },
            ..Default::default()
        };
        for layer in &manifest.layers {
            let blob = cx.store.open_blob(&layer.digest)?;
            rbuild_layer::apply_layer(blob, dest, &options).map_err(|e| ExportError::Layer {
                layer: layer.digest.clone(),
                dest: dest.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(ExportOutcome::Written(dest.clone()))
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
