//! What COPY and ADD have in common ([`CopySpec`]), the checks BuildKit makes of their
//! flags before touching any file, and their history text. Read by lowering (`lower.rs`)
//! and by the copy itself (`copy.rs`).

use rbuild_dockerfile::instructions::{Add, Copy, InlineSource};
use rbuild_image::Digest;

use crate::chmod::Chmod;
use crate::downloads::{self, GitRef};
use crate::error::{BuildError, Result};

/// What COPY and ADD have in common.
pub(crate) struct CopySpec {
    pub is_add: bool,
    pub sources: Vec<String>,
    pub inline: Vec<InlineSource>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub checksum: Option<String>,
    /// ADD `--unpack`: `None` unpacks local archives and leaves downloads alone.
    pub unpack: Option<bool>,
    pub keep_git_dir: Option<bool>,
}

impl From<Copy> for CopySpec {
    fn from(c: Copy) -> Self {
        CopySpec {
            is_add: false,
            sources: c.sources,
            inline: c.inline_sources,
            dest: c.dest,
            from: c.from,
            chown: c.chown,
            chmod: c.chmod,
            link: c.link,
            parents: c.parents,
            exclude: c.exclude,
            checksum: None,
            unpack: None,
            keep_git_dir: None,
        }
    }
}

impl From<Add> for CopySpec {
    fn from(a: Add) -> Self {
        CopySpec {
            is_add: true,
            sources: a.sources,
            inline: a.inline_sources,
            dest: a.dest,
            from: None,
            chown: a.chown,
            chmod: a.chmod,
            link: a.link,
            parents: false,
            exclude: a.exclude,
            checksum: a.checksum,
            unpack: a.unpack,
            keep_git_dir: a.keep_git_dir,
        }
    }
}

impl CopySpec {
    /// The checks BuildKit makes before touching any file (flag values, which sources a
    /// flag allows), so that they win over "not found" errors of the sources.
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(text) = &self.chmod {
            Chmod::parse(text)?;
        }
        check_checksum(self)?;
        if self.is_add {
            for src in &self.sources {
                if let Some(git) = downloads::git_source(src) {
                    check_git_flags(self, &git?)?;
                }
            }
        }
        if !self.is_add {
            if let Some(src) = self.sources.iter().find(|s| downloads::is_http_source(s)) {
                return Err(BuildError::other(format!(
                    "source can't be a URL for COPY: {src}"
                )));
            }
        }
        Ok(())
    }
}

/// A git URL's query against the flags (BuildKit's `convert_copy.go`): `?checksum=` and
/// `--checksum`, `?keep-git-dir=` and `--keep-git-dir`, must agree when both are given.
fn check_git_flags(spec: &CopySpec, git: &GitRef) -> Result<()> {
    if let (Some(flag), Some(query)) = (&spec.checksum, &git.checksum) {
        if flag != query {
            return Err(BuildError::other(format!(
                "checksum mismatch {flag:?} != {query:?}"
            )));
        }
    }
    if let (Some(flag), Some(query)) = (spec.keep_git_dir, git.keep_git_dir) {
        if flag != query {
            return Err(BuildError::other("inconsistent keep-git-dir configuration"));
        }
    }
    Ok(())
}

/// `--checksum=sha256:<hex>`: where BuildKit accepts it, parsed.
pub(crate) fn check_checksum(spec: &CopySpec) -> Result<Option<Digest>> {
    let Some(text) = &spec.checksum else {
        return Ok(None);
    };
    if !spec.is_add {
        return Err(BuildError::other("checksum can't be specified for COPY"));
    }
    if spec.sources.len() != 1 {
        return Err(BuildError::other(
            "checksum can't be specified for multiple sources",
        ));
    }
    let src = &spec.sources[0];
    if downloads::parse_git_ref(src).is_some() {
        // A git checksum is a commit id, checked after the fetch.
        return Ok(None);
    }
    if !downloads::is_http_source(src) {
        return Err(BuildError::other(
            "checksum requires HTTP(S) or Git sources",
        ));
    }
    text.parse::<Digest>()
        .map(Some)
        .map_err(|e| BuildError::other(format!("invalid --checksum={text}: {e}")))
}

/// BuildKit's `created_by` for COPY/ADD: the flags it records, the sources as written,
/// heredoc names and the destination.
pub(crate) fn history_text(name: &str, spec: &CopySpec) -> String {
    let mut msg = String::from(name);
    if spec.parents {
        msg.push_str(" --parents");
    }
    if let Some(c) = &spec.chown {
        msg.push_str(&format!(" --chown={c}"));
    }
    if let Some(m) = &spec.chmod {
        msg.push_str(&format!(" --chmod={m}"));
    }
    for src in &spec.sources {
        // BuildKit records a URL as written; credentials in it must not reach the image.
        msg.push(' ');
        if spec.is_add
            && (downloads::is_http_source(src) || downloads::parse_git_ref(src).is_some())
        {
            msg.push_str(&downloads::redact_url(src));
        } else {
            msg.push_str(src);
        }
    }
    for inline in &spec.inline {
        msg.push_str(&format!(" <<{}", inline.path));
    }
    msg.push_str(&format!(
        " {}{}",
        spec.dest,
        crate::history::BUILDKIT_SUFFIX
    ));
    msg
}
