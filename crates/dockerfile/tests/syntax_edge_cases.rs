//! Parser edge cases beyond BuildKit's test files: directives, escapes, continuations,
//! comments, heredocs.

use rbuild_dockerfile::syntax::parse;

fn dump(text: &str) -> String {
    parse(text)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .ast
        .dump()
}

#[test]
fn escape_backtick_directive() {
    let r = parse("# escape=`\nFROM a\nRUN echo \\\nRUN dir c:\\ `\n  && echo `\n").unwrap();
    assert_eq!(r.escape, '`');
    assert_eq!(r.directives[0].name, "escape");
    assert_eq!(
        r.ast.dump(),
        "(from \"a\")\n(run \"echo \\\\\")\n(run \"dir c:\\\\   && echo\")"
    );
}

#[test]
fn directive_after_comment_or_instruction_is_a_comment() {
    let r = parse("# hello\n# escape=`\nFROM a\nRUN x \\\n y\n").unwrap();
    assert_eq!(r.escape, '\\');
    assert!(r.directives.is_empty());
    assert_eq!(r.ast.children[0].prev_comment, vec!["hello", "escape=`"]);
    let r = parse("FROM a\n# escape=`\nRUN x `\n").unwrap();
    assert_eq!(r.escape, '\\');
}

#[test]
fn unknown_directive_ends_directives() {
    let r = parse("# foo=bar\n# escape=`\nFROM a\n").unwrap();
    assert_eq!(r.escape, '\\');
    let r = parse("# syntax=docker/dockerfile:1\n# check=skip=all\n#escape=`\nFROM a\n").unwrap();
    assert_eq!(r.escape, '`');
    let names: Vec<&str> = r.directives.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, vec!["syntax", "check", "escape"]);
    assert_eq!(r.directives[1].value, "skip=all");
}

#[test]
fn bom_and_crlf() {
    let r = parse("\u{feff}# escape=`\r\nFROM a\r\nRUN a `\r\n b\r\n").unwrap();
    assert_eq!(r.escape, '`');
    assert_eq!(r.ast.dump(), "(from \"a\")\n(run \"a  b\")");
}

#[test]
fn trailing_escape_at_eof_and_lone_escape_line() {
    assert_eq!(dump("FROM a\nRUN echo \\"), "(from \"a\")\n(run \"echo\")");
    assert_eq!(dump("\\\nFROM a"), "(from \"a\")");
}

#[test]
fn comments_and_blank_lines_inside_continuation() {
    let r = parse("FROM a\nRUN a \\\n# c\n\n  b\n").unwrap();
    assert_eq!(r.ast.children[1].original, "RUN a   b");
    assert_eq!(r.warnings.len(), 1);
    assert_eq!(
        r.warnings[0].short,
        "Empty continuation line found in: RUN a   b"
    );
    assert_eq!(r.ast.children[1].end_line, 5);
}

#[test]
fn case_insensitive_keywords_and_flags_everywhere() {
    assert_eq!(
        dump("from a\nwOrKdIr --x=\"1 2\" /b\n"),
        "(from \"a\")\n(workdir [\"--x=1 2\"] \"/b\")"
    );
}

#[test]
fn heredoc_json_form_has_no_heredoc() {
    let r = parse("FROM a\nRUN [\"<<EOF\"]\nEOF\n").unwrap();
    assert!(r.ast.children[1].heredocs.is_empty());
    assert_eq!(
        r.ast.children.len(),
        3,
        "EOF is then an (unknown) instruction"
    );
}

#[test]
fn heredocs_several_and_inside_onbuild() {
    let r = parse("FROM a\nONBUILD COPY <<A <<B /x\n1\nA\n2\nB\nRUN <<\"Q\"\n$x\nQ\n").unwrap();
    let onbuild = &r.ast.children[1];
    assert_eq!(onbuild.heredocs.len(), 2);
    assert_eq!(
        (
            onbuild.heredocs[0].content.as_str(),
            onbuild.heredocs[1].content.as_str()
        ),
        ("1\n", "2\n")
    );
    assert_eq!((onbuild.start_line, onbuild.end_line), (2, 6));
    let run = &r.ast.children[2];
    assert!(!run.heredocs[0].expand);
    assert_eq!(run.heredocs[0].content, "$x\n");
}

#[test]
fn heredoc_chomp_terminator_with_tabs() {
    let r = parse("FROM a\nRUN <<-E\n\tx\n\t\tE\nRUN y\n").unwrap();
    assert_eq!(r.ast.children[1].heredocs[0].content, "\tx\n");
    assert_eq!(r.ast.children.len(), 3);
}

#[test]
fn unterminated_heredoc_is_an_error() {
    let e = parse("FROM a\nRUN <<EOF\nx\n").unwrap_err();
    assert_eq!(
        (e.start_line, e.message.as_str()),
        (2, "unterminated heredoc EOF")
    );
}

#[test]
fn nested_json_is_an_error() {
    assert!(parse("FROM a\nCMD [\"a\", [1]]\n").is_err());
    assert_eq!(
        dump("FROM a\nCMD [\"a\", b]\n"),
        "(from \"a\")\n(cmd \"[\\\"a\\\", b]\")"
    );
}

#[test]
fn non_ascii_in_flags_does_not_panic() {
    // BuildKit walks flags byte by byte; 0xA0 inside U+0800 counts as a blank there.
    let r = parse("FROM a\nCOPY --x=\u{800}y z w\n").unwrap();
    assert_eq!(r.ast.children[1].flags.len(), 1);
}
