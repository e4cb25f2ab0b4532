//! The store is private: another local user reaches nothing in it, not even a setuid file
//! or a device node an image shipped. Needs root (to make such files and switch users;
//! CI runs as root) and util-linux's runuser.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use rbuild_store::Store;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Runs `script` with `sh` as user `nobody`; returns (success, output).
fn as_nobody(script: &str) -> (bool, String) {
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", "sh", "-c", script])
        .output()
        .expect("runuser (util-linux) is needed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn other_users_reach_nothing_in_the_store() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("store");
    let store = Store::open(&root).unwrap();
    let trees = store.state_dir("trees").unwrap();
    let build = store.state_dir("build").unwrap();
    for path in [&root, &trees, &build] {
        assert_eq!(mode(path), 0o700, "{}", path.display());
    }
    // What extracting an untrusted image as root leaves in a tree: a setuid-root shell and
    // a 0666 device node, in directories open to all.
    let tree = trees.join("sha256-test/bin");
    std::fs::create_dir_all(&tree).unwrap();
    for d in [trees.join("sha256-test"), tree.clone()] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let shell = tree.join("rootshell");
    std::fs::copy("/bin/sh", &shell).unwrap();
    std::fs::set_permissions(&shell, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let node = tree.join("null");
    let c_node = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
    // SAFETY: mknod and chmod with a NUL-terminated path.
    unsafe {
        assert_eq!(
            libc::mknod(c_node.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)),
            0
        );
        libc::chmod(c_node.as_ptr(), 0o666);
    }
    let (ran, out) = as_nobody(&format!("{} -c 'echo ran'", shell.display()));
    assert!(!ran && !out.contains("ran\n"), "{out}");
    assert!(out.contains("Permission denied"), "{out}");
    let (wrote, out) = as_nobody(&format!("echo x > {}", node.display()));
    assert!(!wrote && out.contains("Permission denied"), "{out}");

    // A store made before (0755 everywhere) is closed when opened again.
    drop(store);
    for path in [&root, &trees, &build] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (ran, out) = as_nobody(&format!("{} -c 'echo ran'", shell.display()));
    assert!(
        ran && out.contains("ran"),
        "the setup must be reachable when open: {out}"
    );
    let store = Store::open(&root).unwrap();
    store.state_dir("trees").unwrap();
    store.state_dir("build").unwrap();
    for path in [&root, &trees, &build] {
        assert_eq!(mode(path), 0o700, "{}", path.display());
    }
    let (ran, out) = as_nobody(&format!("{} -c 'echo ran'", shell.display()));
    assert!(!ran && !out.contains("ran\n"), "{out}");
}
