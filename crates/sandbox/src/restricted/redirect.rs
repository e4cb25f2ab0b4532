//! Top-level redirection: in a restricted pod `/` belongs to the container runtime, so no
//! step can create an entry directly in it. The names of `/` are fixed while a step runs
//! (nothing can create or remove them), so a path whose first component is not one of
//! them can only mean an entry the stage has and the builder lacks: it is redirected into a
//! directory the build user owns ([`TopLevel::top`], `/rbuild/top` in the builder images),
//! where rbuild laid that entry out. `/newtop/f` becomes `/rbuild/top/newtop/f`.
//!
//! Who translates: the calls the supervisor answers (`chown` family, device `mknod`,
//! `stat` family, `security.capability`) translate where they read the path
//! ([`TopLevel::translate`]); every other path-taking call stops in a tracer (`tracer.rs`),
//! which rewrites the argument in the step's memory before the kernel reads it, and fixes
//! up the results that show a path (`getcwd`, `readlink` of `/proc/…`).
//!
//! Emulation, not a boundary (like the supervisor): the redirected path is an ordinary
//! path under `/`, which Landlock governs as any other. `rbuild` is a real name of `/`, so
//! `/rbuild/…` is never redirected and stays what Landlock allows.

use std::io;
use std::path::Path;

/// The fixed names of `/` and where every other top-level name goes.
#[derive(Debug, Clone)]
pub(crate) struct TopLevel {
    /// The names in `/` when the step starts, sorted.
    names: Vec<Vec<u8>>,
    /// The directory redirected names live in: absolute, no trailing slash.
    top: Vec<u8>,
    /// Whether the redirection directory was empty when the step started ([`Self::for_step`]):
    /// then only the calls that create a name are traced until one of them redirects
    /// (`filter::Tracing::Creating`).
    pub(crate) creating_only: bool,
    /// Whether `/` holds a name the step must not see that a call not traced would find
    /// (the builder image's directory the stage lacks): then every path-taking call is
    /// traced from the step's start, never only the creating ones.
    trace_every_call: bool,
    /// A test hook: a descriptor the tracer writes its stop counts to as it ends
    /// (`seccomp=N syscall=M switched=0|1`).
    pub(crate) stop_report: Option<libc::c_int>,
}

/// What the start of a path says about redirection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FirstComponent<'a> {
    /// The path names `/` itself or one of its real entries (or is empty): left alone.
    Real,
    /// The first component is not a name of `/`: `rest` is the path from that component
    /// on (leading `/`, `./` and `../` skipped, since they all resolve to `/` there).
    Absent { rest: &'a [u8] },
    /// The first component did not end within the bytes given (a longer read is needed).
    Unknown,
}

