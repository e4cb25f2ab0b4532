//! `rbuild pull/push` (progress modes, multi-platform indexes) against a real
//! `docker-registry`, and `rbuild fsck` on a store with a corrupted blob.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use rbuild_image::{media_types, Descriptor, Digest, ImageConfig, Index, Platform};
use rbuild_store::Store;
use rbuild_testutil::Registry;

fn rbuild(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("RBUILD_ROOT")
        // No credentials from this machine's Docker config.
        .env("DOCKER_CONFIG", root.join("docker-config"))
        .output()
        .unwrap()
}

/// Runs rbuild, expecting success; returns (stdout, stderr).
fn ok(root: &Path, args: &[&str]) -> (String, String) {
    let out = rbuild(root, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "rbuild {args:?} failed: {stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

/// A one-layer image for `arch`; returns its manifest descriptor (with the platform set).
fn make_image(store: &Store, arch: &str, content: &str) -> Descriptor {
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
    let layer = store.put_bytes(&gz.finish().unwrap(), None).unwrap();
    let mut config = ImageConfig {
        architecture: arch.into(),
        os: "linux".into(),
        ..Default::default()
    };
    config.rootfs.diff_ids.push(Digest::of(&raw));
    let record = store
        .put_image(&config, &[layer.descriptor(media_types::OCI_LAYER_GZIP)])
        .unwrap();
    let mut desc = record.manifest;
    desc.platform = Some(Platform::new("linux", arch, ""));
    desc
}

#[test]
fn push_and_pull_report_each_blob_in_plain_json_and_quiet_modes() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = Store::open(&root).unwrap();
    let image = make_image(&store, "amd64", "hello");
    store.tag("app:1", &image).unwrap();
    drop(store);
    let host = registry.host();

    let dest = format!("{host}/cli/app:1");
    let (stdout, stderr) = ok(&root, &["push", "app:1", &dest]);
    assert_eq!(stdout.trim(), format!("{dest}: pushed {}", image.digest));
    // The layer and the config, each with a start and an end line.
    assert_eq!(stderr.matches("Pushing sha256:").count(), 2, "{stderr}");
    assert_eq!(
        stderr.matches("\nPushed sha256:").count()
            + usize::from(stderr.starts_with("Pushed sha256:")),
        2,
        "{stderr}"
    );
    assert!(
        stderr.contains(" B\n") || stderr.contains("KiB"),
        "sizes: {stderr}"
    );

    let (_, stderr) = ok(&root, &["push", "app:1", &dest]);
    assert_eq!(
        stderr.matches("Layer already exists sha256:").count(),
        2,
        "{stderr}"
    );
    assert!(!stderr.contains("Pushing"), "{stderr}");

    // JSON: one event per line; another repository of the same registry mounts.
    let other = format!("{host}/cli/other:1");
    let (_, stderr) = ok(&root, &["push", "--progress", "json", "app:1", &other]);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let mounted: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "blob_mounted")
        .collect();
    assert_eq!(mounted.len(), 2, "{stderr}");
    assert!(mounted.iter().all(|e| e["from"] == "cli/app"), "{stderr}");
    assert!(events.iter().any(|e| e["event"] == "pushed"), "{stderr}");

    // Quiet: nothing on stderr, the digest alone on stdout.
    let empty = dir.path().join("empty");
    let (stdout, stderr) = ok(&empty, &["pull", "-q", &other]);
    assert_eq!(stdout.trim(), image.digest.to_string());
    assert_eq!(stderr, "");
    let (_, stderr) = ok(&dir.path().join("empty2"), &["pull", &other]);
    assert_eq!(stderr.matches("Pulled sha256:").count(), 2, "{stderr}");

    // An explicit platform a single-platform image lacks is refused before its layers come.
    let wrong = dir.path().join("wrong");
    let out = rbuild(&wrong, &["pull", "--platform", "linux/arm64", &other]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("wanted linux/arm64, actual: linux/amd64"),
        "{stderr}"
    );
    let layer = Store::open(&root)
        .unwrap()
        .read_manifest(&image.digest)
        .unwrap()
        .layers[0]
        .digest
        .clone();
    assert!(!Store::open(&wrong).unwrap().has_blob(&layer));
    assert!(Store::open(&wrong).unwrap().images().unwrap().is_empty());
}

