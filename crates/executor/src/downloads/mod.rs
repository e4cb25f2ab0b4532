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

use crate::error::{BuildError, Result};

mod git_ref;
pub(crate) mod remote_context;
mod urls;

pub(crate) use git_ref::{git_source, parse_git_ref, GitQueryError, GitRef};
use urls::redact_text;
pub(crate) use urls::{is_http_source, redact_credentials, redact_url, url_file_name};
/// One downloaded URL.
#[derive(Debug, Clone)]
pub(crate) struct Download {
    pub path: PathBuf,
    pub digest: Digest,
    /// The response's `Last-Modified`, in seconds since the epoch.
    pub last_modified: Option<i64>,
}

/// The build's downloads and git checkouts, fetched once each.
pub(crate) struct Fetcher {
    /// Parent of the per-build download directory (the store's scratch space).
    parent: Option<PathBuf>,
    dir: Option<PathBuf>,
    client: Option<reqwest::blocking::Client>,
    downloads: BTreeMap<String, Download>,
    checkouts: BTreeMap<String, (PathBuf, String)>,
    /// The committer time of each checkout's commit.
    commit_times: BTreeMap<PathBuf, i64>,
    counter: u64,
}

impl Fetcher {
    pub(crate) fn new(store: &Store) -> Fetcher {
        Fetcher::below(store.state_dir("build").ok())
    }

    /// A fetcher whose files go below `parent` (a build context fetched before any store
    /// is open).
    pub(crate) fn in_dir(parent: PathBuf) -> Fetcher {
        Fetcher::below(Some(parent))
    }

    fn below(parent: Option<PathBuf>) -> Fetcher {
        Fetcher {
            parent,
            dir: None,
            client: None,
            downloads: BTreeMap::new(),
            checkouts: BTreeMap::new(),
            commit_times: BTreeMap::new(),
            counter: 0,
        }
    }

    /// The `Last-Modified` of a URL this fetcher downloaded, if its response had one.
    pub(crate) fn last_modified(&self, url: &str) -> Option<i64> {
        self.downloads.get(url).and_then(|d| d.last_modified)
    }

    /// The committer time of the commit a checkout of this fetcher holds.
    pub(crate) fn commit_time(&self, checkout: &std::path::Path) -> Option<i64> {
        self.commit_times.get(checkout).copied()
    }

