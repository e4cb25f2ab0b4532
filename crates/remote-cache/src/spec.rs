//! The command-line spellings of a registry cache: buildx's `--cache-to` / `--cache-from`
//! (`type=registry,ref=REPO[:TAG][,mode=min|max][,mounts=true][,expire-unused=Nd|never]`)
//! and Kaniko's
//! `--cache-repo REPO`.

use rbuild_image::Reference;

/// The tag a cache is kept under when the ref names none (and always for `--cache-repo`).
pub const DEFAULT_CACHE_TAG: &str = "buildcache";
/// Records no build has exported for this many days are dropped from a ref at the next
/// export that writes it (`expire-unused=`).
pub const DEFAULT_EXPIRE_UNUSED_DAYS: u32 = 14;

/// Which steps' layers are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Only the steps whose layers are in the final image (buildx's default).
    #[default]
    Min,
    /// Every layer-making step of the build, intermediate stages included.
    Max,
}

/// A cache ref with its export options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTarget {
    /// Repository and tag of the cache manifest (never a digest).
    pub reference: Reference,
    pub mode: Mode,
    /// Also export the contents of `RUN --mount=type=cache` directories.
    pub mounts: bool,
    /// Drop records of the ref no build has exported for more than this many days
    /// (`None`: never).
    pub expire_unused_days: Option<u32>,
}

/// Parses a `--cache-to` value.
pub fn parse_cache_to(spec: &str) -> Result<CacheTarget, String> {
    let fields = fields("--cache-to", spec)?;
    let mut target = CacheTarget {
        reference: cache_reference("--cache-to", spec, &fields)?,
        mode: Mode::Min,
        mounts: false,
        expire_unused_days: Some(DEFAULT_EXPIRE_UNUSED_DAYS),
    };
    for (key, value) in &fields {
        match (key.as_str(), value.as_str()) {
            ("type" | "ref", _) => {}
            ("mode", "min") => target.mode = Mode::Min,
            ("mode", "max") => target.mode = Mode::Max,
            ("mode", other) => {
                return Err(format!(
                    "--cache-to {spec:?}: mode={other:?} is not min or max"
                ))
            }
            ("mounts", v) => target.mounts = parse_bool("--cache-to", spec, "mounts", v)?,
            ("expire-unused", v) => target.expire_unused_days = parse_expiry(spec, v)?,
            (other, _) => {
                return Err(format!(
                    "--cache-to {spec:?}: the attribute {other:?} is not supported \
                     (supported: type, ref, mode, mounts, expire-unused)"
                ))
            }
        }
    }
    Ok(target)
}

/// Parses a `--cache-from` value: the cache ref to read.
pub fn parse_cache_from(spec: &str) -> Result<Reference, String> {
    let fields = fields("--cache-from", spec)?;
    let reference = cache_reference("--cache-from", spec, &fields)?;
    for (key, _) in &fields {
        if !matches!(
            key.as_str(),
            "type" | "ref" | "mode" | "mounts" | "expire-unused"
        ) {
            return Err(format!(
                "--cache-from {spec:?}: the attribute {key:?} is not supported \
                 (supported: type, ref)"
            ));
        }
    }
    Ok(reference)
}

/// Kaniko's `--cache-repo REPO`: read from and write to `REPO:buildcache` (mode max, as
/// Kaniko caches every layer it makes).
pub fn cache_repo_target(repo: &str) -> Result<CacheTarget, String> {
    let parsed = Reference::parse(repo).map_err(|e| format!("--cache-repo {repo:?}: {e}"))?;
    if parsed.digest().is_some() || repo_has_tag(repo) {
        return Err(format!(
            "--cache-repo {repo:?} must be a repository without tag or digest \
             (the cache is kept under the tag {DEFAULT_CACHE_TAG})"
        ));
    }
    Ok(CacheTarget {
        reference: parsed
            .with_tag(DEFAULT_CACHE_TAG)
            .map_err(|e| e.to_string())?,
        mode: Mode::Max,
        mounts: false,
        expire_unused_days: Some(DEFAULT_EXPIRE_UNUSED_DAYS),
    })
}

/// `expire-unused=Nd` (whole days, at least 1) or `never`.
fn parse_expiry(spec: &str, value: &str) -> Result<Option<u32>, String> {
    if value == "never" {
        return Ok(None);
    }
    match value.strip_suffix('d').and_then(|n| n.parse::<u32>().ok()) {
        Some(days) if days >= 1 => Ok(Some(days)),
        _ => Err(format!(
            "--cache-to {spec:?}: expire-unused={value:?} is not a number of days (like 14d) \
             or never"
        )),
    }
}

