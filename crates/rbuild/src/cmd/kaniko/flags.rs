//! Kaniko's executor flags as pflag parses them: which take a value, which are booleans,
//! which are accepted and ignored (with why) and which are refused (with what to use).

use anyhow::{anyhow, bail, Result};

/// Kaniko's flags that take a value. Both `--name value` and `--name=value` are accepted, as
/// pflag does.
pub(super) const VALUE_FLAGS: &[&str] = &[
    "context",
    "dockerfile",
    "destination",
    "tar-path",
    "cache-repo",
    "cache-ttl",
    "cache-dir",
    "digest-file",
    "image-name-with-digest-file",
    "image-name-tag-with-digest-file",
    "oci-layout-path",
    "ignore-path",
    "push-retry",
    "verbosity",
    "log-format",
    "custom-platform",
    "build-arg",
    "label",
    "target",
    "registry-mirror",
    "registry-certificate",
    "registry-client-cert",
    "registry-map",
    "insecure-registry",
    "skip-tls-verify-registry",
    "snapshot-mode",
    "snapshotMode",
    "compression",
    "compression-level",
    "image-fs-extract-retry",
    "image-download-retry",
    "kaniko-dir",
    "context-sub-path",
    "bucket",
    "git",
    "credential-helpers",
];

/// Kaniko's boolean flags: `--name`, `--name=true` or `--name=false`.
pub(super) const BOOL_FLAGS: &[&str] = &[
    "cache",
    "cache-copy-layers",
    "cache-run-layers",
    "cleanup",
    "compressed-caching",
    "force",
    "force-build-metadata",
    "ignore-var-run",
    "insecure",
    "insecure-pull",
    "log-timestamp",
    "no-push",
    "no-push-cache",
    "preserve-context",
    "materialize",
    "push-ignore-immutable-tag-errors",
    "reproducible",
    "single-snapshot",
    "skip-default-registry-fallback",
    "skip-push-permission-check",
    "skip-tls-verify",
    "skip-tls-verify-pull",
    "skip-unused-stages",
    "use-new-run",
];

/// Flags rbuild accepts and ignores, with why (said once per build).
pub(super) const IGNORED: &[(&str, &str)] = &[
    (
        "cache-ttl",
        "cache records are kept until `rbuild prune` or the cache's own bound",
    ),
    ("cache-dir", "base images are kept in rbuild's store"),
    ("cache-copy-layers", "COPY and ADD steps are always cached"),
    ("cache-run-layers", "RUN steps are always cached"),
    (
        "compressed-caching",
        "rbuild never keeps a compressed copy of the whole filesystem",
    ),
    (
        "cleanup",
        "RUN steps never touch the container's own filesystem, so there is nothing to clean",
    ),
    (
        "ignore-path",
        "only the build's own root filesystem is snapshotted",
    ),
    (
        "ignore-var-run",
        "only the build's own root filesystem is snapshotted",
    ),
    (
        "single-snapshot",
        "each step's layer is computed from what it changed",
    ),
    (
        "snapshot-mode",
        "each step's layer is computed from what it changed",
    ),
    (
        "snapshotMode",
        "each step's layer is computed from what it changed",
    ),
    ("use-new-run", "RUN steps always run in their own sandbox"),
    (
        "skip-unused-stages",
        "stages the target does not need are always skipped, as BuildKit does",
    ),
    (
        "force",
        "rbuild never runs in the builder's own filesystem, so it needs no --force",
    ),
    (
        "kaniko-dir",
        "rbuild keeps its state in its store (--root or RBUILD_ROOT)",
    ),
    (
        "log-timestamp",
        "progress lines carry step numbers and times already",
    ),
    ("push-retry", "pushes retry with rbuild's own policy"),
    (
        "image-fs-extract-retry",
        "extraction is local and not retried",
    ),
    (
        "image-download-retry",
        "downloads retry with rbuild's own policy",
    ),
    (
        "skip-push-permission-check",
        "the push itself reports a permission error",
    ),
    (
        "skip-default-registry-fallback",
        "registry mirrors fall back as with Docker",
    ),
    (
        "preserve-context",
        "the context is never changed by a build",
    ),
    (
        "materialize",
        "the filesystem is always materialized where a step needs it",
    ),
    ("force-build-metadata", "build metadata is always written"),
    (
        "push-ignore-immutable-tag-errors",
        "a refused tag is an error",
    ),
];

/// Flags that would change the result and that rbuild cannot honour: an error, never a
/// silently dropped flag.
pub(super) const REFUSED: &[(&str, &str)] = &[
    ("bucket", "contexts from cloud storage are not supported; download the context first"),
    ("git", "git contexts are not supported; clone the repository and pass --context dir://PATH"),
    ("registry-map", "registry remapping is not supported; name the registry in the FROM line or use --registry-mirror"),
    ("registry-client-cert", "put client certificates in certs.d (<host>/client.cert and client.key) instead"),
    ("credential-helpers", "credential helpers are read from Docker's config.json"),
];

/// One parsed flag occurrence.
#[derive(Debug)]
pub(super) enum Flag {
    Value(String, String),
    Bool(String, bool),
}

pub(super) fn parse_bool(name: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
        "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(false),
        _ => bail!("--{name}={value}: not a boolean (use true or false)"),
    }
}

pub(super) fn long_name(short: &str) -> Option<&'static str> {
    match short {
        "c" => Some("context"),
        "f" => Some("dockerfile"),
        "d" => Some("destination"),
        "v" => Some("verbosity"),
        _ => None,
    }
}

pub(super) fn parse_flags(args: &[String]) -> Result<Vec<Flag>> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = if let Some(rest) = arg.strip_prefix("--") {
            match rest.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (rest.to_string(), None),
            }
        } else if let Some(rest) = arg.strip_prefix('-').filter(|r| !r.is_empty()) {
            let (short, inline) = match rest.split_once('=') {
                Some((s, v)) => (s, Some(v.to_string())),
                None if rest.len() > 1 => (&rest[..1], Some(rest[1..].to_string())),
                None => (rest, None),
            };
            let Some(long) = long_name(short) else {
                bail!("unknown Kaniko flag -{short} (see `rbuild kaniko --help`)");
            };
            (long.to_string(), inline)
        } else {
            bail!("unexpected argument {arg:?}: Kaniko's executor takes flags only (the context is --context)");
        };
        if VALUE_FLAGS.contains(&name.as_str()) {
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| anyhow!("--{name} needs a value"))?,
            };
            out.push(Flag::Value(name, value));
        } else if BOOL_FLAGS.contains(&name.as_str()) {
            let value = match inline {
                Some(v) => parse_bool(&name, &v)?,
                None => true,
            };
            out.push(Flag::Bool(name, value));
        } else {
            bail!("unknown Kaniko flag --{name} (see docs/kaniko.md for the flags rbuild accepts)");
        }
    }
    Ok(out)
}
