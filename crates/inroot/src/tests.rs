//! The resolver against hostile roots: `..`, absolute and relative symlinks out, symlinks
//! swapped in while the walk creates, and the semantics its three callers rely on.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};

use super::*;

/// A root inside a temporary directory, with a file beside the root that a resolution
/// escaping it would find.
fn hostile_root() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(dir.path().join("secret"), "host").unwrap();
    (dir, root)
}

fn ino(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().ino()
}

fn fd_ino(fd: &OwnedFd) -> u64 {
    rustix::fs::fstat(fd).unwrap().st_ino
}

/// A create function making directories (and files for the last component when `files`).
fn mkdir_all(
    created: &mut Vec<PathBuf>,
    files: bool,
) -> impl FnMut(&Missing<'_>) -> io::Result<()> + '_ {
    move |missing| {
        if missing.last && files {
            rustix::fs::openat(
                missing.parent,
                missing.name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )?;
        } else {
            rustix::fs::mkdirat(missing.parent, missing.name, Mode::from_raw_mode(0o755))?;
        }
        created.push(missing.path());
        Ok(())
    }
}

#[test]
fn dotdot_in_the_path_clamps_at_the_root() {
    let (dir, root) = hostile_root();
    let root_fd = open_root(&root).unwrap();
    for path in ["../../secret", "/../../../secret", "etc/../../secret"] {
        let err = resolve(
            root_fd.as_fd(),
            Path::new(path),
            Symlinks::ResolveInRoot,
            None,
        )
        .unwrap_err();
        assert!(err.is_not_found(), "{path}: {err}");
    }
    let found = resolve(
        root_fd.as_fd(),
        Path::new("../etc/../.."),
        Symlinks::ResolveInRoot,
        None,
    )
    .unwrap();
    assert_eq!(found.path, PathBuf::new());
    assert_eq!(fd_ino(&found.fd), ino(&root));
    assert!(dir.path().join("secret").exists());
}

#[test]
fn absolute_and_relative_symlinks_out_stay_inside() {
    let (dir, root) = hostile_root();
    symlink("/../../..", root.join("etc/up")).unwrap();
    symlink("../../../secret", root.join("etc/passwd")).unwrap();
    symlink(dir.path().join("secret"), root.join("etc/shadow")).unwrap();
    let root_fd = open_root(&root).unwrap();
    // The host's files of those names are never the answer.
    for path in ["/etc/passwd", "/etc/shadow", "/etc/up/secret"] {
        let err = resolve(
            root_fd.as_fd(),
            Path::new(path),
            Symlinks::ResolveInRoot,
            None,
        )
        .unwrap_err();
        assert!(err.is_not_found(), "{path}: {err}");
    }
    let etc = resolve(
        root_fd.as_fd(),
        Path::new("/etc/up/etc"),
        Symlinks::ResolveInRoot,
        None,
    )
    .unwrap();
    assert_eq!(etc.path, Path::new("etc"));
    assert_eq!(fd_ino(&etc.fd), ino(&root.join("etc")));
    // Once the root has such a file, that one is found.
    fs::write(root.join("secret"), "image").unwrap();
    let found = resolve(
        root_fd.as_fd(),
        Path::new("/etc/passwd"),
        Symlinks::ResolveInRoot,
        None,
    )
    .unwrap();
    assert_eq!(found.path, Path::new("secret"));
    assert_eq!(found.file_type, FileType::RegularFile);
    assert_eq!(fd_ino(&found.fd), ino(&root.join("secret")));
}

#[test]
fn refused_symlinks_fail() {
    let (_dir, root) = hostile_root();
    symlink("etc", root.join("link")).unwrap();
    let root_fd = open_root(&root).unwrap();
    let err = resolve(root_fd.as_fd(), Path::new("link/x"), Symlinks::Refuse, None).unwrap_err();
    assert!(
        matches!(&err, Error::Symlink { path } if path == Path::new("link")),
        "{err}"
    );
}

#[test]
fn symlink_loops_fail_with_eloop() {
    let (_dir, root) = hostile_root();
    symlink("b", root.join("a")).unwrap();
    symlink("a", root.join("b")).unwrap();
    let root_fd = open_root(&root).unwrap();
    let err = resolve(
        root_fd.as_fd(),
        Path::new("a"),
        Symlinks::ResolveInRoot,
        None,
    )
    .unwrap_err();
    assert!(matches!(err, Error::TooManySymlinks { .. }), "{err}");
    assert_eq!(io::Error::from(err).raw_os_error(), Some(libc_eloop()));
}

fn libc_eloop() -> i32 {
    Errno::LOOP.raw_os_error()
}

#[test]
fn a_file_in_the_middle_is_not_a_directory() {
    let (_dir, root) = hostile_root();
    fs::write(root.join("etc/file"), "x").unwrap();
    let root_fd = open_root(&root).unwrap();
    let err = resolve(
        root_fd.as_fd(),
        Path::new("/etc/file/x"),
        Symlinks::ResolveInRoot,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::NotADirectory { path } if path == Path::new("etc/file")),
        "{err}"
    );
    assert_eq!(
        io::Error::from(err).raw_os_error(),
        Some(Errno::NOTDIR.raw_os_error())
    );
}

