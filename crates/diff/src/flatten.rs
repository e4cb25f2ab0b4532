//! Layers applied in order into a map of path → file metadata, with OCI whiteout semantics:
//! `.wh.NAME` removes NAME (and what is below it), `.wh..wh..opq` hides everything below its
//! directory that came from lower layers, a non-directory replaces a directory with its
//! subtree, directories merge.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// What a file in the flattened filesystem is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileMeta {
    /// file, dir, symlink, char, block, fifo.
    pub kind: &'static str,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    /// `sha256:<hex>` of a regular file's content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdev: Option<(u32, u32)>,
    /// Names and hex values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    pub mtime: i64,
    /// The other paths of this file's hard-link group, sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hardlinks: Vec<String>,
    /// The path this entry was a hard link to, while layers are applied.
    #[serde(skip)]
    link_to: Option<String>,
}

/// The flattened filesystem: absolute paths (`/` for the root).
#[derive(Debug, Clone, Default)]
pub struct Filesystem {
    pub files: BTreeMap<String, FileMeta>,
    /// Each layer's entries as recorded (whiteouts as kind `whiteout`, opaque markers as
    /// `opaque`, hard links as `hardlink` with their target in `link`).
    pub layers: Vec<BTreeMap<String, FileMeta>>,
}

fn marker(kind: &'static str) -> FileMeta {
    FileMeta {
        kind,
        mode: 0,
        uid: 0,
        gid: 0,
        size: 0,
        sha256: None,
        link: None,
        rdev: None,
        xattrs: BTreeMap::new(),
        mtime: 0,
        hardlinks: Vec::new(),
        link_to: None,
    }
}

/// `./a/b/`, `a/b`, `/a/b` → `/a/b`; `.`/`./` → `/`. `..` components are refused.
fn normalise(raw: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("the entry {raw:?} leaves the root")),
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

