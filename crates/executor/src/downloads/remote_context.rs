//! A build context fetched from a URL, as `docker buildx build URL` takes one: a git
//! repository (`https://host/repo.git#ref:subdir`, `git@host:repo`, `?ref=…&subdir=…`) is
//! cloned at its reference without `.git`; an http(s) URL is downloaded and, when it is a tar
//! archive (plain, gzip or zstd), unpacked as the context, else taken as the Dockerfile with
//! an empty context (BuildKit's dockerui does the same). Every fetch has the deadlines of
//! `ADD`'s (git commands, the download), no hook of the repository runs (a fresh `git init`
//! has none), the archive is unpacked with the safety of a layer (no path outside the
//! directory), and a subdirectory must resolve inside the checkout.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{git_source, is_http_source, Fetcher};
use crate::error::{BuildError, Result};

/// What a URL context gave; its files are removed when it is dropped.
pub struct RemoteContext {
    /// The context directory: the checkout (or its subdirectory), the unpacked archive, or
    /// an empty directory when the URL served a Dockerfile.
    pub dir: PathBuf,
    /// The Dockerfile the URL served, when it was not an archive.
    pub dockerfile: Option<String>,
    /// What `SOURCE_DATE_EPOCH=context` stands for: the commit time of a git context; the
    /// `Last-Modified` of an HTTP one, else the newest mtime in its archive (BuildKit v0.32).
    pub epoch: Option<i64>,
    /// Owns the files (removed on drop).
    _fetcher: Fetcher,
}

/// Whether a context argument is a URL this module fetches (a git or an http(s) source).
pub fn is_remote_context(text: &str) -> bool {
    git_source(text).is_some() || is_http_source(text)
}

/// The largest Dockerfile a URL may serve as one.
const MAX_DOCKERFILE: u64 = rbuild_dockerfile::limits::MAX_DOCKERFILE_BYTES;

/// Fetches `url` into a private directory under `parent` (e.g. the system's temporary
/// directory).
pub fn fetch_remote_context(url: &str, parent: &Path) -> Result<RemoteContext> {
    let mut fetcher = Fetcher::in_dir(parent.to_path_buf());
    if let Some(git) = git_source(url) {
        let git = git?;
        let checksum = git.checksum.clone();
        if let Some(want) = &checksum {
            if want.is_empty() || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(BuildError::other(format!(
                    "invalid checksum {want} for Git URL, expected hex commit hash"
                )));
            }
        }
        let (checkout, commit) = fetcher.checkout_ref(&git, None)?;
        if let Some(want) = &checksum {
            if !commit.starts_with(want.as_str()) {
                return Err(BuildError::other(format!(
                    "expected checksum to match {want}, got {commit}"
                )));
            }
        }
        let epoch = fetcher.commit_time(&checkout);
        let dir = match &git.subdir {
            None => checkout,
            Some(sub) => subdir_inside(&checkout, sub, url)?,
        };
        return Ok(RemoteContext {
            dir,
            dockerfile: None,
            epoch,
            _fetcher: fetcher,
        });
    }
    if !is_http_source(url) {
        return Err(BuildError::other(format!(
            "the context {:?} is neither a git repository nor an http(s) URL",
            super::redact_url(url)
        )));
    }
    let (file, _) = fetcher.fetch(url)?;
    let last_modified = fetcher.last_modified(url);
    let dir = fetcher.new_path()?;
    std::fs::create_dir(&dir).map_err(BuildError::io("creating", &dir))?;
    let mut head = Vec::new();
    std::fs::File::open(&file)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(BuildError::io("reading", &file))?;
    if !is_archive(&head) {
        let size = std::fs::metadata(&file)
            .map_err(BuildError::io("reading", &file))?
            .len();
        if size > MAX_DOCKERFILE {
            return Err(BuildError::other(format!(
                "the context {} is neither a tar archive nor a Dockerfile (it is larger than \
                 the Dockerfile limit of {MAX_DOCKERFILE} bytes)",
                super::redact_url(url)
            )));
        }
        let text = std::fs::read(&file).map_err(BuildError::io("reading", &file))?;
        let text = String::from_utf8(text).map_err(|_| {
            BuildError::other(format!(
                "the context {} is neither a tar archive nor a UTF-8 Dockerfile",
                super::redact_url(url)
            ))
        })?;
        return Ok(RemoteContext {
            dir,
            dockerfile: Some(text),
            epoch: last_modified,
            _fetcher: fetcher,
        });
    }
    let unpack_failed = |e: rbuild_layer::Error| {
        BuildError::other(format!(
            "unpacking the context {}: {e}",
            super::redact_url(url)
        ))
    };
    let open = || std::fs::File::open(&file).map_err(BuildError::io("opening", &file));
    let options = rbuild_layer::ApplyOptions {
        ownership: rbuild_layer::Ownership::Ignore,
        ..Default::default()
    };
    rbuild_layer::apply_layer(open()?, &dir, &options).map_err(unpack_failed)?;
    let epoch = match last_modified {
        Some(t) => Some(t),
        None => rbuild_layer::list_entries(open()?)
            .map_err(unpack_failed)?
            .iter()
            .map(|e| e.mtime)
            .max(),
    };
    Ok(RemoteContext {
        dir,
        dockerfile: None,
        epoch,
        _fetcher: fetcher,
    })
}

