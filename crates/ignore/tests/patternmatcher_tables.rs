//! moby/patternmatcher's own test tables (testdata/patternmatcher), run against our port.

use std::path::PathBuf;

use rbuild_ignore::{clean, PatternMatcher};
use serde_json::Value;

fn tables() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/patternmatcher/patternmatcher-tables.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

fn text(value: &Value) -> &str {
    value.as_str().expect("string")
}

#[test]
fn single_pattern_matches_or_parent_matches() {
    let tables = tables();
    let cases = tables["matches_or_parent_matches"].as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let (pattern, path) = (text(&case["pattern"]), text(&case["text"]));
        let expected = case["pass"].as_bool().unwrap();
        let matcher = PatternMatcher::new([pattern]).expect(pattern);
        if matcher.matches_or_parent_matches(path) != expected {
            failures.push(format!(
                "pattern {pattern:?} path {path:?}: expected {expected}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(cases.len(), 68);
}

#[test]
fn multi_pattern_matches_or_parent_matches() {
    let tables = tables();
    let cases = tables["multi_pattern"].as_array().unwrap();
    for case in cases {
        let patterns: Vec<&str> = case["patterns"]
            .as_array()
            .unwrap()
            .iter()
            .map(text)
            .collect();
        let path = text(&case["text"]);
        let matcher = PatternMatcher::new(&patterns).unwrap();
        assert_eq!(
            matcher.matches_or_parent_matches(path),
            case["pass"].as_bool().unwrap(),
            "patterns {patterns:?} path {path:?}"
        );
    }
    assert_eq!(cases.len(), 4);
}

/// Go's `filepath.Match` cases as patternmatcher runs them through its top-level
/// `Matches(file, patterns)`: a bad pattern is an error; the path is cleaned first.
#[test]
fn filepath_match_table() {
    let tables = tables();
    let cases = tables["match"].as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let (pattern, path) = (text(&case["pattern"]), text(&case["text"]));
        let expected = case["match"].as_bool().unwrap();
        let outcome = PatternMatcher::new([pattern]);
        let ok = match (outcome, case["bad_pattern"].as_bool().unwrap()) {
            (Err(_), true) => true,
            (Ok(_), true) => false,
            (Err(_), false) => false,
            (Ok(matcher), false) => {
                let path = clean(path);
                // patternmatcher never excludes the context root itself.
                let excluded = path != "." && matcher.matches_or_parent_matches(&path);
                excluded == expected
            }
        };
        if !ok {
            failures.push(format!("pattern {pattern:?} path {path:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(cases.len(), 54);
}
