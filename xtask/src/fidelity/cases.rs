//! The golden cases: a directory of `testdata/buildkit-cases/` with its Dockerfile, its
//! context and its `case.json` (what to pass to both builders, what must come out).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use rbuild_testutil::{CaseFile, CaseServers, ObjectFormat};

use super::run_ok;

/// A named context of a case.
pub(super) enum CaseContext {
    /// An image reference; the base's name stands for the base both builders start from.
    Image(String),
    /// A directory of the case.
    Local(PathBuf),
    /// A URL of the case's server, its placeholder not yet replaced (`{{HTTP}}/src.tar`).
    Url(String),
    /// An OCI layout made by rbuild from a directory of the case (its `Dockerfile`), the
    /// same layout for both builders ([`super::builds::make_oci_layouts`]).
    OciLayout(String),
}

/// The text at `key` of a JSON record (none when absent or not a string).
pub(crate) fn json_text(record: &Value, key: &str) -> Option<String> {
    record.get(key).and_then(Value::as_str).map(str::to_string)
}

/// The texts of the array at `key` of a JSON record (what is not a string left out).
pub(crate) fn json_strings(record: &Value, key: &str) -> Vec<String> {
    record
        .get(key)
        .and_then(Value::as_array)
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// One case directory and its `case.json`.
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub spec: Value,
}

impl Case {
    pub(super) fn strings(&self, key: &str) -> Vec<String> {
        json_strings(&self.spec, key)
    }

    pub(super) fn text(&self, key: &str) -> Option<String> {
        json_text(&self.spec, key)
    }

    /// The build context: `context/`, or an empty directory when the case has none; with
    /// `"source": "socket"`, a copy of it holding a Unix socket `socket.sock` too (git
    /// cannot hold one; `testCopySocket`).
    pub(super) fn context(&self, work: &Path) -> Result<PathBuf> {
        let dir = self.dir.join("context");
        if self.text("source").as_deref() == Some("socket") {
            let copy = work.join(format!("{}-socket-context", self.name));
            let _ = std::fs::remove_dir_all(&copy);
            run_ok(
                "cp -a (the context)",
                Command::new("cp").arg("-a").arg(&dir).arg(&copy),
            )?;
            // The socket file stays when the listener closes.
            std::os::unix::net::UnixListener::bind(copy.join("socket.sock"))
                .context("creating socket.sock")?;
            return Ok(copy);
        }
        if dir.is_dir() {
            return Ok(dir);
        }
        let empty = work.join(format!("{}-empty-context", self.name));
        std::fs::create_dir_all(&empty)?;
        Ok(empty)
    }

    /// `--ssh default=KEY` when the case asks for an agent (`"ssh": true`): a key made now
    /// with ssh-keygen (no key is kept in the repository), the same one for both builders.
    pub(super) fn ssh_key(&self, work: &Path) -> Result<Option<PathBuf>> {
        if self.spec.get("ssh").and_then(Value::as_bool) != Some(true) {
            return Ok(None);
        }
        let key = work.join(format!("{}-ssh-key", self.name));
        if !key.exists() {
            run_ok(
                "ssh-keygen",
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(&key),
            )?;
        }
        Ok(Some(key))
    }

    /// The case's named contexts (`"named_contexts": {"NAME": "docker-image://REF" |
    /// "local:DIR" | "oci-layout:DIR"}`, DIR a directory of the case), sorted by name.
    pub(super) fn named_contexts(&self) -> Result<Vec<(String, CaseContext)>> {
        let Some(map) = self.spec.get("named_contexts") else {
            return Ok(Vec::new());
        };
        let map = map
            .as_object()
            .ok_or_else(|| anyhow!("{}: named_contexts is not an object", self.name))?;
        let mut out = Vec::new();
        for (name, value) in map {
            let value = value.as_str().unwrap_or_default();
            let context = if let Some(reference) = value.strip_prefix("docker-image://") {
                CaseContext::Image(reference.to_string())
            } else if let Some(dir) = value.strip_prefix("local:") {
                CaseContext::Local(self.dir.join(dir))
            } else if let Some(dir) = value.strip_prefix("oci-layout:") {
                if dir.is_empty() || dir.contains(['/', '.']) {
                    bail!(
                        "{}: named context {name}: {value:?} names no directory of the case",
                        self.name
                    );
                }
                CaseContext::OciLayout(dir.to_string())
            } else if value.starts_with(rbuild_testutil::HTTP_PLACEHOLDER) {
                CaseContext::Url(value.to_string())
            } else {
                bail!("{}: named context {name}: {value:?} is neither docker-image://REF, local:DIR, oci-layout:DIR nor {{{{HTTP}}}}/PATH", self.name);
            };
            out.push((name.clone(), context));
        }
        Ok(out)
    }

