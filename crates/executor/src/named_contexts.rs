//! Named contexts (`--build-context NAME=...`): what a stage name, a FROM image, a `COPY
//! --from` or a `RUN --mount from=` resolves to when the build has a context of that name
//! (the Dockerfile crate decides that, [`rbuild_dockerfile::Base::Context`]). An image
//! context is an image reference (a store name or a registry reference, pulled as a base
//! is); a local one is a directory read with its own `.dockerignore` applied, as BuildKit's
//! dockerui reads a `local:` context.

use std::path::{Path, PathBuf};

use rbuild_dockerfile::named_context_key;
use rbuild_ignore::PatternMatcher;

use rbuild_image::{Digest, Hasher};

use crate::base::LoadedImage;
use crate::content_hash::digest_source;
use crate::context::{lock, BuildContext};
use crate::error::{BuildError, Result};
use crate::fsops::{self, Filter, Ownership};
use crate::sources::{CopyFilters, Source, SourceRoot};
use crate::step_cache::base_key;

/// What a named context is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// `docker-image://REF`: an image (a name in the store, or pulled); `scratch` is the
    /// empty image.
    Image(String),
    /// A directory on this machine.
    Local(PathBuf),
    /// `oci-layout://DIR[:TAG][@DIGEST]`: an image of a local OCI layout. The session
    /// copies it into the store and hands the build an [`NamedContext::Image`] of its
    /// manifest digest instead (`rbuild_session::oci_layout`).
    OciLayout(OciLayoutRef),
}

/// Where an image of a layout is: the directory, and the tag or digest naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciLayoutRef {
    pub dir: PathBuf,
    /// The `org.opencontainers.image.ref.name` of an entry of `index.json`.
    pub tag: Option<String>,
    /// The digest of a manifest or index in the layout.
    pub digest: Option<Digest>,
}

impl OciLayoutRef {
    /// Parses what follows `oci-layout://`: `DIR[:TAG][@DIGEST]` (buildx's syntax).
    pub fn parse(value: &str) -> Result<OciLayoutRef, String> {
        let (rest, digest) = match value.rsplit_once('@') {
            Some((rest, digest)) => (
                rest,
                Some(
                    digest
                        .parse::<Digest>()
                        .map_err(|e| format!("{digest:?} is not a digest: {e}"))?,
                ),
            ),
            None => (value, None),
        };
        // A tag follows the directory's last component: a ':' after the last '/'.
        let (dir, tag) = match rest.rsplit_once(':') {
            Some((dir, tag)) if !tag.contains('/') && !dir.is_empty() => {
                if tag.is_empty() {
                    return Err("an empty tag after ':'".into());
                }
                (dir, Some(tag.to_string()))
            }
            _ => (rest, None),
        };
        if dir.is_empty() {
            return Err("no layout directory".into());
        }
        Ok(OciLayoutRef {
            dir: PathBuf::from(dir),
            tag,
            digest,
        })
    }
}

