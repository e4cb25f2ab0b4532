//! `--secret` and `--ssh`: secret files and ssh-agent sockets for RUN mounts, checked before
//! any work starts, and the private files and agents they need kept for the build.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rbuild_executor::ssh_agent::{classify_ssh_paths, SshAgent, SshSource};
use rbuild_executor::SecretFiles;
use rbuild_store::Store;

use crate::error::SessionError;
use crate::spec::{SecretSource, SecretSpec, SshSpec};

/// Secret id → file. An env secret's value is written to a private directory on a memory
/// file system (see `SecretFiles`) kept in `keep`; `warn` hears when no memory file system is
/// writable. A missing file or variable is an error before any work starts.
pub(crate) fn secrets(
    store: &Store,
    specs: &[SecretSpec],
    keep: &mut Option<SecretFiles>,
    warn: &mut dyn FnMut(String),
) -> Result<BTreeMap<String, PathBuf>, SessionError> {
    let mut out = BTreeMap::new();
    for SecretSpec { id, source } in specs {
        let path = match source {
            SecretSource::File(path) => {
                if !path.is_file() {
                    return Err(SessionError::Secret(format!(
                        "id={id}: the file {} does not exist",
                        path.display()
                    )));
                }
                path.clone()
            }
            SecretSource::Env(var) => {
                let value = std::env::var_os(var).ok_or_else(|| {
                    SessionError::Secret(format!(
                        "id={id}: the environment variable {var} is not set"
                    ))
                })?;
                let files = match keep {
                    Some(files) => files,
                    None => {
                        let files = SecretFiles::create(store).map_err(|e| {
                            SessionError::Secret(format!(
                                "creating a private directory for --secret values: {e}"
                            ))
                        })?;
                        if files.on_disk() {
                            warn(format!(
                                "no memory file system (tmpfs at $XDG_RUNTIME_DIR or /dev/shm) \
                                 is writable: --secret values are kept in {} until the build \
                                 ends",
                                files.dir().display()
                            ));
                        }
                        keep.insert(files)
                    }
                };
                use std::os::unix::ffi::OsStrExt as _;
                files
                    .add(value.as_bytes())
                    .map_err(|e| SessionError::Secret(format!("id={id}: {e}")))?
            }
        };
        out.insert(id.clone(), path);
    }
    Ok(out)
}

/// Ssh id → agent socket. Key files are loaded into a private ssh-agent kept in `keep`; a
/// missing path, a key with a passphrase or a missing agent fails before any work starts.
pub(crate) fn ssh_agents(
    store: &Store,
    specs: &[SshSpec],
    keep: &mut Vec<SshAgent>,
) -> Result<BTreeMap<String, PathBuf>, SessionError> {
    let mut out = BTreeMap::new();
    for SshSpec { id, paths } in specs {
        let failed = |e: String| SessionError::Ssh(format!("{id}: {e}"));
        let socket = match classify_ssh_paths(paths).map_err(|e| failed(e.to_string()))? {
            SshSource::Socket(socket) => socket,
            SshSource::Keys(keys) => {
                let tmp = store.state_dir("tmp")?;
                let agent = SshAgent::start(&tmp, &keys).map_err(|e| failed(e.to_string()))?;
                let socket = agent.socket().to_path_buf();
                keep.push(agent);
                socket
            }
        };
        out.insert(id.clone(), socket);
    }
    Ok(out)
}
