//! Moving a stage's root filesystem into the builder's `/` for a RUN step and back, and
//! walking it there. Only renames: inodes (the ownership table's keys), modes and times stay.
//!
//! The *region* of a directory is what belongs to a stage: every entry except the excluded
//! paths, with the ancestors of excluded paths taken entry by entry (`/etc` stays, as it
//! holds the runtime's `/etc/hosts`; its other entries are the stage's).
//!
//! `/` itself is the runtime's (root's, mode 0755, under Docker and containerd whatever the
//! image says), so nothing can be created, renamed or removed directly in it: its
//! directories are ancestors too, and its other entries are left alone. A stage's top-level
//! entry that `/` lacks goes to the redirection directory (`/rbuild/top`, when the builder
//! image has it) instead: the step's paths to `/NAME` are redirected there by the sandbox's
//! tracer, and the walk reports it as `NAME`.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use rbuild_snapshot::{Entries, Meta};

use super::InPlaceError;

/// Paths of `/` that are never the stage's, besides every mount point: the kernel's and the
/// runtime's file systems, the files the runtime binds (the step sees the runtime's
/// versions, as under BuildKit; a base image's own stay aside in the stage's root), and the
/// files Docker and Podman create in a container for themselves (root's, not movable).
const ALWAYS_EXCLUDED: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
    ".dockerenv",
    "run/.containerenv",
];

/// Which builder image fits which base, for the refusals of a top level that differs.
const USRMERGE_HINT: &str = "; rbuild:restricted serves bases whose /bin, /lib and /sbin are \
     directories (busybox, Alpine), rbuild:restricted-debian usrmerge bases whose /bin, /lib, \
     /lib64 and /sbin are symlinks into /usr (Debian, Ubuntu)";

/// Why a stage could not be laid out, and whether `/` is the builder's again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LayoutError {
    /// Nothing moved, or what moved was moved back.
    #[error("{0}")]
    Undone(InPlaceError),
    /// Moving back failed too: `/` is neither the builder's nor the stage's.
    #[error("{error}; and putting the builder's files back: {back}")]
    Broken {
        error: Box<InPlaceError>,
        back: Box<InPlaceError>,
    },
}

/// The builder's `/` as an in-place root: what a stage may occupy there.
pub(crate) struct InPlaceRoot {
    /// Paths relative to `/` that are never moved, walked nor written (existing ones).
    excluded: BTreeSet<PathBuf>,
    /// Directories (relative) on the way to an excluded path, and the top-level ones: their
    /// entries are moved one by one, the directories themselves stay.
    ancestors: BTreeSet<PathBuf>,
    /// The top-level entries of `/` that are not directories (left alone).
    foreign_top: BTreeSet<PathBuf>,
    /// The mount points of `/proc/self/mountinfo` (absolute), `/` left out.
    mounts: Vec<PathBuf>,
    /// The files mapped into rbuild (its loader and libraries, when dynamically linked).
    mapped: Vec<PathBuf>,
    /// Where the layout happens: `/`, or a test's directory.
    top: PathBuf,
    /// Every name in `top`, excluded ones included: a stage's top-level name among them is
    /// laid out in `top`, any other in the redirection directory.
    top_names: BTreeSet<PathBuf>,
    /// The redirection directory (relative to `top`) of the stage's top-level entries that
    /// `top` lacks, when there is one.
    redirect: Option<PathBuf>,
    /// With a redirection directory, while a stage is laid out (from [`Self::lay_out`] to
    /// [`Self::take_back`]): the names of `top` that are the stage's ([`Self::seen_names`]).
    /// Every other name is redirected, as one `top` lacks: the builder image's empty
    /// `/srv` is not the stage's. `None`: every name of `top` is.
    laid_out: std::sync::Mutex<Option<BTreeSet<PathBuf>>>,
}

/// The names of `/` every step sees as they are, whether its stage has them or not: the
/// kernel's file systems and the runtime's `/etc` files (`/etc/hosts`, `/etc/resolv.conf`),
/// which BuildKit's runc gives every step too.
const SEEN_FROM_THE_RUNTIME: &[&str] = &["proc", "sys", "dev", "etc"];

