//! `rbuild parse` end to end.

use std::io::Write;
use std::process::{Command, Stdio};

fn rbuild(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rbuild");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn dump_matches_buildkit_result_file() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/buildkit-parser/testfiles/flags");
    let file = dir.join("Dockerfile");
    let (code, out, err) = rbuild(&["parse", "--dump", file.to_str().unwrap()], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, std::fs::read_to_string(dir.join("result")).unwrap());
}

#[test]
fn json_from_stdin() {
    let (code, out, err) = rbuild(
        &["parse", "--json", "-"],
        "FROM alpine AS base\nCOPY --link a /b\n",
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stages"][0]["name"], "base");
    assert_eq!(v["stages"][0]["from"]["image"], "alpine");
    assert_eq!(v["stages"][0]["commands"][0]["instruction"], "copy");
    assert_eq!(v["stages"][0]["commands"][0]["link"], true);
    assert_eq!(v["stages"][0]["commands"][0]["dest"], "/b");
}

#[test]
fn rejected_dockerfile_exits_1_with_located_error() {
    let (code, out, err) = rbuild(&["parse", "--json"], "FROM a\nCOPY --frm=a x y\n");
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("Dockerfile:2:6: unknown flag: --frm"), "{err}");
    assert!(err.contains("   2 | COPY --frm=a x y"), "{err}");
    let (code, _, err) = rbuild(&["parse", "--dump"], "FROM a\nENV PATH\n");
    assert_eq!(code, 1);
    assert!(err.contains("ENV must have two arguments"), "{err}");
    let (code, _, err) = rbuild(&["parse", "--dump"], "# only a comment\n");
    assert_eq!(code, 1);
    assert!(err.contains("file with no instructions"), "{err}");
}
