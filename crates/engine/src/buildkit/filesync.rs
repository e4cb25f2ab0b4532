//! The session's `moby.filesync.v1.FileSync/DiffCopy`: the daemon asks for a directory by
//! name (`context`, `dockerfile`), rbuild sends one `Stat` per entry in walk order, then the
//! contents of the files the daemon requests by index (fsutil's send protocol, as the
//! Docker CLI serves it). The context's `.dockerignore` is applied here, as the CLI does.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::proto::Stat;
use crate::ignore_rules::IgnoreRules;

/// A directory the daemon may sync.
pub enum SyncedDir {
    /// A directory on disk, with the context's exclusion rules (none for the Dockerfile's).
    Disk {
        root: PathBuf,
        rules: Option<IgnoreRules>,
    },
    /// One file held in memory (a Dockerfile read from standard input).
    Memory { name: String, data: Vec<u8> },
}

impl std::fmt::Debug for SyncedDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncedDir::Disk { root, .. } => write!(f, "Disk({})", root.display()),
            SyncedDir::Memory { name, .. } => write!(f, "Memory({name})"),
        }
    }
}

/// One entry to send, and where its contents come from.
pub struct Entry {
    pub stat: Stat,
    pub source: Option<Source>,
}

/// The contents of a regular file.
pub enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// Go's `os.FileMode` type bits.
const MODE_DIR: u32 = 1 << 31;
const MODE_SYMLINK: u32 = 1 << 27;
const MODE_SETUID: u32 = 1 << 23;
const MODE_SETGID: u32 = 1 << 22;
const MODE_STICKY: u32 = 1 << 20;

fn go_mode(meta: &fs::Metadata) -> Option<u32> {
    let ft = meta.file_type();
    let unix = meta.mode();
    let mut mode = unix & 0o777;
    if unix & 0o4000 != 0 {
        mode |= MODE_SETUID;
    }
    if unix & 0o2000 != 0 {
        mode |= MODE_SETGID;
    }
    if unix & 0o1000 != 0 {
        mode |= MODE_STICKY;
    }
    if ft.is_dir() {
        Some(mode | MODE_DIR)
    } else if ft.is_symlink() {
        Some(mode | MODE_SYMLINK)
    } else if ft.is_file() {
        Some(mode)
    } else {
        // Sockets, fifos and devices are not sent (nor are they in a tar context).
        None
    }
}

/// Whether `path` (or a directory on the way to it) is selected by the daemon's include
/// paths; `partial` when only a parent of an included path (walk into it, send it).
fn included(includes: &[String], path: &str) -> Option<bool> {
    if includes.is_empty() {
        return Some(false);
    }
    let mut selected = None;
    for pattern in includes {
        let pattern = pattern.trim_matches('/');
        if pattern == path || path.starts_with(&format!("{pattern}/")) || pattern.is_empty() {
            return Some(false);
        }
        if pattern.starts_with(&format!("{path}/")) {
            selected = Some(true);
        }
    }
    selected
}

/// The entries of `dir` the daemon asked for, in fsutil's walk order (names sorted within a
/// directory, a directory before its contents).
pub fn entries(dir: &SyncedDir, includes: &[String], follow: &[String]) -> Result<Vec<Entry>> {
    match dir {
        SyncedDir::Memory { name, data } => {
            let wanted = (includes.is_empty() && follow.is_empty())
                || includes
                    .iter()
                    .chain(follow)
                    .any(|p| p.trim_matches('/') == name);
            Ok(if wanted {
                vec![Entry {
                    stat: Stat {
                        path: name.clone(),
                        mode: 0o644,
                        size: data.len() as i64,
                        // Now, so that BuildKit's copy of an earlier Dockerfile of the same
                        // size is never taken for this one.
                        mod_time: std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
                        ..Default::default()
                    },
                    source: Some(Source::Bytes(data.clone())),
                }]
            } else {
                Vec::new()
            })
        }
        SyncedDir::Disk { root, rules } => {
            let mut includes = includes.to_vec();
            for path in follow {
                includes.push(path.trim_matches('/').to_string());
                // A followed symlink brings its target (inside the directory) along.
                if let Ok(target) = fs::read_link(root.join(path)) {
                    let base = Path::new(path).parent().unwrap_or(Path::new(""));
                    let joined = base.join(target);
                    let text = joined.to_string_lossy().trim_start_matches('/').to_string();
                    if !text.split('/').any(|c| c == "..") {
                        includes.push(text);
                    }
                }
            }
            let mut walker = Walker {
                rules: rules.as_ref(),
                includes: &includes,
                seen_inodes: HashMap::new(),
                excluded_parents: Vec::new(),
                out: Vec::new(),
            };
            walker.walk(root, "")?;
            Ok(walker.out)
        }
    }
}

