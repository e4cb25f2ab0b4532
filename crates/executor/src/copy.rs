//! COPY and ADD: sources from the context (after `.dockerignore`), another stage or an
//! image, and for ADD http(s) downloads and git repositories; wildcards; directory-contents
//! semantics; `--chown`/`--chmod` (octal or symbolic); `--exclude`; `--parents`; `--link`;
//! ADD's archive auto-extraction. Everything is written inside the stage's rootfs only.

use std::io::Read;
use std::path::{Path, PathBuf};

use rbuild_image::Digest;
use rbuild_layer::apply_layer;

use crate::chmod::Chmod;
use crate::context::{BuildContext, Origin};
use crate::copy_spec::{check_checksum, CopySpec};
use crate::downloads::{self, GitRef};
use crate::error::{BuildError, Result};
use crate::fsops::{self, Ownership};
use crate::sources::{CopyFilters, Source, SourceRoot};
use crate::state::StageState;

/// A rootless build can only give files to ids its user namespace maps: container root
/// alone without subordinate ids, root and the subordinate ranges with them.
fn check_rootless_chown(
    owners: &fsops::Owners,
    name: &str,
    spec: &str,
    (uid, gid): (u32, u32),
) -> Result<()> {
    match owners.cannot_own(uid, gid) {
        None => Ok(()),
        Some(why) => Err(BuildError::other(format!("{name} --chown={spec}: {why}"))),
    }
}

/// A local file ADD unpacks: gzip, zstd or plain tar, or a bzip2- or xz-compressed tar
/// (by content, not name).
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
        || crate::add_archive::is_compressed_tar(head, path)
}

/// Where one COPY/ADD writes: the stage's rootfs, or for `--link` an empty directory that
/// becomes the layer on its own.
struct Target<'t> {
    root: &'t Path,
    /// The destination as a container path (made absolute against WORKDIR).
    dest: String,
    /// The destination names a directory (ends with `/` or `/.`). Otherwise it is one
    /// when it is a directory by the time a source is copied (see [`Target::leaf`]).
    dest_is_dir: bool,
    own: Ownership,
    /// Owner of directories the copy creates.
    dir_owner: (u32, u32),
    /// How the build gives files their owners.
    owners: &'t fsops::Owners,
}

impl Target<'_> {
    /// The host path a single non-directory named `name` is written to. BuildKit copies
    /// each source, and each match of a wildcard, on its own (fsutil's
    /// `prepareTargetDir`): into the destination when it names a directory or is one at
    /// that moment, else onto it, so a later file replaces an earlier one.
    fn leaf(&self, name: &str) -> Result<PathBuf> {
        let into_dir = self.dest_is_dir || fsops::is_dir_in_root(self.root, &self.dest);
        let (parent, file_name) = if into_dir {
            (self.dest.clone(), name.to_string())
        } else {
            split_dest(&self.dest)
        };
        Ok(self.ensure_dir(&parent)?.join(file_name))
    }

    /// The destination directory (created).
    fn dir(&self) -> Result<PathBuf> {
        self.ensure_dir(&self.dest)
    }

    /// `container_path` as a directory, created if missing: owned like the copied files,
    /// with the octal `--chmod` as mode if there is one (BuildKit), else 0755.
    fn ensure_dir(&self, container_path: &str) -> Result<PathBuf> {
        let mode = Chmod::created_dir_mode(self.own.mode.as_ref());
        let mut missing = Vec::new();
        if mode != 0o755 {
            let mut prefix = String::new();
            for comp in fsops::clean_components(container_path) {
                prefix.push('/');
                prefix.push_str(&comp);
                if !missing.is_empty() || !fsops::is_dir_in_root(self.root, &prefix) {
                    missing.push(prefix.clone());
                }
            }
        }
        if let (fsops::Owners::Recorded(_), Some(first)) = (self.owners, missing.first()) {
            if mode & 0o700 != 0o700 {
                // As for a copied directory (`fsops::apply_meta`): the build user owns it on
                // the disk without CAP_DAC_OVERRIDE, so nothing could be copied into it nor
                // read back for the layer. Keeping the mode aside instead (as owners are)
                // would go stale: a later step's `chmod` of it is not seen.
                return Err(BuildError::other(format!(
                    "directory {first} would be created with mode {mode:04o} (--chmod), which \
                     keeps its owner from reading, writing or searching it: the restricted \
                     isolation writes and reads a stage's files as the build user, whose own \
                     modes bind it (BuildKit, as root, gives the directory that mode)"
                )));
            }
        }
        let host = fsops::ensure_dir(self.owners, self.root, container_path, self.dir_owner)?;
        for created in &missing {
            if let Ok(Some(path)) = rbuild_inroot::host_path_in_root(self.root, created) {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(BuildError::io("chmod of", created))?;
            }
        }
        Ok(host)
    }
}

