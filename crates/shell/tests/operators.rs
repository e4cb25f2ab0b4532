//! One test per operator, quoting rule, mode and error of the lexer.

use rbuild_shell::{Env, ExpandErrorKind, Lexer};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn word(input: &str, vars: &[(&str, &str)]) -> String {
    Lexer::new('\\')
        .process_word(input, &env(vars))
        .unwrap_or_else(|err| panic!("{input:?}: {err}"))
}

fn error_kind(input: &str, vars: &[(&str, &str)]) -> ExpandErrorKind {
    Lexer::new('\\')
        .process_word(input, &env(vars))
        .expect_err(input)
        .kind
}

const SET: &[(&str, &str)] = &[("V", "val"), ("E", ""), ("P", "a.b.c")];

#[test]
fn plain_references() {
    assert_eq!(word("$V/${V}/$U/${U}", SET), "val/val//");
    assert_eq!(word("$V_x", SET), "", "the name runs on over `_x`");
    assert_eq!(word("${V}_x", SET), "val_x");
    assert_eq!(word("a$", SET), "a$");
    assert_eq!(word("$/", SET), "$/");
}

#[test]
fn default_value_operators() {
    assert_eq!(word("${V-d}|${E-d}|${U-d}", SET), "val||d");
    assert_eq!(word("${V:-d}|${E:-d}|${U:-d}", SET), "val|d|d");
    assert_eq!(word("${U:-${V}-x}", SET), "val-x", "the word is expanded");
}

#[test]
fn alternative_value_operators() {
    assert_eq!(word("${V+a}|${E+a}|${U+a}", SET), "a|a|");
    assert_eq!(word("${V:+a}|${E:+a}|${U:+a}", SET), "a||");
}

#[test]
fn required_value_operators() {
    assert_eq!(word("${V?}${E?}", SET), "val");
    assert_eq!(word("${V:?}", SET), "val");
    assert_eq!(
        error_kind("${U?}", SET),
        ExpandErrorKind::Required {
            name: "U".into(),
            message: "is not allowed to be unset".into()
        }
    );
    assert_eq!(
        error_kind("${E:?}", SET),
        ExpandErrorKind::Required {
            name: "E".into(),
            message: "is not allowed to be empty".into()
        }
    );
    let err = Lexer::new('\\')
        .process_word("x ${U:?set U to $V}", &env(SET))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to process \"x ${U:?set U to $V}\": U: set U to val (at byte 2)"
    );
    assert_eq!(err.offset, 2);
}

#[test]
fn prefix_and_suffix_removal() {
    assert_eq!(word("${P#*.}|${P##*.}", SET), "b.c|c");
    assert_eq!(word("${P%.*}|${P%%.*}", SET), "a.b|a");
    assert_eq!(word("${P#x}|${U#x}", SET), "a.b.c|");
    assert_eq!(word("${P#a?b}", SET), ".c", "? is one character");
}

#[test]
fn prefix_removal_rejects_bad_escape() {
    // Only `*`, `?` and `\` may be escaped in a pattern (and `}` / `/` to pass the syntax).
    assert!(matches!(
        error_kind("${P#a\\.}", SET),
        ExpandErrorKind::InvalidPattern { .. }
    ));
    let kind = error_kind("${P#\\x}", SET);
    assert_eq!(
        kind,
        ExpandErrorKind::InvalidPattern {
            pattern: "\\x".into(),
            reason: "invalid escape '\\x'".into()
        }
    );
}

#[test]
fn pattern_brackets_are_literal() {
    assert_eq!(word("${P#[ab]}", &[("P", "[ab]x")]), "x");
    assert_eq!(word("${P#[ab]}", &[("P", "ax")]), "ax");
}

#[test]
fn substitution_operators() {
    assert_eq!(word("${P/./-}|${P//./-}", SET), "a-b.c|a-b-c");
    assert_eq!(word("${P//*./}", SET), "c", "* is greedy in substitutions");
    assert_eq!(word("${P/x/y}|${U/x/y}", SET), "a.b.c|");
    assert_eq!(
        word("${P//\\//\\/}", &[("P", "/a/b")]),
        "\\/a\\/b",
        "escaped / is literal"
    );
}

#[test]
fn quotes() {
    assert_eq!(word("'$V \\x'", SET), "$V \\x");
    assert_eq!(word("\"$V \\x \\\" \\$ \\\\\"", SET), "val \\x \" $ \\");
    assert_eq!(word("a\\ b\\$V", SET), "a b$V");
    assert_eq!(
        error_kind("'abc", SET),
        ExpandErrorKind::UnterminatedSingleQuote
    );
    assert_eq!(
        error_kind("x\"abc", SET),
        ExpandErrorKind::UnterminatedDoubleQuote
    );
    let err = Lexer::new('\\')
        .process_word("x\"abc", &env(SET))
        .unwrap_err();
    assert_eq!(err.offset, 1, "offset of the opening quote");
}

#[test]
fn backtick_escape_token() {
    let lexer = Lexer::new('`');
    let vars = env(SET);
    assert_eq!(lexer.process_word("a`$V\\x", &vars).unwrap(), "a$V\\x");
    assert_eq!(lexer.process_word("\"``\\\"", &vars).unwrap(), "`\\");
    assert_eq!(
        lexer.process_word("C:\\dir `\"q`\"", &vars).unwrap(),
        "C:\\dir \"q\""
    );
}

