//! Git repositories made deterministically for tests (fixed names, e-mails and dates, so the
//! commit ids are the same on every machine), in either object format, and the servers a
//! golden case of network sources needs ([`CaseServers`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::http_server::{HttpServer, ServedFile};

/// The author and committer date of every commit a script makes (unless it sets its own
/// `GIT_COMMITTER_DATE`): 2023-01-02 15:04:05 UTC, [`crate::LAST_MODIFIED_EPOCH`].
pub const GIT_DATE: &str = "2023-01-02T15:04:05+00:00";

/// A repository's object format (`git init --object-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectFormat {
    Sha1,
    Sha256,
}

impl ObjectFormat {
    /// `sha1` or `sha256`.
    pub fn parse(text: &str) -> std::io::Result<ObjectFormat> {
        match text {
            "sha1" => Ok(ObjectFormat::Sha1),
            "sha256" => Ok(ObjectFormat::Sha256),
            other => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("object format {other:?} is neither sha1 nor sha256"),
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            ObjectFormat::Sha1 => "sha1",
            ObjectFormat::Sha256 => "sha256",
        }
    }
}

/// Git run with no system or user configuration, fixed identity and dates, and local
/// submodule URLs allowed (a script may add a sibling repository as a submodule by a
/// relative URL, `../other.git`, which the server then serves beside it).
fn git_env(command: &mut Command, home: &Path) {
    command
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_AUTHOR_DATE", GIT_DATE)
        .env("GIT_COMMITTER_DATE", GIT_DATE)
        .env("TZ", "UTC")
        .env("GIT_CONFIG_COUNT", "2")
        .env("GIT_CONFIG_KEY_0", "protocol.file.allow")
        .env("GIT_CONFIG_VALUE_0", "always")
        .env("GIT_CONFIG_KEY_1", "init.defaultBranch")
        .env("GIT_CONFIG_VALUE_1", "master");
}

fn checked(what: &str, command: &mut Command) -> std::io::Result<()> {
    let out = command.output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

/// Makes the repository `dir` (which must not exist): `git init` in `format`, then `script`
/// run by `sh -e` in it (`$CASE_DIR` names the script's case directory, the parent of its
/// `repos/`, so a script can copy the case's files in). Files the script writes get the modes git records (0644 or 0755),
/// so the trees, and with the fixed dates the commits, are the same everywhere.
pub fn make_git_repo(dir: &Path, script: &Path, format: ObjectFormat) -> std::io::Result<()> {
    let home = dir.with_extension("home");
    std::fs::create_dir_all(&home)?;
    let mut init = Command::new("git");
    git_env(&mut init, &home);
    checked(
        "git init",
        init.args(["init", "-q", "--object-format", format.name()])
            .arg(dir),
    )?;
    let mut run = Command::new("sh");
    git_env(&mut run, &home);
    if let Some(case_dir) = script.parent().and_then(Path::parent) {
        run.env("CASE_DIR", case_dir);
    }
    checked(
        &format!("{} (making {})", script.display(), dir.display()),
        run.arg("-e").arg(script).current_dir(dir),
    )
}

/// The placeholder for the server's `http://127.0.0.1:PORT` in a case's Dockerfile and
/// build arguments, and in its golden (history lines hold URLs).
pub const HTTP_PLACEHOLDER: &str = "{{HTTP}}";

/// One file a case serves: its request path, the case's file and any extra headers.
#[derive(Debug, Clone)]
pub struct CaseFile {
    pub path: String,
    pub file: PathBuf,
    pub headers: Vec<(String, String)>,
}

/// Where a case's repository scripts are: its own `repos/`, or with `git_repos_from` (a
/// sibling case's name, `testdata/buildkit-cases/README.md`) that case's, so that cases
/// serving the same repositories keep one copy of their scripts.
pub fn case_repos_dir(case_dir: &Path, from: Option<&str>) -> std::io::Result<PathBuf> {
    let Some(from) = from else {
        return Ok(case_dir.join("repos"));
    };
    if from.is_empty() || from.contains('/') || from.starts_with('.') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("git_repos_from {from:?}: not a case's name"),
        ));
    }
    let parent = case_dir.parent().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: a case directory has a parent", case_dir.display()),
        )
    })?;
    Ok(parent.join(from).join("repos"))
}