    /// A fresh path in this build's download directory (created on first use).
    fn new_path(&mut self) -> Result<PathBuf> {
        if self.dir.is_none() {
            let parent = self.parent.clone().ok_or_else(|| {
                BuildError::other("the store has no scratch directory for downloads")
            })?;
            let nanos = std::time::SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            // Several fetchers of one process (a context URL and named ones) get names of
            // their own even within one nanosecond.
            static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = parent.join(format!(
                "downloads-{}-{nanos}-{sequence}",
                std::process::id()
            ));
            std::fs::create_dir(&dir).map_err(BuildError::io("creating", &dir))?;
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
    pub(crate) fn fetch(&mut self, url: &str) -> Result<(PathBuf, Digest)> {
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
                .map_err(|e| BuildError::other(format!("creating the HTTP client: {e}")))?;
            self.client = Some(client);
        }
        // Cannot fail: set just above when it was unset.
        let client = self.client.as_ref().expect("created above");
        let shown = redact_url(url);
        // reqwest's messages repeat the URL, credentials included: redact them.
        let failed = |message: String| BuildError::Fetch {
            url: shown.clone(),
            message,
        };
        let mut response = client.get(url).send().map_err(|e| {
            failed(format!(
                "downloading {shown}: {}",
                redact_text(&error_chain(&e), url, &shown)
            ))
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(format!(
                "downloading {shown}: invalid response status {status}"
            )));
        }
        let last_modified = response
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64);
        let mtime = last_modified.unwrap_or(0);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(BuildError::io("creating", &path))?;
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = response.read(&mut buf).map_err(|e| {
                failed(format!(
                    "downloading {shown}: {}",
                    redact_text(&e.to_string(), url, &shown)
                ))
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(BuildError::io("writing", &path))?;
        }
        drop(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(BuildError::io("chmod of", &path))?;
        crate::fsops::set_mtime(&path, mtime, 0)
            .map_err(BuildError::io("setting mtime of", &path))?;
        let digest = hasher.finish();
        self.downloads.insert(
            url.to_string(),
            Download {
                path: path.clone(),
                digest: digest.clone(),
                last_modified,
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
    ) -> Result<(PathBuf, String)> {
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
    ) -> Result<(PathBuf, String)> {
        let key = format!(
            "{remote}#{}#{keep_git_dir}#{submodules}",
            reference.unwrap_or("")
        );
        if let Some(p) = self.checkouts.get(&key) {
            return Ok(p.clone());
        }
        let shown = redact_url(remote);
        let dir = self.new_path()?;
        std::fs::create_dir(&dir).map_err(BuildError::io("creating", &dir))?;
        let failed = |message: String| BuildError::Fetch {
            url: shown.clone(),
            message,
        };
        let git = |args: &[&str]| -> Result<String> {
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
            let out = output_within(&mut command, GIT_DEADLINE).map_err(|e| {
                failed(format!(
                    "git {} of {shown}: {e}",
                    args.first().unwrap_or(&"")
                ))
            })?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                return Err(failed(format!(
                    "git {} of {shown} failed: {}",
                    args.first().unwrap_or(&""),
                    redact_text(stderr.trim(), remote, &shown)
                )));
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let wanted = reference.unwrap_or("HEAD");
        let fetch = |object_format: Option<&str>| -> Result<String> {
            match object_format {
                None => git(&["init", "-q"])?,
                Some(format) => git(&["init", "-q", &format!("--object-format={format}")])?,
            };
            git(&["remote", "add", "origin", remote])?;
            // A commit id may not be advertised; fetch it directly, else by name.
            git(&["fetch", "-q", "--depth=1", "--no-tags", "origin", wanted]).map_err(|err| {
                let text = err.to_string();
                if text.contains("couldn't find remote ref") {
                    // BuildKit's words for a reference the repository lacks.
                    failed(format!(
                        "repository does not contain ref {wanted} ({})",
                        text.rsplit("failed: ").next().unwrap_or(&text)
                    ))
                } else {
                    err
                }
            })
        };
        // A 64-digit commit id is a SHA-256 one; a SHA-1 repository takes it for a ref name.
        let sha256_id = wanted.len() == 64 && wanted.bytes().all(|b| b.is_ascii_hexdigit());
        if sha256_id {
            fetch(Some("sha256"))?;
        } else if let Err(err) = fetch(None) {
            // A repository in the SHA-256 object format cannot be fetched into a SHA-1 one
            // (git: "mismatched algorithms"): a fresh repository of that format fetches it.
            if !err.to_string().contains("mismatched algorithms") {
                return Err(err);
            }
            std::fs::remove_dir_all(dir.join(".git"))
                .map_err(BuildError::system("removing .git of the checkout"))?;
            fetch(Some("sha256"))?;
        }
        git(&["checkout", "-q", "FETCH_HEAD"])?;
        // Only a checkout with a submodule (a gitlink, mode 160000, in its index) has one to
        // update: for any other `git submodule update` does nothing.
        let has_submodules = || -> Result<bool> {
            Ok(git(&["ls-files", "--stage"])?
                .lines()
                .any(|line| line.starts_with("160000 ")))
        };
        if submodules && has_submodules()? {
            let update = [
                "submodule",
                "update",
                "-q",
                "--init",
                "--recursive",
                "--depth=1",
            ];
            match git(&update) {
                Ok(_) => {}
                // Before git 2.43 `git submodule` is a shell script, which a git without its
                // scripts lacks (the restricted builder images': no shell there); all the
                // script does for `update` is run this builtin, which recurses by itself.
                Err(err) if err.to_string().contains("'submodule' is not a git command") => {
                    git(&[
                        "submodule--helper",
                        "update",
                        "--quiet",
                        "--init",
                        "--recursive",
                        "--depth=1",
                        "--",
                    ])?;
                }
                Err(err) => return Err(err),
            }
        }
        let commit = git(&["rev-parse", "HEAD"])?;
        if let Ok(time) = git(&["log", "-1", "--format=%ct", "HEAD"])?.parse::<i64>() {
            self.commit_times.insert(dir.clone(), time);
        }
        if !keep_git_dir {
            std::fs::remove_dir_all(dir.join(".git"))
                .map_err(BuildError::system("removing .git of the checkout"))?;
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
fn output_within(command: &mut Command, deadline: Duration) -> Result<std::process::Output> {
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(BuildError::system("running git (is it installed?)"))?;
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
                return Err(BuildError::other(format!(
                    "did not finish within {} s (killed)",
                    deadline.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(BuildError::system("waiting for git")(e)),
        }
    };
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
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
        assert!(err.to_string().contains("did not finish within"), "{err}");
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
        let err = |src: &str| git_source(src).unwrap().unwrap_err().to_string();
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
        match git_source("https://u:pw@h/r.git?x=1").unwrap().unwrap_err() {
            BuildError::GitSource { url, reason } => {
                assert_eq!(url, "https://xxxxx@h/r.git?x=1");
                assert_eq!(reason.to_string(), r#"unexpected query "x""#);
            }
            other => panic!("not a git source error: {other:?}"),
        }
        // The query of a plain download is the server's business.
        assert!(git_source("https://h/file.tar?foo=1").is_none());
        assert!(is_http_source("https://h/file.tar?foo=1"));
    }
}
