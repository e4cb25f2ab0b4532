//! What one step needs: the description handed to the helper process.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How a step is isolated from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Pick `userns` if the probe says it works, else `chroot` if we are root with
    /// CAP_SYS_CHROOT, else fail naming what blocked both.
    Auto,
    /// New user, mount, PID, IPC, UTS (and optionally network) namespaces and `pivot_root`.
    Userns,
    /// Plain `chroot` as root, for containers whose seccomp profile forbids user namespaces.
    Chroot,
    /// No namespace and no chroot (a non-root user under a runtime's default seccomp
    /// profile): the step runs in place (its root is the builder's own `/`) under a
    /// supervising seccomp filter and Landlock; the executor lays the stage out there, only
    /// where `restricted::IN_PLACE_MARKER` marks `/` for it and rbuild is not root.
    Restricted,
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Isolation::Auto),
            "userns" => Ok(Isolation::Userns),
            "chroot" => Ok(Isolation::Chroot),
            "restricted" => Ok(Isolation::Restricted),
            other => Err(format!(
                "unknown isolation {other:?}: expected auto, userns, chroot or restricted"
            )),
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::Auto => "auto",
            Isolation::Userns => "userns",
            Isolation::Chroot => "chroot",
            Isolation::Restricted => "restricted",
        })
    }
}

/// The step's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The host's network (no network namespace), BuildKit's default for RUN.
    #[default]
    Host,
    /// A new network namespace with only `lo` up (userns isolation only).
    None,
}

/// The root filesystem the step sees as `/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rootfs {
    /// A directory used in place (bind-mounted onto itself, or chrooted into). Writes land in it.
    Dir(PathBuf),
    /// An overlay mounted by the helper inside its user namespace (with `userxattr`): writes
    /// land in `upperdir`. `lowerdirs` are listed base first (bottom-most first), the order
    /// layers are applied in.
    Overlay {
        lowerdirs: Vec<PathBuf>,
        upperdir: PathBuf,
        workdir: PathBuf,
        merged: PathBuf,
    },
}

/// Numeric identity the command runs as (see [`crate::resolve_user`] to get it from names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UserIds {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// A host file bound over a file of the rootfs (`/etc/hosts`, `/etc/resolv.conf`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileBind {
    /// Absolute path inside the container.
    pub target: String,
    /// Host file whose content the step sees.
    pub source: PathBuf,
}

/// An extra bind mount (for `RUN --mount`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    pub readonly: bool,
    /// The source is a copy made for this step alone (a secret): the step's init unlinks it
    /// once it is mounted, before the command starts, so no file holding it outlives the
    /// mount on any file system, whatever happens to rbuild afterwards. Its directory must
    /// be writable by the step's root (container root owns it).
    #[serde(default)]
    pub remove_source: bool,
    /// Mount a fresh tmpfs of at most this many bytes at `target` instead of binding
    /// `source` (`RUN --mount=type=tmpfs,size=`; BuildKit mounts it `nosuid`, mode 1777).
    /// Only the user-namespace isolation can mount one.
    #[serde(default)]
    pub tmpfs_size: Option<u64>,
}

/// Everything needed to run one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSpec {
    pub rootfs: Rootfs,
    /// The command, `argv[0]` looked up in the step's `PATH` inside the rootfs when it has no `/`.
    pub argv: Vec<String>,
    /// `KEY=value` entries, exactly the environment the command gets.
    pub env: Vec<String>,
    /// Working directory inside the container; created (owned by root) when missing, as runc does.
    pub cwd: String,
    pub user: UserIds,
    pub hostname: String,
    /// Files bound over the rootfs's. The runner adds `/etc/hosts` and
    /// `/etc/resolv.conf` (from the host) when they are not listed here.
    pub etc_files: Vec<FileBind>,
    pub binds: Vec<BindMount>,
    pub network: Network,
    pub isolation: Isolation,
    /// Restricted isolation only: owners the step's `stat` shows for files rbuild placed for
    /// it and could not chown (a secret or an ssh agent socket mounted with `uid=`/`gid=`:
    /// the build user owns every file). Shown, not recorded: the files are gone before the
    /// layer is taken. Left out of the serialized spec when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shown_owners: Vec<ShownOwner>,
    /// Chroot and restricted isolation only: the inode numbers (on the rootfs's file
    /// system) of the regular files that have more than one name in the rootfs before the
    /// step (hard links from earlier layers). A write, chmod, chown, utimes, truncate or
    /// xattr change through one of their names copies that name up first, as overlayfs
    /// does (`restricted::copy_up`). Empty: the step runs with no copy-up at all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_up_inodes: Vec<u64>,
    /// Restricted isolation with top-level redirection only: which names of `/` are the
    /// step's. `None`: every name of `/` (the stage's top level is the builder's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_level_names: Option<TopLevelNames>,
}

/// The names of `/` a restricted step sees as they are (see [`StepSpec::top_level_names`]).
/// Every other name of `/` is redirected as a name `/` lacks is: the builder image's empty
/// `/srv` is absent for a stage without `/srv`, and the step's `mkdir /srv` makes the
/// stage's in the redirection directory (docs/sandbox.md, "Top-level redirection").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopLevelNames {
    /// The stage's top-level entries laid out in `/`, and the kernel's and the runtime's
    /// entries every step uses (`proc`, `dev`, `sys`, `etc`).
    pub seen: Vec<PathBuf>,
    /// The builder image's own top-level entries that are not in `seen` (the stage lacks
    /// them). A call the tracer does not stop at would find them, so a step with any is
    /// traced at every path-taking call from its start. The runtime's names the stage lacks
    /// (`.dockerenv`, a volume's mount point) are redirected too but need not be here:
    /// Landlock hides a volume, and `.dockerenv` is the runtime's marker file.
    pub builder_hidden: Vec<PathBuf>,
}

