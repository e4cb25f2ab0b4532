//! `index.json`: read under a shared lock, changed by read-modify-write under an exclusive
//! lock and replaced atomically, so concurrent processes never lose each other's tags.
//!
//! Tag format: each tag is one index entry (a manifest descriptor) whose annotations
//! `org.opencontainers.image.ref.name` and `io.containerd.image.name` both hold the full
//! normalised reference, e.g. `docker.io/library/alpine:latest`. An entry without these
//! annotations is an untagged ("dangling") image.

use rbuild_image::media_types::{ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};
use rbuild_image::{Descriptor, Digest, Index, Reference};

use crate::error::{IoContext, Result, StoreError};
use crate::{fsutil, lock, Store};

/// The tag name of an index entry, if it has one.
pub(crate) fn entry_name(entry: &Descriptor) -> Option<&str> {
    entry
        .annotations
        .get(ANNOTATION_REF_NAME)
        .or_else(|| entry.annotations.get(ANNOTATION_CONTAINERD_NAME))
        .map(String::as_str)
}

/// Parses a name for tagging: it must carry a tag and no digest. Returns the full form.
pub(crate) fn tag_key(name: &str) -> Result<String> {
    let reference = Reference::parse(name)?;
    if reference.digest().is_some() {
        return Err(StoreError::Invalid(format!(
            "cannot use {name:?} as a tag: a tag name must not contain a digest"
        )));
    }
    Ok(reference.to_string())
}

impl Store {
    fn index_path(&self) -> std::path::PathBuf {
        self.layout.join("index.json")
    }

    pub(crate) fn init_index(&self) -> Result<()> {
        if self.index_path().is_file() {
            return Ok(());
        }
        let _lock = lock::exclusive(&self.index_lock)?;
        if !self.index_path().is_file() {
            self.write_index(&Index::default())?;
        }
        Ok(())
    }

    fn load_index(&self) -> Result<Index> {
        let path = self.index_path();
        match std::fs::read(&path) {
            Ok(bytes) => Index::from_slice(&bytes).map_err(|source| StoreError::Json {
                what: path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(e).at("read", &path),
        }
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        let bytes = index
            .to_canonical_json()
            .map_err(|source| StoreError::Json {
                what: "index.json".into(),
                source,
            })?;
        fsutil::write_atomic(self, &self.index_path(), &bytes)
    }

    /// A consistent snapshot of `index.json`.
    pub fn index(&self) -> Result<Index> {
        let _lock = lock::shared(&self.index_lock)?;
        self.load_index()
    }

    /// Runs `change` on the index under the exclusive lock and writes the result if it changed.
    pub(crate) fn update_index<T>(
        &self,
        change: impl FnOnce(&mut Index) -> Result<T>,
    ) -> Result<T> {
        let _lock = lock::exclusive(&self.index_lock)?;
        self.update_index_locked(change)
    }

    /// As `update_index`, for callers already holding the index lock.
    pub(crate) fn update_index_locked<T>(
        &self,
        change: impl FnOnce(&mut Index) -> Result<T>,
    ) -> Result<T> {
        let mut index = self.load_index()?;
        let before = index.clone();
        let out = change(&mut index)?;
        if index != before {
            self.write_index(&index)?;
        }
        Ok(out)
    }

    /// Points tag `name` (e.g. `alpine`, `localhost:5000/app:1`) at `manifest`, replacing what
    /// it pointed to. Returns the manifest digest the tag had before, if any. An image that
    /// loses its last tag this way leaves the index (its blobs become collectable).
    pub fn tag(&self, name: &str, manifest: &Descriptor) -> Result<Option<Digest>> {
        let key = tag_key(name)?;
        if !self.protect(&manifest.digest)? {
            return Err(StoreError::BlobNotFound {
                digest: manifest.digest.clone(),
                store: self.root.clone(),
            });
        }
        let mut entry = manifest.clone();
        entry
            .annotations
            .retain(|k, _| k != ANNOTATION_REF_NAME && k != ANNOTATION_CONTAINERD_NAME);
        entry
            .annotations
            .insert(ANNOTATION_REF_NAME.into(), key.clone());
        entry
            .annotations
            .insert(ANNOTATION_CONTAINERD_NAME.into(), key.clone());
        self.update_index(|index| {
            let previous = index
                .manifests
                .iter()
                .find(|e| entry_name(e) == Some(key.as_str()))
                .map(|e| e.digest.clone());
            index.manifests.retain(|e| {
                let same_name = entry_name(e) == Some(key.as_str());
                let dangling_same_image = entry_name(e).is_none() && e.digest == entry.digest;
                !same_name && !dangling_same_image
            });
            index.manifests.push(entry);
            Ok(previous)
        })
    }

    /// Removes tag `name`. Returns the manifest digest it pointed to and whether the image is
    /// now gone from the index (no other tag left).
    pub fn untag(&self, name: &str) -> Result<(Digest, bool)> {
        let key = tag_key(name)?;
        self.update_index(|index| {
            let Some(pos) = index
                .manifests
                .iter()
                .position(|e| entry_name(e) == Some(key.as_str()))
            else {
                return Err(StoreError::ImageNotFound(name.to_string()));
            };
            let removed = index.manifests.remove(pos);
            let gone = !index.manifests.iter().any(|e| e.digest == removed.digest);
            Ok((removed.digest, gone))
        })
    }

    /// Removes every index entry (all tags) of the image with manifest digest `manifest`.
    /// Returns the names that were removed.
    pub fn remove_image(&self, manifest: &Digest) -> Result<Vec<String>> {
        self.update_index(|index| {
            let mut names = Vec::new();
            let before = index.manifests.len();
            index.manifests.retain(|e| {
                if e.digest == *manifest {
                    names.extend(entry_name(e).map(str::to_string));
                    false
                } else {
                    true
                }
            });
            if index.manifests.len() == before {
                return Err(StoreError::ImageNotFound(manifest.to_string()));
            }
            Ok(names)
        })
    }

    /// Adds an untagged entry for `manifest` unless the index already has it.
    pub(crate) fn add_untagged(&self, manifest: &Descriptor) -> Result<()> {
        let mut entry = manifest.clone();
        entry.annotations.clear();
        self.update_index(|index| {
            if !index.manifests.iter().any(|e| e.digest == entry.digest) {
                index.manifests.push(entry);
            }
            Ok(())
        })
    }

    /// Removes untagged entries (what `docker image prune` calls dangling images). Returns
    /// their manifest digests.
    pub fn remove_untagged(&self) -> Result<Vec<Digest>> {
        self.update_index(|index| {
            let mut removed = Vec::new();
            index.manifests.retain(|e| {
                if entry_name(e).is_none() {
                    removed.push(e.digest.clone());
                    false
                } else {
                    true
                }
            });
            Ok(removed)
        })
    }
}
