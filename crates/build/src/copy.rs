//! COPY and ADD: sources from the context (after `.dockerignore`), another stage or an
//! image; wildcards; directory-contents semantics; `--chown`/`--chmod`; ADD's local tar
//! auto-extraction. Everything is written inside the stage's rootfs only.

use std::io::Read;
use std::path::Path;

use rbuild_dockerfile::instructions::{Add, Copy, InlineSource};
use rbuild_layer::apply_layer;

use crate::error::Result;
use crate::fsops::{self, Ownership};
use crate::snapshot::Index;
use crate::sources::{Source, SourceRoot};
use crate::stage::{Builder, Origin, StageState};

/// What COPY and ADD have in common.
pub(crate) struct CopySpec {
    pub is_add: bool,
    pub sources: Vec<String>,
    pub inline: Vec<InlineSource>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub checksum: Option<String>,
    pub unpack: bool,
}

impl From<Copy> for CopySpec {
    fn from(c: Copy) -> Self {
        CopySpec {
            is_add: false,
            sources: c.sources,
            inline: c.inline_sources,
            dest: c.dest,
            from: c.from,
            chown: c.chown,
            chmod: c.chmod,
            parents: c.parents,
            exclude: c.exclude,
            checksum: None,
            unpack: false,
        }
    }
}

impl From<Add> for CopySpec {
    fn from(a: Add) -> Self {
        CopySpec {
            is_add: true,
            sources: a.sources,
            inline: a.inline_sources,
            dest: a.dest,
            from: None,
            chown: a.chown,
            chmod: a.chmod,
            parents: false,
            exclude: a.exclude,
            checksum: a.checksum,
            unpack: a.unpack.unwrap_or(true),
        }
    }
}

fn is_remote(src: &str) -> bool {
    let lower = src.to_ascii_lowercase();
    lower.starts_with("http://")
        || lower.starts_with("https://")
        || lower.starts_with("git@")
        || lower.starts_with("git://")
}

/// `--chown=user[:group]`: names resolved in the rootfs; a missing group means the same
/// numeric id as the user (Docker's documented rule).
fn resolve_chown(rootfs: &Path, spec: &str) -> std::result::Result<(u32, u32), String> {
    let ids =
        rbuild_sandbox::resolve_user(rootfs, spec).map_err(|e| format!("--chown={spec}: {e}"))?;
    if spec.contains(':') {
        Ok((ids.uid, ids.gid))
    } else {
        Ok((ids.uid, ids.uid))
    }
}

/// A rootless build only has container root (the user itself, in a single-id user
/// namespace): any other `--chown` owner would need subordinate ids, not mapped yet.
fn check_rootless_chown(
    name: &str,
    spec: &str,
    (uid, gid): (u32, u32),
) -> std::result::Result<(), String> {
    if fsops::running_as_root() || (uid, gid) == (0, 0) {
        return Ok(());
    }
    let id = if uid != 0 {
        format!("uid {uid}")
    } else {
        format!("gid {gid}")
    };
    Err(format!(
        "{name} --chown={spec}: rootless builds cannot give files to {id} yet \
         (run as root, or without --chown)"
    ))
}

/// A local file ADD unpacks: gzip, zstd or plain tar (by content, not name).
fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return false,
        }
    }
    let head = &head[..n];
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (head.len() >= 262 && &head[257..262] == b"ustar")
}

