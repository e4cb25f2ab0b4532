//! `rbuild build --build-context NAME=VALUE`: buildx's named contexts, parsed into what the
//! session reads (`docs/cli.md`).

use anyhow::{bail, Context, Result};
use rbuild_session::{NamedContext, OciLayoutRef};

/// `--build-context NAME=VALUE` (buildx's syntax): `docker-image://REF`,
/// `oci-layout://DIR[:TAG][@DIGEST]`, or a directory.
/// What rbuild cannot read is refused by name, never taken for a directory.
pub(super) fn parse_build_context(text: &str) -> Result<(String, NamedContext)> {
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
        return Ok((name.to_string(), NamedContext::Image(reference.to_string())));
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
        return Ok((name.to_string(), NamedContext::OciLayout(layout)));
    }
    for (prefix, what) in [
        ("target:", "a bake target"),
        ("input:", "a frontend input"),
        ("http://", "a URL"),
        ("https://", "a URL"),
        ("git@", "a git repository"),
        ("git://", "a git repository"),
        ("ssh://", "a git repository"),
    ] {
        if value.starts_with(prefix) {
            bail!(
                "--build-context {name}={value}: {what} as a named context is not supported; \
                 give a directory or docker-image://REF"
            );
        }
    }
    let dir = std::path::Path::new(value);
    if !dir.is_dir() {
        bail!("--build-context {name}={value}: not a directory");
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("--build-context {name}={value}"))?;
    Ok((name.to_string(), NamedContext::Local(dir)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_contexts_are_directories_or_images_and_the_rest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (name, context) =
            parse_build_context(&format!("base={}", dir.path().display())).unwrap();
        assert_eq!(name, "base");
        assert_eq!(
            context,
            NamedContext::Local(dir.path().canonicalize().unwrap())
        );
        assert_eq!(
            parse_build_context("busybox=docker-image://alpine:3.20").unwrap(),
            (
                "busybox".to_string(),
                NamedContext::Image("alpine:3.20".into())
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
            NamedContext::OciLayout(OciLayoutRef {
                dir: dir.path().canonicalize().unwrap(),
                tag: Some("v1".into()),
                digest: None
            })
        );
        assert!(err("x=https://h/r.git").contains("a URL"));
        assert!(err("x=/no/such/dir").contains("not a directory"));
    }
}