impl TopLevel {
    /// Reads the names of `/` now; `top` must be an absolute directory path.
    pub(crate) fn new(top: &Path) -> io::Result<TopLevel> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = top.as_os_str().as_bytes();
        let trimmed = bytes.strip_suffix(b"/").unwrap_or(bytes);
        if !bytes.starts_with(b"/") || trimmed.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the top-level redirection directory {} must be an absolute path below /",
                    top.display()
                ),
            ));
        }
        let mut names = Vec::new();
        for entry in std::fs::read_dir("/")? {
            names.push(entry?.file_name().as_bytes().to_vec());
        }
        names.sort();
        Ok(TopLevel {
            names,
            top: trimmed.to_vec(),
            creating_only: false,
            trace_every_call: false,
            stop_report: None,
        })
    }

    /// This redirection seeing only `seen` of the names of `/` (the stage's top-level
    /// entries laid out there, the kernel's and the runtime's): every other name of `/` is
    /// redirected as an absent one, except the redirection directory's own first component
    /// (`rbuild`), which must stay real for the redirected paths to resolve. `hidden`: the
    /// builder image's names among the unseen ones, which make the step traced at every
    /// path-taking call (an untraced call would find them).
    pub(crate) fn seeing(
        mut self,
        seen: &[std::path::PathBuf],
        hidden: &[std::path::PathBuf],
    ) -> TopLevel {
        use std::os::unix::ffi::OsStrExt;
        let own = self.top[1..]
            .split(|b| *b == b'/')
            .next()
            .unwrap_or_default()
            .to_vec();
        self.names.retain(|name| {
            *name == own || seen.iter().any(|s| s.as_os_str().as_bytes() == &name[..])
        });
        self.trace_every_call = hidden
            .iter()
            .any(|h| self.first_component(h.as_os_str().as_bytes(), true) != FirstComponent::Real);
        self
    }

    /// The names of `/` whose trees are the stage's: every name seen but the redirection
    /// directory's own first component (rbuild's directory), for the copy-up's [`Area`].
    ///
    /// [`Area`]: super::copy_up::Area
    pub(crate) fn stage_names(&self) -> Vec<Vec<u8>> {
        let own = self.top[1..]
            .split(|b| *b == b'/')
            .next()
            .unwrap_or_default();
        self.names
            .iter()
            .filter(|name| name.as_slice() != own)
            .cloned()
            .collect()
    }

    /// The redirection directory: absolute, no trailing slash.
    pub(crate) fn dir(&self) -> &[u8] {
        &self.top
    }

    /// This redirection for a step about to start: [`Self::creating_only`] when the
    /// redirection directory holds no entry now (the stage has none the builder lacks, and
    /// neither the working directory nor a mount target was made there).
    pub(crate) fn for_step(&self) -> io::Result<TopLevel> {
        let mut step = self.clone();
        step.creating_only = !self.trace_every_call && self.is_empty_now()?;
        Ok(step)
    }

    /// Whether the redirection directory holds no entry at this moment.
    pub(crate) fn is_empty_now(&self) -> io::Result<bool> {
        use std::os::unix::ffi::OsStrExt;
        let dir = Path::new(std::ffi::OsStr::from_bytes(&self.top));
        let named = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("reading the redirection directory {}: {e}", dir.display()),
            )
        };
        Ok(std::fs::read_dir(dir)
            .map_err(named)?
            .next()
            .transpose()
            .map_err(named)?
            .is_none())
    }

    /// Classifies `path` as resolved from `/` (an absolute path, or a relative one whose
    /// base is `/`). `complete` says whether `path` is the whole string (else a prefix).
    pub(crate) fn first_component<'a>(&self, path: &'a [u8], complete: bool) -> FirstComponent<'a> {
        let mut at = 0;
        loop {
            while path.get(at) == Some(&b'/') {
                at += 1;
            }
            let end = path[at..].iter().position(|b| *b == b'/').map(|i| at + i);
            let name = &path[at..end.unwrap_or(path.len())];
            if end.is_none() && !complete {
                return FirstComponent::Unknown;
            }
            if name == b"." || name == b".." {
                // `/..` is `/`: skip it, as the kernel does.
                at += name.len();
                continue;
            }
            if name.is_empty() || self.names.binary_search_by(|n| n[..].cmp(name)).is_ok() {
                return FirstComponent::Real;
            }
            return FirstComponent::Absent { rest: &path[at..] };
        }
    }

    /// `rest` (from [`FirstComponent::Absent`]) below the redirection directory.
    pub(crate) fn redirected(&self, rest: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.top.len() + 1 + rest.len());
        out.extend_from_slice(&self.top);
        out.push(b'/');
        out.extend_from_slice(rest);
        out
    }

    /// The path a supervised call must act on: `path` redirected when it resolves from `/`
    /// (absolute, or relative to a cwd or `dirfd` of `pid` that is `/`) and its first
    /// component is not a name of `/`; else `path` as it is.
    pub(crate) fn translate(&self, pid: u32, dirfd: libc::c_int, path: Vec<u8>) -> Vec<u8> {
        let rest = match self.first_component(&path, true) {
            FirstComponent::Absent { rest } => rest,
            _ => return path,
        };
        if !path.starts_with(b"/") && !base_is_root(pid as libc::pid_t, dirfd) {
            return path;
        }
        self.redirected(rest)
    }

    /// A path the kernel shows (a cwd, a `/proc` link's target) as the step must see it:
    /// the redirection directory's part taken off (`/rbuild/top/newtop` is `/newtop`, the
    /// directory itself `/`). `None` when it is not below the redirection directory.
    pub(crate) fn shown(&self, real: &[u8]) -> Option<Vec<u8>> {
        let rest = real.strip_prefix(&self.top[..])?;
        match rest.first() {
            None => Some(b"/".to_vec()),
            Some(b'/') => Some(rest.to_vec()),
            Some(_) => None,
        }
    }
}