impl std::fmt::Display for OciLayoutRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci-layout://{}", self.dir.display())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl BuildContext<'_> {
    /// The key of the named context a `--from` value of stage `current` names: the
    /// context of that name, or the one replacing the stage of that index.
    pub(crate) fn context_of_from(&self, current: usize, from: &str) -> Option<String> {
        self.df.named_context(from).or_else(|| {
            from.parse::<usize>()
                .ok()
                .filter(|&i| i < current)
                .and_then(|i| self.df.replacing_context(i))
        })
    }

    /// The cache-key input of the named context `key` read by `COPY --from` or a bind:
    /// an image's base key, or the digest of a directory's content (as read, its
    /// `.dockerignore` applied), so that a changed file is a changed key.
    pub(crate) fn key_of_named(&self, key: &str) -> Result<Digest> {
        if let NamedContext::Image(reference) = self.named(key)? {
            let image = self.load_image(reference)?;
            return Ok(base_key(&image.id, &self.platform));
        }
        let root = self.root_of_named(key)?;
        let content = digest_source(&root, "", &|_, _| Filter::Include)?;
        let mut hasher = Hasher::new();
        hasher.update(b"named-context-directory\0");
        for (path, digest) in &content.entries {
            hasher.update(path.as_bytes());
            hasher.update(b"\0");
            hasher.update(digest.to_string().as_bytes());
            hasher.update(b"\n");
        }
        Ok(hasher.finish())
    }

    /// The named context whose key ([`named_context_key`]) is `key`: an image or a
    /// directory (an OCI layout is an image by now).
    pub(crate) fn named(&self, key: &str) -> Result<&NamedContext> {
        let context = self
            .request
            .named_contexts
            .iter()
            .find(|(name, _)| named_context_key(name) == key)
            .map(|(_, context)| context)
            .ok_or_else(|| BuildError::other(format!("no named context {key:?}")))?;
        if let NamedContext::OciLayout(layout) = context {
            return Err(BuildError::other(format!(
                "named context {key:?} ({layout}) was not copied into the store before the \
                 build (a build request must go through the session)"
            )));
        }
        Ok(context)
    }

    /// The image a stage built FROM the named context `key` starts from.
    pub(crate) fn load_named(&self, key: &str) -> Result<LoadedImage> {
        match self.named(key)? {
            NamedContext::Image(reference) => self.load_image(reference),
            NamedContext::OciLayout(layout) => Err(BuildError::other(format!(
                "named context {key:?} ({layout}) is not in the store"
            ))),
            NamedContext::Local(dir) => Err(BuildError::other(format!(
                "named context {key:?} is the directory {}: a stage cannot be built FROM a \
                 local named context here yet (COPY --from={key} and RUN --mount=from={key} \
                 read it)",
                dir.display()
            ))),
        }
    }

    /// The root filesystem `COPY --from` and `RUN --mount from=` read for the named context
    /// `key`: the image's tree, or a copy of the directory without what its `.dockerignore`
    /// excludes (made once per build).
    pub(crate) fn root_of_named(&self, key: &str) -> Result<PathBuf> {
        let dir = match self.named(key)? {
            NamedContext::Image(reference) => return self.root_of_image(reference),
            NamedContext::Local(dir) => dir,
            NamedContext::OciLayout(layout) => {
                return Err(BuildError::other(format!(
                    "named context {key:?} ({layout}) is not in the store"
                )))
            }
        };
        // `=` is in no image reference: this key never meets an image's.
        let root_key = format!("named-context={key}");
        let mut roots = lock(&self.shared.image_roots);
        if let Some(root) = roots.get(&root_key) {
            return Ok(root.clone());
        }
        let root = self.dir.new_dir("named-context")?;
        copy_local_context(self, dir, &root)?;
        roots.insert(root_key, root.clone());
        Ok(root)
    }
}

/// Copies the directory `dir` into `root` without what its own `.dockerignore` excludes.
fn copy_local_context(build: &BuildContext<'_>, dir: &Path, root: &Path) -> Result<()> {
    // Read inside the directory: a `.dockerignore` that is a link reads nothing outside.
    let ignore = match rbuild_ignore::read_file_in_root(
        dir,
        Path::new(".dockerignore"),
        rbuild_ignore::MAX_IGNORE_FILE_BYTES,
    ) {
        Ok(bytes) => {
            let named = |e: &dyn std::fmt::Display| {
                BuildError::other(format!("{}/.dockerignore: {e}", dir.display()))
            };
            let patterns = rbuild_ignore::IgnoreFile::parse(&String::from_utf8_lossy(&bytes))
                .map_err(|e| named(&e))?;
            Some(PatternMatcher::from_ignore_file(&patterns).map_err(|e| named(&e))?)
        }
        Err(rbuild_ignore::InRootError::NotFound) => None,
        Err(e) => {
            return Err(BuildError::other(format!(
                "reading {}/.dockerignore: {e}",
                dir.display()
            )))
        }
    };
    let source_root = SourceRoot::Context {
        dir,
        ignore: ignore.as_ref(),
    };
    let whole = Source {
        host: dir.to_path_buf(),
        rel: String::new(),
    };
    let no_filters = CopyFilters::default();
    let filter = source_root.filter_for(&whole, &no_filters);
    fsops::copy_dir_contents(&build.owners, dir, root, Ownership::default(), &filter)
}