fn fields(flag: &str, spec: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{flag} {spec:?}: {part:?} is not key=value"))?;
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    let kind = out
        .iter()
        .find(|(k, _)| k == "type")
        .map(|(_, v)| v.as_str());
    match kind {
        Some("registry") => Ok(out),
        Some(other) => Err(format!(
            "{flag} {spec:?}: type={other} is not supported; only type=registry is"
        )),
        None => Err(format!("{flag} {spec:?} needs type=registry")),
    }
}

fn cache_reference(
    flag: &str,
    spec: &str,
    fields: &[(String, String)],
) -> Result<Reference, String> {
    let raw = fields
        .iter()
        .find(|(k, _)| k == "ref")
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| format!("{flag} {spec:?} needs ref=REPO[:TAG]"))?;
    let parsed = Reference::parse(raw).map_err(|e| format!("{flag} {spec:?}: {e}"))?;
    if parsed.digest().is_some() {
        return Err(format!(
            "{flag} {spec:?}: a cache ref is a tag, not a digest"
        ));
    }
    if repo_has_tag(raw) {
        Ok(parsed)
    } else {
        parsed
            .with_tag(DEFAULT_CACHE_TAG)
            .map_err(|e| format!("{flag} {spec:?}: {e}"))
    }
}

/// Whether the reference text names a tag (a ':' after the last '/').
fn repo_has_tag(raw: &str) -> bool {
    let name = raw.split('@').next().unwrap_or(raw);
    name.rsplit('/').next().unwrap_or(name).contains(':')
}

fn parse_bool(flag: &str, spec: &str, name: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!(
            "{flag} {spec:?}: {name}={value:?} is not true or false"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_to_defaults_and_options() {
        let t = parse_cache_to("type=registry,ref=localhost:5000/app/cache").unwrap();
        assert_eq!(
            t.reference.to_string(),
            "localhost:5000/app/cache:buildcache"
        );
        assert_eq!(t.mode, Mode::Min);
        assert!(!t.mounts);
        let t =
            parse_cache_to("type=registry,ref=localhost:5000/c:v1,mode=max,mounts=true").unwrap();
        assert_eq!(t.reference.tag(), Some("v1"));
        assert_eq!(t.mode, Mode::Max);
        assert!(t.mounts);
        assert_eq!(t.expire_unused_days, Some(DEFAULT_EXPIRE_UNUSED_DAYS));
        let t = parse_cache_to("type=registry,ref=r/c,expire-unused=30d").unwrap();
        assert_eq!(t.expire_unused_days, Some(30));
        let t = parse_cache_to("type=registry,ref=r/c,expire-unused=never").unwrap();
        assert_eq!(t.expire_unused_days, None);
        for bad in ["0d", "14", "2w", "-1d"] {
            let e =
                parse_cache_to(&format!("type=registry,ref=r/c,expire-unused={bad}")).unwrap_err();
            assert!(e.contains("not a number of days"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_cache_specs_say_what_is_wrong() {
        let e = parse_cache_to("type=local,dest=/x").unwrap_err();
        assert!(e.contains("only type=registry"), "{e}");
        let e = parse_cache_to("type=registry").unwrap_err();
        assert!(e.contains("needs ref="), "{e}");
        let e = parse_cache_to("type=registry,ref=r/c,mode=all").unwrap_err();
        assert!(e.contains("not min or max"), "{e}");
        let e = parse_cache_to("type=registry,ref=r/c,compression=zstd").unwrap_err();
        assert!(e.contains("\"compression\" is not supported"), "{e}");
        let e = parse_cache_from(&format!("type=registry,ref=r/c@sha256:{}", "a".repeat(64)))
            .unwrap_err();
        assert!(e.contains("not a digest"), "{e}");
        let e = cache_repo_target("localhost:5000/c:v1").unwrap_err();
        assert!(e.contains("without tag"), "{e}");
    }

    #[test]
    fn cache_repo_is_read_and_written_under_the_default_tag() {
        let t = cache_repo_target("localhost:5000/team/cache").unwrap();
        assert_eq!(
            t.reference.to_string(),
            "localhost:5000/team/cache:buildcache"
        );
        assert_eq!(t.mode, Mode::Max);
        let from = parse_cache_from("type=registry,ref=localhost:5000/x").unwrap();
        assert_eq!(from.tag(), Some(DEFAULT_CACHE_TAG));
    }
}
