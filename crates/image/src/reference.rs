//! Image references (`[registry[:port]/]repository[:tag][@sha256:...]`), normalised as Docker's
//! `distribution/reference` does, so `alpine` and `docker.io/library/alpine:latest` are the same
//! image and a name is parsed the same way `docker pull` would parse it.

use std::fmt;
use std::str::FromStr;

use crate::Digest;

/// The registry Docker Hub images live on, as references spell it.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's registry API actually answers on.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
const LEGACY_DOCKER_HUB: &str = "index.docker.io";
const OFFICIAL_NAMESPACE: &str = "library";
const DEFAULT_TAG: &str = "latest";
/// Docker's limit on the length of a full name (registry plus repository).
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A normalised image reference. Without a tag or digest in the input, the tag is `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

fn fail(input: &str, reason: impl Into<String>) -> ReferenceError {
    ReferenceError {
        input: input.to_string(),
        reason: reason.into(),
    }
}

impl Reference {
    /// Parses and normalises a reference the way `docker pull` does.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(fail(input, "empty reference"));
        }
        if is_64_hex(input) {
            return Err(fail(
                input,
                "a 64-character hexadecimal string is an image id, not a repository name",
            ));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                let digest = digest
                    .parse::<Digest>()
                    .map_err(|e| fail(input, e.to_string()))?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        // A tag follows the last ':' only if no '/' comes after it (else it is a port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|reason| fail(input, reason))?;
        }
        let (registry, repository) = split_registry(name);
        validate_registry(&registry).map_err(|reason| fail(input, reason))?;
        if repository.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(fail(input, "repository name must be lowercase"));
        }
        validate_repository(&repository).map_err(|reason| fail(input, reason))?;
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(fail(
                input,
                format!("repository name must not be longer than {MAX_NAME_LEN} characters"),
            ));
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry as written in references (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`library/alpine`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The host (and port) to send registry API requests to: Docker Hub's API is not on
    /// `docker.io` itself.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API_HOST
        } else {
            &self.registry
        }
    }

    /// What to ask the registry for: the digest when pinned (it wins over a tag), else the tag.
    pub fn manifest_selector(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The same repository with `tag` and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        validate_tag(tag).map_err(|reason| fail(tag, reason))?;
        Ok(Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository (and tag) pinned to `digest`.
    pub fn with_digest(&self, digest: Digest) -> Self {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form Docker shows: `alpine:latest`, `user/app:1`, `localhost:5000/x:tag`.
    pub fn familiar(&self) -> String {
        let name = if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .filter(|rest| !rest.contains('/'))
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        };
        let mut out = name;
        self.push_suffix(&mut out);
        out
    }

    fn push_suffix(&self, out: &mut String) {
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(&digest.to_string());
        }
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = self.name();
        self.push_suffix(&mut out);
        f.write_str(&out)
    }
}

fn is_64_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Docker's `splitDockerDomain`: the first component is a registry only if it looks like a host
/// (has a `.` or `:`, is `localhost`, or has upper case, which repositories never do).
fn split_registry(name: &str) -> (String, String) {
    let (mut registry, mut repository) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    if registry == LEGACY_DOCKER_HUB {
        registry = DOCKER_HUB.to_string();
    }
    if registry == DOCKER_HUB && !repository.contains('/') {
        repository = format!("{OFFICIAL_NAMESPACE}/{repository}");
    }
    (registry, repository)
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?}: up to {MAX_TAG_LEN} of [A-Za-z0-9_.-], not starting with . or -"
        ))
    }
}

/// `host[:port]` where host is DNS labels or a bracketed IPv6 address.
fn validate_registry(registry: &str) -> Result<(), String> {
    let bad = || Err(format!("invalid registry host {registry:?}"));
    let (host, port) = if let Some(v6) = registry.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return bad();
        };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return bad();
        }
        match after {
            "" => ("", None),
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return bad(),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return bad();
        }
    }
    if !registry.starts_with('[') {
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !host.split('.').all(label_ok) {
            return bad();
        }
    }
    Ok(())
}

/// Path components are `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn validate_repository(repository: &str) -> Result<(), String> {
    for component in repository.split('/') {
        if !valid_component(component) {
            return Err(format!(
                "invalid repository path component {component:?} in {repository:?}"
            ));
        }
    }
    Ok(())
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// Behaviour of distribution/reference's ParseNormalizedNamed (+ TagNameOnly) tests.
    #[test]
    fn normalises_like_docker() {
        let cases: &[(&str, &str, &str, &str)] = &[
            // input, registry, repository, full form
            (
                "alpine",
                "docker.io",
                "library/alpine",
                "docker.io/library/alpine:latest",
            ),
            (
                "ubuntu:22.04",
                "docker.io",
                "library/ubuntu",
                "docker.io/library/ubuntu:22.04",
            ),
            (
                "user/app",
                "docker.io",
                "user/app",
                "docker.io/user/app:latest",
            ),
            (
                "docker.io/library/alpine:3",
                "docker.io",
                "library/alpine",
                "docker.io/library/alpine:3",
            ),
            (
                "index.docker.io/foo",
                "docker.io",
                "library/foo",
                "docker.io/library/foo:latest",
            ),
            (
                "docker.io/foo/bar/baz",
                "docker.io",
                "foo/bar/baz",
                "docker.io/foo/bar/baz:latest",
            ),
            ("localhost/x", "localhost", "x", "localhost/x:latest"),
            (
                "localhost:5000/x",
                "localhost:5000",
                "x",
                "localhost:5000/x:latest",
            ),
            (
                "127.0.0.1:5000/a/b:v1",
                "127.0.0.1:5000",
                "a/b",
                "127.0.0.1:5000/a/b:v1",
            ),
            ("ghcr.io/o/r:1.2.3", "ghcr.io", "o/r", "ghcr.io/o/r:1.2.3"),
            (
                "example.com:8443/a_b/c-d/e.f__g",
                "example.com:8443",
                "a_b/c-d/e.f__g",
                "example.com:8443/a_b/c-d/e.f__g:latest",
            ),
            (
                "[::1]:5000/img",
                "[::1]:5000",
                "img",
                "[::1]:5000/img:latest",
            ),
            ("Docker/docker", "Docker", "docker", "Docker/docker:latest"),
            (
                "foo_bar.com:8080",
                "docker.io",
                "library/foo_bar.com",
                "docker.io/library/foo_bar.com:8080",
            ),
        ];
        for (input, registry, repository, full) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.registry(), *registry, "{input}");
            assert_eq!(r.repository(), *repository, "{input}");
            assert_eq!(r.to_string(), *full, "{input}");
            // The full form parses back to the same reference.
            assert_eq!(Reference::parse(full).unwrap(), r, "{input}");
        }
    }

    #[test]
    fn digests_pin_without_default_tag() {
        let r = Reference::parse(&format!("alpine@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/alpine@{D}"));
        assert_eq!(r.manifest_selector(), D);
        let r = Reference::parse(&format!("localhost:5000/a:v1@{D}")).unwrap();
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.manifest_selector(), D);
        assert_eq!(r.to_string(), format!("localhost:5000/a:v1@{D}"));
    }

    #[test]
    fn rejects_what_docker_rejects() {
        for bad in [
            "",
            "Alpine",
            "docker.io/Library/alpine",
            "localhost:5000/UPPER",
            "a//b",
            "a/",
            "/a",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "alpine:",
            "alpine:-tag",
            "alpine:.tag",
            "alpine:t@g",
            "alpine@sha256:abc",
            "alpine@md5:e3b0c44298fc1c149afbf4c8996fb924",
            "host:port/x",
            "bad_host.com/x",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "a b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("{}:t", "a".repeat(300));
        assert!(Reference::parse(&long).is_err());
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
        let err = Reference::parse("Alpine").unwrap_err().to_string();
        assert!(err.contains("lowercase"), "{err}");
    }

    #[test]
    fn familiar_and_api_host() {
        let cases = [
            ("alpine", "alpine:latest", "registry-1.docker.io"),
            ("docker.io/user/app:2", "user/app:2", "registry-1.docker.io"),
            (
                "docker.io/library/a/b",
                "library/a/b:latest",
                "registry-1.docker.io",
            ),
            ("localhost:5000/x:1", "localhost:5000/x:1", "localhost:5000"),
            ("quay.io/o/r", "quay.io/o/r:latest", "quay.io"),
        ];
        for (input, familiar, host) in cases {
            let r = Reference::parse(input).unwrap();
            assert_eq!(r.familiar(), familiar, "{input}");
            assert_eq!(r.api_host(), host, "{input}");
        }
    }

    #[test]
    fn with_tag_and_digest() {
        let r = Reference::parse(&format!("alpine@{D}")).unwrap();
        let t = r.with_tag("3.20").unwrap();
        assert_eq!(t.to_string(), "docker.io/library/alpine:3.20");
        assert!(r.with_tag("bad tag").is_err());
        let pinned = t.with_digest(D.parse().unwrap());
        assert_eq!(
            pinned.to_string(),
            format!("docker.io/library/alpine:3.20@{D}")
        );
        assert_eq!(pinned.name(), "docker.io/library/alpine");
    }
}
