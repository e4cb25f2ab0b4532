//! The guard in front of laying a stage out in `/`: that deletes and rewrites the file
//! system rbuild itself runs in, so it is only done where `/` says it is meant for it.

use std::path::Path;

/// The file that marks `/` as an in-place root: only rbuild's builder image for restricted
/// pods (and the tests' images) has it. Without it, no stage is ever laid out in `/`.
pub const IN_PLACE_MARKER: &str = "/rbuild/in-place-root";

/// rbuild's own directory in such an image (its binary, its state): never part of a stage.
pub const IN_PLACE_OWN_DIR: &str = "/rbuild";

/// Why `/` must not receive a stage here, `None` when it may: the process is not root (as
/// root a chroot or user namespace serves, and root's mistakes reach everything) and `/`
/// carries [`IN_PLACE_MARKER`], a regular file (not a symlink).
pub fn in_place_root_refusal() -> Option<String> {
    marker_refusal(
        rustix::process::geteuid().as_raw(),
        Path::new(IN_PLACE_MARKER),
    )
}

fn marker_refusal(euid: u32, marker: &Path) -> Option<String> {
    let why = "laying a stage out in `/` replaces the files of the system rbuild runs in";
    if euid == 0 {
        return Some(format!(
            "isolation `restricted` refuses to run as root: {why}, and it is only done by a \
             non-root build user in rbuild's builder image (as root, use `--isolation chroot` \
             or `userns`)"
        ));
    }
    match std::fs::symlink_metadata(marker) {
        Ok(meta) if meta.file_type().is_file() => None,
        Ok(_) => Some(format!(
            "isolation `restricted` refuses to use `/`: {} is not a regular file; {why}, which \
             is only done where that marker says `/` is a builder image's in-place root",
            marker.display()
        )),
        Err(e) => Some(format!(
            "isolation `restricted` refuses to use `/`: no {} ({e}); {why}, which is only done \
             in rbuild's builder image (or an image made for it), whose marker file says so. \
             Run the build in that image, or where user namespaces or chroot work",
            marker.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_a_missing_or_odd_marker_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("in-place-root");
        let missing = marker_refusal(1000, &marker).unwrap();
        assert!(
            missing.contains("no ") && missing.contains("in-place-root"),
            "{missing}"
        );
        std::os::unix::fs::symlink("/etc/passwd", &marker).unwrap();
        let symlink = marker_refusal(1000, &marker).unwrap();
        assert!(symlink.contains("not a regular file"), "{symlink}");
        std::fs::remove_file(&marker).unwrap();
        std::fs::write(&marker, "").unwrap();
        assert_eq!(marker_refusal(1000, &marker), None);
        let root = marker_refusal(0, &marker).unwrap();
        assert!(root.contains("refuses to run as root"), "{root}");
    }
}
