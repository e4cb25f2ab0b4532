//! `rbuild images/inspect/tag/rmi/prune/save/load` against real stores in temp dirs.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use rbuild_image::{media_types, Digest, ImageConfig};
use rbuild_store::Store;

fn rbuild(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("RBUILD_ROOT")
        .output()
        .unwrap()
}

fn ok(root: &Path, args: &[&str]) -> String {
    let out = rbuild(root, args);
    assert!(
        out.status.success(),
        "rbuild {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A one-layer image (gzip layer built here), tagged `name` if given; returns (manifest, config)
/// digests.
fn make_image(root: &Path, name: Option<&str>, content: &str) -> (Digest, Digest) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    tar.append_data(&mut header, "hello.txt", content.as_bytes())
        .unwrap();
    let raw = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    let gz = gz.finish().unwrap();

    let store = Store::open(root).unwrap();
    let layer = store.put_bytes(&gz, None).unwrap();
    let mut config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        created: Some("2020-01-01T00:00:00Z".into()),
        ..Default::default()
    };
    config.rootfs.diff_ids.push(Digest::of(&raw));
    config.config.cmd = Some(vec!["cat".into(), "/hello.txt".into()]);
    let record = store
        .put_image(&config, &[layer.descriptor(media_types::OCI_LAYER_GZIP)])
        .unwrap();
    if let Some(name) = name {
        store.tag(name, &record.manifest).unwrap();
    }
    (record.manifest.digest, record.config)
}

fn blob_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("oci/blobs/sha256"))
        .unwrap()
        .count()
}

#[test]
fn images_inspect_tag_rmi_prune() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (manifest, id) = make_image(root, Some("app:1"), "one");

    let table = ok(root, &["images"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("IMAGE ID"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("app ") && lines[1].contains(" 1 "),
        "{table}"
    );
    assert!(
        lines[1].contains(id.short()) && lines[1].contains("years ago"),
        "{table}"
    );

    ok(root, &["tag", "app:1", "registry.example:5000/team/app:2"]);
    let json: serde_json::Value = serde_json::from_str(&ok(root, &["images", "--json"])).unwrap();
    assert_eq!(
        json[0]["names"],
        serde_json::json!([
            "docker.io/library/app:1",
            "registry.example:5000/team/app:2"
        ])
    );
    assert_eq!(json[0]["id"], id.to_string());

    let inspect: serde_json::Value =
        serde_json::from_str(&ok(root, &["inspect", id.short()])).unwrap();
    assert_eq!(inspect[0]["ManifestDigest"], manifest.to_string());
    assert_eq!(
        inspect[0]["Config"]["config"]["Cmd"],
        serde_json::json!(["cat", "/hello.txt"])
    );
    assert_eq!(
        inspect[0]["Manifest"]["layers"][0]["mediaType"],
        media_types::OCI_LAYER_GZIP
    );

    // By id with two names: refused without --force.
    let out = rbuild(root, &["rmi", id.short()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("several names"));
    let out = ok(root, &["rmi", "app:1"]);
    assert_eq!(out.trim(), "Untagged: app:1");
    assert_eq!(blob_count(root), 3, "image still has a name");

    let out = rbuild(root, &["rmi", "nope:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such image: nope:1"));

    let out = ok(root, &["rmi", "registry.example:5000/team/app:2"]);
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    assert_eq!(blob_count(root), 0, "rmi frees the last name's blobs");
    assert_eq!(ok(root, &["images", "-q"]), "");

    // prune removes untagged images (a build without -t) and blobs nothing uses.
    let (_, kept_id) = make_image(root, Some("kept:1"), "kept");
    let (untagged_manifest, _) = make_image(root, None, "untagged");
    let stray = Store::open(root)
        .unwrap()
        .put_bytes(b"unused", None)
        .unwrap();
    assert_eq!(blob_count(root), 7);
    let out = ok(root, &["prune"]);
    assert!(
        out.contains(&format!("Deleted untagged image: {untagged_manifest}")),
        "{out}"
    );
    assert!(out.contains("Removed 4 blobs"), "{out}");
    assert!(out.contains("total reclaimed space"), "{out}");
    assert!(!Store::open(root).unwrap().has_blob(&stray.digest));
    assert_eq!(blob_count(root), 3);
    assert_eq!(ok(root, &["images", "-q"]).trim(), kept_id.short());
}

#[test]
fn save_and_load_round_trip_in_both_formats() {
    let src = tempfile::tempdir().unwrap();
    let (manifest, id) = make_image(src.path(), Some("localhost:5000/app:v1"), "payload");
    let archives = tempfile::tempdir().unwrap();
    for format in ["docker", "oci"] {
        let file = archives.path().join(format!("{format}.tar"));
        ok(
            src.path(),
            &[
                "save",
                "localhost:5000/app:v1",
                "-o",
                file.to_str().unwrap(),
                "--format",
                format,
            ],
        );
        let names: Vec<String> = tar::Archive::new(std::fs::File::open(&file).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"index.json".to_string()), "{names:?}");
        assert_eq!(
            names.contains(&"manifest.json".to_string()),
            format == "docker",
            "{names:?}"
        );

        let dst = tempfile::tempdir().unwrap();
        let out = ok(dst.path(), &["load", "-i", file.to_str().unwrap()]);
        assert_eq!(out.trim(), "Loaded image: localhost:5000/app:v1");
        let inspect: serde_json::Value =
            serde_json::from_str(&ok(dst.path(), &["inspect", "localhost:5000/app:v1"])).unwrap();
        assert_eq!(
            inspect[0]["ManifestDigest"],
            manifest.to_string(),
            "{format}"
        );
        assert_eq!(inspect[0]["Id"], id.to_string(), "{format}");
        assert!(Store::open(dst.path()).unwrap().fsck().unwrap().is_ok());
    }
    let out = rbuild(
        src.path(),
        &[
            "load",
            "-i",
            archives.path().join("missing.tar").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.tar"));
}

#[test]
fn rmi_removes_a_name_whose_manifest_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = make_image(dir.path(), Some("broken:1"), "x");
    let blob = dir.path().join("oci/blobs/sha256").join(manifest.hex());
    std::fs::write(&blob, b"not a manifest").unwrap();
    let out = rbuild(dir.path(), &["images"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(manifest.hex()));
    assert_eq!(
        ok(dir.path(), &["rmi", "broken:1"]).trim(),
        "Untagged: broken:1"
    );
    assert_eq!(ok(dir.path(), &["images", "-q"]), "");
    assert!(
        !blob.exists(),
        "the damaged blob is collected with the image"
    );
}
