//! `save` and `load`: image archives as tar files.
//!
//! Both formats written are an OCI image layout in a tar (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`); the Docker format adds `manifest.json` and `repositories`, which is
//! exactly what `docker save` writes since Docker 25, and what older `docker load` reads (it
//! follows the paths in `manifest.json` and accepts gzip layers). `load` reads either, plus the
//! legacy `docker save` layout (`<id>/layer.tar`, `<config>.json`), optionally gzip-compressed.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};

use rbuild_image::media_types::{self, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};
use rbuild_image::{Descriptor, Digest, Index, Manifest, Reference};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::{ImageRecord, Store};

/// Which archive layout `save` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// OCI layout plus `manifest.json` and `repositories` (`docker load`).
    Docker,
    /// OCI layout only (`skopeo copy oci-archive:FILE ...`).
    Oci,
}

/// An image `load` stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedImage {
    pub manifest: Descriptor,
    /// Full tag names applied from the archive.
    pub names: Vec<String>,
}

/// One entry of Docker's `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default, deserialize_with = "null_as_empty")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers", default, deserialize_with = "null_as_empty")]
    layers: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

fn tar_err(what: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io {
        op: "write archive entry",
        path: what.into(),
        source,
    }
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

fn file_header(size: u64, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<()> {
    let mut header = file_header(bytes.len() as u64, 0o644);
    tar.append_data(&mut header, path, bytes)
        .map_err(tar_err(path.to_string()))
}

/// Writes `images` (with their tags) as one archive to `out`. An archive leaves the machine:
/// the plain layers a build made go in compressed with `layers` (`Store::shipped_record`),
/// as a push sends them and as BuildKit's docker and OCI exporters write them, while the
/// local images keep theirs plain.
pub fn save<W: Write>(
    store: &Store,
    images: &[ImageRecord],
    format: ArchiveFormat,
    layers: &rbuild_layer::WriteOptions,
    out: W,
) -> Result<()> {
    let images = images
        .iter()
        .map(|image| store.shipped_record(image, layers))
        .collect::<Result<Vec<_>>>()?;
    let mut tar = tar::Builder::new(out);
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = file_header(0, 0o755);
        header.set_entry_type(tar::EntryType::Directory);
        tar.append_data(&mut header, dir, std::io::empty())
            .map_err(tar_err(dir.to_string()))?;
    }
    let mut index = Index::default();
    let mut docker_manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut written = std::collections::HashSet::new();
    for image in &images {
        let manifest_bytes = store.read_blob(&image.image_manifest.digest)?;
        let manifest =
            Manifest::from_slice(&manifest_bytes).map_err(|source| StoreError::Json {
                what: format!("manifest {}", image.image_manifest.digest),
                source,
            })?;
        let blobs = std::iter::once(&image.image_manifest)
            .chain(std::iter::once(&manifest.config))
            .chain(&manifest.layers);
        for blob in blobs {
            if !written.insert(blob.digest.clone()) {
                continue;
            }
            let file = store.open_blob(&blob.digest)?;
            let size = store.blob_size(&blob.digest)?;
            let path = blob_path(&blob.digest);
            let mut header = file_header(size, 0o644);
            tar.append_data(&mut header, &path, file)
                .map_err(tar_err(path.clone()))?;
        }
        let mut entry = image.image_manifest.clone();
        entry.annotations.clear();
        let references: Vec<Reference> = image
            .names
            .iter()
            .filter_map(|n| Reference::parse(n).ok())
            .collect();
        if references.is_empty() {
            index.manifests.push(entry.clone());
        }
        for reference in &references {
            let mut named = entry.clone();
            named
                .annotations
                .insert(ANNOTATION_CONTAINERD_NAME.into(), reference.to_string());
            // As containerd and `docker save` do: the OCI ref.name is the tag alone.
            if let Some(tag) = reference.tag() {
                named
                    .annotations
                    .insert(ANNOTATION_REF_NAME.into(), tag.to_string());
            }
            index.manifests.push(named);
            if let (Some(tag), Some(top)) = (reference.tag(), manifest.layers.last()) {
                let familiar = reference.familiar();
                let repo = familiar
                    .strip_suffix(&format!(":{tag}"))
                    .unwrap_or(&familiar);
                repositories
                    .entry(repo.to_string())
                    .or_default()
                    .insert(tag.to_string(), top.digest.hex().to_string());
            }
        }
        docker_manifest.push(DockerManifestEntry {
            config: blob_path(&manifest.config.digest),
            repo_tags: references.iter().map(Reference::familiar).collect(),
            layers: manifest
                .layers
                .iter()
                .map(|l| blob_path(&l.digest))
                .collect(),
        });
    }
    let json = |v: &dyn erased::Json| v.canonical();
    append_bytes(
        &mut tar,
        "oci-layout",
        format!(
            "{{\"imageLayoutVersion\":\"{}\"}}",
            media_types::OCI_LAYOUT_VERSION
        )
        .as_bytes(),
    )?;
    append_bytes(&mut tar, "index.json", &json(&index)?)?;
    if format == ArchiveFormat::Docker {
        append_bytes(&mut tar, "manifest.json", &json(&docker_manifest)?)?;
        if !repositories.is_empty() {
            append_bytes(&mut tar, "repositories", &json(&repositories)?)?;
        }
    }
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(tar_err("end of archive".into()))
}

/// Small serialisation helper so `save` can canonicalise values of different types.
mod erased {
    use crate::error::{Result, StoreError};

    pub(super) trait Json {
        fn canonical(&self) -> Result<Vec<u8>>;
    }

    impl<T: serde::Serialize> Json for T {
        fn canonical(&self) -> Result<Vec<u8>> {
            rbuild_image::canonical::to_vec(self).map_err(|source| StoreError::Json {
                what: "archive metadata".into(),
                source,
            })
        }
    }
}

/// Files of an archive that are not content-addressed: kept in memory if small, else stored.
enum Stashed {
    Bytes(Vec<u8>),
    Blob(crate::CommittedBlob),
    Link(String),
}

/// Metadata files larger than this go to the store instead of memory.
const IN_MEMORY_LIMIT: u64 = 1 << 20;

/// All the metadata files kept in memory together: past this, they go to the store too, so
/// an archive of many small files cannot fill memory.
const IN_MEMORY_TOTAL_LIMIT: u64 = 64 << 20;

/// Reads a Docker or OCI archive (optionally gzip-compressed), verifies every
/// content-addressed blob against its name, stores the images and applies the archive's tags.
pub fn load<R: Read>(store: &Store, input: R) -> Result<Vec<LoadedImage>> {
    let mut buffered = BufReader::with_capacity(1 << 20, input);
    let head = buffered
        .fill_buf()
        .map_err(|source| io_err("read archive", "<input>", source))?;
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    // Oversized long names and PAX headers are refused before the tar crate buffers them.
    let mut archive = tar::Archive::new(rbuild_layer::TarBounds::new(reader));
    let mut files: HashMap<String, Stashed> = HashMap::new();
    let mut in_memory: u64 = 0;
    let entries = archive
        .entries()
        .map_err(|source| io_err("read archive", "<input>", source))?;
    for entry in entries {
        let mut entry = entry.map_err(|source| io_err("read archive entry", "<input>", source))?;
        let raw_path = entry
            .path()
            .map_err(|source| io_err("read entry name", "<input>", source))?
            .to_string_lossy()
            .into_owned();
        let path = normalize(&raw_path);
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Ok(Some(target)) = entry.link_name() {
                    let target = target.to_string_lossy().into_owned();
                    let resolved = if entry.header().entry_type() == tar::EntryType::Symlink {
                        resolve_relative(&path, &target)
                    } else {
                        normalize(&target)
                    };
                    files.insert(path, Stashed::Link(resolved));
                }
                continue;
            }
            _ => continue,
        }
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            let expected: Digest = format!("sha256:{hex}").parse().map_err(|_| {
                StoreError::Invalid(format!(
                    "archive entry {raw_path:?} is not named by a sha256 digest"
                ))
            })?;
            let blob = store
                .put_blob(&mut entry, Some(&expected))
                .map_err(|e| match e {
                    StoreError::DigestMismatch {
                        expected,
                        actual,
                        size,
                        ..
                    } => StoreError::DigestMismatch {
                        what: format!("archive entry {raw_path}"),
                        expected,
                        actual,
                        size,
                    },
                    other => other,
                })?;
            files.insert(path, Stashed::Blob(blob));
        } else if entry.size() <= IN_MEMORY_LIMIT
            && in_memory + entry.size() <= IN_MEMORY_TOTAL_LIMIT
        {
            in_memory += entry.size();
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|source| io_err("read archive entry", &raw_path, source))?;
            files.insert(path, Stashed::Bytes(bytes));
        } else {
            let blob = store.put_blob(&mut entry, None)?;
            files.insert(path, Stashed::Blob(blob));
        }
    }
    let loader = Loader { store, files };
    let docker_entries: Option<Vec<DockerManifestEntry>> =
        loader.json_file("manifest.json").transpose()?;
    if let Some(index) = loader.json_file::<Index>("index.json").transpose()? {
        loader.load_oci(&index, docker_entries.as_deref().unwrap_or_default())
    } else if let Some(entries) = docker_entries {
        loader.load_legacy_docker(&entries)
    } else {
        Err(StoreError::Invalid(
            "not an image archive: it has neither index.json (OCI) nor manifest.json (docker save)"
                .into(),
        ))
    }
}

