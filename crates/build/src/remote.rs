//! Remote sources of `ADD`: http(s) downloads and git repositories.
//!
//! A [`Fetcher`] lives for one build and memoises every URL it fetched, so the step cache
//! (which keys an `ADD <url>` step by the downloaded content) and the ADD itself share one
//! download. Files are stored as BuildKit's http source stores them: mode 0600, owned by
//! root, mtime from `Last-Modified` (the Unix epoch without it).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use rbuild_image::{Digest, Hasher};
use rbuild_store::Store;

/// One downloaded URL.
#[derive(Debug, Clone)]
pub(crate) struct Download {
    pub path: PathBuf,
    pub digest: Digest,
}

/// The build's downloads and git checkouts, fetched once each.
pub(crate) struct Fetcher {
    /// Parent of the per-build download directory (the store's scratch space).
    parent: Option<PathBuf>,
    dir: Option<PathBuf>,
    client: Option<reqwest::blocking::Client>,
    downloads: BTreeMap<String, Download>,
    checkouts: BTreeMap<String, (PathBuf, String)>,
    counter: u64,
}

impl Fetcher {
    pub(crate) fn new(store: &Store) -> Fetcher {
        Fetcher {
            parent: store.state_dir("build").ok(),
            dir: None,
            client: None,
            downloads: BTreeMap::new(),
            checkouts: BTreeMap::new(),
            counter: 0,
        }
    }

    /// A fresh path in this build's download directory (created on first use).
    fn new_path(&mut self) -> Result<PathBuf, String> {
        if self.dir.is_none() {
            let parent = self
                .parent
                .clone()
                .ok_or("the store has no scratch directory for downloads")?;
            let nanos = std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = parent.join(format!("downloads-{}-{nanos}", std::process::id()));
            std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            self.dir = Some(dir);
        }
        self.counter += 1;
        Ok(self
            .dir
            .as_ref()
            .expect("created above")
            .join(self.counter.to_string()))
    }