#[test]
fn creates_missing_parents_and_dangling_link_targets_inside() {
    let (dir, root) = hostile_root();
    // A dangling link out of the root: what it points to is created inside.
    symlink("../../../../outside", root.join("etc/hosts")).unwrap();
    let root_fd = open_root(&root).unwrap();
    let mut created = Vec::new();
    let file = resolve(
        root_fd.as_fd(),
        Path::new("/etc/hosts"),
        Symlinks::ResolveInRoot,
        Some(&mut mkdir_all(&mut created, true)),
    )
    .unwrap();
    assert_eq!(file.path, Path::new("outside"));
    assert_eq!(file.file_type, FileType::RegularFile);
    assert!(root.join("outside").is_file());
    assert!(!dir.path().join("outside").exists());
    assert_eq!(created, vec![PathBuf::from("outside")]);

    let mut created = Vec::new();
    let made = resolve(
        root_fd.as_fd(),
        Path::new("a/b/c"),
        Symlinks::ResolveInRoot,
        Some(&mut mkdir_all(&mut created, false)),
    )
    .unwrap();
    assert_eq!(made.file_type, FileType::Directory);
    assert_eq!(
        created,
        vec![
            PathBuf::from("a"),
            PathBuf::from("a/b"),
            PathBuf::from("a/b/c")
        ]
    );
    assert_eq!(fd_ino(&made.fd), ino(&root.join("a/b/c")));
}

#[test]
fn a_symlink_swapped_in_for_a_created_directory_is_resolved_inside() {
    let (dir, root) = hostile_root();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let root_fd = open_root(&root).unwrap();
    // An attacker wins the race: where `b` was just created, a symlink out now stands.
    let mut create = |missing: &Missing<'_>| -> io::Result<()> {
        if missing.name == "b" {
            symlink(&outside, root.join(missing.path()))?;
            return Ok(());
        }
        rustix::fs::mkdirat(missing.parent, missing.name, Mode::from_raw_mode(0o755))?;
        Ok(())
    };
    let made = resolve(
        root_fd.as_fd(),
        Path::new("/a/b/c"),
        Symlinks::ResolveInRoot,
        Some(&mut create),
    )
    .unwrap();
    // The link's absolute target was taken inside the root.
    let inside = root.join(outside.strip_prefix("/").unwrap()).join("c");
    assert!(inside.is_dir(), "{inside:?}");
    assert_eq!(fd_ino(&made.fd), ino(&inside));
    assert!(made.path.starts_with(outside.strip_prefix("/").unwrap()));
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote outside the root"
    );
}

#[test]
fn a_parent_swapped_for_a_symlink_during_the_walk_does_not_redirect_creation() {
    let (dir, root) = hostile_root();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::create_dir_all(root.join("a")).unwrap();
    let root_fd = open_root(&root).unwrap();
    // Once `a` is resolved, it is renamed away and a symlink out of the root put in its
    // place: creating `a/b` goes through the descriptor of the real `a`, not the new link.
    let mut create = |missing: &Missing<'_>| -> io::Result<()> {
        if root.join("a").is_dir() && !root.join("a").is_symlink() {
            fs::rename(root.join("a"), root.join("moved"))?;
            symlink(&outside, root.join("a"))?;
        }
        rustix::fs::mkdirat(missing.parent, missing.name, Mode::from_raw_mode(0o755))?;
        Ok(())
    };
    resolve(
        root_fd.as_fd(),
        Path::new("/a/b"),
        Symlinks::ResolveInRoot,
        Some(&mut create),
    )
    .unwrap();
    assert!(root.join("moved/b").is_dir());
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote outside the root"
    );
}

