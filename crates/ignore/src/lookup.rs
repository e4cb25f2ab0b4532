//! Which ignore file applies to a build: `<Dockerfile name>.dockerignore` next to the
//! Dockerfile wins over `.dockerignore` at the context root (BuildKit / buildx rule).

use std::path::{Path, PathBuf};

use crate::error::IgnoreError;
use crate::ignore_file::{IgnoreFile, Pattern};

/// Candidate ignore files, most specific first. `dockerfile` is the Dockerfile path as
/// given (relative to the working directory or absolute); `context_dir` is the context.
pub fn ignore_file_candidates(context_dir: &Path, dockerfile: &Path) -> Vec<PathBuf> {
    let mut candidates = Vec::with_capacity(2);
    if let Some(name) = dockerfile.file_name() {
        let mut specific = name.to_os_string();
        specific.push(".dockerignore");
        candidates.push(dockerfile.with_file_name(specific));
    }
    candidates.push(context_dir.join(".dockerignore"));
    candidates
}

/// Reads the first existing candidate. `Ok(None)` when there is no ignore file.
pub fn read_ignore_file(
    context_dir: &Path,
    dockerfile: &Path,
) -> Result<Option<(PathBuf, Vec<Pattern>)>, IgnoreError> {
    for candidate in ignore_file_candidates(context_dir, dockerfile) {
        match std::fs::read(&candidate) {
            Ok(bytes) => {
                // Docker reads the file as bytes; invalid UTF-8 only affects the odd
                // pattern, so decode lossily rather than refuse the build.
                let text = String::from_utf8_lossy(&bytes);
                let patterns = IgnoreFile::parse(&text)?;
                return Ok(Some((candidate, patterns)));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(IgnoreError::Read {
                    path: candidate,
                    source,
                })
            }
        }
    }
    Ok(None)
}
