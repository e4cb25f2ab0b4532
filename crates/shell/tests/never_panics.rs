//! The lexer sees untrusted Dockerfile text: it must return, not panic, on any input.

use proptest::prelude::*;
use rbuild_shell::Lexer;

fn shell_like() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("$".to_string()),
        Just("${".to_string()),
        Just("}".to_string()),
        Just(":".to_string()),
        Just("\\".to_string()),
        Just("`".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("<<".to_string()),
        Just("/".to_string()),
        Just("#".to_string()),
        Just("%".to_string()),
        Just("*".to_string()),
        Just("?".to_string()),
        Just("${A".to_string()),
        Just("${A//".to_string()),
        "[-+=A-Za-z0-9 _\t.\\[\\]@!]",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(atom, 0..24).prop_map(|atoms| atoms.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn never_panics_on_shell_like_input(input in shell_like(), escape in prop_oneof![Just('\\'), Just('`')], raw in any::<bool>()) {
        let env = vec![
            ("A".to_string(), "a*b/c \\ $0".to_string()),
            ("B".to_string(), String::new()),
        ];
        let lexer = Lexer::new(escape).with_raw_quotes(raw).with_skip_unset_env(raw);
        let word = lexer.process_word(&input, &env);
        let words = lexer.process_words(&input, &env);
        // Both entry points run the same pass, so they must agree on success.
        prop_assert_eq!(word.is_ok(), words.is_ok());
        if let Err(err) = word {
            prop_assert!(err.offset <= input.len());
            prop_assert!(input.is_char_boundary(err.offset));
        }
    }

    #[test]
    fn never_panics_on_arbitrary_text(input in any::<String>()) {
        let env: Vec<(String, String)> = Vec::new();
        let _ = Lexer::new('\\').process_word(&input, &env);
    }
}