/// A tar archive, compressed (gzip, zstd, bzip2, xz magic) or plain: a first block whose
/// header checksum is right, as a tar reader's first `Next()` decides (old v7 headers have
/// no `ustar` magic).
fn is_archive(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(b"BZh")
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00])
        || tar_header_checksum_matches(head)
}

/// Whether the first 512 bytes are a tar header: the sum of its bytes, with the checksum
/// field counted as spaces, is the octal number in that field.
fn tar_header_checksum_matches(head: &[u8]) -> bool {
    let Some(block) = head.get(..512) else {
        return false;
    };
    let field = &block[148..156];
    let digits: String = field
        .iter()
        .map(|&b| b as char)
        .filter(|c| !matches!(c, ' ' | '\0'))
        .collect();
    let Ok(stored) = u32::from_str_radix(&digits, 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    !digits.is_empty() && sum == stored
}

/// `checkout/sub`, which must be a directory inside the checkout once its symlinks are
/// resolved (a repository's link cannot make the context a directory of the host).
fn subdir_inside(checkout: &Path, sub: &str, url: &str) -> Result<PathBuf> {
    let root = checkout
        .canonicalize()
        .map_err(BuildError::io("resolving", checkout))?;
    let failed = |why: &str| {
        BuildError::other(format!(
            "the context {}: subdirectory {sub:?} {why}",
            super::redact_url(url)
        ))
    };
    let dir = root
        .join(sub)
        .canonicalize()
        .map_err(|_| failed("does not exist in the repository"))?;
    if !dir.starts_with(&root) {
        return Err(failed("resolves outside the repository"));
    }
    if !dir.is_dir() {
        return Err(failed("is not a directory"));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_told_from_dockerfiles() {
        // A v7 header (no `ustar` magic) with its checksum.
        let mut tar = vec![0u8; 512];
        tar[..3].copy_from_slice(b"foo");
        let sum: u32 = tar.iter().map(|&b| u32::from(b)).sum::<u32>() + 8 * 32;
        tar[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        tar[155] = b' ';
        assert!(is_archive(&tar));
        tar[0] = b'g';
        assert!(!is_archive(&tar), "a wrong checksum is no header");
        assert!(is_archive(&[0x1f, 0x8b, 8, 0]));
        assert!(!is_archive(b"FROM scratch\nCOPY foo /\n"));
        assert!(!is_archive(b""));
    }

    #[test]
    fn a_subdirectory_must_stay_inside_the_checkout() {
        let dir = std::env::temp_dir().join(format!("rbuild-subdir-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("repo/sub")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("repo/out")).unwrap();
        std::fs::write(dir.join("repo/file"), "x").unwrap();
        let repo = dir.join("repo");
        assert!(subdir_inside(&repo, "sub", "u").unwrap().ends_with("sub"));
        let err = subdir_inside(&repo, "out", "u").unwrap_err().to_string();
        assert!(err.contains("outside the repository"), "{err}");
        let err = subdir_inside(&repo, "file", "u").unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
        let err = subdir_inside(&repo, "missing", "u")
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
