//! The build context as the tar stream the daemon's `/build` endpoint takes.
//!
//! A directory is packed here with `.dockerignore` applied, because the daemon's classic
//! builder does not filter a context itself (it only drops the Dockerfile and
//! `.dockerignore` when they are ignored): the Docker CLI filters on the client side too.

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::ignore_rules::IgnoreRules;
use crate::request::{ContextSource, DockerfileSource};

/// A context archive written to a temporary file, plus the Dockerfile name inside it.
pub struct PackedContext {
    pub file: tempfile::NamedTempFile,
    /// The `dockerfile` parameter for `/build`: a path inside the archive.
    pub dockerfile: String,
}

/// Packs the context. `stdin` supplies the archive for `ContextSource::Stdin`.
pub fn pack(
    context: &ContextSource,
    dockerfile: &DockerfileSource,
    stdin: &mut dyn Read,
) -> Result<PackedContext> {
    let mut file = tempfile::NamedTempFile::new().context("cannot create a temporary file")?;
    let dockerfile_name = match context {
        ContextSource::Dir(dir) => pack_dir(dir, dockerfile, file.as_file_mut())?,
        ContextSource::TarFile(path) => {
            let mut src = fs::File::open(path)
                .with_context(|| format!("cannot open the context archive {}", path.display()))?;
            io::copy(&mut src, file.as_file_mut())
                .with_context(|| format!("cannot read the context archive {}", path.display()))?;
            dockerfile_in_archive(dockerfile)?
        }
        ContextSource::Stdin => {
            io::copy(stdin, file.as_file_mut())
                .context("cannot read the context archive from standard input")?;
            dockerfile_in_archive(dockerfile)?
        }
    };
    file.as_file_mut().flush()?;
    file.as_file_mut().rewind()?;
    Ok(PackedContext {
        file,
        dockerfile: dockerfile_name,
    })
}

/// With a tar context, `-f` names a file inside the archive (as with `docker build -`).
fn dockerfile_in_archive(dockerfile: &DockerfileSource) -> Result<String> {
    match dockerfile {
        DockerfileSource::Default => Ok("Dockerfile".into()),
        DockerfileSource::Path(p) => Ok(p.to_string_lossy().into_owned()),
        DockerfileSource::Inline(_) => bail!(
            "`-f -` (Dockerfile on standard input) cannot be combined with a tar archive \
             context with the daemon engines yet; put the Dockerfile into the archive"
        ),
    }
}

/// A name for a Dockerfile that lives outside the context, unlikely to clash with a file in it.
fn generated_dockerfile_name() -> String {
    format!(".rbuild-dockerfile-{}", std::process::id())
}

fn pack_dir(dir: &Path, dockerfile: &DockerfileSource, out: &mut fs::File) -> Result<String> {
    let meta = fs::metadata(dir)
        .with_context(|| format!("the build context {} does not exist", dir.display()))?;
    if !meta.is_dir() {
        bail!("the build context {} is not a directory", dir.display());
    }
    let dockerfile_path = match dockerfile {
        DockerfileSource::Default => Some(dir.join("Dockerfile")),
        DockerfileSource::Path(path) => Some(path.clone()),
        DockerfileSource::Inline(_) => None,
    };
    let rules = IgnoreRules::load(dir, dockerfile_path.as_deref())?;

    // The Dockerfile either sits inside the context (send its relative path) or outside it
    // (add its text under a generated name).
    let (dockerfile_name, extra): (String, Option<Vec<u8>>) = match dockerfile {
        DockerfileSource::Default => ("Dockerfile".into(), None),
        DockerfileSource::Inline(text) => {
            (generated_dockerfile_name(), Some(text.clone().into_bytes()))
        }
        DockerfileSource::Path(path) => match inside_context(dir, path) {
            Some(rel) => (rel, None),
            None => {
                let text = fs::read(path)
                    .with_context(|| format!("cannot read the Dockerfile {}", path.display()))?;
                (generated_dockerfile_name(), Some(text))
            }
        },
    };

    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut walker = Walker {
        rules: &rules,
        always_keep: [dockerfile_name.clone(), ".dockerignore".to_string()],
        builder: &mut builder,
    };
    walker.walk(dir, "")?;
    if let Some(text) = extra {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, &dockerfile_name, text.as_slice())
            .context("cannot add the Dockerfile to the context archive")?;
    }
    builder
        .finish()
        .context("cannot finish the context archive")?;
    Ok(dockerfile_name)
}

/// The Dockerfile's path relative to the context when it lies inside it.
fn inside_context(dir: &Path, dockerfile: &Path) -> Option<String> {
    let dir = fs::canonicalize(dir).ok()?;
    let file = fs::canonicalize(dockerfile).ok()?;
    let rel = file.strip_prefix(&dir).ok()?;
    Some(rel.to_string_lossy().into_owned())
}

struct Walker<'a, W: Write> {
    rules: &'a IgnoreRules,
    /// The Docker CLI always sends these, even when ignored: the daemon needs them and drops
    /// them itself afterwards.
    always_keep: [String; 2],
    builder: &'a mut tar::Builder<W>,
}

