//! BuildKit's own lexer tables (testdata/buildkit-shell), run against our lexer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use rbuild_shell::Lexer;
use serde_json::Value;

fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/buildkit-shell")
        .join(name)
}

fn read_text(name: &str) -> String {
    let path = data_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn read_json(name: &str) -> Value {
    serde_json::from_str(&read_text(name)).unwrap_or_else(|err| panic!("{name}: {err}"))
}

fn env_list(entries: &[String]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|entry| match entry.split_once('=') {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => (entry.clone(), String::new()),
        })
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_str().expect("string").to_string())
        .collect()
}

/// `envVarTest`: `PLATFORM|INPUT|EXPECTED`, read as lex_test.go reads it.
#[test]
fn env_var_test_table() {
    let env = env_list(&[
        "PWD=/home".into(),
        "SHELL=bash".into(),
        "KOREAN=한국어".into(),
        "NULL=".into(),
    ]);
    let env_map: BTreeMap<String, String> = env.iter().cloned().collect();
    let lexer = Lexer::new('\\');
    let mut checked = 0;
    let mut failures = Vec::new();
    for (index, raw_line) in read_text("envVarTest").lines().enumerate() {
        if raw_line.starts_with('#') {
            continue;
        }
        let line = raw_line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 3, "line {}: {line:?}", index + 1);
        let (platform, input, expected) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        assert!(matches!(platform, "A" | "U" | "W"), "line {}", index + 1);
        if platform == "W" {
            continue; // Windows-only: case-insensitive names.
        }
        checked += 1;
        for (label, outcome) in [
            ("list", lexer.process_word(input, &env)),
            ("map", lexer.process_word(input, &env_map)),
        ] {
            let ok = match (&outcome, expected) {
                (Err(_), "error") => true,
                (Ok(actual), expected) => expected != "error" && actual == expected,
                (Err(_), _) => false,
            };
            if !ok {
                failures.push(format!(
                    "line {} ({label}): {input:?} expected {expected:?}, got {outcome:?}",
                    index + 1
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checked, 228, "A and U rows of envVarTest");
}

/// `wordsTest`: `ENV name=value` lines accumulate; `INPUT | w1,w2,...`.
#[test]
fn words_test_table() {
    let lexer = Lexer::new('\\');
    let mut env_entries: Vec<String> = Vec::new();
    let mut checked = 0;
    for (index, line) in read_text("wordsTest").lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            env_entries.push(rest.trim_start_matches(' ').to_string());
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 2, "line {}: {line:?}", index + 1);
        let input = parts[0].trim();
        let expected: Vec<&str> = parts[1].trim_start_matches(' ').split(',').collect();
        let env = env_list(&env_entries);
        let env_map: BTreeMap<String, String> = env.iter().cloned().collect();
        for actual in [
            lexer.process_words(input, &env),
            lexer.process_words(input, &env_map),
        ] {
            let actual = actual.unwrap_or_else(|_| vec!["error".to_string()]);
            assert_eq!(actual, expected, "line {}: {input:?}", index + 1);
        }
        checked += 1;
    }
    assert_eq!(checked, 24);
}

/// The same inputs with `RawQuotes` and `SkipUnsetEnv`, compared with BuildKit's outputs.
#[test]
fn words_test_raw_quotes_skip_unset_reference() {
    let lexer = Lexer::new('\\')
        .with_raw_quotes(true)
        .with_skip_unset_env(true);
    let data = read_json("shell-wordsTest-rawquotes-skipunset.json");
    let cases = data["cases"].as_array().expect("cases");
    for case in cases {
        let input = case["input"].as_str().expect("input");
        let env = env_list(&strings(&case["envs"]));
        // The generator records a failure as the single word "error" plus its message.
        let actual = lexer
            .process_words(input, &env)
            .unwrap_or_else(|_| vec!["error".to_string()]);
        assert_eq!(actual, strings(&case["actual"]), "{input:?}");
    }
    assert_eq!(cases.len(), 24);
}

/// The 47-row `TestProcessWithMatches` table, with matched/unmatched names.
#[test]
fn process_with_matches_table() {
    let lexer = Lexer::new('\\');
    let data = read_json("shell-processWithMatches.json");
    let cases = data["cases"].as_array().expect("cases");
    for case in cases {
        let input = case["input"].as_str().expect("input");
        let env: BTreeMap<String, String> = case["envs"]
            .as_object()
            .expect("envs")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("env value").to_string()))
            .collect();
        let outcome = lexer.process_word_with_matches(input, &env);
        if case["expected_error"].as_bool().expect("expected_error") {
            let err = outcome.expect_err(input);
            // The reference message, minus the "failed to process" prefix and our offset.
            let reference = case["error"].as_str().expect("error text");
            let reason = reference.split_once(": ").expect("wrapped error").1;
            assert_eq!(err.kind.to_string(), reason, "{input:?}");
            continue;
        }
        let expansion = outcome.unwrap_or_else(|err| panic!("{input:?}: {err}"));
        assert_eq!(
            expansion.result,
            case["expected"].as_str().unwrap(),
            "{input:?}"
        );
        let matched: BTreeSet<String> = strings(&case["matched"]).into_iter().collect();
        let unmatched: BTreeSet<String> = strings(&case["unmatched"]).into_iter().collect();
        assert_eq!(expansion.matched, matched, "matched for {input:?}");
        assert_eq!(expansion.unmatched, unmatched, "unmatched for {input:?}");
    }
    assert_eq!(cases.len(), 47);
}