    /// Downloads `url` (once per build): the file and the sha256 of its content.
    pub(crate) fn fetch(&mut self, url: &str) -> Result<(PathBuf, Digest), String> {
        if let Some(d) = self.downloads.get(url) {
            return Ok((d.path.clone(), d.digest.clone()));
        }
        let path = self.new_path()?;
        if self.client.is_none() {
            let client = reqwest::blocking::Client::builder()
                .connect_timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| format!("creating the HTTP client: {e}"))?;
            self.client = Some(client);
        }
        let client = self.client.as_ref().expect("created above");
        let shown = redact_url(url);
        // reqwest's messages repeat the URL, credentials included: redact them.
        let mut response = client.get(url).send().map_err(|e| {
            format!(
                "downloading {shown}: {}",
                redact_text(&error_chain(&e), url, &shown)
            )
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!(
                "downloading {shown}: invalid response status {status}"
            ));
        }
        let mtime = response
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = response.read(&mut buf).map_err(|e| {
                format!(
                    "downloading {shown}: {}",
                    redact_text(&e.to_string(), url, &shown)
                )
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        drop(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod of {}: {e}", path.display()))?;
        crate::fsops::set_mtime(&path, mtime, 0)
            .map_err(|e| format!("setting mtime of {}: {e}", path.display()))?;
        let digest = hasher.finish();
        self.downloads.insert(
            url.to_string(),
            Download {
                path: path.clone(),
                digest: digest.clone(),
            },
        );
        Ok((path, digest))
    }

    /// Clones `remote` at `reference` (a branch, tag or commit; `None` is the default
    /// branch) with the `git` binary, once per build; returns the checkout (with `.git`
    /// only when `keep_git_dir`) and the commit id checked out.
    pub(crate) fn checkout(
        &mut self,
        remote: &str,
        reference: Option<&str>,
        keep_git_dir: bool,
    ) -> Result<(PathBuf, String), String> {
        let key = format!("{remote}#{}#{keep_git_dir}", reference.unwrap_or(""));
        if let Some(p) = self.checkouts.get(&key) {
            return Ok(p.clone());
        }
        let shown = redact_url(remote);
        let dir = self.new_path()?;
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let git = |args: &[&str]| -> Result<String, String> {
            let out = Command::new("git")
                .args(args)
                .current_dir(&dir)
                .env("GIT_TERMINAL_PROMPT", "0")
                .output()
                .map_err(|e| format!("running git (is it installed?): {e}"))?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                return Err(format!(
                    "git {} of {shown} failed: {}",
                    args.first().unwrap_or(&""),
                    redact_text(stderr.trim(), remote, &shown)
                ));
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        git(&["init", "-q"])?;
        git(&["remote", "add", "origin", remote])?;
        let wanted = reference.unwrap_or("HEAD");
        // A commit id may not be advertised; fetch it directly, else by name.
        git(&["fetch", "-q", "--depth=1", "--no-tags", "origin", wanted])?;
        git(&["checkout", "-q", "FETCH_HEAD"])?;
        git(&[
            "submodule",
            "update",
            "-q",
            "--init",
            "--recursive",
            "--depth=1",
        ])?;
        let commit = git(&["rev-parse", "HEAD"])?;
        if !keep_git_dir {
            std::fs::remove_dir_all(dir.join(".git"))
                .map_err(|e| format!("removing .git of the checkout: {e}"))?;
        }
        self.checkouts.insert(key, (dir.clone(), commit.clone()));
        Ok((dir, commit))
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `url` with any `user:password@` replaced, for messages.
/// `text` (a Dockerfile line, a message) with the credentials of every URL in it redacted.
pub(crate) fn redact_credentials(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    text.split_inclusive(char::is_whitespace)
        .map(|word| {
            let trimmed = word.trim_end();
            let start = trimmed.find("://").map_or(trimmed.len(), |i| {
                trimmed[..i]
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
                    .map_or(0, |j| j + 1)
            });
            if start == trimmed.len() {
                return word.to_string();
            }
            format!(
                "{}{}{}",
                &trimmed[..start],
                redact_url(&trimmed[start..]),
                &word[trimmed.len()..]
            )
        })
        .collect()
}

pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://xxxxx@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

fn redact_text(text: &str, url: &str, shown: &str) -> String {
    text.replace(url, shown)
}

/// The file name BuildKit gives a download: the last element of the URL's path, or
/// `__unnamed__`.
pub(crate) fn url_file_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let base = path
        .split('/')
        .rev()
        .find(|c| !c.is_empty())
        .map(percent_decode)
        .unwrap_or_default();
    if base.is_empty() || base == "." || base == ".." || base.contains('/') {
        "__unnamed__".to_string()
    } else {
        base
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether ADD treats `src` as an http(s) download (a `.git` URL is a repository).
pub(crate) fn is_http_source(src: &str) -> bool {
    (src.starts_with("http://") || src.starts_with("https://")) && parse_git_ref(src).is_none()
}

/// A git source of ADD: the remote, and the `#ref[:subdir]` fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GitRef {
    pub remote: String,
    pub reference: Option<String>,
    pub subdir: Option<String>,
}

/// Recognises what BuildKit treats as a git repository: `git@host:path`, `git://…`,
/// `ssh://…`, and http(s) URLs whose path ends in `.git`, with an optional
/// `#ref[:subdir]`.
pub(crate) fn parse_git_ref(src: &str) -> Option<GitRef> {
    let (remote, fragment) = match src.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (src, None),
    };
    let is_git = remote.starts_with("git@")
        || remote.starts_with("git://")
        || remote.starts_with("ssh://")
        || ((remote.starts_with("http://") || remote.starts_with("https://"))
            && remote.trim_end_matches('/').ends_with(".git"));
    if !is_git {
        return None;
    }
    let (reference, subdir) = match fragment {
        None => (None, None),
        Some(f) => {
            let (r, s) = match f.split_once(':') {
                Some((r, s)) => (r, Some(s)),
                None => (f, None),
            };
            (
                (!r.is_empty()).then(|| r.to_string()),
                s.filter(|s| !s.is_empty()).map(str::to_string),
            )
        }
    };
    Some(GitRef {
        remote: remote.to_string(),
        reference,
        subdir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_as_buildkit() {
        assert_eq!(url_file_name("https://h/a/b.tar.gz"), "b.tar.gz");
        assert_eq!(url_file_name("https://h/a/b.txt?x=1#f"), "b.txt");
        assert_eq!(url_file_name("https://h/dir/"), "dir");
        assert_eq!(url_file_name("https://h"), "__unnamed__");
        assert_eq!(url_file_name("https://h/"), "__unnamed__");
        assert_eq!(url_file_name("https://h/a%20b"), "a b");
    }

    #[test]
    fn credentials_in_lines_are_redacted() {
        assert_eq!(
            redact_credentials("ADD --checksum=x https://me:pw@host/f.tgz /dst/"),
            "ADD --checksum=x https://xxxxx@host/f.tgz /dst/"
        );
        assert_eq!(redact_credentials("RUN echo a:b@c"), "RUN echo a:b@c");
        assert_eq!(
            redact_credentials("ADD \"git://u:p@h/r.git\" /x"),
            "ADD \"git://xxxxx@h/r.git\" /x"
        );
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact_url("https://user:pw@h/x?y=z@w"),
            "https://xxxxx@h/x?y=z@w"
        );
        assert_eq!(redact_url("https://h/x"), "https://h/x");
    }

    #[test]
    fn git_refs() {
        assert!(is_http_source("https://h/file.tar"));
        assert!(!is_http_source("https://h/repo.git"));
        let r = parse_git_ref("https://h/repo.git#v1:sub").unwrap();
        assert_eq!(r.remote, "https://h/repo.git");
        assert_eq!(r.reference.as_deref(), Some("v1"));
        assert_eq!(r.subdir.as_deref(), Some("sub"));
        assert!(parse_git_ref("git@h:o/r").is_some());
        assert!(parse_git_ref("dir/file").is_none());
    }
}