impl<W: Write> Walker<'_, W> {
    fn walk(&mut self, dir: &Path, rel_dir: &str) -> Result<()> {
        let mut entries: Vec<(String, PathBuf)> = fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .map(|e| {
                let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
                Ok((e.file_name().to_string_lossy().into_owned(), e.path()))
            })
            .collect::<Result<_>>()?;
        // Sorted so the same context gives the same archive (and the same cache hits).
        entries.sort();
        for (name, path) in entries {
            let rel = if rel_dir.is_empty() {
                name
            } else {
                format!("{rel_dir}/{name}")
            };
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("cannot stat {}", path.display()))?;
            let kept = self.always_keep.contains(&rel);
            let excluded = !kept && self.rules.excludes(&rel);
            if meta.is_dir() {
                if excluded && self.rules.can_skip_dir(&rel) {
                    continue;
                }
                if !excluded {
                    self.append(&path, &rel, &meta)?;
                }
                self.walk(&path, &rel)?;
            } else if !excluded {
                self.append(&path, &rel, &meta)?;
            }
        }
        Ok(())
    }

    fn append(&mut self, path: &Path, rel: &str, meta: &fs::Metadata) -> Result<()> {
        let ft = meta.file_type();
        if !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
            // Sockets, fifos and devices: the Docker CLI skips them as well.
            return Ok(());
        }
        let mut header = tar::Header::new_gnu();
        header.set_metadata(meta);
        // Like the Docker CLI: context files belong to root inside the build.
        header.set_uid(0);
        header.set_gid(0);
        let _ = header.set_username("");
        let _ = header.set_groupname("");
        let context = || format!("cannot add {} to the context archive", path.display());
        if ft.is_symlink() {
            let target = fs::read_link(path).with_context(context)?;
            header.set_size(0);
            self.builder
                .append_link(&mut header, rel, &target)
                .with_context(context)?;
        } else if ft.is_dir() {
            header.set_size(0);
            self.builder
                .append_data(&mut header, format!("{rel}/"), io::empty())
                .with_context(context)?;
        } else {
            let file = fs::File::open(path).with_context(context)?;
            self.builder
                .append_data(&mut header, rel, file)
                .with_context(context)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(packed: &mut PackedContext) -> Vec<String> {
        let mut archive = tar::Archive::new(packed.file.as_file_mut());
        let mut out: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn directory_is_packed_with_dockerfile_outside_added() {
        let ctx = tempfile::tempdir().unwrap();
        fs::write(ctx.path().join("a.txt"), "a").unwrap();
        fs::create_dir(ctx.path().join("sub")).unwrap();
        fs::write(ctx.path().join("sub/b.txt"), "b").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", ctx.path().join("link")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        let df = outside.path().join("My.Dockerfile");
        fs::write(&df, "FROM scratch\n").unwrap();

        let mut packed = pack(
            &ContextSource::Dir(ctx.path().to_path_buf()),
            &DockerfileSource::Path(df),
            &mut io::empty(),
        )
        .unwrap();
        assert!(packed.dockerfile.starts_with(".rbuild-dockerfile-"));
        let got = names(&mut packed);
        let expected = vec![
            packed.dockerfile.clone(),
            "a.txt".to_string(),
            "link".into(),
            "sub/".into(),
            "sub/b.txt".into(),
        ];
        let mut expected = expected;
        expected.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn dockerfile_inside_context_keeps_its_relative_path() {
        let ctx = tempfile::tempdir().unwrap();
        fs::create_dir(ctx.path().join("build")).unwrap();
        fs::write(ctx.path().join("build/Dockerfile.dev"), "FROM scratch\n").unwrap();
        let packed = pack(
            &ContextSource::Dir(ctx.path().to_path_buf()),
            &DockerfileSource::Path(ctx.path().join("build/Dockerfile.dev")),
            &mut io::empty(),
        )
        .unwrap();
        assert_eq!(packed.dockerfile, "build/Dockerfile.dev");
    }

    #[test]
    fn dockerignore_excludes_files_and_keeps_exceptions() {
        let ctx = tempfile::tempdir().unwrap();
        fs::write(ctx.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        fs::write(
            ctx.path().join(".dockerignore"),
            "secret\nlogs\n!logs/keep.log\nDockerfile\n",
        )
        .unwrap();
        fs::write(ctx.path().join("secret"), "s").unwrap();
        fs::write(ctx.path().join("keep"), "k").unwrap();
        fs::create_dir(ctx.path().join("logs")).unwrap();
        fs::write(ctx.path().join("logs/a.log"), "a").unwrap();
        fs::write(ctx.path().join("logs/keep.log"), "b").unwrap();
        let mut packed = pack(
            &ContextSource::Dir(ctx.path().to_path_buf()),
            &DockerfileSource::Default,
            &mut io::empty(),
        )
        .unwrap();
        // The Dockerfile and .dockerignore are always sent (the daemon needs them).
        assert_eq!(
            names(&mut packed),
            vec![".dockerignore", "Dockerfile", "keep", "logs/keep.log"]
        );
    }

    #[test]
    fn missing_context_is_named() {
        let err = pack(
            &ContextSource::Dir(PathBuf::from("/nonexistent/ctx")),
            &DockerfileSource::Default,
            &mut io::empty(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("/nonexistent/ctx"), "{err}");
    }

    #[test]
    fn stdin_archive_is_passed_through() {
        let mut data: Vec<u8> = Vec::new();
        {
            let mut b = tar::Builder::new(&mut data);
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            h.set_mode(0o644);
            b.append_data(&mut h, "Dockerfile", &b"abc"[..]).unwrap();
            b.finish().unwrap();
        }
        let mut packed = pack(
            &ContextSource::Stdin,
            &DockerfileSource::Default,
            &mut data.as_slice(),
        )
        .unwrap();
        assert_eq!(packed.dockerfile, "Dockerfile");
        assert_eq!(names(&mut packed), vec!["Dockerfile".to_string()]);
    }
}
