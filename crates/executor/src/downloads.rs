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
            // Cannot fail: set just above when it was unset.
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
            // reqwest's blocking client ends every request after 30 s by default, which cuts
            // large downloads off: the whole download gets its own, longer deadline instead.
            let client = reqwest::blocking::Client::builder()
                .connect_timeout(Duration::from_secs(30))
                .timeout(DOWNLOAD_DEADLINE)
                .build()
                .map_err(|e| format!("creating the HTTP client: {e}"))?;
            self.client = Some(client);
        }
        // Cannot fail: set just above when it was unset.
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

    /// Clones an ADD's git source at its reference (a branch, tag or commit; none is the
    /// default branch) with the `git` binary, once per build, as its query and the
    /// `--keep-git-dir` flag ask (`.git` kept or not, submodules or not); returns the
    /// checkout and the commit id checked out.
    pub(crate) fn checkout_ref(
        &mut self,
        git: &GitRef,
        keep_git_dir_flag: Option<bool>,
    ) -> Result<(PathBuf, String), String> {
        self.checkout_with(
            &git.remote,
            git.reference.as_deref(),
            git.keep_git_dir(keep_git_dir_flag),
            git.submodules,
        )
    }

    fn checkout_with(
        &mut self,
        remote: &str,
        reference: Option<&str>,
        keep_git_dir: bool,
        submodules: bool,
    ) -> Result<(PathBuf, String), String> {
        let key = format!(
            "{remote}#{}#{keep_git_dir}#{submodules}",
            reference.unwrap_or("")
        );
        if let Some(p) = self.checkouts.get(&key) {
            return Ok(p.clone());
        }
        let shown = redact_url(remote);
        let dir = self.new_path()?;
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let git = |args: &[&str]| -> Result<String, String> {
            let mut command = Command::new("git");
            command
                .args(args)
                .current_dir(&dir)
                .env("GIT_TERMINAL_PROMPT", "0")
                // A transfer slower than 1 KB/s for two minutes is abandoned (git's own
                // idle bound for http); ssh gives up on a dead server after two minutes.
                .env("GIT_HTTP_LOW_SPEED_LIMIT", "1000")
                .env("GIT_HTTP_LOW_SPEED_TIME", "120");
            if std::env::var_os("GIT_SSH_COMMAND").is_none() {
                command.env(
                    "GIT_SSH_COMMAND",
                    "ssh -o ConnectTimeout=30 -o ServerAliveInterval=30 -o ServerAliveCountMax=4",
                );
            }
            let out = output_within(&mut command, GIT_DEADLINE)
                .map_err(|e| format!("git {} of {shown}: {e}", args.first().unwrap_or(&"")))?;
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
        if submodules {
            git(&[
                "submodule",
                "update",
                "-q",
                "--init",
                "--recursive",
                "--depth=1",
            ])?;
        }
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
    (src.starts_with("http://") || src.starts_with("https://")) && git_source(src).is_none()
}

/// A git source of ADD: the remote, and what its `#ref[:subdir]` fragment and its
/// `?ref=…&subdir=…` query ask for (BuildKit's `dfgitutil.GitRef`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GitRef {
    /// The URL without fragment and query: what `git` fetches from.
    pub remote: String,
    /// A branch, tag or commit; `?tag=` and `?branch=` give `refs/tags/…`, `refs/heads/…`.
    pub reference: Option<String>,
    pub subdir: Option<String>,
    /// `?checksum=` / `?commit=`: the commit id or a prefix of it.
    pub checksum: Option<String>,
    /// `?keep-git-dir[=BOOL]`.
    pub keep_git_dir: Option<bool>,
    /// `?submodules=false` skips the submodules.
    pub submodules: bool,
}

impl GitRef {
    /// Whether the checkout keeps `.git`: the query's `keep-git-dir`, else the flag's.
    pub(crate) fn keep_git_dir(&self, flag: Option<bool>) -> bool {
        self.keep_git_dir.or(flag).unwrap_or(false)
    }
}

/// [`git_source`] for a source already checked (by `CopySpec::check`).
pub(crate) fn parse_git_ref(src: &str) -> Option<GitRef> {
    git_source(src).and_then(Result::ok)
}

/// Recognises what BuildKit treats as a git repository: `git@host:path`, `git://…`,
/// `ssh://…`, and http(s) URLs whose path ends in `.git`, with an optional
/// `#ref[:subdir]` fragment and `?key=value&…` query (`ref`, `tag`, `branch`, `subdir`,
/// `checksum`/`commit`, `keep-git-dir`, `submodules`). `None`: not a git source;
/// `Some(Err)`: a git source whose fragment or query BuildKit refuses, with its message.
/// The longest an `ADD <url>` download may take, body included.
const DOWNLOAD_DEADLINE: Duration = Duration::from_secs(3600);

