//! Ignore files come from untrusted build contexts: parsing, compiling and matching must
//! return, never panic.

use proptest::prelude::*;
use rbuild_ignore::{IgnoreFile, PatternMatcher};

fn pattern_text() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("*".to_string()),
        Just("**".to_string()),
        Just("?".to_string()),
        Just("/".to_string()),
        Just("\\".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("^".to_string()),
        Just("-".to_string()),
        Just("!".to_string()),
        Just("..".to_string()),
        Just("\u{FEFF}".to_string()),
        "[a-c.#&~:]",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(atom, 0..10).prop_map(|atoms| atoms.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn never_panics(lines in prop::collection::vec(pattern_text(), 0..5), path in "[ab/.*]{0,8}") {
        let file = lines.join("\n");
        let patterns = IgnoreFile::parse(&file).unwrap();
        if let Ok(matcher) = PatternMatcher::from_ignore_file(&patterns) {
            let excluded = matcher.matches_or_parent_matches(&path);
            // A path whose parent chain adds nothing behaves the same either way.
            if !path.contains('/') {
                prop_assert_eq!(excluded, matcher.matches(&path));
            }
            let _ = matcher.can_skip_dir(&path);
        }
    }
}
