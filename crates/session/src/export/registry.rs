//! `--push` / `-o type=registry`: every tag pushed to its registry.

use rbuild_image::Reference;
use rbuild_store::ImageRecord;

use super::{ExportContext, ExportError, ExportOutcome, Exporter, OutputKind};

#[derive(Default)]
pub struct RegistryExporter {
    /// `rewrite-timestamp=` and `source-date-epoch=` of the output.
    pub rewrite_timestamp: bool,
    pub source_date_epoch: Option<Option<i64>>,
}

impl Exporter for RegistryExporter {
    fn kind(&self) -> OutputKind {
        OutputKind::Registry
    }

    fn export(
        &self,
        cx: &ExportContext<'_>,
        image: &ImageRecord,
    ) -> Result<ExportOutcome, ExportError> {
        if cx.tags.is_empty() {
            return Err(ExportError::NoTagToPush);
        }
        let image = cx.image_for(self.rewrite_timestamp, self.source_date_epoch, image)?;
        let mut pushed = Vec::new();
        for tag in cx.tags {
            let _t = rbuild_executor::Phase::Push.timer();
            let destination = Reference::parse(tag).map_err(|e| ExportError::Tag {
                tag: tag.clone(),
                reason: e.to_string(),
            })?;
            let digest = cx
                .runtime
                .block_on(rbuild_transfer::push(
                    cx.client,
                    cx.store,
                    &image.manifest,
                    &destination,
                    &rbuild_transfer::PushOptions {
                        layers: cx.layers.clone(),
                        ..Default::default()
                    },
                    cx.transfer_progress,
                ))
                .map_err(|source| ExportError::Push {
                    tag: tag.clone(),
                    source,
                })?;
            pushed.push((tag.clone(), digest));
        }
        Ok(ExportOutcome::Pushed(pushed))
    }
}