/// The longest one git command of an `ADD <git>` source may take.
const GIT_DEADLINE: Duration = Duration::from_secs(1800);

/// Runs `command` to completion, its output collected, or kills it at `deadline`.
fn output_within(
    command: &mut Command,
    deadline: Duration,
) -> Result<std::process::Output, String> {
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running git (is it installed?): {e}"))?;
    // Drained on threads, so a chatty command never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut data = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut data);
            }
            data
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "did not finish within {} s (killed)",
                    deadline.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for git: {e}")),
        }
    };
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

pub(crate) fn git_source(src: &str) -> Option<Result<GitRef, String>> {
    // As Go's url.Parse: the fragment is everything after the first '#', the query what
    // lies between the first '?' and the fragment.
    let (before_fragment, fragment) = match src.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (src, None),
    };
    let (remote, query) = match before_fragment.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (before_fragment, None),
    };
    let is_git = remote.starts_with("git@")
        || remote.starts_with("git://")
        || remote.starts_with("ssh://")
        || ((remote.starts_with("http://") || remote.starts_with("https://"))
            && remote.trim_end_matches('/').ends_with(".git"));
    if !is_git {
        return None;
    }
    let mut git = GitRef {
        remote: remote.to_string(),
        reference: None,
        subdir: None,
        checksum: None,
        keep_git_dir: None,
        submodules: true,
    };
    if let Some(f) = fragment.filter(|f| !f.is_empty()) {
        let (r, s) = f.split_once(':').unwrap_or((f, ""));
        git.reference = (!r.is_empty()).then(|| r.to_string());
        // BuildKit cleans the fragment's subdir (path.Join("/", subdir), leading / dropped).
        let cleaned = clean_subdir(s);
        git.subdir = (!cleaned.is_empty()).then_some(cleaned);
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        if let Err(e) = load_query(&mut git, q) {
            return Some(Err(format!("{}: {e}", redact_url(src))));
        }
    }
    Some(Ok(git))
}

/// `path.Join("/", p)` without its leading `/`: `.` and `..` resolved, never above the
/// root.
fn clean_subdir(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// BuildKit's `GitRef.loadQuery`: every key once, with a value (the boolean ones may
/// omit it), none unknown; a query ref or subdir that differs from the fragment's is a
/// conflict; `tag` and `branch` exclude each other.
fn load_query(git: &mut GitRef, query: &str) -> Result<(), String> {
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        values
            .entry(query_decode(k))
            .or_default()
            .push(query_decode(v));
    }
    // Go's strconv.ParseBool.
    let boolean = |key: &str, v: &str| -> Result<bool, String> {
        match v {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            other => Err(format!("invalid {key} value: {other:?}")),
        }
    };
    let (mut tag, mut branch) = (None, None);
    for (key, v) in &values {
        if v.len() > 1 {
            return Err(format!("query {key:?} has multiple values"));
        }
        let value = v.first().filter(|v| !v.is_empty());
        let is_boolean = matches!(
            key.as_str(),
            "submodules" | "keep-git-dir" | "fetch-by-commit"
        );
        let Some(value) = value else {
            if !is_boolean {
                return Err(format!("query {key:?} has no value"));
            }
            match key.as_str() {
                "keep-git-dir" => git.keep_git_dir = Some(true),
                "submodules" => git.submodules = true,
                _ => return Err(format!("query {key:?} is not supported yet")),
            }
            continue;
        };
        match key.as_str() {
            "ref" => {
                if let Some(r) = git.reference.as_ref().filter(|r| *r != value) {
                    return Err(format!("ref conflicts: {r:?} vs {value:?}"));
                }
                git.reference = Some(value.clone());
            }
            "tag" => tag = Some(value.clone()),
            "branch" => branch = Some(value.clone()),
            "subdir" => {
                if let Some(s) = git.subdir.as_ref().filter(|s| *s != value) {
                    return Err(format!("subdir conflicts: {s:?} vs {value:?}"));
                }
                // Compared as written (BuildKit), used cleaned as the fragment's.
                git.subdir = Some(clean_subdir(value)).filter(|s| !s.is_empty());
            }
            "checksum" | "commit" => git.checksum = Some(value.clone()),
            "keep-git-dir" => git.keep_git_dir = Some(boolean(key, value)?),
            "submodules" => git.submodules = boolean(key, value)?,
            // Checkout time is what a checkout gets anyway; BuildKit's mtime=commit and
            // fetch-by-commit are refused rather than ignored.
            "mtime" => match value.as_str() {
                "checkout" => {}
                "commit" => return Err("query \"mtime=commit\" is not supported yet".into()),
                other => {
                    return Err(format!(
                        "invalid mtime value: {other:?} (must be \"checkout\" or \"commit\")"
                    ))
                }
            },
            "fetch-by-commit" => return Err(format!("query {key:?} is not supported yet")),
            _ => return Err(format!("unexpected query {key:?}")),
        }
    }
    let mut set_ref = |prefix: &str, name: String| -> Result<(), String> {
        let full = if name.starts_with(prefix) {
            name
        } else {
            format!("{prefix}{name}")
        };
        if let Some(r) = git.reference.as_ref().filter(|r| **r != full) {
            return Err(format!("ref conflicts: {r:?} vs {full:?}"));
        }
        git.reference = Some(full);
        Ok(())
    };
    if let Some(tag) = tag {
        set_ref("refs/tags/", tag)?;
    }
    if let Some(branch) = branch {
        if values.contains_key("tag") {
            return Err("branch conflicts with tag".into());
        }
        set_ref("refs/heads/", branch)?;
    }
    Ok(())
}

