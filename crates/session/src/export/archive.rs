//! `-o type=docker|oci,dest=FILE`: the image as a `docker save` or OCI layout archive,
//! written beside the destination and renamed into place once complete.

use std::path::PathBuf;

use rbuild_store::archive::ArchiveFormat;
use rbuild_store::ImageRecord;

use super::{ExportContext, ExportError, ExportOutcome, Exporter, OutputKind};

pub struct ArchiveExporter {
    format: ArchiveFormat,
    dest: PathBuf,
    /// `rewrite-timestamp=` and `source-date-epoch=` of the output.
    rewrite_timestamp: bool,
    source_date_epoch: Option<Option<i64>>,
}

impl ArchiveExporter {
    pub fn new(format: ArchiveFormat, dest: PathBuf) -> Self {
        ArchiveExporter {
            format,
            dest,
            rewrite_timestamp: false,
            source_date_epoch: None,
        }
    }

    /// The output's `rewrite-timestamp=` and `source-date-epoch=` attributes.
    pub fn with_timestamps(
        mut self,
        rewrite_timestamp: bool,
        source_date_epoch: Option<Option<i64>>,
    ) -> Self {
        self.rewrite_timestamp = rewrite_timestamp;
        self.source_date_epoch = source_date_epoch;
        self
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
        let image = cx.image_for(self.rewrite_timestamp, self.source_date_epoch, image)?;
        write_archive_file(
            cx.store,
            std::slice::from_ref(&image),
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
    // A device, a pipe or a socket (`-o /dev/null`, `/dev/stdout`): written into as it is.
    // Renaming a finished file onto it would replace the device node itself.
    if std::fs::metadata(output).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return write_archive_into(store, records, format, layers, output);
    }
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
        save(store, records, format, layers, output, &mut writer)?;
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

/// Writes the archive straight into `output`, an existing file that is not a regular one.
fn write_archive_into(
    store: &rbuild_store::Store,
    records: &[ImageRecord],
    format: ArchiveFormat,
    layers: &rbuild_layer::WriteOptions,
    output: &std::path::Path,
) -> Result<(), ExportError> {
    let io = |what: &'static str| {
        let path = output.to_path_buf();
        move |source| ExportError::Io { what, path, source }
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(output)
        .map_err(io("opening"))?;
    let mut writer = std::io::BufWriter::new(file);
    save(store, records, format, layers, output, &mut writer)?;
    std::io::Write::flush(&mut writer).map_err(io("writing"))
}

/// Writes the archive of `records` to `writer`, an error naming `output`.
fn save(
    store: &rbuild_store::Store,
    records: &[ImageRecord],
    format: ArchiveFormat,
    layers: &rbuild_layer::WriteOptions,
    output: &std::path::Path,
    writer: &mut impl std::io::Write,
) -> Result<(), ExportError> {
    rbuild_store::archive::save(store, records, format, layers, writer).map_err(|e| {
        ExportError::Archive {
            path: output.to_path_buf(),
            reason: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    /// `rbuild save -o /dev/null` once replaced the machine's `/dev/null` with the archive
    /// (written beside it, then renamed onto it): a pipe stands in for the device here.
    #[test]
    fn an_archive_to_a_pipe_is_written_into_it_not_renamed_onto_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = rbuild_store::Store::open(dir.path().join("store")).unwrap();
        let config = rbuild_image::ImageConfig::from_slice(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        let record = store.put_image(&config, &[]).unwrap();
        let fifo = dir.path().join("pipe");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c_path` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        write_archive_file(
            &store,
            &[record],
            ArchiveFormat::Oci,
            &rbuild_layer::WriteOptions::default(),
            &fifo,
        )
        .unwrap();
        // Checked before joining: a reader of a replaced pipe would wait for ever.
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo(),
            "the pipe was replaced"
        );
        let bytes = reader.join().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n == "index.json"), "{names:?}");
    }
}