/// The redirection directory of the builder images, below rbuild's own directory.
pub(crate) const TOP_LEVEL_REDIRECT: &str = "/rbuild/top";

impl InPlaceRoot {
    /// The excluded paths of this process's `/`: [`ALWAYS_EXCLUDED`], every mount point in
    /// /proc/self/mountinfo but `/`, rbuild's own directory, its store (`store_root`), its
    /// executable's directory, the docker config (credentials) and the pod's credentials.
    pub(crate) fn detect(store_root: &Path) -> Result<InPlaceRoot, InPlaceError> {
        let mut excluded: Vec<PathBuf> = ALWAYS_EXCLUDED.iter().map(PathBuf::from).collect();
        excluded.push(rbuild_sandbox::restricted::IN_PLACE_OWN_DIR.into());
        excluded.extend(
            rbuild_sandbox::restricted::POD_CREDENTIALS
                .iter()
                .map(PathBuf::from),
        );
        let mountinfo =
            fs::read_to_string("/proc/self/mountinfo").map_err(|source| InPlaceError::Proc {
                what: "/proc/self/mountinfo (the paths to leave alone)",
                source,
            })?;
        let mounts: Vec<PathBuf> = mount_points(&mountinfo)
            .into_iter()
            .map(PathBuf::from)
            .collect();
        excluded.extend(mounts.iter().cloned());
        let store = fs::canonicalize(store_root)
            .map_err(InPlaceError::io("resolving the store", store_root))?;
        excluded.push(store);
        if let Ok(exe) = fs::canonicalize("/proc/self/exe") {
            excluded.extend(exe.parent().map(Path::to_path_buf));
        }
        // The files mapped into rbuild (a dynamically linked build's loader and libraries):
        // the sandbox's helper is rbuild executed again, while the stage is in place.
        let maps = fs::read_to_string("/proc/self/maps").map_err(|source| InPlaceError::Proc {
            what: "/proc/self/maps (rbuild's own files)",
            source,
        })?;
        let mapped: Vec<PathBuf> = mapped_files(&maps).into_iter().map(PathBuf::from).collect();
        excluded.extend(mapped.iter().cloned());
        excluded.extend(crate::in_place::run::credential_paths());
        let mut root = InPlaceRoot::new(Path::new("/"), excluded)?;
        root.mounts = mounts;
        root.mapped = mapped;
        if let Some(redirect) = redirect_dir(Path::new(TOP_LEVEL_REDIRECT), store_root)? {
            root = root.with_redirect(redirect);
        }
        Ok(root)
    }

    /// Lays a stage's top-level entries that `top` lacks out in `dir` (relative to `top`)
    /// instead of refusing them.
    pub(crate) fn with_redirect(mut self, dir: PathBuf) -> InPlaceRoot {
        self.redirect = Some(dir);
        self
    }

    /// The redirection directory, absolute, for the step's tracer.
    pub(crate) fn redirect(&self) -> Option<PathBuf> {
        self.redirect.as_ref().map(|dir| self.top.join(dir))
    }

    /// Where the entry `path` (relative, as the stage names it) is while the stage is in
    /// place: below the redirection directory when its first component is not a name of
    /// `top` that is the stage's.
    pub(crate) fn located(&self, path: &Path) -> PathBuf {
        match (&self.redirect, path.components().next()) {
            (Some(redirect), Some(Component::Normal(first))) if !self.is_seen(Path::new(first)) => {
                self.top.join(redirect).join(path)
            }
            _ => self.top.join(path),
        }
    }

    /// Whether the top-level `name` is the laid-out stage's in `top` (every name of `top`
    /// is when no stage is laid out or there is no redirection directory).
    fn is_seen(&self, name: &Path) -> bool {
        match &*crate::context::lock(&self.laid_out) {
            Some(seen) => seen.contains(name),
            None => self.top_names.contains(name),
        }
    }