fn parent_and_name(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

fn under(path: &str, dir: &str) -> bool {
    if dir == "/" {
        path != "/"
    } else {
        path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
    }
}

impl Filesystem {
    fn remove_tree(&mut self, path: &str) {
        self.files.remove(path);
        let below: Vec<String> = self
            .files
            .range(format!("{path}/")..)
            .take_while(|(p, _)| under(p, path))
            .map(|(p, _)| p.clone())
            .collect();
        for p in below {
            self.files.remove(&p);
        }
    }

    /// Applies one uncompressed layer tar.
    pub fn apply(&mut self, layer: impl Read) -> Result<(), String> {
        let mut archive = tar::Archive::new(layer);
        let mut added: BTreeSet<String> = BTreeSet::new();
        let mut recorded: BTreeMap<String, FileMeta> = BTreeMap::new();
        let entries = archive.entries().map_err(|e| e.to_string())?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("reading an entry: {e}"))?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = normalise(&raw)?;
            let (parent, name) = parent_and_name(&path);
            if name == OPAQUE {
                let hidden: Vec<String> = self
                    .files
                    .keys()
                    .filter(|p| under(p, parent) && !added.contains(*p))
                    .cloned()
                    .collect();
                for p in hidden {
                    self.files.remove(&p);
                }
                recorded.insert(path.clone(), marker("opaque"));
                continue;
            }
            if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
                let victim = if parent == "/" {
                    format!("/{target}")
                } else {
                    format!("{parent}/{target}")
                };
                self.remove_tree(&victim);
                recorded.insert(path.clone(), marker("whiteout"));
                continue;
            }
            let header = entry.header();
            let kind = match header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => "file",
                tar::EntryType::Directory => "dir",
                tar::EntryType::Symlink => "symlink",
                tar::EntryType::Link => "hardlink",
                tar::EntryType::Char => "char",
                tar::EntryType::Block => "block",
                tar::EntryType::Fifo => "fifo",
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
                other => return Err(format!("{raw:?}: unsupported entry type {other:?}")),
            };
            // A field left blank (all NUL or spaces) reads as 0, as Go's archive/tar does.
            let field = |what: &str, bytes: &[u8], value: std::io::Result<u64>| match value {
                Err(_) if bytes.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
                r => r.map_err(|e| format!("{raw:?}: the {what} field: {e}")),
            };
            let old = header.as_old();
            let mode = field("mode", &old.mode, header.mode().map(u64::from))? as u32 & 0o7777;
            let uid = field("uid", &old.uid, header.uid())?;
            let gid = field("gid", &old.gid, header.gid())?;
            let mut mtime = field("mtime", &old.mtime, header.mtime())? as i64;
            let rdev = match kind {
                "char" | "block" => Some((
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                )),
                _ => None,
            };
            let link_name = entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned());
            let mut xattrs = BTreeMap::new();
            if let Ok(Some(pax)) = entry.pax_extensions() {
                for ext in pax.flatten() {
                    let Ok(key) = ext.key() else { continue };
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        xattrs.insert(name.to_string(), hex::encode(ext.value_bytes()));
                    } else if key == "mtime" {
                        if let Some(secs) = ext
                            .value()
                            .ok()
                            .and_then(|v| v.split('.').next())
                            .and_then(|v| v.parse::<i64>().ok())
                        {
                            mtime = secs;
                        }
                    }
                }
            }
            // A non-directory replaces whatever was there, subtree included.
            let existing_dir = self.files.get(&path).is_some_and(|f| f.kind == "dir");
            if kind != "dir" && existing_dir {
                self.remove_tree(&path);
            }
            let mut meta = FileMeta {
                kind,
                mode,
                uid,
                gid,
                size: 0,
                sha256: None,
                link: None,
                rdev,
                xattrs,
                mtime,
                hardlinks: Vec::new(),
                link_to: None,
            };
            match kind {
                "file" => {
                    let mut hasher = Sha256::new();
                    let size = std::io::copy(&mut entry, &mut hasher)
                        .map_err(|e| format!("{raw:?}: reading the content: {e}"))?;
                    meta.size = size;
                    meta.sha256 = Some(format!("sha256:{}", hex::encode(hasher.finalize())));
                }
                "symlink" => meta.link = link_name,
                "hardlink" => {
                    let target = normalise(&link_name.unwrap_or_default())?;
                    let mut entry_meta = meta.clone();
                    entry_meta.link = Some(target.clone());
                    recorded.insert(path.clone(), entry_meta);
                    let Some(found) = self.files.get(&target).cloned() else {
                        return Err(format!(
                            "{raw:?} is a hard link to {target:?}, which is not there"
                        ));
                    };
                    // The link is the target's file: its content and metadata.
                    meta = FileMeta {
                        link_to: Some(found.link_to.clone().unwrap_or(target)),
                        ..found
                    };
                }
                _ => {}
            }
            if kind != "hardlink" {
                recorded.insert(path.clone(), meta.clone());
            }
            self.files.insert(path.clone(), meta);
            added.insert(path);
        }
        self.layers.push(recorded);
        Ok(())
    }

    /// Turns the hard links recorded while applying into groups: each member lists the others.
    pub fn resolve_hardlinks(&mut self) {
        let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (path, meta) in &self.files {
            if let Some(target) = &meta.link_to {
                if self.files.contains_key(target) {
                    let group = groups.entry(target.clone()).or_default();
                    group.insert(target.clone());
                    group.insert(path.clone());
                }
            }
        }
        for members in groups.values() {
            for member in members {
                if let Some(meta) = self.files.get_mut(member) {
                    meta.hardlinks = members.iter().filter(|m| *m != member).cloned().collect();
                }
            }
        }
        for meta in self.files.values_mut() {
            meta.link_to = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            header.set_mtime(1);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_opaque_dirs_and_hardlinks() {
        use tar::EntryType::*;
        let mut fs = Filesystem::default();
        fs.apply(
            &layer(&[
                ("a/", Directory, b"", None),
                ("a/old", Regular, b"old", None),
                ("a/keep", Regular, b"keep", None),
                ("b/", Directory, b"", None),
                ("b/x", Regular, b"x", None),
                ("gone", Regular, b"g", None),
            ])[..],
        )
        .unwrap();
        fs.apply(
            &layer(&[
                ("a/.wh..wh..opq", Regular, b"", None),
                ("a/new", Regular, b"new", None),
                (".wh.gone", Regular, b"", None),
                ("b", Regular, b"file now", None),
                ("a/link", Link, b"", Some("a/new")),
            ])[..],
        )
        .unwrap();
        fs.resolve_hardlinks();
        let paths: Vec<&str> = fs.files.keys().map(String::as_str).collect();
        assert_eq!(paths, ["/a", "/a/link", "/a/new", "/b"]);
        assert_eq!(fs.files["/b"].kind, "file");
        assert_eq!(fs.files["/a/link"].sha256, fs.files["/a/new"].sha256);
        assert_eq!(fs.files["/a/link"].hardlinks, ["/a/new"]);
        assert_eq!(fs.files["/a/new"].hardlinks, ["/a/link"]);
        assert_eq!(fs.layers.len(), 2);
        let kinds: Vec<(&str, &str)> = fs.layers[1]
            .iter()
            .map(|(p, m)| (p.as_str(), m.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("/.wh.gone", "whiteout"),
                ("/a/.wh..wh..opq", "opaque"),
                ("/a/link", "hardlink"),
                ("/a/new", "file"),
                ("/b", "file")
            ]
        );
        assert_eq!(fs.layers[1]["/a/link"].link.as_deref(), Some("/a/new"));
    }

    #[test]
    fn entries_leaving_the_root_are_refused() {
        // tar::Builder refuses such names: write the header by hand.
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..4].copy_from_slice(b"../x");
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(0);
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 1024]);
        let mut fs = Filesystem::default();
        let err = fs.apply(&bytes[..]).unwrap_err();
        assert!(err.contains("leaves the root"), "{err}");
    }
}
