//! `RUN --mount`: each mount becomes a bind mount of the sandbox.
//!
//! * `cache`: a directory under the store's `cache-mounts` state directory, keyed by `id`
//!   (default: the target), kept between builds; never part of a layer. `source=` binds a
//!   path inside it instead, resolved inside it (links and `..` stay in the cache; a missing
//!   path is an error) while the step holds the cache alone.
//! * `bind`: the context (after `.dockerignore`), a stage or an image; read-only by
//!   default; `rw` gets a throw-away copy, so writes are discarded as in BuildKit.
//! * `tmpfs`: an empty throw-away directory; with `size=`, a tmpfs of that size mounted by
//!   the sandbox (an error with chroot isolation, which cannot mount one).
//! * `secret`: the file given for the id, read-only at `/run/secrets/<id>` (or `target`);
//!   with `env=NAME` the content is the step's variable NAME instead (and the file too
//!   only when `target` is given), as BuildKit's `dispatchSecret` does ([`BuildContext::secret_env`]).
//! * `ssh`: the ssh-agent socket given for the id (`default` unless `id=`; for key files,
//!   the socket of the private agent the caller started, see `ssh_agent`), at `target` or
//!   `/run/buildkit/ssh_agent.N` (N counting the step's ssh mounts); `SSH_AUTH_SOCK` points
//!   at the first one unless the environment sets it. Without a socket for the id, a
//!   `required` mount is an error and an optional one is left out (BuildKit). With a
//!   `uid`, `gid` or `mode` other than 0, 0, 0600 the step gets a socket of its own so
//!   owned and moded, forwarding to the agent.
//! * `from=` on a cache mount: refused with an error naming the flag.
//!
//! With chroot isolation there is no mount(2): `chroot_mounts` puts each mount's content in
//! the root for the step instead, as each [`MountPlan`] says. There every cache is used by
//! one step at a time (it is moved into the root), and every bind source is a copy.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rbuild_dockerfile::instructions::{Mount, MountFlag, MountType, Sharing};
use rbuild_sandbox::{BindMount, Isolation};

use crate::chroot_mounts::{MountKind, MountPlan};

use crate::context::{BuildContext, Origin};
use crate::error::{BuildError, Result};
use crate::fsops::{self, Ownership};
use crate::sources::SourceRoot;
use crate::state::StageState;

/// Where BuildKit puts the `index`-th ssh mount of a step without a `target`.
fn ssh_target(index: usize) -> String {
    format!("/run/buildkit/ssh_agent.{index}")
}

/// `SSH_AUTH_SOCK=<first ssh mount>` for a step with ssh mounts whose environment does not
/// set it (BuildKit sets it whether or not the agent was forwarded).
pub(crate) fn ssh_auth_sock(
    st: &StageState,
    mounts: &[MountFlag],
    env: &[String],
) -> Option<String> {
    if env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
        return None;
    }
    let first = mounts
        .iter()
        .filter_map(|f| f.parsed.as_ref())
        .find(|m| m.kind == MountType::Ssh)?;
    let target = first
        .target
        .as_deref()
        .map(|t| fsops::join_container(&st.workdir(), t))
        .unwrap_or_else(|| ssh_target(0));
    Some(format!("SSH_AUTH_SOCK={target}"))
}

/// The host path a cache mount's `source=` names inside the cache directory `cache`, every
/// link and `..` resolved inside it (as in a chroot), as BuildKit resolves it: a path that
/// is not there is an error naming it (`open /etc: no such file or directory`). The caller
/// holds the cache exclusively, so nothing changes the path before it is bound.
fn cache_source(cache: &Path, source: &str) -> std::result::Result<PathBuf, String> {
    match rbuild_sandbox::rootpath::host_path_in_root(cache, source) {
        Ok(Some(path)) => Ok(path),
        Ok(None) => Err(format!(
            "source {source:?} is not in the cache: open {}: no such file or directory",
            clean_container_path(source)
        )),
        Err(e) => Err(format!("source {source:?} in the cache: {e}")),
    }
}

/// `path` as an absolute path without `.`, `..` or repeated slashes (`..` stops at `/`).
fn clean_container_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A secret mount's id: `id=`, else `source=`, else the name of its target.
fn secret_id(m: &Mount) -> String {
    m.id.clone()
        .or_else(|| m.source.clone())
        .or_else(|| m.target.as_deref().map(base_name))
        .unwrap_or_default()
}

