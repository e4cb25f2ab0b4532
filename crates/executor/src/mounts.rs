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
use std::path::PathBuf;

use rbuild_dockerfile::instructions::{Mount, MountFlag, MountType, Sharing};
use rbuild_sandbox::{BindMount, Isolation};

use crate::chroot_mounts::{MountKind, MountPlan};

use crate::context::{BuildContext, Origin};
use crate::error::Result;
use crate::fsops;
use crate::state::StageState;

mod held;
mod sources;

use held::CacheLock;
pub(crate) use held::Held;
use sources::cache_source;

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

/// Why a secret cannot be an environment variable. The texts name the secret, never its
/// content.
#[derive(Debug, thiserror::Error)]
enum SecretEnvError {
    #[error("secret {id:?} holds a NUL byte and cannot be an environment variable")]
    NulByte { id: String },
    #[error("secret {id:?} is not UTF-8 text and cannot be an environment variable")]
    NotUtf8 { id: String },
}

/// The value of a secret as an environment variable: its bytes as text (an environment
/// entry cannot hold a NUL byte, nor, for `StepSpec`, bytes that are not UTF-8).
fn secret_env_value(id: &str, content: Vec<u8>) -> std::result::Result<String, SecretEnvError> {
    if content.contains(&0) {
        return Err(SecretEnvError::NulByte { id: id.to_string() });
    }
    String::from_utf8(content).map_err(|_| SecretEnvError::NotUtf8 { id: id.to_string() })
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_errors_keep_buildkits_texts() {
        let cache = tempfile::tempdir().unwrap();
        let missing = cache_source(cache.path(), "a/./../etc//").unwrap_err();
        assert_eq!(
            missing.to_string(),
            r#"source "a/./../etc//" is not in the cache: open /etc: no such file or directory"#
        );
        std::fs::create_dir(cache.path().join("etc")).unwrap();
        assert_eq!(
            cache_source(cache.path(), "../../etc").unwrap(),
            cache.path().join("etc")
        );
        assert_eq!(
            secret_env_value("tok", b"a\0b".to_vec())
                .unwrap_err()
                .to_string(),
            r#"secret "tok" holds a NUL byte and cannot be an environment variable"#
        );
        assert_eq!(
            secret_env_value("tok", vec![0xff]).unwrap_err().to_string(),
            r#"secret "tok" is not UTF-8 text and cannot be an environment variable"#
        );
        assert_eq!(secret_env_value("tok", b"v".to_vec()).unwrap(), "v");
    }
}