#[test]
fn rejected_syntax() {
    assert_eq!(error_kind("${}", SET), ExpandErrorKind::BadSubstitution);
    assert_eq!(error_kind("${:-x}", SET), ExpandErrorKind::BadSubstitution);
    assert_eq!(error_kind("${{V}", SET), ExpandErrorKind::BadSubstitution);
    assert_eq!(error_kind("${V", SET), ExpandErrorKind::MissingBrace);
    assert_eq!(error_kind("${", SET), ExpandErrorKind::MissingBrace);
    assert_eq!(error_kind("${V:-x", SET), ExpandErrorKind::MissingBrace);
    assert_eq!(error_kind("${V/x", SET), ExpandErrorKind::MissingSlash);
    assert_eq!(error_kind("${V/x/y", SET), ExpandErrorKind::MissingBrace);
    for (input, modifier) in [
        ("${V:=x}", ":="),
        ("${V=x}", "="),
        ("${V:#x}", ":#"),
        ("${V.}", "."),
    ] {
        assert_eq!(
            error_kind(input, SET),
            ExpandErrorKind::UnsupportedModifier(modifier.into()),
            "{input}"
        );
    }
    assert_eq!(
        Lexer::new('\\')
            .process_word("ab${V:=x}", &env(SET))
            .unwrap_err()
            .to_string(),
        "failed to process \"ab${V:=x}\": unsupported modifier (:=) in substitution (at byte 2)"
    );
}

#[test]
fn special_and_positional_parameters_are_unset() {
    for input in [
        "$1", "${12}", "$@", "$*", "$#", "$?", "$-", "$$", "$!", "$0",
    ] {
        assert_eq!(word(input, SET), "", "{input}");
    }
    assert_eq!(word("$12x", SET), "x", "all digits form the name");
    assert_eq!(word("${#:-d}", SET), "d");
}

#[test]
fn field_splitting() {
    let lexer = Lexer::new('\\');
    let vars = env(&[("S", " a  b "), ("E", "")]);
    assert_eq!(
        lexer.process_words("x${S}y", &vars).unwrap(),
        ["x", "a", "b", "y"]
    );
    assert_eq!(
        lexer.process_words("x\"${S}\"y", &vars).unwrap(),
        ["x a  b y"]
    );
    assert_eq!(lexer.process_words("  a   b  ", &vars).unwrap(), ["a", "b"]);
    assert_eq!(
        lexer.process_words("$E", &vars).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        lexer.process_words("''", &vars).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        lexer.process_words("cat << EOF", &vars).unwrap(),
        ["cat", "<< EOF"]
    );
}

/// BuildKit shares the field buffer with nested `${...}` words, which clears it; text
/// before such a substitution in the same field is lost (process_word is unaffected).
#[test]
fn field_splitting_keeps_buildkit_nested_buffer_quirk() {
    let lexer = Lexer::new('\\');
    let vars = env(&[]);
    assert_eq!(
        lexer.process_words("1${X:-0} a", &vars).unwrap(),
        ["0", "a"]
    );
    assert_eq!(lexer.process_word("1${X:-0} a", &vars).unwrap(), "10 a");
}

#[test]
fn raw_quotes_and_escapes_modes() {
    let vars = env(SET);
    let raw_quotes = Lexer::new('\\').with_raw_quotes(true);
    assert_eq!(
        raw_quotes.process_word("'a' \"$V\"", &vars).unwrap(),
        "'a' \"val\""
    );
    let raw_escapes = Lexer::new('\\').with_raw_escapes(true);
    assert_eq!(
        raw_escapes.process_word("a\\ b\\$V", &vars).unwrap(),
        "a\\ b\\$V"
    );
    let no_quotes = Lexer::new('\\').with_skip_process_quotes(true);
    assert_eq!(no_quotes.process_word("'$V'", &vars).unwrap(), "'val'");
}

#[test]
fn skip_unset_env_keeps_unset_references() {
    let lexer = Lexer::new('\\').with_skip_unset_env(true);
    let vars = env(SET);
    assert_eq!(
        lexer
            .process_word("$V $U ${U} ${U:-d} ${U/a/b} ${V:-d}", &vars)
            .unwrap(),
        "val $U ${U} ${U:-d} ${U/a/b} val"
    );
    assert_eq!(lexer.process_word("${U:=x}", &vars).unwrap(), "${U:=x}");
}

#[test]
fn matches_record_set_and_unset_names() {
    let expansion = Lexer::new('\\')
        .process_word_with_matches("$V ${E:-x} ${U-y} ${U2:+z}", &env(SET))
        .unwrap();
    assert_eq!(expansion.result, "val x y ");
    assert_eq!(expansion.matched.iter().collect::<Vec<_>>(), ["E", "V"]);
    assert_eq!(expansion.unmatched.iter().collect::<Vec<_>>(), ["U", "U2"]);
}

#[test]
fn custom_env_implementations_work() {
    struct Upper;
    impl Env for Upper {
        fn get(&self, name: &str) -> Option<&str> {
            (name == "X").then_some("from-trait")
        }
    }
    assert_eq!(
        Lexer::default().process_word("${X}", &Upper).unwrap(),
        "from-trait"
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let vars = env(&[]);
    let nested = |depth: usize| format!("{}x{}", "${A:-".repeat(depth), "}".repeat(depth));
    assert_eq!(
        Lexer::new('\\').process_word(&nested(150), &vars).unwrap(),
        "x"
    );
    let err = Lexer::new('\\')
        .process_word(&nested(100_000), &vars)
        .unwrap_err();
    assert_eq!(err.kind, ExpandErrorKind::NestedTooDeeply { limit: 200 });
    let quoted = format!("{}x{}", "${A:-\"".repeat(100_000), "\"}".repeat(100_000));
    assert!(Lexer::new('\\').process_word(&quoted, &vars).is_err());
}