struct Walker<'a> {
    rules: Option<&'a IgnoreRules>,
    includes: &'a [String],
    seen_inodes: HashMap<(u64, u64), String>,
    /// Excluded directories being walked for re-included entries: sent (as fsutil does) only
    /// once an entry below them is, so that every entry's parent precedes it.
    excluded_parents: Vec<(PathBuf, String, fs::Metadata)>,
    out: Vec<Entry>,
}

impl Walker<'_> {
    fn walk(&mut self, dir: &Path, rel_dir: &str) -> Result<()> {
        let mut names: Vec<(Vec<u8>, PathBuf)> = fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .map(|e| {
                let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
                Ok((e.file_name().into_encoded_bytes(), e.path()))
            })
            .collect::<Result<_>>()?;
        names.sort();
        for (name, path) in names {
            let Ok(name) = String::from_utf8(name) else {
                bail!("{} has a name that is not UTF-8", path.display());
            };
            let rel = if rel_dir.is_empty() {
                name
            } else {
                format!("{rel_dir}/{name}")
            };
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("cannot stat {}", path.display()))?;
            let Some(partial) = included(self.includes, &rel) else {
                continue;
            };
            let excluded = self.rules.is_some_and(|r| r.excludes(&rel));
            if meta.is_dir() {
                if excluded && self.rules.is_some_and(|r| r.can_skip_dir(&rel)) {
                    continue;
                }
                if excluded {
                    self.excluded_parents
                        .push((path.clone(), rel.clone(), meta));
                    let depth = self.excluded_parents.len();
                    self.walk(&path, &rel)?;
                    self.excluded_parents.truncate(depth - 1);
                } else {
                    self.push(&path, &rel, &meta)?;
                    self.walk(&path, &rel)?;
                }
            } else if !excluded && !partial {
                self.push(&path, &rel, &meta)?;
            }
        }
        Ok(())
    }

    fn push(&mut self, path: &Path, rel: &str, meta: &fs::Metadata) -> Result<()> {
        for (parent, parent_rel, parent_meta) in std::mem::take(&mut self.excluded_parents) {
            push(
                &parent,
                &parent_rel,
                &parent_meta,
                &mut self.seen_inodes,
                &mut self.out,
            )?;
        }
        push(path, rel, meta, &mut self.seen_inodes, &mut self.out)
    }
}