fn io_err(op: &'static str, what: &str, source: std::io::Error) -> StoreError {
    StoreError::Io {
        op,
        path: what.into(),
        source,
    }
}

/// `./a//b/` → `a/b`. The executor's `fsops::clean_components` applies the same rule to
/// container paths; the store sits below the executor and takes no path crate for these
/// lines, so each keeps its own.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// A symlink target relative to the link's directory (legacy archives link duplicate layers).
fn resolve_relative(link: &str, target: &str) -> String {
    if target.starts_with('/') {
        return normalize(target);
    }
    let dir = link.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    normalize(&format!("{dir}/{target}"))
}

struct Loader<'s> {
    store: &'s Store,
    files: HashMap<String, Stashed>,
}

impl Loader<'_> {
    fn stashed(&self, path: &str) -> Result<&Stashed> {
        let mut path = normalize(path);
        for _ in 0..16 {
            match self.files.get(&path) {
                Some(Stashed::Link(target)) => path = target.clone(),
                Some(other) => return Ok(other),
                None => break,
            }
        }
        Err(StoreError::Invalid(format!("archive has no file {path:?}")))
    }

    fn json_file<T: serde::de::DeserializeOwned>(&self, path: &str) -> Option<Result<T>> {
        self.files.get(path)?;
        Some(self.bytes(path).and_then(|bytes| {
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
                what: format!("archive file {path}"),
                source,
            })
        }))
    }

    fn bytes(&self, path: &str) -> Result<Vec<u8>> {
        match self.stashed(path)? {
            Stashed::Bytes(b) => Ok(b.clone()),
            Stashed::Blob(b) => self.store.read_blob(&b.digest),
            Stashed::Link(_) => Err(StoreError::Invalid(format!(
                "archive link loop at {path:?}"
            ))),
        }
    }

    /// Stores the file at `path` (if not already a blob) and returns its blob.
    fn blob(&self, path: &str) -> Result<crate::CommittedBlob> {
        match self.stashed(path)? {
            Stashed::Bytes(b) => self.store.put_bytes(b, None),
            Stashed::Blob(b) => Ok(b.clone()),
            Stashed::Link(_) => Err(StoreError::Invalid(format!(
                "archive link loop at {path:?}"
            ))),
        }
    }

    fn tag_all(&self, manifest: &Descriptor, names: Vec<String>) -> Result<LoadedImage> {
        let mut applied = Vec::new();
        for name in names {
            let key = Reference::parse(&name)?.to_string();
            self.store.tag(&key, manifest)?;
            if !applied.contains(&key) {
                applied.push(key);
            }
        }
        Ok(LoadedImage {
            manifest: manifest.clone(),
            names: applied,
        })
    }

    fn load_oci(
        &self,
        index: &Index,
        docker_entries: &[DockerManifestEntry],
    ) -> Result<Vec<LoadedImage>> {
        // Group index entries by manifest, collecting names from the annotations.
        let mut order: Vec<Descriptor> = Vec::new();
        let mut names: HashMap<Digest, Vec<String>> = HashMap::new();
        for entry in &index.manifests {
            if !order.iter().any(|d| d.digest == entry.digest) {
                let mut bare = entry.clone();
                bare.annotations.clear();
                order.push(bare);
            }
            let slot = names.entry(entry.digest.clone()).or_default();
            if let Some(name) = entry.annotations.get(ANNOTATION_CONTAINERD_NAME) {
                slot.push(name.clone());
            } else if let Some(name) = entry.annotations.get(ANNOTATION_REF_NAME) {
                // A bare tag ("latest") names no repository; only full references are used.
                if name.contains(['/', ':']) {
                    slot.push(name.clone());
                }
            }
        }
        let mut loaded = Vec::new();
        for entry in order {
            let (chosen, manifest) = self.store.image_manifest(&entry)?;
            let bytes = self.store.read_blob(&chosen.digest)?;
            let desc = self.store.put_manifest_bytes(&bytes)?;
            let mut all = names.remove(&entry.digest).unwrap_or_default();
            let config_path = blob_path(&manifest.config.digest);
            for docker in docker_entries
                .iter()
                .filter(|d| normalize(&d.config) == config_path)
            {
                all.extend(docker.repo_tags.iter().cloned());
            }
            loaded.push(self.tag_all(&desc, all)?);
        }
        Ok(loaded)
    }

    fn load_legacy_docker(&self, entries: &[DockerManifestEntry]) -> Result<Vec<LoadedImage>> {
        let mut loaded = Vec::new();
        for entry in entries {
            let config = self.blob(&entry.config)?;
            let mut layers = Vec::new();
            for path in &entry.layers {
                let blob = self.blob(path)?;
                let mut head = [0u8; 4];
                let n = read_prefix(&mut self.store.open_blob(&blob.digest)?, &mut head);
                let compression = media_types::sniff_compression(&head[..n]);
                layers.push(blob.descriptor(media_types::oci_layer_type(compression)));
            }
            let manifest = Manifest::new_oci(config.descriptor(media_types::OCI_CONFIG), layers);
            let desc = self.store.put_manifest(&manifest)?;
            loaded.push(self.tag_all(&desc, entry.repo_tags.clone())?);
        }
        Ok(loaded)
    }
}

fn read_prefix(file: &mut std::fs::File, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    filled
}
