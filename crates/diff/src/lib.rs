//! Compares two container images the way a user means "the same image": the filesystem each
//! one unpacks to (layers applied in order, with OCI whiteouts), each file's type, mode,
//! owner, size, content digest, link target, device numbers, xattrs, hard links and (unless
//! told not to) mtime; the number of layers and their diff ids; the config; the history.
//!
//! Images are read from a store (by name or id), a docker or OCI archive, or an OCI layout
//! directory ([`ImageSource`]); archives and layouts go through the store's own loader, so
//! every blob is verified against its digest before it is read here.

pub mod describe;
mod flatten;
mod report;

use std::path::{Path, PathBuf};

use rbuild_image::Digest;
use rbuild_store::Store;
use serde_json::Value;

pub use flatten::{FileMeta, Filesystem};
pub use report::{Change, Report};

/// What can go wrong reading an image.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: rbuild_store::StoreError,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = DiffError> = std::result::Result<T, E>;

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A name or id in a store.
    Store(String),
    /// A `docker save` or OCI archive (tar); the optional name picks one of several images.
    Archive(PathBuf, Option<String>),
    /// An OCI image layout directory.
    Layout(PathBuf, Option<String>),
}

impl ImageSource {
    /// Parses what a user typed: `docker-archive:PATH[:NAME]`, `oci-archive:PATH[:NAME]`,
    /// `oci:DIR[:NAME]`, an existing file (an archive) or directory (a layout), else a store
    /// name.
    pub fn parse(input: &str) -> ImageSource {
        let split = |rest: &str| -> (PathBuf, Option<String>) {
            match rest.split_once(':') {
                Some((path, name)) if !name.is_empty() => {
                    (PathBuf::from(path), Some(name.to_string()))
                }
                _ => (PathBuf::from(rest), None),
            }
        };
        for prefix in ["docker-archive:", "oci-archive:"] {
            if let Some(rest) = input.strip_prefix(prefix) {
                let (path, name) = split(rest);
                return ImageSource::Archive(path, name);
            }
        }
        if let Some(rest) = input.strip_prefix("oci:") {
            let (path, name) = split(rest);
            return ImageSource::Layout(path, name);
        }
        let path = Path::new(input);
        if path.is_file() {
            ImageSource::Archive(path.to_path_buf(), None)
        } else if path.join("oci-layout").is_file() {
            ImageSource::Layout(path.to_path_buf(), None)
        } else {
            ImageSource::Store(input.to_string())
        }
    }
}

/// One image, read: its config (as JSON, every field kept), layer diff ids and filesystem,
/// and the annotations of each layer's descriptor in its manifest.
#[derive(Debug, Clone)]
pub struct Image {
    pub config: Value,
    pub diff_ids: Vec<String>,
    pub filesystem: Filesystem,
    pub layer_annotations: Vec<std::collections::BTreeMap<String, String>>,
}

