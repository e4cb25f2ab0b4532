//! Root never means host root: as root on a host, a RUN step's ids map to an unprivileged
//! host range (root's /etc/subuid line, else rbuild's reserved block recorded in the store),
//! files it makes belong to that range on disk and to the container's ids in the layer, and
//! a host file of root's that the step can see (put into its cache mount) is neither
//! writable nor readable to it, where an identity-mapped root could do both.
//! Needs root (CI runs as root) and busybox-static.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rbuild_sandbox::root_range::{RootRangeSource, RECORD_FILE, ROOT_RANGE_LEN, WIDE_RANGE_LEN};
use rbuild_testutil::require_root;

mod common;
use common::{ok, rbuild, store_with_busybox};

const CANARY: &str = "host-root-canary-5b1e";

// Every marker is quoted in two parts so that only the step's output, never the command
// line the progress shows, holds it whole.
const DOCKERFILE: &str = r#"FROM busybox:latest
RUN --mount=type=cache,id=rootrange,target=/c \
    echo "UID""MAP $(cat /proc/self/uid_map)"; echo "GID""MAP $(cat /proc/self/gid_map)"; \
    touch /c/made-by-step /made-by-step; \
    mkdir /owned && touch /owned/f /c/f1000 && chown 1000:1000 /owned/f /c/f1000; \
    if [ -e /c/canary ]; then \
      if echo pwned > /c/canary; then echo CANARY-"WRITTEN"; else echo CANARY-"WRITE-REFUSED"; fi; \
      if cat /c/canary; then echo CANARY-"READ"; else echo CANARY-"READ-REFUSED"; fi; \
      if chmod 666 /c/canary; then echo CANARY-"CHMODDED"; else echo CANARY-"CHMOD-REFUSED"; fi; \
    fi
"#;

/// The cache mount directory of id `rootrange` in `store`.
fn cache_dir(store: &Path) -> PathBuf {
    let parent = store.join("cache-mounts");
    std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.is_dir()
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("rootrange-")
        })
        .unwrap_or_else(|| panic!("no cache mount directory in {}", parent.display()))
}

/// (uid, gid) of `path` in the topmost layer of the OCI archive `archive` that has it.
fn layer_owner(archive: &Path, path: &str) -> (u64, u64) {
    let mut blobs = std::collections::BTreeMap::new();
    let mut outer = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in outer.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        blobs.insert(name, data);
    }
    let json = |p: &str| -> serde_json::Value { serde_json::from_slice(&blobs[p]).unwrap() };
    let blob_path =
        |d: &serde_json::Value| format!("blobs/{}", d.as_str().unwrap().replacen(':', "/", 1));
    let index = json("index.json");
    let manifest = json(&blob_path(&index["manifests"][0]["digest"]));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find_map(|layer| {
            let entries =
                rbuild_layer::list_entries(blobs[&blob_path(&layer["digest"])].as_slice()).unwrap();
            entries
                .iter()
                .find(|e| e.path.to_string_lossy().trim_end_matches('/') == path)
                .map(|e| (e.uid, e.gid))
        })
        .unwrap_or_else(|| panic!("{path} is in no layer"))
}

