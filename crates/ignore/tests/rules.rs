//! One test per `.dockerignore` rule.

use rbuild_ignore::{
    ignore_file_candidates, read_ignore_file, IgnoreError, IgnoreFile, PatternMatcher,
};

fn matcher(patterns: &[&str]) -> PatternMatcher {
    PatternMatcher::new(patterns).expect("valid patterns")
}

fn texts(file: &str) -> Vec<String> {
    IgnoreFile::parse(file)
        .unwrap()
        .into_iter()
        .map(|p| p.text)
        .collect()
}

/// ignorefile_test.go `TestReadAll`.
#[test]
fn reads_like_docker() {
    let content =
        "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
    assert_eq!(
        texts(content),
        [
            "test1",
            "test2",
            "a/file/here",
            "lastfile",
            "!inverted/abs/path",
            "!",
            "!"
        ]
    );
    assert!(texts("").is_empty());
}

#[test]
fn parse_strips_bom_crlf_and_cleans() {
    assert_eq!(texts("\u{FEFF}a\r\nb/./c//d/\r\n"), ["a", "b/c/d"]);
    assert_eq!(
        texts("  # not a comment: # only counts in column 1"),
        ["# not a comment: # only counts in column 1"]
    );
    assert_eq!(texts("/\n//x\n../y\n"), ["/", "x", "../y"]);
    let parsed = IgnoreFile::parse("a\n\n!b\n").unwrap();
    assert_eq!(parsed[1].line, 3);
    assert!(parsed[1].is_exclusion() && !parsed[0].is_exclusion());
}

#[test]
fn parse_rejects_overlong_lines() {
    let long = "a".repeat(70_000);
    let err = IgnoreFile::parse(&format!("ok\n{long}\n")).unwrap_err();
    assert!(
        matches!(err, IgnoreError::LineTooLong { line: 2, .. }),
        "{err}"
    );
}

#[test]
fn patterns_are_anchored_at_the_root() {
    let m = matcher(&["*.log", "build"]);
    assert!(m.matches_or_parent_matches("a.log"));
    assert!(!m.matches_or_parent_matches("sub/a.log"));
    assert!(m.matches_or_parent_matches("build/x/y"));
    assert!(!m.matches_or_parent_matches("src/build"));
}

#[test]
fn star_and_question_mark_stop_at_slash() {
    let m = matcher(&["a*b", "x?y"]);
    assert!(m.matches("axxb") && !m.matches("a/b"));
    assert!(m.matches("xzy") && !m.matches("x/y"));
}

#[test]
fn double_star_spans_directories() {
    let m = matcher(&["**/*.tmp"]);
    assert!(m.matches("a.tmp") && m.matches("a/b/c.tmp"));
    let m = matcher(&["docs/**/index.md"]);
    assert!(m.matches("docs/index.md") && m.matches("docs/a/b/index.md"));
    assert!(!m.matches("other/index.md"));
}

#[test]
fn backslash_escapes() {
    let m = matcher(&["a\\*b", "q\\?"]);
    assert!(m.matches("a*b") && !m.matches("axb"));
    assert!(m.matches("q?") && !m.matches("qx"));
}

#[test]
fn last_match_wins() {
    let m = matcher(&["*.md", "!README.md", "README.md"]);
    assert!(m.matches_or_parent_matches("README.md"));
    let m = matcher(&["*.md", "!README.md"]);
    assert!(!m.matches_or_parent_matches("README.md"));
    assert!(m.matches_or_parent_matches("CHANGES.md"));
}

#[test]
fn exception_re_includes_inside_excluded_directory() {
    let m = matcher(&["docs", "!docs/keep.md"]);
    assert!(m.matches_or_parent_matches("docs/other.md"));
    assert!(!m.matches_or_parent_matches("docs/keep.md"));
    assert!(m.matches_or_parent_matches("docs"));
}

#[test]
fn matches_checks_only_the_path_itself() {
    let m = matcher(&["docs"]);
    assert!(m.matches("docs"));
    assert!(!m.matches("docs/a"), "parents are ignored by matches()");
    assert!(m.matches_or_parent_matches("docs/a"));
}

#[test]
fn patterns_are_trimmed_and_cleaned() {
    let m = matcher(&["  ./a/../b/  ", "", "   "]);
    assert_eq!(m.patterns(), ["b"]);
    assert!(m.matches("b"));
    let m = matcher(&["  !x  ", "y"]);
    assert!(m.has_exclusions());
    assert_eq!(m.patterns(), ["!x", "y"]);
}

#[test]
fn bad_patterns_are_errors_naming_the_line() {
    let parsed = IgnoreFile::parse("ok\n!\n").unwrap();
    let err = PatternMatcher::from_ignore_file(&parsed).unwrap_err();
    assert!(
        matches!(err, IgnoreError::IllegalExclusion { line: Some(2), .. }),
        "{err}"
    );
    let parsed = IgnoreFile::parse("ok\n\nsrc/[a-\n").unwrap();
    let err = PatternMatcher::from_ignore_file(&parsed).unwrap_err();
    assert!(
        matches!(&err, IgnoreError::BadPattern { line: Some(3), pattern, .. } if pattern == "src/[a-"),
        "{err}"
    );
    assert!(err.to_string().contains("src/[a-"));
    // Valid glob syntax but an invalid regex class (range l-O is reversed).
    assert!(PatternMatcher::new(["[Local-Only]/"]).is_err());
}