/// Copies one `COPY --from` source as [`BuildContext::dispatch_copy`] does, in the
/// container-root helper (there this process is root, so files are written and owned
/// directly).
pub(crate) fn copy_from_task(input: &rbuild_rootfs::CopyFrom) -> Result<()> {
    let filters = CopyFilters::new(&input.exclude)?;
    let mode = match &input.chmod {
        Some(text) => Some(Chmod::parse(text)?),
        None => None,
    };
    let target = Target {
        root: &input.root,
        dest: input.dest.clone(),
        dest_is_dir: input.dest_is_dir,
        own: Ownership {
            owner: input.owner,
            mode,
        },
        dir_owner: input.dir_owner,
        // Container root of the build's namespace: files are written and owned directly.
        owners: &fsops::Owners::of_process(),
    };
    let root = SourceRoot::Rootfs(&input.from);
    for (source, filters) in &root.copy_sources(&input.src, input.parents, &filters)? {
        copy_source(&root, source, &target, filters, false)?;
    }
    Ok(())
}

impl BuildContext<'_> {
    /// The COPY/ADD itself, on the stage's rootfs, or with `view` (the parent's tree, only
    /// read) into an empty tree of stand-ins; when the stand-ins cannot stand for the
    /// parent (`copy_skeleton::NoSkeleton`), again on the stage's rootfs.
    pub(crate) fn copy_step(
        &self,
        st: &mut StageState,
        origin: &Origin<'_>,
        spec: &CopySpec,
        view: Option<&Path>,
        progress: &mut dyn crate::progress::Progress,
    ) -> Result<u64> {
        // The parent's files as the step sees them (its /etc/passwd for --chown names).
        let parent_root = view.map_or_else(|| st.rootfs.clone(), Path::to_path_buf);
        let name = if spec.is_add { "ADD" } else { "COPY" };
        let chmod = match &spec.chmod {
            Some(text) => Some(Chmod::parse(text).map_err(|e| origin.error(e))?),
            None => None,
        };
        spec.check().map_err(|e| origin.error(e))?;
        let checksum = check_checksum(spec).map_err(|e| origin.error(e))?;
        let filters = CopyFilters::new(&spec.exclude).map_err(|e| origin.error(e))?;
        let owner = match &spec.chown {
            Some(c) if spec.link && spec.chmod.is_none() => {
                // A linked copy is a file operation on an empty tree: BuildKit's solver has
                // no /etc/passwd or /etc/group to read a name in, and fails.
                let names = crate::fileop_user::names_in(c);
                if let Some(first) = names.first() {
                    return Err(origin.error(format!(
                        "{name} --link --chown={c}: the name {first:?} cannot be resolved in a                          linked copy (made in an empty tree, with no /etc/passwd or                          /etc/group; BuildKit fails with \"invalid user index: -1\"); give                          numeric ids"
                    )));
                }
                let owner = crate::fileop_user::file_op_owner(&parent_root, c)
                    .map_err(|e| origin.error(format!("--chown={c}: {e}")))?;
                let ids = owner.ids();
                check_rootless_chown(&self.owners, name, c, ids).map_err(|e| origin.error(e))?;
                Some(ids)
            }
            Some(c) => {
                // `llb.WithUser(cfg.chown)`, resolved as BuildKit's file operations do:
                // `root` and ids need no passwd, a user id alone is also the group id, a
                // name no file lists is 0 (with a warning here).
                let owner = crate::fileop_user::file_op_owner(&parent_root, c)
                    .map_err(|e| origin.error(format!("--chown={c}: {e}")))?;
                if let Some(message) = owner.warning(&format!("{name} --chown={c}")) {
                    progress.event(&crate::progress::Event::Warning { message });
                }
                let ids = owner.ids();
                check_rootless_chown(&self.owners, name, c, ids).map_err(|e| origin.error(e))?;
                Some(ids)
            }
            // Files from the context or a download belong to root; from a stage or image
            // they keep their owners (BuildKit).
            None if spec.from.is_none() => Some((0, 0)),
            None => None,
        };
        let own = Ownership { owner, mode: chmod };
        let from_root = match &spec.from {
            Some(from) => Some(
                self.root_of_from(st.index, from)
                    .map_err(|e| origin.error(format!("--from={from}: {e}")))?,
            ),
            None => None,
        };
        // BuildKit links (copies into an empty tree merged on top) only without --chmod.
        let link = spec.link && spec.chmod.is_none();
        let out = if link {
            self.dir.new_dir("link")?
        } else if view.is_some() {
            self.dir.new_dir("copy")?
        } else {
            st.rootfs.clone()
        };
        let mut skeleton = view.map(|view| crate::copy_skeleton::Skeleton::new(view, &out));
        let dest = fsops::join_container(&st.workdir(), &spec.dest);
        // No "more than one source" error: that was the legacy builder's; BuildKit's
        // frontend has none, and copies source by source (`Target::leaf`).
        let dest_says_dir =
            spec.dest.ends_with('/') || spec.dest == "." || spec.dest.ends_with("/.");
        let target = Target {
            root: &out,
            dest,
            dest_is_dir: dest_says_dir,
            own,
            dir_owner: owner.unwrap_or((0, 0)),
            owners: &self.owners,
        };

        // With stand-ins, the walk's "before" is theirs, made as the copy goes.
        let before = match skeleton {
            Some(_) => None,
            None => Some(self.scan(&out).map_err(|e| origin.error(e))?),
        };
        let fail = |e: BuildError| origin.error(format!("{name} failed: {e}"));
        // Stand-ins that cannot stand for the parent: the copy runs again on the full
        // rootfs (what it wrote so far is in its own directory, removed with the build's).
        let stand_in =
            |skeleton: &mut Option<crate::copy_skeleton::Skeleton<'_>>,
             prepare: &dyn Fn(
                &mut crate::copy_skeleton::Skeleton<'_>,
            )
                -> std::result::Result<(), crate::copy_skeleton::NoSkeleton>| {
                let _t = crate::phases::Phase::Snapshot.timer();
                skeleton.as_mut().is_none_or(|s| prepare(s).is_ok())
            };
        for src in &spec.sources {
            if spec.is_add {
                if let Some(git) = downloads::parse_git_ref(src) {
                    self.add_git(spec, &git, &target, &filters).map_err(fail)?;
                    continue;
                }
                if downloads::is_http_source(src) {
                    self.add_http(spec, src, checksum.as_ref(), &target)
                        .map_err(fail)?;
                    continue;
                }
            }
            if let (Some(from), Some(container_root)) = (&from_root, self.owners.container_root()) {
                // Rootless with subordinate ids: another stage's files may sit in
                // directories only their container owner can read; container root copies.
                let task = rbuild_rootfs::CopyFrom {
                    from: from.clone(),
                    src: src.clone(),
                    parents: spec.parents,
                    exclude: spec.exclude.clone(),
                    root: out.clone(),
                    dest: target.dest.clone(),
                    dest_is_dir: target.dest_is_dir,
                    owner,
                    chmod: spec.chmod.clone(),
                    dir_owner: target.dir_owner,
                };
                container_root
                    .copy_from(&task)
                    .map_err(|e| fail(BuildError::container_root("")(e)))?;
                continue;
            }
            let root = match &from_root {
                Some(r) => SourceRoot::Rootfs(r),
                None => SourceRoot::Context {
                    dir: &self.request.context_dir,
                    ignore: self.ignore.as_ref(),
                },
            };
            let found = root
                .copy_sources(src, spec.parents, &filters)
                .map_err(fail)?;
            let unpack =
                spec.is_add && spec.unpack.unwrap_or(true) && from_root.is_none() && !spec.parents;
            for (source, filters) in &found {
                if !stand_in(&mut skeleton, &|s| {
                    s.prepare_source(source, &target.dest, target.dest_is_dir)
                }) {
                    self.materialize(st)?;
                    return self.copy_step(st, origin, spec, None, progress);
                }
                copy_source(&root, source, &target, filters, unpack).map_err(fail)?;
            }
        }
        for inline in &spec.inline {
            if !stand_in(&mut skeleton, &|s| {
                s.prepare_leaf(&target.dest, target.dest_is_dir, &inline.path)
            }) {
                self.materialize(st)?;
                return self.copy_step(st, origin, spec, None, progress);
            }
            let path = target.leaf(&inline.path).map_err(fail)?;
            write_inline(&self.owners, &path, &inline.data, own).map_err(fail)?;
        }
        if let Some(skeleton) = skeleton {
            let changes = {
                let _t = crate::phases::Phase::Snapshot.timer();
                let after = rbuild_snapshot::walk(&out).map_err(BuildError::Snapshot)?;
                rbuild_snapshot::Index::from_entries(skeleton.into_before()).changes_to(&after)
            };
            let size = self
                .commit_changes(st, &out, &changes)
                .map_err(|e| origin.error(e))?;
            // The rootfs gets the layer when a later step needs the files (never after the
            // stage's last step), as a cache hit's.
            st.layer_off_rootfs = true;
            return Ok(size);
        }
        let Some(before) = before else {
            return Err(origin.error("the copy's walk of the rootfs is missing"));
        };
        let size = if link {
            let changes = before.changes(&out).map_err(|e| origin.error(e))?;
            let size = self
                .commit_changes(st, &out, &changes)
                .map_err(|e| origin.error(e))?;
            // The rootfs takes the layer as an image's next layer: what it replaces is
            // replaced (a symlink at the destination included), never followed.
            // commit_changes pushed this step's layer just above.
            let layer = st
                .layers
                .last()
                .cloned()
                .ok_or_else(|| origin.error("the step made no layer"))?;
            crate::build_dir::apply_layers(self.store, &self.owners, &[layer], &st.rootfs)?;
            size
        } else {
            self.commit(st, &before).map_err(|e| origin.error(e))?
        };
        // The history entry is added by the caller, `layer_step`, which adds the same
        // entry for a cache hit.
        Ok(size)
    }

    /// ADD of an http(s) URL: the memoised download, verified against `--checksum`,
    /// named after the URL's last path element; extracted only with `--unpack=true`.
    fn add_http(
        &self,
        spec: &CopySpec,
        url: &str,
        checksum: Option<&Digest>,
        target: &Target<'_>,
    ) -> Result<()> {
        let (path, digest) = crate::context::lock(&self.shared.fetcher).fetch(url)?;
        if let Some(want) = checksum {
            if &digest != want {
                return Err(BuildError::other(format!(
                    "digest mismatch for {}: {digest} (expected: {want})",
                    downloads::redact_url(url)
                )));
            }
        }
        if spec.unpack == Some(true) && is_archive(&path) {
            return extract(&path, target);
        }
        let leaf = target.leaf(&downloads::url_file_name(url))?;
        fsops::copy_leaf(target.owners, &path, &leaf, target.own)
    }

    /// ADD of a git repository: its tree (at `#ref` / `?ref=`, below `:subdir` /
    /// `?subdir=`) copied into the destination, without `.git` unless `--keep-git-dir` or
    /// `?keep-git-dir`.
    fn add_git(
        &self,
        spec: &CopySpec,
        git: &GitRef,
        target: &Target<'_>,
        filters: &CopyFilters,
    ) -> Result<()> {
        let checksum = git.checksum.as_ref().or(spec.checksum.as_ref());
        if let Some(want) = checksum {
            if want.is_empty() || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(BuildError::other(format!(
                    "invalid checksum {want} for Git URL, expected hex commit hash"
                )));
            }
        }
        let (checkout, commit) =
            crate::context::lock(&self.shared.fetcher).checkout_ref(git, spec.keep_git_dir)?;
        if let Some(want) = checksum {
            // BuildKit: the checksum is the commit id or a prefix of it.
            if !commit.starts_with(want.as_str()) {
                return Err(BuildError::other(format!(
                    "expected checksum to match {want}, got {commit}"
                )));
            }
        }
        let root = SourceRoot::Rootfs(&checkout);
        let sub = git.subdir.as_deref().unwrap_or("/");
        for source in root.expand(sub)? {
            copy_source(&root, &source, target, filters, false)?;
        }
        Ok(())
    }
}

