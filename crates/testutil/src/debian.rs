//! A minimal Debian bookworm root filesystem made with `debootstrap --variant=minbase` from
//! the mirror this machine's apt already uses (no image registry needed).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's debootstrap (package `debootstrap`).
pub const DEBOOTSTRAP: &str = "/usr/sbin/debootstrap";

/// Writes a Debian bookworm minbase into `dir` (which must not exist or be empty). Takes a
/// few minutes: call it once per test run. The mirror is `RBUILD_TEST_DEBIAN_MIRROR` when
/// set, else the first bookworm `deb` source of /etc/apt/sources.list(.d).
pub fn debian_rootfs(dir: &Path) {
    crate::require_binary(DEBOOTSTRAP, "debootstrap");
    let mirror = std::env::var("RBUILD_TEST_DEBIAN_MIRROR")
        .ok()
        .or_else(apt_mirror)
        .unwrap_or_else(|| {
            panic!(
                "no bookworm mirror in /etc/apt/sources.list or /etc/apt/sources.list.d; set \
                 RBUILD_TEST_DEBIAN_MIRROR"
            )
        });
    let out = Command::new(DEBOOTSTRAP)
        .args(["--variant=minbase", "bookworm"])
        .arg(dir)
        .arg(&mirror)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {DEBOOTSTRAP}: {e}"));
    assert!(
        out.status.success(),
        "debootstrap of bookworm from {mirror} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// [`debian_rootfs`] as an image's root filesystem: the device nodes debootstrap made in
/// `/dev` removed (an image has an empty `/dev`; the runtime mounts one).
pub fn debian_image_rootfs(dir: &Path) {
    debian_rootfs(dir);
    let dev = dir.join("dev");
    let entries = std::fs::read_dir(&dev).unwrap_or_else(|e| panic!("{}: {e}", dev.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

/// The mirror this machine's apt uses for bookworm.
pub fn apt_mirror() -> Option<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .find_map(|text| bookworm_mirror_in(&text))
}

/// The URI of the first bookworm `deb` source in one-line (`.list`) or deb822 (`.sources`)
/// text.
pub fn bookworm_mirror_in(text: &str) -> Option<String> {
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"deb") {
            continue;
        }
        let mut i = 1;
        if words.get(i).is_some_and(|w| w.starts_with('[')) {
            while i < words.len() && !words[i].ends_with(']') {
                i += 1;
            }
            i += 1;
        }
        if words.get(i + 1) == Some(&"bookworm") {
            return words.get(i).map(|s| s.to_string());
        }
    }
    for para in text.split("\n\n") {
        let field = |name: &str| -> Vec<String> {
            para.lines()
                .find(|l| l.to_ascii_lowercase().starts_with(name))
                .map(|l| {
                    l[name.len()..]
                        .split_whitespace()
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default()
        };
        if field("types:").iter().any(|t| t == "deb")
            && field("suites:").iter().any(|s| s == "bookworm")
        {
            return field("uris:").into_iter().next();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::bookworm_mirror_in;

    #[test]
    fn finds_the_bookworm_mirror_in_both_apt_formats() {
        let one_line = "# x\ndeb [arch=amd64] http://m.example/debian bookworm main\n";
        assert_eq!(
            bookworm_mirror_in(one_line).as_deref(),
            Some("http://m.example/debian")
        );
        let deb822 = "Types: deb\nURIs: http://s.example/debian-security\nSuites: \
                      bookworm-security\n\nTypes: deb\nURIs: http://m.example/debian\nSuites: \
                      bookworm bookworm-updates\nComponents: main\n";
        assert_eq!(
            bookworm_mirror_in(deb822).as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(
            bookworm_mirror_in("deb http://x.example/d trixie main\n"),
            None
        );
    }
}
