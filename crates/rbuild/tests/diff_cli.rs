//! `rbuild diff`: images built by rbuild (no RUN step, so no isolation is needed), compared
//! by store name, as docker and OCI archives and as an OCI layout.

use std::path::Path;
use std::process::{Command, Output};

fn rbuild(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("RBUILD_ROOT")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn build(root: &Path, ctx: &Path, tag: &str, dockerfile: &str, files: &[(&str, &str)]) {
    let dir = ctx.join(tag.replace(':', "-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    let out = rbuild(
        root,
        &[
            "build",
            "-q",
            "--source-date-epoch",
            "0",
            "-t",
            tag,
            dir.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "build {tag}: {}", text(&out));
}

#[test]
fn diff_finds_file_config_and_history_differences_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let ctx = tmp.path().join("ctx");
    let dockerfile = "FROM scratch\nCOPY a.txt b.txt /data/\nENV MODE=one\nCMD [\"/x\"]\n";
    build(
        &root,
        &ctx,
        "one:1",
        dockerfile,
        &[("a.txt", "a\n"), ("b.txt", "b\n")],
    );
    build(
        &root,
        &ctx,
        "same:1",
        dockerfile,
        &[("a.txt", "a\n"), ("b.txt", "b\n")],
    );
    build(
        &root,
        &ctx,
        "two:1",
        &dockerfile.replace("MODE=one", "MODE=two"),
        &[("a.txt", "a\n"), ("b.txt", "b changed\n")],
    );

    // The same build twice: equal, exit 0.
    let same = rbuild(&root, &["diff", "one:1", "same:1"]);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same));
    assert!(String::from_utf8_lossy(&same.stdout).contains("equal"));

    // A changed file, a changed ENV (config and history): exit 1, each named.
    let diff = rbuild(&root, &["diff", "one:1", "two:1"]);
    assert_eq!(diff.status.code(), Some(1), "{}", text(&diff));
    let shown = String::from_utf8_lossy(&diff.stdout);
    assert!(shown.contains("/data/b.txt sha256"), "{shown}");
    assert!(shown.contains("/data/b.txt size"), "{shown}");
    assert!(!shown.contains("/data/a.txt"), "{shown}");
    assert!(shown.contains("Env"), "{shown}");
    assert!(shown.contains("created_by"), "{shown}");

    // JSON, and the options that leave parts out.
    let json = rbuild(&root, &["diff", "--json", "one:1", "two:1"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["equal"], false);
    let files: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["what"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["/data/b.txt size", "/data/b.txt sha256"]);
    let narrowed = rbuild(
        &root,
        &[
            "diff",
            "--json",
            "--ignore",
            "/data/b.txt",
            "--ignore-history",
            "one:1",
            "two:1",
        ],
    );
    let report: serde_json::Value = serde_json::from_slice(&narrowed.stdout).unwrap();
    assert!(report["files"].as_array().unwrap().is_empty(), "{report}");
    assert!(report["history"].as_array().unwrap().is_empty(), "{report}");
    assert_eq!(report["config"][0]["what"], "Env", "{report}");

    // The same image as a docker archive, an OCI archive and an OCI layout: equal to itself.
    let docker = tmp.path().join("one.docker.tar");
    let oci = tmp.path().join("one.oci.tar");
    for (path, format) in [(&docker, "docker"), (&oci, "oci")] {
        let out = rbuild(
            &root,
            &[
                "save",
                "--format",
                format,
                "one:1",
                "-o",
                path.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "save {format}: {}", text(&out));
    }
    let layout = tmp.path().join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&oci)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap();
    assert!(untar.success());
    for other in [
        format!("docker-archive:{}", docker.display()),
        oci.display().to_string(),
        format!("oci:{}", layout.display()),
    ] {
        let out = rbuild(&root, &["diff", "one:1", &other]);
        assert_eq!(out.status.code(), Some(0), "{other}: {}", text(&out));
        let out = rbuild(&root, &["diff", &other, "two:1"]);
        assert_eq!(out.status.code(), Some(1), "{other}: {}", text(&out));
    }

    // Something that is no image: exit 2, never taken for a difference.
    let missing = rbuild(&root, &["diff", "one:1", "nope:1"]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope:1"));
}