fn push(
    path: &Path,
    rel: &str,
    meta: &fs::Metadata,
    seen_inodes: &mut HashMap<(u64, u64), String>,
    out: &mut Vec<Entry>,
) -> Result<()> {
    let Some(mode) = go_mode(meta) else {
        return Ok(());
    };
    let mut stat = Stat {
        path: rel.to_string(),
        mode,
        // Context files belong to root inside the build, as the Docker CLI maps them.
        uid: 0,
        gid: 0,
        size: 0,
        mod_time: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
        ..Default::default()
    };
    if let Ok(names) = xattr::list(path) {
        for name in names {
            if let (Some(key), Ok(Some(value))) = (name.to_str(), xattr::get(path, &name)) {
                stat.xattrs.insert(key.to_string(), value);
            }
        }
    }
    let mut source = None;
    if meta.file_type().is_symlink() {
        stat.linkname = fs::read_link(path)
            .with_context(|| format!("cannot read the link {}", path.display()))?
            .to_string_lossy()
            .into_owned();
    } else if meta.is_file() {
        let key = (meta.dev(), meta.ino());
        match seen_inodes.get(&key) {
            // A hard link to an entry already sent: fsutil sends the first path as its link.
            Some(first) if meta.nlink() > 1 => stat.linkname = first.clone(),
            _ => {
                if meta.nlink() > 1 {
                    seen_inodes.insert(key, rel.to_string());
                }
                stat.size = meta.len() as i64;
                source = Some(Source::File(path.to_path_buf()));
            }
        }
    }
    out.push(Entry { stat, source });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.stat.path.as_str()).collect()
    }

    #[test]
    fn walk_order_includes_and_excludes_follow_fsutil() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("a/x", "1"),
            ("a-b", "2"),
            ("Dockerfile", "FROM scratch\n"),
            ("skip.log", "3"),
        ] {
            let path = dir.path().join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        fs::write(dir.path().join(".dockerignore"), "*.log\n").unwrap();
        let rules = IgnoreRules::load(dir.path(), None).unwrap();
        let synced = SyncedDir::Disk {
            root: dir.path().to_path_buf(),
            rules: Some(rules),
        };
        let all = entries(&synced, &[], &[]).unwrap();
        assert_eq!(
            paths(&all),
            [".dockerignore", "Dockerfile", "a", "a/x", "a-b"]
        );
        assert_eq!(all[3].stat.mode, 0o644);
        assert_eq!(all[2].stat.mode & MODE_DIR, MODE_DIR);
        assert_eq!(all[3].stat.size, 1);
        let only = entries(&synced, &[], &["Dockerfile".into()]).unwrap();
        assert_eq!(paths(&only), ["Dockerfile"]);
        let nested = entries(&synced, &["a/x".into()], &[]).unwrap();
        assert_eq!(paths(&nested), ["a", "a/x"]);
    }

    #[test]
    fn an_excluded_directory_is_sent_before_an_entry_re_included_below_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("logs/deep")).unwrap();
        fs::write(dir.path().join("logs/a.log"), "a").unwrap();
        fs::write(dir.path().join("logs/deep/keep.log"), "k").unwrap();
        fs::write(dir.path().join("z"), "z").unwrap();
        fs::write(
            dir.path().join(".dockerignore"),
            "logs\n!logs/deep/keep.log\n",
        )
        .unwrap();
        let synced = SyncedDir::Disk {
            root: dir.path().to_path_buf(),
            rules: Some(IgnoreRules::load(dir.path(), None).unwrap()),
        };
        let got = entries(&synced, &[], &[]).unwrap();
        assert_eq!(
            paths(&got),
            [
                ".dockerignore",
                "logs",
                "logs/deep",
                "logs/deep/keep.log",
                "z"
            ]
        );
    }

    #[test]
    fn links_out_of_the_directory_are_sent_as_links_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../etc/shadow", dir.path().join("up")).unwrap();
        let synced = SyncedDir::Disk {
            root: dir.path().to_path_buf(),
            rules: None,
        };
        let got = entries(&synced, &[], &[]).unwrap();
        assert_eq!(paths(&got), ["abs", "up"]);
        for entry in &got {
            assert_eq!(entry.stat.mode & MODE_SYMLINK, MODE_SYMLINK);
            assert!(entry.source.is_none(), "a link has no contents to request");
        }
        assert_eq!(got[0].stat.linkname, "/etc/passwd");
        // Following a link that climbs out adds nothing beyond the link itself.
        let followed = entries(&synced, &[], &["up".into()]).unwrap();
        assert_eq!(paths(&followed), ["up"]);
        assert!(followed[0].source.is_none());
    }

    #[test]
    fn an_inline_dockerfile_is_one_file() {
        let synced = SyncedDir::Memory {
            name: "Dockerfile".into(),
            data: b"FROM scratch\n".to_vec(),
        };
        let got = entries(
            &synced,
            &[],
            &["Dockerfile".into(), "Dockerfile.dockerignore".into()],
        )
        .unwrap();
        assert_eq!(paths(&got), ["Dockerfile"]);
        assert_eq!(got[0].stat.size, 13);
    }
}