fn store_err(what: impl Into<String>) -> impl FnOnce(rbuild_store::StoreError) -> DiffError {
    let what = what.into();
    move |source| DiffError::Store { what, source }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DiffError {
    let what = what.into();
    move |source| DiffError::Io { what, source }
}

/// Reads an image. `store` is where `ImageSource::Store` names are looked up (not needed for
/// archives and layouts, which are loaded into a private temporary store).
pub fn read_image(source: &ImageSource, store: Option<&Store>) -> Result<Image> {
    match source {
        ImageSource::Store(name) => {
            let store = store.ok_or_else(|| {
                DiffError::Invalid(format!(
                    "{name:?} is neither a file nor a directory, and no store was given"
                ))
            })?;
            let record = store
                .resolve(name)
                .map_err(store_err(format!("finding {name:?} in the store")))?;
            read_from_store(store, &record.image_manifest.digest)
        }
        ImageSource::Archive(path, name) => {
            let file =
                std::fs::File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
            read_loaded(file, &path.display().to_string(), name.as_deref())
        }
        ImageSource::Layout(dir, name) => {
            // The store's loader reads OCI archives: hand it the directory as a tar.
            let mut tar = tempfile::tempfile().map_err(io_err("creating a temporary file"))?;
            {
                let mut builder = tar::Builder::new(&mut tar);
                builder.follow_symlinks(false);
                builder
                    .append_dir_all(".", dir)
                    .map_err(io_err(format!("reading the layout {}", dir.display())))?;
                builder
                    .finish()
                    .map_err(io_err("writing a temporary file"))?;
            }
            use std::io::Seek;
            tar.rewind().map_err(io_err("reading a temporary file"))?;
            read_loaded(tar, &dir.display().to_string(), name.as_deref())
        }
    }
}

/// Loads an archive into a private store and reads the one image it holds (or `name`).
fn read_loaded(input: impl std::io::Read, shown: &str, name: Option<&str>) -> Result<Image> {
    let dir = tempfile::tempdir().map_err(io_err("creating a temporary store"))?;
    let store = Store::open(dir.path()).map_err(store_err("opening a temporary store"))?;
    let loaded = rbuild_store::archive::load(&store, input)
        .map_err(store_err(format!("reading {shown}")))?;
    let chosen = match name {
        Some(name) => {
            let record = store
                .resolve(name)
                .map_err(store_err(format!("finding {name:?} in {shown}")))?;
            record.image_manifest.digest
        }
        None => match loaded.as_slice() {
            [one] => {
                let record = store
                    .resolve(&one.manifest.digest.to_string())
                    .map_err(store_err(format!("reading {shown}")))?;
                record.image_manifest.digest
            }
            [] => return Err(DiffError::Invalid(format!("{shown} holds no image"))),
            many => {
                let names: Vec<String> = many
                    .iter()
                    .map(|l| {
                        l.names
                            .first()
                            .cloned()
                            .unwrap_or_else(|| l.manifest.digest.to_string())
                    })
                    .collect();
                return Err(DiffError::Invalid(format!(
                    "{shown} holds {} images ({}); name one as PATH:NAME with a \
                     docker-archive: or oci-archive: prefix",
                    many.len(),
                    names.join(", ")
                )));
            }
        },
    };
    read_from_store(&store, &chosen)
}

fn read_from_store(store: &Store, manifest: &Digest) -> Result<Image> {
    let manifest = store
        .read_manifest(manifest)
        .map_err(store_err(format!("reading the manifest {manifest}")))?;
    let config_bytes = store
        .read_blob(&manifest.config.digest)
        .map_err(store_err(format!(
            "reading the config {}",
            manifest.config.digest
        )))?;
    let config: Value = serde_json::from_slice(&config_bytes)
        .map_err(|e| DiffError::Invalid(format!("the config {}: {e}", manifest.config.digest)))?;
    let diff_ids: Vec<String> = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != manifest.layers.len() {
        return Err(DiffError::Invalid(format!(
            "the manifest lists {} layers and the config {} diff ids",
            manifest.layers.len(),
            diff_ids.len()
        )));
    }
    let mut filesystem = Filesystem::default();
    for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
        let blob = store
            .open_blob(&layer.digest)
            .map_err(store_err(format!("opening the layer {}", layer.digest)))?;
        let reader = rbuild_layer::compression::decompressing_reader(std::io::BufReader::new(blob))
            .map_err(io_err(format!("reading the layer {}", layer.digest)))?;
        let mut hashing = HashingReader {
            inner: reader,
            hasher: sha2::Sha256::default(),
        };
        filesystem
            .apply(&mut hashing)
            .map_err(|e| DiffError::Invalid(format!("the layer {}: {e}", layer.digest)))?;
        // The tar reader stops at the end-of-archive blocks: hash the padding after them too.
        std::io::copy(&mut hashing, &mut std::io::sink())
            .map_err(io_err(format!("reading the layer {}", layer.digest)))?;
        use sha2::Digest as _;
        let found = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
        if &found != diff_id {
            return Err(DiffError::Invalid(format!(
                "the layer {} unpacks to {found}, but the config says {diff_id}",
                layer.digest
            )));
        }
    }
    filesystem.resolve_hardlinks();
    Ok(Image {
        config,
        diff_ids,
        filesystem,
        layer_annotations: manifest.layers.into_iter().map(|l| l.annotations).collect(),
    })
}

