//! `rbuild build --build-context NAME=VALUE`: buildx's named contexts, parsed into what the
//! session reads (`docs/cli.md`).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use rbuild_executor::RemoteContext;
use rbuild_session::{NamedContext, OciLayoutRef};

/// What a `--build-context` names, as the parser decided.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BuildContextValue {
    /// Read as it is: an image, an OCI layout, a directory.
    Context(NamedContext),
    /// A URL (an archive over http(s), a git repository): fetched before the build
    /// ([`fetch_url_context`]).
    Url(String),
}

/// `--build-context NAME=VALUE` (buildx's syntax): `docker-image://REF`,
/// `oci-layout://DIR[:TAG][@DIGEST]`, a URL (http(s) or git), or a directory.
/// What rbuild cannot read is refused by name, never taken for a directory.
pub(super) fn parse_build_context(text: &str) -> Result<(String, BuildContextValue)> {
    let Some((name, value)) = text.split_once('=') else {
        bail!("--build-context {text:?}: expected NAME=DIR or NAME=docker-image://REF");
    };
    if name.is_empty() || value.is_empty() {
        bail!("--build-context {text:?}: expected NAME=DIR or NAME=docker-image://REF");
    }
    if let Some(reference) = value.strip_prefix("docker-image://") {
        if reference.is_empty() {
            bail!("--build-context {name}: docker-image:// names no image");
        }
        return Ok((
            name.to_string(),
            BuildContextValue::Context(NamedContext::Image(reference.to_string())),
        ));
    }
    if let Some(layout) = value.strip_prefix("oci-layout://") {
        let mut layout = OciLayoutRef::parse(layout)
            .map_err(|e| anyhow::anyhow!("--build-context {name}={value}: {e}"))?;
        if !layout.dir.is_dir() {
            bail!(
                "--build-context {name}={value}: {} is not a directory",
                layout.dir.display()
            );
        }
        layout.dir = layout
            .dir
            .canonicalize()
            .with_context(|| format!("--build-context {name}={value}"))?;
        return Ok((
            name.to_string(),
            BuildContextValue::Context(NamedContext::OciLayout(layout)),
        ));
    }
    if rbuild_executor::is_remote_context(value) {
        return Ok((name.to_string(), BuildContextValue::Url(value.to_string())));
    }
    for (prefix, what) in [("target:", "a bake target"), ("input:", "a frontend input")] {
        if value.starts_with(prefix) {
            bail!(
                "--build-context {name}={value}: {what} as a named context is not supported; \
                 give a directory, a URL or docker-image://REF"
            );
        }
    }
    let dir = Path::new(value);
    if !dir.is_dir() {
        bail!("--build-context {name}={value}: not a directory");
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("--build-context {name}={value}"))?;
    Ok((
        name.to_string(),
        BuildContextValue::Context(NamedContext::Local(dir)),
    ))
}

/// Fetches the URL `--build-context NAME=URL` names into a private directory under
/// `parent`: the context is that directory; the fetched context (to keep until the build
/// ends, and its time for `ARG SOURCE_DATE_EPOCH=NAME`) is returned beside it.
pub(super) fn fetch_url_context(
    name: &str,
    url: &str,
    parent: &Path,
) -> Result<(NamedContext, RemoteContext)> {
    let fetched = rbuild_executor::fetch_remote_context(url, parent)
        .map_err(|e| anyhow!("--build-context {name}: fetching it: {e}"))?;
    if fetched.dockerfile.is_some() {
        bail!("--build-context {name}: the URL serves neither a tar archive nor a git repository");
    }
    Ok((NamedContext::Local(fetched.dir.clone()), fetched))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_contexts_are_directories_images_layouts_or_urls_and_the_rest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let named = |context| BuildContextValue::Context(context);
        let (name, context) =
            parse_build_context(&format!("base={}", dir.path().display())).unwrap();
        assert_eq!(name, "base");
        assert_eq!(
            context,
            named(NamedContext::Local(dir.path().canonicalize().unwrap()))
        );
        assert_eq!(
            parse_build_context("busybox=docker-image://alpine:3.20").unwrap(),
            (
                "busybox".to_string(),
                named(NamedContext::Image("alpine:3.20".into()))
            )
        );
        let err = |text: &str| parse_build_context(text).unwrap_err().to_string();
        assert!(err("nothing").contains("expected NAME=DIR"));
        assert!(err("=dir").contains("expected NAME=DIR"));
        assert!(err("x=docker-image://").contains("names no image"));
        assert!(err("x=oci-layout:///l@sha256:00").contains("not a digest"));
        assert!(err("x=oci-layout:///no/such/layout").contains("not a directory"));
        let (_, layout) =
            parse_build_context(&format!("x=oci-layout://{}:v1", dir.path().display())).unwrap();
        assert_eq!(
            layout,
            named(NamedContext::OciLayout(OciLayoutRef {
                dir: dir.path().canonicalize().unwrap(),
                tag: Some("v1".into()),
                digest: None
            }))
        );
        // Every URL the fetcher takes is one, decided here and nowhere else.
        for url in [
            "https://h/r.git",
            "https://h/ctx.tar",
            "http://h/ctx.tar.gz",
            "git@github.com:o/r.git",
            "git://h/r",
            "ssh://git@h/r.git#main:sub",
        ] {
            assert_eq!(
                parse_build_context(&format!("x={url}")).unwrap(),
                ("x".to_string(), BuildContextValue::Url(url.to_string())),
                "{url}"
            );
        }
        assert!(err("x=target:web").contains("a bake target"));
        assert!(err("x=input:web").contains("a frontend input"));
        assert!(err("x=/no/such/dir").contains("not a directory"));
    }

    #[test]
    fn a_url_context_that_cannot_be_fetched_is_an_error_naming_it() {
        // The fetch fails before any network access for a git URL with a bad checksum:
        // the error names the context.
        let dir = tempfile::tempdir().unwrap();
        let Err(err) = fetch_url_context("x", "https://h/r.git?checksum=zz", dir.path()) else {
            panic!("a checksum that is not hex was fetched");
        };
        let err = err.to_string();
        assert!(err.contains("--build-context x: fetching it:"), "{err}");
    }
}
