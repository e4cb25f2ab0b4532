//! A minimal root filesystem from Debian's static busybox.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

/// Debian's static busybox (package `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// The applets a build test's RUN steps use.
const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "sleep", "true", "false", "test", "env", "mkdir", "rm", "cp", "id",
    "touch", "wget", "grep", "printf",
];

/// Writes a tiny rootfs into `dir`: /bin/busybox with applet links, /etc/passwd, /etc/group
/// and /tmp.
pub fn busybox_rootfs(dir: &Path) {
    // Debian ships it in /bin (usrmerge makes /usr/bin the same).
    let source = [BUSYBOX, "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file());
    let source = source.unwrap_or_else(|| {
        panic!("{BUSYBOX} is missing: install the Debian package `busybox-static`")
    });
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::create_dir_all(dir.join("tmp")).unwrap();
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy(source, bin.join("busybox")).unwrap_or_else(|e| panic!("cannot copy {source}: {e}"));
    for applet in APPLETS {
        symlink("busybox", bin.join(applet)).unwrap();
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
}