/// Copies one expanded source: a directory's contents (filtered), an archive ADD
/// extracts, or a single file or symlink.
fn copy_source(
    root: &SourceRoot<'_>,
    source: &Source,
    target: &Target<'_>,
    filters: &CopyFilters,
    unpack: bool,
) -> Result<()> {
    let md = std::fs::metadata(&source.host).map_err(BuildError::io("", &source.host))?;
    if md.is_dir() {
        let dir = target.dir()?;
        let filter = root.filter_for(source, filters);
        fsops::copy_dir_contents(target.owners, &source.host, &dir, target.own, &filter)
    } else if unpack && is_archive(&source.host) {
        extract(&source.host, target)
    } else {
        fsops::copy_leaf(
            target.owners,
            &source.host,
            &target.leaf(&source.base_name())?,
            target.own,
        )
    }
}

/// Extracts an archive ADD unpacks into the destination directory. `--chown` gives every
/// extracted entry its owner (BuildKit passes it to the untar); `--chmod` does not apply
/// to archive contents in BuildKit either.
fn extract(archive: &Path, target: &Target<'_>) -> Result<()> {
    let dir = target.dir()?;
    // A bzip2 or xz tar: its plain tar, which the layer applier reads (it knows a layer's
    // compressions only).
    let plain_tar = crate::add_archive::plain_tar_of_compressed(archive)
        .map_err(BuildError::io("decompressing", archive))?;
    let open_file = || -> Result<std::fs::File> {
        match &plain_tar {
            Some(plain) => {
                let mut plain = plain.try_clone().map_err(BuildError::io("", archive))?;
                std::io::Seek::rewind(&mut plain).map_err(BuildError::io("", archive))?;
                Ok(plain)
            }
            None => std::fs::File::open(archive).map_err(BuildError::io("", archive)),
        }
    };
    let open = || open_file().map(std::io::BufReader::new);
    let extracting = format!("extracting {}", archive.display());
    match target.owners.container_root() {
        // Rootless with subordinate ids: container root keeps the archive's owners, as a
        // root build does.
        Some(root) => {
            let file = open_file()?;
            root.apply_layer(&file, &dir)
                .map_err(BuildError::container_root(extracting))?;
        }
        None => {
            apply_layer(
                open()?,
                &dir,
                &crate::build_dir::layer_apply_options(target.owners),
            )
            .map_err(BuildError::layer(extracting))?;
        }
    }
    let chown = target.own.owner.filter(|o| *o != (0, 0));
    // In place (restricted isolation) the extraction ran as the build user, owners ignored:
    // the archive's own owners are recorded, as the layer extraction records a layer's (a
    // root build's extraction keeps them on the disk).
    let archive_owners = matches!(target.owners, fsops::Owners::Recorded(_)) && chown.is_none();
    if chown.is_none() && !archive_owners {
        return Ok(());
    }
    let entries = rbuild_layer::list_entries(open()?)
        .map_err(BuildError::layer(format!("reading {}", archive.display())))?;
    for entry in entries {
        let rel = fsops::clean_components(&format!("/{}", entry.path.to_string_lossy()));
        let Some((leaf, parents)) = rel.split_last() else {
            continue;
        };
        if leaf.starts_with(".wh.") {
            continue;
        }
        let (uid, gid) = match chown {
            Some(owner) => owner,
            // Root's too: a later archive may rewrite a file an earlier one recorded
            // (`ADD *.tar`), and its record must not stay.
            None => match (u32::try_from(entry.uid), u32::try_from(entry.gid)) {
                (Ok(uid), Ok(gid)) => (uid, gid),
                // An id no container has: as the extraction left it.
                _ => continue,
            },
        };
        // The parent resolved inside the destination; the entry itself never followed.
        let parent = format!("/{}", parents.join("/"));
        let Ok(Some(host_parent)) = rbuild_inroot::host_path_in_root(&dir, &parent) else {
            continue;
        };
        let path = host_parent.join(leaf);
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if let Some(root) = target.owners.container_root() {
            // Rootless with subordinate ids: once chowned the entry is a mapped id's, which
            // the user cannot chmod; container root does both.
            let mode = (!md.file_type().is_symlink()).then(|| md.mode_bits());
            root.set_metadata(&path, Some((uid, gid)), mode, None)
                .map_err(BuildError::container_root(format!(
                    "chown of {} to {uid}:{gid}",
                    path.display()
                )))?;
            continue;
        }
        fsops::chown_in_build(target.owners, &path, uid, gid)?;
        if !md.file_type().is_symlink() {
            // chown cleared setuid/setgid: put the archive's bits back.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(md.mode_bits()))
                .map_err(BuildError::io("chmod of", &path))?;
        }
    }
    Ok(())
}

