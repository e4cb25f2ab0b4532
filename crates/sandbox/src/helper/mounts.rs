//! The mount namespace of a userns step: rootfs, /proc, /dev, /sys, bound files, pivot_root.
//!
//! Every mount target inside the rootfs is resolved with [`open_in_root`] and mounted through
//! its `/proc/self/fd/N` path, so a symlink in the rootfs can never redirect a mount onto the
//! host.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{open, Mode, OFlags};
use rustix::mount::{
    mount_bind, mount_bind_recursive, mount_change, unmount, MountFlags, MountPropagationFlags,
    UnmountFlags,
};
use rustix::process::{chdir, pivot_root};

use crate::confine::{DEV_NODES, MASKED_PATHS, READONLY_PATHS};
use crate::rootpath::{open_in_root, CreateAs};
use crate::spec::{Network, Rootfs, StepSpec, Stub};
use crate::sys::{
    cvt, errno_name, fd_path, restrict_mounts, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
};

use super::HelperError;

fn err(stage: &str, what: impl std::fmt::Display, e: impl Into<io::Error>) -> HelperError {
    HelperError::new(stage, format!("{what}: {}", errno_name(&e.into())))
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// A fresh filesystem (no source to bind): mount(2) with `options` as its data.
fn mount_fs(
    fstype: &CStr,
    target: &Path,
    flags: MountFlags,
    options: Option<&CStr>,
) -> rustix::io::Result<()> {
    rustix::mount::mount(fstype, target, fstype, flags, options)
}

/// Mounts the step's root and returns its host path.
fn mount_root(rootfs: &Rootfs) -> Result<PathBuf, HelperError> {
    match rootfs {
        Rootfs::Dir(dir) => {
            // pivot_root needs the new root to be a mount point.
            mount_bind_recursive(dir, dir)
                .map_err(|e| err("mount rootfs", format!("bind {}", dir.display()), e))?;
            // Device nodes an image ships (or a root step's host ids would honour) open
            // nothing: Docker's rootfs is nodev too.
            restrict_mounts(dir, MOUNT_ATTR_NODEV)
                .map_err(|e| err("mount rootfs", format!("nodev on {}", dir.display()), e))?;
            Ok(dir.clone())
        }
        Rootfs::Overlay {
            lowerdirs,
            upperdir,
            workdir,
            merged,
        } => {
            let all = lowerdirs.iter().chain([upperdir, workdir]);
            for p in all {
                let s = p.to_string_lossy();
                if s.contains(',') || s.contains(':') {
                    return Err(HelperError::new(
                        "mount overlay",
                        format!("overlay directory {s:?} contains ',' or ':', which overlayfs options cannot express"),
                    ));
                }
            }
            if lowerdirs.is_empty() {
                return Err(HelperError::new(
                    "mount overlay",
                    "no lower directory given",
                ));
            }
            // overlayfs lists the top-most layer first; the spec lists the base first.
            let lower: Vec<String> = lowerdirs
                .iter()
                .rev()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            // `volatile` (Linux 5.10; `userxattr` needs 5.11, so every kernel that mounts
            // this has it): no syncfs of the whole upper file system when the step's mount
            // namespace goes, which waited for every dirty page on it (the step's and
            // anyone else's), and fsync inside the step is not forced to disk. A step's
            // upper directory is throw-away until rbuild has read it: a step that did not
            // finish is never used, each step gets new upper and work directories
            // (`OverlayDirs::create`), and the kernel refuses to mount a volatile upper
            // and work directory again. The files then stay in the page cache as any
            // file rbuild writes unsynced (extracted trees, kept trees): a power cut may
            // lose them, and a layer written later from them is checked against its
            // recorded digest.
            let data = format!(
                "lowerdir={},upperdir={},workdir={},userxattr,volatile",
                lower.join(":"),
                upperdir.display(),
                workdir.display()
            );
            let options = CString::new(data.as_str()).map_err(|_| {
                HelperError::new(
                    "mount overlay",
                    format!("overlay options {data:?} contain a NUL byte"),
                )
            })?;
            mount_fs(c"overlay", merged, MountFlags::NODEV, Some(&options)).map_err(|e| {
                err(
                    "mount overlay",
                    format!("overlay on {} ({data})", merged.display()),
                    e,
                )
            })?;
            Ok(merged.clone())
        }
    }
}

fn mount_proc(root: BorrowedFd<'_>, stubs: &mut Vec<Stub>) -> Result<(), HelperError> {
    let target = open_in_root(root, "/proc", CreateAs::Dir, stubs)
        .map_err(|e| err("mount /proc", "creating /proc", e))?;
    let path = fd_path(target.as_fd());
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    if mount_fs(c"proc", &path, flags, None).is_err() {
        // A fresh procfs is refused when the host /proc has masked paths (inside
        // containers); the host's /proc bound recursively keeps those masks, and ours go
        // on top.
        mount_bind_recursive("/proc", &path)
            .map_err(|e| err("mount /proc", "binding the host /proc", e))?;
    }
    confine_paths(root, "/proc/")
}

/// Masks and write-protects the paths of [`MASKED_PATHS`] and [`READONLY_PATHS`] under
/// `prefix` (`/proc/` or `/sys/`), which must be mounted already.
fn confine_paths(root: BorrowedFd<'_>, prefix: &str) -> Result<(), HelperError> {
    let stage = "confine";
    let mut ignored = Vec::new();
    for path in MASKED_PATHS.iter().filter(|p| p.starts_with(prefix)) {
        let target = match open_in_root(root, path, CreateAs::Nothing, &mut ignored) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(err(stage, format!("opening {path}"), e)),
        };
        let target_path = fd_path(target.as_fd());
        let is_dir = std::fs::metadata(&target_path)
            .map_err(|e| err(stage, format!("stat {path}"), e))?
            .is_dir();
        if is_dir {
            mount_fs(
                c"tmpfs",
                &target_path,
                MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                Some(c"mode=0555,size=4k"),
            )
            .map_err(|e| err(stage, format!("masking {path} with an empty tmpfs"), e))?;
        } else {
            mount_bind("/dev/null", &target_path)
                .map_err(|e| err(stage, format!("masking {path} with /dev/null"), e))?;
        }
    }
    for path in READONLY_PATHS.iter().filter(|p| p.starts_with(prefix)) {
        let target = match open_in_root(root, path, CreateAs::Nothing, &mut ignored) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(err(stage, format!("opening {path}"), e)),
        };
        let target_path = fd_path(target.as_fd());
        mount_bind_recursive(&target_path, &target_path)
            .map_err(|e| err(stage, format!("binding {path} onto itself"), e))?;
        drop(target);
        // Reopen: the descriptor above names what lies under the new mount.
        let mounted = open_in_root(root, path, CreateAs::Nothing, &mut ignored)
            .map_err(|e| err(stage, format!("reopening {path}"), e))?;
        restrict_mounts(
            &fd_path(mounted.as_fd()),
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        )
        .map_err(|e| err(stage, format!("making {path} read-only"), e))?;
    }
    Ok(())
}