/// A query key or value as Go's `url.ParseQuery` decodes it (`+` is a space).
fn query_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
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
    fn commands_end_at_their_deadline() {
        let out = output_within(
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        let started = std::time::Instant::now();
        let err =
            output_within(Command::new("sleep").arg("30"), Duration::from_millis(300)).unwrap_err();
        assert!(err.contains("did not finish within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
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
        let r = parse_git_ref("https://h/repo.git#:../a/./b/").unwrap();
        assert_eq!((r.reference, r.subdir.as_deref()), (None, Some("a/b")));
    }

    #[test]
    fn git_queries_as_buildkit() {
        let r = parse_git_ref("https://h/repo.git?ref=v1&subdir=sub&keep-git-dir").unwrap();
        assert_eq!(r.remote, "https://h/repo.git");
        assert_eq!(r.reference.as_deref(), Some("v1"));
        assert_eq!(r.subdir.as_deref(), Some("sub"));
        assert_eq!(r.keep_git_dir, Some(true));
        assert!(!is_http_source("https://h/repo.git?ref=v1"));
        let r = parse_git_ref("git@h:o/r.git?tag=v1&checksum=abc&submodules=false").unwrap();
        assert_eq!(r.remote, "git@h:o/r.git");
        assert_eq!(r.reference.as_deref(), Some("refs/tags/v1"));
        assert_eq!(r.checksum.as_deref(), Some("abc"));
        assert!(!r.submodules);
        let r = parse_git_ref("https://h/r.git?branch=refs/heads/dev").unwrap();
        assert_eq!(r.reference.as_deref(), Some("refs/heads/dev"));
        // Fragment and query agree: fine; disagree: a conflict.
        let r = parse_git_ref("https://h/r.git?ref=v1#v1:sub").unwrap();
        assert_eq!(r.subdir.as_deref(), Some("sub"));
        let err = |src: &str| git_source(src).unwrap().unwrap_err();
        assert!(err("https://h/r.git?ref=v2#v1").contains(r#"ref conflicts: "v1" vs "v2""#));
        assert!(err("https://h/r.git?subdir=b#:a").contains("subdir conflicts"));
        assert!(err("https://h/r.git?tag=a&branch=b").contains("branch conflicts with tag"));
        assert!(err("https://h/r.git?foo=1").contains(r#"unexpected query "foo""#));
        assert!(err("https://h/r.git?ref=").contains(r#"query "ref" has no value"#));
        assert!(err("https://h/r.git?ref=a&ref=b").contains("multiple values"));
        assert!(err("https://h/r.git?keep-git-dir=maybe").contains("invalid keep-git-dir"));
        assert!(err("https://h/r.git?mtime=commit").contains("not supported yet"));
        assert!(err("https://h/r.git?mtime=x").contains("invalid mtime value"));
        assert!(parse_git_ref("https://h/r.git?mtime=checkout").is_some());
        let r = parse_git_ref("https://h/r.git?subdir=/a/../b/").unwrap();
        assert_eq!(r.subdir.as_deref(), Some("b"));
        assert!(err("https://u:pw@h/r.git?x=1").starts_with("https://xxxxx@h/r.git"));
        // The query of a plain download is the server's business.
        assert!(git_source("https://h/file.tar?foo=1").is_none());
        assert!(is_http_source("https://h/file.tar?foo=1"));
    }
}
