//! Content digests of COPY/ADD and bind-mount sources, for cache keys: each entry's path
//! relative to the source, type, permission bits (setuid and sticky included), and file
//! content or link target. Owners and mtimes are left out: context files are copied as
//! root (or as `--chown`, which is in the key) and a `touch` must not miss the cache.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rbuild_image::{Digest, Hasher};

use crate::error::{BuildError, Result};
use crate::fsops::Filter;

/// The entries of one source, each as (relative path, entry digest).
pub(crate) struct SourceDigest {
    pub entries: Vec<(String, Digest)>,
}

/// Digests `host` (a file, symlink or directory) as `rel`, walking directories through
/// `filter` (the same `.dockerignore` filter the copy uses). Symlinks are never followed.
pub(crate) fn digest_source(
    host: &Path,
    rel: &str,
    filter: &dyn Fn(&Path, bool) -> Filter,
) -> Result<SourceDigest> {
    let mut out = SourceDigest {
        entries: Vec::new(),
    };
    // A top-level source was resolved (its symlinks followed) by the source lookup.
    let md = fs::metadata(host).map_err(BuildError::io("", host))?;
    out.entries
        .push((rel.to_string(), entry_digest(host, &md, true)?));
    if md.is_dir() {
        walk(host, Path::new(""), rel, filter, &mut out)?;
    }
    Ok(out)
}

fn walk(
    dir: &Path,
    sub: &Path,
    rel: &str,
    filter: &dyn Fn(&Path, bool) -> Filter,
    out: &mut SourceDigest,
) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(BuildError::io("reading directory", dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(BuildError::io("reading directory", dir))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let r = sub.join(&name);
        let md = fs::symlink_metadata(&path).map_err(BuildError::io("", &path))?;
        let included = match filter(&r, md.is_dir()) {
            Filter::Skip => continue,
            Filter::Descend => false,
            Filter::Include => true,
        };
        let shown = if rel.is_empty() {
            r.to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", r.to_string_lossy())
        };
        if included {
            out.entries.push((shown, entry_digest(&path, &md, false)?));
        }
        if md.is_dir() {
            walk(&path, &r, rel, filter, out)?;
        }
    }
    Ok(())
}

fn entry_digest(path: &Path, md: &fs::Metadata, top: bool) -> Result<Digest> {
    let mut h = Hasher::new();
    let mode = md.permissions().mode() & 0o7777;
    let ft = md.file_type();
    if ft.is_symlink() && !top {
        let target = fs::read_link(path).map_err(BuildError::io("", path))?;
        h.update(format!("symlink {mode:o} ").as_bytes());
        h.update(target.as_os_str().as_encoded_bytes());
    } else if ft.is_dir() {
        h.update(format!("dir {mode:o}").as_bytes());
    } else if ft.is_file() {
        h.update(format!("file {mode:o} {} ", md.len()).as_bytes());
        let content = file_digest(path)?;
        h.update(content.to_string().as_bytes());
    } else {
        // Devices, fifos, sockets: copied as what they are.
        h.update(format!("special {mode:o} {:o} {}", md.mode() & 0o170000, md.rdev()).as_bytes());
    }
    Ok(h.finish())
}

fn file_digest(path: &Path) -> Result<Digest> {
    use std::io::Read;
    let mut f = fs::File::open(path).map_err(BuildError::io("", path))?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(BuildError::io("reading", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(_: &Path, _: bool) -> Filter {
        Filter::Include
    }

    fn digest_of(dir: &Path) -> Vec<(String, Digest)> {
        digest_source(dir, "src", &all).unwrap().entries
    }

    #[test]
    fn content_and_mode_count_mtime_does_not() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("a.txt");
        fs::write(&f, "one").unwrap();
        let first = digest_of(t.path());
        // touch: same content, new mtime
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(100);
        fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(digest_of(t.path()), first);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).unwrap();
        let chmodded = digest_of(t.path());
        assert_ne!(chmodded, first);
        fs::write(&f, "two").unwrap();
        assert_ne!(digest_of(t.path()), chmodded);
    }

    #[test]
    fn symlinks_are_keyed_by_target_and_ignored_files_do_not_count() {
        let t = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("x", t.path().join("l")).unwrap();
        fs::write(t.path().join("ignored"), "1").unwrap();
        let skip_ignored = |p: &Path, _: bool| {
            if p == Path::new("ignored") {
                Filter::Skip
            } else {
                Filter::Include
            }
        };
        let a = digest_source(t.path(), "", &skip_ignored).unwrap().entries;
        fs::write(t.path().join("ignored"), "2").unwrap();
        let b = digest_source(t.path(), "", &skip_ignored).unwrap().entries;
        assert_eq!(a, b);
        fs::remove_file(t.path().join("l")).unwrap();
        std::os::unix::fs::symlink("y", t.path().join("l")).unwrap();
        let c = digest_source(t.path(), "", &skip_ignored).unwrap().entries;
        assert_ne!(a, c);
    }
}