fn mount_dev(root: BorrowedFd<'_>, stubs: &mut Vec<Stub>) -> Result<(), HelperError> {
    let target = open_in_root(root, "/dev", CreateAs::Dir, stubs)
        .map_err(|e| err("mount /dev", "creating /dev", e))?;
    mount_fs(
        c"tmpfs",
        &fd_path(target.as_fd()),
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some(c"mode=755,size=65536k"),
    )
    .map_err(|e| err("mount /dev", "tmpfs", e))?;
    drop(target);
    // Reopen: the descriptor above names the directory under the tmpfs, this one the tmpfs.
    let mut ignored = Vec::new();
    let dev = open_in_root(root, "/dev", CreateAs::Nothing, &mut ignored)
        .map_err(|e| err("mount /dev", "reopening /dev", e))?;
    let dev_path = fd_path(dev.as_fd());
    for node in DEV_NODES {
        let host = format!("/dev/{node}");
        let file = dev_path.join(node);
        std::fs::File::create(&file)
            .map_err(|e| err("mount /dev", format!("creating {node}"), e))?;
        mount_bind(&host, &file).map_err(|e| err("mount /dev", format!("binding {host}"), e))?;
    }
    let pts = dev_path.join("pts");
    std::fs::create_dir(&pts).map_err(|e| err("mount /dev", "creating pts", e))?;
    mount_fs(
        c"devpts",
        &pts,
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some(c"newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| err("mount /dev", "devpts", e))?;
    let shm = dev_path.join("shm");
    std::fs::create_dir(&shm).map_err(|e| err("mount /dev", "creating shm", e))?;
    rustix::mount::mount(
        "shm",
        &shm,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        Some(c"mode=1777,size=65536k"),
    )
    .map_err(|e| err("mount /dev", "shm tmpfs", e))?;
    let links = [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    for (name, target) in links {
        std::os::unix::fs::symlink(target, dev_path.join(name))
            .map_err(|e| err("mount /dev", format!("symlink {name}"), e))?;
    }
    Ok(())
}

fn mount_sys(
    root: BorrowedFd<'_>,
    network: Network,
    stubs: &mut Vec<Stub>,
) -> Result<(), HelperError> {
    let target = open_in_root(root, "/sys", CreateAs::Dir, stubs)
        .map_err(|e| err("mount /sys", "creating /sys", e))?;
    if network == Network::None {
        // The step's network namespace is ours: a sysfs of its own, read-only as runc
        // mounts BuildKit's, lists the step's interfaces (`lo` alone in /sys/class/net),
        // not the host's. The host's cgroupfs below /sys/fs/cgroup is bound in read-only.
        mount_fs(
            c"sysfs",
            &fd_path(target.as_fd()),
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            None,
        )
        .map_err(|e| err("mount /sys", "sysfs of the step's network namespace", e))?;
        drop(target);
        let mut ignored = Vec::new();
        let sys = open_in_root(root, "/sys", CreateAs::Nothing, &mut ignored)
            .map_err(|e| err("mount /sys", "reopening /sys", e))?;
        let cgroup = fd_path(sys.as_fd()).join("fs/cgroup");
        if std::path::Path::new("/sys/fs/cgroup").is_dir() && cgroup.is_dir() {
            mount_bind_recursive("/sys/fs/cgroup", &cgroup)
                .map_err(|e| err("mount /sys", "binding the host /sys/fs/cgroup", e))?;
            restrict_mounts(
                &cgroup,
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
            )
            .map_err(|e| err("mount /sys", "making /sys/fs/cgroup read-only", e))?;
        }
        return confine_paths(root, "/sys/");
    }
    // A fresh sysfs needs the network namespace to be ours, which it is not with the host
    // network: bind the host's, then make it and every mount below it read-only. Without
    // that a root build's step (host root's ids) could write sysfs and cgroupfs files.
    mount_bind_recursive("/sys", fd_path(target.as_fd()))
        .map_err(|e| err("mount /sys", "binding the host /sys", e))?;
    drop(target);
    let mut ignored = Vec::new();
    let sys = open_in_root(root, "/sys", CreateAs::Nothing, &mut ignored)
        .map_err(|e| err("mount /sys", "reopening /sys", e))?;
    restrict_mounts(
        &fd_path(sys.as_fd()),
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
    )
    .map_err(|e| {
        err(
            "mount /sys",
            "making /sys read-only (mount_setattr, Linux 5.12)",
            e,
        )
    })?;
    confine_paths(root, "/sys/")
}

fn bind_into(
    root: BorrowedFd<'_>,
    source: &Path,
    target: &str,
    readonly: bool,
    stubs: &mut Vec<Stub>,
) -> Result<(), HelperError> {
    let stage = "bind mount";
    let meta = std::fs::metadata(source)
        .map_err(|e| err(stage, format!("source {}", source.display()), e))?;
    let kind = if meta.is_dir() {
        CreateAs::Dir
    } else {
        CreateAs::File
    };
    let fd = open_in_root(root, target, kind, stubs)
        .map_err(|e| err(stage, format!("target {target}"), e))?;
    mount_bind_recursive(source, fd_path(fd.as_fd()))
        .map_err(|e| err(stage, format!("{} on {target}", source.display()), e))?;
    drop(fd);
    // Sources come from images, other stages and the context: their device nodes must
    // open nothing, as on Docker's bind mounts of them.
    let mut attrs = MOUNT_ATTR_NODEV;
    if readonly {
        attrs |= MOUNT_ATTR_RDONLY;
    }
    let mut ignored = Vec::new();
    let mounted = open_in_root(root, target, CreateAs::Nothing, &mut ignored)
        .map_err(|e| err(stage, format!("reopening {target}"), e))?;
    restrict_mounts(&fd_path(mounted.as_fd()), attrs).map_err(|e| {
        let what = if readonly {
            "read-only, nodev"
        } else {
            "nodev"
        };
        err(stage, format!("making {target} {what}"), e)
    })?;
    Ok(())
}

/// Mounts a fresh tmpfs of at most `size` bytes on `target` (`RUN --mount=type=tmpfs,size=`),
/// with BuildKit's options: `nosuid`, and the tmpfs's own mode 1777.
fn mount_tmpfs(
    root: BorrowedFd<'_>,
    target: &str,
    size: u64,
    stubs: &mut Vec<Stub>,
) -> Result<(), HelperError> {
    let stage = "tmpfs mount";
    let fd = open_in_root(root, target, CreateAs::Dir, stubs)
        .map_err(|e| err(stage, format!("target {target}"), e))?;
    let options = CString::new(format!("size={size}"))
        .map_err(|_| HelperError::new(stage, "a size with a NUL byte".to_string()))?;
    mount_fs(
        c"tmpfs",
        &fd_path(fd.as_fd()),
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(&options),
    )
    .map_err(|e| err(stage, format!("size={size} on {target}"), e))
}

/// Brings `lo` up in a fresh network namespace.
/// Raw libc: rustix's socket calls are behind its `net` feature, and its ioctl is unsafe
/// and generic; two interface ioctls do not warrant either.
fn loopback_up() -> Result<(), HelperError> {
    use std::os::fd::AsRawFd;
    // SAFETY: socket takes integers only and returns a new descriptor.
    let sock =
        cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })
            .map_err(|e| err("network", "socket", e))?;
    // SAFETY: `sock` was just returned by socket and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain integers and byte arrays (and a union of such), for which all
    // zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name from and writes the flags into
    // `req`, a whole ifreq alive across the call.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })
        .map_err(|e| err("network", "SIOCGIFFLAGS lo", e))?;
    // SAFETY: SIOCGIFFLAGS has just set `ifru_flags`, the union field read here; every bit
    // pattern is a valid c_short.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS only reads the name and flags from `req`, alive across the call.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })
        .map_err(|e| err("network", "SIOCSIFFLAGS lo up", e))?;
    Ok(())
}

/// Builds the step's mount namespace and makes the rootfs `/`. Returns the placeholders it
/// had to create in the rootfs.
pub fn setup(spec: &StepSpec) -> Result<Vec<Stub>, HelperError> {
    // Nothing we mount may propagate back to the host.
    mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(|e| err("mount", "making / private", e))?;
    let root_path = mount_root(&spec.rootfs)?;
    let root = open_dir(&root_path).map_err(|e| err("mount rootfs", root_path.display(), e))?;
    let mut stubs = Vec::new();
    mount_proc(root.as_fd(), &mut stubs)?;
    mount_dev(root.as_fd(), &mut stubs)?;
    mount_sys(root.as_fd(), spec.network, &mut stubs)?;
    for file in &spec.etc_files {
        bind_into(root.as_fd(), &file.source, &file.target, false, &mut stubs)?;
    }
    for bind in &spec.binds {
        if let Some(size) = bind.tmpfs_size {
            mount_tmpfs(root.as_fd(), &bind.target, size, &mut stubs)?;
            continue;
        }
        bind_into(
            root.as_fd(),
            &bind.source,
            &bind.target,
            bind.readonly,
            &mut stubs,
        )?;
        if bind.remove_source {
            // The mount holds the file now; its name goes before the command can run.
            std::fs::remove_file(&bind.source).map_err(|e| {
                err(
                    "bind mount",
                    format!("removing the step's copy {}", bind.source.display()),
                    e,
                )
            })?;
        }
    }
    if spec.network == Network::None {
        loopback_up()?;
    }
    // The working directory is created like runc does: it is a real change, not a stub.
    let mut cwd_created = Vec::new();
    open_in_root(root.as_fd(), &spec.cwd, CreateAs::Dir, &mut cwd_created)
        .map_err(|e| err("working directory", &spec.cwd, e))?;

    chdir(&root_path)
        .map_err(|e| err("pivot_root", format!("chdir {}", root_path.display()), e))?;
    pivot_root(c".", c".").map_err(|e| err("pivot_root", root_path.display(), e))?;
    // The old root is now stacked on top of the new one: detach it.
    unmount(c".", UnmountFlags::DETACH)
        .map_err(|e| err("pivot_root", "detaching the old root", e))?;
    chdir(c"/").map_err(|e| err("pivot_root", "chdir /", e))?;
    Ok(stubs)
}
