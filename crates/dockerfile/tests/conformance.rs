//! BuildKit's own parser test data (testdata/buildkit-parser, Apache-2.0): every positive
//! case must dump byte-for-byte like BuildKit, every negative case must fail, and the full
//! AST (flags, heredocs, lines, json attribute, comments, warnings) must equal what
//! BuildKit's parser produced in generated/ast.json.

use std::fs;
use std::path::{Path, PathBuf};

use rbuild_dockerfile::syntax::{parse, Node, NodeArg};
use serde_json::Value;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/buildkit-parser")
}

fn case_dirs(sub: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(data_dir().join(sub))
        .unwrap_or_else(|e| panic!("reading {sub}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").exists())
        .collect();
    dirs.sort();
    dirs
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn testfiles_dump_exactly_like_buildkit() {
    let dirs = case_dirs("testfiles");
    assert_eq!(dirs.len(), 33);
    let mut failures = Vec::new();
    for dir in dirs.iter().chain(case_dirs("inline-cases").iter()) {
        let got = match parse(&read(&dir.join("Dockerfile"))) {
            Ok(r) => r.ast.dump() + "\n",
            Err(e) => format!("ERROR {e}"),
        };
        let want = read(&dir.join("result"));
        if got != want {
            failures.push(format!(
                "{}:\n--- want\n{want}--- got\n{got}",
                dir.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn negative_testfiles_fail() {
    let dirs = case_dirs("testfiles-negative");
    assert_eq!(dirs.len(), 4);
    for dir in dirs {
        assert!(
            parse(&read(&dir.join("Dockerfile"))).is_err(),
            "{} parsed",
            dir.display()
        );
    }
}

#[test]
fn testfile_line_numbers() {
    let r = parse(&read(&data_dir().join("testfile-line/Dockerfile"))).unwrap();
    assert_eq!((r.ast.start_line, r.ast.end_line), (5, 31));
    let ranges: Vec<(usize, usize)> = r
        .ast
        .children
        .iter()
        .map(|c| (c.start_line, c.end_line))
        .collect();
    assert_eq!(ranges, vec![(5, 5), (11, 12), (17, 31)]);
}

fn node_to_json(n: &Node) -> Value {
    let next: Vec<Value> = n
        .args
        .iter()
        .map(|a| match a {
            NodeArg::Word(w) => Value::String(w.clone()),
            NodeArg::Nested(c) => serde_json::json!({ "children": [node_to_json(c)] }),
        })
        .collect();
    let attributes = if n.json {
        serde_json::json!({"json": true})
    } else {
        serde_json::json!({})
    };
    serde_json::json!({
        "value": n.value,
        "original": n.original,
        "flags": n.flags,
        "attributes": attributes,
        "start_line": n.start_line,
        "end_line": n.end_line,
        "prev_comment": n.prev_comment,
        "heredocs": n.heredocs,
        "next": next,
        "dump": n.dump(),
    })
}

#[test]
fn full_ast_matches_generated_json() {
    let all: Vec<Value> =
        serde_json::from_str(&read(&data_dir().join("generated/ast.json"))).unwrap();
    assert_eq!(all.len(), 41);
    let mut failures = Vec::new();
    for case in &all {
        let file = case["file"].as_str().unwrap();
        let text = read(&data_dir().join(file));
        match (parse(&text), case["ok"].as_bool().unwrap()) {
            (Ok(r), true) => {
                let got_instr: Vec<Value> = r.ast.children.iter().map(node_to_json).collect();
                for (i, (g, w)) in got_instr
                    .iter()
                    .zip(case["instructions"].as_array().unwrap())
                    .enumerate()
                {
                    if g != w {
                        failures.push(format!("{file} instruction {i}:\n want {w}\n got  {g}"));
                    }
                }
                if got_instr.len() != case["instructions"].as_array().unwrap().len() {
                    failures.push(format!("{file}: instruction count {}", got_instr.len()));
                }
                let warnings: Vec<&str> = r.warnings.iter().map(|w| w.short.as_str()).collect();
                let want_warnings: Vec<&str> = case["warnings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| w.as_str().unwrap())
                    .collect();
                if warnings != want_warnings {
                    failures.push(format!(
                        "{file}: warnings {warnings:?} != {want_warnings:?}"
                    ));
                }
                let esc = case["escape_token"].as_str().unwrap();
                if r.escape.to_string() != esc {
                    failures.push(format!("{file}: escape {} != {esc}", r.escape));
                }
                let lines = (
                    case["start_line"].as_u64().unwrap() as usize,
                    case["end_line"].as_u64().unwrap() as usize,
                );
                if (r.ast.start_line, r.ast.end_line) != lines {
                    failures.push(format!(
                        "{file}: lines {:?} != {lines:?}",
                        (r.ast.start_line, r.ast.end_line)
                    ));
                }
                if r.ast.dump() != case["dump"].as_str().unwrap() {
                    failures.push(format!("{file}: dump differs"));
                }
            }
            (Err(e), false) => {
                let want = case["error"].as_str().unwrap();
                if e.message != want {
                    failures.push(format!("{file}: error {:?} != {want:?}", e.message));
                }
            }
            (Ok(_), false) => failures.push(format!("{file}: parsed but BuildKit rejects it")),
            (Err(e), true) => failures.push(format!("{file}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn heredoc_helpers_match_generated_json() {
    let h: Value =
        serde_json::from_str(&read(&data_dir().join("generated/heredoc-helpers.json"))).unwrap();
    for case in h["heredocs_from_line"].as_array().unwrap() {
        let line = case["line"].as_str().unwrap();
        let got =
            serde_json::to_value(rbuild_dockerfile::syntax::heredocs_from_line(line).unwrap())
                .unwrap();
        assert_eq!(got, case["heredocs"], "line {line:?}");
    }
    for case in h["parse_heredoc"].as_array().unwrap() {
        let src = case["src"].as_str().unwrap();
        let got = rbuild_dockerfile::syntax::parse_heredoc(src);
        match (case.get("error"), &case["heredoc"]) {
            (Some(want), _) => assert_eq!(got.unwrap_err(), want.as_str().unwrap(), "{src:?}"),
            (None, Value::Null) => assert_eq!(got, Ok(None), "{src:?}"),
            (None, want) => assert_eq!(
                &serde_json::to_value(got.unwrap()).unwrap(),
                want,
                "{src:?}"
            ),
        }
    }
    let chomp = &h["chomp_example"];
    assert_eq!(
        rbuild_dockerfile::syntax::chomp_heredoc_content(chomp["in"].as_str().unwrap()),
        chomp["out"].as_str().unwrap()
    );
}