#[test]
fn resolve_parent_does_not_follow_the_final_symlink() {
    let (dir, root) = hostile_root();
    symlink(dir.path().join("secret"), root.join("etc/passwd")).unwrap();
    symlink("/etc", root.join("etc-link")).unwrap();
    let root_fd = open_root(&root).unwrap();
    let (parent, name) = resolve_parent(
        root_fd.as_fd(),
        Path::new("/etc-link/passwd"),
        Symlinks::ResolveInRoot,
        None,
    )
    .unwrap();
    assert_eq!(parent.path, Path::new("etc"));
    assert_eq!(name.as_deref(), Some(OsStr::new("passwd")));
    // The final name is the link itself, to be replaced through the parent's descriptor.
    let stat =
        rustix::fs::statat(&parent.fd, "passwd", rustix::fs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
    assert_eq!(FileType::from_raw_mode(stat.st_mode), FileType::Symlink);
    let (root_itself, none) = resolve_parent(
        root_fd.as_fd(),
        Path::new("/etc/.."),
        Symlinks::ResolveInRoot,
        None,
    )
    .unwrap();
    assert_eq!((root_itself.path, none), (PathBuf::new(), None));
    let (_, none) =
        resolve_parent(root_fd.as_fd(), Path::new("/"), Symlinks::Refuse, None).unwrap();
    assert_eq!(none, None);
}

#[test]
fn host_paths_for_reading_stay_inside() {
    let (dir, root) = hostile_root();
    fs::write(root.join("etc/real"), "x").unwrap();
    symlink("/etc/real", root.join("etc/passwd")).unwrap();
    symlink("../../../secret", root.join("etc/group")).unwrap();
    assert_eq!(
        host_path_in_root(&root, "etc/passwd").unwrap(),
        Some(root.join("etc/real"))
    );
    assert_eq!(host_path_in_root(&root, "/etc/group").unwrap(), None);
    assert_eq!(host_path_in_root(&root, "../../etc/nothing").unwrap(), None);
    assert_eq!(host_path_in_root(&root, "/").unwrap(), Some(root.clone()));
    let err = host_path_in_root(&root, "/etc/real/x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(Errno::NOTDIR.raw_os_error()));
    assert_eq!(
        host_path_in_root(&dir.path().join("gone"), "/etc").unwrap(),
        None
    );
}

#[test]
fn resolve_existing_resolves_what_exists_and_keeps_the_rest() {
    let (dir, root) = hostile_root();
    fs::create_dir_all(root.join("real/dir")).unwrap();
    symlink("/real", root.join("abs")).unwrap();
    symlink("../../../../real", root.join("up")).unwrap();
    symlink(dir.path().join("secret"), root.join("host")).unwrap();
    let root_fd = open_root(&root).unwrap();
    let existing = |path: &str| resolve_existing(root_fd.as_fd(), Path::new(path)).unwrap();
    assert_eq!(existing("/abs/dir/x"), Path::new("real/dir/x"));
    assert_eq!(existing("/up/dir"), Path::new("real/dir"));
    // From the first missing component on, the path is taken as written.
    assert_eq!(existing("/missing/../real/./y"), Path::new("real/y"));
    assert_eq!(existing("/../../etc"), Path::new("etc"));
    // A link to a host file names the same path inside the root, which does not exist.
    assert_eq!(
        existing("/host"),
        dir.path().join("secret").strip_prefix("/").unwrap()
    );
}

#[test]
fn open_reads_through_links_inside_the_root_only() {
    use std::io::Read;
    let (_dir, root) = hostile_root();
    fs::write(root.join("etc/real"), "image").unwrap();
    symlink("/etc/real", root.join("etc/link")).unwrap();
    symlink("../../../secret", root.join("etc/out")).unwrap();
    let root_fd = open_root(&root).unwrap();
    let mut text = String::new();
    std::fs::File::from(open(root_fd.as_fd(), Path::new("etc/link"), OFlags::RDONLY).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "image");
    let err = open(root_fd.as_fd(), Path::new("etc/out"), OFlags::RDONLY).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    // The root itself opens as a directory.
    let fd = open(
        root_fd.as_fd(),
        Path::new("/"),
        OFlags::RDONLY | OFlags::DIRECTORY,
    )
    .unwrap();
    assert_eq!(fd_ino(&fd), ino(&root));
}