    /// The names of `top` a step of the stage whose root is `stage` sees as they are: the
    /// stage's top-level entries that `top` has and that are not excluded there (a volume
    /// mounted at `/workspace` is not the stage's `/workspace`), [`SEEN_FROM_THE_RUNTIME`],
    /// and rbuild's own directory; and the builder image's own top-level entries that are
    /// not among them, which the step must not find. `None` without a redirection
    /// directory: then every name of `top` is seen (a stage's name `top` lacks is refused).
    pub(crate) fn seen_names(
        &self,
        stage: &Path,
    ) -> Result<Option<rbuild_sandbox::TopLevelNames>, InPlaceError> {
        if self.redirect.is_none() {
            return Ok(None);
        }
        let mut stage_names = BTreeSet::new();
        for entry in fs::read_dir(stage).map_err(InPlaceError::io("listing", stage))? {
            let entry = entry.map_err(InPlaceError::io("listing", stage))?;
            stage_names.insert(PathBuf::from(entry.file_name()));
        }
        let own = relative(Path::new(rbuild_sandbox::restricted::IN_PLACE_OWN_DIR));
        let seen: Vec<PathBuf> = self
            .top_names
            .iter()
            .filter(|name| {
                let stages = stage_names.contains(*name) && !self.excluded.contains(*name);
                stages
                    || SEEN_FROM_THE_RUNTIME
                        .iter()
                        .any(|r| name.as_path() == Path::new(r))
                    || own.as_deref() == Some(name.as_path())
            })
            .cloned()
            .collect();
        let builder_hidden = self
            .top_names
            .iter()
            .filter(|name| !seen.contains(name))
            .filter(|name| {
                (self.ancestors.contains(*name) && !self.only_holds_mounts(name))
                    || self.foreign_top.contains(*name)
            })
            .cloned()
            .collect();
        Ok(Some(rbuild_sandbox::TopLevelNames {
            seen,
            builder_hidden,
        }))
    }

    /// Whether the directory `name` of `/` holds nothing but (directories leading to)
    /// excluded paths: the directory the runtime made for a volume or secret mounted below
    /// it (`/rbuild-secrets/ca`), a runtime's name like a volume's own mount point, not the
    /// builder image's. Hiding it would trace every path-taking call of every step.
    fn only_holds_mounts(&self, name: &Path) -> bool {
        let Ok(listing) = fs::read_dir(self.top.join(name)) else {
            return false;
        };
        let mut any = false;
        for entry in listing {
            let Ok(entry) = entry else {
                return false;
            };
            let path = name.join(entry.file_name());
            if !self.excluded.iter().any(|kept| kept.starts_with(&path)) {
                return false;
            }
            any = true;
        }
        any
    }

    /// A container path (`/newtop/cache`) as rbuild itself must name it while the stage is
    /// in place (`/rbuild/top/newtop/cache`): rbuild's own calls are not redirected.
    pub(crate) fn real_path(&self, container_path: &str) -> String {
        match relative(Path::new(container_path)) {
            Some(path) => self.located(&path).display().to_string(),
            None => container_path.to_string(),
        }
    }

    /// The files mapped into rbuild: steps may run them, never change them.
    pub(crate) fn mapped(&self) -> &[PathBuf] {
        &self.mapped
    }

    /// Why a step cannot run with the working directory `cwd` (a container path) in
    /// place: it is an excluded path or below one, where what it writes would not be the
    /// stage's.
    /// `stage` is the stage's root: a directory below a name of `/` that is not the
    /// stage's is in the redirection directory, where nothing is excluded.
    pub(crate) fn cwd_refusal(&self, cwd: &str, stage: &Path) -> Option<String> {
        let relative = relative(Path::new(cwd))?;
        if let Ok(Some(names)) = self.seen_names(stage) {
            let first = relative
                .components()
                .next()
                .map(|c| Path::new(c.as_os_str()));
            if first.is_some_and(|first| !names.seen.iter().any(|n| n == first)) {
                return None;
            }
        }
        let excluded = self.excluded_prefix(&relative)?;
        Some(format!(
            "the working directory {cwd} is (below) /{}, which is not the stage's in place: \
             what the step wrote there would be missing from the image",
            excluded.display()
        ))
    }

