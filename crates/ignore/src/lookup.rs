//! Which ignore file applies to a build: `<Dockerfile name>.dockerignore` next to the
//! Dockerfile wins over `.dockerignore` at the context root (BuildKit / buildx rule).

use std::path::{Path, PathBuf};

use crate::error::IgnoreError;
use crate::ignore_file::{IgnoreFile, Pattern};
use crate::in_root::{read_file_in_root, InRootError};

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

/// The most an ignore file may hold. Docker has no bound; real ones are a few kilobytes.
pub const MAX_IGNORE_FILE_BYTES: u64 = 8 << 20;

/// Each candidate as the directory it is read from and its name there: the Dockerfile's
/// own ignore file from the Dockerfile's directory, `.dockerignore` from the context, as
/// BuildKit reads them from its `dockerfile` and `context` sources.
fn candidates_in_roots(context_dir: &Path, dockerfile: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut candidates = Vec::with_capacity(2);
    if let Some(name) = dockerfile.file_name() {
        let mut specific = name.to_os_string();
        specific.push(".dockerignore");
        let dir = match dockerfile.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        candidates.push((dir, PathBuf::from(specific)));
    }
    candidates.push((context_dir.to_path_buf(), PathBuf::from(".dockerignore")));
    candidates
}

/// Reads the first existing candidate. `Ok(None)` when there is no ignore file. Symlinks
/// are resolved inside the directory the file is read from (so a `.dockerignore` pointing
/// at a host file reads nothing from the host), and a file over
/// [`MAX_IGNORE_FILE_BYTES`] or not a regular file is an error naming it.
pub fn read_ignore_file(
    context_dir: &Path,
    dockerfile: &Path,
) -> Result<Option<(PathBuf, Vec<Pattern>)>, IgnoreError> {
    for (root, name) in candidates_in_roots(context_dir, dockerfile) {
        let candidate = root.join(&name);
        match read_file_in_root(&root, &name, MAX_IGNORE_FILE_BYTES) {
            Ok(bytes) => {
                // Docker reads the file as bytes; invalid UTF-8 only affects the odd
                // pattern, so decode lossily rather than refuse the build.
                let text = String::from_utf8_lossy(&bytes);
                let patterns = IgnoreFile::parse(&text)?;
                return Ok(Some((candidate, patterns)));
            }
            Err(InRootError::NotFound) => continue,
            Err(err) => {
                return Err(IgnoreError::Read {
                    path: candidate,
                    source: std::io::Error::other(err.to_string()),
                })
            }
        }
    }
    Ok(None)
}
