//! The build context and the Dockerfile: a directory context is used where it is, a tar is
//! unpacked into a private directory with the same safety as a layer; the Dockerfile is read
//! as BuildKit reads it.

use std::fs::File;
use std::path::{Path, PathBuf};

use rbuild_executor::ScratchDir;
use rbuild_store::Store;

use crate::error::SessionError;
use crate::spec::{ContextSource, DockerfileSource};

/// The context directory, and the scratch directory holding it when it was unpacked from a
/// tar (removed when dropped, so kept until the build is over).
pub(crate) fn context_dir(
    store: &Store,
    source: &ContextSource,
) -> Result<(PathBuf, Option<ScratchDir>), SessionError> {
    let open = |path: &Path| {
        File::open(path).map_err(|e| SessionError::io(format!("opening {}", path.display()), e))
    };
    let tar: Box<dyn std::io::Read> = match source {
        ContextSource::Dir(dir) => {
            if !dir.is_dir() {
                return Err(SessionError::ContextNotFound(dir.display().to_string()));
            }
            return Ok((dir.clone(), None));
        }
        ContextSource::TarFile(path) => Box::new(open(path)?),
        ContextSource::Stdin => Box::new(std::io::stdin().lock()),
    };
    let tmp = ScratchDir::for_context(store)
        .map_err(|e| SessionError::Invalid(format!("creating a directory for the context: {e}")))?;
    let options = rbuild_layer::ApplyOptions {
        ownership: rbuild_layer::Ownership::Ignore,
        ..Default::default()
    };
    rbuild_layer::apply_layer(tar, tmp.path(), &options)
        .map_err(|e| SessionError::UnpackContext(e.to_string()))?;
    Ok((tmp.path().to_path_buf(), Some(tmp)))
}

/// The Dockerfile as the build reads it.
pub(crate) struct Dockerfile {
    /// Its name in messages.
    pub name: String,
    /// Its path, to find `<name>.dockerignore` beside it.
    pub path: Option<PathBuf>,
    pub text: String,
}

/// Reads the Dockerfile from the directory that holds it (the context by default) with
/// symlinks resolved inside that directory, so a Dockerfile that links to a host file reads
/// nothing from the host.
pub(crate) fn read_dockerfile(
    context: &Path,
    source: &DockerfileSource,
) -> Result<Dockerfile, SessionError> {
    match source {
        DockerfileSource::Inline(text) => Ok(Dockerfile {
            name: "Dockerfile".into(),
            path: None,
            text: text.clone(),
        }),
        DockerfileSource::Path(path) => Ok(Dockerfile {
            name: path.display().to_string(),
            path: Some(path.clone()),
            text: read_dockerfile_in_dir(path)?,
        }),
        DockerfileSource::Default => {
            let path = context.join("Dockerfile");
            Ok(Dockerfile {
                name: "Dockerfile".into(),
                text: read_dockerfile_in_dir(&path)?,
                path: Some(path),
            })
        }
    }
}

/// Reads `path` from inside its parent directory; `Dockerfile` falls back to `dockerfile`
/// (BuildKit's moby/moby#10858 rule).
fn read_dockerfile_in_dir(path: &Path) -> Result<String, SessionError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let failed = |reason: String| SessionError::Dockerfile {
        path: path.to_path_buf(),
        reason,
    };
    let name = path
        .file_name()
        .ok_or_else(|| failed("the path names no file".into()))?;
    let limit = rbuild_dockerfile::limits::MAX_DOCKERFILE_BYTES;
    let mut result = rbuild_ignore::read_file_in_root(dir, Path::new(name), limit);
    if matches!(result, Err(rbuild_ignore::InRootError::NotFound)) && name == "Dockerfile" {
        if let Ok(bytes) = rbuild_ignore::read_file_in_root(dir, Path::new("dockerfile"), limit) {
            result = Ok(bytes);
        }
    }
    let bytes = result.map_err(|err| match err {
        rbuild_ignore::InRootError::NotFound => failed(format!(
            "no such file inside {} (symlinks are resolved inside that directory, as BuildKit \
             does)",
            dir.display()
        )),
        other => failed(other.to_string()),
    })?;
    String::from_utf8(bytes).map_err(|_| failed("it is not UTF-8".into()))
}