    /// The container's volumes: its mount points but the kernel's file systems (`/proc`,
    /// `/sys`, `/dev` and below) and the runtime's `/etc` files, which steps use.
    pub(crate) fn volumes(&self) -> Vec<PathBuf> {
        self.mounts
            .iter()
            .filter(|mount| {
                let relative = relative(mount).unwrap_or_default();
                let system = ["proc", "sys", "dev"]
                    .iter()
                    .any(|kernel| relative.starts_with(kernel));
                let runtime_file = ALWAYS_EXCLUDED
                    .iter()
                    .any(|file| relative.as_path() == Path::new(file));
                !system && !runtime_file
            })
            .cloned()
            .collect()
    }

    /// The layout of `top` leaving `excluded` (absolute or relative to `top`) alone; only
    /// the excluded paths that exist count.
    pub(crate) fn new(top: &Path, excluded: Vec<PathBuf>) -> Result<InPlaceRoot, InPlaceError> {
        let mut kept = BTreeSet::new();
        for path in excluded {
            let relative = relative(&path).ok_or_else(|| {
                InPlaceError::Refused(format!(
                    "{} cannot be left alone by an in-place build: it is `/` itself or names \
                     `..`",
                    path.display()
                ))
            })?;
            if fs::symlink_metadata(top.join(&relative)).is_ok() {
                kept.insert(relative);
            }
        }
        let mut ancestors = BTreeSet::new();
        let mut foreign_top = BTreeSet::new();
        let mut top_names = BTreeSet::new();
        let listing = fs::read_dir(top).map_err(InPlaceError::io("listing", top))?;
        for entry in listing {
            let entry = entry.map_err(InPlaceError::io("listing", top))?;
            let name = PathBuf::from(entry.file_name());
            top_names.insert(name.clone());
            if kept.contains(&name) {
                continue;
            }
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir {
                ancestors.insert(name);
            } else {
                foreign_top.insert(name);
            }
        }
        for path in &kept {
            let mut parent = path.parent();
            while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
                ancestors.insert(dir.to_path_buf());
                parent = dir.parent();
            }
        }
        Ok(InPlaceRoot {
            excluded: kept,
            ancestors,
            foreign_top,
            mounts: Vec::new(),
            mapped: Vec::new(),
            top: top.to_path_buf(),
            top_names,
            redirect: None,
            laid_out: std::sync::Mutex::new(None),
        })
    }

    /// Refuses a mount target (a container path) whose deepest existing part resolves (in
    /// `/`, symlinks followed, as the mount's placing will) to an excluded path or below
    /// one. The caller checks with the stage in place (its symlinks count).
    pub(crate) fn check_mount_target(&self, target: &str) -> Result<(), InPlaceError> {
        let Some(relative) = relative(Path::new(target)) else {
            return Err(InPlaceError::Refused(format!(
                "{target:?} cannot be a mount target in place"
            )));
        };
        let refuse = |what: &Path| {
            Err(InPlaceError::Refused(format!(
                "its target {target} is (or leads to) /{}, which is not the stage's: rbuild's \
                 own files, the kernel's and the runtime's are never written in place",
                what.display()
            )))
        };
        let first = relative
            .components()
            .next()
            .map(|c| Path::new(c.as_os_str()));
        let redirected = self.redirect.is_some() && first.is_some_and(|f| !self.is_seen(f));
        if !redirected {
            if let Some(excluded) = self.excluded_prefix(&relative) {
                return refuse(excluded);
            }
        }
        let mut existing = self.located(&relative);
        let real = loop {
            match fs::canonicalize(&existing) {
                Ok(real) => break real,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !existing.pop() {
                        return Ok(());
                    }
                }
                Err(e) => return Err(InPlaceError::io("resolving", &existing)(e)),
            }
        };
        let Ok(inside) = real.strip_prefix(&self.top) else {
            return Err(InPlaceError::Refused(format!(
                "its target {target} leads out of `/`"
            )));
        };
        // Below the redirection directory (in rbuild's own, which is excluded) is the
        // stage's entries' place.
        if self
            .redirect
            .as_ref()
            .is_some_and(|r| inside.starts_with(r))
        {
            return Ok(());
        }
        match self.excluded_prefix(inside) {
            Some(excluded) => refuse(excluded),
            None => Ok(()),
        }
    }

    /// The excluded path that is `path` (relative) or one of its parents.
    fn excluded_prefix(&self, path: &Path) -> Option<&Path> {
        self.excluded
            .iter()
            .find(|excluded| path.starts_with(excluded))
            .map(PathBuf::as_path)
    }

    /// Whether `path` (relative) is a directory kept in place whose entries are moved.
    pub(crate) fn is_ancestor(&self, path: &Path) -> bool {
        self.ancestors.contains(path)
    }

    /// Where stages are laid out (`/`).
    pub(crate) fn top(&self) -> &Path {
        &self.top
    }

    /// The stage-owned entries of `base` (relative), excluded paths left out and ancestors
    /// entered.
    fn region(&self, base: &Path) -> Result<Vec<PathBuf>, InPlaceError> {
        let mut out = Vec::new();
        self.collect(base, Path::new(""), &mut out)?;
        Ok(out)
    }

    fn collect(&self, base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InPlaceError> {
        let at = base.join(dir);
        let entries = match fs::read_dir(&at) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.as_os_str().is_empty() => {
                return Ok(())
            }
            Err(e) => return Err(InPlaceError::io("listing", &at)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(InPlaceError::io("listing", &at))?;
            names.push(entry.file_name());
        }
        names.sort();
        let stage = base != self.top;
        let top_level = dir.as_os_str().is_empty();
        for name in names {
            let path = dir.join(&name);
            if stage && top_level && self.redirect.is_some() && !self.is_seen(&path) {
                // A name of `/` that is not the stage's there (the runtime's, a volume's
                // mount point, the builder's directory): the stage's own goes to the
                // redirection directory, where the step finds it.
                out.push(path);
                continue;
            }
            if self.excluded.contains(&path) {
                continue;
            }
            if !stage && top_level && !self.is_seen(&path) {
                // The builder's own entry the stage lacks: hidden from the step, never the
                // stage's, left where it is.
                continue;
            }
            if self.foreign_top.contains(&path) {
                // The same symlink in both (usrmerge's `/bin -> usr/bin`): the builder's
                // serves, the stage's stays where it is.
                let same_link = fs::read_link(base.join(&path))
                    .ok()
                    .is_some_and(|link| fs::read_link(self.top.join(&path)).ok() == Some(link));
                if stage && !same_link {
                    return Err(InPlaceError::Refused(format!(
                        "the stage has /{0}, where the builder image has a file that is not a \
                         directory (nor the same symlink): `/` cannot be written by the build \
                         user, so such a stage cannot be laid out in place (the builder image \
                         must have /{0} as the stage has it{USRMERGE_HINT})",
                        path.display()
                    )));
                }
                continue;
            }
            if self.ancestors.contains(&path) {
                let meta = fs::symlink_metadata(base.join(&path))
                    .map_err(InPlaceError::io("reading", &base.join(&path)))?;
                if !meta.is_dir() {
                    return Err(InPlaceError::Refused(format!(
                        "the stage's /{} is not a directory, but the builder's is (it holds \
                         paths a step must not replace, such as a mount point): such a stage \
                         cannot be laid out in place{USRMERGE_HINT}",
                        path.display()
                    )));
                }
                self.collect(base, &path, out)?;
                continue;
            }
            if stage && top_level && self.redirect.is_none() {
                return Err(InPlaceError::Refused(format!(
                    "the stage has /{0}, which the builder image lacks: `/` itself belongs to \
                     the container runtime and cannot be written by the build user, and the \
                     builder image has no directory {TOP_LEVEL_REDIRECT} (owned by the build \
                     user, on the container's own file system) to lay such entries out in \
                     (add /{0} or {TOP_LEVEL_REDIRECT} to it)",
                    path.display()
                )));
            }
            out.push(path);
        }
        if !stage && top_level {
            self.collect_redirected(out)?;
        }
        Ok(())
    }

    /// The stage's entries in the redirection directory, by their names in `/`.
    fn collect_redirected(&self, out: &mut Vec<PathBuf>) -> Result<(), InPlaceError> {
        let Some(redirect) = &self.redirect else {
            return Ok(());
        };
        let at = self.top.join(redirect);
        let mut names = Vec::new();
        for entry in fs::read_dir(&at).map_err(InPlaceError::io("listing", &at))? {
            let entry = entry.map_err(InPlaceError::io("listing", &at))?;
            names.push(PathBuf::from(entry.file_name()));
        }
        names.sort();
        for name in names {
            if self.is_seen(&name) {
                // Written there directly (a step naming the redirection directory): it
                // cannot be `/NAME`, which the step sees in `/`.
                return Err(InPlaceError::Refused(format!(
                    "{} holds {}, a name `/` has for the stage: only entries that are not \
                     can be laid out there",
                    at.display(),
                    name.display()
                )));
            }
            out.push(name);
        }
        Ok(())
    }

    /// Puts the stage whose root is `stage` in place: the builder's own entries go to
    /// `stash` (an empty directory on the same file system), the stage's come in. On
    /// failure, what was moved is moved back.
    /// Returns the names of `/` the stage's step sees ([`Self::seen_names`]).
    pub(crate) fn lay_out(
        &self,
        stage: &Path,
        stash: &Path,
    ) -> Result<Option<rbuild_sandbox::TopLevelNames>, LayoutError> {
        let names = self.seen_names(stage).map_err(LayoutError::Undone)?;
        *crate::context::lock(&self.laid_out) = names
            .as_ref()
            .map(|names| names.seen.iter().cloned().collect());
        // The stage's entries are listed (and so checked) before anything moves.
        let stages = self.region(stage).map_err(LayoutError::Undone)?;
        if let Some(redirect) = self.redirect() {
            let leftover = fs::read_dir(&redirect)
                .map_err(|e| LayoutError::Undone(InPlaceError::io("listing", &redirect)(e)))?
                .next()
                .is_some();
            if leftover {
                return Err(LayoutError::Undone(InPlaceError::Refused(format!(
                    "{} is not empty: it holds the entries of a stage laid out in `/`, and \
                     no stage is",
                    redirect.display()
                ))));
            }
        }
        let builders = self.region(&self.top).map_err(LayoutError::Undone)?;
        if let Err(e) = self.move_entries(&self.top, stash, &builders) {
            let back = self
                .region(stash)
                .and_then(|saved| self.move_entries(stash, &self.top, &saved));
            return Err(match back {
                Ok(()) => LayoutError::Undone(e),
                Err(back) => LayoutError::Broken {
                    error: Box::new(e),
                    back: Box::new(back),
                },
            });
        }
        if let Err(e) = self.move_entries(stage, &self.top, &stages) {
            return Err(match self.take_back(stage, stash) {
                Ok(()) => LayoutError::Undone(e),
                Err(back) => LayoutError::Broken {
                    error: Box::new(e),
                    back: Box::new(back),
                },
            });
        }
        Ok(names)
    }

    /// Moves whatever is now in place (the stage after its step) back into `stage`, and the
    /// builder's entries back from `stash`.
    pub(crate) fn take_back(&self, stage: &Path, stash: &Path) -> Result<(), InPlaceError> {
        let now = self.region(&self.top)?;
        self.move_entries(&self.top, stage, &now)?;
        let saved = self.region(stash)?;
        self.move_entries(stash, &self.top, &saved)?;
        *crate::context::lock(&self.laid_out) = None;
        Ok(())
    }

    /// Where `path` (relative) is below `base`: in `top`, a redirected entry is in the
    /// redirection directory.
    fn at(&self, base: &Path, path: &Path) -> PathBuf {
        if base == self.top {
            self.located(path)
        } else {
            base.join(path)
        }
    }

    /// Renames each of `paths` (relative) from `from` to `to`, making missing parent
    /// directories in `to` (0755: an ancestor the stage or the stash lacks).
    fn move_entries(&self, from: &Path, to: &Path, paths: &[PathBuf]) -> Result<(), InPlaceError> {
        for path in paths {
            let target = self.at(to, path);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(InPlaceError::io("making", parent))?;
            }
            let source = self.at(from, path);
            fs::rename(&source, &target).map_err(|e| {
                let hint = if e.raw_os_error() == Some(libc::EXDEV) {
                    " (the store must be on the same file system as `/`)"
                } else {
                    ""
                };
                InPlaceError::Move {
                    from: source.clone(),
                    to: target.clone(),
                    hint,
                    source: e,
                }
            })?;
        }
        Ok(())
    }

    /// The walk snapshotter's entries of what is in place: the stage's region and the
    /// ancestor directories themselves (a step adding `/etc/x` changes `/etc`). An
    /// ancestor's times stand for the names in it: rbuild's own moves and placed mounts
    /// change its mtime too, and where the builder's directory is not this uid's
    /// (OpenShift's random uid, group 0) it cannot be set back.
    pub(crate) fn walk(&self) -> Result<Entries, InPlaceError> {
        let mut entries = Entries::new();
        for dir in &self.ancestors {
            let first = dir.components().next().map(|c| Path::new(c.as_os_str()));
            if first.is_some_and(|first| !self.is_seen(first)) {
                // The builder's directory the stage lacks: not the stage's.
                continue;
            }
            let path = self.top.join(dir);
            if let Ok(mut meta) = meta_of(&path) {
                let names = names_digest(&path).map_err(InPlaceError::io("listing", &path))?;
                meta.mtime = (names, 0);
                meta.ctime = (names, 0);
                entries.insert(dir.clone(), meta);
            }
        }
        for path in self.region(&self.top)? {
            let at = self.located(&path);
            let meta = meta_of(&at).map_err(InPlaceError::io("reading", &at))?;
            let is_dir = meta.is_dir();
            entries.insert(path.clone(), meta);
            if is_dir {
                let below_at =
                    rbuild_snapshot::walk(&at).map_err(InPlaceError::io("walking", &at))?;
                for (below, meta) in below_at {
                    entries.insert(path.join(below), meta);
                }
            }
        }
        Ok(entries)
    }
}