/// The ONBUILD triggers of the build's image named contexts that the store holds already
/// (an OCI layout the session copied in, an image built or pulled before), by context name:
/// read before the stages are planned, so the stages their `--from`s name join the build
/// (BuildKit resolves a context's image while converting, before it plans). An image the
/// store does not hold yet is pulled when its stage runs, as before, and its triggers run
/// then; one whose record cannot be read here fails that stage with the store's error.
pub(crate) fn stored_context_triggers(
    request: &crate::BuildRequest,
    store: &rbuild_store::Store,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::new();
    for (name, context) in &request.named_contexts {
        let NamedContext::Image(reference) = context else {
            continue;
        };
        if reference.eq_ignore_ascii_case("scratch") {
            continue;
        }
        let Ok(record) = store.resolve(reference) else {
            continue;
        };
        let Ok(image) = crate::base::load(store, &record) else {
            continue;
        };
        if !image.config.config.on_build.is_empty() {
            out.insert(name.clone(), image.config.config.on_build.clone());
        }
    }
    out
}

/// The image a stage's base names: its reference, or that of the image named context it
/// names (`scratch` included); `None` for a stage or another kind of named context.
pub(crate) fn base_image_reference(
    request: &crate::BuildRequest,
    base: &rbuild_dockerfile::Base,
) -> Option<String> {
    match base {
        rbuild_dockerfile::Base::Image(reference) => Some(reference.clone()),
        rbuild_dockerfile::Base::Context(key) => match request
            .named_contexts
            .iter()
            .find(|(name, _)| named_context_key(name) == *key)
            .map(|(_, context)| context)
        {
            Some(NamedContext::Image(reference)) => Some(reference.clone()),
            _ => None,
        },
        rbuild_dockerfile::Base::Stage(_) => None,
    }
}

/// The environment (its config's `Env`) of a stage's image base as the store holds it
/// before any step runs, for `UndefinedVar`: `scratch` has none; an image, or an image
/// named context, the store does not hold (yet), or whose record cannot be read, is `None`
/// (the stage is not checked; a record that cannot be read fails the stage when it runs).
pub(crate) fn stored_base_env(
    request: &crate::BuildRequest,
    store: Option<&rbuild_store::Store>,
    base: &rbuild_dockerfile::Base,
) -> Option<Vec<(String, String)>> {
    let reference = base_image_reference(request, base)?;
    if reference.eq_ignore_ascii_case("scratch") {
        return Some(Vec::new());
    }
    let store = store?;
    let record = store.resolve(&reference).ok()?;
    let image = crate::base::load(store, &record).ok()?;
    Some(
        image
            .config
            .config
            .env
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn layout_references_parse_as_buildx_writes_them() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let parsed = |v: &str| OciLayoutRef::parse(v).unwrap();
        assert_eq!(parsed("/l").dir, PathBuf::from("/l"));
        let r = parsed(&format!("/a:b/l:v1@{digest}"));
        assert_eq!(r.dir, PathBuf::from("/a:b/l"));
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(
            r.digest.as_ref().map(|d| d.to_string()),
            Some(digest.clone())
        );
        let r = parsed(&format!("rel/l@{digest}"));
        assert_eq!((r.dir, r.tag), (PathBuf::from("rel/l"), None));
        assert!(OciLayoutRef::parse("/l@sha256:00").is_err());
        assert!(OciLayoutRef::parse("").is_err());
        assert!(OciLayoutRef::parse("/l:").is_err());
    }
}