impl Builder<'_> {
    pub(crate) fn dispatch_copy(
        &mut self,
        st: &mut StageState,
        origin: &Origin<'_>,
        spec: &CopySpec,
    ) -> Result<u64> {
        let name = if spec.is_add { "ADD" } else { "COPY" };
        if spec.parents {
            return Err(origin.error("COPY --parents is not supported yet"));
        }
        if !spec.exclude.is_empty() {
            return Err(origin.error(format!("{name} --exclude is not supported yet")));
        }
        if spec.checksum.is_some() {
            return Err(origin.error("ADD --checksum is only valid for URL sources, and ADD from URL is not supported yet"));
        }
        if spec.is_add {
            if let Some(src) = spec.sources.iter().find(|s| is_remote(s)) {
                return Err(origin.error(format!("ADD from URL is not supported yet: {src}")));
            }
        }
        let own = Ownership {
            owner: match &spec.chown {
                Some(c) => {
                    let ids = resolve_chown(&st.rootfs, c).map_err(|e| origin.error(e))?;
                    check_rootless_chown(name, c, ids).map_err(|e| origin.error(e))?;
                    Some(ids)
                }
                // Files from the context belong to root; from a stage or image they keep
                // their owners (BuildKit).
                None if spec.from.is_none() => Some((0, 0)),
                None => None,
            },
            mode: match &spec.chmod {
                Some(m) => Some(
                    u32::from_str_radix(m, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            origin.error(format!(
                                "invalid --chmod={m}: only octal modes are supported"
                            ))
                        })?,
                ),
                None => None,
            },
        };
        let dir_owner = own.owner.unwrap_or((0, 0));
        let from_root = match &spec.from {
            Some(from) => Some(
                self.root_of_from(st.index, from)
                    .map_err(|e| origin.error(format!("--from={from}: {e}")))?,
            ),
            None => None,
        };
        let root = match &from_root {
            Some(r) => SourceRoot::Rootfs(r),
            None => SourceRoot::Context {
                dir: &self.request.context_dir,
                ignore: self.ignore.as_ref(),
            },
        };
        let mut sources: Vec<Source> = Vec::new();
        for src in &spec.sources {
            let found = root
                .expand(src)
                .map_err(|e| origin.error(format!("{name} failed: {e}")))?;
            sources.extend(found);
        }
        let count = spec.sources.len() + spec.inline.len();
        let dest = fsops::join_container(&st.workdir(), &spec.dest);
        let dest_says_dir =
            spec.dest.ends_with('/') || spec.dest == "." || spec.dest.ends_with("/.");
        if count > 1 && !dest_says_dir && !fsops::is_dir_in_root(&st.rootfs, &dest) {
            return Err(origin.error(format!(
                "When using {name} with more than one source file, the destination must be a directory and end with a /"
            )));
        }
        let dest_is_dir = count > 1 || dest_says_dir || fsops::is_dir_in_root(&st.rootfs, &dest);

        let before = Index::scan(&st.rootfs).map_err(|e| origin.error(e))?;
        let fail = |e: String| origin.error(format!("{name} failed: {e}"));
        for source in &sources {
            let md = std::fs::metadata(&source.host)
                .map_err(|e| fail(format!("{}: {e}", source.host.display())))?;
            if md.is_dir() {
                let target = fsops::ensure_dir(&st.rootfs, &dest, dir_owner).map_err(fail)?;
                let filter = root.filter_for(source);
                fsops::copy_dir_contents(&source.host, &target, own, &filter).map_err(fail)?;
            } else if spec.is_add && spec.unpack && from_root.is_none() && is_archive(&source.host)
            {
                if spec.chown.is_some() || spec.chmod.is_some() {
                    return Err(fail(
                        "--chown/--chmod on an extracted archive is not supported yet".into(),
                    ));
                }
                let target = fsops::ensure_dir(&st.rootfs, &dest, dir_owner).map_err(fail)?;
                let file = std::fs::File::open(&source.host)
                    .map_err(|e| fail(format!("{}: {e}", source.host.display())))?;
                apply_layer(
                    std::io::BufReader::new(file),
                    &target,
                    &crate::workdir::layer_apply_options(),
                )
                .map_err(|e| fail(format!("extracting {}: {e}", source.rel)))?;
            } else {
                let (parent, file_name) = if dest_is_dir {
                    (dest.clone(), source.base_name())
                } else {
                    split_dest(&dest)
                };
                let dir = fsops::ensure_dir(&st.rootfs, &parent, dir_owner).map_err(fail)?;
                fsops::copy_leaf(&source.host, &dir.join(&file_name), own).map_err(fail)?;
            }
        }
        for inline in &spec.inline {
            let (parent, file_name) = if dest_is_dir {
                (dest.clone(), inline.path.clone())
            } else {
                split_dest(&dest)
            };
            let dir = fsops::ensure_dir(&st.rootfs, &parent, dir_owner).map_err(fail)?;
            write_inline(&dir.join(&file_name), &inline.data, own).map_err(fail)?;
        }
        let size = self.commit(st, &before).map_err(|e| origin.error(e))?;
        let mut msg = String::from(name);
        for src in &spec.sources {
            msg.push_str(&format!(" {src}"));
        }
        for inline in &spec.inline {
            msg.push_str(&format!(" <<{}", inline.path));
        }
        msg.push_str(&format!(
            " {}{}",
            spec.dest,
            crate::history::BUILDKIT_SUFFIX
        ));
        self.add_history(st, msg, true);
        Ok(size)
    }
}

/// `/a/b/c` → (`/a/b`, `c`).
fn split_dest(dest: &str) -> (String, String) {
    match dest.rsplit_once('/') {
        Some((parent, name)) if !name.is_empty() => (
            if parent.is_empty() {
                "/".into()
            } else {
                parent.to_string()
            },
            name.to_string(),
        ),
        _ => ("/".into(), String::new()),
    }
}

/// A heredoc source: a new file (0644 unless --chmod), owned as COPY's files are.
fn write_inline(path: &Path, data: &str, own: Ownership) -> std::result::Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if md.is_dir() {
            return Err(format!("{} is a directory", path.display()));
        }
        std::fs::remove_file(path).map_err(|e| format!("replacing {}: {e}", path.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut f, data.as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    let (uid, gid) = own.owner.unwrap_or((0, 0));
    fsops::chown_in_build(path, uid, gid)?;
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(own.mode.unwrap_or(0o644)),
    )
    .map_err(|e| format!("chmod of {}: {e}", path.display()))
}
