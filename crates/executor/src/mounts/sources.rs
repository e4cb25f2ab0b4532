//! The host paths a step's mounts bind: a path inside a cache, a step's copy of a secret,
//! a relay socket to an ssh agent, a bind mount's source (the context, a stage, an image).

use std::path::{Path, PathBuf};

use super::held::AgentRelay;
use crate::context::BuildContext;
use crate::error::{BuildError, Result};
use crate::fsops::{self, Ownership};
use crate::sources::SourceRoot;
use crate::state::StageState;

/// Why a cache mount's `source=` cannot be bound.
#[derive(Debug, thiserror::Error)]
pub(super) enum CacheSourceError {
    /// BuildKit's text for a path that is not there: `open /etc: no such file or directory`.
    #[error(
        "source {source_path:?} is not in the cache: open {}: no such file or directory",
        container_path(source_path)
    )]
    Missing { source_path: String },
    #[error("source {source_path:?} in the cache: {error}")]
    Resolve {
        source_path: String,
        error: std::io::Error,
    },
}

/// `path` as the container sees it: absolute, without `.`, `..` or repeated slashes.
fn container_path(path: &str) -> String {
    format!("/{}", fsops::clean_components(path).join("/"))
}

/// The host path a cache mount's `source=` names inside the cache directory `cache`, every
/// link and `..` resolved inside it (as in a chroot), as BuildKit resolves it: a path that
/// is not there is an error naming it. The caller holds the cache exclusively, so nothing
/// changes the path before it is bound.
pub(super) fn cache_source(
    cache: &Path,
    source: &str,
) -> std::result::Result<PathBuf, CacheSourceError> {
    match rbuild_sandbox::rootpath::host_path_in_root(cache, source) {
        Ok(Some(path)) => Ok(path),
        Ok(None) => Err(CacheSourceError::Missing {
            source_path: source.to_string(),
        }),
        Err(error) => Err(CacheSourceError::Resolve {
            source_path: source.to_string(),
            error,
        }),
    }
}

impl BuildContext<'_> {
    /// A step's copy of a secret, owned and moded as the mount asks (container ids, given
    /// as the build's owners allow: see [`fsops::chown_in_build`]): in a private directory
    /// of its own on a memory file system where one is writable (never on a disk then),
    /// owned by container root so that the step's init can unlink the copy once it is
    /// mounted. The directory goes when the step ends (the returned holder), or with the
    /// next rbuild command after a crash (it is locked as the build's secrets are).
    pub(super) fn secret_copy(
        &self,
        path: &Path,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<(crate::secrets::SecretFiles, PathBuf)> {
        use std::os::unix::fs::PermissionsExt;
        // The messages name no path: a secret's file is the user's business.
        let content = std::fs::read(path).map_err(BuildError::system("reading the secret"))?;
        let mut files = crate::secrets::SecretFiles::create(self.store)
            .map_err(BuildError::system("a directory for the secret's copy"))?;
        let copy = files
            .add(&content)
            .map_err(BuildError::system("writing the secret's copy"))?;
        // The mode first: rootless, the copy is no longer the user's once given away.
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(mode & 0o7777)).map_err(
            BuildError::system(format!("chmod {mode:o} of the secret's copy")),
        )?;
        fsops::chown_in_build(&self.owners, &copy, uid, gid)?;
        fsops::chown_in_build(&self.owners, files.dir(), 0, 0)?;
        Ok((files, copy))
    }

    /// A socket forwarding to the agent socket `agent`, owned by `uid`:`gid` (container
    /// ids) with `mode` (BuildKit's defaults: 0, 0, 0600), as long as the relay is held.
    pub(super) fn agent_relay(
        &self,
        agent: &Path,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<(AgentRelay, PathBuf)> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.dir.new_dir("ssh")?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(BuildError::system("making the agent's directory private"))?;
        let socket = dir.join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket)
            .map_err(BuildError::io("creating the agent socket", &socket))?;
        // The mode first: rootless, the socket is no longer the user's once given away.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(mode)).map_err(
            BuildError::system(format!("chmod {mode:o} of the agent socket")),
        )?;
        fsops::chown_in_build(&self.owners, &socket, uid, gid)?;
        let proxy = crate::chroot_mounts::AgentProxy::start(listener, agent.to_path_buf())
            .map_err(BuildError::system("forwarding the agent"))?;
        Ok((AgentRelay(Some(proxy), dir), socket))
    }

    pub(super) fn bind_source(
        &self,
        st: &StageState,
        from: Option<&str>,
        source: &str,
        writable: bool,
    ) -> Result<PathBuf> {
        let from_root = match from {
            Some(f) => Some(self.root_of_from(st.index, f)?),
            None => None,
        };
        let root = match &from_root {
            Some(r) => SourceRoot::Rootfs(r),
            None => SourceRoot::Context {
                dir: &self.request.context_dir,
                ignore: self.ignore.as_ref(),
            },
        };
        let mut found = root.expand(source)?;
        if found.len() != 1 {
            return Err(BuildError::other(format!(
                "source {source:?} names {} paths, expected one",
                found.len()
            )));
        }
        let src = found.remove(0);
        if from.is_some() && !writable {
            return Ok(src.host);
        }
        let copy_root = self.dir.new_dir("bind")?;
        let md = std::fs::metadata(&src.host).map_err(BuildError::io("", &src.host))?;
        let keep = Ownership::default();
        if md.is_dir() {
            let no_filters = crate::sources::CopyFilters::default();
            let filter = root.filter_for(&src, &no_filters);
            fsops::copy_dir_contents(&self.owners, &src.host, &copy_root, keep, &filter)?;
            Ok(copy_root)
        } else {
            let file = copy_root.join("file");
            fsops::copy_leaf(&self.owners, &src.host, &file, keep)?;
            Ok(file)
        }
    }
}