/// An owner a restricted step's `stat` shows for `path` (see [`StepSpec::shown_owners`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownOwner {
    /// The file's path as the step sees it (absolute).
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

/// The PATH a step gets when its environment has none (BuildKit's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl StepSpec {
    /// A step running `argv` as root in `/` of `rootfs`, with BuildKit's default PATH.
    pub fn new(rootfs: Rootfs, argv: Vec<String>) -> Self {
        StepSpec {
            rootfs,
            argv,
            env: vec![format!("PATH={DEFAULT_PATH}")],
            cwd: "/".into(),
            user: UserIds::default(),
            hostname: "rbuild".into(),
            etc_files: Vec::new(),
            binds: Vec::new(),
            network: Network::Host,
            isolation: Isolation::Auto,
            shown_owners: Vec::new(),
            copy_up_inodes: Vec::new(),
            top_level_names: None,
        }
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepStatus {
    /// Exit code when the command exited.
    pub code: Option<i32>,
    /// Signal number when the command was killed by a signal.
    pub signal: Option<i32>,
}

impl StepStatus {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(sig)) => write!(f, "killed by signal {sig}"),
            (None, None) => f.write_str("unknown status"),
        }
    }
}

/// What kind of placeholder the sandbox created to have something to mount on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StubKind {
    Dir,
    File,
    CharDevice,
}

/// A path the sandbox created in the rootfs (a mountpoint for `/proc`, `/etc/hosts`, a bind
/// target, or a device node in chroot mode). It is not part of the step's result: the
/// snapshotter removes it (if it is still what was created) and restores the parent's mtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stub {
    /// Absolute path inside the container, with symlinks already resolved.
    pub path: String,
    pub kind: StubKind,
    /// The parent directory's mtime (seconds, nanoseconds) before the stub was created.
    pub parent_mtime: (i64, i64),
}

/// How container ids map to host ids for a userns step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdMapping {
    /// Real root: the whole id range maps to itself.
    Identity,
    /// The caller is root inside, followed by its /etc/subuid and /etc/subgid ranges.
    SubIds,
    /// Only the caller's own uid/gid exist inside (as 0/0): no subuid range or no newuidmap.
    SingleId,
    /// A root build: container ids 0.. map to an unprivileged host range (root's
    /// /etc/subuid line or rbuild's reserved range, see [`crate::root_range`]).
    RootRange,
    /// No user namespace (chroot isolation).
    None,
}

/// The result of a step that ran (whether or not it succeeded).
#[derive(Debug, Clone)]
pub struct StepOutcome {
    pub status: StepStatus,
    pub isolation: Isolation,
    pub id_mapping: IdMapping,
    /// Placeholders to remove before reading the step's changes (see [`Stub`]).
    pub stubs: Vec<Stub>,
    /// The last lines of the combined output, for error messages.
    pub tail: Vec<String>,
    /// Restricted isolation only: the owners, device nodes and file capabilities the step
    /// asked for, which the disk does not hold (the layer writer applies them).
    pub ownership: Option<crate::restricted::OwnershipTable>,
}

/// Why a restricted step may get EACCES where `docker build` would not: `/` belongs to the
/// container runtime (root's, mode 0755, whatever the image says), and Landlock grants whole
/// trees, so `/` (which holds rbuild's own directory) only lets a step list it.
pub const RESTRICTED_TOP_LEVEL_HINT: &str =
    "this step ran with isolation `restricted`: `/` is the container runtime's, so the \
     top-level entries the stage has (such as /usr, /etc) cannot be removed or renamed \
     (new top-level entries work: they are kept in /rbuild/top and shown at /NAME), \
     and Landlock keeps the step away from rbuild's store, the build context, the \
     container's volumes and credentials. Build where user namespaces work for a step that \
     needs more";

impl StepOutcome {
    /// An explanation to add to a failure message, when the id mapping (or, under
    /// restricted isolation, a refused call) is the likely cause.
    pub fn failure_hint(&self) -> Option<String> {
        if !self.status.success()
            && self.isolation == Isolation::Restricted
            && self
                .tail
                .iter()
                .any(|l| l.contains("Operation not permitted") || l.contains("EPERM"))
        {
            return Some(
                "this step ran with isolation `restricted`, where mount, unshare, setns, \
                 chroot and kernel modules are refused (EPERM, as under docker build without \
                 privileges) and every process is the build user with root's view faked"
                    .into(),
            );
        }
        if !self.status.success()
            && self.isolation == Isolation::Restricted
            && self
                .tail
                .iter()
                .any(|l| l.contains("Permission denied") || l.contains("EACCES"))
        {
            return Some(RESTRICTED_TOP_LEVEL_HINT.into());
        }
        if self.status.success() || self.id_mapping != IdMapping::SingleId {
            return None;
        }
        let einval = self
            .tail
            .iter()
            .any(|l| l.contains("Invalid argument") || l.contains("EINVAL"));
        einval.then(|| {
            format!(
                "this step ran with a single-id user namespace mapping, where only uid 0 and gid 0 exist; \
                 changing ownership to any other id fails with EINVAL. Add a range for {} to /etc/subuid \
                 and /etc/subgid (e.g. `{}:100000:65536`) and install newuidmap/newgidmap (Debian package uidmap)",
                crate::idmap::current_user_label(),
                crate::idmap::current_user_label()
            )
        })
    }
}