/// Whether a relative path of `pid`'s with `dirfd` is resolved from `/` (its cwd for
/// `AT_FDCWD`, else that descriptor), read from /proc: only asked for a path whose first
/// component is not a name of `/`.
/// Asked on the tracer's path for relative names (`openat(dirfd, "name")` of a directory
/// walk), so it allocates nothing: the link's name is formatted on the stack and only two
/// bytes of its target are read (`/` is the one target of length 1 starting with `/`).
pub(crate) fn base_is_root(pid: libc::pid_t, dirfd: libc::c_int) -> bool {
    use std::io::Write;
    let mut link = [0u8; 64];
    let mut writer = &mut link[..];
    let formatted = if dirfd == libc::AT_FDCWD {
        write!(writer, "/proc/{pid}/cwd\0")
    } else if dirfd >= 0 {
        write!(writer, "/proc/{pid}/fd/{dirfd}\0")
    } else {
        return false;
    };
    if formatted.is_err() {
        return false;
    }
    let mut target = [0u8; 2];
    // SAFETY: `link` is NUL-terminated (written above, within its 64 bytes); readlink
    // writes at most `target.len()` bytes into `target`.
    let n = unsafe {
        libc::readlink(
            link.as_ptr().cast(),
            target.as_mut_ptr().cast(),
            target.len(),
        )
    };
    n == 1 && target[0] == b'/'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top_level(names: &[&str]) -> TopLevel {
        let mut names: Vec<Vec<u8>> = names.iter().map(|n| n.as_bytes().to_vec()).collect();
        names.sort();
        TopLevel {
            names,
            top: b"/rbuild/top".to_vec(),
            creating_only: false,
            trace_every_call: false,
            stop_report: None,
        }
    }

    #[test]
    fn names_of_slash_the_stage_lacks_are_redirected_as_absent_ones() {
        use std::path::PathBuf;
        let seen = [PathBuf::from("etc"), PathBuf::from("usr")];
        let t = top_level(&["etc", "rbuild", "srv", "usr", ".dockerenv"]);
        let only_runtime = t.clone().seeing(&seen, &[]);
        assert_eq!(
            only_runtime.first_component(b"/srv/x", true),
            FirstComponent::Absent { rest: b"srv/x" },
            "the builder's /srv is not the stage's"
        );
        assert_eq!(
            only_runtime.first_component(b"/etc/passwd", true),
            FirstComponent::Real
        );
        assert_eq!(
            only_runtime.first_component(b"/rbuild/top/srv", true),
            FirstComponent::Real,
            "the redirection directory's own first component stays real"
        );
        assert!(
            !only_runtime.trace_every_call,
            "runtime names alone keep creating-only tracing"
        );
        let builder_dir = t.seeing(&seen, &[PathBuf::from("srv")]);
        assert!(builder_dir.trace_every_call);
        assert!(
            !builder_dir.for_step().unwrap().creating_only,
            "every call traced: its directory is not read"
        );
    }

    #[test]
    fn only_a_first_component_absent_from_slash_is_redirected() {
        let t = top_level(&["etc", "rbuild", "usr"]);
        assert_eq!(
            t.first_component(b"/etc/passwd", true),
            FirstComponent::Real
        );
        assert_eq!(t.first_component(b"/", true), FirstComponent::Real);
        assert_eq!(t.first_component(b"", true), FirstComponent::Real);
        assert_eq!(
            t.first_component(b"/rbuild/top/../state", true),
            FirstComponent::Real,
            "rbuild is a real name: never redirected, Landlock decides"
        );
        assert_eq!(
            t.first_component(b"/newtop/f", true),
            FirstComponent::Absent { rest: b"newtop/f" }
        );
        assert_eq!(
            t.first_component(b"//./../newtop", true),
            FirstComponent::Absent { rest: b"newtop" },
            "/., /.. and repeated slashes are / itself"
        );
        assert_eq!(
            t.first_component(b"etcx", true),
            FirstComponent::Absent { rest: b"etcx" }
        );
        assert_eq!(t.first_component(b"/newt", false), FirstComponent::Unknown);
        assert_eq!(
            t.first_component(b"/newtop/", false),
            FirstComponent::Absent { rest: b"newtop/" }
        );
        assert_eq!(t.redirected(b"newtop/f"), b"/rbuild/top/newtop/f".to_vec());
    }

    #[test]
    fn shown_paths_lose_the_redirection_directory() {
        let t = top_level(&["rbuild"]);
        assert_eq!(
            t.shown(b"/rbuild/top/newtop/a"),
            Some(b"/newtop/a".to_vec())
        );
        assert_eq!(t.shown(b"/rbuild/top"), Some(b"/".to_vec()));
        assert_eq!(t.shown(b"/rbuild/topper"), None);
        assert_eq!(t.shown(b"/etc"), None);
    }

    #[test]
    fn a_relative_path_is_translated_only_from_slash() {
        let t = top_level(&["etc"]);
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() } as u32;
        // This test process's cwd is the crate's directory, not `/`.
        assert_eq!(t.translate(me, libc::AT_FDCWD, b"x/y".to_vec()), b"x/y");
        assert_eq!(
            t.translate(me, libc::AT_FDCWD, b"/x/y".to_vec()),
            b"/rbuild/top/x/y"
        );
        let slash = std::fs::File::open("/").unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(
            t.translate(me, slash.as_raw_fd(), b"x/y".to_vec()),
            b"/rbuild/top/x/y"
        );
        assert_eq!(t.translate(me, slash.as_raw_fd(), b"etc".to_vec()), b"etc");
    }
}