    /// The case's HTTP server (files and git repositories), when `case.json` asks for one
    /// (`http_files`, `http_headers`, `git_repos`: `testdata/buildkit-cases/README.md`).
    pub(super) fn servers(&self) -> Result<Option<CaseServers>> {
        let files = self.spec.get("http_files").and_then(Value::as_object);
        let repos = self.spec.get("git_repos").and_then(Value::as_array);
        if files.is_none() && repos.is_none() {
            return Ok(None);
        }
        let mut case_files = Vec::new();
        for (path, file) in files.into_iter().flatten() {
            let headers = self
                .spec
                .get("http_headers")
                .and_then(|h| h.get(path))
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            case_files.push(CaseFile {
                path: path.clone(),
                file: PathBuf::from(file.as_str().unwrap_or_default()),
                headers,
            });
        }
        let mut case_repos = Vec::new();
        for repo in repos.into_iter().flatten() {
            let name = json_text(repo, "name")
                .ok_or_else(|| anyhow!("{}: a git repository without a name", self.name))?;
            let format = ObjectFormat::parse(&json_text(repo, "format").unwrap_or("sha1".into()))?;
            case_repos.push((name, format));
        }
        let repos_dir = rbuild_testutil::case_repos_dir(
            &self.dir,
            json_text(&self.spec, "git_repos_from").as_deref(),
        )?;
        let servers = CaseServers::start(&self.dir, &case_files, &repos_dir, &case_repos)
            .with_context(|| format!("{}: starting its servers", self.name))?;
        Ok(Some(servers))
    }

    /// The directory of the Dockerfile both builders read: the case's, or with servers a
    /// copy whose placeholder is their address.
    pub(super) fn dockerfile_dir(
        &self,
        work: &Path,
        servers: Option<&CaseServers>,
    ) -> Result<PathBuf> {
        let Some(servers) = servers else {
            return Ok(self.dir.clone());
        };
        let dir = work.join(format!("{}-dockerfile", self.name));
        std::fs::create_dir_all(&dir)?;
        let text = std::fs::read_to_string(self.dir.join("Dockerfile"))?;
        std::fs::write(dir.join("Dockerfile"), servers.substitute(&text))?;
        Ok(dir)
    }

    /// The context URL (`remote_context`, its placeholder replaced by the servers'
    /// address), when the case's context is fetched from its servers.
    pub(super) fn remote_context(&self, servers: Option<&CaseServers>) -> Result<Option<String>> {
        let Some(url) = self.text("remote_context") else {
            return Ok(None);
        };
        let servers = servers.ok_or_else(|| {
            anyhow!(
                "{}: remote_context needs http_files or git_repos",
                self.name
            )
        })?;
        Ok(Some(servers.substitute(&url)))
    }

    /// The build arguments, the servers' placeholder replaced by their address.
    pub(super) fn build_args(&self, servers: Option<&CaseServers>) -> Vec<String> {
        self.strings("build_args")
            .into_iter()
            .map(|a| servers.map_or(a.clone(), |s| s.substitute(&a)))
            .collect()
    }

    /// `(id, path)` of each secret: `secrets/ID` in the case directory.
    pub(super) fn secrets(&self) -> Vec<(String, PathBuf)> {
        self.strings("secrets")
            .into_iter()
            .map(|id| {
                let path = self.dir.join("secrets").join(&id);
                (id, path)
            })
            .collect()
    }
}

pub(super) fn cases_dir(root: &Path) -> PathBuf {
    root.join("testdata/buildkit-cases")
}

/// Every case (a directory with a `case.json`), sorted by name.
pub(super) fn read_cases(root: &Path) -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    let dir = cases_dir(root);
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let spec_path = path.join("case.json");
        if !spec_path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&spec_path)
            .with_context(|| format!("reading {}", spec_path.display()))?;
        let spec: Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", spec_path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        cases.push(Case {
            name,
            dir: path,
            spec,
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cases)
}