/// The `START COUNT` of the line `label 0 START COUNT` the step printed.
fn printed_map(output: &str, label: &str) -> (u64, u64) {
    let line = output
        .lines()
        .find_map(|l| l.split_once(&format!("{label} ")).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no {label} line in:\n{output}"));
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(fields.len(), 3, "{line}");
    assert_eq!(fields[0], 0, "container 0 must be mapped: {line}");
    (fields[1], fields[2])
}

#[test]
fn root_steps_run_as_an_unprivileged_range_and_layers_keep_container_owners() {
    require_root("a root build");
    let store = store_with_busybox();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), DOCKERFILE).unwrap();
    let build = |tag: &str| -> String {
        let out = ok(rbuild(store.path())
            .args(["build", "--progress", "plain", "--no-cache", "-t", tag])
            .arg(ctx.path())
            .output()
            .unwrap());
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };

    // First build: the range, and the owners of what the step makes.
    let output = build("rr:1");
    let (uid_start, uid_count) = printed_map(&output, "UIDMAP");
    let (gid_start, gid_count) = printed_map(&output, "GIDMAP");
    assert!(uid_start > 0 && gid_start > 0, "{output}");
    let range = rbuild_sandbox::root_range::root_range(store.path())
        .unwrap()
        .expect("a host's root gets a range");
    assert_eq!(
        (uid_count, gid_count),
        (range.count.into(), range.count.into())
    );
    assert!(range.count >= ROOT_RANGE_LEN);
    if range.source == RootRangeSource::Reserved && range.count != ROOT_RANGE_LEN {
        assert_eq!(range.count, WIDE_RANGE_LEN);
    }
    assert_eq!(
        (u64::from(range.uid_start), u64::from(range.gid_start)),
        (uid_start, gid_start)
    );
    if range.source == RootRangeSource::Reserved {
        assert!(store.path().join(RECORD_FILE).is_file());
    }

    let cache = cache_dir(store.path());
    let made = std::fs::symlink_metadata(cache.join("made-by-step")).unwrap();
    assert_eq!(
        (u64::from(made.uid()), u64::from(made.gid())),
        (uid_start, gid_start)
    );
    let f1000 = std::fs::symlink_metadata(cache.join("f1000")).unwrap();
    assert_eq!(
        (u64::from(f1000.uid()), u64::from(f1000.gid())),
        (uid_start + 1000, gid_start + 1000)
    );

    let archive = ctx.path().join("rr.tar");
    ok(rbuild(store.path())
        .args(["save", "rr:1", "-o"])
        .arg(&archive)
        .output()
        .unwrap());
    assert_eq!(layer_owner(&archive, "made-by-step"), (0, 0));
    assert_eq!(layer_owner(&archive, "owned/f"), (1000, 1000));

    // Second build: the same range again (recorded), and a host file of root's in reach.
    let canary = cache.join("canary");
    std::fs::write(&canary, CANARY).unwrap();
    std::os::unix::fs::lchown(&canary, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o600)).unwrap();
    let output = build("rr:2");
    assert_eq!(printed_map(&output, "UIDMAP"), (uid_start, uid_count));
    for refused in [
        "CANARY-WRITE-REFUSED",
        "CANARY-READ-REFUSED",
        "CANARY-CHMOD-REFUSED",
    ] {
        assert!(output.contains(refused), "{refused} missing:\n{output}");
    }
    assert!(
        !output.contains(CANARY),
        "the step read the canary:\n{output}"
    );
    for done in ["CANARY-WRITTEN", "CANARY-READ\n", "CANARY-CHMODDED"] {
        assert!(!output.contains(done), "{done}:\n{output}");
    }
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), CANARY);
    let md = std::fs::metadata(&canary).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o777), (0, 0o600));
}

#[test]
fn a_cache_filled_with_container_ids_as_host_ids_is_shifted_into_the_range() {
    require_root("a root build");
    let store = store_with_busybox();
    // What an identity-mapped root build (or a remote cache import) left: host ids that
    // are container ids, a setuid file, a container id above 65535 and an owner beyond
    // every id the range maps.
    let dir = {
        let opened = rbuild_store::Store::open(store.path()).unwrap();
        rbuild_executor::cache_mount_dir(&opened, "old").unwrap()
    };
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/old"), "old\n").unwrap();
    std::fs::write(dir.join("suid"), "x").unwrap();
    std::os::unix::fs::lchown(dir.join("suid"), Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(dir.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(dir.join("high"), "x").unwrap();
    std::os::unix::fs::lchown(dir.join("high"), Some(70000), Some(70000)).unwrap();
    let range = rbuild_sandbox::root_range::root_range(store.path())
        .unwrap()
        .expect("a host's root gets a range");
    // Below the range's host ids (so not one of its files) and no container id of it.
    let beyond = range.count.min(range.uid_start - 1);
    std::fs::write(dir.join("far"), "x").unwrap();
    std::os::unix::fs::lchown(dir.join("far"), Some(beyond), Some(beyond)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();

    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox:latest\nRUN --mount=type=cache,id=old,target=/c \
         echo new >> /c/sub/old && touch /c/sub/new && ls -ln /c /c/sub\n",
    )
    .unwrap();
    ok(rbuild(store.path())
        .args(["build", "--progress", "plain", "-t", "old:1"])
        .arg(ctx.path())
        .output()
        .unwrap());
    let owner = |p: &str| {
        let md = std::fs::symlink_metadata(dir.join(p)).unwrap();
        (md.uid(), md.gid(), md.mode() & 0o7777)
    };
    let (u, g) = (range.uid_start, range.gid_start);
    assert_eq!(owner(""), (u, g, 0o755));
    assert_eq!(owner("sub/old"), (u, g, 0o644));
    assert_eq!(owner("sub/new"), (u, g, 0o644));
    assert_eq!(owner("suid"), (u + 1000, g + 1000, 0o4755));
    // A container id the range maps (the wide range does) is shifted; one it does not
    // map (a range of 65536 from /etc/subuid) is left alone.
    let high = if range.count > 70000 {
        (u + 70000, g + 70000, 0o644)
    } else {
        (70000, 70000, 0o644)
    };
    assert_eq!(owner("high"), high);
    if beyond >= range.count {
        assert_eq!(owner("far"), (beyond, beyond, 0o644));
    }
    assert_eq!(owner("link").0, u);
    assert_eq!(
        std::fs::read_to_string(dir.join("sub/old")).unwrap(),
        "old\nnew\n"
    );
    // The link was not followed.
    assert_eq!(std::fs::metadata("/etc/passwd").unwrap().uid(), 0);
}
