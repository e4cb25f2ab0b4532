//! Git sources of `ADD`: `<repo>#<ref>:<subdir>` and BuildKit's newer query form
//! (`?ref=…&subdir=…&keep-git-dir=…&checksum=…`).

use std::collections::BTreeMap;

use super::urls::{percent_decode, redact_url};
use crate::error::BuildError;

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

pub(crate) fn git_source(src: &str) -> Option<Result<GitRef, BuildError>> {
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
        if let Err(reason) = load_query(&mut git, q) {
            return Some(Err(BuildError::GitSource {
                url: redact_url(src),
                reason,
            }));
        }
    }
    Some(Ok(git))
}

/// `path.Join("/", p)` without its leading `/`: `.` and `..` resolved, never above the
/// root.
fn clean_subdir(p: &str) -> String {
    crate::fsops::clean_components(p).join("/")
}

/// Why BuildKit refuses a git source's query (`GitRef.loadQuery`); its texts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitQueryError {
    #[error("query {key:?} has multiple values")]
    MultipleValues { key: String },
    #[error("query {key:?} has no value")]
    NoValue { key: String },
    /// A query BuildKit knows and rbuild does not implement: refused, not ignored.
    #[error("query {query:?} is not supported yet")]
    NotSupported { query: String },
    /// Not one of Go's `strconv.ParseBool` words.
    #[error("invalid {key} value: {value:?}")]
    InvalidBool { key: String, value: String },
    #[error("invalid mtime value: {value:?} (must be \"checkout\" or \"commit\")")]
    InvalidMtime { value: String },
    #[error("unexpected query {key:?}")]
    Unexpected { key: String },
    #[error("ref conflicts: {earlier:?} vs {later:?}")]
    RefConflict { earlier: String, later: String },
    #[error("subdir conflicts: {earlier:?} vs {later:?}")]
    SubdirConflict { earlier: String, later: String },
    #[error("branch conflicts with tag")]
    BranchWithTag,
}

/// BuildKit's `GitRef.loadQuery`: every key once, with a value (the boolean ones may
/// omit it), none unknown; a query ref or subdir that differs from the fragment's is a
/// conflict; `tag` and `branch` exclude each other.
fn load_query(git: &mut GitRef, query: &str) -> Result<(), GitQueryError> {
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        values
            .entry(query_decode(k))
            .or_default()
            .push(query_decode(v));
    }
    // Go's strconv.ParseBool.
    let boolean = |key: &str, v: &str| -> Result<bool, GitQueryError> {
        match v {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            other => Err(GitQueryError::InvalidBool {
                key: key.to_string(),
                value: other.to_string(),
            }),
        }
    };
    let (mut tag, mut branch) = (None, None);
    for (key, v) in &values {
        if v.len() > 1 {
            return Err(GitQueryError::MultipleValues { key: key.clone() });
        }
        let value = v.first().filter(|v| !v.is_empty());
        let is_boolean = matches!(
            key.as_str(),
            "submodules" | "keep-git-dir" | "fetch-by-commit"
        );
        let Some(value) = value else {
            if !is_boolean {
                return Err(GitQueryError::NoValue { key: key.clone() });
            }
            match key.as_str() {
                "keep-git-dir" => git.keep_git_dir = Some(true),
                "submodules" => git.submodules = true,
                _ => return Err(GitQueryError::NotSupported { query: key.clone() }),
            }
            continue;
        };
        match key.as_str() {
            "ref" => {
                if let Some(r) = git.reference.as_ref().filter(|r| *r != value) {
                    return Err(GitQueryError::RefConflict {
                        earlier: r.clone(),
                        later: value.clone(),
                    });
                }
                git.reference = Some(value.clone());
            }
            "tag" => tag = Some(value.clone()),
            "branch" => branch = Some(value.clone()),
            "subdir" => {
                if let Some(s) = git.subdir.as_ref().filter(|s| *s != value) {
                    return Err(GitQueryError::SubdirConflict {
                        earlier: s.clone(),
                        later: value.clone(),
                    });
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
                "commit" => {
                    return Err(GitQueryError::NotSupported {
                        query: "mtime=commit".to_string(),
                    })
                }
                other => {
                    return Err(GitQueryError::InvalidMtime {
                        value: other.to_string(),
                    })
                }
            },
            "fetch-by-commit" => return Err(GitQueryError::NotSupported { query: key.clone() }),
            _ => return Err(GitQueryError::Unexpected { key: key.clone() }),
        }
    }
    let mut set_ref = |prefix: &str, name: String| -> Result<(), GitQueryError> {
        let full = if name.starts_with(prefix) {
            name
        } else {
            format!("{prefix}{name}")
        };
        if let Some(r) = git.reference.as_ref().filter(|r| **r != full) {
            return Err(GitQueryError::RefConflict {
                earlier: r.clone(),
                later: full,
            });
        }
        git.reference = Some(full);
        Ok(())
    };
    if let Some(tag) = tag {
        set_ref("refs/tags/", tag)?;
    }
    if let Some(branch) = branch {
        if values.contains_key("tag") {
            return Err(GitQueryError::BranchWithTag);
        }
        set_ref("refs/heads/", branch)?;
    }
    Ok(())
}

/// A query key or value as Go's `url.ParseQuery` decodes it (`+` is a space).
fn query_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}