#[test]
fn push_of_a_stored_index_and_pull_all_platforms_keep_every_digest() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = Store::open(&root).unwrap();
    let manifests = vec![
        make_image(&store, "amd64", "same"),
        make_image(&store, "arm64", "same"),
    ];
    let index = Index {
        manifests: manifests.clone(),
        ..Index::default()
    };
    let index_desc = store
        .put_index_bytes(&index.to_canonical_json().unwrap())
        .unwrap();
    store.tag("multi:1", &index_desc).unwrap();
    drop(store);

    let dest = format!("{}/cli/multi:1", registry.host());
    let (stdout, _) = ok(&root, &["push", "-q", "multi:1", &dest]);
    assert_eq!(stdout.trim(), index_desc.digest.to_string());

    let pulled = dir.path().join("pulled");
    let (stdout, _) = ok(&pulled, &["pull", "--all-platforms", "-q", &dest]);
    assert_eq!(stdout.trim(), index_desc.digest.to_string());
    let store = Store::open(&pulled).unwrap();
    assert_eq!(store.read_index(&index_desc.digest).unwrap(), index);
    for manifest in &manifests {
        assert!(store.read_manifest(&manifest.digest).is_ok());
    }
    let listed = ok(&pulled, &["images", "--json"]).0;
    assert!(listed.contains(&index_desc.digest.to_string()), "{listed}");

    // Without --all-platforms: one manifest, the one asked for.
    let one = dir.path().join("one");
    let (stdout, _) = ok(&one, &["pull", "-q", "--platform", "linux/arm64", &dest]);
    assert_eq!(stdout.trim(), manifests[1].digest.to_string());
}

#[test]
fn fsck_reports_a_corrupted_and_a_missing_blob_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open(root).unwrap();
    let image = make_image(&store, "amd64", "fsck me");
    store.tag("app:1", &image).unwrap();
    let manifest = store.read_manifest(&image.digest).unwrap();
    drop(store);

    let (stdout, _) = ok(root, &["fsck"]);
    assert!(
        stdout.contains("checked 3 blobs") && stdout.contains("0 corrupt, 0 missing"),
        "{stdout}"
    );

    let blob_path = |d: &Digest| root.join("oci/blobs/sha256").join(d.hex());
    let layer = &manifest.layers[0].digest;
    let mut bytes = std::fs::read(blob_path(layer)).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(blob_path(layer), &bytes).unwrap();
    std::fs::remove_file(blob_path(&manifest.config.digest)).unwrap();

    let out = rbuild(root, &["fsck"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "corrupt: blob {layer} now hashes to {}",
            Digest::of(&bytes)
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("missing: blob {}", manifest.config.digest)),
        "{stdout}"
    );

    let out = rbuild(root, &["fsck", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["corrupt"][0]["digest"], layer.to_string());
    assert_eq!(json["missing"][0], manifest.config.digest.to_string());
}

fn openssl(dir: &Path, args: &[&str]) {
    rbuild_testutil::require_binary("/usr/bin/openssl", "openssl");
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=rbuild test CA",
        ],
    );
    for (name, usage) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), usage).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN=rbuild {name}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.crt"),
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

#[test]
fn a_registry_requiring_client_certificates_is_reached_with_those_in_certs_d() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    make_certificates(&pki);
    let registry = Registry::start_with_client_tls(
        &pki.join("server.crt"),
        &pki.join("server.key"),
        &pki.join("ca.crt"),
    );
    // rbuild's own certs dir, laid out as Docker's /etc/docker/certs.d.
    let xdg = dir.path().join("xdg");
    let host_dir = xdg.join("rbuild/certs.d").join(registry.host());
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::copy(pki.join("ca.crt"), host_dir.join("ca.crt")).unwrap();

    let root = dir.path().join("store");
    let store = Store::open(&root).unwrap();
    let image = make_image(&store, "amd64", "over tls");
    store.tag("app:1", &image).unwrap();
    drop(store);
    let dest = format!("{}/tls/app:1", registry.host());
    let run = |root: &Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .arg("--root")
            .arg(root)
            .args(args)
            .env_remove("RBUILD_ROOT")
            .env("DOCKER_CONFIG", dir.path().join("docker-config"))
            .env("XDG_CONFIG_HOME", &xdg)
            .output()
            .unwrap()
    };

    // The CA alone: the registry refuses the handshake without a client certificate.
    let out = run(&root, &["push", "-q", "app:1", &dest]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pushed without a client certificate");
    // The TLS alert the registry sent, and which registry it was; not retried.
    assert!(
        stderr.contains(&registry.host()) && stderr.contains("Certificate"),
        "{stderr}"
    );
    assert!(stderr.contains("(after 1 attempt)"), "{stderr}");

    // A key without its certificate is a configuration error naming the file.
    std::fs::copy(pki.join("client.key"), host_dir.join("client.key")).unwrap();
    let out = run(&root, &["push", "-q", "app:1", &dest]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("missing client certificate"),
        "{stderr}"
    );

    std::fs::copy(pki.join("client.crt"), host_dir.join("client.cert")).unwrap();
    let out = run(&root, &["push", "-q", "app:1", &dest]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        image.digest.to_string()
    );
    let out = run(&dir.path().join("pulled"), &["pull", "-q", &dest]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        image.digest.to_string()
    );
}