/// The last component of a slash-separated path (Go's `path.Base`, without the `.`/`/`
/// cases no secret id has).
fn base_name(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// The value of a secret as an environment variable: its bytes as text (an environment
/// entry cannot hold a NUL byte, nor, for `StepSpec`, bytes that are not UTF-8). The errors
/// name the secret, never its content.
fn secret_env_value(id: &str, content: Vec<u8>) -> std::result::Result<String, String> {
    if content.contains(&0) {
        return Err(format!(
            "secret {id:?} holds a NUL byte and cannot be an environment variable"
        ));
    }
    String::from_utf8(content).map_err(|_| {
        format!("secret {id:?} is not UTF-8 text and cannot be an environment variable")
    })
}

impl BuildContext<'_> {
    /// The `NAME=value` environment entries of a RUN's `--mount=type=secret,env=NAME`
    /// mounts (BuildKit's `loadSecretEnv`): the secret's content, or an empty value for an
    /// optional secret that was not given; a required one that was not given is an error.
    /// The values go to the step's process alone: not to the op's key (which has the
    /// mount's fields), the history, the config or any message.
    pub(crate) fn secret_env(
        &self,
        origin: &Origin<'_>,
        mounts: &[MountFlag],
    ) -> Result<Vec<(String, String)>> {
        let mut entries = Vec::new();
        for flag in mounts {
            let Some(m) = flag.parsed.as_ref() else {
                continue;
            };
            let (MountType::Secret, Some(name)) = (m.kind, m.env.as_ref()) else {
                continue;
            };
            let id = secret_id(m);
            let value = match self.request.secrets.get(&id) {
                Some(path) => {
                    let content = std::fs::read(path).map_err(|e| {
                        origin.error(format!("--mount={}: reading secret {id:?}: {e}", flag.spec))
                    })?;
                    secret_env_value(&id, content)
                        .map_err(|e| origin.error(format!("--mount={}: {e}", flag.spec)))?
                }
                None if m.required => {
                    return Err(
                        origin.error(format!("secret {id:?} is required but was not provided"))
                    )
                }
                None => String::new(),
            };
            entries.push((name.clone(), value));
        }
        Ok(entries)
    }

    /// The bind mounts of a RUN's `--mount` flags, how each is realised without mount(2)
    /// (chroot isolation), and the locks of its `sharing=locked` (and `private`) cache
    /// mounts, to be held until the step ends. With chroot isolation every cache is locked
    /// (moved into the root, it cannot be shared) and every bind source copied.
    pub(crate) fn prepare_mounts(
        &self,
        st: &StageState,
        origin: &Origin<'_>,
        mounts: &[MountFlag],
        isolation: Isolation,
    ) -> Result<(Vec<BindMount>, Vec<MountPlan>, Vec<Held>)> {
        // Restricted isolation has no mount(2) either: its mounts are placed in `/` the
        // same way (`in_place/run.rs`).
        let chroot = matches!(isolation, Isolation::Chroot | Isolation::Restricted);
        // A root build's userns step runs as an unprivileged host range: it cannot read
        // root's secret files or connect to root's agent sockets as they are.
        let ranged = !chroot && matches!(self.owners, fsops::Owners::Ranged(_));
        let mut held = Vec::new();
        let mut binds = Vec::new();
        let mut plans = Vec::new();
        // (index in `binds`, cache directory, sharing) of every cache: `Shared` ones take a
        // shared lock, so that a step resolving a `source=` inside the cache (which holds
        // it exclusively) sees no step of another stage or build change it meanwhile.
        let mut exclusive: Vec<(usize, PathBuf, Sharing)> = Vec::new();
        // (index in `binds`, cache directory, `source=`, the flag) of the cache mounts that
        // bind a path inside their cache, resolved once the locks are held.
        let mut cache_sources: Vec<(usize, PathBuf, String, String)> = Vec::new();
        let mut ssh_index = 0;
        for flag in mounts {
            let m = flag
                .parsed
                .as_ref()
                .ok_or_else(|| origin.error(format!("--mount={}: not expanded", flag.spec)))?;
            let unsupported = |what: &str| {
                origin.error(format!(
                    "--mount={}: {what} is not supported yet",
                    flag.spec
                ))
            };
            let target = m
                .target
                .as_deref()
                .map(|t| fsops::join_container(&st.workdir(), t));
            match m.kind {
                MountType::Ssh => {
                    let target = target.unwrap_or_else(|| ssh_target(ssh_index));
                    ssh_index += 1;
                    if m.source.is_some() {
                        return Err(origin.error("ssh does not support source"));
                    }
                    // BuildKit's defaults: container root's, 0600.
                    let (uid, gid, mode) = (
                        m.uid.unwrap_or(0),
                        m.gid.unwrap_or(0),
                        m.mode.unwrap_or(0o600) & 0o7777,
                    );
                    // The agent's own socket has the host's owner and mode: another owner or
                    // mode needs a socket of the step's own, forwarding to it.
                    let own_socket = (uid, gid, mode) != (0, 0, 0o600);
                    let id = m.id.clone().unwrap_or_else(|| "default".into());
                    match self.request.ssh.get(&id) {
                        Some(socket) => {
                            let source = if ranged || (own_socket && !chroot) {
                                let (relay, path) = self
                                    .agent_relay(socket, uid, gid, mode)
                                    .map_err(|e| origin.error(format!("--mount={}: {e}", flag.spec)))?;
                                held.push(Held::Agent(relay));
                                path
                            } else {
                                socket.clone()
                            };
                            binds.push(BindMount {
                                source,
                                target,
                                readonly: false,
                                remove_source: false,
                                tmpfs_size: None,
                            });
                            plans.push(MountPlan {
                                kind: MountKind::SshAgent { uid, gid, mode },
                                label: format!("--mount={}", flag.spec),
                            });
                        }
                        None if m.required => {
                            return Err(origin.error(format!(
                                "no SSH key {id:?} forwarded from the client (pass --ssh {id}[=SOCKET|KEYFILE])"
                            )))
                        }
                        None => {}
                    }
                }
                MountType::Cache => {
                    if m.from.is_some() {
                        return Err(unsupported("a cache mount with from="));
                    }
                    let target = target.ok_or_else(|| {
                        origin.error(format!("--mount={}: target is required", flag.spec))
                    })?;
                    let id = m.id.clone().unwrap_or_else(|| target.clone());
                    let dir = crate::cache::cache_mount_dir(self.store, &id)
                        .map_err(|e| origin.error(e.to_string()))?;
                    {
                        let mut used = crate::context::lock(&self.shared.cache_mounts_used);
                        if !used.iter().any(|(i, _)| i == &id) {
                            used.push((id.clone(), dir.clone()));
                        }
                    }
                    // Stages running at once may both get here first: whoever creates the
                    // directory gives it its mode and owner, the other uses it.
                    let created = match std::fs::create_dir(&dir) {
                        Ok(()) => true,
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                        Err(e) => return Err(origin.error(format!("creating cache {id:?}: {e}"))),
                    };
                    if created {
                        std::fs::set_permissions(
                            &dir,
                            std::fs::Permissions::from_mode(m.mode.unwrap_or(0o755)),
                        )
                        .map_err(|e| origin.error(format!("cache {id:?}: {e}")))?;
                        fsops::chown_in_build(
                            &self.owners,
                            &dir,
                            m.uid.unwrap_or(0),
                            m.gid.unwrap_or(0),
                        )
                        .map_err(|e| origin.error(format!("cache {id:?}: {e}")))?;
                    } else if let fsops::Owners::Ranged(range) = &self.owners {
                        // Filled by an identity-mapped root build or a remote cache import
                        // (container ids as host ids): shifted into the range once.
                        fsops::shift_into_range(&dir, range)
                            .map_err(|e| origin.error(format!("cache {id:?}: {e}")))?;
                    }
                    // BuildKit binds `source=` of the cache (`llb.SourcePath`), resolved inside
                    // it: links and `..` cannot leave it, and a missing path is an error.
                    let source = m
                        .source
                        .as_deref()
                        .filter(|s| !matches!(s.trim_matches('/'), "" | "."));
                    if let Some(source) = source {
                        cache_sources.push((
                            binds.len(),
                            dir.clone(),
                            source.to_string(),
                            flag.spec.clone(),
                        ));
                    }
                    match m.sharing {
                        // Resolved and bound with no other step in the cache.
                        _ if source.is_some() => {
                            exclusive.push((binds.len(), dir.clone(), Sharing::Locked))
                        }
                        Some(sharing @ (Sharing::Locked | Sharing::Private)) => {
                            exclusive.push((binds.len(), dir.clone(), sharing))
                        }
                        Some(Sharing::Shared) | None if chroot => {
                            exclusive.push((binds.len(), dir.clone(), Sharing::Locked))
                        }
                        Some(Sharing::Shared) | None => {
                            exclusive.push((binds.len(), dir.clone(), Sharing::Shared))
                        }
                    }
                    binds.push(BindMount {
                        source: dir,
                        target,
                        readonly: m.read_only,
                        remove_source: false,
                        tmpfs_size: None,
                    });
                    plans.push(MountPlan {
                        kind: MountKind::Cache,
                        label: format!("--mount={}", flag.spec),
                    });
                }
                MountType::Tmpfs => {
                    let target = target.ok_or_else(|| {
                        origin.error(format!("--mount={}: target is required", flag.spec))
                    })?;
                    // BuildKit passes `size=` to the tmpfs only when it is above 0.
                    let size = m.size_limit.filter(|&n| n > 0).map(|n| n as u64);
                    if size.is_some() && chroot {
                        return Err(origin.error(format!(
                            "--mount={}: size= cannot be applied with --isolation chroot: \
                             there is no mount(2) there, a tmpfs is a directory of the \
                             root; leave size= out, or build with --isolation userns",
                            flag.spec
                        )));
                    }
                    let dir = self.dir.new_dir("tmpfs")?;
                    binds.push(BindMount {
                        source: dir,
                        target,
                        readonly: false,
                        remove_source: false,
                        tmpfs_size: size,
                    });
                    plans.push(MountPlan {
                        kind: MountKind::Scratch,
                        label: format!("--mount={}", flag.spec),
                    });
                }
                MountType::Secret => {
                    let id = secret_id(m);
                    // With `env=` and no `target=` the secret is an environment variable
                    // alone (`secret_env`), no file (BuildKit's dispatchSecret).
                    let target = match target {
                        Some(target) => target,
                        None if m.env.is_some() => continue,
                        None => format!("/run/secrets/{}", base_name(&id)),
                    };
                    match self.request.secrets.get(&id) {
                        Some(path) => {
                            // Under a user namespace the step gets a copy of its own, owned
                            // and moded as asked, which its init unlinks once mounted. In
                            // chroot mode the file is placed in the root for the step
                            // (`chroot_mounts`), and removed after it.
                            let copied = !chroot;
                            let source = if copied {
                                let (copy, path) = self
                                    .secret_copy(
                                        path,
                                        m.uid.unwrap_or(0),
                                        m.gid.unwrap_or(0),
                                        m.mode.unwrap_or(0o400),
                                    )
                                    .map_err(|e| {
                                        origin.error(format!("--mount={}: {e}", flag.spec))
                                    })?;
                                held.push(Held::Secret(copy));
                                path
                            } else {
                                path.clone()
                            };
                            binds.push(BindMount {
                                source,
                                target,
                                readonly: true,
                                remove_source: copied,
                                tmpfs_size: None,
                            });
                            plans.push(MountPlan {
                                kind: MountKind::Secret {
                                    uid: m.uid.unwrap_or(0),
                                    gid: m.gid.unwrap_or(0),
                                    mode: m.mode.unwrap_or(0o400),
                                },
                                label: format!("--mount={}", flag.spec),
                            });
                        }
                        None if m.required => {
                            return Err(origin
                                .error(format!("secret {id:?} is required but was not provided")))
                        }
                        None => {}
                    }
                }
                MountType::Bind => {
                    let target = target.ok_or_else(|| {
                        origin.error(format!("--mount={}: target is required", flag.spec))
                    })?;
                    let source = self.bind_source(
                        st,
                        m.from.as_deref(),
                        m.source.as_deref().unwrap_or("/"),
                        // In chroot mode the source is moved into the root: always a copy.
                        !m.read_only || chroot,
                    );
                    let source =
                        source.map_err(|e| origin.error(format!("--mount={}: {e}", flag.spec)))?;
                    binds.push(BindMount {
                        source,
                        target,
                        readonly: m.read_only,
                        remove_source: false,
                        tmpfs_size: None,
                    });
                    plans.push(MountPlan {
                        kind: MountKind::Scratch,
                        label: format!("--mount={}", flag.spec),
                    });
                }
            }
        }
        // In one order (by directory), so that two steps locking the same caches cannot
        // each hold one and wait for the other; a cache mounted twice by the step is locked
        // once, in the strongest of its modes (two locks of one file would wait for each
        // other).
        let strength = |s: &Sharing| match s {
            Sharing::Locked => 0,
            Sharing::Private => 1,
            Sharing::Shared => 2,
        };
        exclusive.sort_by(|a, b| a.1.cmp(&b.1).then(strength(&a.2).cmp(&strength(&b.2))));
        exclusive.dedup_by(|later, kept| later.1 == kept.1);
        for (index, dir, sharing) in exclusive {
            let fail =
                |e: std::io::Error| origin.error(format!("locking cache {}: {e}", dir.display()));
            match sharing {
                // BuildKit: one step at a time uses the cache; the others wait.
                Sharing::Locked => held.push(Held::Cache(
                    CacheLock::acquire(&dir, true)
                        .map_err(fail)?
                        // Cannot fail: a blocking acquire waits; only a non-blocking
                        // one returns None.
                        .expect("blocking"),
                )),
                // BuildKit: a step that finds the cache in use gets a cache of its own.
                Sharing::Private => match CacheLock::acquire(&dir, false).map_err(fail)? {
                    Some(lock) => held.push(Held::Cache(lock)),
                    None => binds[index].source = self.dir.new_dir("cache-private")?,
                },
                Sharing::Shared => {
                    held.push(Held::Cache(CacheLock::acquire_shared(&dir).map_err(fail)?))
                }
            }
        }
        for (index, dir, source, spec) in cache_sources {
            binds[index].source = cache_source(&dir, &source)
                .map_err(|e| origin.error(format!("--mount={spec}: {e}")))?;
        }
        Ok((binds, plans, held))
    }

    /// A step's copy of a secret, owned and moded as the mount asks (container ids, given
    /// as the build's owners allow: see [`fsops::chown_in_build`]): in a private directory
    /// of its own on a memory file system where one is writable (never on a disk then),
    /// owned by container root so that the step's init can unlink the copy once it is
    /// mounted. The directory goes when the step ends (the returned holder), or with the
    /// next rbuild command after a crash (it is locked as the build's secrets are).
    fn secret_copy(
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
    fn agent_relay(
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

    fn bind_source(
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

/// What a step holds until it has run (dropped at its end).
pub(crate) enum Held {
    Cache(#[allow(dead_code)] CacheLock),
    Agent(#[allow(dead_code)] AgentRelay),
    /// A step's copy of a secret (its directory; the file is unlinked once mounted), removed when dropped.
    Secret(#[allow(dead_code)] crate::secrets::SecretFiles),
}

/// A ranged root build's forwarding to an ssh agent, stopped when dropped, and the
/// directory of its socket, removed then (a socket leading to the user's keys outlives its
/// step nowhere).
pub(crate) struct AgentRelay(Option<crate::chroot_mounts::AgentProxy>, PathBuf);

impl Drop for AgentRelay {
    fn drop(&mut self) {
        if let Some(proxy) = self.0.take() {
            proxy.stop();
        }
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// A `RUN --mount=type=cache` directory held by one step (`sharing=locked`, or a `private`
/// cache that was free): an exclusive `flock` on `<dir>.lock`, released when dropped at the
/// end of the step. Each acquisition opens the file anew, so it excludes other threads of
/// this build (stages running at once) as well as other builds on the same store.
pub(crate) struct CacheLock(#[allow(dead_code)] std::fs::File);

impl CacheLock {
    /// Waits for a shared lock: steps mounting the cache `shared` hold one each, and keep
    /// out a step that holds it exclusively.
    fn acquire_shared(dir: &Path) -> std::io::Result<CacheLock> {
        let file = Self::open(dir)?;
        fsops::flock(&file, libc::LOCK_SH)?;
        Ok(CacheLock(file))
    }

    fn open(dir: &Path) -> std::io::Result<std::fs::File> {
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        let path = dir.with_file_name(name);
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
    }

    /// Waits for the lock (`blocking`), or returns `None` when it is held elsewhere.
    fn acquire(dir: &Path, blocking: bool) -> std::io::Result<Option<CacheLock>> {
        let file = Self::open(dir)?;
        let operation = if blocking {
            libc::LOCK_EX
        } else {
            libc::LOCK_EX | libc::LOCK_NB
        };
        Ok(fsops::flock(&file, operation)?.then_some(CacheLock(file)))
    }
}