/// Hashes what is read through it (a layer's uncompressed stream, for its diff id).
struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// What to leave out of a comparison.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Paths (and everything below them) left out; `*` matches any run of characters.
    pub ignore: Vec<String>,
    /// Leave the history out.
    pub ignore_history: bool,
    /// Leave out file mtimes and the config's and history's `created`.
    pub ignore_timestamps: bool,
}

impl Options {
    /// Whether `path` or a directory above it matches an ignore pattern.
    fn ignored(&self, path: &str) -> bool {
        let mut candidates = vec![path];
        let mut rest = path;
        while let Some(i) = rest.rfind('/') {
            if i == 0 {
                break;
            }
            rest = &rest[..i];
            candidates.push(rest);
        }
        self.ignore.iter().any(|pattern| {
            let pattern = pattern.trim_end_matches('/');
            let pattern = if pattern.starts_with('/') {
                pattern.to_string()
            } else {
                format!("/{pattern}")
            };
            candidates
                .iter()
                .any(|c| wildcard(pattern.as_bytes(), c.as_bytes()))
        })
    }
}

/// `*` matches any run of bytes (slashes included); everything else matches itself.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Compares two images.
pub fn compare(a: &Image, b: &Image, options: &Options) -> Report {
    let mut report = Report::default();
    report::compare_files(&mut report, &a.filesystem, &b.filesystem, options);
    report::compare_config(&mut report, &a.config, &b.config, options);
    if !options.ignore_history {
        report::compare_history(&mut report, &a.config, &b.config, options);
    }
    if a.diff_ids.len() != b.diff_ids.len() {
        report.layers.push(Change::changed(
            "layers",
            Value::from(a.diff_ids.len()),
            Value::from(b.diff_ids.len()),
        ));
    }
    // Layer by layer: the same boundaries, the same entries in each (whiteouts included).
    // Diff ids follow from every byte, mtimes included: compared only with timestamps.
    for (i, (x, y)) in a.diff_ids.iter().zip(&b.diff_ids).enumerate() {
        if x != y && !options.ignore_timestamps {
            report.layers.push(Change::changed(
                format!("[{i}] diff_id"),
                Value::from(x.as_str()),
                Value::from(y.as_str()),
            ));
        }
    }
    for (i, (x, y)) in a
        .filesystem
        .layers
        .iter()
        .zip(&b.filesystem.layers)
        .enumerate()
    {
        report::compare_entries(&mut report.layers, &format!("[{i}] "), x, y, options);
    }
    report.equal = report.is_equal();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignore_patterns_cover_paths_below_and_wildcards() {
        let o = Options {
            ignore: vec!["var/log".into(), "/tmp/*.pyc".into()],
            ..Options::default()
        };
        assert!(o.ignored("/var/log"));
        assert!(o.ignored("/var/log/apt/history.log"));
        assert!(!o.ignored("/var/logs"));
        assert!(o.ignored("/tmp/a/b.pyc"));
        let o = Options {
            ignore: vec!["*/__pycache__".into()],
            ..Options::default()
        };
        assert!(o.ignored("/usr/lib/x/__pycache__/y.cpython-311.opt"));
        assert!(!o.ignored("/usr/lib/x/__pycache"));
        assert!(!o.ignored("/tmp/a/b.py"));
    }

    #[test]
    fn sources_are_told_apart() {
        assert_eq!(
            ImageSource::parse("docker-archive:/x/a.tar:app:1"),
            ImageSource::Archive("/x/a.tar".into(), Some("app:1".into()))
        );
        assert_eq!(
            ImageSource::parse("oci:/x/layout"),
            ImageSource::Layout("/x/layout".into(), None)
        );
        assert_eq!(
            ImageSource::parse("app:1"),
            ImageSource::Store("app:1".into())
        );
    }
}