/// The HTTP server of one case: its files, and its repositories at `/git/NAME.git`, each
/// made from `repos_dir/NAME.sh` (the case's `repos/`, or another case's when several
/// cases share their repositories) in the order given (a later one may add an earlier one
/// as a submodule). Everything is removed when it is dropped.
pub struct CaseServers {
    server: HttpServer,
    _dir: tempfile::TempDir,
}

impl CaseServers {
    pub fn start(
        case_dir: &Path,
        files: &[CaseFile],
        repos_dir: &Path,
        repos: &[(String, ObjectFormat)],
    ) -> std::io::Result<CaseServers> {
        let dir = tempfile::tempdir()?;
        let mut served = BTreeMap::new();
        for f in files {
            let content = std::fs::read(case_dir.join(&f.file))
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", f.file.display())))?;
            served.insert(
                f.path.clone(),
                ServedFile {
                    content,
                    headers: f.headers.clone(),
                },
            );
        }
        let git_root = if repos.is_empty() {
            None
        } else {
            let root = dir.path().join("git");
            std::fs::create_dir(&root)?;
            for (name, format) in repos {
                if name.contains('/') || name.starts_with('.') {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("repository name {name:?}"),
                    ));
                }
                let script = repos_dir.join(format!("{name}.sh"));
                make_git_repo(&root.join(format!("{name}.git")), &script, *format)?;
            }
            Some(root)
        };
        let server = HttpServer::start(served, git_root)?;
        Ok(CaseServers { server, _dir: dir })
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn server(&self) -> &HttpServer {
        &self.server
    }

    /// `text` with [`HTTP_PLACEHOLDER`] replaced by the server's URL.
    pub fn substitute(&self, text: &str) -> String {
        text.replace(HTTP_PLACEHOLDER, &self.url())
    }

    /// `text` with the server's URL replaced by [`HTTP_PLACEHOLDER`].
    pub fn unsubstitute(&self, text: &str) -> String {
        text.replace(&self.url(), HTTP_PLACEHOLDER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev_parse(dir: &Path, what: &str) -> String {
        let out = Command::new("git")
            .args(["rev-parse", what])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// The same script makes the same commits in two places (and at two times), in both
    /// formats; a clone over the server gets them.
    #[test]
    fn repositories_are_deterministic_and_cloneable_over_http() {
        let case = tempfile::tempdir().unwrap();
        std::fs::create_dir(case.path().join("repos")).unwrap();
        std::fs::write(
            case.path().join("repos/r.sh"),
            "echo one >foo\ngit add foo\ngit commit -qm one\ngit tag v1\n",
        )
        .unwrap();
        let work = tempfile::tempdir().unwrap();
        for format in [ObjectFormat::Sha1, ObjectFormat::Sha256] {
            let a = work.path().join(format!("a-{format:?}"));
            let b = work.path().join(format!("b-{format:?}"));
            make_git_repo(&a, &case.path().join("repos/r.sh"), format).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1100));
            make_git_repo(&b, &case.path().join("repos/r.sh"), format).unwrap();
            let id = rev_parse(&a, "v1");
            assert_eq!(id, rev_parse(&b, "v1"));
            assert_eq!(id.len(), if format == ObjectFormat::Sha1 { 40 } else { 64 });

            let servers = CaseServers::start(
                case.path(),
                &[],
                &case.path().join("repos"),
                &[("r".to_string(), format)],
            )
            .unwrap();
            let clone = work.path().join(format!("clone-{format:?}"));
            let out = Command::new("git")
                .args(["clone", "-q", "--depth=1", "--branch", "v1"])
                .arg(format!("{}/git/r.git", servers.url()))
                .arg(&clone)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(std::fs::read_to_string(clone.join("foo")).unwrap(), "one\n");
            assert_eq!(rev_parse(&clone, "HEAD"), id);
            assert_eq!(
                servers.unsubstitute(&servers.substitute("ADD {{HTTP}}/git/r.git /x")),
                "ADD {{HTTP}}/git/r.git /x"
            );
        }
    }

    #[test]
    fn a_failing_script_is_an_error() {
        let case = tempfile::tempdir().unwrap();
        std::fs::create_dir(case.path().join("repos")).unwrap();
        std::fs::write(case.path().join("repos/bad.sh"), "false\n").unwrap();
        let err = CaseServers::start(
            case.path(),
            &[],
            &case.path().join("repos"),
            &[("bad".into(), ObjectFormat::Sha1)],
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("bad.sh"), "{err}");
    }
}
