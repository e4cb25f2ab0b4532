//! The step cache: keys, lookups in the store's records and in a remote (registry) cache.
//!
//! A step's key is a digest of named inputs ([`KeyBuilder`]): the key of the file system it
//! starts from (the base image's manifest digest, `scratch`, or the previous step's key),
//! the instruction after expansion, and what else decides its result — for RUN the
//! environment, user, working directory, network, shell and mounts (bind sources by
//! content, secrets and cache mounts by id only); for COPY/ADD the content, mode and link
//! target of exactly the files copied (after `.dockerignore`), never their mtimes; for a
//! `--from` source the key (or manifest digest) of what it copies from. Config-only
//! instructions (ENV, LABEL, ...) have no key of their own: they change the image config,
//! which is rebuilt each time, and affect later steps only through what those see.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rbuild_image::{Digest, Hasher};
use rbuild_store::{CacheRecord, KeyInputs, Store};

/// A cache besides the store's own records, e.g. one imported from a registry
/// (`--cache-from`). Consulted on a local miss.
pub trait RemoteCache {
    /// The record for `key`, if this cache has one.
    fn lookup(&self, key: &Digest) -> Option<CacheRecord>;
    /// Brings the layer of `record` into `store`, verified against its digest.
    fn fetch_layer(&self, store: &Store, record: &CacheRecord) -> Result<(), String>;
}

/// No remote cache.
pub struct NoRemoteCache;

impl RemoteCache for NoRemoteCache {
    fn lookup(&self, _key: &Digest) -> Option<CacheRecord> {
        None
    }
    fn fetch_layer(&self, _store: &Store, _record: &CacheRecord) -> Result<(), String> {
        Err("no remote cache".into())
    }
}

/// The directory that holds `RUN --mount=type=cache,id=ID` between builds. A remote cache
/// importing mount contents (`mounts=true`) fills it before the build.
pub fn cache_mount_dir(store: &Store, id: &str) -> Result<PathBuf, String> {
    let root = store
        .state_dir("cache-mounts")
        .map_err(|e| format!("cache mount directory: {e}"))?;
    Ok(root.join(cache_dir_name(id)))
}

/// A file-system-safe, unique name for a cache id.
fn cache_dir_name(id: &str) -> String {
    let digest = Digest::of(id.as_bytes());
    let readable: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("{readable}-{}", &digest.hex()[..16])
}

/// Collects a step's named inputs; the key is the digest of all of them in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyBuilder {
    inputs: Vec<(String, String)>,
}

impl KeyBuilder {
    pub(crate) fn new(parent: &Digest) -> Self {
        let mut k = KeyBuilder::default();
        k.add("parent", parent.to_string());
        k
    }

    pub(crate) fn add(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.inputs.push((name.into(), value.into()));
    }

    pub(crate) fn key(&self) -> Digest {
        let mut h = Hasher::new();
        h.update(b"rbuild step key v1\n");
        for (name, value) in &self.inputs {
            // Lengths first, so no two input lists serialise alike.
            h.update(format!("{}:{}\n", name.len(), value.len()).as_bytes());
            h.update(name.as_bytes());
            h.update(value.as_bytes());
        }
        h.finish()
    }

    /// The inputs for explaining the next build's miss. Long values are kept as digests.
    pub(crate) fn explain_inputs(&self) -> KeyInputs {
        let mut inputs = BTreeMap::new();
        for (name, value) in &self.inputs {
            let shown = if value.len() > 200 {
                Digest::of(value.as_bytes()).to_string()
            } else {
                value.clone()
            };
            inputs.insert(name.clone(), shown);
        }
        KeyInputs { inputs }
    }
}

/// Why a step missed, compared with the inputs recorded for the same step last time.
pub(crate) fn explain_miss(previous: Option<&KeyInputs>, now: &KeyInputs) -> String {
    let Some(previous) = previous else {
        return "no earlier build of this step".into();
    };
    let mut changed = Vec::new();
    for (name, value) in &now.inputs {
        match previous.inputs.get(name) {
            None => changed.push(format!("{name} is new")),
            Some(old) if old != value => {
                if name == "parent" {
                    changed.push("the step before it changed".into());
                } else {
                    changed.push(format!("{name} changed"));
                }
            }
            Some(_) => {}
        }
    }
    for name in previous.inputs.keys() {
        if !now.inputs.contains_key(name) {
            changed.push(format!("{name} is gone"));
        }
    }
    if changed.is_empty() {
        "inputs unchanged, but the cached result is gone (pruned, or --no-cache)".into()
    } else {
        const SHOWN: usize = 6;
        let more = changed.len().saturating_sub(SHOWN);
        changed.truncate(SHOWN);
        let mut text = changed.join("; ");
        if more > 0 {
            text.push_str(&format!("; and {more} more"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_input_and_its_boundaries() {
        let parent = Digest::of(b"base");
        let mut a = KeyBuilder::new(&parent);
        a.add("cmd", "ab");
        a.add("env", "c");
        let mut b = KeyBuilder::new(&parent);
        b.add("cmd", "a");
        b.add("env", "bc");
        assert_ne!(a.key(), b.key());
        let mut c = KeyBuilder::new(&parent);
        c.add("cmd", "ab");
        c.add("env", "c");
        assert_eq!(a.key(), c.key());
        let other = KeyBuilder::new(&Digest::of(b"other"));
        assert_ne!(KeyBuilder::new(&parent).key(), other.key());
    }

    #[test]
    fn misses_name_the_changed_inputs() {
        let mut a = KeyBuilder::new(&Digest::of(b"p"));
        a.add("file app.txt", "sha256:1");
        a.add("arg VERSION", "1");
        let mut b = KeyBuilder::new(&Digest::of(b"p"));
        b.add("file app.txt", "sha256:2");
        b.add("arg VERSION", "1");
        let text = explain_miss(Some(&a.explain_inputs()), &b.explain_inputs());
        assert_eq!(text, "file app.txt changed");
        assert_eq!(
            explain_miss(None, &b.explain_inputs()),
            "no earlier build of this step"
        );
    }
}