/// The redirection directory `dir` if it is usable: a directory (not a symlink) on the
/// store's file system (entries are renamed between them), not a mount point. `None` when
/// the builder image has none.
fn redirect_dir(dir: &Path, store_root: &Path) -> Result<Option<PathBuf>, InPlaceError> {
    use std::os::unix::fs::MetadataExt;
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(InPlaceError::io("reading", dir)(e)),
    };
    if !meta.is_dir() {
        return Err(InPlaceError::Refused(format!(
            "{} is not a directory: top-level entries the builder image lacks cannot be laid \
             out there",
            dir.display()
        )));
    }
    let store = fs::metadata(store_root).map_err(InPlaceError::io("reading", store_root))?;
    if store.dev() != meta.dev() {
        return Err(InPlaceError::Refused(format!(
            "{} is not on the store's file system (a volume?): top-level entries the builder \
             image lacks are renamed there, which needs the container's own file system",
            dir.display()
        )));
    }
    Ok(relative(dir))
}

/// `path` relative to `/`, `None` for `/` itself or a path with `..`.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// The mount points of a /proc/self/mountinfo text (field 5, octal escapes undone), `/`
/// left out.
fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_octal)
        .filter(|point| point != "/")
        .collect()
}

/// The files of a /proc/self/maps text (its sixth field, when a path).
fn mapped_files(maps: &str) -> BTreeSet<String> {
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.starts_with('/'))
        .map(str::to_string)
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match escaped {
            Some(digits) => {
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A digest of the sorted names in the directory `path`.
fn names_digest(path: &Path) -> io::Result<i64> {
    use std::hash::{Hash, Hasher};
    let mut names = Vec::new();
    for entry in fs::read_dir(path)? {
        names.push(entry?.file_name());
    }
    names.sort();
    // Fixed keys: the same names give the same digest in the walk before and after a step.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    names.hash(&mut hasher);
    Ok(hasher.finish() as i64)
}

/// The walk snapshotter's record of one path.
fn meta_of(path: &Path) -> io::Result<Meta> {
    Meta::of(path)
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;