trait ModeBits {
    fn mode_bits(&self) -> u32;
}

impl ModeBits for std::fs::Metadata {
    fn mode_bits(&self) -> u32 {
        use std::os::unix::fs::MetadataExt;
        self.mode() & 0o7777
    }
}

/// `/a/b/c` → (`/a/b`, `c`).
pub(crate) fn split_dest(dest: &str) -> (String, String) {
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
fn write_inline(owners: &fsops::Owners, path: &Path, data: &str, own: Ownership) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if md.is_dir() {
            return Err(BuildError::other(format!(
                "{} is a directory",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(BuildError::io("replacing", path))?;
    }
    let mode = own.mode.map_or(0o644, |m| m.apply(0o644, false));
    if let Some(root) = owners.container_root() {
        // Rootless with subordinate ids: the destination may belong to a mapped id, so
        // container root writes it, from an unlinked temp file it is handed.
        let content = inline_temp_file(data)?;
        let (uid, gid) = own.owner.unwrap_or((0, 0));
        return root
            .copy_file(&content, path, Some((uid, gid)), Some(mode), None)
            .map_err(BuildError::container_root(format!(
                "creating {}",
                path.display()
            )));
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
        .map_err(BuildError::io("creating", path))?;
    std::io::Write::write_all(&mut f, data.as_bytes()).map_err(BuildError::io("writing", path))?;
    let (uid, gid) = own.owner.unwrap_or((0, 0));
    fsops::chown_in_build(owners, path, uid, gid)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(BuildError::io("chmod of", path))
}

/// `data` in an anonymous file (created in the temp directory and unlinked at once).
fn inline_temp_file(data: &str) -> Result<std::fs::File> {
    use std::io::{Seek, Write};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let path = std::env::temp_dir().join(format!("rbuild-heredoc-{}-{nanos}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(BuildError::io("creating", &path))?;
    let _ = std::fs::remove_file(&path);
    f.write_all(data.as_bytes())
        .and_then(|()| f.rewind())
        .map_err(BuildError::system("writing a heredoc source"))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under the restricted isolation a `COPY --chmod=600 d /dir-600/` would create the
    /// destination with a mode its owner (the build user) cannot write into: refused naming
    /// the directory and the mode before anything is created; a mode its owner may use
    /// creates it with that mode.
    #[test]
    fn restricted_copy_refuses_to_create_a_destination_its_owner_cannot_fill() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        std::fs::create_dir(&top).unwrap();
        let owners = fsops::Owners::Recorded(crate::in_place::InPlaceOwners::for_test(&top));
        let root = dir.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        let target = |dest: &str, mode: &str| Target {
            root: &root,
            dest: dest.into(),
            dest_is_dir: true,
            own: Ownership {
                owner: None,
                mode: Some(Chmod::parse(mode).unwrap()),
            },
            dir_owner: fsops::current_ids(),
            owners: &owners,
        };
        let error = target("/dir-600/", "600").dir().unwrap_err().to_string();
        assert!(
            error.contains("/dir-600") && error.contains("mode 0600"),
            "{error}"
        );
        assert!(!root.join("dir-600").exists());
        let made = target("/dir-700/sub/", "700").dir().unwrap();
        assert_eq!(made, root.join("dir-700/sub"));
        for created in ["dir-700", "dir-700/sub"] {
            let mode = std::fs::metadata(root.join(created))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, 0o700, "{created}");
        }
    }
}