#[test]
fn can_skip_dir_only_without_reachable_exceptions() {
    let m = matcher(&["node_modules", "target"]);
    assert!(m.can_skip_dir("node_modules"));
    assert!(m.can_skip_dir("target/debug"));
    assert!(!m.can_skip_dir("src"), "not excluded");

    let m = matcher(&["docs", "!docs/keep.md"]);
    assert!(!m.can_skip_dir("docs"));
    let m = matcher(&["docs", "!other/keep.md"]);
    assert!(m.can_skip_dir("docs"));
    let m = matcher(&["docs", "!d*/keep.md"]);
    assert!(
        !m.can_skip_dir("docs"),
        "wildcard exception may reach inside"
    );
    let m = matcher(&["docs", "!x*/keep.md"]);
    assert!(m.can_skip_dir("docs"));
    let m = matcher(&["docs", "!**/keep.md"]);
    assert!(!m.can_skip_dir("docs"));
    let m = matcher(&["docs", "!docs"]);
    assert!(!m.can_skip_dir("docs"), "not excluded any more");
    let m = matcher(&["a", "!a", "a/b"]);
    assert!(
        m.can_skip_dir("a/b"),
        "the exception only matches above the directory"
    );
    let m = matcher(&["**", "!a/b[c]/d"]);
    assert!(
        !m.can_skip_dir("a"),
        "classes are treated as possibly matching"
    );
}

#[test]
fn dockerfile_specific_ignore_file_comes_first() {
    use std::path::Path;
    let candidates = ignore_file_candidates(Path::new("ctx"), Path::new("ctx/sub/app.Dockerfile"));
    assert_eq!(
        candidates,
        [
            Path::new("ctx/sub/app.Dockerfile.dockerignore"),
            Path::new("ctx/.dockerignore")
        ]
    );

    let dir = tempfile::tempdir().unwrap();
    let dockerfile = dir.path().join("Dockerfile");
    assert!(read_ignore_file(dir.path(), &dockerfile).unwrap().is_none());
    std::fs::write(dir.path().join(".dockerignore"), "generic\n").unwrap();
    let (path, patterns) = read_ignore_file(dir.path(), &dockerfile).unwrap().unwrap();
    assert_eq!(path, dir.path().join(".dockerignore"));
    assert_eq!(patterns[0].text, "generic");
    std::fs::write(dir.path().join("Dockerfile.dockerignore"), "specific\n").unwrap();
    let (path, patterns) = read_ignore_file(dir.path(), &dockerfile).unwrap().unwrap();
    assert_eq!(path, dir.path().join("Dockerfile.dockerignore"));
    assert_eq!(patterns[0].text, "specific");
}

#[test]
fn ignore_files_that_are_symlinks_resolve_inside_their_directory() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("host-file"), "host-pattern\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dockerfile = dir.path().join("Dockerfile");
    std::os::unix::fs::symlink(
        outside.path().join("host-file"),
        dir.path().join(".dockerignore"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "../../../../../../../../../../../../..".to_string()
            + outside.path().join("host-file").to_str().unwrap(),
        dir.path().join("Dockerfile.dockerignore"),
    )
    .unwrap();
    assert!(
        read_ignore_file(dir.path(), &dockerfile).unwrap().is_none(),
        "a symlink out of the context reads nothing from the host"
    );
    // A symlink to a file inside the context is followed, as BuildKit does.
    std::fs::write(dir.path().join("real-ignore"), "inside\n").unwrap();
    std::fs::remove_file(dir.path().join(".dockerignore")).unwrap();
    std::os::unix::fs::symlink("/real-ignore", dir.path().join(".dockerignore")).unwrap();
    let (_, patterns) = read_ignore_file(dir.path(), &dockerfile).unwrap().unwrap();
    assert_eq!(patterns[0].text, "inside");
}

#[test]
fn an_oversized_or_special_ignore_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let dockerfile = dir.path().join("Dockerfile");
    std::fs::create_dir(dir.path().join(".dockerignore")).unwrap();
    let err = read_ignore_file(dir.path(), &dockerfile).unwrap_err();
    assert!(
        err.to_string().contains(".dockerignore") && err.to_string().contains("not a regular"),
        "{err}"
    );
    std::fs::remove_dir(dir.path().join(".dockerignore")).unwrap();
    let big = std::fs::File::create(dir.path().join(".dockerignore")).unwrap();
    big.set_len(rbuild_ignore::MAX_IGNORE_FILE_BYTES + 1)
        .unwrap();
    let err = read_ignore_file(dir.path(), &dockerfile).unwrap_err();
    assert!(err.to_string().contains("larger than the limit"), "{err}");
}
